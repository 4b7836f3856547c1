/**
 * A resync's walk of `GET /entities` met a 400 on a page that carried a cursor: serve's own 400
 * for a cursor it cannot read (one another release of serve made) restarts the walk from its
 * first page; any other 400 (a proxy before serve) fails the step and keeps the walk's place,
 * since restarting at every step would never finish the resync.
 */
import { FeedError } from '../src/feedClient';
import { providerOnFakeFeed, stopFakeFeeds } from './support/fakeFeedProvider';

afterAll(stopFakeFeeds);

test("serve's 400 for an unreadable cursor restarts the walk, which then completes", async () => {
  const { feed, provider, connection, logger } = await providerOnFakeFeed(10, { batchSize: 4 });
  feed.cursorAnswer = {
    status: 400,
    document: { error: 'cursor: not a cursor from a page of GET /entities' },
  };

  const result = await provider.run();

  expect(result.resynced).toBe(true);
  expect(connection.refs()).toHaveLength(10);
  expect(logger.text()).toMatch(/not a cursor from a page of GET \/entities/);
});

test('a 400 that does not name the cursor fails the step, and the next goes on from its place', async () => {
  const { feed, provider, connection, store } = await providerOnFakeFeed(10, { batchSize: 4 });
  feed.cursorAnswer = { status: 400, document: { error: 'Bad Request' } };

  await expect(provider.run()).rejects.toBeInstanceOf(FeedError);
  const kept = await store.load();
  expect(kept?.resync?.cursor).toBe('4');

  const result = await provider.run();

  expect(result.resynced).toBe(true);
  expect(connection.refs()).toHaveLength(10);
  expect((await store.load())?.generation).toBe(kept?.generation);
});
