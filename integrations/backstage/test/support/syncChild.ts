/**
 * One sync step in a process of its own, for the crash test:
 *   node -r ./test/support/tsRequire.js test/support/syncChild.ts
 * with CHILD_BASE_URL, CHILD_TOKEN, CHILD_DB (a SQLite file), CHILD_RECORD (the fake
 * connection's record), CHILD_BATCH_SIZE, optionally CHILD_MAX_MUTATION (entities per mutation),
 * and, optionally, CHILD_KILL_AFTER_MUTATION=N: the
 * process SIGKILLs itself once the Nth mutation was accepted, before the position is written.
 * Prints the step's result as JSON.
 */
import { ChoreoIngestEntityProvider } from '../../src';
import { RecordingConnection } from './connection';
import { sqlite } from './db';
import { TestLogger } from './logger';

async function main(): Promise<void> {
  const env = (name: string) => {
    const value = process.env[name];
    if (!value) {
      throw new Error(`${name} is not set`);
    }
    return value;
  };
  const killAfter = Number(process.env.CHILD_KILL_AFTER_MUTATION ?? 0);
  const database = sqlite(env('CHILD_DB'));
  let mutations = 0;
  const provider = new ChoreoIngestEntityProvider({
    baseUrl: env('CHILD_BASE_URL'),
    token: env('CHILD_TOKEN'),
    logger: new TestLogger(),
    database,
    batchSize: Number(env('CHILD_BATCH_SIZE')),
    maxMutationEntities: Number(process.env.CHILD_MAX_MUTATION ?? '') || undefined,
    afterMutation: () => {
      mutations += 1;
      if (killAfter && mutations === killAfter) {
        process.kill(process.pid, 'SIGKILL');
      }
    },
  });
  await provider.connect(new RecordingConnection(env('CHILD_RECORD')));
  const result = await provider.run();
  await database.destroy();
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch(error => {
  process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
