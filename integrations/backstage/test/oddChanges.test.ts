/**
 * A change the module cannot apply as it stands (a ref that is no entity ref, an op it does not
 * know, say from a newer serve) fails no step: the ref is left out, or its entity read again,
 * with one warning of each kind a process, and the changes after it are applied. Before, the
 * step failed on it at every attempt, and nothing after it was ever applied.
 */
import { pageOps } from '../src/changePage';
import { FeedError } from '../src';
import { providerOnFakeFeed, stopFakeFeeds } from './support/fakeFeedProvider';

afterAll(stopFakeFeeds);

const page = (changes: unknown[]) =>
  ({ storeId: 's', oldestSeq: 1, newestSeq: 9, changes }) as Parameters<typeof pageOps>[0];
const change = (seq: number, op: unknown, ref?: unknown) => ({
  seq,
  at: 'a',
  op,
  ref,
  provider: 'p',
});

test('odd changes are left out or read again, by the last op of each ref', () => {
  const ops = pageOps(
    page([
      change(1, 'upsert', 'component:default/a'),
      change(2, 'upsert'),
      change(3, 'delete', 'component:default/'),
      change(4, 'rename', 'component:default/b'),
      change(5, 'delete', 'component:default/A'),
      change(6, 'upsert', 'component:default/c'),
    ]),
  );

  expect(ops).toEqual({
    upserts: ['component:default/b', 'component:default/c'],
    deletes: ['component:default/A'],
    rereads: new Set(['component:default/b']),
    odd: [
      { seq: 2, problem: 'ref', detail: 'it has no ref' },
      { seq: 3, problem: 'ref', detail: '"component:default/" is not an entity ref' },
      { seq: 4, problem: 'op', detail: 'unknown op "rename" for component:default/b' },
    ],
  });
});

test.each([['7'], [1.5], [undefined]])('a change whose seq is %p fails the page', seq => {
  expect(() => pageOps(page([{ seq, op: 'upsert', ref: 'component:default/a' }]))).toThrow(
    FeedError,
  );
});

test('a ref read again for an unknown op that serve no longer has is removed', async () => {
  const { feed, connection, provider } = await providerOnFakeFeed(2, { batchSize: 100 });
  expect(await provider.run()).toEqual({ applied: 2, removed: 0, resynced: true });
  feed.remove('c1');
  feed.oddChange({ op: 'touch', ref: 'component:default/c1' }); // after its delete, in one page

  expect(await provider.run()).toEqual({ applied: 0, removed: 1, resynced: false });

  expect(connection.summaries[connection.summaries.length - 1].removed).toEqual([
    'component:default/c1',
  ]);
});

test('a step applies the changes after odd ones, and warns once of each kind', async () => {
  const { feed, connection, logger, provider } = await providerOnFakeFeed(2, { batchSize: 100 });
  expect(await provider.run()).toEqual({ applied: 2, removed: 0, resynced: true });
  feed.oddChange({ op: 'upsert', ref: 'component:/x' });
  feed.oddChange({ op: 'touch', ref: 'component:default/c0' });
  feed.oddChange({ op: 'upsert' });
  feed.oddChange({ op: 'touch', ref: 'component:default/c1' });
  feed.upsert('c2');
  feed.remove('c1');

  expect(await provider.run()).toEqual({ applied: 2, removed: 1, resynced: false });
  expect(await provider.run()).toEqual({ applied: 0, removed: 0, resynced: false });

  const last = connection.summaries[connection.summaries.length - 1];
  expect(last.added).toEqual(['component:default/c0', 'component:default/c2']);
  expect(last.removed).toEqual(['component:default/c1']);
  const warnings = logger.lines.filter(line => line.level === 'warn').map(line => line.message);
  expect(warnings).toEqual([
    expect.stringMatching(
      /^choreo-ingest: change 3 of the feed: "component:\/x" is not an entity ref: it is left out/,
    ),
    expect.stringMatching(
      /^choreo-ingest: change 4 of the feed: unknown op "touch" for component:default\/c0: its/,
    ),
  ]);
});
