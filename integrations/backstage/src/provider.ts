/**
 * ChoreoIngestEntityProvider: follows choreo-ingest's change feed and applies each page of
 * changes to the catalog as small `delta` mutations.
 *
 * One `run()` is one sync step:
 *   1. a resync, when one is due (first start, a 410 from the feed, a new storeId, or at the
 *      first step of a process, a catalog that holds fewer of the provider's entities than it
 *      applied: see `CatalogWatch.loss`) or under
 *      way (it resumes from the stored cursor): the whole catalog from `GET /entities`, one
 *      delta per page, then the removal of what earlier generations applied and this one did
 *      not, and of the catalog's entities under the module's name it has no record of (refused
 *      above `maxRemovalRatio`, and re-checked at every later step: see `Sweeper`);
 *   2. the changes after the stored position from `GET /changes`, page by page until caught
 *      up, each page's bodies applied one `POST /entities/batch` answer at a time;
 *   3. the periodic resync (step 1 again, then 2), once `resyncIntervalMs` has passed since the
 *      last resync completed: the catalog's applyMutation does not fail for an entity it skips
 *      (a location-key conflict is only logged), and an entity deleted through the catalog's
 *      API or by its orphan strategy never comes back otherwise. The catalog skips unchanged
 *      entities by their hash, so it costs little. Sooner while the catalog keeps some of the
 *      provider's entities under another location key (and skips its copies): once it lacks
 *      more of them than at the last look, that source's entities being gone (see
 *      `CatalogWatch.freed`). A completed resync looks at what the catalog keeps that way, and
 *      logs it once.
 * A page goes to the catalog as mutations of at most 1,000 entities. The stored position moves
 * only after the catalog accepted the page's last one, and only if the step was not aborted
 * meanwhile and no other step wrote since this one read it (a compare-and-set): a crash in
 * between replays the page, which the catalog takes as the same upserts and removals again. A step
 * stops between pages once its signal is aborted or its time budget is spent (a page already
 * read still goes to the catalog unless the signal is aborted); the next step resumes from the
 * stored position.
 */
import type { LoggerService } from '@backstage/backend-plugin-api';
import type { EntityProvider, EntityProviderConnection } from '@backstage/plugin-catalog-node';
import { CatalogWatch } from './catalogWatch';
import { type OddChange, pageOps } from './changePage';
import { locationKeyFor, normalizeRef, refKey, refOfEntity, uniqueRefs } from './entities';
import {
  FeedClient,
  FeedError,
  FeedGoneError,
  MAX_BATCH_REFS,
  MAX_PAGE_ENTITIES,
} from './feedClient';
import { MutationWriter } from './mutations';
import {
  type ChoreoIngestEntityProviderOptions,
  type RunOptions,
  type SyncResult,
  checkedSettings,
} from './options';
import {
  CATALOG_ENTITIES_TABLE,
  CATALOG_REFERENCES_TABLE,
  type FeedState,
  StateStore,
  StateSuperseded,
  chunks,
} from './state';
import { Sweeper } from './sweep';

const PROVIDER_NAME = 'choreo-ingest';
/** Walks restarted in one step (storeId changed under it, cursor expired) before giving up. */
const MAX_WALK_RESTARTS = 3;

class StoreChanged extends Error {}
/** The step stops between pages: aborted, or out of its time budget. */
class Stopped extends Error {}

