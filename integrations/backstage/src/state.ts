/**
 * The module's state in the catalog's database: its feed position (with the storeId and a
 * resync in progress) and the set of entity refs it applied, each with the resync generation
 * that last applied it.
 */
import type { Knex } from 'knex';
import { APPLIED_TABLE, POSITION_TABLE, checkTables, migrate } from './migrations';

export type Resync = {
  /** The `nextCursor` to read next; undefined: the walk has not read a page yet. */
  cursor?: string;
  /** The storeId and newestSeq the walk's first page reported. */
  storeId?: string;
  newestSeq?: number;
};

export type FeedState = {
  storeId?: string;
  /** The last /changes seq applied; undefined before the first resync finished. */
  seq?: number;
  /**
   * The `at` of the change at `seq`, as read: sent with the next `/changes` (`sinceAt`), so a
   * state put back from an older copy, which makes other changes under the same seqs, is told
   * apart. Undefined after a resync (until a change is applied) and in older states.
   */
  seqAt?: string;
  /** The generation of the latest resync started (0: none yet). */
  generation: number;
  /** A resync in progress. */
  resync?: Resync;
  /** A removal of earlier generations' refs was refused and waits. */
  sweepPending: boolean;
  /**
   * The location key every entity was applied under, kept from the first step, so that a
   * changed `baseUrl` does not change it: the catalog's delta takes an entity applied again
   * under another key as a removal and a new entity (a new uid, its relations and processing
   * state rebuilt). Undefined in a state written before it was kept.
   */
  locationKey?: string;
  /**
   * When the last resync walk completed (ms since the epoch), for the periodic resync.
   * Undefined before the first one, and in a state written before it was kept.
   */
  resyncedAt?: number;
  /**
   * The stored row's version when this state was read or written (undefined: no row yet). A
   * commit writes only over that version, so a step that outlived the schedule's timeout cannot
   * overwrite what the step that took over wrote since.
   */
  version?: number;
};

/** The state was written by another step since this one read it: nothing was written. */
export class StateSuperseded extends Error {
  constructor() {
    super('another step wrote the position since this one read it');
    this.name = 'StateSuperseded';
  }
}

/** What one step wrote, committed in one transaction after its mutation was accepted. */
export type Commit = {
  state: FeedState;
  applied?: { refs: string[]; generation: number };
  /**
   * Refs a resync saw but did not apply (the catalog refused their body): those already applied
   * move on to `generation`, since the catalog keeps their last valid version; no row is added.
   */
  kept?: { refs: string[]; generation: number };
  removed?: string[];
};

/** What the catalog holds of the refs a provider applied (`StateStore.catalogHolding`). */
export type CatalogHolding = {
  /** The refs applied. */
  applied: number;
  /** Of them, those the catalog holds no entity for. */
  missing: number;
  /** Of them, those it keeps under another location key, by that key, most first. */
  elsewhere: Array<{ locationKey: string; count: number }>;
};

const CHUNK = 400;
/** The catalog's own table of its entities, one row per ref (catalog-backend 0.x to 4.x). */
export const CATALOG_ENTITIES_TABLE = 'refresh_state';
/** The catalog's table of which source put each entity in (`source_key`: a provider's name). */
export const CATALOG_REFERENCES_TABLE = 'refresh_state_references';

export class StateStore {
  private readonly db: Knex;
  private readonly provider: string;
  private readonly skipMigrations: boolean;
  private migrated: Promise<void> | undefined;
  private referencesTable: Promise<boolean> | undefined;
  private readonly catalogUnread: ((error: unknown) => void) | undefined;

  /**
   * `skipMigrations`: the backend skips database migrations; the tables must exist.
   * `catalogUnread`: told when a query of the catalog's own tables fails (they are not its API:
   * a catalog release may rename a column); the check it served is then left out, as where the
   * tables are missing, rather than fail every step.
   */
  constructor(
    db: Knex,
    provider: string,
    options: { skipMigrations?: boolean; catalogUnread?: (error: unknown) => void } = {},
  ) {
    this.db = db;
    this.provider = provider;
    this.skipMigrations = options.skipMigrations ?? false;
    this.catalogUnread = options.catalogUnread;
  }

