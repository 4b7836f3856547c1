/**
 * A sync step SIGKILLed between an accepted mutation and the position write: the next step
 * replays that page, and the catalog and the module's state end up exactly as the feed says.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { StateStore } from '../src/state';
import { SERVE_TOKEN, type Choreo, startChoreo, waitUntil } from './support/choreo';
import { type MutationSummary, fold, readSummaries } from './support/connection';
import { sqlite } from './support/db';

const BATCH_SIZE = 4;
const ROOT = path.resolve(__dirname, '..');
const OPENAPI = 'openapi: 3.0.0\ninfo: {title: crash, version: 1.0.0}\npaths: {}\n';

let choreo: Choreo;
let dir: string;

beforeAll(async () => {
  choreo = await startChoreo({ orgs: 1, projects: 2, components: 4 });
  dir = await mkdtemp(path.join(tmpdir(), 'choreo-ingest-crash-'));
});

afterAll(async () => {
  await choreo?.stop();
  if (dir) {
    await rm(dir, { recursive: true, force: true });
  }
});

type Outcome = { code: number | null; signal: string | null; stdout: string; stderr: string };

function syncChild(killAfterMutation?: number, maxMutation?: number): Promise<Outcome> {
  return new Promise(resolve => {
    execFile(
      process.execPath,
      ['-r', './test/support/tsRequire.js', 'test/support/syncChild.ts'],
      {
        cwd: ROOT,
        timeout: 60_000,
        env: {
          ...process.env,
          CHILD_BASE_URL: choreo.serveUrl,
          CHILD_TOKEN: SERVE_TOKEN,
          CHILD_DB: path.join(dir, 'catalog.sqlite'),
          CHILD_RECORD: path.join(dir, 'mutations.ndjson'),
          CHILD_BATCH_SIZE: String(BATCH_SIZE),
          CHILD_KILL_AFTER_MUTATION: killAfterMutation ? String(killAfterMutation) : '',
          CHILD_MAX_MUTATION: maxMutation ? String(maxMutation) : '',
        },
      },
      (error, stdout, stderr) => {
        const failure = error as (Error & { code?: number; signal?: string }) | null;
        resolve({
          code: failure ? (failure.code ?? null) : 0,
          signal: failure?.signal ?? null,
          stdout,
          stderr,
        });
      },
    );
  });
}

async function appliedInState(): Promise<string[]> {
  const database = sqlite(path.join(dir, 'catalog.sqlite'));
  try {
    return await new StateStore(database, 'choreo-ingest').appliedRefs();
  } finally {
    await database.destroy();
  }
}

const record = () => readSummaries(path.join(dir, 'mutations.ndjson'));

test('a kill during the resync walk replays the page and misses nothing', async () => {
  const killed = await syncChild(2);
  expect(killed.signal).toBe('SIGKILL');
  const beforeRestart = record();
  expect(beforeRestart).toHaveLength(2);

  const resumed = await syncChild();
  expect(resumed.code).toBe(0);
  const exported = await choreo.exportRefs();
  const summaries = record();
  // The resumed walk starts again at the page whose position was never written.
  expect(summaries[2]).toEqual(beforeRestart[1]);
  expect(summaries.every((s: MutationSummary) => s.type === 'delta')).toBe(true);
  expect(fold(summaries)).toEqual(exported);
  const applied = await appliedInState();
  expect(applied).toEqual(exported);
  expect(new Set(applied).size).toBe(applied.length);
  // Each page went out once, except the replayed one (twice): no other duplicates.
  const added = summaries.flatMap(s => s.added);
  expect(added.length).toBe(exported.length + beforeRestart[1].added.length);
  expect(JSON.parse(resumed.stdout)).toEqual({
    applied: exported.length - beforeRestart[0].added.length,
    removed: 0,
    resynced: true,
  });
});

test('a kill while following /changes replays the delta and misses nothing', async () => {
  const namespace = await addComponent('crash-landing');
  const start = record().length;

  const killed = await syncChild(1);
  expect(killed.signal).toBe('SIGKILL');
  const resumed = await syncChild();
  expect(resumed.code).toBe(0);
  expect(JSON.parse(resumed.stdout)).toEqual({ applied: 2, removed: 0, resynced: false });

  const summaries = record();
  const [first, replay] = summaries.slice(start);
  expect(summaries.length - start).toBe(2);
  expect(replay).toEqual(first);
  expect(first.added).toContain(`component:${namespace}/crash-landing`);
  const exported = await choreo.exportRefs();
  expect(fold(summaries)).toEqual(exported);
  expect(await appliedInState()).toEqual(exported);
});

test('a kill between two mutations of one page replays the page and misses nothing', async () => {
  await addComponent('split-landing');
  const start = record().length;

  // One entity per mutation: the page (a component and its API) goes as two; killed after one.
  const killed = await syncChild(1, 1);
  expect(killed.signal).toBe('SIGKILL');
  const resumed = await syncChild();
  expect(resumed.code).toBe(0);
  expect(JSON.parse(resumed.stdout)).toEqual({ applied: 2, removed: 0, resynced: false });

  const summaries = record().slice(start);
  expect(summaries.map(s => s.added.length)).toEqual([1, 2]);
  expect(summaries[1].added).toContain(summaries[0].added[0]);
  const exported = await choreo.exportRefs();
  expect(fold(record())).toEqual(exported);
  const applied = await appliedInState();
  expect(applied).toEqual(exported);
  expect(new Set(applied).size).toBe(applied.length);
});

/** Add a component with one API to the simulated world, and wait until the feed has both. */
async function addComponent(name: string): Promise<string> {
  const world = await (await fetch(`${choreo.simulatorUrl}/_control/world`)).json();
  const { name: project, namespace } = world.data.projects[0].metadata;
  const before = (await choreo.feedHead()).newestSeq;
  await choreo.control('add_component', {
    namespace,
    project,
    name,
    endpoints: JSON.stringify({ rest: { type: 'REST', port: 8080, schema: { content: OPENAPI } } }),
  });
  await waitUntil(async () => (await choreo.feedHead()).newestSeq >= before + 2, 'the change');
  return namespace;
}
