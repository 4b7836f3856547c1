/**
 * Turning the feed's entity bodies and refs into what the catalog takes: the managed-by
 * annotations, the location key, and refs in Backstage's own spelling.
 */
import {
  ANNOTATION_LOCATION,
  ANNOTATION_ORIGIN_LOCATION,
  type Entity,
  parseEntityRef,
  stringifyEntityRef,
} from '@backstage/catalog-model';
import type { DeferredEntity } from '@backstage/plugin-catalog-node';
import type { FeedEntity } from './feedClient';

/** The one location key of everything a choreo-ingest instance (its base URL) provides. */
export function locationKeyFor(baseUrl: string): string {
  return `choreo-ingest:${baseUrl.replace(/\/+$/, '')}`;
}

/**
 * The entity as the catalog gets it: choreo-ingest's own managed-by annotations are kept
 * (`provider:<name>`); an entity without them gets the location key as its location.
 */
export function toDeferredEntity(body: FeedEntity, locationKey: string): DeferredEntity {
  if (!isObject(body) || !isObject(body.metadata)) {
    // Not an entity envelope: left as it is, for the validation to refuse.
    return { entity: body as unknown as Entity, locationKey };
  }
  const annotations = { ...(body.metadata.annotations ?? {}) };
  annotations[ANNOTATION_LOCATION] ??= locationKey;
  annotations[ANNOTATION_ORIGIN_LOCATION] ??= annotations[ANNOTATION_LOCATION];
  const entity = { ...body, metadata: { ...body.metadata, annotations } } as Entity;
  return { entity, locationKey };
}

/** Backstage's spelling of an entity's ref. */
export function refOfEntity(entity: Entity): string {
  return stringifyEntityRef(entity);
}

/** Backstage's spelling of a ref as choreo-ingest writes it (`component:ns/name`). */
export function normalizeRef(ref: string): string {
  return stringifyEntityRef(parseEntityRef(ref));
}

/** The key Backstage tells refs apart by: it compares them case-insensitively. */
export function refKey(ref: string): string {
  return ref.toLocaleLowerCase('en-US');
}

/**
 * The entities with one per ref as Backstage tells them apart (case-insensitively): of two that
 * differ only in case, the last one wins (at its place), as the catalog would keep the last.
 */
export function uniqueEntities(items: DeferredEntity[]): DeferredEntity[] {
  return lastPerKey(items, item => refKey(refOfEntity(item.entity)));
}

/** The refs, one per ref as Backstage tells them apart (case-insensitively): the last wins. */
export function uniqueRefs(refs: string[]): string[] {
  return lastPerKey(refs, refKey);
}

function lastPerKey<T>(items: T[], keyOf: (item: T) => string): T[] {
  const byKey = new Map<string, T>();
  for (const item of items) {
    const key = keyOf(item);
    byKey.delete(key);
    byKey.set(key, item);
  }
  return [...byKey.values()];
}

/**
 * A body's ref in Backstage's spelling, where the body names one (a kind and a name, and a
 * namespace or none for `default`), however the rest of it fails validation; else undefined.
 */
export function refOfBody(body: unknown): string | undefined {
  if (!isObject(body) || !isObject(body.metadata)) {
    return undefined;
  }
  const { kind } = body;
  const { name, namespace } = body.metadata;
  const named = (value: unknown): value is string => typeof value === 'string' && value !== '';
  if (!named(kind) || !named(name) || !(namespace === undefined || named(namespace))) {
    return undefined;
  }
  return stringifyEntityRef({ kind, namespace, name });
}

/** A body's ref for a log line, however malformed the body is (at most 300 characters). */
export function describeBody(body: unknown): string {
  const text = (value: unknown) =>
    typeof value === 'string' && value ? value : JSON.stringify(value) ?? 'undefined';
  if (!isObject(body)) {
    return `(not an entity: ${text(body)})`.slice(0, 300);
  }
  const metadata = isObject(body.metadata) ? body.metadata : {};
  const namespace = metadata.namespace === undefined ? 'default' : text(metadata.namespace);
  return `${text(body.kind)}:${namespace}/${text(metadata.name)}`.slice(0, 300);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The bodies as the catalog takes them, less those whose envelope it refuses: the catalog's
 * connection checks every entity of a mutation and throws for the whole of it over one bad
 * entity, which would hold back the page at every step. A refused entity is reported through
 * `warn` and left out (not recorded as applied; the catalog keeps its last valid version, if it
 * has one); the rest of the page goes on. `skipped` holds the refused bodies' refs, where they
 * name one.
 */
export function acceptableEntities(
  bodies: FeedEntity[],
  locationKey: string,
  validateEnvelope: (entity: unknown) => unknown,
  warn: (message: string) => void,
): { added: DeferredEntity[]; skipped: string[] } {
  const added: DeferredEntity[] = [];
  const skipped: string[] = [];
  for (const body of bodies) {
    const item = toDeferredEntity(body, locationKey);
    try {
      validateEnvelope(item.entity);
    } catch (error) {
      warn(
        `choreo-ingest: skipped ${describeBody(body)}: the catalog refuses its envelope ` +
          `(${(error as Error).message}); the catalog keeps its last valid version (one never ` +
          'applied stays out) until choreo-ingest serves a valid one',
      );
      const ref = refOfBody(body);
      if (ref !== undefined) {
        skipped.push(ref);
      }
      continue;
    }
    added.push(item);
  }
  return { added, skipped };
}