  /** `query`'s answer, or `otherwise` where it failed (`catalogUnread` is told). */
  private async catalogRead<T>(query: () => Promise<T>, otherwise: T): Promise<T> {
    try {
      return await query();
    } catch (error) {
      this.catalogUnread?.(error);
      return otherwise;
    }
  }

  /** Create or update the tables, or with migrations skipped check that they exist (once). */
  async ready(): Promise<void> {
    if (!this.migrated) {
      const prepared = this.skipMigrations ? checkTables(this.db) : migrate(this.db);
      this.migrated = prepared.catch(error => {
        this.migrated = undefined;
        throw error;
      });
    }
    return this.migrated;
  }

  async load(): Promise<FeedState | undefined> {
    await this.ready();
    const row = await this.db(POSITION_TABLE).where({ provider: this.provider }).first();
    if (!row) {
      return undefined;
    }
    return {
      storeId: row.store_id ?? undefined,
      seq: optionalNumber(row.seq),
      seqAt: row.seq_at ?? undefined,
      generation: Number(row.generation),
      resync: truthy(row.resync_active)
        ? {
            cursor: row.resync_cursor ?? undefined,
            storeId: row.resync_store_id ?? undefined,
            newestSeq: optionalNumber(row.resync_newest_seq),
          }
        : undefined,
      sweepPending: truthy(row.sweep_pending),
      locationKey: row.location_key ?? undefined,
      resyncedAt: optionalTime(row.resynced_at),
      version: Number(row.version ?? 0),
    };
  }

  /**
   * Write the position, and the applied set's changes, in one transaction, over the version the
   * state was read at; return the state as written (its new version). Throws StateSuperseded,
   * writing nothing, when another step wrote since.
   */
  async commit(commit: Commit): Promise<FeedState> {
    await this.ready();
    return this.db.transaction(async trx => {
      if (commit.removed?.length) {
        for (const refs of chunks(commit.removed, CHUNK)) {
          await trx(APPLIED_TABLE).where({ provider: this.provider }).whereIn('ref', refs).delete();
        }
      }
      if (commit.applied?.refs.length) {
        const { generation } = commit.applied;
        // One row per ref: PostgreSQL refuses an upsert that meets the same row twice.
        for (const refs of chunks([...new Set(commit.applied.refs)], CHUNK)) {
          await trx(APPLIED_TABLE)
            .insert(refs.map(ref => ({ provider: this.provider, ref, generation })))
            .onConflict(['provider', 'ref'])
            .merge(['generation']);
        }
      }
      if (commit.kept?.refs.length) {
        const { generation } = commit.kept;
        for (const refs of chunks(commit.kept.refs, CHUNK)) {
          await trx(APPLIED_TABLE)
            .where({ provider: this.provider })
            .whereIn('ref', refs)
            .update({ generation });
        }
      }
      return this.writeState(trx, commit.state);
    });
  }

  /** The first `limit` refs (in ref order) applied by a generation before `generation`. */
  async staleRefs(generation: number, limit: number): Promise<string[]> {
    await this.ready();
    const rows: Array<{ ref: string }> = await this.db(APPLIED_TABLE)
      .where({ provider: this.provider })
      .andWhere('generation', '<', generation)
      .orderBy('ref')
      .limit(limit)
      .select('ref');
    return rows.map(row => row.ref);
  }

  /** How many refs were applied by a generation before `generation`. */
  async staleCount(generation: number): Promise<number> {
    await this.ready();
    const row = await this.db(APPLIED_TABLE)
      .where({ provider: this.provider })
      .andWhere('generation', '<', generation)
      .count({ count: '*' })
      .first();
    return Number(row?.count ?? 0);
  }

