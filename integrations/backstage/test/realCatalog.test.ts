/**
 * The module inside Backstage's real catalog backend (@backstage/plugin-catalog-backend, on
 * SQLite in memory), fed by a real `choreo-ingest serve`: what the feed delivers is processed
 * and stitched by the catalog, served by its HTTP API, without processing errors; a component
 * created in OpenChoreo arrives as a Component and an API with the relations only the catalog
 * stitches (providesApi / apiProvidedBy).
 */
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { mockServices, startTestBackend } from '@backstage/backend-test-utils';
import {
  ANNOTATION_LOCATION,
  type Entity,
  stringifyEntityRef,
} from '@backstage/catalog-model';
import type { Knex } from 'knex';
import { TASK_ID, catalogModuleChoreoIngest, locationKeyFor } from '../src';
import { POSITION_TABLE } from '../src/migrations';
import { StateStore } from '../src/state';
import {
  type Choreo,
  cli,
  pollUntil,
  projectsOf,
  putComponentWithEndpoint,
  shortest,
  startChoreo,
  waitUntil,
} from './support/choreo';
import { catalogFeatures } from './support/catalogBackend';
import { sqlite } from './support/db';

const NAMESPACE = 'org-00-cyberdyne';
const OPENAPI = 'openapi: 3.0.0\ninfo: {title: fresh, version: 1.0.0}\npaths: {}\n';
/** How long the catalog may take to process and stitch what a step applied. */
const CATALOG_TIMEOUT_MS = 60_000;

let choreo: Choreo;
let knex: Knex;
let backend: Awaited<ReturnType<typeof startTestBackend>>;
/** The test backend's scheduler: runs a task only when triggered (syncStep). */
const scheduler = mockServices.scheduler();

beforeAll(async () => {
  choreo = await startChoreo({ orgs: 1, projects: 2, components: 4 });
  knex = sqlite();
  backend = await startTestBackend({
    features: [
      ...catalogFeatures({ knex, scheduler, serveUrl: choreo.serveUrl }),
      catalogModuleChoreoIngest,
    ],
  });
}, 90_000);

afterAll(async () => {
  await backend?.stop();
  await knex?.destroy();
  await choreo?.stop();
});

/** GET a catalog route through the test backend's HTTP server (the mock user's credentials). */
async function catalogGet(route: string): Promise<any> {
  const response = await fetch(`http://localhost:${backend.server.port()}/api/catalog${route}`);
  if (response.status !== 200) {
    throw new Error(`GET /api/catalog${route} answered ${response.status}: ${await response.text()}`);
  }
  return response.json();
}

/** Every entity the catalog serves, by its lower-cased ref. */
async function catalogEntities(): Promise<Map<string, Entity>> {
  const entities = (await catalogGet('/entities')) as Entity[];
  return new Map(entities.map(entity => [stringifyEntityRef(entity).toLowerCase(), entity]));
}

/** The module's scheduled task, once: it does nothing until the catalog connected it. */
async function syncStep(): Promise<void> {
  await scheduler.triggerTask(TASK_ID);
}

/** Processing errors the catalog recorded in refresh_state (the rows' `errors` column). */
async function processingErrors(): Promise<Array<{ entity_ref: string; errors: string }>> {
  const rows: Array<{ entity_ref: string; errors: string | null }> = await knex('refresh_state').select(
    'entity_ref',
    'errors',
  );
  return rows.filter(row => row.errors && row.errors !== '[]') as Array<{ entity_ref: string; errors: string }>;
}

/** The refs the catalog records as provided by the module (refresh_state_references). */
async function providedRefs(): Promise<string[]> {
  const rows: Array<{ target_entity_ref: string }> = await knex('refresh_state_references')
    .where({ source_key: 'choreo-ingest' })
    .select('target_entity_ref');
  return rows.map(row => row.target_entity_ref).sort();
}

/** The errors among an entity's status items (the catalog's `backstage.catalog.processing`). */
function statusErrors(entity: Entity): unknown[] {
  const items = ((entity as any).status?.items ?? []) as Array<{ level: string }>;
  return items.filter(item => item.level === 'error');
}

/** The entities `choreo-ingest export` prints, by lower-cased ref. */
async function exportedEntities(): Promise<Map<string, Entity>> {
  const out = await cli(choreo.dir, 'export', '--config', path.join(choreo.dir, 'choreo-ingest.yaml'));
  const entities = out
    .split('\n')
    .filter(line => line.trim())
    .map(line => JSON.parse(line) as Entity);
  return new Map(entities.map(entity => [stringifyEntityRef(entity).toLowerCase(), entity]));
}

/** Poll: a sync step, then the catalog, until `done` holds for what it serves. */
function waitForCatalog(done: (entities: Map<string, Entity>) => boolean, what: string) {
  const look = async () => {
    await syncStep();
    return catalogEntities();
  };
  const shown = (last: Map<string, Entity>) =>
    `the catalog serves ${[...last.keys()].sort().join(', ')}`;
  return pollUntil(look, done, what, shown, CATALOG_TIMEOUT_MS);
}

