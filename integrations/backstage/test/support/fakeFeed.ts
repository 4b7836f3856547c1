/**
 * A small in-process stand-in for `choreo-ingest serve`'s feed routes (`/changes`, `/entities`,
 * `/entities/batch`), for the tests that need a body the real one would never serve, a hook
 * as a request arrives (to move a test's clock, or abort a step, while a page is read), or a
 * body limit (`maxBodyBytes`) of their choosing.
 * Components in the `default` namespace only.
 */
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Body = Record<string, any>;

type Change = { seq: number; at: string; op: 'upsert' | 'delete'; ref: string; provider: string };

export class FakeFeed {
  storeId = 'store-a';
  /** The bodies it serves, by ref (`component:default/<name>`). */
  readonly entities = new Map<string, Body>();
  readonly changes: Change[] = [];
  seq = 0;
  /** Called as each request arrives, before it is answered (with the route, such as `/changes`). */
  onRequest: ((route: string) => void) | undefined;
  /** The `sinceAt` of each `/changes` request (null: none sent). */
  readonly sinceAts: (string | null)[] = [];
  /** `/changes` answers 410 (the position was pruned). */
  answer410 = false;
  /** A larger request body is refused with serve's 413 (`serve.maxBodyBytes`). */
  maxBodyBytes = Infinity;
  /** Each `/entities/batch` request: how many refs it asked for, and the status answered. */
  readonly batches: { refs: number; status: number }[] = [];
  /** Every answer waits this long first (a slow serve). */
  delayMs = 0;
  /**
   * A `/changes` page that does not reach the newest change holds this many fewer than asked
   * (serve ends a page before a delete whose case twin's upsert comes next).
   */
  changesShortBy = 0;
  /** Answered once, in place of the page, to the next `/entities` request with a cursor. */
  cursorAnswer: { status: number; document: unknown } | undefined;
  /** The `catalogComplete` of its answers (undefined: left out, as a serve before it). */
  catalogComplete: boolean | undefined = undefined;
  url = '';
  private server: Server | undefined;

  /** A valid Component body. */
  static body(name: string): Body {
    return {
      apiVersion: 'backstage.io/v1alpha1',
      kind: 'Component',
      metadata: { name, namespace: 'default' },
      spec: { type: 'service', lifecycle: 'production', owner: 'group:default/team' },
    };
  }

  /** A body the catalog's envelope validation refuses (no apiVersion). */
  static invalidBody(name: string): Body {
    const { apiVersion: _dropped, ...rest } = FakeFeed.body(name);
    return rest;
  }

  upsert(name: string, body: Body = FakeFeed.body(name)): void {
    const ref = `component:default/${name}`;
    this.entities.set(ref, body);
    this.changes.push({ seq: ++this.seq, at: this.madeAt(), op: 'upsert', ref, provider: 'fake' });
  }

  /**
   * A change as a serve this module does not know might log it: its `op` and `ref` as given
   * (anything, or left out), the entity held as it is.
   */
  oddChange(fields: { op?: unknown; ref?: unknown }): void {
    const change = { seq: ++this.seq, at: this.madeAt(), provider: 'fake', ...fields };
    this.changes.push(change as Change);
  }

  remove(name: string): void {
    const ref = `component:default/${name}`;
    this.entities.delete(ref);
    this.changes.push({ seq: ++this.seq, at: this.madeAt(), op: 'delete', ref, provider: 'fake' });
  }

  /**
   * Put the state back as a copy made when `seq` was the newest change held it (a rollback to a
   * backup): later changes are undone, and the next ones get their seqs again, as serve's do.
   */
  putBack(seq: number, entities: Map<string, Body>): void {
    this.changes.splice(this.changes.findIndex(change => change.seq > seq));
    this.seq = seq;
    this.entities.clear();
    for (const [ref, body] of entities) {
      this.entities.set(ref, body);
    }
  }

  /** Each change's own time, as serve's `at` (whole seconds apart). */
  private madeAt(): string {
    this.made += 1;
    return new Date(Date.parse('2026-12-01T00:00:00Z') + this.made * 1000).toISOString();
  }

  private made = 0;

  async start(): Promise<void> {
    this.server = createServer(async (request, response) => {
      const chunks: Buffer[] = [];
      for await (const chunk of request) {
        chunks.push(chunk as Buffer);
      }
      const url = new URL(request.url ?? '/', 'http://feed');
      this.onRequest?.(url.pathname);
      if (this.delayMs) {
        // Unref'd: a delay that outlives its test (the client aborted) must not hold jest's worker.
        await new Promise(resolve => setTimeout(resolve, this.delayMs).unref());
      }
      const send = (status: number, document: unknown) => {
        response.writeHead(status, { 'Content-Type': 'application/json' });
        response.end(JSON.stringify(document));
      };
      if (url.pathname === '/changes') {
        if (this.answer410) {
          return send(410, { error: 'the position was pruned' });
        }
        const since = Number(url.searchParams.get('since'));
        const limit = Number(url.searchParams.get('limit'));
        const sinceAt = url.searchParams.get('sinceAt');
        this.sinceAts.push(sinceAt);
        const followed = this.changes.find(change => change.seq === since);
        if (since > this.seq || (sinceAt && followed && followed.at !== sinceAt)) {
          return send(410, { error: `change ${since} is not the one followed` });
        }
        const after = this.changes.filter(change => change.seq > since);
        return send(200, {
          storeId: this.storeId,
          oldestSeq: 1,
          newestSeq: this.seq,
          catalogComplete: this.catalogComplete,
          changes: after.slice(0, after.length > limit ? limit - this.changesShortBy : limit),
        });
      }
      if (url.pathname === '/entities') {
        const refused = url.searchParams.has('cursor') ? this.cursorAnswer : undefined;
        if (refused) {
          this.cursorAnswer = undefined;
          return send(refused.status, refused.document);
        }
        const limit = Number(url.searchParams.get('limit'));
        const start = Number(url.searchParams.get('cursor') ?? 0);
        const refs = [...this.entities.keys()].sort();
        return send(200, {
          storeId: this.storeId,
          newestSeq: this.seq,
          newestAt: this.changes.find(change => change.seq === this.seq)?.at ?? null,
          catalogComplete: this.catalogComplete,
          entities: refs.slice(start, start + limit).map(ref => this.entities.get(ref)),
          nextCursor: start + limit < refs.length ? String(start + limit) : null,
        });
      }
      if (url.pathname === '/entities/batch') {
        const body = Buffer.concat(chunks);
        const { refs } = JSON.parse(body.toString()) as { refs: string[] };
        if (body.length > this.maxBodyBytes) {
          this.batches.push({ refs: refs.length, status: 413 });
          const limit = this.maxBodyBytes.toLocaleString('en-US');
          const size = body.length.toLocaleString('en-US');
          return send(413, { error: `request body of ${size} bytes; at most ${limit}` });
        }
        this.batches.push({ refs: refs.length, status: 200 });
        return send(200, {
          storeId: this.storeId,
          entities: refs.filter(ref => this.entities.has(ref)).map(ref => this.entities.get(ref)),
          missing: refs.filter(ref => !this.entities.has(ref)),
        });
      }
      send(404, { error: 'no such route' });
    });
    await new Promise<void>(resolve => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  stop(): Promise<void> {
    const server = this.server;
    if (!server) {
      return Promise.resolve();
    }
    return new Promise(resolve => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }
}
