/**
 * What every test of the module inside Backstage's real catalog backend starts with: the
 * catalog plugin on `knex`, a scheduler that runs a task only when triggered, and the
 * module's provider config pointed at a `choreo-ingest serve`. The module itself, and whatever
 * else a test adds, the test puts beside these.
 */
import {
  type LoggerService,
  coreServices,
  createServiceFactory,
} from '@backstage/backend-plugin-api';
import { mockServices } from '@backstage/backend-test-utils';
import catalogPlugin from '@backstage/plugin-catalog-backend';
import type { JsonObject } from '@backstage/types';
import type { Knex } from 'knex';
import { SERVE_TOKEN } from './choreo';

export function catalogFeatures(options: {
  knex: Knex;
  scheduler: ReturnType<typeof mockServices.scheduler>;
  serveUrl: string;
  /** Merged over the catalog config (`processingInterval` 1 s, the module's provider). */
  catalog?: JsonObject;
  /** The backend's root logger, to read what the catalog logs. */
  logger?: LoggerService;
}) {
  const { knex, scheduler, serveUrl, catalog, logger } = options;
  return [
    catalogPlugin,
    createServiceFactory({ service: coreServices.scheduler, deps: {}, factory: () => scheduler }),
    ...(logger
      ? [createServiceFactory({ service: coreServices.rootLogger, deps: {}, factory: () => logger })]
      : []),
    mockServices.database.factory({ knex }),
    mockServices.rootConfig.factory({
      data: {
        catalog: {
          processingInterval: { seconds: 1 },
          providers: { choreoIngest: { baseUrl: serveUrl, token: SERVE_TOKEN } },
          ...catalog,
        },
      },
    }),
  ];
}
