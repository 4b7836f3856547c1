/**
 * What repeats at every step (a failure, a refused removal), reported once: again only when it
 * changes, or once `REPEAT_LOG_INTERVAL_MS` has passed, and a line when it ends.
 */
import type { LoggerService } from '@backstage/backend-plugin-api';
import { FeedError } from './feedClient';

/** How often a failure or a refusal that goes on unchanged is reported again. */
export const REPEAT_LOG_INTERVAL_MS = 10 * 60 * 1000;

/** One occurrence as `Repeats.seen` counts it. */
export type Occurrence = {
  /** Whether to report it: new, changed, or unreported for the interval. */
  due: boolean;
  /** Occurrences since the run began (changes of key included). */
  count: number;
  /** When the run began. */
  since: number;
  /** Whether the key is the one seen before (a report of it again, after the interval). */
  again: boolean;
};

/** A run of occurrences that may change as it goes on (a failure's message, a refusal's count). */
export class Repeats {
  private current: { key: string; since: number; reportedAt: number; count: number } | undefined;

  constructor(
    private readonly now: () => number = Date.now,
    readonly intervalMs = REPEAT_LOG_INTERVAL_MS,
  ) {}

  /** Count one more occurrence of `key`. */
  seen(key: string): Occurrence {
    const now = this.now();
    const current = this.current;
    if (current && current.key === key && now - current.reportedAt < this.intervalMs) {
      current.count += 1;
      return { due: false, count: current.count, since: current.since, again: true };
    }
    const next = { key, since: current?.since ?? now, reportedAt: now, count: (current?.count ?? 0) + 1 };
    this.current = next;
    return { due: true, count: next.count, since: next.since, again: current?.key === key };
  }

  /** The run is over: its count and start, once (undefined when none was going on). */
  ended(): { count: number; since: number } | undefined {
    const current = this.current;
    this.current = undefined;
    return current && { count: current.count, since: current.since };
  }
}

export class StepFailures {
  private readonly repeats: Repeats;

  constructor(
    private readonly logger: LoggerService,
    now: () => number = Date.now,
    intervalMs = REPEAT_LOG_INTERVAL_MS,
  ) {
    this.repeats = new Repeats(now, intervalMs);
  }

  /**
   * A step failed: the error to hand to the scheduler (which logs it and records the run as
   * failed) when this failure is new, changed, or unreported for the interval; undefined for a
   * repeat within it (only a debug line: the run counts as completed).
   */
  failed(error: unknown): Error | undefined {
    const message = error instanceof Error ? error.message : String(error);
    const { due, count, since, again } = this.repeats.seen(failureKind(error, message));
    if (!due) {
      this.logger.debug(`choreo-ingest: sync failed again (${count} times): ${message}`);
      return undefined;
    }
    const text = message.startsWith('choreo-ingest') ? message : `choreo-ingest: sync failed: ${message}`;
    if (again) {
      return new Error(
        `${text} (${count} failed steps since ${new Date(since).toISOString()}; repeats are ` +
          `reported every ${this.repeats.intervalMs / 60_000} min)`,
        { cause: error },
      );
    }
    return new Error(text, { cause: error });
  }

  /** A step went through: say so once after failures. */
  succeeded(): void {
    const ended = this.repeats.ended();
    if (ended) {
      const { count, since } = ended;
      this.logger.info(
        `choreo-ingest: sync recovered after ${count} failed step${count === 1 ? '' : 's'} ` +
          `(failing since ${new Date(since).toISOString()})`,
      );
    }
  }
}

/**
 * What tells one failure from another: a feed's answer by its route, status and whether it was
 * cut off in transit, not by its text, which quotes the answer's body (a gateway's error page
 * with a request id or a time in it differs at every step); anything else by its message.
 */
function failureKind(error: unknown, message: string): string {
  if (error instanceof FeedError) {
    const how = `${error.inTransit ? ' cut off' : ''}${error.timedOut ? ' timed out' : ''}`;
    return `feed ${error.route} ${error.status ?? 'unanswered'}${how}`;
  }
  return message;
}
