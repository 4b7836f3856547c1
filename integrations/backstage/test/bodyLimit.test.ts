/**
 * A `POST /entities/batch` that serve refuses as too large (413: its `serve.maxBodyBytes` set
 * below what a batch of refs takes): the batch is asked for again in halves, halved again while
 * refused, down to one ref, and the step carries on. One ref still refused is an error that
 * names the ref and serve's limit, and the position stays where it was. A fake feed, to set the
 * limit.
 */
import { FeedError } from '../src';
import { providerOnFakeFeed, stopFakeFeeds } from './support/fakeFeedProvider';

afterAll(stopFakeFeeds);

const ref = (name: string) => `component:default/${name}`;
/** `{"refs":[...]}` of two refs `component:default/cN` (56 bytes) fits, three (79) do not. */
const TWO_REFS_BYTES = 60;

/** A provider that has resynced an empty feed, then sees `names` new components. */
async function afterUpserts(names: number) {
  const setup = await providerOnFakeFeed(0, { batchSize: 100 });
  expect(await setup.provider.run()).toEqual({ applied: 0, removed: 0, resynced: true });
  for (let index = 0; index < names; index += 1) {
    setup.feed.upsert(`c${index}`);
  }
  return setup;
}

test('a batch refused as too large (413) is asked for in halves until serve takes them', async () => {
  const { feed, connection, provider } = await afterUpserts(10);
  feed.maxBodyBytes = TWO_REFS_BYTES;

  expect(await provider.run()).toEqual({ applied: 10, removed: 0, resynced: false });

  // 10 -> 5 + 5, 5 -> 3 + 2, 3 -> 2 + 1: each refused size halved, in order.
  expect(feed.batches).toEqual(
    [10, 5, 3, 2, 1, 2, 5, 3, 2, 1, 2].map(refs => ({ refs, status: refs > 2 ? 413 : 200 })),
  );
  // Each answer taken goes to the catalog as it comes, every entity once, in order.
  const names = [[0, 1], [2], [3, 4], [5, 6], [7], [8, 9]];
  expect(connection.summaries.map(summary => summary.added)).toEqual(
    names.map(answer => answer.map(index => ref(`c${index}`))),
  );
  expect(await provider.run()).toEqual({ applied: 0, removed: 0, resynced: false });
});

test("a page's answers go to the catalog one by one, each before the next is asked for", async () => {
  // A page of large entities (inline API definitions) is never held whole: serve answers at
  // most 16 MiB of text at a time (413 above it), and each answer is applied before the next.
  const { feed, connection, provider, store } = await afterUpserts(6);
  feed.remove('c5'); // its delete goes with the first answer's mutation
  feed.maxBodyBytes = TWO_REFS_BYTES;
  const appliedBeforeEachAnswer: number[] = [];
  feed.onRequest = route => {
    if (route === '/entities/batch') {
      appliedBeforeEachAnswer.push(connection.summaries.length);
    }
  };

  expect(await provider.run()).toEqual({ applied: 5, removed: 1, resynced: false });

  // 5 (refused) -> 3 (refused) -> 2 + 1, then 2: the three answers taken, the 1st applied
  // before the 2nd is asked for, the 2nd before the 3rd.
  expect(feed.batches.map(batch => batch.refs)).toEqual([5, 3, 2, 1, 2]);
  expect(appliedBeforeEachAnswer).toEqual([0, 0, 0, 1, 2]);
  expect(connection.summaries.map(({ added, removed }) => ({ added, removed }))).toEqual([
    { added: [ref('c0'), ref('c1')], removed: [ref('c5')] },
    { added: [ref('c2')], removed: [] },
    { added: [ref('c3'), ref('c4')], removed: [] },
  ]);
  expect((await store.load())?.seq).toBe(feed.seq);
});

test('one ref serve still refuses is an error naming it and the limit; nothing moves', async () => {
  const { feed, connection, provider, store } = await afterUpserts(2);
  const before = await store.load();
  feed.maxBodyBytes = 20;

  const error = await provider.run().then(
    () => undefined,
    (failure: unknown) => failure,
  );

  expect(error).toBeInstanceOf(FeedError);
  expect((error as FeedError).status).toBe(413);
  expect((error as Error).message).toBe(
    'choreo-ingest POST /entities/batch answered HTTP 413: request body of 33 bytes; at most ' +
      `20 (the one ref ${ref('c0')}: serve.maxBodyBytes is below a batch of one)`,
  );
  expect(feed.batches).toEqual([2, 1].map(refs => ({ refs, status: 413 })));
  expect(connection.summaries.filter(summary => summary.added.length)).toEqual([]);
  expect(await store.load()).toEqual(before);

  // Once serve takes it, the next step carries on from the same position.
  feed.maxBodyBytes = Infinity;
  expect(await provider.run()).toEqual({ applied: 2, removed: 0, resynced: false });
});
