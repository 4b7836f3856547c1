/**
 * What a ChoreoIngestEntityProvider is made with, and what one of its steps reports.
 */
import type { LoggerService } from '@backstage/backend-plugin-api';
import type { EntityProviderMutation } from '@backstage/plugin-catalog-node';
import type { Knex } from 'knex';

export const DEFAULT_BATCH_SIZE = 500;
export const DEFAULT_MAX_REMOVAL_RATIO = 0.2;
/** One day. */
export const DEFAULT_RESYNC_INTERVAL_MS = 24 * 60 * 60 * 1000;
export type SyncResult = {
  applied: number;
  removed: number;
  resynced: boolean;
  /** Set when the step stopped between pages (aborted, or out of its time budget). */
  stopped?: true;
};

export type RunOptions = {
  /** The scheduler's signal: once aborted, the step stops at the next page boundary. */
  signal?: AbortSignal;
};

export type ChoreoIngestEntityProviderOptions = {
  /** choreo-ingest serve's base URL, such as `http://choreo-ingest:8080`. */
  baseUrl: string;
  /** Its bearer token (`serve.auth.tokenFile` / `$CHOREO_INGEST_SERVE_TOKEN`). */
  token?: string;
  logger: LoggerService;
  /** A Knex client of the catalog's database: the module keeps its two tables there. */
  database: Knex;
  /**
   * The backend skips database migrations (`DatabaseService.migrations.skip`): the tables are
   * not created or changed, only checked for.
   */
  skipMigrations?: boolean;
  /**
   * Changes per `/changes` page (at most 10,000, the feed's limit), and entities per
   * `/entities` page (capped at 1,000, that route's limit).
   */
  batchSize?: number;
  /** The most a resync may remove, as a share of the provider's entities (0..1). */
  maxRemovalRatio?: number;
  /** The time from one completed resync to the next periodic one (default one day). */
  resyncIntervalMs?: number;
  /**
   * How long one step may go on before it stops at the next page boundary (default: no limit).
   * The module sets it below the schedule's timeout, when the scheduler would let another
   * replica start a step.
   */
  stepBudgetMs?: number;
  /** Per request, its answer read whole, in milliseconds (default 60 s). */
  requestTimeoutMs?: number;
  /**
   * The most entities (added and removed) one `applyMutation` holds (default 1,000): a larger
   * page goes to the catalog as several mutations, the position written after the last.
   */
  maxMutationEntities?: number;
  /**
   * The config key the options came from (the module's `catalog.providers.choreoIngest`): an
   * error about one names the whole key (`catalog.providers.choreoIngest.batchSize`).
   */
  configPath?: string;
  /** Called after a mutation was accepted, before the position is written (a test seam). */
  afterMutation?: (mutation: EntityProviderMutation) => Promise<void> | void;
  /** The clock, in milliseconds since the epoch (a test seam; default `Date.now`). */
  now?: () => number;
};