test('what choreo-ingest delivers becomes processed entities in the real catalog', async () => {
  const exported = await exportedEntities();
  const refs = [...exported.keys()].sort();
  expect(refs).toEqual((await choreo.exportRefs()).map(ref => ref.toLowerCase()));
  expect(refs.length).toBeGreaterThan(4);

  const served = await waitForCatalog(
    entities => refs.every(ref => entities.has(ref)),
    `the catalog to serve all ${refs.length} exported entities`,
  );

  // Exactly the exported entities: nothing else (no Location entities, no leftovers).
  expect([...served.keys()].sort()).toEqual(refs);
  const key = locationKeyFor(choreo.serveUrl);
  for (const [ref, entity] of served) {
    // Processed by the catalog: its own uid and stitched status, the module's location.
    expect(entity.metadata.uid).toBeTruthy();
    const own = exported.get(ref)?.metadata.annotations?.[ANNOTATION_LOCATION];
    expect([ref, entity.metadata.annotations?.[ANNOTATION_LOCATION]]).toEqual([ref, own ?? key]);
    expect([ref, statusErrors(entity)]).toEqual([ref, []]);
  }
  expect(await processingErrors()).toEqual([]);
  // The catalog holds them as the module's: provided under its provider name.
  expect(await providedRefs()).toEqual(refs);
  // The module's check at a process's first step reads the real catalog's table: none missing.
  expect(await new StateStore(knex, 'choreo-ingest').catalogMissing()).toBe(0);
});

test('a created component arrives as a Component and an API, their relations stitched', async () => {
  const [project] = await projectsOf(choreo, NAMESPACE);
  await choreo.control('add_component', {
    namespace: NAMESPACE,
    project,
    name: 'fresh-arrival',
    endpoints: JSON.stringify({ rest: { type: 'REST', port: 8080, schema: { content: OPENAPI } } }),
  });
  const componentRef = `component:${NAMESPACE}/fresh-arrival`;
  // serve has the change once export lists it: then the Component and its API, by name.
  await waitUntil(async () => (await choreo.exportRefs()).includes(componentRef), 'export to list it');
  const exported = await choreo.exportRefs();
  const apiRefs = exported.filter(
    ref => ref.startsWith('api:') && ref.toLowerCase().startsWith(`api:${NAMESPACE}/`),
  );
  const provides = (ref: string, entity: Entity | undefined) =>
    (entity?.relations ?? []).some(r => r.type === 'apiProvidedBy' && r.targetRef === ref);

  const served = await waitForCatalog(entities => {
    const api = [...entities.values()].find(
      e => e.kind === 'API' && e.metadata.annotations?.['openchoreo.io/component'] === 'fresh-arrival',
    );
    return entities.has(componentRef) && provides(componentRef, api);
  }, 'the new Component and its API, stitched');

  const component = served.get(componentRef)!;
  expect(component.kind).toBe('Component');
  const api = [...served.values()].find(
    e => e.kind === 'API' && e.metadata.annotations?.['openchoreo.io/component'] === 'fresh-arrival',
  )!;
  const apiRef = stringifyEntityRef(api).toLowerCase();
  expect(apiRefs.map(ref => ref.toLowerCase())).toContain(apiRef);
  // Both ends of the relation, as the catalog's stitching writes them.
  expect(component.relations).toEqual(
    expect.arrayContaining([{ type: 'providesApi', targetRef: apiRef }]),
  );
  expect(api.relations).toEqual(
    expect.arrayContaining([{ type: 'apiProvidedBy', targetRef: componentRef }]),
  );
  expect(statusErrors(component)).toEqual([]);
  expect(statusErrors(api)).toEqual([]);
  // And the catalog still equals export, with nothing failing processing.
  expect([...served.keys()].sort()).toEqual(exported.map(ref => ref.toLowerCase()).sort());
  expect(await providedRefs()).toEqual(exported.map(ref => ref.toLowerCase()).sort());
  expect(await processingErrors()).toEqual([]);
});

test('an endpoint renamed only in case stays in the real catalog under its new spelling', async () => {
  // The catalog keys entities by the ref lower-cased: the feed's removal of the old spelling
  // would take the renamed API out, unless the live spelling follows it.
  const project = shortest(await projectsOf(choreo, NAMESPACE)); // no hash in its API names
  const apiNamed = (entities: Map<string, Entity>, name: string) =>
    [...entities.values()].some(e => e.kind === 'API' && e.metadata.name === name);
  const renamed = async (name: string) => {
    const where = { namespace: NAMESPACE, project, name: 'case-rename' };
    const before = await putComponentWithEndpoint(choreo, where, name, OPENAPI);
    const applied = async () => (await choreo.feedHead()).newestSeq >= before + 2;
    await waitUntil(applied, `serve to apply the event of ${name}`);
    return waitForCatalog(entities => apiNamed(entities, `${project}-case-rename-${name}`), name);
  };

  await renamed('httpApi');
  await renamed('httpapi');
  for (let step = 0; step < 3; step++) {
    await syncStep(); // nothing left in the feed takes it out again
  }

  const served = await catalogEntities();
  expect(apiNamed(served, `${project}-case-rename-httpapi`)).toBe(true);
  expect([...served.keys()].sort()).toEqual((await choreo.exportRefs()).map(r => r.toLowerCase()).sort());
  expect(await processingErrors()).toEqual([]);
});

