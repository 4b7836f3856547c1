/**
 * A throwaway PostgreSQL server for the module's PostgreSQL tests, as tests/pg_support.py makes
 * one for the Python tests: the server's own tools (`initdb`, `pg_ctl`: on PATH, else in
 * `/usr/lib/postgresql/<version>/bin`, where Debian's `postgresql` puts them), a cluster in a
 * directory of its own under /tmp, on a free port of 127.0.0.1, trust authentication, stopped
 * and removed afterwards. PostgreSQL refuses to run as root: as root (CI), every server command
 * runs through `runuser -u postgres --` on directories that user owns.
 *
 * Where no server can be had, `pgUnavailable` says why: the tests skip with it, except under CI
 * (`CI=true`), where `describePg` fails them instead (CI must run them).
 */
import { execFileSync } from 'node:child_process';
import { chownSync, chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import { freePort } from './choreo';

const SERVER_USER = 'postgres';
const DEBIAN_BIN = '/usr/lib/postgresql';
const START_TIMEOUT_S = 60;

/** The directory holding `initdb` and `pg_ctl`, or undefined. */
export function findServerTools(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter).filter(Boolean)) {
    if (existsSync(path.join(dir, 'initdb')) && existsSync(path.join(dir, 'pg_ctl'))) {
      return dir;
    }
  }
  if (!existsSync(DEBIAN_BIN)) {
    return undefined;
  }
  const versions = readdirSync(DEBIAN_BIN)
    .filter(name => /^\d+$/.test(name))
    .sort((a, b) => Number(b) - Number(a));
  for (const version of versions) {
    const dir = path.join(DEBIAN_BIN, version, 'bin');
    if (existsSync(path.join(dir, 'initdb')) && existsSync(path.join(dir, 'pg_ctl'))) {
      return dir;
    }
  }
  return undefined;
}

/** The user to run the server as when this process is root: its uid and gid, or a reason. */
function serverUser(): { uid: number; gid: number } | string {
  try {
    const uid = Number(execFileSync('id', ['-u', SERVER_USER], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', SERVER_USER], { encoding: 'utf8' }).trim());
    return { uid, gid };
  } catch {
    return `PostgreSQL refuses to run as root and there is no '${SERVER_USER}' user to run it as`;
  }
}

const isRoot = process.getuid?.() === 0;

/** Why no server can be started here, or undefined when one can. */
export const pgUnavailable: string | undefined = (() => {
  if (!findServerTools()) {
    return (
      'no PostgreSQL server: `initdb` is neither on PATH nor in /usr/lib/postgresql/*/bin ' +
      '(install the OS package `postgresql`)'
    );
  }
  if (isRoot) {
    const user = serverUser();
    return typeof user === 'string' ? user : undefined;
  }
  return undefined;
})();

const underCi = ['true', '1'].includes((process.env.CI ?? '').toLowerCase());

/**
 * `describe` for the PostgreSQL tests: skipped where no server can be had, except under CI, where
 * the block fails naming the reason.
 */
export function describePg(name: string, body: () => void): void {
  if (pgUnavailable === undefined) {
    describe(name, body);
  } else if (underCi) {
    describe(name, () => {
      test('CI must run the PostgreSQL tests', () => {
        throw new Error(`CI must run the PostgreSQL tests: ${pgUnavailable}`);
      });
    });
  } else {
    describe.skip(`${name} (skipped: ${pgUnavailable})`, body);
  }
}

export type PgCluster = {
  port: number;
  /** A Knex client of a new, empty database (destroyed by `stop`). */
  freshDatabase(): Promise<Knex>;
  /** Another Knex client of the database `database` holds (destroyed by `stop`). */
  connect(database: Knex): Knex;
  stop(): Promise<void>;
};

function run(bin: string, args: string[], timeoutS = START_TIMEOUT_S): void {
  const [command, prefix] = isRoot
    ? ['runuser', ['-u', SERVER_USER, '--', bin]]
    : [bin, [] as string[]];
  execFileSync(command, [...prefix, ...args], {
    cwd: '/',
    env: { ...process.env, LC_ALL: 'C' },
    stdio: 'pipe',
    timeout: timeoutS * 1000,
  });
}

/** Start a cluster (throws where `pgUnavailable` is set). */
export async function startPg(): Promise<PgCluster> {
  if (pgUnavailable !== undefined) {
    throw new Error(pgUnavailable);
  }
  const bin = findServerTools()!;
  const top = mkdtempSync(path.join('/tmp', `choreo-ingest-backstage-pg-${process.pid}-`));
  const data = path.join(top, 'data');
  const socket = path.join(top, 'socket');
  chmodSync(top, 0o755);
  mkdirSync(socket, { mode: 0o755 });
  if (isRoot) {
    const user = serverUser() as { uid: number; gid: number };
    chownSync(top, user.uid, user.gid);
    chownSync(socket, user.uid, user.gid);
  }
  const clients: Knex[] = [];
  let started = false;
  const stop = async () => {
    await Promise.all(clients.splice(0).map(client => client.destroy()));
    if (started) {
      try {
        run(path.join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', 'stop'], 30);
      } catch {
        // already gone
      }
    }
    rmSync(top, { recursive: true, force: true });
  };
  try {
    run(path.join(bin, 'initdb'), [
      '-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale=C',
    ]);
    let port = 0;
    for (let attempt = 1; ; attempt += 1) {
      port = await freePort();
      const options = `-k ${socket} -c listen_addresses=127.0.0.1 -p ${port} -c fsync=off`;
      try {
        run(path.join(bin, 'pg_ctl'), [
          '-D', data, '-l', path.join(top, 'server.log'), '-w', '-t', String(START_TIMEOUT_S),
          '-o', options, 'start',
        ], START_TIMEOUT_S + 10);
        started = true;
        break;
      } catch (error) {
        if (attempt >= 3) {
          throw error; // a port taken meanwhile is tried again; anything else is a failure
        }
      }
    }
    const client = (database: string): Knex => {
      const made = knexFactory({
        client: 'pg',
        connection: { host: '127.0.0.1', port, user: 'postgres', database },
        pool: { min: 0, max: 5 },
      });
      clients.push(made);
      return made;
    };
    const admin = client('postgres');
    let databases = 0;
    return {
      port,
      async freshDatabase() {
        databases += 1;
        const name = `t${process.pid}_${databases}`;
        await admin.raw(`CREATE DATABASE ${name} TEMPLATE template0 ENCODING 'UTF8'`);
        return client(name);
      },
      connect(database) {
        const { database: name } = database.client.config.connection as { database: string };
        return client(name);
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
