/**
 * A rollback to an earlier version of the module: its migrations must start on a database a
 * later version migrated (Knex would otherwise call the migration directory corrupt).
 */
import { MIGRATIONS_TABLE, migrate } from '../src/migrations';
import { StateStore } from '../src/state';
import { sqlite } from './support/db';

test('the migrations start on a database a later version migrated', async () => {
  const database = sqlite();
  try {
    await migrate(database);
    const store = new StateStore(database, 'choreo-ingest');
    const state = { storeId: 's', seq: 7, generation: 2, sweepPending: false, locationKey: 'k' };
    await store.commit({ state, applied: { refs: ['component:default/a'], generation: 2 } });
    // A later version's migration ran.
    await database(MIGRATIONS_TABLE).insert({
      name: '20991231_01_from_a_later_version',
      batch: 99,
      migration_time: new Date(),
    });

    await expect(migrate(database)).resolves.toBeUndefined();
    const rolledBack = new StateStore(database, 'choreo-ingest');
    expect(await rolledBack.load()).toEqual({ ...state, version: 1 });
    expect(await rolledBack.appliedRefs()).toEqual(['component:default/a']);
  } finally {
    await database.destroy();
  }
});

test('with migrations skipped the tables are not made, and their absence is named', async () => {
  const database = sqlite();
  try {
    const store = new StateStore(database, 'choreo-ingest', { skipMigrations: true });

    await expect(store.load()).rejects.toThrow(
      /the table choreo_ingest_feed_position is missing, and the backend skips database migrations/,
    );
    expect(await database.schema.hasTable(MIGRATIONS_TABLE)).toBe(false);

    await migrate(database); // as a backend that does not skip them would, once
    const skipping = new StateStore(database, 'choreo-ingest', { skipMigrations: true });
    await expect(skipping.load()).resolves.toBeUndefined();
  } finally {
    await database.destroy();
  }
});
