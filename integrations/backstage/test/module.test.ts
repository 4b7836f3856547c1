/**
 * The module in Backstage's test backend: it reads its config, hands the provider to the
 * catalog's processing extension point and schedules the sync under its fixed task id.
 */
import { mockServices, startTestBackend } from '@backstage/backend-test-utils';
import type { JsonObject } from '@backstage/types';
import { type EntityProvider, catalogProcessingExtensionPoint } from '@backstage/plugin-catalog-node';
import { ChoreoIngestEntityProvider, TASK_ID, catalogModuleChoreoIngest } from '../src';
import { SERVE_TOKEN, type Choreo, startChoreo } from './support/choreo';
import { RecordingConnection } from './support/connection';
import { sqlite } from './support/db';
import { TestLogger } from './support/logger';

let choreo: Choreo;

beforeAll(async () => {
  choreo = await startChoreo({ orgs: 1, projects: 2, components: 3 });
});

afterAll(async () => {
  await choreo?.stop();
});

/**
 * The module in a test backend with `choreoIngest` as its config and a mock scheduler; the
 * providers it handed to the catalog, and what to stop afterwards.
 */
async function startModule(choreoIngest: JsonObject, migrations?: { skip?: boolean }) {
  const providers: EntityProvider[] = [];
  const scheduler = mockServices.scheduler.mock();
  const logger = mockServices.logger.mock();
  const knex = sqlite();
  const backend = await startTestBackend({
    extensionPoints: [
      [catalogProcessingExtensionPoint, { addEntityProvider: (...added: any[]) => providers.push(...added.flat()) }],
    ],
    features: [
      catalogModuleChoreoIngest,
      scheduler.factory,
      logger.factory,
      mockServices.database.factory({ knex, migrations }),
      mockServices.rootConfig.factory({ data: { catalog: { providers: { choreoIngest } } } }),
    ],
  });
  const stop = async () => {
    await backend.stop();
    await knex.destroy();
  };
  return { providers, scheduler, stop, knex, logger };
}

test('the module adds the provider and its scheduled task syncs the catalog', async () => {
  const { providers, scheduler, stop } = await startModule({
    baseUrl: choreo.serveUrl,
    token: SERVE_TOKEN,
    batchSize: 7,
    maxRemovalRatio: 0.3,
    resyncInterval: { hours: 6 },
    requestTimeout: '2m',
    schedule: { frequency: { minutes: 10 }, timeout: { minutes: 5 }, scope: 'local' },
  });
  try {
    expect(providers).toHaveLength(1);
    const [provider] = providers;
    expect(provider).toBeInstanceOf(ChoreoIngestEntityProvider);
    expect(provider.getProviderName()).toBe('choreo-ingest');
    expect(scheduler.scheduleTask).toHaveBeenCalledTimes(1);
    const [task] = scheduler.scheduleTask.mock.calls[0];
    expect(task).toMatchObject({
      id: TASK_ID,
      frequency: { minutes: 10 },
      timeout: { minutes: 5 },
      scope: 'global', // whatever the config says: steps on two replicas at once would race
    });

    // The resync interval from the config, and a step budget of 80% of the timeout.
    expect((provider as ChoreoIngestEntityProvider).resyncIntervalMs).toBe(6 * 60 * 60 * 1000);
    expect((provider as ChoreoIngestEntityProvider).stepBudgetMs).toBe(4 * 60 * 1000);
    expect((provider as ChoreoIngestEntityProvider).requestTimeoutMs).toBe(2 * 60 * 1000);

    // Before the catalog connects the provider, the task does nothing.
    await task.fn(new AbortController().signal);
    const connection = new RecordingConnection();
    await provider.connect(connection);
    // The task hands its signal to the step: aborted (the timeout passed), it applies nothing.
    const aborted = new AbortController();
    aborted.abort();
    await task.fn(aborted.signal);
    expect(connection.summaries).toEqual([]);
    await task.fn(new AbortController().signal);

    const exported = await choreo.exportRefs();
    expect(connection.refs()).toEqual(exported);
    expect(connection.summaries.length).toBe(Math.ceil(exported.length / 7));
    expect(await (provider as ChoreoIngestEntityProvider).appliedRefs()).toEqual(exported);
  } finally {
    await stop();
  }
});

test('resyncInterval takes the schedule\'s duration forms', async () => {
  const intervals: Array<[unknown, number]> = [
    ['PT12H', 12 * 60 * 60 * 1000],
    ['90m', 90 * 60 * 1000],
    [{ days: 2 }, 2 * 24 * 60 * 60 * 1000],
    [undefined, 24 * 60 * 60 * 1000],
  ];
  for (const [resyncInterval, expected] of intervals) {
    const { providers, stop } = await startModule({
      baseUrl: choreo.serveUrl,
      ...(resyncInterval === undefined ? {} : { resyncInterval }),
    });
    try {
      const [provider] = providers as ChoreoIngestEntityProvider[];
      expect(provider.resyncIntervalMs).toBe(expected);
      expect(provider.requestTimeoutMs).toBe(60 * 1000); // the default
      // The default schedule's timeout is 15 minutes: a step may use 12.
      expect(provider.stepBudgetMs).toBe(12 * 60 * 1000);
    } finally {
      await stop();
    }
  }
});

