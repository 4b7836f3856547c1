/**
 * The catalog backend module: reads `catalog.providers.choreoIngest`, adds the provider to the
 * catalog and schedules its sync as one cluster-wide task. The scheduler runs it on one replica
 * at a time only until the schedule's timeout: then it aborts the task's signal and lets another
 * replica claim the task, whether or not the step has ended. So a step stops between pages once
 * the signal is aborted, and on its own once STEP_BUDGET_SHARE of the timeout has passed.
 */
import {
  coreServices,
  createBackendModule,
  readSchedulerServiceTaskScheduleDefinitionFromConfig,
  type SchedulerServiceTaskScheduleDefinition,
} from '@backstage/backend-plugin-api';
import { type Config, ConfigReader, readDurationFromConfig } from '@backstage/config';
import { catalogProcessingExtensionPoint } from '@backstage/plugin-catalog-node';
import { type JsonObject, durationToMilliseconds } from '@backstage/types';
import { ChoreoIngestEntityProvider } from './provider';
import { StepFailures } from './repeats';

export const CONFIG_PATH = 'catalog.providers.choreoIngest';
/** The scheduler task id: fixed, so every replica takes turns at the same task. */
export const TASK_ID = 'choreo-ingest-entity-provider:sync';

export const DEFAULT_SCHEDULE: SchedulerServiceTaskScheduleDefinition = {
  frequency: { seconds: 30 },
  timeout: { minutes: 15 },
  initialDelay: { seconds: 15 },
};

/** The share of the schedule's timeout a step may use before it stops between pages. */
export const STEP_BUDGET_SHARE = 0.8;

/** A schedule's duration (a luxon Duration or a HumanDuration) in milliseconds. */
function milliseconds(duration: SchedulerServiceTaskScheduleDefinition['timeout']): number {
  return 'toMillis' in duration ? duration.toMillis() : durationToMilliseconds(duration);
}

/**
 * The schedule from the config, each key it leaves out taken from DEFAULT_SCHEDULE (a config
 * that gives only `frequency` keeps the default timeout and initial delay). Errors name the
 * whole key (`catalog.providers.choreoIngest.schedule.frequency`).
 */
export function readSchedule(config: Config | undefined): SchedulerServiceTaskScheduleDefinition {
  if (!config) {
    return DEFAULT_SCHEDULE;
  }
  const merged = new ConfigReader(
    { ...(DEFAULT_SCHEDULE as unknown as JsonObject), ...config.get<JsonObject>() },
    'app-config',
    undefined,
    `${CONFIG_PATH}.schedule`,
  );
  try {
    return readSchedulerServiceTaskScheduleDefinitionFromConfig(merged);
  } catch (error) {
    throw new Error(`Invalid ${CONFIG_PATH}.schedule: ${(error as Error).message}`);
  }
}

export const catalogModuleChoreoIngest = createBackendModule({
  pluginId: 'catalog',
  moduleId: 'choreo-ingest',
  register(env) {
    env.registerInit({
      deps: {
        catalog: catalogProcessingExtensionPoint,
        config: coreServices.rootConfig,
        logger: coreServices.logger,
        scheduler: coreServices.scheduler,
        database: coreServices.database,
      },
      async init({ catalog, config, logger, scheduler, database }) {
        const settings = config.getOptionalConfig(CONFIG_PATH);
        if (!settings) {
          logger.warn(`choreo-ingest: no ${CONFIG_PATH} in the config; the module does nothing`);
          return;
        }
        const schedule = readSchedule(settings.getOptionalConfig('schedule'));
        // From the root config, so that an error names the whole key.
        const optionalMilliseconds = (key: string) =>
          settings.has(key)
            ? durationToMilliseconds(readDurationFromConfig(config, { key: `${CONFIG_PATH}.${key}` }))
            : undefined;
        const stepBudgetMs = Math.floor(STEP_BUDGET_SHARE * milliseconds(schedule.timeout));
        const provider = new ChoreoIngestEntityProvider({
          baseUrl: settings.getString('baseUrl'),
          token: settings.getOptionalString('token'),
          batchSize: settings.getOptionalNumber('batchSize'),
          maxRemovalRatio: settings.getOptionalNumber('maxRemovalRatio'),
          resyncIntervalMs: optionalMilliseconds('resyncInterval'),
          requestTimeoutMs: optionalMilliseconds('requestTimeout'),
          stepBudgetMs,
          logger,
          database: await database.getClient(),
          skipMigrations: database.migrations?.skip,
          configPath: CONFIG_PATH,
        });
        if (provider.requestTimeoutMs >= stepBudgetMs) {
          // A slow answer then outlives the step's turn: another replica's step may apply a
          // newer page before this one's lands, and the next change or resync mends it only.
          logger.warn(
            `choreo-ingest: ${CONFIG_PATH}.requestTimeout ` +
              `(${provider.requestTimeoutMs / 1000} s) ` +
              `is not shorter than a step's budget (${STEP_BUDGET_SHARE * 100}% of ` +
              `schedule.timeout: ${stepBudgetMs / 1000} s): shorten it, or lengthen ` +
              'the timeout',
          );
        }
        catalog.addEntityProvider(provider);
        const failures = new StepFailures(logger);
        await scheduler.scheduleTask({
          id: TASK_ID,
          ...schedule,
          // Always one step at a time across replicas: a `scope: local` from the config would
          // run a step on every replica at once, each applying pages the others undo.
          scope: 'global',
          fn: async signal => {
            if (!provider.connected) {
              logger.debug('choreo-ingest: the catalog has not connected the provider yet');
              return;
            }
            try {
              await provider.run({ signal });
            } catch (error) {
              // The scheduler logs what it is handed and records the run as failed (its
              // last_run_error_json, its failed-run metric); the same failure again within
              // the repeat interval is only a debug line, so a wrong token or a stopped serve
              // is not logged every 30 s. The scheduler runs the task again at the next tick.
              const reported = failures.failed(error);
              if (reported) {
                throw reported;
              }
              return;
            }
            failures.succeeded();
          },
        });
      },
    });
  },
});
