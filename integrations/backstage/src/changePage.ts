/**
 * What one `GET /changes` page asks of the catalog: the refs to read and upsert, and the refs
 * to remove, by the last op each ref had in it, with every change checked first.
 */
import { normalizeRef, refKey } from './entities';
import { type ChangesPage, FeedError } from './feedClient';

/** A change the page holds that is not applied as it stands, and why. */
export type OddChange = { seq: number; problem: 'ref' | 'op'; detail: string };

export type PageOps = {
  upserts: string[];
  deletes: string[];
  /**
   * The upserts whose last change was of an op this module does not know, as refKeys: their
   * entity is read again, and one serve no longer has is removed.
   */
  rereads: Set<string>;
  /**
   * Changes left out (a ref that is no entity ref) or read again (an op this module
   * does not know, from a newer serve, say): one odd change must not stop every later one.
   */
  odd: OddChange[];
};

/**
 * The refs of a page's changes, by the last op each ref had in it. Refs that differ only in case
 * are one entity to Backstage (it compares refs case-insensitively): the last change of any
 * spelling wins, under its own spelling. A change whose ref is no entity ref is left out (the
 * next resync puts the catalog right); one of another op than `upsert` or `delete` has its ref's
 * body read again (`rereads`): upserted as it is now, or removed when serve has it no more. A
 * `seq` that is no integer is a FeedError: the stored position could not move past it.
 */
export function pageOps(page: ChangesPage): PageOps {
  const last = new Map<string, { ref: string; op: string }>();
  const odd: OddChange[] = [];
  for (const change of page.changes) {
    const seq = (change as { seq?: unknown } | null)?.seq;
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq)) {
      const shown = JSON.stringify(change)?.slice(0, 200);
      throw new FeedError('GET /changes', 200, `a change without an integer "seq": ${shown}`);
    }
    const { ref, op } = change as { ref?: unknown; op?: unknown };
    const parsed = typeof ref === 'string' ? parsedRef(ref) : undefined;
    if (typeof ref !== 'string' || parsed === undefined) {
      const detail = typeof ref === 'string' ? `"${ref}" is not an entity ref` : 'it has no ref';
      odd.push({ seq, problem: 'ref', detail });
      continue;
    }
    if (op !== 'upsert' && op !== 'delete') {
      odd.push({ seq, problem: 'op', detail: `unknown op ${JSON.stringify(op)} for ${ref}` });
    }
    const key = ref.toLocaleLowerCase('en-US');
    last.delete(key);
    last.set(key, { ref, op: op === 'upsert' || op === 'delete' ? op : 'reread' });
  }
  const upserts: string[] = [];
  const deletes: string[] = [];
  const rereads = new Set<string>();
  for (const { ref, op } of last.values()) {
    (op === 'delete' ? deletes : upserts).push(ref);
    if (op === 'reread') {
      rereads.add(refKey(normalizeRef(ref)));
    }
  }
  return { upserts, deletes, rereads, odd };
}

function parsedRef(ref: string): string | undefined {
  try {
    return normalizeRef(ref);
  } catch {
    return undefined;
  }
}
