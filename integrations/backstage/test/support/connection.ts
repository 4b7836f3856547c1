/**
 * A recording fake of the catalog's EntityProviderConnection: keeps every mutation (and, with a
 * file, appends a summary of each to it before answering, so a killed process leaves a record),
 * and folds them into the set of entities the catalog would hold. Like the catalog's own
 * connection, it checks every entity's envelope first and refuses the whole mutation over one
 * bad entity.
 */
import { appendFileSync, readFileSync } from 'node:fs';
import {
  type Entity,
  entityEnvelopeSchemaValidator,
  stringifyEntityRef,
} from '@backstage/catalog-model';
import type {
  EntityProviderConnection,
  EntityProviderMutation,
} from '@backstage/plugin-catalog-node';

/** What a test needs of a mutation: its type and the refs it added and removed. */
export type MutationSummary = {
  type: 'full' | 'delta';
  added: string[];
  removed: string[];
  locationKeys: string[];
};

export class RecordingConnection implements EntityProviderConnection {
  readonly mutations: EntityProviderMutation[] = [];
  readonly summaries: MutationSummary[] = [];
  readonly entities = new Map<string, Entity>();
  /** The mutations refused (a malformed envelope), with the catalog's message. */
  readonly refused: string[] = [];
  private readonly validate = entityEnvelopeSchemaValidator();

  constructor(private readonly file?: string) {}

  async applyMutation(mutation: EntityProviderMutation): Promise<void> {
    const checked = mutation.type === 'full' ? mutation.entities : mutation.added;
    for (const { entity } of checked) {
      try {
        this.validate(entity);
      } catch (error) {
        const message = `Malformed entity envelope, ${error}`;
        this.refused.push(message);
        throw new TypeError(message);
      }
    }
    const summary = summarize(mutation);
    if (mutation.type === 'full') {
      this.entities.clear();
    }
    const added = mutation.type === 'full' ? mutation.entities : mutation.added;
    for (const { entity } of added) {
      this.entities.set(stringifyEntityRef(entity), entity);
    }
    if (mutation.type === 'delta') {
      for (const ref of summary.removed) {
        this.entities.delete(ref);
      }
    }
    this.mutations.push(mutation);
    this.summaries.push(summary);
    if (this.file) {
      appendFileSync(this.file, `${JSON.stringify(summary)}\n`);
    }
  }

  async refresh(): Promise<void> {}

  refs(): string[] {
    return [...this.entities.keys()].sort();
  }

  /** Forget the mutations recorded so far (the entities stay). */
  clearLog(): void {
    this.mutations.length = 0;
    this.summaries.length = 0;
  }
}

export function summarize(mutation: EntityProviderMutation): MutationSummary {
  const added = mutation.type === 'full' ? mutation.entities : mutation.added;
  const removed =
    mutation.type === 'full'
      ? []
      : mutation.removed.map(item =>
          'entityRef' in item ? item.entityRef : stringifyEntityRef(item.entity),
        );
  const keys = [...added, ...(mutation.type === 'delta' ? mutation.removed : [])].map(
    item => item.locationKey ?? '',
  );
  return {
    type: mutation.type,
    added: added.map(item => stringifyEntityRef(item.entity)),
    removed,
    locationKeys: [...new Set(keys)],
  };
}

/** The summaries a RecordingConnection appended to `file`. */
export function readSummaries(file: string): MutationSummary[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter(line => line.trim())
    .map(line => JSON.parse(line) as MutationSummary);
}

/** The refs the catalog holds after applying `summaries` in order. */
export function fold(summaries: MutationSummary[]): string[] {
  const refs = new Set<string>();
  for (const summary of summaries) {
    if (summary.type === 'full') {
      refs.clear();
    }
    summary.added.forEach(ref => refs.add(ref));
    summary.removed.forEach(ref => refs.delete(ref));
  }
  return [...refs].sort();
}
