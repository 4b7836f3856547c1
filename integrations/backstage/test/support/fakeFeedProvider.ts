/**
 * A provider following a fresh `FakeFeed` of `names` components (`c0`, `c1`, ...), its state in
 * a new SQLite database, on a test clock (`clock.now`, moved by the test). `stopFakeFeeds()` in
 * `afterAll` stops the feeds and closes the databases made so far.
 */
import type { Knex } from 'knex';
import { ChoreoIngestEntityProvider } from '../../src';
import { StateStore } from '../../src/state';
import { RecordingConnection } from './connection';
import { sqlite } from './db';
import { FakeFeed } from './fakeFeed';
import { TestLogger } from './logger';

const feeds: FakeFeed[] = [];
const databases: Knex[] = [];

/** A started `FakeFeed` of `names` components and a new SQLite database, both stopped by
 * `stopFakeFeeds()`. */
export async function fakeFeedOf(names: number): Promise<{ feed: FakeFeed; database: Knex }> {
  const feed = new FakeFeed();
  feeds.push(feed);
  await feed.start();
  for (let index = 0; index < names; index += 1) {
    feed.upsert(`c${index}`);
  }
  const database = sqlite();
  databases.push(database);
  return { feed, database };
}

export async function providerOnFakeFeed(
  names: number,
  options: { batchSize: number; stepBudgetMs?: number; maxRemovalRatio?: number },
) {
  const { feed, database } = await fakeFeedOf(names);
  const logger = new TestLogger();
  const connection = new RecordingConnection();
  const clock = { now: Date.parse('2026-12-01T00:00:00Z') };
  const provider = new ChoreoIngestEntityProvider({
    baseUrl: feed.url,
    logger,
    database,
    batchSize: options.batchSize,
    stepBudgetMs: options.stepBudgetMs,
    maxRemovalRatio: options.maxRemovalRatio,
    now: () => clock.now,
  });
  await provider.connect(connection);
  const store = new StateStore(database, 'choreo-ingest');
  return { feed, logger, connection, clock, provider, store };
}

export async function stopFakeFeeds(): Promise<void> {
  await Promise.all(databases.splice(0).map(database => database.destroy()));
  await Promise.all(feeds.splice(0).map(feed => feed.stop()));
}
