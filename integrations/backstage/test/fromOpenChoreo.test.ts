/**
 * Moving from OpenChoreo's own Backstage provider to the module, in Backstage's real catalog
 * (@backstage/plugin-catalog-backend 4.0.0 on SQLite, foreign keys on as Backstage's SQLite
 * connector has them), fed by a real `choreo-ingest serve`. A stand-in takes the place of
 * OpenChoreo's provider: its name (`OpenChoreoEntityProvider`), its location key and
 * `managed-by-location` (`provider:OpenChoreoEntityProvider`) and its mutation (one `full` per
 * run), over some of the refs the module gives and one only it gives.
 *
 * The catalog gives a ref to the location key that holds it first and skips the other's copy
 * (logging `detected conflicting entityRef`), so the two cannot run side by side. The move is the
 * README's: remove (or disable) OpenChoreo's provider and restart; the catalog's start-up eviction
 * of orphaned providers takes its entities, and the module's first step brings its own. With
 * `catalog.orphanProviderStrategy: keep`, the old entities are deleted through the catalog's
 * API, which sticks once their provider is gone, and the module offers its copies at its next
 * step.
 */
import path from 'node:path';
import { createBackendModule } from '@backstage/backend-plugin-api';
import { mockServices, startTestBackend } from '@backstage/backend-test-utils';
import {
  ANNOTATION_LOCATION,
  ANNOTATION_ORIGIN_LOCATION,
  type Entity,
  stringifyEntityRef,
} from '@backstage/catalog-model';
import {
  type EntityProvider,
  type EntityProviderConnection,
  catalogProcessingExtensionPoint,
} from '@backstage/plugin-catalog-node';
import type { JsonObject } from '@backstage/types';
import type { Knex } from 'knex';
import { TASK_ID, catalogModuleChoreoIngest, locationKeyFor } from '../src';
import { StateStore } from '../src/state';
import { type Choreo, cli, pollUntil, startChoreo } from './support/choreo';
import { catalogFeatures } from './support/catalogBackend';
import { sqlite } from './support/db';
import { TestLogger } from './support/logger';

const OLD_PROVIDER = 'OpenChoreoEntityProvider';
const OLD_KEY = `provider:${OLD_PROVIDER}`;
/** How long the catalog may take to process and stitch what a step applied. */
const CATALOG_TIMEOUT_MS = 30_000;
/** An entity only OpenChoreo's provider gives (its Environments, DataPlanes, ... are not ours). */
const ONLY_OLD: Entity = {
  apiVersion: 'backstage.io/v1alpha1',
  kind: 'Resource',
  metadata: { name: 'development', namespace: 'org-00-cyberdyne' },
  spec: { type: 'environment', owner: 'group:default/openchoreo-users' },
};

/**
 * OpenChoreo's provider as the catalog sees it (OpenChoreoEntityProvider.ts of
 * openchoreo/backstage-plugins: `getProviderName()` is `OpenChoreoEntityProvider`, each run is
 * one `full` mutation under `provider:OpenChoreoEntityProvider`, its entities annotated with the
 * same as `managed-by-location` and `managed-by-origin-location`).
 */
class OpenChoreoStandIn implements EntityProvider {
  constructor(private readonly entities: Entity[]) {}

  getProviderName(): string {
    return OLD_PROVIDER;
  }

  async connect(connection: EntityProviderConnection): Promise<void> {
    await connection.applyMutation({
      type: 'full',
      entities: this.entities.map(entity => ({ entity, locationKey: OLD_KEY })),
    });
  }
}

let choreo: Choreo;
let exported: Entity[];
/** The refs the module gives (`choreo-ingest export`), lower-cased as the catalog keys them. */
let ourRefs: string[];
/** The stand-in's: the Domain, a System, two Components and an API of ours, and ONLY_OLD. */
let oldEntities: Entity[];
const knexes: Knex[] = [];