test('batchSize: up to 10,000 changes per /changes page; /entities pages hold 1,000', async () => {
  const knex = sqlite();
  try {
    const options = { baseUrl: choreo.serveUrl, token: SERVE_TOKEN, logger: new TestLogger() };
    const make = (batchSize: number) =>
      new ChoreoIngestEntityProvider({ ...options, database: knex, batchSize });
    expect(() => make(10_001)).toThrow(/batchSize must be a whole number from 1 to 10,000/);
    const largest = make(10_000);
    const connection = new RecordingConnection();
    await largest.connect(connection);
    // serve answers 400 to an /entities page above 1,000: the walk asks for 1,000.
    expect((await largest.run()).resynced).toBe(true);
    expect(connection.refs()).toEqual(await choreo.exportRefs());
  } finally {
    await knex.destroy();
  }
});

test('a requestTimeout as long as a step may take is warned of', async () => {
  const warned = async (choreoIngest: JsonObject) => {
    const { logger, stop } = await startModule({ baseUrl: choreo.serveUrl, ...choreoIngest });
    await stop();
    const messages = logger.warn.mock.calls.map(([message]) => message);
    return messages.filter(message => /requestTimeout/.test(message));
  };

  const schedule = { frequency: '30s', timeout: '2m' };
  const tooLong = await warned({ requestTimeout: '2m', schedule });
  const fits = await warned({ requestTimeout: '1m', schedule });

  expect(tooLong).toEqual([
    'choreo-ingest: catalog.providers.choreoIngest.requestTimeout (120 s) is not shorter than ' +
      "a step's budget (80% of schedule.timeout: 96 s): shorten it, or lengthen the timeout",
  ]);
  expect(fits).toEqual([]);
});

test('a backend that skips migrations gets no tables, and is told why', async () => {
  const { providers, stop, knex } = await startModule(
    { baseUrl: choreo.serveUrl, token: SERVE_TOKEN },
    { skip: true },
  );
  try {
    const [provider] = providers;
    // The catalog connects its providers as it starts: this one fails it, naming the table.
    await expect(provider.connect(new RecordingConnection())).rejects.toThrow(
      /table choreo_ingest_feed_position is missing, and the backend skips database migrations/,
    );
    expect(await knex.schema.hasTable('choreo_ingest_feed_position')).toBe(false);
  } finally {
    await stop();
  }
});

test('a failed step reaches the scheduler; the same failure again is not repeated', async () => {
  const { providers, scheduler, stop } = await startModule({
    baseUrl: choreo.serveUrl,
    token: 'not-the-serve-token',
  });
  try {
    const [task] = scheduler.scheduleTask.mock.calls[0];
    await providers[0].connect(new RecordingConnection());
    // Thrown: the scheduler logs it once and records the run as failed (last_run_error_json).
    await expect(task.fn(new AbortController().signal)).rejects.toThrow(
      /^choreo-ingest GET \/entities answered HTTP 401: /,
    );
    // The same failure at the next ticks: not handed on again (nor logged) within the interval.
    await expect(task.fn(new AbortController().signal)).resolves.toBeUndefined();
    await expect(task.fn(new AbortController().signal)).resolves.toBeUndefined();
  } finally {
    await stop();
  }
});

test('a schedule with only a frequency keeps the default timeout; config errors name the key', async () => {
  const { providers, scheduler, stop } = await startModule({
    baseUrl: choreo.serveUrl,
    schedule: { frequency: { seconds: 10 } },
  });
  try {
    const [task] = scheduler.scheduleTask.mock.calls[0];
    expect(task).toMatchObject({
      frequency: { seconds: 10 },
      timeout: { minutes: 15 },
      initialDelay: { seconds: 15 },
    });
    expect((providers[0] as ChoreoIngestEntityProvider).stepBudgetMs).toBe(12 * 60 * 1000);
  } finally {
    await stop();
  }
  await expect(startModule({ baseUrl: choreo.serveUrl, resyncInterval: 'one day' })).rejects.toThrow(
    /at 'catalog\.providers\.choreoIngest\.resyncInterval'/,
  );
  await expect(
    startModule({ baseUrl: choreo.serveUrl, schedule: { frequency: 'often' } }),
  ).rejects.toThrow(/Invalid catalog\.providers\.choreoIngest\.schedule: .*'frequency'/);
  const wrong: Array<[JsonObject, RegExp]> = [
    [{ batchSize: 0 }, /choreo-ingest: catalog\.providers\.choreoIngest\.batchSize must be/],
    [{ maxRemovalRatio: 2 }, /catalog\.providers\.choreoIngest\.maxRemovalRatio must be from 0/],
    [{ resyncInterval: { seconds: 0 } }, /catalog\.providers\.choreoIngest\.resyncInterval must/],
    [{ requestTimeout: { seconds: 0 } }, /catalog\.providers\.choreoIngest\.requestTimeout must/],
    [
      { schedule: { timeout: { seconds: 0 } } },
      /choreo-ingest: catalog\.providers\.choreoIngest\.schedule\.timeout must be above zero/,
    ],
  ];
  for (const [settings, message] of wrong) {
    await expect(startModule({ baseUrl: choreo.serveUrl, ...settings })).rejects.toThrow(message);
  }
});
