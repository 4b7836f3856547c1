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

/**
 * Bring the module's tables up to date (idempotent; Knex's lock keeps replicas apart). A
 * migration of a later version in the bookkeeping table is left alone, so that a rollback to
 * this version still starts (Knex would otherwise call the migration directory corrupt): keep
 * every migration to what an earlier version can live with, such as a nullable column added.
 */
export async function migrate(database: Knex): Promise<void> {
  await database.migrate.latest({
    migrationSource,
    tableName: MIGRATIONS_TABLE,
    disableMigrationsListValidation: true,
  });
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
