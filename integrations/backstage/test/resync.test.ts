/**
 * The 410 path: the feed pruned past the module's position (`changes.maxRows: 2`), so the
 * module copies the catalog again; the removal of what vanished meanwhile is refused above
 * `maxRemovalRatio` (logged, and nothing removed) until the ratio is raised.
 */
import type { Knex } from 'knex';
import { ChoreoIngestEntityProvider } from '../src';
import { SERVE_TOKEN, type Choreo, startChoreo, waitUntil } from './support/choreo';
import { RecordingConnection } from './support/connection';
import { sqlite } from './support/db';
import { TestLogger } from './support/logger';

const OPENAPI = 'openapi: 3.0.0\ninfo: {title: newcomer, version: 1.0.0}\npaths: {}\n';

let choreo: Choreo;
let database: Knex;
const connection = new RecordingConnection();

beforeAll(async () => {
  choreo = await startChoreo({ orgs: 1, projects: 3, components: 6, changes: { maxRows: 2 } });
  database = sqlite();
});

afterAll(async () => {
  await database?.destroy();
  await choreo?.stop();
});

function provider(maxRemovalRatio: number, logger = new TestLogger()) {
  return new ChoreoIngestEntityProvider({
    baseUrl: choreo.serveUrl,
    token: SERVE_TOKEN,
    logger,
    database,
    batchSize: 10,
    maxRemovalRatio,
  });
}

test('a pruned position (410) resyncs; a large removal waits for a higher ratio', async () => {
  const cautious = provider(0.05);
  await cautious.connect(connection);
  expect((await cautious.run()).resynced).toBe(true);
  const first = await choreo.exportRefs();
  expect(connection.refs()).toEqual(first);
  const position = (await choreo.feedHead()).newestSeq;

  // Two components go while the module is away, and the feed prunes their changes.
  const world = await (await fetch(`${choreo.simulatorUrl}/_control/world`)).json();
  const gone = (world.data.components as Array<{ metadata: { name: string; namespace: string } }>)
    .slice(0, 2)
    .map(c => c.metadata);
  for (const { namespace, name } of gone) {
    await choreo.control('delete_component', { namespace, name });
  }
  await waitUntil(
    async () => (await choreo.serve('GET', `/changes?since=${position}&limit=1`)).status === 410,
    'the feed to prune past the position',
  );
  await waitUntil(async () => (await choreo.exportRefs()).length < first.length, 'the deletes');
  const exported = await choreo.exportRefs();
  const vanished = first.filter(ref => !exported.includes(ref));
  expect(vanished.length).toBeGreaterThanOrEqual(2);
  expect(vanished.length / first.length).toBeGreaterThan(0.05);
  connection.clearLog();

  const logger = new TestLogger();
  const refused = provider(0.05, logger);
  await refused.connect(connection);
  const result = await refused.run();

  expect(result).toEqual({ applied: exported.length, removed: 0, resynced: true });
  expect(logger.text()).toMatch(/410/);
  expect(logger.text()).toMatch(new RegExp(`refusing to remove ${vanished.length} of ${first.length}`));
  expect(connection.summaries.every(s => s.type === 'delta' && !s.removed.length)).toBe(true);
  expect(connection.refs()).toEqual(first);
  // Asked again, it still refuses: nothing changed.
  expect(await refused.run()).toEqual({ applied: 0, removed: 0, resynced: false });

  // The operator raises the ratio: the next step removes exactly what vanished.
  connection.clearLog();
  const raised = provider(0.5);
  await raised.connect(connection);
  expect(await raised.run()).toEqual({ applied: 0, removed: vanished.length, resynced: false });
  expect(connection.summaries).toHaveLength(1);
  expect([...connection.summaries[0].removed].sort()).toEqual(vanished);
  expect(connection.refs()).toEqual(exported);
  expect(await raised.appliedRefs()).toEqual(exported);
});

test('a resync within maxRemovalRatio removes what vanished at once', async () => {
  const auto = provider(0.2);
  await auto.connect(connection);
  await auto.run();
  const before = await choreo.exportRefs();
  expect(connection.refs()).toEqual(before);
  const position = (await choreo.feedHead()).newestSeq;

  const world = await (await fetch(`${choreo.simulatorUrl}/_control/world`)).json();
  const [{ namespace, name }] = (
    world.data.components as Array<{ metadata: { name: string; namespace: string } }>
  ).map(c => c.metadata);
  const project = (world.data.projects as Array<{ metadata: { name: string; namespace: string } }>)
    .map(p => p.metadata)
    .find(p => p.namespace === namespace)!.name;
  await choreo.control('delete_component', { namespace, name });
  await choreo.control('add_component', {
    namespace,
    project,
    name: 'newcomer',
    endpoints: JSON.stringify({ rest: { type: 'REST', port: 8080, schema: { content: OPENAPI } } }),
  });
  await waitUntil(
    async () => (await choreo.serve('GET', `/changes?since=${position}&limit=1`)).status === 410,
    'the feed to prune past the position',
  );
  await waitUntil(
    async () => (await choreo.exportRefs()).some(ref => ref.endsWith('/newcomer')),
    'the changes',
  );
  const exported = await choreo.exportRefs();
  const vanished = before.filter(ref => !exported.includes(ref));
  connection.clearLog();

  const result = await auto.run();

  expect(result).toEqual({ applied: exported.length, removed: vanished.length, resynced: true });
  expect(vanished.length).toBeGreaterThanOrEqual(1);
  expect(connection.summaries.flatMap(s => s.removed).sort()).toEqual(vanished);
  expect(connection.refs()).toEqual(exported);
  expect(await auto.appliedRefs()).toEqual(exported);
});

test('a refused token fails the step with the route and status, never the token', async () => {
  const token = 'not-the-serve-token-0123456789';
  const fresh = sqlite();
  try {
    const wrong = new ChoreoIngestEntityProvider({
      baseUrl: choreo.serveUrl,
      token,
      logger: new TestLogger(),
      database: fresh,
    });
    await wrong.connect(new RecordingConnection());
    const failure = await wrong.run().then(
      () => undefined,
      (error: Error) => error,
    );
    expect(failure?.message).toMatch(/^choreo-ingest GET \/entities answered HTTP 401: /);
    expect(failure?.message).not.toContain(token);
    expect(await wrong.appliedRefs()).toEqual([]);
  } finally {
    await fresh.destroy();
  }
});