beforeAll(async () => {
  choreo = await startChoreo({ orgs: 1, projects: 2, components: 3 });
  const config = path.join(choreo.dir, 'choreo-ingest.yaml');
  const out = await cli(choreo.dir, 'export', '--config', config);
  exported = out
    .split('\n')
    .filter(line => line.trim())
    .map(line => JSON.parse(line) as Entity);
  ourRefs = exported.map(ref).sort();
  const pick = (kind: string, count: number) => exported.filter(e => e.kind === kind).slice(0, count);
  const picked = [...pick('Domain', 1), ...pick('System', 1), ...pick('Component', 2), ...pick('API', 1)];
  oldEntities = [...picked, ONLY_OLD].map(entity => ({
    ...entity,
    metadata: {
      ...entity.metadata,
      annotations: {
        ...entity.metadata.annotations,
        [ANNOTATION_LOCATION]: OLD_KEY,
        [ANNOTATION_ORIGIN_LOCATION]: OLD_KEY,
      },
    },
  }));
}, 90_000);

afterAll(async () => {
  await Promise.all(knexes.map(knex => knex.destroy()));
  await choreo?.stop();
});

function ref(entity: Entity): string {
  return stringifyEntityRef(entity).toLowerCase();
}

function freshCatalogDatabase(): Knex {
  const knex = sqlite(':memory:', { foreignKeys: true });
  knexes.push(knex);
  return knex;
}

type Backend = Awaited<ReturnType<typeof startBackend>>;

/**
 * One start of a Backstage backend on `knex`: the catalog, with the module unless `ours` is
 * false, and the stand-in for OpenChoreo's provider when `old` says so (`disabled`: installed,
 * and disabled through `catalog.providerOptions`).
 */
async function startBackend(
  knex: Knex,
  options: { ours?: boolean; old?: 'installed' | 'disabled'; catalog?: JsonObject },
) {
  const logger = new TestLogger();
  const scheduler = mockServices.scheduler();
  const features = [
    ...catalogFeatures({
      knex,
      scheduler,
      serveUrl: choreo.serveUrl,
      logger,
      catalog: {
        ...(options.old === 'disabled'
          ? { providerOptions: { [OLD_PROVIDER]: { disabled: true } } }
          : {}),
        ...options.catalog,
      },
    }),
    ...(options.ours === false ? [] : [catalogModuleChoreoIngest]),
    ...(options.old
      ? [
          createBackendModule({
            pluginId: 'catalog',
            moduleId: 'openchoreo',
            register(env) {
              env.registerInit({
                deps: { catalog: catalogProcessingExtensionPoint },
                async init({ catalog }) {
                  catalog.addEntityProvider(new OpenChoreoStandIn(oldEntities));
                },
              });
            },
          }),
        ]
      : []),
  ];
  const backend = await startTestBackend({ features });
  const api = (route: string, init?: RequestInit) =>
    fetch(`http://localhost:${backend.server.port()}/api/catalog${route}`, init);
  /** What the catalog serves (processed and stitched), by lower-cased ref. */
  const entities = async (filter?: string): Promise<Map<string, Entity>> => {
    const response = await api(`/entities${filter ? `?filter=${encodeURIComponent(filter)}` : ''}`);
    expect(response.status).toBe(200);
    return new Map(((await response.json()) as Entity[]).map(entity => [ref(entity), entity]));
  };
  /** The module's scheduled task, once (the test scheduler runs it only when triggered). */
  const step = () => scheduler.triggerTask(TASK_ID);
  /** Poll the catalog (with a step of the module before each look when `steps`) until `done`. */
  const waitFor = (
    done: (served: Map<string, Entity>) => boolean,
    what: string,
    steps = true,
  ): Promise<Map<string, Entity>> => {
    const look = async () => {
      if (steps) {
        await step();
      }
      return entities();
    };
    const shown = (last: Map<string, Entity>) => {
      const held = [...last.values()].map(
        e => `${ref(e)} (${e.metadata.annotations?.[ANNOTATION_LOCATION]})`,
      );
      return `the catalog serves ${held.sort().join(', ')}`;
    };
    return pollUntil(look, done, what, shown, CATALOG_TIMEOUT_MS);
  };
  return { backend, logger, api, entities, step, waitFor, stop: () => backend.stop() };
}

