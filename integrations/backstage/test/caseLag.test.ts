/**
 * A module behind the feed when an API is renamed only in case (`httpApi` -> `httpapi`):
 * Backstage tells refs apart case-insensitively, so no step may remove the entity the live
 * spelling is (a removal and a re-add give it a new uid, and its relations drop out meanwhile).
 */
import { providerOnFakeFeed, stopFakeFeeds } from './support/fakeFeedProvider';

afterAll(stopFakeFeeds);

test('an upsert of a spelling gone since is not a removal of the live one', async () => {
  const { feed, connection, provider } = await providerOnFakeFeed(0, { batchSize: 2 });
  feed.upsert('web-cart-httpApi');
  await provider.run();
  expect(connection.refs()).toEqual(['component:default/web-cart-httpapi']);
  connection.clearLog();
  // While the module did not run: the old spelling changed, then the endpoint was renamed.
  feed.upsert('web-cart-httpApi');
  feed.upsert('other');
  feed.remove('web-cart-httpApi');
  feed.upsert('web-cart-httpapi'); // the feed's delete and the live twin's upsert: one page

  await provider.run();

  // The first page asks for `httpApi`, gone by now (`missing`); its delete comes later in the
  // log. Before, the module removed it at once, case-folded: the live `httpapi` went too.
  const removed = connection.summaries.flatMap(summary => summary.removed);
  expect(removed).toEqual([]);
  expect(connection.refs()).toEqual([
    'component:default/other',
    'component:default/web-cart-httpapi',
  ]);
});
