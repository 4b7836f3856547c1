/**
 * A step that must stop: the scheduler aborts its signal at the schedule's timeout and lets
 * another replica start a step, so the step stops between pages once the signal is aborted,
 * or once its own time budget (below the timeout) is spent. The position stays at the last
 * page applied and the next step resumes there, with no page skipped or replayed.
 */
import type { EntityProviderMutation } from '@backstage/plugin-catalog-node';
import type { Knex } from 'knex';
import { ChoreoIngestEntityProvider } from '../src';
import { StateStore } from '../src/state';
import { SERVE_TOKEN, type Choreo, startChoreo, waitUntil } from './support/choreo';
import { RecordingConnection } from './support/connection';
import { sqlite } from './support/db';
import { TestLogger } from './support/logger';

const BATCH_SIZE = 3;

let choreo: Choreo;
const databases: Knex[] = [];
let clock = Date.parse('2026-12-01T00:00:00Z');

beforeAll(async () => {
  choreo = await startChoreo({ orgs: 1, projects: 2, components: 4 });
});

afterAll(async () => {
  await Promise.all(databases.map(database => database.destroy()));
  await choreo?.stop();
});

function setup(options: {
  afterMutation?: (mutation: EntityProviderMutation) => void;
  stepBudgetMs?: number;
  logger?: TestLogger;
}) {
  const database = sqlite();
  databases.push(database);
  const connection = new RecordingConnection();
  const provider = new ChoreoIngestEntityProvider({
    baseUrl: choreo.serveUrl,
    token: SERVE_TOKEN,
    logger: options.logger ?? new TestLogger(),
    database,
    batchSize: BATCH_SIZE,
    afterMutation: options.afterMutation,
    stepBudgetMs: options.stepBudgetMs,
    now: () => clock,
  });
  return { database, connection, provider };
}

test('an aborted step stops between pages; the next step resumes where it stopped', async () => {
  const controller = new AbortController();
  let mutations = 0;
  const logger = new TestLogger();
  const { connection, provider } = setup({
    logger,
    afterMutation: () => {
      mutations += 1;
      if (mutations === 2) {
        controller.abort();
      }
    },
  });
  await provider.connect(connection);

  const stopped = await provider.run({ signal: controller.signal });

  // Aborted while the catalog took page 2: its position is not written (another replica may
  // have moved it since), so page 2 counts as not applied, and the next step replays it.
  expect(stopped).toEqual({ applied: BATCH_SIZE, removed: 0, resynced: true, stopped: true });
  expect(connection.summaries).toHaveLength(2);
  const [page1, page2] = connection.summaries.map(s => s.added);
  expect(await provider.appliedRefs()).toEqual([...page1].sort());
  expect(logger.text()).toMatch(/stopped between pages: the step was aborted/);

  const resumed = await provider.run();

  const exported = await choreo.exportRefs();
  expect(exported.length).toBeGreaterThan(3 * BATCH_SIZE);
  const rest = exported.length - BATCH_SIZE;
  expect(resumed).toEqual({ applied: rest, removed: 0, resynced: true });
  expect(connection.refs()).toEqual(exported);
  // Every entity went out once, page 2 twice: the step after the abort skipped nothing and
  // replayed only the page whose position was not written.
  expect(connection.summaries[2].added).toEqual(page2);
  expect(connection.summaries.flatMap(s => s.added).sort()).toEqual([...exported, ...page2].sort());
  expect(await provider.appliedRefs()).toEqual(exported);
});

test('a step that outlived the timeout does not overwrite what the next step wrote', async () => {
  // Replica A's mutation is slow: the scheduler gave the task to replica B meanwhile, whose
  // step ran to the end. A's position write would put the walk back at its page 1.
  let b: ChoreoIngestEntityProvider | undefined;
  const logger = new TestLogger();
  const a = setup({
    logger,
    afterMutation: () => {
      if (b) {
        const taking = b;
        b = undefined;
        return taking.run().then(() => undefined);
      }
      return undefined;
    },
  });
  const store = new StateStore(a.database, 'choreo-ingest');
  const other = new ChoreoIngestEntityProvider({
    baseUrl: choreo.serveUrl,
    token: SERVE_TOKEN,
    logger: new TestLogger(),
    database: a.database,
    batchSize: BATCH_SIZE,
    now: () => clock,
  });
  await other.connect(a.connection);
  b = other;
  await a.provider.connect(a.connection);

  const result = await a.provider.run();

  expect(result).toMatchObject({ applied: 0, stopped: true });
  expect(logger.text()).toMatch(/stopped between pages: another step wrote the position/);
  const exported = await choreo.exportRefs();
  const state = await store.load();
  // B's state stands: the walk complete, at the feed's head, everything applied.
  expect(state?.resync).toBeUndefined();
  expect(state?.seq).toBe((await choreo.feedHead()).newestSeq);
  expect(await store.appliedRefs()).toEqual(exported);
  expect(a.connection.refs()).toEqual(exported);
  // And A's next step carries on from there.
  expect(await a.provider.run()).toEqual({ applied: 0, removed: 0, resynced: false });
});

