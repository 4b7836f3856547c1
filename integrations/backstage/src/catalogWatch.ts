/**
 * What the catalog holds of the refs the module applied, looked at from the module's side: at
 * the first step of a process (entities the catalog removed, such as at a start without the
 * module), after a completed resync, and at every step while the catalog keeps some of them
 * under another location key (another provider's, such as OpenChoreo's own, or a `file`
 * location's), whose copies it prefers and the module's it skips.
 */
import type { LoggerService } from '@backstage/backend-plugin-api';
import type { CatalogHolding, StateStore } from './state';

export class CatalogWatch {
  /**
   * What this process last found the catalog to hold of the applied refs (see `look`);
   * undefined before it looked, or where the catalog's table is missing.
   */
  private holding: CatalogHolding | undefined;
  /** The conflicts last logged (`look`), so that they are logged once. */
  private loggedConflicts: string | undefined;

  constructor(
    private readonly store: StateStore,
    private readonly logger: LoggerService,
  ) {}

  /** Forget the last look (a new connection: the catalog may have changed in between). */
  reset(): void {
    this.holding = undefined;
  }

  /**
   * At the first step of a process: why the catalog no longer holds what the module applied, or
   * undefined. The catalog removes a provider's entities at a start without it (its startup
   * eviction of orphaned providers, `catalog.orphanProviderStrategy: delete`, the default since
   * catalog-backend 3.0.0), and the module's own tables would not know: it looks the refs it
   * applied up among the catalog's entities (see `StateStore.catalogHolding`).
   */
  async loss(locationKey: string): Promise<string | undefined> {
    const holding = await this.look(locationKey);
    if (holding === undefined) {
      this.logger.info(
        'choreo-ingest: no refresh_state table in this database; the check that the catalog ' +
          'still holds what the module applied is skipped',
      );
      return undefined;
    }
    const { applied, missing } = holding;
    if (missing === 0) {
      return undefined;
    }
    return (
      `the catalog holds ${applied - missing} of the ${applied} entities the module applied (it ` +
      'removed them, such as at a start without this module, or without the provider that ' +
      'held them instead: catalog.orphanProviderStrategy)'
    );
  }

  /**
   * While the catalog keeps some of the applied refs under another location key (it skips the
   * module's copies of them): why to offer them again now, or undefined. Once that source's
   * entities are gone (deleted through the catalog's API, its provider evicted), the catalog
   * holds nothing for those refs, and the module's copies would otherwise wait for the periodic
   * resync. A look at the catalog (one query) at every step, only while such refs are kept; a
   * resync only when the catalog lacks more refs than at the last look, so refs it lacks for
   * another reason (a removal the guard holds back) cost one resync, not one per step.
   */
  async freed(locationKey: string): Promise<string | undefined> {
    const last = this.holding;
    if (!last?.elsewhere.length) {
      return undefined;
    }
    const now = await this.look(locationKey);
    if (!now || now.missing <= last.missing) {
      return undefined;
    }
    return (
      `the catalog no longer holds ${now.missing - last.missing} of the entities the module ` +
      `applied, while it kept ${heldElsewhere(last)} under another location key: offering ` +
      "the module's copies again"
    );
  }

  /**
   * What the catalog holds of the applied refs, kept for `freed`; the refs it keeps under a key
   * other than `locationKey` are logged once (again when they change), and the end of them.
   */
  async look(locationKey: string): Promise<CatalogHolding | undefined> {
    const holding = await this.store.catalogHolding(locationKey);
    this.holding = holding;
    if (holding === undefined) {
      return undefined;
    }
    const shown = holding.elsewhere.slice(0, 3).map(e => `${e.locationKey} (${e.count})`);
    const more = holding.elsewhere.length - shown.length;
    const conflicts = holding.elsewhere.length
      ? `${shown.join(', ')}${more > 0 ? ` and ${more} more keys` : ''}`
      : undefined;
    if (conflicts !== undefined && conflicts !== this.loggedConflicts) {
      this.logger.warn(
        `choreo-ingest: the catalog keeps ${heldElsewhere(holding)} of the ${holding.applied} ` +
          "entities the module applied under another location key, and skips the module's " +
          `copies of them (it logs "detected conflicting entityRef"): ${conflicts}. Remove ` +
          "that source's entities (the module's README: \"Moving from OpenChoreo's provider\"); " +
          'the module offers its copies again at its next step once the catalog no longer ' +
          'holds them',
      );
    } else if (conflicts === undefined && this.loggedConflicts !== undefined) {
      this.logger.info(
        "choreo-ingest: the catalog no longer keeps any of the module's entities under " +
          'another location key',
      );
    }
    this.loggedConflicts = conflicts;
    return holding;
  }
}

/** How many applied refs the catalog keeps under another location key. */
function heldElsewhere(holding: CatalogHolding): number {
  return holding.elsewhere.reduce((sum, entry) => sum + entry.count, 0);
}
