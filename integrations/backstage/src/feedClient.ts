/**
 * The HTTP client for choreo-ingest's change feed (`choreo-ingest serve`):
 * `GET /changes`, `POST /entities/batch` and `GET /entities`.
 *
 * Errors name the route and the HTTP status, never the token.
 */

/** An entity body as choreo-ingest serves it (a Backstage entity). */
export type FeedEntity = {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    annotations?: Record<string, string>;
    [key: string]: unknown;
  };
  [key: string]: unknown;
};

export type FeedChange = {
  seq: number;
  at: string;
  op: string;
  ref: string;
  provider: string;
};

export type ChangesPage = {
  storeId: string;
  oldestSeq: number;
  newestSeq: number;
  /**
   * Whether every provider of the state has completed a cycle: until then (a new state's first
   * cycle) an entity it lacks may not have been read yet. A serve before it was sent leaves it
   * out (taken as complete).
   */
  catalogComplete?: boolean;
  changes: FeedChange[];
};

export type EntitiesBatch = {
  storeId: string;
  entities: FeedEntity[];
  missing: string[];
};

export type EntitiesPage = {
  storeId: string;
  newestSeq: number;
  /** When change `newestSeq` was made (a serve before it was sent leaves it out; null: none). */
  newestAt?: string | null;
  /** As `ChangesPage.catalogComplete`. */
  catalogComplete?: boolean;
  entities: FeedEntity[];
  nextCursor: string | null;
};

/** The most refs one `POST /entities/batch` takes. */
export const MAX_BATCH_REFS = 1000;
/** The most entities one `GET /entities` page holds. */
export const MAX_PAGE_ENTITIES = 1000;
/** The most changes one `GET /changes` page holds. */
export const MAX_CHANGES = 10000;

/** A failed feed request: the route, the HTTP status (when there was an answer) and why. */
export class FeedError extends Error {
  readonly status: number | undefined;
  readonly route: string;
  /** Why, without the route and status (serve's `error`, when it answered one). */
  readonly detail: string;
  /** The request failed in transit (no answer, or its body cut off): an abort does that too. */
  readonly inTransit: boolean;
  /** No whole answer came within the request timeout (`requestTimeout`). */
  readonly timedOut: boolean;

  constructor(
    route: string,
    status: number | undefined,
    detail: string,
    options: { inTransit?: boolean; timedOut?: boolean } = {},
  ) {
    super(
      status === undefined
        ? `choreo-ingest ${route} failed: ${detail}`
        : `choreo-ingest ${route} answered HTTP ${status}: ${detail}`,
    );
    this.name = 'FeedError';
    this.route = route;
    this.status = status;
    this.detail = detail;
    this.inTransit = options.inTransit ?? status === undefined;
    this.timedOut = options.timedOut ?? false;
  }
}

/** The feed position can no longer be followed (HTTP 410): copy the catalog again. */
export class FeedGoneError extends FeedError {
  constructor(route: string, detail: string) {
    super(route, 410, detail);
    this.name = 'FeedGoneError';
  }
}

export type FeedClientOptions = {
  baseUrl: string;
  token?: string;
  /** Per request, in milliseconds. */
  timeoutMs?: number;
};

/** How long one request may take, by default (its answer read whole). */
export const DEFAULT_TIMEOUT_MS = 60_000;

export class FeedClient {
  private readonly baseUrl: string;
  private readonly token: string | undefined;
  private readonly timeoutMs: number;

