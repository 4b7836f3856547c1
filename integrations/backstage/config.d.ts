import { HumanDuration } from '@backstage/types';

export interface Config {
  catalog?: {
    providers?: {
      /** The choreo-ingest module: follows `choreo-ingest serve`'s change feed. */
      choreoIngest?: {
        /** choreo-ingest serve's base URL, such as `http://choreo-ingest:8080`. */
        baseUrl: string;
        /**
         * Its bearer token (choreo-ingest's `serve.auth.tokenFile`).
         * @visibility secret
         */
        token?: string;
        /**
         * How often to sync (default: every 30 s, 15 min timeout, 15 s initial delay). A step
         * stops between pages at 80% of the timeout; the next one resumes where it stopped. The
         * scope is always `global` (one step at a time across replicas), whatever is given here.
         */
        schedule?: {
          /** Default 30 s: a duration (`{ seconds: 30 }`, `PT30S`, `30s`) or `{ cron: '...' }`. */
          frequency?: { cron: string } | string | HumanDuration | { trigger: 'manual' };
          /** Default 15 min. */
          timeout?: string | HumanDuration;
          /** Default 15 s. */
          initialDelay?: string | HumanDuration;
          /** Ignored: always `global`. */
          scope?: 'global' | 'local';
        };
        /**
         * Changes per /changes page, at most 10,000, and entities per /entities page, capped
         * at 1,000 (default 500).
         */
        batchSize?: number;
        /** The most a resync may remove, as a share of the provider's entities (default 0.2). */
        maxRemovalRatio?: number;
        /**
         * The time from one completed resync (the whole catalog again, as deltas) to the next:
         * an ISO duration (`P1D`), a string such as `12h`, or a duration object such as
         * `{ hours: 12 }` (default one day).
         */
        resyncInterval?: string | HumanDuration;
        /**
         * How long one request to serve may take, its answer read whole: a duration as for
         * `resyncInterval` (default 60 s). A step ends sooner when the schedule aborts it.
         */
        requestTimeout?: string | HumanDuration;
      };
    };
  };
}