export class ChoreoIngestEntityProvider implements EntityProvider {
  private readonly client: FeedClient;
  private readonly logger: LoggerService;
  private readonly store: StateStore;
  private readonly baseUrl: string;
  /** The key of this step's mutations: the stored one (see `FeedState.locationKey`). */
  private locationKey = '';
  private readonly batchSize: number;
  /** The kinds of odd change (`OddChange.problem`) warned of in this process. */
  private readonly oddSaid = new Set<OddChange['problem']>();
  /** The time from one completed resync to the next periodic one, in milliseconds. */
  readonly resyncIntervalMs: number;
  /** How long one feed request may take, its answer read whole, in milliseconds. */
  readonly requestTimeoutMs: number;
  /** How long one step may go on, in milliseconds (undefined: no limit). */
  readonly stepBudgetMs: number | undefined;
  private readonly now: () => number;
  /** What hands the entities to the catalog. */
  private readonly writer: MutationWriter;
  private connection: EntityProviderConnection | undefined;
  private running: Promise<SyncResult> | undefined;
  /** The running step's signal and deadline (steps never overlap within a process). */
  private signal: AbortSignal | undefined;
  private deadline = Infinity;
  /** The removal of what a resync did not see, within the guard. */
  private readonly sweeper: Sweeper;
  /** Whether this process checked that the catalog still holds what was applied. */
  private catalogChecked = false;
  /** Whether the feed's last answer said its catalog was not complete yet (`catalogComplete`). */
  private feedIncomplete = false;
  /** What the catalog holds of what was applied (removed by it, or kept under another key). */
  private readonly catalog: CatalogWatch;

  constructor(options: ChoreoIngestEntityProviderOptions) {
    const settings = checkedSettings(options);
    this.client = new FeedClient({
      baseUrl: options.baseUrl,
      token: options.token?.trim(),
      timeoutMs: settings.requestTimeoutMs,
    });
    this.logger = options.logger;
    let catalogUnreadSaid = false;
    this.store = new StateStore(options.database, PROVIDER_NAME, {
      skipMigrations: options.skipMigrations,
      catalogUnread: error => {
        if (!catalogUnreadSaid) {
          catalogUnreadSaid = true; // once a process: it fails the same way at every step
          const tables = `${CATALOG_ENTITIES_TABLE}, ${CATALOG_REFERENCES_TABLE}`;
          this.logger.warn(
            `choreo-ingest: the catalog's tables (${tables}) could not be read as this module ` +
              `expects, so its checks of what the catalog holds are left out: ${error}`,
          );
        }
      },
    });
    this.baseUrl = options.baseUrl;
    this.batchSize = settings.batchSize;
    this.resyncIntervalMs = settings.resyncIntervalMs;
    this.requestTimeoutMs = settings.requestTimeoutMs;
    this.stepBudgetMs = options.stepBudgetMs;
    this.writer = new MutationWriter(
      this.logger,
      settings.maxMutationEntities,
      () => this.checkAborted(),
      options.afterMutation,
    );
    this.now = options.now ?? Date.now;
    this.sweeper = new Sweeper(this.store, this.logger, settings.maxRemovalRatio, this.now);
    this.catalog = new CatalogWatch(this.store, this.logger);
  }

  getProviderName(): string {
    return PROVIDER_NAME;
  }

  async connect(connection: EntityProviderConnection): Promise<void> {
    this.connection = connection;
    this.catalogChecked = false;
    this.catalog.reset();
    await this.store.ready();
  }

  get connected(): boolean {
    return this.connection !== undefined;
  }

  /** The refs this provider has applied, in Backstage's spelling, sorted. */
  async appliedRefs(): Promise<string[]> {
    return this.store.appliedRefs();
  }

  /**
   * One sync step. Steps never overlap within a process. Across replicas the scheduler runs the
   * task on one replica at a time only until the schedule's timeout: then it aborts `signal`
   * and another replica may start a step. So a step stops at the next page boundary once
   * `signal` is aborted or `stepBudgetMs` has passed, with the stored position at the last page
   * applied, where the next step resumes.
   */
  run(options: RunOptions = {}): Promise<SyncResult> {
    if (!this.running) {
      this.running = this.sync(options.signal).finally(() => {
        this.running = undefined;
      });
    }
    return this.running;
  }

