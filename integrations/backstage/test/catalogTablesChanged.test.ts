/**
 * The catalog's own tables (`refresh_state`, `refresh_state_references`) are not its API: a
 * catalog release that renames a column there must cost the module its checks of what the
 * catalog holds (evictions, conflicts, orphans), said once, and never its sync.
 */
import { ChoreoIngestEntityProvider } from '../src';
import { StateStore } from '../src/state';
import { RecordingConnection } from './support/connection';
import { fakeFeedOf, stopFakeFeeds } from './support/fakeFeedProvider';
import { TestLogger } from './support/logger';

afterAll(stopFakeFeeds);

/** The catalog's tables, each without a column the module reads (`location_key`, `source_key`). */
async function catalogOfAnotherRelease(names: number) {
  const { feed, database } = await fakeFeedOf(names);
  await database.schema.createTable('refresh_state', table => {
    table.text('entity_ref').notNullable().unique();
    table.text('location_key_v2').nullable();
  });
  await database.schema.createTable('refresh_state_references', table => {
    table.increments('id');
    table.text('source').nullable();
    table.text('target_entity_ref').notNullable();
  });
  return { feed, database };
}

test('a read of a changed catalog table leaves its check out and says why', async () => {
  const { database } = await catalogOfAnotherRelease(0);
  const unread: unknown[] = [];
  const store = new StateStore(database, 'choreo-ingest', {
    catalogUnread: error => unread.push(error),
  });
  await store.ready();

  expect(await store.catalogHolding('provider:choreo-ingest')).toBeUndefined();
  expect(await store.orphanCount()).toBe(0);
  expect(await store.orphanRefs('', 10)).toEqual([]);
  expect(unread).toHaveLength(3);
  expect(String(unread[0])).toMatch(/location_key/);
  expect(String(unread[1])).toMatch(/source_key/);
});

test('the sync goes on over a changed catalog table, said once a process', async () => {
  const { feed, database } = await catalogOfAnotherRelease(6);
  const logger = new TestLogger();
  const connection = new RecordingConnection();
  const provider = new ChoreoIngestEntityProvider({
    baseUrl: feed.url,
    logger,
    database,
    batchSize: 4,
    now: () => Date.parse('2026-12-01T00:00:00Z'),
  });
  await provider.connect(connection);

  expect((await provider.run()).applied).toBe(6);
  feed.upsert('c6');
  expect((await provider.run()).applied).toBe(1);

  expect(connection.refs()).toHaveLength(7);
  const said = logger.lines.filter(line => line.message.includes('could not be read'));
  expect(said).toHaveLength(1);
  expect(said[0].level).toBe('warn');
  expect(said[0].message).toMatch(/refresh_state, refresh_state_references/);
});
