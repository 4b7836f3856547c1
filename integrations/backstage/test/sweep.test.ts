/**
 * The resync's sweep at scale: a removal the guard refuses is counted, not read (it is checked
 * at every step, and may hold hundreds of thousands of refs); one it allows is read and removed a
 * batch of at most 1,000 refs at a time.
 */
import { MAX_BATCH_REFS } from '../src/feedClient';
import { StateStore } from '../src/state';
import { providerOnFakeFeed, stopFakeFeeds } from './support/fakeFeedProvider';

const DAY_MS = 24 * 60 * 60 * 1000;
const NAMES = 2_600;
const VANISHED = 2_500;

afterAll(stopFakeFeeds);
afterEach(() => jest.restoreAllMocks());

async function withVanished(maxRemovalRatio: number) {
  const setup = await providerOnFakeFeed(NAMES, { batchSize: 1_000, maxRemovalRatio });
  expect((await setup.provider.run()).applied).toBe(NAMES);
  for (let index = 0; index < VANISHED; index += 1) {
    setup.feed.entities.delete(`component:default/c${index}`);
  }
  setup.clock.now += DAY_MS; // the periodic resync is due
  return setup;
}

test('a refused removal reads none of the refs it refuses, at any step', async () => {
  const { provider, logger, clock } = await withVanished(0.2);
  const read = jest.spyOn(StateStore.prototype, 'staleRefs');

  await provider.run();
  clock.now += 30_000;
  await provider.run();

  expect(logger.text()).toMatch(`refusing to remove ${VANISHED} of ${NAMES} entities`);
  expect(read).not.toHaveBeenCalled();
});

test('an allowed removal goes a batch of at most 1,000 refs at a time', async () => {
  const { provider, connection, store } = await withVanished(1);
  const read = jest.spyOn(StateStore.prototype, 'staleRefs');

  const result = await provider.run();

  expect(result.removed).toBe(VANISHED);
  const removals = connection.summaries.filter(s => s.removed.length).map(s => s.removed.length);
  expect(removals).toEqual([1_000, 1_000, 500]);
  expect(read.mock.calls.every(([, limit]) => limit === MAX_BATCH_REFS)).toBe(true);
  expect(await store.appliedCount()).toBe(NAMES - VANISHED);
  expect(connection.refs()).toHaveLength(NAMES - VANISHED);
});
