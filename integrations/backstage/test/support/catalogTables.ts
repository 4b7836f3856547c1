/**
 * A RecordingConnection that also keeps the catalog's `refresh_state` (one row per entity, with
 * the location key it came under) and `refresh_state_references` (which source put it in) rows
 * in the given database, as the catalog's provider database does for each delta: an entity that
 * another location key holds already is a conflict, skipped (the provider's reference to it is
 * dropped, the other source's entity stays). It can evict the provider as the catalog does at a
 * start without it (`evictEntitiesFromOrphanedProviders`), and put in another source's entity.
 */
import { stringifyEntityRef } from '@backstage/catalog-model';
import type { EntityProviderMutation } from '@backstage/plugin-catalog-node';
import type { Knex } from 'knex';
import { RecordingConnection } from './connection';

const ENTITIES = 'refresh_state';
const REFERENCES = 'refresh_state_references';

export class CatalogTablesConnection extends RecordingConnection {
  constructor(
    private readonly database: Knex,
    private readonly sourceKey = 'choreo-ingest',
  ) {
    super();
  }

  /** Create the tables as the catalog's migrations do (the columns the module and this read). */
  async createTable(): Promise<void> {
    await this.database.schema.createTable(ENTITIES, table => {
      table.text('entity_ref').notNullable().unique();
      table.text('location_key').nullable();
    });
    await this.database.schema.createTable(REFERENCES, table => {
      table.increments('id');
      table.text('source_key').nullable();
      table.text('source_entity_ref').nullable();
      table.text('target_entity_ref').notNullable();
      table.index('source_key', 'refresh_state_references_source_key_idx');
    });
  }

  override async applyMutation(mutation: EntityProviderMutation): Promise<void> {
    const items = mutation.type === 'full' ? mutation.entities : mutation.added;
    const conflicts = new Set<string>();
    for (const item of items) {
      const ref = stringifyEntityRef(item.entity);
      const held = await this.database(ENTITIES).where({ entity_ref: ref }).first();
      // The catalog's update takes a row without a location key over (`updateUnprocessedEntity`).
      if (held && held.location_key !== null && held.location_key !== (item.locationKey ?? null)) {
        conflicts.add(ref);
      }
    }
    const accepted = items.filter(item => !conflicts.has(stringifyEntityRef(item.entity)));
    await super.applyMutation(
      mutation.type === 'full'
        ? { ...mutation, entities: accepted }
        : { ...mutation, added: accepted },
    ); // validates every envelope first: a refused mutation changes nothing
    const own = () => this.database(REFERENCES).where({ source_key: this.sourceKey });
    if (mutation.type === 'full') {
      await own().delete();
    } else {
      const removed = mutation.removed.map(item =>
        'entityRef' in item ? item.entityRef : stringifyEntityRef(item.entity),
      );
      if (removed.length) {
        await own().whereIn('target_entity_ref', removed).delete();
      }
    }
    for (const ref of conflicts) {
      await own().where({ target_entity_ref: ref }).delete();
    }
    for (const item of accepted) {
      const ref = stringifyEntityRef(item.entity);
      await this.database(ENTITIES)
        .insert({ entity_ref: ref, location_key: item.locationKey ?? null })
        .onConflict('entity_ref')
        .merge(['location_key']);
      await this.database(REFERENCES).where({ target_entity_ref: ref }).delete();
      await this.database(REFERENCES).insert({ source_key: this.sourceKey, target_entity_ref: ref });
    }
    await this.pruneUnreferenced();
  }

  /** The catalog started without the provider: it removed all the provider's entities. */
  async evict(): Promise<void> {
    await this.database(REFERENCES).where({ source_key: this.sourceKey }).delete();
    await this.pruneUnreferenced();
    this.entities.clear();
  }

  /** Another source (a `file` location, say) put in the entity `ref` under `locationKey`. */
  async addForeign(ref: string, locationKey: string): Promise<void> {
    await this.database(ENTITIES).insert({ entity_ref: ref, location_key: locationKey });
    await this.database(REFERENCES).insert({ source_key: locationKey, target_entity_ref: ref });
  }

  /** The catalog's entities with no reference left are deleted. */
  private async pruneUnreferenced(): Promise<void> {
    await this.database(ENTITIES)
      .whereNotIn('entity_ref', this.database(REFERENCES).select('target_entity_ref'))
      .delete();
  }
}
