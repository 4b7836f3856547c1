/**
 * The acceptance shape: 3 namespaces x 10 projects x 100 components, a real `choreo-ingest
 * serve`, and the module's sync steps applied to a recording fake connection.
 */
import {
  ANNOTATION_LOCATION,
  ANNOTATION_ORIGIN_LOCATION,
  type Entity,
} from '@backstage/catalog-model';
import type { Knex } from 'knex';
import { ChoreoIngestEntityProvider } from '../src';
import { locationKeyFor, normalizeRef } from '../src/entities';
import {
  SERVE_TOKEN,
  type Choreo,
  projectsOf,
  putComponentWithEndpoint,
  shortest,
  startChoreo,
  waitUntil,
} from './support/choreo';
import { RecordingConnection } from './support/connection';
import { sqlite } from './support/db';
import { TestLogger } from './support/logger';

const NAMESPACE = 'org-00-cyberdyne';
const BATCH_SIZE = 500;
const OPENAPI = 'openapi: 3.0.0\ninfo: {title: fresh, version: 1.0.0}\npaths: {}\n';

let choreo: Choreo;
let database: Knex;
let connection: RecordingConnection;
let provider: ChoreoIngestEntityProvider;
const logger = new TestLogger();
/** The refs the created component brought (the Component and its API). */
let arrived: string[] = [];

beforeAll(async () => {
  choreo = await startChoreo({ orgs: 3, projects: 10, components: 100 });
  database = sqlite();
  connection = new RecordingConnection();
  provider = new ChoreoIngestEntityProvider({
    baseUrl: choreo.serveUrl,
    token: SERVE_TOKEN,
    logger,
    database,
    batchSize: BATCH_SIZE,
  });
  await provider.connect(connection);
});

afterAll(async () => {
  await database?.destroy();
  await choreo?.stop();
});

/** A project of the namespace, from the simulator's world. */
async function someProject(): Promise<string> {
  return (await projectsOf(choreo, NAMESPACE))[0];
}

/** The project of the namespace with the shortest name: its API names need no hash suffix. */
async function shortestProject(): Promise<string> {
  return shortest(await projectsOf(choreo, NAMESPACE));
}

async function waitForSeq(atLeast: number): Promise<void> {
  await waitUntil(async () => (await choreo.feedHead()).newestSeq >= atLeast, `seq ${atLeast}`);
}

/** The refs the feed upserted and deleted after seq `since` (the last op of each ref wins). */
async function feedSince(since: number): Promise<{ upserted: string[]; deleted: string[] }> {
  const { status, json } = await choreo.serve('GET', `/changes?since=${since}&limit=10000`);
  expect(status).toBe(200);
  const last = new Map<string, string>();
  for (const change of json.changes as Array<{ op: string; ref: string }>) {
    last.set(normalizeRef(change.ref), change.op);
  }
  const refs = (op: string) => [...last].filter(([, o]) => o === op).map(([ref]) => ref).sort();
  return { upserted: refs('upsert'), deleted: refs('delete') };
}

/** An exported entity as the catalog must get it: the location key where it names none. */
function asApplied(entity: Entity, key: string): Entity {
  const annotations = { ...entity.metadata.annotations };
  annotations[ANNOTATION_LOCATION] ??= key;
  annotations[ANNOTATION_ORIGIN_LOCATION] ??= annotations[ANNOTATION_LOCATION];
  return { ...entity, metadata: { ...entity.metadata, annotations } };
}

test('the first step copies the catalog as deltas: the applied set equals export', async () => {
  const result = await provider.run();
  const exported = await choreo.exportRefs();

  expect(exported.length).toBeGreaterThan(3000);
  expect(result).toEqual({ applied: exported.length, removed: 0, resynced: true });
  expect(connection.refs()).toEqual(exported);
  expect(await provider.appliedRefs()).toEqual(exported);
  const key = locationKeyFor(choreo.serveUrl);
  for (const summary of connection.summaries) {
    expect(summary.type).toBe('delta');
    expect(summary.added.length).toBeLessThanOrEqual(BATCH_SIZE);
    expect(summary.locationKeys).toEqual([key]);
  }
  expect(connection.summaries.length).toBe(Math.ceil(exported.length / BATCH_SIZE));
  // Every body as export prints it, but for the location annotations the module adds.
  const bodies = await choreo.exportEntities();
  for (const [ref, entity] of connection.entities) {
    expect(entity).toEqual(asApplied(bodies.get(ref) as Entity, key));
  }

  connection.clearLog();
  expect(await provider.run()).toEqual({ applied: 0, removed: 0, resynced: false });
  expect(connection.summaries).toEqual([]);
});

