/**
 * How the provider hands entities to the catalog: the bodies the catalog takes, and `delta`
 * mutations of at most `maxMutationEntities` each (one catalog transaction apiece).
 */
import type { LoggerService } from '@backstage/backend-plugin-api';
import { entityEnvelopeSchemaValidator } from '@backstage/catalog-model';
import type {
  DeferredEntity,
  EntityProviderConnection,
  EntityProviderMutation,
} from '@backstage/plugin-catalog-node';
import { acceptableEntities, uniqueEntities, uniqueRefs } from './entities';
import type { FeedEntity } from './feedClient';
import type { ChoreoIngestEntityProviderOptions } from './options';

export type DeltaMutation = EntityProviderMutation & { type: 'delta' };

export class MutationWriter {
  /** Backstage's own check of an entity's envelope, as the catalog's connection runs it. */
  private readonly validateEnvelope = entityEnvelopeSchemaValidator();

  constructor(
    private readonly logger: LoggerService,
    /** The most entities (added and removed) one mutation holds. */
    private readonly maxMutationEntities: number,
    /** Throws once the step was aborted: no mutation goes to the catalog after that. */
    private readonly checkAborted: () => void,
    private readonly afterMutation: ChoreoIngestEntityProviderOptions['afterMutation'],
  ) {}

  /** A delta adding `added` and removing `removed` under `locationKey`. */
  delta(added: DeferredEntity[], removed: string[], locationKey: string): DeltaMutation {
    return {
      type: 'delta',
      added,
      removed: removed.map(entityRef => ({ entityRef, locationKey })),
    };
  }

  /**
   * The bodies as the catalog takes them (see `acceptableEntities`), one per ref as Backstage
   * tells them apart: of two refs that differ only in case, the last body wins.
   */
  acceptable(bodies: FeedEntity[], locationKey: string): ReturnType<typeof acceptableEntities> {
    const { added, skipped } = acceptableEntities(
      bodies,
      locationKey,
      this.validateEnvelope,
      message => this.logger.warn(message),
    );
    return { added: uniqueEntities(added), skipped: uniqueRefs(skipped) };
  }

  async apply(connection: EntityProviderConnection, mutation: DeltaMutation): Promise<void> {
    // At most maxMutationEntities per mutation (one catalog transaction each): removals first,
    // then upserts, each ref once. The position is written after the last: a crash between two
    // replays the page, whose mutations the catalog takes as the same upserts and removals again.
    const size = this.maxMutationEntities;
    const removals = mutation.removed.length;
    const parts: DeltaMutation[] = [];
    for (let start = 0; start < removals + mutation.added.length || start === 0; start += size) {
      const end = start + size;
      parts.push({
        type: 'delta',
        removed: mutation.removed.slice(start, Math.min(end, removals)),
        added: mutation.added.slice(Math.max(start - removals, 0), Math.max(end - removals, 0)),
      });
    }
    for (const part of parts) {
      // The page is read: only an abort throws it away, however long the read took.
      this.checkAborted();
      await connection.applyMutation(part);
      await this.afterMutation?.(part);
    }
    // Aborted while the catalog took it (the schedule's timeout: another replica may have taken
    // over and moved the position since): no position write. The next step replays the page,
    // which the catalog takes as the same upserts and removals again.
    this.checkAborted();
  }
}
