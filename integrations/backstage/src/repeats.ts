/**
 * Failures that repeat at every step, logged once: again only when they change, or once
 * `REPEAT_LOG_INTERVAL_MS` has passed, and a line when they end.
 */
import type { LoggerService } from '@backstage/backend-plugin-api';

/** How often a failure or a refusal that goes on unchanged is reported again. */
export const REPEAT_LOG_INTERVAL_MS = 10 * 60 * 1000;

export class StepFailures {
  private current: { message: string; since: number; reportedAt: number; count: number } | undefined;

  constructor(
    private readonly logger: LoggerService,
    private readonly now: () => number = Date.now,
    private readonly intervalMs = REPEAT_LOG_INTERVAL_MS,
  ) {}

  /**
   * A step failed: the error to hand to the scheduler (which logs it and records the run as
   * failed) when this failure is new, changed, or unreported for the interval; undefined for a
   * repeat within it (only a debug line: the run counts as completed).
   */
  failed(error: unknown): Error | undefined {
    const message = error instanceof Error ? error.message : String(error);
    const now = this.now();
    const current = this.current;
    if (current && current.message === message && now - current.reportedAt < this.intervalMs) {
      current.count += 1;
      this.logger.debug(`choreo-ingest: sync failed again (${current.count} times): ${message}`);
      return undefined;
    }
    const text = message.startsWith('choreo-ingest') ? message : `choreo-ingest: sync failed: ${message}`;
    if (current && current.message === message) {
      current.count += 1;
      current.reportedAt = now;
      const since = new Date(current.since).toISOString();
      return new Error(
        `${text} (${current.count} failed steps since ${since}; repeats are reported every ` +
          `${this.intervalMs / 60_000} min)`,
        { cause: error },
      );
    }
    this.current = { message, since: current?.since ?? now, reportedAt: now, count: (current?.count ?? 0) + 1 };
    return new Error(text, { cause: error });
  }

  /** A step went through: say so once after failures. */
  succeeded(): void {
    if (this.current) {
      const { count, since } = this.current;
      this.current = undefined;
      this.logger.info(
        `choreo-ingest: sync recovered after ${count} failed step${count === 1 ? '' : 's'} ` +
          `(failing since ${new Date(since).toISOString()})`,
      );
    }
  }
}
