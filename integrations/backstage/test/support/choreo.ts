/**
 * A real choreo-ingest for the tests: the v1 simulator (with its control routes, posting
 * OpenChoreo's webhooks to serve) and `choreo-ingest serve` on loopback ports, both started
 * from the Python package in this repository, with one complete cycle ingested before serve
 * starts.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { type Entity, stringifyEntityRef } from '@backstage/catalog-model';

const execFileAsync = promisify(execFile);

/** The repository root, holding the `choreo_ingest` package. */
export const REPO_ROOT = path.resolve(__dirname, '../../../..');
export const PYTHON = process.env.CHOREO_INGEST_PYTHON ?? 'python';
export const SERVE_TOKEN = 'feed-token-for-tests';
const START_TIMEOUT_MS = 30_000;

export type ChoreoOptions = {
  orgs: number;
  projects: number;
  components: number;
  /** `changes` config section (`maxRows`, `retainDays`). */
  changes?: Record<string, number>;
};

export type Choreo = {
  dir: string;
  serveUrl: string;
  simulatorUrl: string;
  /** POST a simulator control route (`add_component`, `delete_component`, ...). */
  control(route: string, params: Record<string, string>): Promise<unknown>;
  /** A serve route with the bearer token. */
  serve(method: string, route: string, body?: unknown): Promise<{ status: number; json: any }>;
  /** The refs `choreo-ingest export` prints, in Backstage's spelling, sorted. */
  exportRefs(): Promise<string[]>;
  /** The entities `choreo-ingest export` prints, by ref in Backstage's spelling. */
  exportEntities(): Promise<Map<string, Entity>>;
  /** The feed's newest seq and storeId. */
  feedHead(): Promise<{ storeId: string; newestSeq: number }>;
  stop(): Promise<void>;
};

export async function freePort(): Promise<number> {
  // Below Linux's ephemeral range (32768-60999): a port the kernel picks for `listen(0)` or for
  // an outgoing connection may be taken by any of those before the process meant to bind it
  // does (seen as "Address already in use" beside a busy simulator); a random one here only by
  // another caller of this function that drew the same number.
  for (let attempt = 0; attempt < 20; attempt += 1) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (await bindable(port)) {
      return port;
    }
  }
  return listenedPort(0);
}

async function bindable(port: number): Promise<boolean> {
  return listenedPort(port).then(
    () => true,
    () => false,
  );
}

function listenedPort(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

/** The environment for the Python processes: none of the caller's choreo-ingest settings. */
function pythonEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('CHOREO_INGEST') && key !== 'OPENCHOREO_TOKEN') {
      env[key] = value;
    }
  }
  const pythonPath = [REPO_ROOT, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter);
  return { ...env, PYTHONPATH: pythonPath, NO_COLOR: '1', ...extra };
}

/** What Python code run with this repository's package prints (`args` are its `sys.argv[1:]`). */
export async function pythonOutput(code: string, ...args: string[]): Promise<string> {
  const { stdout } = await execFileAsync(PYTHON, ['-c', code, ...args], {
    env: pythonEnv(),
    maxBuffer: 64 * 1024 * 1024,
    timeout: 120_000,
  });
  return stdout;
}

export async function cli(dir: string, ...args: string[]): Promise<string> {
  const { stdout } = await execFileAsync(PYTHON, ['-m', 'choreo_ingest', ...args], {
    cwd: dir,
    env: pythonEnv(),
    maxBuffer: 512 * 1024 * 1024,
    timeout: 120_000,
  });
  return stdout;
}

