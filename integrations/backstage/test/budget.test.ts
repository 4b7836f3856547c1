/**
 * The step budget is checked before a page starts, never between a page read and its mutation:
 * a page slower than the whole budget is still applied (only the scheduler's abort, at the
 * timeout, throws it away). And no state is written once the budget is spent or the step
 * aborted, but for the position of a page the catalog already accepted. A fake feed whose
 * requests move the test's clock.
 */
import type { FeedState } from '../src/state';
import { FakeFeed } from './support/fakeFeed';
import { providerOnFakeFeed, stopFakeFeeds } from './support/fakeFeedProvider';

const BUDGET_MS = 1000;

afterAll(stopFakeFeeds);

function setup(names: number, options: { budget?: boolean } = {}) {
  const stepBudgetMs = options.budget === false ? undefined : BUDGET_MS;
  return providerOnFakeFeed(names, { batchSize: 5, stepBudgetMs });
}

test('a page slower than the whole budget is applied; the step stops before the next', async () => {
  const { feed, connection, clock, provider } = await setup(10);
  feed.onRequest = route => {
    if (route === '/entities') {
      clock.now += 2 * BUDGET_MS;
    }
  };

  const first = await provider.run();

  expect(first).toEqual({ applied: 5, removed: 0, resynced: true, stopped: true });
  expect(connection.summaries).toHaveLength(1);

  expect(await provider.run()).toEqual({ applied: 5, removed: 0, resynced: true, stopped: true });
  expect(await provider.run()).toEqual({ applied: 0, removed: 0, resynced: false });
  expect(connection.refs()).toEqual([...feed.entities.keys()].sort());
  expect(await provider.appliedRefs()).toEqual(connection.refs());
});

test('a page whose read outlasts an abort is not applied', async () => {
  const { feed, connection, provider, store } = await setup(10, { budget: false });
  const controller = new AbortController();
  feed.onRequest = route => {
    if (route === '/entities') {
      controller.abort();
    }
  };

  const result = await provider.run({ signal: controller.signal });

  expect(result).toEqual({ applied: 0, removed: 0, resynced: true, stopped: true });
  expect(connection.summaries).toEqual([]);
  expect((await store.load())?.resync).toEqual({});
});

test('a 410 that comes after the budget starts no resync', async () => {
  const { feed, clock, provider, store } = await setup(3);
  await provider.run();
  const before = await store.load();
  feed.answer410 = true;
  feed.onRequest = route => {
    if (route === '/changes') {
      clock.now += 5 * BUDGET_MS;
    }
  };

  const result = await provider.run();

  expect(result).toEqual({ applied: 0, removed: 0, resynced: false, stopped: true });
  expect(await store.load()).toEqual(before);
});

test('a walk page with nothing to apply is not recorded once the step was aborted', async () => {
  const { feed, provider, store } = await setup(0, { budget: false });
  for (let index = 0; index < 10; index += 1) {
    feed.upsert(`c${index}`, FakeFeed.invalidBody(`c${index}`));
  }
  const controller = new AbortController();
  feed.onRequest = route => {
    if (route === '/entities') {
      controller.abort();
    }
  };

  const result = await provider.run({ signal: controller.signal });

  expect(result.stopped).toBe(true);
  expect((await store.load())?.resync).toEqual({});
});

test('the end of a sweep is not recorded after the budget', async () => {
  const { feed, clock, provider, store } = await setup(3);
  feed.onRequest = route => {
    if (route === '/changes') {
      clock.now += 5 * BUDGET_MS;
    }
  };

  const result = await provider.run();

  expect(result).toEqual({ applied: 3, removed: 0, resynced: true, stopped: true });
  const state = (await store.load()) as FeedState;
  expect(state.sweepPending).toBe(true);

  feed.onRequest = undefined;
  expect(await provider.run()).toEqual({ applied: 0, removed: 0, resynced: false });
  expect((await store.load())?.sweepPending).toBe(false);
});
