/**
 * The feed client against a server that fails after the status line: a body that stops
 * coming (the request timeout) or a connection dropped half-way through the body. Both fail
 * as a FeedError with the route and the status, never the token.
 */
import { type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ChoreoIngestEntityProvider, FeedClient, FeedError } from '../src';
import { sqlite } from './support/db';
import { TestLogger } from './support/logger';

const TOKEN = 'client-token-never-in-errors';
const PARTIAL = '{"storeId": "s1", "oldestSeq": 1, "newestSeq": 9, "changes": [';

let server: Server;
let baseUrl: string;
const open = new Set<ServerResponse>();

beforeAll(async () => {
  server = createServer((request, response) => {
    open.add(response);
    response.on('close', () => open.delete(response));
    if (request.url?.startsWith('/changes?since=7&')) {
      // serve with its token set, asked without one (or with another).
      response.writeHead(401, { 'Content-Type': 'application/json' });
      response.end('{"error": "a valid bearer token is required"}');
      return;
    }
    if (request.url?.startsWith('/changes?since=3&')) {
      // A gateway before serve that quotes the request's headers, on many lines.
      response.writeHead(502, { 'Content-Type': 'text/plain' });
      response.end(`upstream failed\nrequest headers:\nAuthorization: ${request.headers.authorization}\n`);
      return;
    }
    if (request.url?.startsWith('/changes?since=4&')) {
      response.writeHead(401, { 'Content-Type': 'application/json' });
      const quoted = `token not accepted: ${request.headers.authorization}\r\n${'x'.repeat(5000)}`;
      response.end(JSON.stringify({ error: quoted }));
      return;
    }
    if (request.url?.startsWith('/changes?since=8&') || request.url === '/entities/batch') {
      // An ingress that sends http to https, or to its canonical host (or path: relative).
      response.writeHead(request.method === 'POST' ? 302 : 301, {
        Location: request.method === 'POST' ? `/api${request.url}` : `http://127.0.0.2:1${request.url}`,
      });
      response.end();
      return;
    }
    if (request.url?.startsWith('/changes?since=6&')) {
      return; // up, but no answer at all: the request timeout ends it
    }
    if (request.url?.startsWith('/changes?since=5&')) {
      // Whole, but `changes` is not a list (a proxy's rewrite, another service at the URL).
      response.writeHead(200, { 'Content-Type': 'application/json' });
      response.end('{"storeId": "s1", "oldestSeq": 1, "newestSeq": 9, "changes": null}');
      return;
    }
    response.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': '100000' });
    response.write(PARTIAL);
    if (request.url?.startsWith('/changes?since=1&')) {
      // Drop the connection half-way through the body.
      setTimeout(() => response.socket?.destroy(), 50);
    }
    // Otherwise the rest of the body never comes.
  });
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  for (const response of open) {
    response.socket?.destroy();
  }
  await new Promise(resolve => server.close(resolve));
});

async function failure(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (error: unknown) => error,
  );
}

test('a body that stops coming fails as a FeedError with the route and the status', async () => {
  const client = new FeedClient({ baseUrl, token: TOKEN, timeoutMs: 300 });

  const error = await failure(client.changes(0, 10));

  expect(error).toBeInstanceOf(FeedError);
  expect((error as FeedError).route).toBe('GET /changes');
  expect((error as FeedError).status).toBe(200);
  expect((error as Error).message).toBe(
    'choreo-ingest GET /changes answered HTTP 200: the answer did not come whole from ' +
      `${baseUrl} within 0.3 s (requestTimeout): serve is slow or its answer large; raise ` +
      'requestTimeout if it goes on',
  );
  expect((error as FeedError).timedOut).toBe(true);
});

test('a serve that answers nothing in time is said to be slow, not unreachable', async () => {
  const client = new FeedClient({ baseUrl, token: TOKEN, timeoutMs: 300 });

  const error = await failure(client.changes(6, 10));

  expect(error).toBeInstanceOf(FeedError);
  expect((error as FeedError).status).toBeUndefined();
  expect((error as FeedError).timedOut).toBe(true);
  expect((error as Error).message).toBe(
    `choreo-ingest GET /changes failed: no answer from ${baseUrl} within 0.3 s (requestTimeout): ` +
      'serve is slow or its answer large; raise requestTimeout if it goes on',
  );
});

test('a connection dropped in the body fails as a FeedError with route and status', async () => {
  const client = new FeedClient({ baseUrl, token: TOKEN, timeoutMs: 10_000 });

  const error = await failure(client.changes(1, 10));

  expect(error).toBeInstanceOf(FeedError);
  expect((error as FeedError).route).toBe('GET /changes');
  expect((error as FeedError).status).toBe(200);
  expect((error as Error).message).toMatch(/answered HTTP 200: reading the answer failed/);
  expect((error as Error).message).not.toContain(TOKEN);
});

test('an answer whose field is of the wrong type fails naming the route and the field', async () => {
  const client = new FeedClient({ baseUrl, token: TOKEN, timeoutMs: 10_000 });

  const error = await failure(client.changes(5, 10));

  expect(error).toBeInstanceOf(FeedError);
  expect((error as Error).message).toBe(
    'choreo-ingest GET /changes answered HTTP 200: the answer\'s "changes" is not an array',
  );
});