  private async sync(signal: AbortSignal | undefined): Promise<SyncResult> {
    const connection = this.connection;
    if (!connection) {
      throw new Error('choreo-ingest: run() before connect(): the catalog has not started');
    }
    this.signal = signal;
    this.deadline = this.stepBudgetMs === undefined ? Infinity : this.now() + this.stepBudgetMs;
    const result: SyncResult = { applied: 0, removed: 0, resynced: false };
    let seq: number | undefined;
    try {
      seq = (await this.step(connection, result)).seq;
    } catch (error) {
      // A request the abort cut short (no answer, or its body cut off) is the abort's stop
      // too. Anything else (the database, the catalog) is a failure, aborted or not.
      const cutShort = error instanceof FeedError && error.inTransit;
      const stopped =
        error instanceof Stopped || error instanceof StateSuperseded
          ? error.message
          : signal?.aborted && cutShort
            ? 'the step was aborted during a request'
            : undefined;
      if (stopped === undefined) {
        throw error;
      }
      result.stopped = true;
      this.logger.info(
        `choreo-ingest: stopped between pages: ${stopped}; the next step resumes ` +
          'from the stored position',
      );
    } finally {
      this.signal = undefined;
      this.deadline = Infinity;
    }
    if (result.applied || result.removed || result.resynced) {
      this.logger.info(
        `choreo-ingest: applied ${result.applied}, removed ${result.removed}` +
          `${result.resynced ? ' (resynced)' : ''}` +
          `${result.stopped ? '; stopped' : `; at seq ${seq}`}`,
      );
    }
    return result;
  }

  private async step(connection: EntityProviderConnection, result: SyncResult): Promise<FeedState> {
    this.checkpoint();
    // No row (first start, or deleted by an operator to force a resync): the generations go on
    // from the applied refs', so the resync's sweep still sees the refs applied before as stale.
    let state = await this.keyed(
      (await this.store.load()) ?? {
        generation: await this.store.maxAppliedGeneration(),
        sweepPending: false,
      },
    );
    if (state.seq === undefined && !state.resync) {
      state = await this.startResync(state, 'first start');
    } else if (!this.catalogChecked) {
      const lost = await this.catalog.loss(this.locationKey);
      if (lost) {
        state = await this.startResync(state, lost);
      }
    }
    this.catalogChecked = true;
    for (let restarts = 0; ; restarts += 1) {
      if (restarts > MAX_WALK_RESTARTS) {
        throw new Error(`choreo-ingest: gave up after ${MAX_WALK_RESTARTS} resyncs in one step`);
      }
      if (state.resync) {
        result.resynced = true;
        state = await this.walk(connection, state, result);
      }
      try {
        state = await this.follow(connection, state, result);
      } catch (error) {
        if (!(error instanceof FeedGoneError || error instanceof StoreChanged)) {
          throw error;
        }
        state = await this.startResync(state, error.message);
        continue;
      }
      // Caught up: a periodic resync, when due, comes after the changes, so they wait for none.
      if (!result.resynced && this.resyncDue(state)) {
        state = await this.startResync(state, this.periodicReason(state));
        continue;
      }
      const freed = result.resynced ? undefined : await this.catalog.freed(this.locationKey);
      if (freed) {
        state = await this.startResync(state, freed);
        continue;
      }
      break;
    }
    if (state.sweepPending) {
      const steps = {
        checkpoint: () => this.checkpoint(),
        remove: (refs: string[]) => this.remove(connection, refs),
      };
      state = await this.sweeper.sweep(state, steps, result, !this.feedIncomplete);
    }
    if (result.resynced && !state.resync) {
      // A completed resync offered every entity: which of them the catalog keeps elsewhere.
      await this.catalog.look(this.locationKey);
    }
    return state;
  }

  /** Whether the periodic resync is due: `resyncIntervalMs` since the last one completed. */
  private resyncDue(state: FeedState): boolean {
    if (state.resync !== undefined || state.seq === undefined) {
      return false;
    }
    return state.resyncedAt === undefined || this.now() - state.resyncedAt >= this.resyncIntervalMs;
  }

  private periodicReason(state: FeedState): string {
    const last =
      state.resyncedAt === undefined
        ? 'none recorded'
        : `the last completed ${new Date(state.resyncedAt).toISOString()}`;
    return `periodic, every ${this.resyncIntervalMs / 1000} s (${last})`;
  }

  /**
   * Stop here, before a page starts (or a write that follows no mutation), once the step was
   * aborted or its time budget is spent.
   */
  private checkpoint(): void {
    this.checkAborted();
    if (this.now() >= this.deadline) {
      throw new Stopped(`the step used its time budget of ${this.stepBudgetMs} ms`);
    }
  }

