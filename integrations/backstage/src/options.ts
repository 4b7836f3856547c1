/**
 * What a ChoreoIngestEntityProvider is made with, and what one of its steps reports.
 */
import type { LoggerService } from '@backstage/backend-plugin-api';
import type { EntityProviderMutation } from '@backstage/plugin-catalog-node';
import type { Knex } from 'knex';
import { DEFAULT_TIMEOUT_MS, MAX_CHANGES, MAX_PAGE_ENTITIES } from './feedClient';

export const DEFAULT_BATCH_SIZE = 500;
export const DEFAULT_MAX_REMOVAL_RATIO = 0.2;
/** One day. */
export const DEFAULT_RESYNC_INTERVAL_MS = 24 * 60 * 60 * 1000;
/**
 * The most entities one mutation holds: the catalog applies a mutation in one transaction, and a
 * `/changes` page may hold up to 10,000 changes.
 */
const MAX_MUTATION_ENTITIES = 1000;
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

/** The options' numbers, checked, with their defaults. */
export type Settings = {
  batchSize: number;
  maxRemovalRatio: number;
  resyncIntervalMs: number;
  requestTimeoutMs: number;
  maxMutationEntities: number;
};

/** The options checked, with their defaults: an error names the key (under `configPath`) of
 * the first that is wrong. */
export function checkedSettings(options: ChoreoIngestEntityProviderOptions): Settings {
  const key = (name: string) => (options.configPath ? `${options.configPath}.${name}` : name);
  if (!options.baseUrl) {
    throw new Error(`choreo-ingest: ${key('baseUrl')} is required`);
  }
  const urlProblem = baseUrlProblem(options.baseUrl);
  if (urlProblem) {
    throw new Error(`choreo-ingest: ${key('baseUrl')} ${urlProblem}`);
  }
  if (options.token !== undefined && !isSendableToken(options.token)) {
    // Not shown: fetch would refuse the header in an error that quotes it.
    throw new Error(
      `choreo-ingest: ${key('token')} holds a line break, a NUL or a character beyond ` +
        'Latin-1 inside it (not shown); a bearer token is one line',
    );
  }
  const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > MAX_CHANGES) {
    throw new Error(
      `choreo-ingest: ${key('batchSize')} must be a whole number from 1 to ` +
        `${thousands(MAX_CHANGES)} (per /changes page; an /entities page holds at most ` +
        `${thousands(MAX_PAGE_ENTITIES)})`,
    );
  }
  const maxRemovalRatio = options.maxRemovalRatio ?? DEFAULT_MAX_REMOVAL_RATIO;
  if (!(maxRemovalRatio >= 0 && maxRemovalRatio <= 1)) {
    throw new Error(`choreo-ingest: ${key('maxRemovalRatio')} must be from 0 to 1`);
  }
  const resyncIntervalMs = options.resyncIntervalMs ?? DEFAULT_RESYNC_INTERVAL_MS;
  if (!(resyncIntervalMs > 0 && Number.isFinite(resyncIntervalMs))) {
    throw new Error(`choreo-ingest: ${key('resyncInterval')} must be a duration above zero`);
  }
  const requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!(requestTimeoutMs > 0 && Number.isFinite(requestTimeoutMs))) {
    throw new Error(`choreo-ingest: ${key('requestTimeout')} must be a duration above zero`);
  }
  const maxMutationEntities = options.maxMutationEntities ?? MAX_MUTATION_ENTITIES;
  if (!(Number.isInteger(maxMutationEntities) && maxMutationEntities >= 1)) {
    throw new Error('choreo-ingest: maxMutationEntities must be a whole number from 1');
  }
  if (options.stepBudgetMs !== undefined && !(options.stepBudgetMs > 0)) {
    const budget = options.configPath ? `${key('schedule.timeout')}` : 'the step time budget';
    throw new Error(`choreo-ingest: ${budget} must be above zero`);
  }
  return { batchSize, maxRemovalRatio, resyncIntervalMs, requestTimeoutMs, maxMutationEntities };
}

/** Why `baseUrl` cannot be serve's address (not an http(s) URL, credentials in it), or undefined. */
function baseUrlProblem(baseUrl: string): string | undefined {
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    return 'is not a URL (expected http://host:port or https://host:port)';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return `must be an http:// or https:// URL, not ${url.protocol}`;
  }
  if (url.username || url.password) {
    // They would be in every error message and in the location key the catalog keeps.
    return 'must not hold credentials (user:password@); set the token instead';
  }
  return undefined;
}

/** Whether fetch sends `token` (its ends trimmed, as serve trims its token file) in a header:
 * no NUL, CR or LF inside, and nothing beyond Latin-1. */
function isSendableToken(token: string): boolean {
  return !/[\0\r\n]|[^\0-\xff]/.test(token.trim());
}

function thousands(value: number): string {
  return value.toLocaleString('en-US');
}
