/**
 * The sweep after a completed resync: the removal of what earlier generations applied and the
 * resync did not see, and of the orphans (entities the catalog holds as the module's with no
 * record of them applied: see `StateStore.orphanCount`), within `maxRemovalRatio`.
 */
import type { LoggerService } from '@backstage/backend-plugin-api';
import { MAX_BATCH_REFS } from './feedClient';
import type { SyncResult } from './options';
import { Repeats } from './repeats';
import type { FeedState, StateStore } from './state';

/** What the sweep asks of the step it runs in. */
export type SweepSteps = {
  /** Throws to stop the step between batches (aborted, or out of its time budget). */
  checkpoint(): void;
  /** Remove the refs from the catalog, under the module's location key. */
  remove(refs: string[]): Promise<void>;
};

export class Sweeper {
  /** Removals refused by the guard, for logging them once. */
  private readonly refusals: Repeats;
  /** Removals waiting for the feed's catalog to be complete, for logging them once. */
  private readonly waits: Repeats;

  constructor(
    private readonly store: StateStore,
    private readonly logger: LoggerService,
    private readonly maxRemovalRatio: number,
    now: () => number,
  ) {
    this.refusals = new Repeats(now);
    this.waits = new Repeats(now);
  }

  /**
   * Counted first, then read and removed a batch at a time (a refused removal of 500,000 refs,
   * checked at every step, reads none of them). The orphans are counted only when the stale refs
   * alone are within the ratio. The state comes back with `sweepPending` cleared once all is
   * removed; stopped half-way, the next step sweeps what is left. Nothing is removed while
   * the feed's catalog is not complete (`catalogComplete` false: a new state's first cycle, many
   * bursts long): an entity it lacks may be one not read yet; it comes back as a change.
   */
  async sweep(
    state: FeedState,
    steps: SweepSteps,
    result: SyncResult,
    catalogComplete = true,
  ): Promise<FeedState> {
    if (!catalogComplete) {
      this.wait(state);
      return state;
    }
    if (this.waits.ended()) {
      this.logger.info('choreo-ingest: choreo-ingest completed its cycle: the removal goes on');
    }
    const stale = await this.store.staleCount(state.generation);
    const applied = await this.store.appliedCount();
    const within = (count: number, total: number) => !count || count <= this.maxRemovalRatio * total;
    const orphans = within(stale, applied) ? await this.store.orphanCount() : 0;
    const count = stale + orphans;
    const total = applied + orphans;
    if (!within(count, total)) {
      this.refuse(state, count, total, orphans);
      return state;
    }
    const refused = this.refusals.ended();
    if (refused) {
      this.logger.info(
        `choreo-ingest: the removal refused since ${new Date(refused.since).toISOString()} ` +
          `is within maxRemovalRatio now: removing ${count} entities`,
      );
    }
    let current = state;
    let removed = 0;
    for (;;) {
      const refs = await this.store.staleRefs(state.generation, MAX_BATCH_REFS);
      if (!refs.length) {
        break;
      }
      steps.checkpoint();
      await steps.remove(refs);
      current = await this.store.commit({ state: current, removed: refs });
      result.removed += refs.length;
      removed += refs.length;
    }
    // No more than the guard counted (the first in ref order now): any beyond wait for the next.
    let orphansRemoved = 0;
    for (let after = ''; orphansRemoved < orphans; ) {
      const limit = Math.min(MAX_BATCH_REFS, orphans - orphansRemoved);
      const refs = await this.store.orphanRefs(after, limit);
      if (!refs.length) {
        break;
      }
      steps.checkpoint();
      await steps.remove(refs);
      after = refs[refs.length - 1];
      result.removed += refs.length;
      orphansRemoved += refs.length;
    }
    if (current.sweepPending) {
      steps.checkpoint();
      current = await this.store.commit({ state: { ...current, sweepPending: false } });
    }
    if (removed) {
      this.logger.info(`choreo-ingest: removed ${removed} entities the resync did not see`);
    }
    if (orphansRemoved) {
      this.logger.info(
        `choreo-ingest: took back ${orphansRemoved} entities the catalog held as this module's ` +
          "with no record of them applied (a step's mutation that landed after the step was " +
          "aborted at the schedule's timeout); one another source also holds stays as its",
      );
    }
    return current;
  }

  private wait(state: FeedState): void {
    const message =
      `choreo-ingest: the removal of what the resync (generation ${state.generation}) did not ` +
      'see waits until choreo-ingest has completed a cycle of every provider it runs (a new ' +
      "state file's first cycle, a provider added or one that cannot complete: `choreo-ingest " +
      "status` shows which): until then an entity it lacks may be one not read yet";
    if (this.waits.seen(String(state.generation)).due) {
      this.logger.info(message);
    } else {
      this.logger.debug(message);
    }
  }

  private refuse(state: FeedState, count: number, total: number, orphans: number): void {
    const held = orphans
      ? ` (${orphans} of them held by the catalog as this module's with no record of them applied)`
      : '';
    const message =
      `choreo-ingest: refusing to remove ${count} of ${total} entities ` +
      `(${((100 * count) / total).toFixed(1)}%, above maxRemovalRatio ` +
      `${this.maxRemovalRatio}) that the resync (generation ${state.generation}) did not ` +
      `see${held}; raise catalog.providers.choreoIngest.maxRemovalRatio to allow it, or wait ` +
      'for the changes or the next resync to agree';
    // Checked at every step: logged once, then when it changes or every REPEAT_LOG_INTERVAL_MS.
    const { due, count: times, since } = this.refusals.seen(`${state.generation}:${count}`);
    if (due) {
      const refused = times > 1 ? ` (refused since ${new Date(since).toISOString()})` : '';
      this.logger.warn(`${message}${refused}`);
    } else {
      this.logger.debug(message);
    }
  }
}
