/**
 * Entities the catalog keeps under another location key (OpenChoreo's own provider's
 * `provider:OpenChoreoEntityProvider`, a `file` location's): the catalog skips the module's copies
 * of them, only logging `detected conflicting entityRef` per entity. The module says once how
 * many it keeps, under which keys, and offers its copies again at the next step once that
 * source's entities are gone (deleted through the catalog's API, say), rather than a day later.
 */
import { ChoreoIngestEntityProvider } from '../src';
import { locationKeyFor } from '../src/entities';
import { StateStore } from '../src/state';
import { CatalogTablesConnection } from './support/catalogTables';
import { fakeFeedOf, stopFakeFeeds } from './support/fakeFeedProvider';
import { TestLogger } from './support/logger';

const OLD_KEY = 'provider:OpenChoreoEntityProvider';

afterAll(stopFakeFeeds);

async function setup(names: number, maxRemovalRatio?: number) {
  const { feed, database } = await fakeFeedOf(names);
  const connection = new CatalogTablesConnection(database);
  await connection.createTable();
  const logger = new TestLogger();
  const provider = new ChoreoIngestEntityProvider({
    baseUrl: feed.url,
    logger,
    database,
    batchSize: 4,
    maxRemovalRatio,
  });
  await provider.connect(connection);
  /** The other source's entity goes, as `DELETE /api/catalog/entities/by-uid/...` takes it. */
  const deleteForeign = async (ref: string) => {
    await database('refresh_state_references').where({ target_entity_ref: ref }).delete();
    await database('refresh_state').where({ entity_ref: ref }).delete();
  };
  const keyOf = async (ref: string) =>
    (await database('refresh_state').where({ entity_ref: ref }).first())?.location_key;
  const store = new StateStore(database, 'choreo-ingest');
  return { feed, database, connection, logger, provider, deleteForeign, keyOf, store };
}

const warnings = (logger: TestLogger) =>
  logger.lines.filter(line => line.level === 'warn' && /under another location key/.test(line.message));
const NOTHING = { applied: 0, removed: 0, resynced: false };

test('refs kept under another key are logged once, offered again once that source is gone', async () => {
  const { feed, connection, logger, provider, deleteForeign, keyOf, store } = await setup(10);
  await connection.addForeign('component:default/c3', OLD_KEY);
  await connection.addForeign('component:default/c4', OLD_KEY);

  expect((await provider.run()).applied).toBe(10);
  expect(await keyOf('component:default/c3')).toBe(OLD_KEY);
  expect(await store.catalogHolding(locationKeyFor(feed.url))).toEqual({
    applied: 10,
    missing: 0,
    elsewhere: [{ locationKey: OLD_KEY, count: 2 }],
  });
  expect(warnings(logger).map(line => line.message)).toEqual([
    'choreo-ingest: the catalog keeps 2 of the 10 entities the module applied under another ' +
      'location key, and skips the module\'s copies of them (it logs "detected conflicting ' +
      `entityRef"): ${OLD_KEY} (2). Remove that source's entities (the module's README: ` +
      '"Moving from OpenChoreo\'s provider"); the module offers its copies again at its next ' +
      'step once the catalog no longer holds them',
  ]);
  // Nothing changes: no resync, no second warning.
  expect(await provider.run()).toEqual(NOTHING);
  expect(await provider.run()).toEqual(NOTHING);
  expect(warnings(logger)).toHaveLength(1);

  // One of them deleted through the catalog's API: the module's copy at the next step.
  await deleteForeign('component:default/c3');
  expect(await provider.run()).toEqual({ applied: 10, removed: 0, resynced: true });
  expect(await keyOf('component:default/c3')).toBe(locationKeyFor(feed.url));
  expect(await keyOf('component:default/c4')).toBe(OLD_KEY);
  expect(logger.text()).toMatch(
    new RegExp(
      'resync \\(generation 2\\): the catalog no longer holds 1 of the entities the module ' +
        'applied, while it kept 2 under another location key',
    ),
  );
  expect(warnings(logger)).toHaveLength(2);
  expect(warnings(logger)[1].message).toMatch(/keeps 1 of the 10 entities .*\(1\)\./);
  expect(await provider.run()).toEqual(NOTHING);

  await deleteForeign('component:default/c4');
  expect((await provider.run()).resynced).toBe(true);
  expect(await keyOf('component:default/c4')).toBe(locationKeyFor(feed.url));
  expect(logger.text()).toMatch(
    "choreo-ingest: the catalog no longer keeps any of the module's entities under another " +
      'location key',
  );
  expect(await provider.run()).toEqual(NOTHING);
  expect(connection.refs()).toEqual(await provider.appliedRefs());
});

test('a freed ref the catalog still lacks afterwards costs one resync, not one per step', async () => {
  // No removal allowed: a ref gone from the feed stays applied, and missing from the catalog.
  const { feed, connection, logger, provider, deleteForeign } = await setup(10, 0);
  await connection.addForeign('component:default/c3', OLD_KEY);
  await connection.addForeign('component:default/c4', OLD_KEY);
  expect((await provider.run()).applied).toBe(10);

  feed.entities.delete('component:default/c3'); // gone from OpenChoreo, unseen by the feed's log
  await deleteForeign('component:default/c3');
  expect(await provider.run()).toEqual({ applied: 9, removed: 0, resynced: true });
  expect(logger.text()).toMatch(/refusing to remove 1 of 10 entities/);

  // c4 is still kept elsewhere, c3 still missing: nothing new, so no resync at every step.
  expect(await provider.run()).toEqual(NOTHING);
  expect(await provider.run()).toEqual(NOTHING);
  expect(logger.text().match(/choreo-ingest: resync \(generation/g)).toHaveLength(2);
});

test('a restart next to the other source logs it once more, and costs no resync', async () => {
  const { feed, database, connection, logger, provider } = await setup(4);
  await connection.addForeign('component:default/c1', 'url:https://example.com/catalog-info.yaml');
  expect((await provider.run()).applied).toBe(4);
  const restarted = new ChoreoIngestEntityProvider({ baseUrl: feed.url, logger, database });
  await restarted.connect(connection);

  expect(await restarted.run()).toEqual(NOTHING);
  expect(warnings(logger)).toHaveLength(2);
  expect(warnings(logger)[1].message).toMatch(
    /keeps 1 of the 4 entities .*: url:https:\/\/example\.com\/catalog-info\.yaml \(1\)\./,
  );
});