test('a step whose signal is already aborted applies nothing', async () => {
  const { connection, provider } = setup({});
  await provider.connect(connection);
  const controller = new AbortController();
  controller.abort();

  const result = await provider.run({ signal: controller.signal });

  expect(result).toEqual({ applied: 0, removed: 0, resynced: false, stopped: true });
  expect(connection.summaries).toEqual([]);
  expect(await provider.appliedRefs()).toEqual([]);
});

test('a step stops once its time budget is spent, also while following /changes', async () => {
  let tick = 0;
  const { database, connection, provider } = setup({
    stepBudgetMs: 1000,
    afterMutation: () => {
      clock += tick;
    },
  });
  const store = new StateStore(database, 'choreo-ingest');
  await provider.connect(connection);
  expect((await provider.run()).resynced).toBe(true);
  expect(connection.refs()).toEqual(await choreo.exportRefs());

  const world = await (await fetch(`${choreo.simulatorUrl}/_control/world`)).json();
  const { name: project, namespace } = world.data.projects[0].metadata;
  const before = (await store.load())!.seq!;
  for (const name of ['budget-a', 'budget-b', 'budget-c', 'budget-d']) {
    await choreo.control('add_component', { namespace, project, name });
  }
  await waitUntil(async () => (await choreo.feedHead()).newestSeq >= before + 4, 'the changes');
  const { json: page } = await choreo.serve('GET', `/changes?since=${before}&limit=${BATCH_SIZE}`);
  const firstPageEnd: number = page.changes[BATCH_SIZE - 1].seq;
  connection.clearLog();
  // Each page now takes a second of the clock: the whole budget, so the step stops after one.
  tick = 1000;

  const stopped = await provider.run();

  tick = 0;
  expect(stopped).toEqual({ applied: BATCH_SIZE, removed: 0, resynced: false, stopped: true });
  expect(connection.summaries).toHaveLength(1);
  expect((await store.load())?.seq).toBe(firstPageEnd);

  const resumed = await provider.run();

  expect(resumed.stopped).toBeUndefined();
  expect(connection.summaries.flatMap(s => s.added).sort()).toEqual(
    ['budget-a', 'budget-b', 'budget-c', 'budget-d'].map(name => `component:${namespace}/${name}`),
  );
  expect(connection.refs()).toEqual(await choreo.exportRefs());
});

test('a failure while the signal is aborted is a failure, not a stop between pages', async () => {
  const controller = new AbortController();
  const logger = new TestLogger();
  const { connection, provider } = setup({
    logger,
    afterMutation: () => {
      controller.abort();
      throw new Error('the catalog\'s database went away');
    },
  });
  await provider.connect(connection);

  await expect(provider.run({ signal: controller.signal })).rejects.toThrow(
    /the catalog's database went away/,
  );
  expect(logger.text()).not.toMatch(/stopped between pages/);
});

test('an abort while an answer\'s body streams in is a stop between pages, not a failure', async () => {
  const { createServer } = await import('node:http');
  const stalled = createServer((_request, response) => {
    response.writeHead(200, { 'Content-Type': 'application/json' });
    response.write('{"entities": ['); // and nothing more
  });
  await new Promise<void>(resolve => stalled.listen(0, '127.0.0.1', resolve));
  const { port } = stalled.address() as { port: number };
  const database = sqlite();
  databases.push(database);
  const logger = new TestLogger();
  const provider = new ChoreoIngestEntityProvider({
    baseUrl: `http://127.0.0.1:${port}`,
    logger,
    database,
    batchSize: BATCH_SIZE,
    now: () => clock,
  });
  await provider.connect(new RecordingConnection());
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 200);

  try {
    const stopped = await provider.run({ signal: controller.signal });

    expect(stopped).toEqual({ applied: 0, removed: 0, resynced: true, stopped: true });
    expect(logger.text()).toMatch(/stopped between pages: the step was aborted during a request/);
  } finally {
    stalled.closeAllConnections();
    await new Promise(resolve => stalled.close(resolve));
  }
});
