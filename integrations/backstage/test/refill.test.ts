/**
 * choreo-ingest on a new state file (a new storeId) fills its catalog over many bursts: the
 * module's resync sees a part of it, and what it has not seen yet is not gone. The feed says so
 * (`catalogComplete: false`) until every provider has completed a cycle: nothing is removed
 * until then, and what is still missing then is removed.
 */
import { providerOnFakeFeed, stopFakeFeeds } from './support/fakeFeedProvider';

afterAll(stopFakeFeeds);

const NAMES = 10;

/** The feed starts again on a new, empty state, whose first cycle has not completed. */
async function onANewState() {
  const setup = await providerOnFakeFeed(NAMES, { batchSize: 100 });
  expect((await setup.provider.run()).applied).toBe(NAMES);
  const { feed } = setup;
  feed.storeId = 'store-b';
  feed.entities.clear();
  feed.changes.length = 0;
  feed.seq = 0;
  feed.catalogComplete = false;
  return setup;
}

test('entities a new state has not read yet are not removed while its first cycle goes on', async () => {
  const { feed, provider, connection, logger } = await onANewState();

  expect((await provider.run()).removed).toBe(0);
  for (let index = 0; index < 8; index += 1) {
    feed.upsert(`c${index}`); // its first burst: 8 of the 10 are back
  }
  const refilled = await provider.run();

  expect(refilled).toMatchObject({ applied: 8, removed: 0 });
  expect(connection.refs()).toHaveLength(NAMES);
  expect(logger.text()).toMatch('waits until choreo-ingest has completed a cycle of every provider');

  for (let index = 8; index < NAMES; index += 1) {
    feed.upsert(`c${index}`);
  }
  feed.catalogComplete = true;
  expect(await provider.run()).toMatchObject({ applied: 2, removed: 0 });
  expect(connection.summaries.flatMap(summary => summary.removed)).toEqual([]);
  expect(connection.refs()).toHaveLength(NAMES);
});

test('once the new state completed its cycle, what it does not hold is removed', async () => {
  const { feed, provider, connection } = await onANewState();
  for (let index = 0; index < 9; index += 1) {
    feed.upsert(`c${index}`);
  }
  expect((await provider.run()).removed).toBe(0);

  feed.catalogComplete = true; // c9 is gone from the platform
  const result = await provider.run();

  expect(result.removed).toBe(1);
  expect(connection.summaries.flatMap(summary => summary.removed)).toEqual([
    'component:default/c9',
  ]);
});

test('a serve that does not say whether its catalog is complete is taken as complete', async () => {
  const { feed, provider } = await onANewState();
  feed.catalogComplete = undefined;
  for (let index = 0; index < 9; index += 1) {
    feed.upsert(`c${index}`);
  }

  expect((await provider.run()).removed).toBe(1);
});
