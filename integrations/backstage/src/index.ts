/**
 * A Backstage catalog backend module that applies choreo-ingest's change feed as small
 * delta mutations.
 *
 * @packageDocumentation
 */
export { catalogModuleChoreoIngest as default } from './module';
export {
  catalogModuleChoreoIngest,
  CONFIG_PATH,
  readSchedule,
  DEFAULT_SCHEDULE,
  STEP_BUDGET_SHARE,
  TASK_ID,
} from './module';
export { ChoreoIngestEntityProvider } from './provider';
export {
  DEFAULT_BATCH_SIZE,
  DEFAULT_MAX_REMOVAL_RATIO,
  DEFAULT_RESYNC_INTERVAL_MS,
  type ChoreoIngestEntityProviderOptions,
  type RunOptions,
  type SyncResult,
} from './options';
export { FeedClient, FeedError, FeedGoneError } from './feedClient';
export { locationKeyFor } from './entities';