  constructor(options: FeedClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.token = options.token;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /**
   * Up to `limit` changes after seq `since`, oldest first; `sinceAt`, the `at` read of the change
   * at `since`, makes serve check it is still that change. Throws FeedGoneError on 410.
   */
  async changes(
    since: number,
    limit: number,
    sinceAt?: string,
    signal?: AbortSignal,
  ): Promise<ChangesPage> {
    const query = new URLSearchParams({ since: String(since), limit: String(limit) });
    if (sinceAt) {
      query.set('sinceAt', sinceAt);
    }
    const page = await this.request<ChangesPage>('GET /changes', `/changes?${query}`, {}, signal);
    requireFields('GET /changes', page, { storeId: 'string', newestSeq: 'number', changes: 'array' });
    return page;
  }

  /** The bodies of `refs` (at most MAX_BATCH_REFS) and the refs the catalog no longer holds. */
  async entitiesBatch(refs: string[], signal?: AbortSignal): Promise<EntitiesBatch> {
    if (refs.length > MAX_BATCH_REFS) {
      throw new Error(`at most ${MAX_BATCH_REFS} refs per POST /entities/batch, got ${refs.length}`);
    }
    const batch = await this.request<EntitiesBatch>(
      'POST /entities/batch',
      '/entities/batch',
      { method: 'POST', body: JSON.stringify({ refs }) },
      signal,
    );
    requireFields('POST /entities/batch', batch, {
      storeId: 'string',
      entities: 'array',
      missing: 'array',
    });
    return batch;
  }

  /**
   * The bodies of `refs` (at most MAX_BATCH_REFS) in as many `POST /entities/batch` as serve
   * takes: their answers, one at a time, in the order of `refs`, each asked for once the one
   * before it is taken (so a caller holds one answer's bodies at a time: serve refuses an answer
   * of more than 16 MiB of text with a 413). A batch serve refuses as too large (413: its
   * `serve.maxBodyBytes`, or that answer limit) is asked for again in halves, each halved again
   * while refused; one ref still refused is a FeedError (413) that names it.
   */
  async *entitiesBatches(refs: string[], signal?: AbortSignal): AsyncGenerator<EntitiesBatch> {
    let batch: EntitiesBatch | undefined;
    try {
      batch = await this.entitiesBatch(refs, signal);
    } catch (error) {
      if (!(error instanceof FeedError) || error.status !== 413 || refs.length === 0) {
        throw error;
      }
      if (refs.length === 1) {
        const why = `the one ref ${refs[0]}: serve.maxBodyBytes is below a batch of one`;
        throw new FeedError(error.route, 413, `${error.detail} (${why})`);
      }
    }
    if (batch) {
      yield batch;
      return;
    }
    const half = Math.ceil(refs.length / 2);
    yield* this.entitiesBatches(refs.slice(0, half), signal);
    yield* this.entitiesBatches(refs.slice(half), signal);
  }

  /** One page of a walk over the whole catalog; `cursor` undefined starts a walk. */
  async entitiesPage(
    cursor: string | undefined,
    limit: number,
    signal?: AbortSignal,
  ): Promise<EntitiesPage> {
    const query = new URLSearchParams({ limit: String(limit) });
    if (cursor !== undefined) {
      query.set('cursor', cursor);
    }
    const page = await this.request<EntitiesPage>('GET /entities', `/entities?${query}`, {}, signal);
    requireFields('GET /entities', page, {
      storeId: 'string',
      newestSeq: 'number',
      entities: 'array',
      nextCursor: 'string or null',
    });
    return page;
  }

  /**
   * One request, read whole within the timeout. `signal` (the scheduler's) ends it sooner: an
   * aborted step does not wait for a slow answer (the backend stopping, the task's timeout).
   */
  private async request<T>(
    route: string,
    path: string,
    init: RequestInit = {},
    signal?: AbortSignal,
  ): Promise<T> {
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (init.body !== undefined) {
      headers['Content-Type'] = 'application/json';
    }
    if (this.token) {
      headers.Authorization = `Bearer ${this.token}`;
    }
    let response: Response;
    try {
      response = await fetch(`${this.baseUrl}${path}`, {
        ...init,
        headers,
        // Followed, a redirect to another origin drops the token (the Fetch standard) and a
        // 301/302 turns a POST into a GET: the step would fail on a 401 that blames the token.
        redirect: 'manual',
        signal: signal
          ? AbortSignal.any([AbortSignal.timeout(this.timeoutMs), signal])
          : AbortSignal.timeout(this.timeoutMs),
      });
    } catch (error) {
      if (timedOut(error)) {
        throw new FeedError(route, undefined, this.timeoutSaid('no answer'), { timedOut: true });
      }
      const why = `${this.baseUrl} unreachable (${describe(error)})`;
      throw new FeedError(route, undefined, this.shown(why));
    }
    let text: string;
    try {
      text = await readCapped(response, MAX_ANSWER_BYTES);
    } catch (error) {
      if (error instanceof AnswerTooLarge) {
        const why =
          `the answer is over ${MAX_ANSWER_BYTES / 2 ** 20} MiB, more than serve sends: ` +
          'is baseUrl the address of choreo-ingest serve?';
        throw new FeedError(route, response.status, why);
      }
      if (timedOut(error)) {
        const why = this.timeoutSaid('the answer did not come whole');
        throw new FeedError(route, response.status, why, { inTransit: true, timedOut: true });
      }
      // A dropped connection while the body streams in.
      const why = `reading the answer failed (${describe(error)})`;
      throw new FeedError(route, response.status, this.shown(why), { inTransit: true });
    }
    if (response.status >= 300 && response.status < 400) {
      const location = response.headers.get('location');
      const to = location ? ` to ${this.shown(absolute(location, response.url))}` : '';
      const why = `serve's address redirects${to}: set baseUrl to the address serve answers at`;
      throw new FeedError(route, response.status, why);
    }
    if (!response.ok) {
      // What a gateway before serve answers may quote the request's headers, on many lines.
      let detail = this.shown(errorDetail(text) ?? response.statusText);
      if (response.status === 401 && !this.token) {
        // An unset ${VAR} in app-config drops the key without a word.
        detail += ' (the module sent no token: its config has none)';
      }
      if (response.status === 410) {
        throw new FeedGoneError(route, detail);
      }
      throw new FeedError(route, response.status, detail);
    }
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new FeedError(route, response.status, 'the answer is not JSON');
    }
  }

