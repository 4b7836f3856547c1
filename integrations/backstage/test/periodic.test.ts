/**
 * The periodic resync: the catalog can lose entities the module recorded as applied (an entity
 * deleted through the catalog's API, one skipped over a location-key conflict, the orphan
 * strategy), and only a walk over the whole catalog brings them back. It runs once
 * `resyncInterval` has passed since the last one completed, a time kept in the database.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Knex } from 'knex';
import { ChoreoIngestEntityProvider, DEFAULT_RESYNC_INTERVAL_MS } from '../src';
import { locationKeyFor } from '../src/entities';
import { POSITION_TABLE } from '../src/migrations';
import { REPO_ROOT, SERVE_TOKEN, type Choreo, startChoreo } from './support/choreo';
import { RecordingConnection } from './support/connection';
import { sqlite } from './support/db';
import { TestLogger } from './support/logger';

const HOUR_MS = 60 * 60 * 1000;
const DAY_MS = 24 * HOUR_MS;

let choreo: Choreo;
let database: Knex;
const connection = new RecordingConnection();
const logger = new TestLogger();
let clock = Date.parse('2026-12-01T00:00:00Z');

function provider(resyncIntervalMs?: number): ChoreoIngestEntityProvider {
  return new ChoreoIngestEntityProvider({
    baseUrl: choreo.serveUrl,
    token: SERVE_TOKEN,
    logger,
    database,
    batchSize: 5,
    resyncIntervalMs,
    now: () => clock,
  });
}

beforeAll(async () => {
  choreo = await startChoreo({ orgs: 1, projects: 2, components: 3 });
  database = sqlite();
});

afterAll(async () => {
  await database?.destroy();
  await choreo?.stop();
});

test('what the catalog lost comes back at the periodic resync (a day), not before', async () => {
  const sync = provider();
  expect(sync.resyncIntervalMs).toBe(DEFAULT_RESYNC_INTERVAL_MS);
  expect(DEFAULT_RESYNC_INTERVAL_MS).toBe(DAY_MS);
  await sync.connect(connection);
  expect((await sync.run()).resynced).toBe(true);
  const exported = await choreo.exportRefs();
  expect(connection.refs()).toEqual(exported);
  // Deleted through the catalog's API (DELETE /api/catalog/entities/by-uid/...): gone from the
  // catalog, still applied as far as the module knows.
  const lost = exported.filter(ref => ref.startsWith('component:')).slice(0, 2);
  lost.forEach(ref => connection.entities.delete(ref));

  clock += DAY_MS - 1;
  expect(await sync.run()).toEqual({ applied: 0, removed: 0, resynced: false });
  expect(connection.refs()).toEqual(exported.filter(ref => !lost.includes(ref)));

  connection.clearLog();
  clock += 1;
  const result = await sync.run();

  expect(result).toEqual({ applied: exported.length, removed: 0, resynced: true });
  expect(connection.refs()).toEqual(exported);
  expect(await sync.appliedRefs()).toEqual(exported);
  for (const summary of connection.summaries) {
    expect(summary.type).toBe('delta');
    expect(summary.removed).toEqual([]);
    expect(summary.locationKeys).toEqual([locationKeyFor(choreo.serveUrl)]);
  }
  expect(logger.text()).toMatch(/resync \(generation 2\): periodic/);
  // Done: the next one is a day away.
  expect(await sync.run()).toEqual({ applied: 0, removed: 0, resynced: false });
});

test('a restart keeps the time of the last resync: the interval counts from it', async () => {
  const row = await database(POSITION_TABLE).where({ provider: 'choreo-ingest' }).first();
  expect(Date.parse(row.resynced_at)).toBe(clock);
  const lastResync = clock;
  const lost = (await choreo.exportRefs()).find(ref => ref.startsWith('component:'))!;
  connection.entities.delete(lost);

  // A new process, 23 hours later: not due yet.
  clock = lastResync + 23 * HOUR_MS;
  const restarted = provider();
  await restarted.connect(connection);
  expect(await restarted.run()).toEqual({ applied: 0, removed: 0, resynced: false });
  expect(connection.refs()).not.toContain(lost);

  // Another new process, a day after the last resync: due, although it just started.
  clock = lastResync + DAY_MS;
  const again = provider();
  await again.connect(connection);
  expect((await again.run()).resynced).toBe(true);
  expect(connection.refs()).toContain(lost);
  expect(connection.refs()).toEqual(await choreo.exportRefs());
});

test('resyncIntervalMs sets the interval', async () => {
  const hourly = provider(HOUR_MS);
  await hourly.connect(connection);
  clock += HOUR_MS - 1;
  expect((await hourly.run()).resynced).toBe(false);
  clock += 1;
  expect((await hourly.run()).resynced).toBe(true);
  expect(() => provider(0)).toThrow(/resyncInterval must be a duration above zero/);
});

test('a state written before the resync time was kept resyncs at its next step', async () => {
  await database(POSITION_TABLE).where({ provider: 'choreo-ingest' }).update({ resynced_at: null });
  const upgraded = provider();
  await upgraded.connect(connection);
  const lost = (await choreo.exportRefs()).find(ref => ref.startsWith('api:'))!;
  connection.entities.delete(lost);

  expect((await upgraded.run()).resynced).toBe(true);

  expect(connection.refs()).toContain(lost);
  expect(logger.text()).toMatch(/periodic, every 86400 s \(none recorded\)/);
  const row = await database(POSITION_TABLE).where({ provider: 'choreo-ingest' }).first();
  expect(Date.parse(row.resynced_at)).toBe(clock);
});

/** README's "Force a resync" statement, as an operator runs it. */
const FORCE_RESYNC = `UPDATE choreo_ingest_feed_position SET resynced_at = NULL, version = version + 1
    WHERE provider = 'choreo-ingest'`;

test("README's force-resync statement run during a step is not undone by that step", async () => {
  const sync = provider();
  await sync.connect(connection);
  await sync.run();
  const later = provider();
  let ran = false;
  const operatorMidStep = Object.create(connection) as RecordingConnection;
  operatorMidStep.applyMutation = async mutation => {
    if (!ran) {
      ran = true;
      await database.raw(FORCE_RESYNC);
    }
    return connection.applyMutation(mutation);
  };
  await database(POSITION_TABLE).where({ provider: 'choreo-ingest' }).update({ resynced_at: null });
  await later.connect(operatorMidStep);

  await later.run(); // a resync: it applies the walk's pages, and the statement runs at the first

  expect(ran).toBe(true);
  expect(readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8')).toContain(FORCE_RESYNC);
  const next = provider();
  await next.connect(connection);
  expect((await next.run()).resynced).toBe(true); // the statement's resync, still due
});
