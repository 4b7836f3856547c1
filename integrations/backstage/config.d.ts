import { SchedulerServiceTaskScheduleDefinitionConfig } from '@backstage/backend-plugin-api';

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
        /** How often to sync (default: every 30 s, 15 min timeout). */
        schedule?: SchedulerServiceTaskScheduleDefinitionConfig;
        /** Changes per /changes page and entities per /entities page (default 500). */
        batchSize?: number;
        /** The most a resync may remove, as a share of the provider's entities (default 0.2). */
        maxRemovalRatio?: number;
      };
    };
  };
}
