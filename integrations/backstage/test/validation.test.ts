/**
 * An entity body the catalog refuses (its envelope fails Backstage's own validation, which the
 * catalog's connection runs over every entity of a mutation, refusing the whole mutation over
 * one): the module leaves it out, logs it by its ref, does not record it as applied, and the
 * rest of the page goes on. A real `choreo-ingest serve` behind a proxy that breaks the body.
 */
import type { Knex } from 'knex';
import { ChoreoIngestEntityProvider } from '../src';
import type { FeedEntity } from '../src/feedClient';
import { SERVE_TOKEN, type Choreo, startChoreo, waitUntil } from './support/choreo';
import { RecordingConnection } from './support/connection';
import { sqlite } from './support/db';
import { type FeedProxy, startFeedProxy } from './support/feedProxy';
import { TestLogger } from './support/logger';

const DAY_MS = 24 * 60 * 60 * 1000;
const OPENAPI = 'openapi: 3.0.0\ninfo: {title: malformed, version: 1.0.0}\npaths: {}\n';

let choreo: Choreo;
let proxy: FeedProxy;
let database: Knex;
let provider: ChoreoIngestEntityProvider;
const connection = new RecordingConnection();
const logger = new TestLogger();
let clock = Date.parse('2026-12-01T00:00:00Z');
/** Component names whose bodies the proxy breaks (no apiVersion). */
const broken = new Set<string>();

function breakSome(entity: FeedEntity): FeedEntity {
  if (entity.kind === 'Component' && broken.has(entity.metadata.name)) {
    const { apiVersion: _dropped, ...rest } = entity;
    return rest as FeedEntity;
  }
  return entity;
}

beforeAll(async () => {
  choreo = await startChoreo({ orgs: 1, projects: 2, components: 3 });
  proxy = await startFeedProxy(choreo.serveUrl);
  proxy.rewrite = breakSome;
  database = sqlite();
  provider = new ChoreoIngestEntityProvider({
    baseUrl: proxy.url,
    token: SERVE_TOKEN,
    logger,
    database,
    batchSize: 500,
    now: () => clock,
  });
  await provider.connect(connection);
});

afterAll(async () => {
  await database?.destroy();
  await proxy?.stop();
  await choreo?.stop();
});

test('a body the catalog refuses is skipped and logged; the rest of the page goes on', async () => {
  const exported = await choreo.exportRefs();
  const victim = exported.find(ref => ref.startsWith('component:'))!;
  const [namespace, name] = victim.slice('component:'.length).split('/');
  broken.add(name);

  const result = await provider.run();

  const others = exported.filter(ref => ref !== victim);
  expect(result).toEqual({ applied: others.length, removed: 0, resynced: true });
  expect(connection.refused).toEqual([]);
  expect(connection.refs()).toEqual(others);
  expect(await provider.appliedRefs()).toEqual(others);
  const warnings = logger.lines.filter(line => line.level === 'warn').map(line => line.message);
  expect(warnings).toEqual([
    expect.stringMatching(
      new RegExp(`^choreo-ingest: skipped Component:${namespace}/${name}: .*apiVersion`),
    ),
  ]);
  expect(logger.text()).not.toContain(SERVE_TOKEN);

  // The position moved on: the next step does not try the page again.
  connection.clearLog();
  expect(await provider.run()).toEqual({ applied: 0, removed: 0, resynced: false });
  expect(connection.summaries).toEqual([]);
});

test('a refused body among changes stays out; a valid one comes at the next resync', async () => {
  const world = await (await fetch(`${choreo.simulatorUrl}/_control/world`)).json();
  const { name: project, namespace } = world.data.projects[0].metadata;
  broken.add('malformed-arrival');
  const before = (await choreo.feedHead()).newestSeq;
  await choreo.control('add_component', {
    namespace,
    project,
    name: 'malformed-arrival',
    endpoints: JSON.stringify({ rest: { type: 'REST', port: 8080, schema: { content: OPENAPI } } }),
  });
  await waitUntil(async () => (await choreo.feedHead()).newestSeq >= before + 2, 'the changes');
  connection.clearLog();

  const result = await provider.run();

  const component = `component:${namespace}/malformed-arrival`;
  expect(result).toEqual({ applied: 1, removed: 0, resynced: false });
  expect(connection.refused).toEqual([]);
  expect(connection.summaries).toHaveLength(1);
  expect(connection.summaries[0].added).toHaveLength(1);
  expect(connection.summaries[0].added[0]).toMatch(new RegExp(`^api:${namespace}/`));
  expect(connection.refs()).not.toContain(component);
  expect(await provider.appliedRefs()).not.toContain(component);
  expect(logger.text()).toMatch(new RegExp(`skipped Component:${namespace}/malformed-arrival: `));

  // choreo-ingest serves valid bodies again: the periodic resync brings both in.
  proxy.rewrite = undefined;
  clock += DAY_MS;
  const resynced = await provider.run();

  expect(resynced.resynced).toBe(true);
  const exported = await choreo.exportRefs();
  expect(exported).toContain(component);
  expect(connection.refs()).toEqual(exported);
  expect(await provider.appliedRefs()).toEqual(exported);
});