export async function startChoreo(options: ChoreoOptions): Promise<Choreo> {
  const dir = await mkdtemp(path.join(tmpdir(), 'choreo-ingest-backstage-'));
  const children: ChildProcess[] = [];
  const stop = async () => {
    await Promise.all(children.map(child => terminate(child)));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const servePort = await freePort();
    const serveUrl = `http://127.0.0.1:${servePort}`;
    const simulator = spawn(
      PYTHON,
      [
        '-m', 'choreo_ingest', 'simulate', 'serve', '--port', '0',
        '--control', '--api', 'v1', '--orgs', String(options.orgs),
        '--projects', String(options.projects), '--components', String(options.components),
        '--webhook', `${serveUrl}/events/openchoreo`,
      ],
      { cwd: dir, env: pythonEnv(), stdio: ['ignore', 'ignore', 'pipe'] },
    );
    children.push(simulator);
    const apiUrl = await waitForLine(simulator, /simulator at (\S+)/);
    const simulatorUrl = apiUrl.replace(/\/api\/v1\/?$/, '');

    const config = path.join(dir, 'choreo-ingest.yaml');
    const document = {
      openchoreo: {
        baseUrl: simulatorUrl,
        token: 'openchoreo-token',
        incremental: { burstLength: 300, burstInterval: 1, restLength: 600, chunkSize: 100 },
      },
      state: { path: path.join(dir, 'state.db') },
      ...(options.changes ? { changes: options.changes } : {}),
    };
    await writeFile(config, JSON.stringify(document, null, 2)); // JSON is YAML
    await chmod(config, 0o600);
    const run = JSON.parse(await cli(dir, 'run', '--config', config, '--force', '--json'));
    if (!run.providers?.every((p: { cycleCompleted: boolean }) => p.cycleCompleted)) {
      throw new Error(`the first cycle did not complete: ${JSON.stringify(run)}`);
    }

    const serveProcess = spawn(
      PYTHON,
      ['-m', 'choreo_ingest', 'serve', '--config', config, '--listen', `127.0.0.1:${servePort}`],
      {
        cwd: dir,
        env: pythonEnv({ CHOREO_INGEST_SERVE_TOKEN: SERVE_TOKEN }),
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    children.push(serveProcess);
    const serveLog = collect(serveProcess);
    await waitUntil(async () => {
      if (serveProcess.exitCode !== null) {
        throw new Error(`serve exited ${serveProcess.exitCode}: ${serveLog().slice(-2000)}`);
      }
      try {
        return (await fetch(`${serveUrl}/readyz`)).status === 200;
      } catch {
        return false;
      }
    }, 'serve to be ready');

    const exportEntities = async () => {
      const out = await cli(dir, 'export', '--config', config);
      const entities = out
        .split('\n')
        .filter(line => line.trim())
        .map(line => JSON.parse(line) as Entity);
      return new Map(entities.map(entity => [stringifyEntityRef(entity), entity]));
    };
    const serve = async (method: string, route: string, body?: unknown) => {
      const response = await fetch(`${serveUrl}${route}`, {
        method,
        headers: { Authorization: `Bearer ${SERVE_TOKEN}`, 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await response.text();
      return { status: response.status, json: text ? JSON.parse(text) : undefined };
    };
    return {
      dir,
      serveUrl,
      simulatorUrl,
      serve,
      async control(route, params) {
        const query = new URLSearchParams(params);
        const response = await fetch(`${simulatorUrl}/_control/${route}?${query}`, {
          method: 'POST',
        });
        const answer = (await response.json()) as { success: boolean; data?: unknown };
        if (!answer.success) {
          throw new Error(`control ${route} failed: ${JSON.stringify(answer)}`);
        }
        return answer.data;
      },
      async exportRefs() {
        return [...(await exportEntities()).keys()].sort();
      },
      exportEntities,
      async feedHead() {
        const { status, json } = await serve('GET', '/entities?limit=1');
        if (status !== 200) {
          throw new Error(`GET /entities answered ${status}`);
        }
        return { storeId: json.storeId, newestSeq: json.newestSeq };
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** The names of a namespace's projects in the simulator's world, in its order. */
export async function projectsOf(choreo: Choreo, namespace: string): Promise<string[]> {
  const response = await fetch(`${choreo.simulatorUrl}/_control/world`);
  const world = (await response.json()) as {
    data: { projects: Array<{ metadata: { name: string; namespace: string } }> };
  };
  const names = world.data.projects
    .filter(p => p.metadata.namespace === namespace)
    .map(p => p.metadata.name);
  if (!names.length) {
    throw new Error(`no project in ${namespace}`);
  }
  return names;
}

/**
 * Puts component `name` in `project` of `namespace`, with one REST endpoint `endpoint` whose
 * schema is `schema`, as an OpenChoreo change with its event; the feed's newest seq before it
 * (its delete and upsert come after).
 */
export async function putComponentWithEndpoint(
  choreo: Choreo,
  where: { namespace: string; project: string; name: string },
  endpoint: string,
  schema: string,
): Promise<number> {
  const before = (await choreo.feedHead()).newestSeq;
  await choreo.control('add_component', {
    ...where,
    endpoints: JSON.stringify({
      [endpoint]: { type: 'REST', port: 8080, schema: { content: schema } },
    }),
  });
  return before;
}

/** Of `names`, the shortest (then the first by sort): a project whose API names need no hash. */
export function shortest(names: string[]): string {
  return [...names].sort((a, b) => a.length - b.length || a.localeCompare(b))[0];
}

export async function waitUntil(
  check: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs = START_TIMEOUT_MS,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise(resolve => setTimeout(resolve, 100));
  }
}

/**
 * Poll `look` until `done` holds for what it gives, and give that; on a timeout, the error says
 * what it gave last (`shown`).
 */
export async function pollUntil<T>(
  look: () => Promise<T>,
  done: (found: T) => boolean,
  what: string,
  shown: (found: T) => string,
  timeoutMs = START_TIMEOUT_MS,
): Promise<T> {
  let last: T | undefined;
  try {
    await waitUntil(
      async () => {
        last = await look();
        return done(last);
      },
      what,
      timeoutMs,
    );
  } catch (error) {
    const seen = last === undefined ? 'nothing yet' : shown(last);
    throw new Error(`${(error as Error).message}; ${seen}`);
  }
  return last as T;
}

function collect(child: ChildProcess): () => string {
  let text = '';
  child.stderr?.on('data', chunk => {
    text = (text + String(chunk)).slice(-20_000);
  });
  return () => text;
}

function waitForLine(child: ChildProcess, pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`no ${pattern} within ${START_TIMEOUT_MS} ms: ${text}`)), START_TIMEOUT_MS);
    child.stderr?.on('data', chunk => {
      text += String(chunk);
      const match = pattern.exec(text);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.once('exit', code => {
      clearTimeout(timer);
      reject(new Error(`exited ${code} before ${pattern}: ${text}`));
    });
  });
}

async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return;
  }
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}
