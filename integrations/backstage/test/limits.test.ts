/**
 * Limits of one step: an abort ends a request in flight (the backend stopping does not wait for
 * the request timeout), and a large /changes page goes to the catalog as mutations of at most
 * 1,000 entities, its position written once, after the last; a page one short of the batch
 * is not the end while the newest change is still ahead. A fake feed.
 */
import { providerOnFakeFeed, stopFakeFeeds } from './support/fakeFeedProvider';

afterAll(stopFakeFeeds);

test('an abort ends a request in flight', async () => {
  const { feed, logger, provider, connection } = await providerOnFakeFeed(3, { batchSize: 10 });
  feed.delayMs = 30_000; // far beyond the test: only the abort can end the request
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 300);
  const began = Date.now();

  const result = await provider.run({ signal: controller.signal });

  expect(Date.now() - began).toBeLessThan(5_000);
  expect(result).toEqual({ applied: 0, removed: 0, resynced: true, stopped: true });
  expect(logger.text()).toMatch(/stopped between pages: the step was aborted during a request/);
  expect(connection.summaries).toEqual([]);
  feed.delayMs = 0;
  expect((await provider.run()).applied).toBe(3);
});

test('a /changes page of 2,503 changes goes as mutations of at most 1,000 entities', async () => {
  const { feed, provider, connection, store } = await providerOnFakeFeed(5, { batchSize: 10_000 });
  await provider.run();
  connection.clearLog();
  for (let index = 0; index < 2500; index += 1) {
    feed.upsert(`n${index}`);
  }
  for (const name of ['c0', 'c1', 'c2']) {
    feed.remove(name);
  }

  expect(await provider.run()).toEqual({ applied: 2500, removed: 3, resynced: false });

  // Each answer of 1,000 bodies as it comes, the 3 removals with the first (1,003: 1,000 + 3).
  const sizes = connection.summaries.map(s => s.added.length + s.removed.length);
  expect(sizes).toEqual([1000, 3, 1000, 500]);
  expect(connection.summaries[0].removed).toHaveLength(3);
  expect(connection.summaries.flatMap(s => s.added)).toHaveLength(2500);
  expect((await store.load())?.seq).toBe(feed.seq);
  expect(await provider.appliedRefs()).toEqual(connection.refs());
});

test('a /changes page one short of the batch is followed on to the newest change', async () => {
  const { feed, provider, connection } = await providerOnFakeFeed(3, { batchSize: 4 });
  await provider.run(); // the first walk
  for (let index = 3; index < 10; index += 1) {
    feed.upsert(`c${index}`);
  }
  feed.changesShortBy = 1; // pages of 3 while more follow

  expect(await provider.run()).toEqual({ applied: 7, removed: 0, resynced: false });
  expect(connection.refs()).toEqual([...feed.entities.keys()].sort());
});