test('a created component arrives as one delta with the Component and its API', async () => {
  connection.clearLog();
  const project = await someProject();
  const before = (await choreo.feedHead()).newestSeq;
  await choreo.control('add_component', {
    namespace: NAMESPACE,
    project,
    name: 'fresh-arrival',
    endpoints: JSON.stringify({ rest: { type: 'REST', port: 8080, schema: { content: OPENAPI } } }),
  });
  await waitForSeq(before + 2);

  const result = await provider.run();

  expect(result).toEqual({ applied: 2, removed: 0, resynced: false });
  expect(connection.summaries).toHaveLength(1);
  const [delta] = connection.summaries;
  expect(delta.type).toBe('delta');
  expect(delta.removed).toEqual([]);
  arrived = [...delta.added].sort();
  expect(await feedSince(before)).toEqual({ upserted: arrived, deleted: [] });
  expect(arrived).toHaveLength(2);
  expect(arrived[0]).toMatch(new RegExp(`^api:${NAMESPACE}/${project.slice(0, 20)}`));
  expect(arrived[1]).toBe(`component:${NAMESPACE}/fresh-arrival`);
  expect(connection.entities.get(arrived[0])?.metadata.annotations?.['openchoreo.io/component']).toBe(
    'fresh-arrival',
  );
  expect(connection.refs()).toEqual(await choreo.exportRefs());
});

test('a deleted component leaves as one delta removing its refs', async () => {
  connection.clearLog();
  const before = (await choreo.feedHead()).newestSeq;
  await choreo.control('delete_component', { namespace: NAMESPACE, name: 'fresh-arrival' });
  await waitForSeq(before + 2);

  const result = await provider.run();

  expect(result).toEqual({ applied: 0, removed: 2, resynced: false });
  expect(connection.summaries).toHaveLength(1);
  const [delta] = connection.summaries;
  expect(delta.added).toEqual([]);
  expect([...delta.removed].sort()).toEqual(arrived);
  expect(await feedSince(before)).toEqual({ upserted: [], deleted: arrived });
  expect(connection.refs()).toEqual(await choreo.exportRefs());
  expect(await provider.appliedRefs()).toEqual(connection.refs());
});

test('an endpoint renamed only in case stays in the catalog under its new spelling', async () => {
  // The catalog keys entities by the ref lower-cased: the old spelling's removal, logged after
  // the new spelling's add, would remove the API there unless the feed adds it again after that.
  const project = await shortestProject();
  const apiNames = () =>
    [...connection.entities.values()]
      .filter(entity => entity.kind === 'API')
      .filter(entity => entity.metadata.annotations?.['openchoreo.io/component'] === 'case-rename')
      .map(entity => entity.metadata.name);
  /** The component, with one endpoint named `name`, put in OpenChoreo and synced. */
  const putWithEndpoint = async (name: string) => {
    const where = { namespace: NAMESPACE, project, name: 'case-rename' };
    const before = await putComponentWithEndpoint(choreo, where, name, OPENAPI);
    await waitForSeq(before + 2);
    await provider.run();
  };
  await putWithEndpoint('httpApi');
  expect(apiNames()).toEqual([`${project}-case-rename-httpApi`]);
  connection.clearLog();

  await putWithEndpoint('httpapi');

  expect(apiNames()).toEqual([`${project}-case-rename-httpapi`]);
  expect(connection.refs()).toEqual(await choreo.exportRefs());
});

test('a changed baseUrl keeps the location key the entities were applied under', async () => {
  // The catalog's delta takes an entity applied again under another key as a removal and a new
  // entity (a new uid, processing and relations rebuilt): one key keeps the uids stable.
  const renamed = choreo.serveUrl.replace('127.0.0.1', 'localhost');
  const moved = new ChoreoIngestEntityProvider({
    baseUrl: `${renamed}/`,
    token: SERVE_TOKEN,
    logger,
    database,
    batchSize: BATCH_SIZE,
  });
  const recorded = new RecordingConnection();
  await moved.connect(recorded);
  const project = await someProject();
  const before = (await choreo.feedHead()).newestSeq;
  await choreo.control('add_component', { namespace: NAMESPACE, project, name: 'moved-arrival' });
  await waitForSeq(before + 1);

  const result = await moved.run();

  expect(result).toEqual({ applied: 1, removed: 0, resynced: false });
  expect(recorded.summaries).toHaveLength(1);
  expect(recorded.summaries[0].locationKeys).toEqual([locationKeyFor(choreo.serveUrl)]);
  expect(locationKeyFor(renamed)).not.toEqual(locationKeyFor(choreo.serveUrl));
});

test('a reset of the choreo-ingest state (new storeId) resyncs with no removal', async () => {
  const { storeId, newestSeq } = await choreo.feedHead();
  const status = async () => (await choreo.serve('GET', '/status')).json.providers[0];
  const cycleBefore = (await status()).cycleId;
  const reset = await choreo.serve('POST', '/providers/openchoreo/reset?purge=true');
  expect(reset.status).toBe(200);
  // serve starts the new cycle at once; wait until it has filled the store again.
  await waitUntil(async () => {
    const provider = await status();
    return provider.cycleId > cycleBefore && provider.state === 'resting';
  }, 'the cycle after the reset', 60_000);
  expect((await choreo.feedHead()).storeId).not.toBe(storeId);
  expect((await choreo.feedHead()).newestSeq).toBeGreaterThan(newestSeq);
  connection.clearLog();

  const result = await provider.run();

  expect(result.resynced).toBe(true);
  expect(result.removed).toBe(0);
  expect(connection.summaries.every(s => s.removed.length === 0)).toBe(true);
  expect(connection.refs()).toEqual(await choreo.exportRefs());
  expect(await provider.appliedRefs()).toEqual(connection.refs());
});
