/**
 * An applied entity whose later body the catalog refuses: the catalog keeps its last valid
 * version, and a resync that sees the entity (skipped again) must not take it for gone, neither
 * removing it nor refusing the removal over it. An entity never applied stays out. A fake feed,
 * to serve such bodies.
 */
import { FakeFeed } from './support/fakeFeed';
import { providerOnFakeFeed, stopFakeFeeds } from './support/fakeFeedProvider';

const DAY_MS = 24 * 60 * 60 * 1000;

afterAll(stopFakeFeeds);

function setup(names: number) {
  return providerOnFakeFeed(names, { batchSize: 4 });
}

const ref = (name: string) => `component:default/${name}`;

test('a resync keeps an applied entity whose body turned invalid', async () => {
  const { feed, logger, connection, clock, provider } = await setup(10);
  expect((await provider.run()).applied).toBe(10);
  const all = connection.refs();

  feed.upsert('c3', FakeFeed.invalidBody('c3'));
  expect(await provider.run()).toEqual({ applied: 0, removed: 0, resynced: false });
  expect(connection.refs()).toEqual(all);

  clock.now += DAY_MS;
  const resynced = await provider.run();

  expect(resynced).toEqual({ applied: 9, removed: 0, resynced: true });
  expect(connection.summaries.flatMap(summary => summary.removed)).toEqual([]);
  expect(connection.refs()).toEqual(all);
  expect(await provider.appliedRefs()).toEqual(all);
  const skipped = logger.lines.filter(line => /skipped/.test(line.message));
  expect(skipped).toHaveLength(2);
  expect(skipped[1].message).toMatch(
    /^choreo-ingest: skipped Component:default\/c3: .*apiVersion.*keeps its last valid version/,
  );

  // A valid body comes: applied as usual.
  feed.upsert('c3');
  connection.clearLog();
  expect(await provider.run()).toEqual({ applied: 1, removed: 0, resynced: false });
  expect(connection.summaries.map(summary => summary.added)).toEqual([[ref('c3')]]);
});

test('invalid bodies of applied entities do not trip the removal guard; new ones stay out', async () => {
  const { feed, logger, connection, clock, provider } = await setup(10);
  await provider.run();
  const all = connection.refs();
  for (const name of ['c1', 'c2', 'c3']) {
    feed.upsert(name, FakeFeed.invalidBody(name));
  }
  feed.upsert('new', FakeFeed.invalidBody('new'));
  await provider.run();

  clock.now += DAY_MS;
  expect(await provider.run()).toEqual({ applied: 7, removed: 0, resynced: true });
  clock.now += 30_000;
  expect(await provider.run()).toEqual({ applied: 0, removed: 0, resynced: false });

  expect(logger.text()).not.toMatch(/refusing/);
  expect(connection.refs()).toEqual(all);
  // The skipped refs already applied moved on to the resync's generation; no row for the new one.
  expect(await provider.appliedRefs()).toEqual(all);
  expect(connection.refs()).not.toContain(ref('new'));
});
