/**
 * Failures and refusals that repeat at every step are logged once, then again when they change
 * or every REPEAT_LOG_INTERVAL_MS, and their end is said; a failure still reaches the scheduler
 * (module.test.ts checks the task throws it).
 */
import { FeedError } from '../src/feedClient';
import { REPEAT_LOG_INTERVAL_MS, StepFailures } from '../src/repeats';
import { providerOnFakeFeed, stopFakeFeeds } from './support/fakeFeedProvider';
import { TestLogger } from './support/logger';

const DAY_MS = 24 * 60 * 60 * 1000;

afterAll(stopFakeFeeds);

test('a repeated failure is handed on once, again after the interval or when it changes', () => {
  const logger = new TestLogger();
  let clock = Date.parse('2026-12-01T00:00:00Z');
  const failures = new StepFailures(logger, () => clock);
  const refused = new Error('choreo-ingest GET /changes answered HTTP 401: unauthorized');

  expect(failures.failed(refused)?.message).toBe(refused.message);
  clock += 30_000;
  expect(failures.failed(refused)).toBeUndefined();
  clock += REPEAT_LOG_INTERVAL_MS - 30_001;
  expect(failures.failed(refused)).toBeUndefined();
  clock += 1;
  expect(failures.failed(refused)?.message).toBe(
    `${refused.message} (4 failed steps since 2026-12-01T00:00:00.000Z; repeats are reported ` +
      'every 10 min)',
  );
  // Another failure is handed on at once, named as the module's.
  expect(failures.failed(new Error('connection refused'))?.message).toBe(
    'choreo-ingest: sync failed: connection refused',
  );
  expect(logger.lines.filter(line => line.level !== 'debug')).toEqual([]);

  failures.succeeded();
  failures.succeeded();
  expect(logger.lines.filter(line => line.level === 'info')).toEqual([
    {
      level: 'info',
      message:
        'choreo-ingest: sync recovered after 5 failed steps (failing since 2026-12-01T00:00:00.000Z)',
    },
  ]);
  // A failure after the recovery is new again.
  expect(failures.failed(refused)).toBeDefined();
});

test("a feed's failure repeats while its route and status do, whatever its body quotes", () => {
  const logger = new TestLogger();
  let clock = Date.parse('2026-12-01T00:00:00Z');
  const failures = new StepFailures(logger, () => clock);
  const gateway = (request: number) =>
    new FeedError('GET /changes', 502, `<html>Bad Gateway (request id ${request})</html>`);

  expect(failures.failed(gateway(1))).toBeDefined();
  clock += 30_000;
  expect(failures.failed(gateway(2))).toBeUndefined(); // a new request id, the same failure
  expect(failures.failed(new FeedError('GET /changes', 503, 'unavailable'))).toBeDefined();
  expect(failures.failed(new FeedError('GET /entities', 503, 'unavailable'))).toBeDefined();
});

test('a serve down, then up but too slow, is two failures, each handed on', () => {
  const failures = new StepFailures(new TestLogger(), () => Date.parse('2026-12-01T00:00:00Z'));
  const down = () => new FeedError('GET /changes', undefined, 'http://serve unreachable');
  const slow = new FeedError('GET /changes', undefined, 'no answer', { timedOut: true });

  expect(failures.failed(down())).toBeDefined();
  expect(failures.failed(down())).toBeUndefined();
  expect(failures.failed(slow)).toBeDefined();
});

test('a refused removal is logged once, again after the interval, and when it goes through', async () => {
  const { feed, logger, clock, provider } = await providerOnFakeFeed(10, { batchSize: 4 });
  await provider.run();
  // Half the entities vanish from the feed unseen: the next resync would remove 5 of 10.
  const vanished = ['c1', 'c2', 'c3', 'c4', 'c5'];
  vanished.forEach(name => feed.entities.delete(`component:default/${name}`));
  clock.now += DAY_MS;
  const refusals = () => logger.lines.filter(line => /refusing to remove/.test(line.message));
  const warned = () => refusals().filter(line => line.level === 'warn');

  await provider.run();
  expect(warned()).toHaveLength(1);
  expect(warned()[0].message).toMatch(/^choreo-ingest: refusing to remove 5 of 10 entities/);
  for (let step = 0; step < 5; step += 1) {
    clock.now += 30_000;
    await provider.run();
  }
  expect(warned()).toHaveLength(1);
  expect(refusals()).toHaveLength(6); // the repeats as debug lines
  clock.now += REPEAT_LOG_INTERVAL_MS;
  await provider.run();
  expect(warned()).toHaveLength(2);
  expect(warned()[1].message).toMatch(/\(refused since 2026-12-02T00:00:00.000Z\)$/);

  // The entities come back through the feed: nothing is left to remove, and that is said.
  vanished.forEach(name => feed.upsert(name));
  await provider.run();
  expect(logger.text()).toMatch(
    /info: choreo-ingest: the removal refused since 2026-12-02T00:00:00.000Z is within maxRemovalRatio now/,
  );
  await provider.run();
  expect(warned()).toHaveLength(2);
});
