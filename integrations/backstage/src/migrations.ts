/**
 * The module's own schema in the catalog's database, as Knex migrations with their own
 * bookkeeping table (so they never mix with the catalog's migrations).
 */
import type { Knex } from 'knex';

export const POSITION_TABLE = 'choreo_ingest_feed_position';
export const APPLIED_TABLE = 'choreo_ingest_applied_refs';
export const MIGRATIONS_TABLE = 'choreo_ingest_knex_migrations';

type Migration = {
  name: string;
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
};

const MIGRATIONS: Migration[] = [
  {
    name: '20261201_01_init',
    async up(knex) {
      await knex.schema.createTable(POSITION_TABLE, table => {
        table.comment('Where the choreo-ingest module is in the feed, per provider');
        table.string('provider', 255).primary().notNullable();
        table.string('store_id', 255).nullable().comment('storeId the position belongs to');
        table.bigInteger('seq').nullable().comment('last /changes seq applied; null: none yet');
        table.integer('generation').notNullable().defaultTo(0).comment('latest resync started');
        table.boolean('resync_active').notNullable().defaultTo(false);
        table.text('resync_cursor').nullable().comment('nextCursor of the last page applied');
        table.string('resync_store_id', 255).nullable().comment('storeId of the walk');
        table.bigInteger('resync_newest_seq').nullable().comment('newestSeq of its first page');
        table.boolean('sweep_pending').notNullable().defaultTo(false);
        table.string('updated_at', 40).notNullable();
      });
      await knex.schema.createTable(APPLIED_TABLE, table => {
        table.comment('The entity refs the choreo-ingest module applied, per provider');
        table.string('provider', 255).notNullable();
        table.string('ref', 512).notNullable();
        table.integer('generation').notNullable();
        table.primary(['provider', 'ref']);
        table.index(['provider', 'generation'], 'choreo_ingest_applied_generation_idx');
      });
    },
    async down(knex) {
      await knex.schema.dropTableIfExists(APPLIED_TABLE);
      await knex.schema.dropTableIfExists(POSITION_TABLE);
    },
  },
  {
    name: '20261202_01_location_key',
    async up(knex) {
      await knex.schema.alterTable(POSITION_TABLE, table => {
        table.string('location_key', 1024).nullable().comment('the key entities were applied under');
      });
    },
    async down(knex) {
      await knex.schema.alterTable(POSITION_TABLE, table => {
        table.dropColumn('location_key');
      });
    },
  },
  {
    name: '20261203_01_resynced_at',
    async up(knex) {
      await knex.schema.alterTable(POSITION_TABLE, table => {
        table.string('resynced_at', 40).nullable().comment('when the last resync walk completed');
      });
    },
    async down(knex) {
      await knex.schema.alterTable(POSITION_TABLE, table => {
        table.dropColumn('resynced_at');
      });
    },
  },
  {
    name: '20261204_01_seq_at',
    async up(knex) {
      await knex.schema.alterTable(POSITION_TABLE, table => {
        table.string('seq_at', 40).nullable().comment('the `at` of the change at seq, as read');
      });
    },
    async down(knex) {
      await knex.schema.alterTable(POSITION_TABLE, table => {
        table.dropColumn('seq_at');
      });
    },
  },
  {
    name: '20261205_01_version',
    async up(knex) {
      await knex.schema.alterTable(POSITION_TABLE, table => {
        table
          .integer('version')
          .notNullable()
          .defaultTo(0)
          .comment('bumped by every write: a write from an older read is refused');
      });
    },
    async down(knex) {
      await knex.schema.alterTable(POSITION_TABLE, table => {
        table.dropColumn('version');
      });
    },
  },
];

const migrationSource: Knex.MigrationSource<Migration> = {
  async getMigrations() {
    return MIGRATIONS;
  },
  getMigrationName(migration) {
    return migration.name;
  },
  async getMigration(migration) {
    return migration;
  },
};

/** Attempts at the migrations when another replica's run gets in the way. */
const MIGRATE_ATTEMPTS = 5;
/** The first wait before another attempt (doubled each time, with up to as much again of jitter). */
const MIGRATE_BACKOFF_MS = 200;

/**
 * Bring the module's tables up to date (idempotent). A migration of a later version in the
 * bookkeeping table is left alone, so that a rollback to this version still starts (Knex would
 * otherwise call the migration directory corrupt): keep every migration to what an earlier
 * version can live with, such as a nullable column added.
 *
 * Replicas that start together must not race: Knex's own lock lives in a table it creates
 * first, so two runs on an empty database collide while creating it (`relation
 * "choreo_ingest_knex_migrations_lock" already exists`, or two lock rows that lock each other out
 * for good). On PostgreSQL one transaction holds an advisory lock and runs the migrations on its
 * own connection, so the others wait and then find nothing to do; on any database a run that
 * still fails because another got in the way (a table that already exists, the lock held) is
 * tried again after a short wait.
 */
export async function migrate(database: Knex): Promise<void> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      await latest(database);
      return;
    } catch (error) {
      if (attempt >= MIGRATE_ATTEMPTS || !isConcurrentRun(error)) {
        throw error;
      }
      const wait = MIGRATE_BACKOFF_MS * 2 ** (attempt - 1);
      await new Promise(resolve => setTimeout(resolve, wait + Math.random() * wait));
    }
  }
}

const MIGRATE_CONFIG: Knex.MigratorConfig = {
  migrationSource,
  tableName: MIGRATIONS_TABLE,
  disableMigrationsListValidation: true,
};

async function latest(database: Knex): Promise<void> {
  if (database.client.dialect !== 'postgresql') {
    await database.migrate.latest(MIGRATE_CONFIG);
    return;
  }
  await database.transaction(async trx => {
    // Held until the transaction ends; the migrations (DDL included) run inside it.
    await trx.raw('SELECT pg_advisory_xact_lock(hashtext(?))', [MIGRATIONS_TABLE]);
    await trx.migrate.latest(MIGRATE_CONFIG);
  });
}

/** A failure caused by another replica migrating at the same time. */
function isConcurrentRun(error: unknown): boolean {
  const { code, name, message } = (error ?? {}) as { code?: unknown; name?: unknown; message?: unknown };
  return (
    code === '42P07' || // PostgreSQL: duplicate_table
    code === '23505' || // PostgreSQL: unique_violation (pg_type, two CREATE TABLE at once)
    code === 'ER_TABLE_EXISTS_ERROR' || // MySQL
    name === 'MigrationLocked' || // Knex: the lock is held
    (typeof message === 'string' && /already exists|already locked/i.test(message))
  );
}

/**
 * For a backend that skips database migrations (`DatabaseService.migrations.skip`): the tables
 * must be there already, else this says which one is missing and what to do.
 */
export async function checkTables(database: Knex): Promise<void> {
  for (const table of [POSITION_TABLE, APPLIED_TABLE]) {
    if (!(await database.schema.hasTable(table))) {
      throw new Error(
        `choreo-ingest: the table ${table} is missing, and the backend skips database ` +
          'migrations (backend.database.skipMigrations or ' +
          'backend.database.plugin.catalog.skipMigrations): start it once without skipping ' +
          'them, so that the module creates its tables',
      );
    }
  }
}
