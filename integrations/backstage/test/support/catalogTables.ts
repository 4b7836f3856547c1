/**
 * A RecordingConnection that also keeps the catalog's `refresh_state_references` rows in the
 * given database, as the catalog's provider database does for each delta (one row per entity
 * a provider put in, by `source_key`), and can evict the provider as the catalog does at a start
 * without it (`evictEntitiesFromOrphanedProviders`: an empty `full` mutation for its source key).
 */
import { stringifyEntityRef } from '@backstage/catalog-model';
import type { EntityProviderMutation } from '@backstage/plugin-catalog-node';
import type { Knex } from 'knex';
import { RecordingConnection } from './connection';

const TABLE = 'refresh_state_references';

export class CatalogTablesConnection extends RecordingConnection {
  constructor(
    private readonly database: Knex,
    private readonly sourceKey = 'choreo-ingest',
  ) {
    super();
  }

  /** Create the table as the catalog's migrations do (the columns the module reads). */
  async createTable(): Promise<void> {
    await this.database.schema.createTable(TABLE, table => {
      table.increments('id');
      table.text('source_key').nullable();
      table.text('source_entity_ref').nullable();
      table.text('target_entity_ref').notNullable();
      table.index('source_key', 'refresh_state_references_source_key_idx');
    });
  }

  override async applyMutation(mutation: EntityProviderMutation): Promise<void> {
    await super.applyMutation(mutation);
    const added = (mutation.type === 'full' ? mutation.entities : mutation.added).map(item =>
      stringifyEntityRef(item.entity),
    );
    const removed =
      mutation.type === 'full'
        ? undefined
        : mutation.removed.map(item =>
            'entityRef' in item ? item.entityRef : stringifyEntityRef(item.entity),
          );
    const own = () => this.database(TABLE).where({ source_key: this.sourceKey });
    if (removed === undefined) {
      await own().delete();
    } else if (removed.length) {
      await own().whereIn('target_entity_ref', removed).delete();
    }
    if (added.length) {
      await own().whereIn('target_entity_ref', added).delete();
      await this.database(TABLE).insert(
        added.map(ref => ({ source_key: this.sourceKey, target_entity_ref: ref })),
      );
    }
  }

  /** The catalog started without the provider: it removed all the provider's entities. */
  async evict(): Promise<void> {
    await this.database(TABLE).where({ source_key: this.sourceKey }).delete();
    this.entities.clear();
  }
}