  /** What a request cut short by its timeout says: serve may be up but slow, not unreachable. */
  private timeoutSaid(what: string): string {
    return (
      `${what} from ${this.shown(this.baseUrl)} within ${this.timeoutMs / 1000} s ` +
      '(requestTimeout): serve is slow or its answer large; raise requestTimeout if it goes on'
    );
  }

  /** `text` as an error shows it: the token masked, on one line, at most DETAIL_CHARS long. */
  private shown(text: string): string {
    let masked = text;
    for (const secret of this.token ? [this.token, this.token.trim()] : []) {
      masked = secret ? masked.split(secret).join('***') : masked;
    }
    const line = masked.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
    return line.length > DETAIL_CHARS ? `${line.slice(0, DETAIL_CHARS)}…` : line;
  }
}

/**
 * The most of one answer read: serve's largest, an `/entities` page, ends after 16 MiB of
 * entity text and one entity more (which the walk read at most 64 MiB of); something else at
 * `baseUrl` could send without end, and the backend would hold it all.
 */
export const MAX_ANSWER_BYTES = 256 * 2 ** 20;

export class AnswerTooLarge extends Error {}

/** The answer's body as text, read up to `limit` bytes (AnswerTooLarge past it). */
export async function readCapped(response: Response, limit: number): Promise<string> {
  const declared = Number(response.headers.get('content-length') ?? Number.NaN);
  if (declared > limit) {
    await response.body?.cancel();
    throw new AnswerTooLarge();
  }
  if (!response.body) {
    return '';
  }
  const reader = response.body.getReader();
  const parts: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      break;
    }
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      throw new AnswerTooLarge();
    }
    parts.push(value);
  }
  return new TextDecoder().decode(Buffer.concat(parts, size)); // a BOM dropped, as text() does
}

/**
 * Whether `error` is the request's own timeout firing (not the step's signal aborting it): a
 * DOMException, which is no `Error` of another realm's (a test runner's sandbox).
 */
function timedOut(error: unknown): boolean {
  return (
    typeof error === 'object' && error !== null && 'name' in error && error.name === 'TimeoutError'
  );
}

/** A redirect's `Location` as an address (it may be relative to the URL asked). */
function absolute(location: string, base: string): string {
  try {
    return new URL(location, base).href;
  } catch {
    return location;
  }
}

/** How much of an error answer's text an error shows. */
const DETAIL_CHARS = 300;

const FIELD_TYPES = {
  string: 'a string',
  number: 'a number',
  array: 'an array',
  'string or null': 'a string or null',
};
type FieldType = keyof typeof FIELD_TYPES;

/** The answer is an object with these fields of these types, else a FeedError naming the field. */
function requireFields(route: string, document: unknown, fields: Record<string, FieldType>): void {
  if (typeof document !== 'object' || document === null) {
    throw new FeedError(route, 200, 'the answer is not a JSON object');
  }
  for (const [field, type] of Object.entries(fields)) {
    if (!(field in document)) {
      throw new FeedError(route, 200, `the answer has no "${field}"`);
    }
    const value = (document as Record<string, unknown>)[field];
    const fits =
      type === 'array'
        ? Array.isArray(value)
        : type === 'string or null'
          ? value === null || typeof value === 'string'
          : typeof value === type;
    if (!fits) {
      throw new FeedError(route, 200, `the answer's "${field}" is not ${FIELD_TYPES[type]}`);
    }
  }
}

/** The `error` of choreo-ingest's `{"error": "..."}` answers, else the start of the body. */
function errorDetail(text: string): string | undefined {
  try {
    const document: unknown = JSON.parse(text);
    if (typeof document === 'object' && document !== null && 'error' in document) {
      return String((document as { error: unknown }).error);
    }
  } catch {
    // not JSON: fall through
  }
  const trimmed = text.trim();
  return trimmed || undefined;
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as Error & { cause?: unknown }).cause;
    return cause instanceof Error ? `${error.message}: ${cause.message}` : error.message;
  }
  return String(error);
}