/** The location key the catalog holds each entity under (refresh_state), by lower-cased ref. */
async function locationKeys(knex: Knex): Promise<Map<string, string | null>> {
  const rows: Array<{ entity_ref: string; location_key: string | null }> = await knex(
    'refresh_state',
  ).select('entity_ref', 'location_key');
  return new Map(rows.map(row => [row.entity_ref, row.location_key]));
}

/** The catalog's processing errors (refresh_state's `errors`). */
async function processingErrors(knex: Knex): Promise<string[]> {
  const rows: Array<{ entity_ref: string; errors: string | null }> = await knex(
    'refresh_state',
  ).select('entity_ref', 'errors');
  return rows
    .filter(row => row.errors && row.errors !== '[]')
    .map(row => `${row.entity_ref}: ${row.errors}`);
}

/** Every ref the module gives, served under its location key with its own managed-by-location. */
async function expectOursOnly(knex: Knex, served: Map<string, Entity>): Promise<void> {
  expect([...served.keys()].sort()).toEqual(ourRefs);
  for (const entity of exported) {
    const annotations = served.get(ref(entity))?.metadata.annotations ?? {};
    expect([ref(entity), annotations[ANNOTATION_LOCATION]]).toEqual([
      ref(entity),
      entity.metadata.annotations?.[ANNOTATION_LOCATION],
    ]);
  }
  const keys = await locationKeys(knex);
  expect([...keys.keys()].sort()).toEqual(ourRefs);
  expect(new Set(keys.values())).toEqual(new Set([locationKeyFor(choreo.serveUrl)]));
  expect(await processingErrors(knex)).toEqual([]);
}

/** The module's warnings that the catalog keeps some of its entities under another key. */
function keptElsewhere(backend: Backend): string[] {
  return backend.logger.lines
    .filter(line => line.level === 'warn')
    .map(line => line.message)
    .filter(message => message.startsWith('choreo-ingest: the catalog keeps'));
}

/** Whether the catalog serves every entity the module gives as the module's, and nothing else. */
function oursServed(served: Map<string, Entity>): boolean {
  const ownLocation = (entity: Entity) => entity.metadata.annotations?.[ANNOTATION_LOCATION];
  return (
    served.size === exported.length &&
    exported.every(entity => {
      const held = served.get(ref(entity));
      return held !== undefined && ownLocation(held) === ownLocation(entity);
    })
  );
}

/** The refs both give. */
const shared = () => oldEntities.map(ref).filter(r => r !== ref(ONLY_OLD));

/** The lines logged at `level` and above (debug lines left out: the catalog's are long). */
function logged(backend: Backend): string[] {
  return backend.logger.lines
    .filter(line => line.level !== 'debug')
    .map(line => `${line.level}: ${line.message}`);
}

test.each([['removed'], ['disabled']] as const)(
  'next to OpenChoreo\'s provider the catalog skips the module\'s copies; with that provider ' +
    '%s at a restart, they take its place',
  async how => {
    const knex = freshCatalogDatabase();
    const ourKey = locationKeyFor(choreo.serveUrl);
    // Both installed: OpenChoreo's provider's full mutation at its connect came first.
    const both = await startBackend(knex, { old: 'installed' });
    const oldServed = (served: Map<string, Entity>) => shared().every(r => served.has(r));
    await both.waitFor(oldServed, 'the stand-in\'s entities', false);
    await both.step();
    await both.step();

    const keys = await locationKeys(knex);
    for (const r of shared()) {
      expect([r, keys.get(r)]).toEqual([r, OLD_KEY]); // still OpenChoreo's
      expect(logged(both)).toContain(
        `warn: Source choreo-ingest detected conflicting entityRef ${r} already referenced by ` +
          `${OLD_KEY} and now also ${ourKey}`,
      );
    }
    const theRest = ourRefs.filter(r => !shared().includes(r));
    expect(theRest.length).toBeGreaterThan(0);
    expect(theRest.map(r => keys.get(r))).toEqual(theRest.map(() => ourKey));
    // The module counts them applied and held: its start-up check would not resync for them.
    const store = new StateStore(knex, 'choreo-ingest');
    expect((await store.appliedRefs()).map(r => r.toLowerCase()).sort()).toEqual(ourRefs);
    expect(await store.catalogMissing()).toBe(0);
    // It says so once, naming the key.
    expect(keptElsewhere(both)).toEqual([
      expect.stringContaining(
        `keeps ${shared().length} of the ${ourRefs.length} entities the module applied under another ` +
          `location key, and skips the module's copies of them (it logs "detected conflicting ` +
          `entityRef"): ${OLD_KEY} (${shared().length}).`,
      ),
    ]);
    await both.stop();

    // The move: OpenChoreo's provider removed (or disabled), the backend restarted.
    const after = await startBackend(knex, how === 'disabled' ? { old: 'disabled' } : {});
    expect(logged(after)).toContain(`info: Removed entities for orphaned provider ${OLD_PROVIDER}`);
    const served = await after.waitFor(oursServed, 'the module\'s entities in place of the old');

    await expectOursOnly(knex, served);
    const held = ourRefs.length - shared().length;
    expect(after.logger.text()).toMatch(
      new RegExp(`resync \\(generation 2\\): the catalog holds ${held} of the ${ourRefs.length} entities`),
    );
    expect(keptElsewhere(after)).toEqual([]);
    await after.stop();
  },
);

