/** Knex on SQLite (better-sqlite3), as the catalog's database in tests. */
import knexFactory, { type Knex } from 'knex';

export function sqlite(filename = ':memory:'): Knex {
  return knexFactory({
    client: 'better-sqlite3',
    connection: { filename },
    useNullAsDefault: true,
  });
}