  /** How many refs the provider has applied (all generations). */
  async appliedCount(): Promise<number> {
    await this.ready();
    const row = await this.db(APPLIED_TABLE)
      .where({ provider: this.provider })
      .count({ count: '*' })
      .first();
    return Number(row?.count ?? 0);
  }

  /** The highest generation of the applied refs (0: none). */
  async maxAppliedGeneration(): Promise<number> {
    await this.ready();
    const row = await this.db(APPLIED_TABLE)
      .where({ provider: this.provider })
      .max({ generation: 'generation' })
      .first();
    return Number(row?.generation ?? 0);
  }

  /**
   * How many of the refs the provider applied the catalog holds no entity for: rows of the
   * catalog's `refresh_state` (keyed by the same lower-cased ref, in the same database), which
   * the catalog's eviction of orphaned providers and its API's deletes empty. An entity the
   * catalog keeps under another location key (a conflict) is held, if not from the provider: a
   * resync would not bring it in either. Undefined where that table is missing (not the
   * catalog's database).
   */
  async catalogMissing(): Promise<number | undefined> {
    return (await this.catalogHolding(''))?.missing;
  }

  /**
   * What the catalog holds of the refs the provider applied (see `catalogMissing`): how many it
   * lacks, and how many it keeps under a location key other than `locationKey` (one it skips the
   * provider's copies of: another provider's, a `file` location's), by key, most first. One
   * query; undefined where the catalog's table is missing.
   */
  async catalogHolding(locationKey: string): Promise<CatalogHolding | undefined> {
    if (!(await this.db.schema.hasTable(CATALOG_ENTITIES_TABLE))) {
      return undefined;
    }
    await this.ready();
    type Row = { key: string | null; total: unknown; held: unknown };
    const rows: Row[] | undefined = await this.catalogRead<Row[] | undefined>(
      async () =>
        await this.db(`${APPLIED_TABLE} as applied`)
          .leftJoin(`${CATALOG_ENTITIES_TABLE} as held`, 'held.entity_ref', 'applied.ref')
          .where('applied.provider', this.provider)
          .groupBy('held.location_key')
          .select({ key: 'held.location_key' })
          .count({ total: '*', held: 'held.entity_ref' }),
      undefined,
    );
    if (rows === undefined) {
      return undefined;
    }
    const holding: CatalogHolding = { applied: 0, missing: 0, elsewhere: [] };
    for (const row of rows) {
      const [total, held] = [Number(row.total), Number(row.held)];
      holding.applied += total;
      holding.missing += total - held;
      // The catalog's update takes a row without a location key over: not a conflict.
      if (row.key !== null && row.key !== locationKey && held > 0) {
        holding.elsewhere.push({ locationKey: row.key, count: held });
      }
    }
    holding.elsewhere.sort(
      (a, b) => b.count - a.count || a.locationKey.localeCompare(b.locationKey),
    );
    return holding;
  }

  /**
   * How many entities the catalog holds as the provider's (its `refresh_state_references` rows
   * under the provider's name as source key) that the applied set lacks: orphans. A step the
   * schedule's timeout aborted can have a mutation in flight that lands after a later step
   * (another replica's) removed the ref; nothing but a sweep would ever remove such an entity.
   * 0 where that table is missing (not the catalog's database).
   */
  async orphanCount(): Promise<number> {
    if (!(await this.referencesReady())) {
      return 0;
    }
    return this.catalogRead(async () => {
      const row = await this.orphans().countDistinct({ count: 'refs.target_entity_ref' }).first();
      return Number(row?.count ?? 0);
    }, 0);
  }

