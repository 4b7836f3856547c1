/**
 * The state put back from an older copy (a rollback to a backup) goes on making changes under
 * the seqs the module has read already. Once it has made as many, `since` no longer looks past
 * the newest change; the `at` the module read of its last change (`sinceAt`) still tells the two
 * histories apart, and the module copies the catalog again instead of missing what was undone.
 */
import { providerOnFakeFeed, stopFakeFeeds } from './support/fakeFeedProvider';

afterAll(stopFakeFeeds);

const ref = (name: string) => `component:default/${name}`;

test('a feed put back from an older copy is copied again, not followed past what it undid', async () => {
  const { feed, connection, provider, store } = await providerOnFakeFeed(3, { batchSize: 10 });
  expect((await provider.run()).resynced).toBe(true);
  const copy = new Map(feed.entities);
  feed.upsert('lost'); // seq 4: applied, then undone by the rollback
  expect(await provider.run()).toEqual({ applied: 1, removed: 0, resynced: false });
  expect((await store.load())?.seqAt).toBe(feed.changes[3].at);

  feed.putBack(3, copy);
  feed.upsert('new'); // seq 4 again: another change

  const result = await provider.run();

  expect(result.resynced).toBe(true);
  expect(connection.refs()).toEqual(['c0', 'c1', 'c2', 'new'].map(ref));
  expect(await provider.appliedRefs()).toEqual(['c0', 'c1', 'c2', 'new'].map(ref));
});

test('a feed that only went on is followed as before, its last change checked', async () => {
  const { feed, connection, provider } = await providerOnFakeFeed(2, { batchSize: 10 });
  await provider.run();
  feed.upsert('a');
  await provider.run();
  feed.upsert('b');

  expect(await provider.run()).toEqual({ applied: 1, removed: 0, resynced: false });
  expect(connection.refs()).toEqual(['a', 'b', 'c0', 'c1'].map(ref));
  const a = feed.changes.find(change => change.ref === ref('a'));
  expect(feed.sinceAts.at(-1)).toBe(a?.at); // the request that read `b`
});

test('a feed put back right after a resync is copied again too', async () => {
  const { feed, connection, provider, store } = await providerOnFakeFeed(3, { batchSize: 10 });
  const copy = new Map(feed.entities);
  feed.upsert('lost'); // seq 4, read by the first resync's walk
  expect((await provider.run()).resynced).toBe(true);
  expect((await store.load())?.seqAt).toBe(feed.changes[3].at);

  feed.putBack(3, copy);
  feed.upsert('new');

  expect((await provider.run()).resynced).toBe(true);
  expect(connection.refs()).toEqual(['c0', 'c1', 'c2', 'new'].map(ref));
});