test('a redirect fails naming where it points, and is not followed with or without the token', async () => {
  const client = new FeedClient({ baseUrl, token: TOKEN, timeoutMs: 10_000 });

  const read = await failure(client.changes(8, 10));
  const batch = await failure(client.entitiesBatch(['component:default/a']));

  expect(read).toBeInstanceOf(FeedError);
  expect((read as FeedError).status).toBe(301);
  expect(String(read)).toMatch(
    /GET \/changes answered HTTP 301: serve's address redirects to http:\/\/127\.0\.0\.2:1\/changes\?since=8&limit=10: set baseUrl to the address serve answers at$/,
  );
  expect((batch as FeedError).status).toBe(302);
  expect(String(batch)).toMatch(
    `POST /entities/batch answered HTTP 302: serve's address redirects to ${baseUrl}/api/entities/batch:`,
  );
});

test('a 401 to a client without a token says it sent none', async () => {
  const without = await failure(new FeedClient({ baseUrl }).changes(7, 10));
  const wrong = await failure(new FeedClient({ baseUrl, token: TOKEN }).changes(7, 10));

  expect(String(without)).toMatch(
    /GET \/changes answered HTTP 401: a valid bearer token is required \(the module sent no token: its config has none\)$/,
  );
  expect(String(wrong)).toMatch(/HTTP 401: a valid bearer token is required$/);
  expect(String(wrong)).not.toContain(TOKEN);
});

test('a token fetch cannot send, or a baseUrl with credentials, is refused up front, unshown', async () => {
  const database = sqlite();
  try {
    const make = (options: { baseUrl?: string; token?: string }) => () =>
      new ChoreoIngestEntityProvider({
        baseUrl,
        logger: new TestLogger(),
        database,
        configPath: 'catalog.providers.choreoIngest',
        ...options,
      });
    const refusals: Array<[{ baseUrl?: string; token?: string }, RegExp]> = [
      ...['s3cr3t-line-1\ns3cr3t-line-2', 's3cr3t\0nul', 's3cr3t-\u20acuro'].map(
        token =>
          [
            { token },
            /^choreo-ingest: catalog\.providers\.choreoIngest\.token holds a line break, a NUL or a character beyond Latin-1 inside it \(not shown\); a bearer token is one line$/,
          ] as [{ token: string }, RegExp],
      ),
      [
        { baseUrl: 'http://admin:s3cr3t-pass@127.0.0.1:1' },
        /^choreo-ingest: catalog\.providers\.choreoIngest\.baseUrl must not hold credentials \(user:password@\); set the token instead$/,
      ],
      [{ baseUrl: 'ftp://127.0.0.1:1' }, /baseUrl must be an http:\/\/ or https:\/\/ URL, not ftp:$/],
      [{ baseUrl: 'choreo-ingest:8080' }, /baseUrl must be an http:\/\/ or https:\/\/ URL/],
      [{ baseUrl: '127.0.0.1:8080/x' }, /baseUrl is not a URL \(expected http:\/\/host:port/],
    ];
    for (const [options, message] of refusals) {
      expect(make(options)).toThrow(message);
    }
    // A token file's line breaks around the token are no part of it: trimmed, as serve trims.
    expect(make({ token: 'one-line-token\n' })).not.toThrow();
    expect(make({ token: '\none-line-token\n' })).not.toThrow();
  } finally {
    await database.destroy();
  }
});

test.each([
  ['tok-line-1\ntok-line-2'],
  ['\ntok-line-1\n'], // fetch trims the header's value, not the token: it quotes it trimmed
])('an error fetch throws before sending never shows the token (%j)', async token => {
  // Without the provider's check up front: fetch quotes the header it refuses.
  const client = new FeedClient({ baseUrl, token });

  const error = await failure(client.changes(1, 10));

  expect(error).toBeInstanceOf(FeedError);
  expect(String(error)).toMatch(/GET \/changes failed: http:\/\/127\.0\.0\.1:\d+ unreachable \(.*\*\*\*/s);
  expect(String(error)).not.toContain('tok-line');
});

test.each([
  [3, /^FeedError: choreo-ingest GET \/changes answered HTTP 502: upstream failed request headers: Authorization: Bearer \*\*\*$/],
  [4, /^FeedError: choreo-ingest GET \/changes answered HTTP 401: token not accepted: Bearer \*\*\* x{269}…$/],
])('an error answer that quotes the token is shown on one line, without it (since=%d)', async (since, shown) => {
  const client = new FeedClient({ baseUrl, token: TOKEN });

  const error = await failure(client.changes(since, 10));

  expect(error).toBeInstanceOf(FeedError);
  expect(String(error)).toMatch(shown);
  expect(String(error)).not.toContain(TOKEN);
});

test('the provider sends its token trimmed, as serve reads its token file', async () => {
  const database = sqlite();
  try {
    const provider = new ChoreoIngestEntityProvider({
      baseUrl,
      token: '\nclient-token-never-in-errors\n',
      logger: new TestLogger(),
      database,
    });
    const client = (provider as unknown as { client: FeedClient }).client;
    // The request is sent, and answered (401 for `since=7`): untrimmed, the token's leading
    // line break would be inside the header, which fetch refuses (`unreachable`).
    const answer = await failure(client.changes(7, 10));
    expect(String(answer)).toMatch(/HTTP 401: a valid bearer token is required$/);
  } finally {
    await database.destroy();
  }
});