  /** The first `limit` orphans (see `orphanCount`) after `after`, in ref order. */
  async orphanRefs(after: string, limit: number): Promise<string[]> {
    if (!(await this.referencesReady())) {
      return [];
    }
    return this.catalogRead(async () => {
      const rows: Array<{ ref: string }> = await this.orphans()
        .where('refs.target_entity_ref', '>', after)
        .distinct({ ref: 'refs.target_entity_ref' })
        .orderBy('ref')
        .limit(limit);
      return rows.map(row => row.ref);
    }, [] as string[]);
  }

  /** Whether the catalog's references table is in this database (asked once: the catalog's
   * migrations made it before any provider connected), and the module's tables are ready. */
  private async referencesReady(): Promise<boolean> {
    if (!this.referencesTable) {
      // A real promise: knex's builder is a thenable that asks again at every `then`.
      const asked: Promise<boolean> = Promise.resolve().then(() =>
        this.db.schema.hasTable(CATALOG_REFERENCES_TABLE),
      );
      this.referencesTable = asked;
      asked.catch(() => {
        if (this.referencesTable === asked) {
          this.referencesTable = undefined; // asked again next time
        }
      });
    }
    const found = await this.referencesTable;
    if (found) {
      await this.ready();
    }
    return found;
  }

  /** A knex query is a thenable: built here, never returned from an async function. */
  private orphans(): Knex.QueryBuilder {
    const applied = this.db(`${APPLIED_TABLE} as applied`)
      .select(this.db.raw('1'))
      .where('applied.provider', this.provider)
      .whereRaw('?? = ??', ['applied.ref', 'refs.target_entity_ref']);
    return this.db(`${CATALOG_REFERENCES_TABLE} as refs`)
      .where('refs.source_key', this.provider)
      .whereNotExists(applied);
  }

  /** Every applied ref, sorted (for tests and operators). */
  async appliedRefs(): Promise<string[]> {
    await this.ready();
    const rows: Array<{ ref: string }> = await this.db(APPLIED_TABLE)
      .where({ provider: this.provider })
      .orderBy('ref')
      .select('ref');
    return rows.map(row => row.ref);
  }

  private async writeState(trx: Knex.Transaction, state: FeedState): Promise<FeedState> {
    const version = (state.version ?? 0) + 1;
    const row = {
      store_id: state.storeId ?? null,
      seq: state.seq ?? null,
      seq_at: state.seqAt ?? null,
      generation: state.generation,
      resync_active: state.resync !== undefined,
      resync_cursor: state.resync?.cursor ?? null,
      resync_store_id: state.resync?.storeId ?? null,
      resync_newest_seq: state.resync?.newestSeq ?? null,
      sweep_pending: state.sweepPending,
      location_key: state.locationKey ?? null,
      resynced_at: state.resyncedAt === undefined ? null : new Date(state.resyncedAt).toISOString(),
      updated_at: new Date().toISOString(),
      version,
    };
    if (state.version === undefined) {
      // No row when the state was read: a row there now was written by another step.
      if (await trx(POSITION_TABLE).where({ provider: this.provider }).first()) {
        throw new StateSuperseded();
      }
      await trx(POSITION_TABLE).insert({ provider: this.provider, ...row });
    } else {
      const updated = await trx(POSITION_TABLE)
        .where({ provider: this.provider, version: state.version })
        .update(row);
      if (updated !== 1) {
        throw new StateSuperseded();
      }
    }
    return { ...state, version };
  }
}

function optionalNumber(value: unknown): number | undefined {
  return value === null || value === undefined ? undefined : Number(value);
}

/** An ISO time as milliseconds since the epoch; undefined for none (or one that does not parse). */
function optionalTime(value: unknown): number | undefined {
  const time = typeof value === 'string' ? Date.parse(value) : NaN;
  return Number.isNaN(time) ? undefined : time;
}

/** Booleans come back as 0/1 from SQLite and MySQL. */
function truthy(value: unknown): boolean {
  return value === true || value === 1 || value === '1' || value === 't';
}

export function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let start = 0; start < items.length; start += size) {
    out.push(items.slice(start, start + size));
  }
  return out;
}
