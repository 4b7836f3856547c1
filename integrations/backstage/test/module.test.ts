/**
 * The module in Backstage's test backend: it reads its config, hands the provider to the
 * catalog's processing extension point and schedules the sync under its fixed task id.
 */
import { mockServices, startTestBackend } from '@backstage/backend-test-utils';
import { type EntityProvider, catalogProcessingExtensionPoint } from '@backstage/plugin-catalog-node';
import { ChoreoIngestEntityProvider, TASK_ID, catalogModuleChoreoIngest } from '../src';
import { SERVE_TOKEN, type Choreo, startChoreo } from './support/choreo';
import { RecordingConnection } from './support/connection';
import { sqlite } from './support/db';

let choreo: Choreo;

beforeAll(async () => {
  choreo = await startChoreo({ orgs: 1, projects: 2, components: 3 });
});

afterAll(async () => {
  await choreo?.stop();
});

test('the module adds the provider and its scheduled task syncs the catalog', async () => {
  const providers: EntityProvider[] = [];
  const scheduler = mockServices.scheduler.mock();
  const knex = sqlite();
  const backend = await startTestBackend({
    extensionPoints: [
      [catalogProcessingExtensionPoint, { addEntityProvider: (...added: any[]) => providers.push(...added.flat()) }],
    ],
    features: [
      catalogModuleChoreoIngest,
      scheduler.factory,
      mockServices.database.factory({ knex }),
      mockServices.rootConfig.factory({
        data: {
          catalog: {
            providers: {
              choreoIngest: {
                baseUrl: choreo.serveUrl,
                token: SERVE_TOKEN,
                batchSize: 7,
                maxRemovalRatio: 0.3,
                schedule: { frequency: { minutes: 10 }, timeout: { minutes: 5 } },
              },
            },
          },
        },
      }),
    ],
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
    });

    // Before the catalog connects the provider, the task does nothing.
    await task.fn(new AbortController().signal);
    const connection = new RecordingConnection();
    await provider.connect(connection);
    await task.fn(new AbortController().signal);

    const exported = await choreo.exportRefs();
    expect(connection.refs()).toEqual(exported);
    expect(connection.summaries.length).toBe(Math.ceil(exported.length / 7));
    expect(await (provider as ChoreoIngestEntityProvider).appliedRefs()).toEqual(exported);
  } finally {
    await backend.stop();
    await knex.destroy();
  }
});