test('a component deleted in OpenChoreo leaves the real catalog with its API', async () => {
  const componentRef = `component:${NAMESPACE}/fresh-arrival`;
  const ofIt = (entity: Entity) =>
    entity.metadata.annotations?.['openchoreo.io/component'] === 'fresh-arrival';
  const before = await catalogEntities();
  expect(before.has(componentRef)).toBe(true);
  expect([...before.values()].filter(e => e.kind === 'API' && ofIt(e))).toHaveLength(1);
  // Its System holds the other end of its partOf, which only stitching the System takes away.
  const systemRef = `system:${NAMESPACE}/${before.get(componentRef)!.spec!.system}`.toLowerCase();
  const hasIt = (entity: Entity | undefined) =>
    (entity?.relations ?? []).some(r => r.type === 'hasPart' && r.targetRef === componentRef);
  expect(hasIt(before.get(systemRef))).toBe(true);

  await choreo.control('delete_component', { namespace: NAMESPACE, name: 'fresh-arrival' });
  await waitUntil(async () => !(await choreo.exportRefs()).includes(componentRef), 'export to drop it');
  const served = await waitForCatalog(
    entities =>
      !entities.has(componentRef) && ![...entities.values()].some(ofIt) && !hasIt(entities.get(systemRef)),
    'the Component and its API to leave the catalog, and its System to let go of it',
  );

  // Removed through the module's deltas, scoped to its source: the rest stays as exported.
  expect([...served.keys()].sort()).toEqual((await choreo.exportRefs()).map(r => r.toLowerCase()).sort());
  expect(await providedRefs()).toEqual([...served.keys()].sort());
  expect(await processingErrors()).toEqual([]);
});

test('an entity deleted through the real catalog\'s API counts as missing for the module', async () => {
  const store = new StateStore(knex, 'choreo-ingest');
  const [ref, entity] = [...(await catalogEntities()).entries()].find(([, e]) => e.kind === 'Component')!;
  expect(await store.catalogMissing()).toBe(0);

  const url = `http://localhost:${backend.server.port()}/api/catalog/entities/by-uid/${entity.metadata.uid}`;
  expect((await fetch(url, { method: 'DELETE' })).status).toBe(204);

  expect((await catalogEntities()).has(ref)).toBe(false);
  expect(await store.catalogMissing()).toBe(1); // the next process resyncs at its first step
});

test('an entity the real catalog holds as the module\'s with no record of it leaves at the resync', async () => {
  // What a mutation that landed after its step was aborted leaves (see orphans.test.ts), put in
  // as the catalog's own insert does: a copy of one of the module's components, renamed.
  const [row] = await knex('refresh_state')
    .where('entity_ref', 'like', `component:${NAMESPACE}/%`)
    .select('unprocessed_entity', 'location_key');
  const putIn = async (name: string, sources: string[]) => {
    const entity = JSON.parse(row.unprocessed_entity) as Entity;
    entity.metadata.name = name;
    const ref = stringifyEntityRef(entity);
    await knex('refresh_state').insert({
      entity_id: randomUUID(),
      entity_ref: ref,
      unprocessed_entity: JSON.stringify(entity),
      unprocessed_hash: name,
      errors: '',
      location_key: row.location_key,
      next_update_at: knex.fn.now(),
      last_discovery_at: knex.fn.now(),
    });
    for (const source of sources) {
      await knex('refresh_state_references').insert({ source_key: source, target_entity_ref: ref });
    }
    return ref;
  };
  const ref = await putIn('landed-late', ['choreo-ingest']);
  // Also referenced by another source: the module's reference goes, the entity stays.
  const shared = await putIn('landed-late-shared', ['choreo-ingest', 'another-provider']);
  await waitForCatalog(
    entities => entities.has(ref) && entities.has(shared),
    'the catalog to serve the orphans',
  );
  expect(await new StateStore(knex, 'choreo-ingest').orphanCount()).toBe(2);

  // The resync also brings back the component the test before deleted through the API.
  await knex(POSITION_TABLE).where({ provider: 'choreo-ingest' }).update({ resynced_at: null });
  const exported = (await choreo.exportRefs()).map(r => r.toLowerCase());
  const served = await waitForCatalog(
    entities => !entities.has(ref) && exported.every(r => entities.has(r)),
    'the orphan to leave, and what the catalog lost to come back',
  );

  expect([...served.keys()].sort()).toEqual([...exported, shared].sort());
  expect(await providedRefs()).toEqual(exported.sort());
  expect(await processingErrors()).toEqual([]);
  expect(await new StateStore(knex, 'choreo-ingest').orphanCount()).toBe(0);
});
