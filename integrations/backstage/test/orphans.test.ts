/**
 * Orphans: entities the catalog holds as the module's that its applied set lacks. Replica A's
 * step outlives the schedule's timeout with a mutation in flight; replica B's step applies a
 * later delete of the same entity; then A's mutation lands. A writes nothing after its abort,
 * and no change will ever name the entity again: only the next resync's sweep removes it,
 * counted by the removal guard with what the resync did not see.
 */
import type { EntityProviderMutation } from '@backstage/plugin-catalog-node';
import { ChoreoIngestEntityProvider } from '../src';
import { StateStore } from '../src/state';
import { CatalogTablesConnection } from './support/catalogTables';
import { fakeFeedOf, stopFakeFeeds } from './support/fakeFeedProvider';
import { FakeFeed } from './support/fakeFeed';
import { TestLogger } from './support/logger';

const DAY_MS = 24 * 60 * 60 * 1000;
const LATE = 'component:default/late';

afterAll(stopFakeFeeds);

/** The catalog, whose mutations from replica A wait for `beforeLanding` while it is set. */
class SlowCatalog extends CatalogTablesConnection {
  beforeLanding: (() => Promise<void>) | undefined;

  override async applyMutation(mutation: EntityProviderMutation): Promise<void> {
    const waiting = this.beforeLanding;
    this.beforeLanding = undefined;
    await waiting?.();
    await super.applyMutation(mutation);
  }
}

async function setup(names: number, maxRemovalRatio?: number) {
  const { feed, database } = await fakeFeedOf(names);
  const logger = new TestLogger();
  const clock = { now: Date.parse('2026-12-01T00:00:00Z') };
  /** A replica of the backend, on its own connection to the catalog (its tables). */
  const replica = async (connection = new CatalogTablesConnection(database), ratio = maxRemovalRatio) => {
    const provider = new ChoreoIngestEntityProvider({
      baseUrl: feed.url,
      logger,
      database,
      batchSize: 100,
      maxRemovalRatio: ratio,
      now: () => clock.now,
    });
    await provider.connect(connection);
    return provider;
  };
  const slow = new SlowCatalog(database);
  await slow.createTable();
  const a = await replica(slow);
  const b = await replica();
  expect((await a.run()).applied).toBe(names);
  const store = new StateStore(database, 'choreo-ingest');
  /** The catalog's entities (`refresh_state`), by ref. */
  const catalog = async () =>
    (await database('refresh_state').orderBy('entity_ref').select('entity_ref')).map(
      (row: { entity_ref: string }) => row.entity_ref,
    );
  return { feed, database, logger, clock, slow, a, b, store, catalog, replica };
}

/** A's step applies the creation of `late`; before it lands, the timeout aborts A and B applies
 * the deletion. Returns A's step's result. */
async function lateCreation(context: Awaited<ReturnType<typeof setup>>) {
  const { feed, slow, a, b } = context;
  const timeout = new AbortController();
  feed.upsert('late');
  slow.beforeLanding = async () => {
    timeout.abort();
    feed.remove('late');
    expect((await b.run()).removed).toBe(1);
  };
  return a.run({ signal: timeout.signal });
}

test('an entity a late mutation put in after its removal leaves at the next resync', async () => {
  const context = await setup(4);
  const { logger, clock, a, b, store, catalog } = context;
  const names = await catalog();

  expect(await lateCreation(context)).toMatchObject({ applied: 0, stopped: true });

  // The catalog holds it as the module's; the module has no record of it.
  expect(await catalog()).toEqual([...names, LATE].sort());
  expect(await store.appliedRefs()).toEqual(names);
  expect(await store.orphanCount()).toBe(1);
  // Following the changes never takes it out: none names it again.
  expect(await a.run()).toEqual({ applied: 0, removed: 0, resynced: false });
  expect(await b.run()).toEqual({ applied: 0, removed: 0, resynced: false });
  expect(await catalog()).toContain(LATE);

  clock.now += DAY_MS; // the periodic resync
  expect(await b.run()).toEqual({ applied: names.length, removed: 1, resynced: true });

  expect(await catalog()).toEqual(names);
  expect(await store.orphanCount()).toBe(0);
  expect(logger.text()).toMatch(/took back 1 entities the catalog held as this module's with no record/);
});

test('orphans count against maxRemovalRatio; another source\'s entities are never theirs', async () => {
  const context = await setup(4, 0.1);
  const names = await context.catalog();
  const { logger, clock, slow, a, store, catalog } = context;
  await slow.addForeign('component:default/from-a-file', 'url:https://example.com/catalog-info.yaml');
  await lateCreation(context);

  clock.now += DAY_MS;
  expect(await a.run()).toMatchObject({ removed: 0, resynced: true });

  expect(logger.text()).toMatch(
    /refusing to remove 1 of 5 entities \(20\.0%, above maxRemovalRatio 0\.1\) that the resync \(generation 2\) did not see \(1 of them held by the catalog as this module's with no record of them applied\)/,
  );
  expect(await catalog()).toContain(LATE);
  expect(await store.orphanCount()).toBe(1);

  // Allowed (a replica configured with a higher ratio): the orphan goes, the other source's
  // entity stays.
  const generous = await context.replica(undefined, 1);
  expect(await generous.run()).toMatchObject({ removed: 1 });
  expect(await catalog()).toEqual([...names, 'component:default/from-a-file'].sort());
});

test('no more orphans go than the guard counted; the catalog\'s table is looked up once', async () => {
  const context = await setup(4);
  const { clock, b, store, catalog } = context;
  const names = await catalog();
  await lateCreation(context);
  // A second orphan, as another late mutation would leave it.
  await context.slow.applyMutation({
    type: 'delta',
    added: [{ entity: FakeFeed.body('also-late') as any, locationKey: 'url:https://example.com/x' }],
    removed: [],
  });
  expect(await store.orphanCount()).toBe(2);
  const counted = jest.spyOn(StateStore.prototype, 'orphanCount').mockResolvedValueOnce(1);

  clock.now += DAY_MS;
  expect(await b.run()).toMatchObject({ removed: 1, resynced: true });
  counted.mockRestore();
  expect(await store.orphanCount()).toBe(1);
  expect((await catalog()).length).toBe(names.length + 1);

  const asked: unknown[][] = [];
  const fresh = new StateStore(context.database, 'choreo-ingest');
  context.database.on('query', (query: { bindings?: unknown[] }) => asked.push(query.bindings ?? []));
  for (let step = 0; step < 3; step += 1) {
    await fresh.orphanCount();
  }
  expect(asked.filter(bindings => bindings.includes('refresh_state_references'))).toHaveLength(1);
});
