/**
 * The module's state on PostgreSQL (the catalog's database in production), on a throwaway
 * server of the test's own (see support/pg.ts): refs that differ only in case in one page, and
 * replicas that migrate an empty database at the same time.
 */
import type { Knex } from 'knex';
import { ChoreoIngestEntityProvider } from '../src';
import { locationKeyFor } from '../src/entities';
import { StateStore } from '../src/state';
import { CatalogTablesConnection } from './support/catalogTables';
import { RecordingConnection } from './support/connection';
import { FakeFeed } from './support/fakeFeed';
import { TestLogger } from './support/logger';
import { type PgCluster, describePg, startPg } from './support/pg';

describePg('on PostgreSQL', () => {
  let pg: PgCluster;
  const feeds: FakeFeed[] = [];

  beforeAll(async () => {
    pg = await startPg();
  }, 120_000);

  afterAll(async () => {
    await Promise.all(feeds.map(feed => feed.stop()));
    await pg?.stop();
  });

  async function providerOn(database: Knex, feed: FakeFeed, logger = new TestLogger()) {
    const provider = new ChoreoIngestEntityProvider({
      baseUrl: feed.url,
      logger,
      database,
      batchSize: 10,
    });
    const connection = new RecordingConnection();
    await provider.connect(connection);
    return { provider, connection };
  }

  async function fakeFeed(names: string[]): Promise<FakeFeed> {
    const feed = new FakeFeed();
    feeds.push(feed);
    await feed.start();
    names.forEach(name => feed.upsert(name));
    return feed;
  }

  test('two refs that differ only in case in one /changes page: the last wins', async () => {
    const database = await pg.freshDatabase();
    const feed = await fakeFeed(['a', 'b']);
    const { provider, connection } = await providerOn(database, feed);
    expect((await provider.run()).applied).toBe(2);

    // Backstage takes Component:default/Dup and component:default/dup for one entity.
    feed.upsert('Dup');
    feed.upsert('dup', { ...FakeFeed.body('dup'), spec: { ...FakeFeed.body('dup').spec, type: 'website' } });
    expect(await provider.run()).toEqual({ applied: 1, removed: 0, resynced: false });
    expect(connection.summaries.at(-1)?.added).toEqual(['component:default/dup']);
    expect(connection.entities.get('component:default/dup')?.spec?.type).toBe('website');
    expect(await provider.appliedRefs()).toEqual([
      'component:default/a',
      'component:default/b',
      'component:default/dup',
    ]);

    // A delete of one spelling after an upsert of the other: the delete wins.
    feed.upsert('Dup');
    feed.remove('dup');
    expect(await provider.run()).toEqual({ applied: 0, removed: 1, resynced: false });
    expect(await provider.appliedRefs()).toEqual(['component:default/a', 'component:default/b']);
    // Not stuck: the next step follows on.
    feed.upsert('c');
    expect(await provider.run()).toEqual({ applied: 1, removed: 0, resynced: false });
  });

  test('two refs that differ only in case in one /entities page (the resync walk)', async () => {
    const database = await pg.freshDatabase();
    const feed = await fakeFeed(['Dup', 'dup', 'e']);
    const { provider, connection } = await providerOn(database, feed);

    expect(await provider.run()).toEqual({ applied: 2, removed: 0, resynced: true });
    expect(connection.refs()).toEqual(['component:default/dup', 'component:default/e']);
    expect(await provider.appliedRefs()).toEqual(['component:default/dup', 'component:default/e']);
  });

  test('replicas migrating an empty database at the same time all start', async () => {
    for (let round = 0; round < 8; round += 1) {
      const first = await pg.freshDatabase();
      const replicas = [first, pg.connect(first), pg.connect(first)];
      const outcomes = await Promise.allSettled(
        replicas.map(database => new StateStore(database, 'choreo-ingest').ready()),
      );
      const failures = outcomes.flatMap(outcome =>
        outcome.status === 'rejected' ? [String(outcome.reason)] : [],
      );
      expect(failures).toEqual([]);
      // Knex's lock table holds its one row, unlocked, and every migration ran once.
      const locks = await first('choreo_ingest_knex_migrations_lock').select('is_locked');
      expect(locks).toEqual([{ is_locked: 0 }]);
      const names = (await first('choreo_ingest_knex_migrations').select('name')).map(
        (row: { name: string }) => row.name,
      );
      expect(new Set(names).size).toBe(names.length);
      await expect(new StateStore(first, 'choreo-ingest').load()).resolves.toBeUndefined();
    }
  });

  test('the catalog\'s entities are looked up on PostgreSQL: an eviction resyncs', async () => {
    const database = await pg.freshDatabase();
    const feed = await fakeFeed(['a', 'b', 'c']);
    const connection = new CatalogTablesConnection(database);
    await connection.createTable();
    const logger = new TestLogger();
    const start = async () => {
      const provider = new ChoreoIngestEntityProvider({ baseUrl: feed.url, logger, database });
      await provider.connect(connection);
      return provider;
    };
    expect((await (await start()).run()).applied).toBe(3);
    expect(await (await start()).run()).toEqual({ applied: 0, removed: 0, resynced: false });
    await connection.evict();
    expect(await (await start()).run()).toEqual({ applied: 3, removed: 0, resynced: true });
    expect(logger.text()).toMatch(/the catalog holds 0 of the 3 entities/);
  });

  test('refs the catalog keeps under another key are counted on PostgreSQL, and come back', async () => {
    const database = await pg.freshDatabase();
    const feed = await fakeFeed(['a', 'b', 'c']);
    const connection = new CatalogTablesConnection(database);
    await connection.createTable();
    await connection.addForeign('component:default/b', 'provider:OpenChoreoEntityProvider');
    const provider = new ChoreoIngestEntityProvider({ baseUrl: feed.url, logger: new TestLogger(), database });
    await provider.connect(connection);
    expect((await provider.run()).applied).toBe(3);
    const store = new StateStore(database, 'choreo-ingest');
    const key = locationKeyFor(feed.url);
    expect(await store.catalogHolding(key)).toEqual({
      applied: 3,
      missing: 0,
      elsewhere: [{ locationKey: 'provider:OpenChoreoEntityProvider', count: 1 }],
    });

    await database('refresh_state').where({ entity_ref: 'component:default/b' }).delete();
    expect(await store.catalogHolding(key)).toEqual({ applied: 3, missing: 1, elsewhere: [] });
    expect(await provider.run()).toEqual({ applied: 3, removed: 0, resynced: true });
    expect(await store.catalogHolding(key)).toEqual({ applied: 3, missing: 0, elsewhere: [] });
  });

  test('orphans are found on PostgreSQL and leave at the resync\'s sweep', async () => {
    const database = await pg.freshDatabase();
    const feed = await fakeFeed(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h']);
    const connection = new CatalogTablesConnection(database);
    await connection.createTable();
    let now = Date.parse('2026-12-01T00:00:00Z');
    const provider = new ChoreoIngestEntityProvider({
      baseUrl: feed.url,
      logger: new TestLogger(),
      database,
      now: () => now,
    });
    await provider.connect(connection);
    expect((await provider.run()).applied).toBe(8);
    const store = new StateStore(database, 'choreo-ingest');
    for (const name of ['z-orphan', 'y-orphan']) {
      const ref = `component:default/${name}`;
      await database('refresh_state').insert({ entity_ref: ref, location_key: null });
      await database('refresh_state_references').insert({ source_key: 'choreo-ingest', target_entity_ref: ref });
    }

    expect(await store.orphanCount()).toBe(2);
    expect(await store.orphanRefs('', 1)).toEqual(['component:default/y-orphan']);
    expect(await store.orphanRefs('component:default/y-orphan', 5)).toEqual(['component:default/z-orphan']);
    now += 24 * 60 * 60 * 1000;
    expect(await provider.run()).toEqual({ applied: 8, removed: 2, resynced: true }); // 2 of 10
    expect(await store.orphanCount()).toBe(0);
  });
});
