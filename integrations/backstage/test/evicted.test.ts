/**
 * The catalog removes everything the module applied when it starts once without the module
 * (`evictEntitiesFromOrphanedProviders`, `catalog.orphanProviderStrategy: delete`, the default):
 * the module's next process sees that the catalog's references to it fall short of what it
 * applied, and resyncs at its first step rather than a day later. An operator forces a resync
 * by deleting the position row (or clearing `resynced_at`: see periodic.test.ts); the
 * generations go on, so the sweep still removes what vanished.
 */
import { ChoreoIngestEntityProvider } from '../src';
import { POSITION_TABLE } from '../src/migrations';
import { CatalogTablesConnection } from './support/catalogTables';
import { RecordingConnection } from './support/connection';
import { fakeFeedOf, stopFakeFeeds } from './support/fakeFeedProvider';
import { TestLogger } from './support/logger';

afterAll(stopFakeFeeds);

async function setup(names: number) {
  const { feed, database } = await fakeFeedOf(names);
  const connection = new CatalogTablesConnection(database);
  await connection.createTable();
  const logger = new TestLogger();
  const clock = { now: Date.parse('2026-12-01T00:00:00Z') };
  /** A new process of the backend: a new provider on the same database. */
  const start = async () => {
    const provider = new ChoreoIngestEntityProvider({
      baseUrl: feed.url,
      logger,
      database,
      batchSize: 4,
      now: () => clock.now,
    });
    await provider.connect(connection);
    return provider;
  };
  return { feed, database, connection, logger, clock, start };
}

test('a catalog that evicted the provider gets everything back at the next first step', async () => {
  const { feed, connection, logger, clock, start } = await setup(10);
  const first = await start();
  expect((await first.run()).applied).toBe(10);
  const all = connection.refs();

  // A restart with nothing lost: no resync.
  const restarted = await start();
  expect(await restarted.run()).toEqual({ applied: 0, removed: 0, resynced: false });

  // The catalog starts once without the module and evicts its entities; then the module is back.
  await connection.evict();
  feed.upsert('c10');
  clock.now += 60_000;
  const back = await start();
  const result = await back.run();

  expect(result).toEqual({ applied: 11, removed: 0, resynced: true });
  expect(connection.refs()).toEqual([...all, 'component:default/c10'].sort());
  expect(logger.text()).toMatch(
    /resync \(generation 2\): the catalog holds 0 of the 10 entities the module applied/,
  );
  // Checked once per process: the next steps follow the changes.
  expect(await back.run()).toEqual({ applied: 0, removed: 0, resynced: false });
});

test('an entity the catalog keeps from another location costs no resync at a restart', async () => {
  const { database, connection, logger, start } = await setup(10);
  // A `file` location still holds c3 (a cut-over not finished): the module's copy conflicts.
  await connection.addForeign('component:default/c3', 'url:https://example.com/catalog-info.yaml');
  const first = await start();
  expect((await first.run()).applied).toBe(10);
  expect(connection.refs()).not.toContain('component:default/c3');

  const restarted = await start();

  expect(await restarted.run()).toEqual({ applied: 0, removed: 0, resynced: false });
  expect(logger.text()).not.toMatch(/the catalog holds/);
  // An entity deleted through the catalog's API is missing, and the next process brings it back.
  await database('refresh_state_references').where({ target_entity_ref: 'component:default/c5' }).delete();
  await database('refresh_state').where({ entity_ref: 'component:default/c5' }).delete();
  const again = await start();
  expect((await again.run()).resynced).toBe(true);
  expect(logger.text()).toMatch(/the catalog holds 9 of the 10 entities the module applied/);
  expect(await database('refresh_state').where({ entity_ref: 'component:default/c5' }).first()).toBeTruthy();
});

test('without the catalog\'s table (another database) the check is skipped', async () => {
  const { feed, database } = await fakeFeedOf(1);
  const logger = new TestLogger();
  const make = async () => {
    const provider = new ChoreoIngestEntityProvider({ baseUrl: feed.url, logger, database });
    await provider.connect(new RecordingConnection());
    return provider;
  };
  expect((await (await make()).run()).resynced).toBe(true);
  expect(await (await make()).run()).toEqual({ applied: 0, removed: 0, resynced: false });
  expect(logger.text()).toMatch(/no refresh_state table in this database/);
});

test('a deleted position row forces a resync that still sweeps what vanished', async () => {
  const { feed, database, connection, logger, start } = await setup(10);
  const provider = await start();
  await provider.run();
  await provider.run();
  // Two generations of refs: a periodic resync's worth.
  await database(POSITION_TABLE).update({ resynced_at: null });
  expect((await provider.run()).resynced).toBe(true);
  feed.entities.delete('component:default/c3'); // gone from the feed unseen

  await database(POSITION_TABLE).where({ provider: 'choreo-ingest' }).delete();
  const result = await provider.run();

  expect(result).toEqual({ applied: 9, removed: 1, resynced: true });
  expect(logger.text()).toMatch(/resync \(generation 3\): first start/);
  expect(connection.refs()).not.toContain('component:default/c3');
  expect(await provider.appliedRefs()).toEqual(connection.refs());
});