  /**
   * Stop here once the step was aborted, but not for the budget: for a page already read, which
   * goes on to the catalog however long it took to read (the scheduler aborts at the timeout).
   */
  private checkAborted(): void {
    if (this.signal?.aborted) {
      throw new Stopped('the step was aborted (the schedule\'s timeout, or the backend stopping)');
    }
  }

  /** The state with its location key: the stored one, else (first step, or a state from before
   * the key was kept) the base URL's, stored at once. */
  private async keyed(state: FeedState): Promise<FeedState> {
    const configured = locationKeyFor(this.baseUrl);
    if (state.locationKey === undefined) {
      const next = await this.store.commit({ state: { ...state, locationKey: configured } });
      this.locationKey = configured;
      return next;
    }
    if (state.locationKey !== configured && this.locationKey !== state.locationKey) {
      this.logger.info(
        `choreo-ingest: keeping the location key ${state.locationKey} the catalog's entities ` +
          `were applied under (baseUrl is now ${this.baseUrl})`,
      );
    }
    this.locationKey = state.locationKey;
    return state;
  }

  private async startResync(state: FeedState, reason: string): Promise<FeedState> {
    // No write once the step must stop (a 410 may come back after the budget): the next step
    // meets the same reason again.
    this.checkpoint();
    const next: FeedState = { ...state, generation: state.generation + 1, resync: {} };
    this.logger.info(`choreo-ingest: resync (generation ${next.generation}): ${reason}`);
    return this.store.commit({ state: next });
  }

  /** Page through `GET /entities`, resuming at the stored cursor; return the state after it. */
  private async walk(
    connection: EntityProviderConnection,
    initial: FeedState,
    result: SyncResult,
  ): Promise<FeedState> {
    let state = initial;
    const limit = Math.min(this.batchSize, MAX_PAGE_ENTITIES);
    for (let restarts = 0; ; ) {
      this.checkpoint();
      const resync = state.resync ?? {};
      let page;
      try {
        page = await this.client.entitiesPage(resync.cursor, limit, this.signal);
      } catch (error) {
        // serve's 400 for a cursor it cannot read (another release's) names the parameter; a
        // 400 of a proxy before it does not, and restarting would lose the walk at every step.
        const expired =
          resync.cursor !== undefined &&
          error instanceof FeedError &&
          (error.status === 410 || (error.status === 400 && error.detail.startsWith('cursor')));
        if (!expired) {
          throw error;
        }
        state = await this.restartWalk(state, (restarts += 1), error.message);
        continue;
      }
      this.feedIncomplete = page.catalogComplete === false;
      if (resync.storeId !== undefined && page.storeId !== resync.storeId) {
        const why = `storeId changed during the walk (${resync.storeId} -> ${page.storeId})`;
        state = await this.restartWalk(state, (restarts += 1), why);
        continue;
      }
      const { added, skipped } = this.writer.acceptable(page.entities, this.locationKey);
      if (added.length) {
        await this.writer.apply(connection, { type: 'delta', added, removed: [] });
      } else {
        this.checkAborted();
      }
      const storeId = resync.storeId ?? page.storeId;
      const newestSeq = resync.newestSeq ?? page.newestSeq;
      const next: FeedState = page.nextCursor
        ? { ...state, resync: { cursor: page.nextCursor, storeId, newestSeq } }
        : {
            ...state,
            resync: undefined,
            storeId,
            seq: newestSeq,
            seqAt: page.newestAt ?? undefined,
            sweepPending: true,
            resyncedAt: this.now(),
          };
      const written = await this.store.commit({
        state: next,
        applied: { refs: added.map(item => refOfEntity(item.entity)), generation: state.generation },
        // The catalog keeps the last valid version of an applied entity it now refuses: the
        // walk saw it, so the sweep must not take it for gone.
        kept: { refs: skipped, generation: state.generation },
      });
      result.applied += added.length;
      state = written;
      if (!page.nextCursor) {
        return state;
      }
    }
  }

  private async restartWalk(state: FeedState, restarts: number, why: string): Promise<FeedState> {
    if (restarts > MAX_WALK_RESTARTS) {
      throw new Error(`choreo-ingest: the resync walk restarted ${MAX_WALK_RESTARTS} times: ${why}`);
    }
    return this.startResync(state, `walk restarted: ${why}`);
  }

