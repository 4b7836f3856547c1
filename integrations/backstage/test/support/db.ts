/** Knex on SQLite (better-sqlite3), as the catalog's database in tests. */
import knexFactory, { type Knex } from 'knex';

/**
 * `foreignKeys`: enforce foreign keys, as Backstage's own SQLite connector does (the catalog's
 * `refresh_state_references` rows then go with the entity they point at).
 */
export function sqlite(filename = ':memory:', options: { foreignKeys?: boolean } = {}): Knex {
  return knexFactory({
    client: 'better-sqlite3',
    connection: { filename },
    useNullAsDefault: true,
    ...(options.foreignKeys
      ? {
          pool: {
            afterCreate(
              connection: { pragma(source: string): unknown },
              done: (error: Error | null, connection: unknown) => void,
            ) {
              connection.pragma('foreign_keys = ON');
              done(null, connection);
            },
          },
        }
      : {}),
  });
}