test('orphanProviderStrategy keep: the old entities deleted by uid, ours come at the next step', async () => {
  const knex = freshCatalogDatabase();
  const old = await startBackend(knex, { ours: false, old: 'installed' });
  const oldServed = (served: Map<string, Entity>) => oldEntities.every(e => served.has(ref(e)));
  await old.waitFor(oldServed, 'the stand-in\'s entities', false);
  await old.stop();

  // OpenChoreo's provider removed, the module added: the catalog keeps what the provider held.
  const keep = { orphanProviderStrategy: 'keep' };
  const ours = await startBackend(knex, { catalog: keep });
  const evicted = logged(ours).filter(line => line.includes('Removed entities for orphaned provider'));
  expect(evicted).toEqual([]);
  await ours.waitFor(
    served => ourRefs.every(r => served.has(r)),
    'the module\'s entities next to the kept ones',
  );
  for (let i = 0; i < 3; i++) {
    await ours.step(); // nothing brings the module's copies in while the old ones stay
  }
  const keys = await locationKeys(knex);
  expect(shared().map(r => keys.get(r))).toEqual(shared().map(() => OLD_KEY));
  expect(keys.get(ref(ONLY_OLD))).toBe(OLD_KEY);
  expect(keptElsewhere(ours)).toEqual([
    expect.stringContaining(`: ${OLD_KEY} (${shared().length}).`),
  ]);

  // The README's procedure: list what the old provider left, delete each by uid.
  const filter = `metadata.annotations.${ANNOTATION_LOCATION}=${OLD_KEY}`;
  const leftovers = await ours.entities(filter);
  expect([...leftovers.keys()].sort()).toEqual(oldEntities.map(ref).sort());
  for (const entity of leftovers.values()) {
    const response = await ours.api(`/entities/by-uid/${entity.metadata.uid}`, { method: 'DELETE' });
    expect(response.status).toBe(204);
  }
  // The deletes stick: nothing puts the entities back (the module's task is not run meanwhile).
  await new Promise(resolve => setTimeout(resolve, 3_000)); // three processing intervals
  expect((await ours.entities(filter)).size).toBe(0);
  expect([...(await locationKeys(knex)).values()]).not.toContain(OLD_KEY);

  const served = await ours.waitFor(oursServed, 'the module\'s copies at its next step');
  await expectOursOnly(knex, served);
  expect(ours.logger.text()).toMatch(
    new RegExp(
      'choreo-ingest: resync \\(generation 2\\): the catalog no longer holds \\d+ of the ' +
        'entities the module applied, while it kept \\d+ under another location key',
    ),
  );
  expect(ours.logger.text()).toContain(
    'choreo-ingest: the catalog no longer keeps any of the module\'s entities under another location key',
  );
  await ours.stop();
});