  /** Apply `/changes` after the stored seq, page by page, until caught up. */
  private async follow(
    connection: EntityProviderConnection,
    initial: FeedState,
    result: SyncResult,
  ): Promise<FeedState> {
    let state = initial;
    for (;;) {
      this.checkpoint();
      const since = state.seq ?? 0;
      const page = await this.client.changes(since, this.batchSize, state.seqAt, this.signal);
      this.requireStore(state, page.storeId);
      this.feedIncomplete = page.catalogComplete === false;
      if (!page.changes.length) {
        return state;
      }
      const { upserts, deletes, rereads, odd } = pageOps(page);
      this.sayOdd(odd);
      // Each answer of bodies goes to the catalog before the next is asked for: a page of large
      // entities (inline API definitions) is never held whole. The page's deletes go with its
      // first mutation: one removal per ref as Backstage tells them apart (case-insensitively),
      // none the page upserts. A ref gone since its upsert was logged (`missing`) is left to its
      // delete, later in the log: removed now, case-folded, it took a live spelling with it.
      const upserted = new Set(upserts.map(ref => refKey(normalizeRef(ref))));
      let removals = uniqueRefs(deletes.map(normalizeRef));
      removals = removals.filter(ref => !upserted.has(refKey(ref)));
      const removed: string[] = [];
      const applied: string[] = [];
      for (const refs of chunks(upserts, MAX_BATCH_REFS)) {
        // Split while serve refuses a batch as too large (413): see `entitiesBatches`.
        for await (const batch of this.client.entitiesBatches(refs, this.signal)) {
          this.requireStore(state, batch.storeId);
          // A ref read again for an op this module does not know, and gone: removed now.
          const gone = batch.missing.map(normalizeRef).filter(ref => rereads.has(refKey(ref)));
          removals = uniqueRefs([...removals, ...gone]);
          const { added } = this.writer.acceptable(batch.entities, this.locationKey);
          if (added.length || removals.length) {
            await this.writer.apply(connection, this.writer.delta(added, removals, this.locationKey));
          }
          applied.push(...added.map(item => refOfEntity(item.entity)));
          removed.push(...removals);
          removals = [];
        }
      }
      if (removals.length) {
        await this.writer.apply(connection, this.writer.delta([], removals, this.locationKey));
        removed.push(...removals);
      } else if (!applied.length && !removed.length) {
        this.checkAborted();
      }
      const last = page.changes[page.changes.length - 1];
      const next: FeedState = { ...state, seq: last.seq, seqAt: last.at || undefined };
      const written = await this.store.commit({
        state: next,
        applied: { refs: applied, generation: state.generation },
        removed,
      });
      result.applied += applied.length;
      result.removed += removed.length;
      state = written;
      // Caught up at the newest change; a page one short of the batch can come before it (the
      // feed does not end a page between a delete and the re-add of its case twin).
      if (last.seq >= page.newestSeq || page.changes.length < this.batchSize - 1) {
        return state;
      }
    }
  }

  /** A warning for the first odd change of each kind (`OddChange.problem`) in this process. */
  private sayOdd(odd: OddChange[]): void {
    for (const change of odd) {
      if (this.oddSaid.has(change.problem)) {
        continue;
      }
      this.oddSaid.add(change.problem);
      const what =
        change.problem === 'op'
          ? 'its entity is read again: upserted, or removed if serve has it no more'
          : 'it is left out, and the next resync puts the catalog right';
      this.logger.warn(
        `choreo-ingest: change ${change.seq} of the feed: ${change.detail}: ${what} ` +
          '(said once a process, for the first such change)',
      );
    }
  }

  private async remove(connection: EntityProviderConnection, refs: string[]): Promise<void> {
    await this.writer.apply(connection, this.writer.delta([], refs, this.locationKey));
  }

  private requireStore(state: FeedState, storeId: string): void {
    if (state.storeId !== undefined && storeId !== state.storeId) {
      throw new StoreChanged(`storeId changed (${state.storeId} -> ${storeId})`);
    }
  }
}
