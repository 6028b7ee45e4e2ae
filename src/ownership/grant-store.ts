import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { open, type RootDatabase } from 'lmdb';
import { z } from 'zod';
import type { Durability } from '../state/lmdb-log.js';
import { storePathProblem } from '../state/lmdb-preflight.js';
import { SiloError } from '../util/silo-error.js';
import type { WitnessRecord } from './witness-core.js';

/**
 * The witness's durable memory (docs/placement.md, rule W1): one lmdb
 * environment, key = workload name, value = JSON WitnessRecord. Each batch
 * is one synchronous transaction (fdatasync unless `nosync`), and the
 * witness replies only after it returned. A record that does not parse is
 * refused loudly at open: guessing what a witness once granted could let
 * two nodes hold one workload, so the operator must decide (the error names
 * the file; deleting the store is safe only after every lease it may hold
 * has expired, i.e. after the agent has been down for a lease length).
 */
const RecordSchema = z.strictObject({
  workload: z.string().min(1),
  ballot: z.number().int().nonnegative(),
  holder: z.string().min(1).nullable(),
  incarnation: z.number().int().nonnegative(),
  released: z.boolean(),
  durationMs: z.number().int().nonnegative(),
});

export class GrantStoreError extends SiloError<'store_failed'> {
  constructor(message: string, options?: ErrorOptions) {
    super('store_failed', message, options);
  }
}

export class GrantStore {
  private readonly root: RootDatabase<string, string>;
  readonly path: string;
  /**
   * The store was there before this open (rule W6: a witness that starts on
   * an existing store keeps a quiet period; one on a new store has granted
   * nothing).
   */
  readonly existed: boolean;

  constructor(options: { path: string; durability?: Durability }) {
    this.path = options.path;
    this.existed = existsSync(join(this.path, 'data.mdb'));
    const problem = storePathProblem(this.path);
    if (problem !== null) {
      throw new GrantStoreError(
        `cannot open witness grant store at ${this.path}: ${problem}. A witness store is not resynced from peers: remove it only after this agent has been down for a full lease length (docs/operations.md, "Witness store")`,
      );
    }
    try {
      this.root = open<string, string>(this.path, {
        encoding: 'string',
        overlappingSync: false,
        noSync: options.durability === 'nosync',
      });
    } catch (err) {
      throw new GrantStoreError(
        `cannot open witness grant store at ${this.path}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }

  /** Every record; throws GrantStoreError naming the first one that does not parse. */
  load(): WitnessRecord[] {
    const out: WitnessRecord[] = [];
    for (const { key, value } of this.root.getRange({})) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(value);
      } catch {
        parsed = undefined;
      }
      const record = RecordSchema.safeParse(parsed);
      if (!record.success || record.data.workload !== key) {
        throw new GrantStoreError(
          `witness grant store ${this.path}: the record of ${JSON.stringify(key)} is damaged; refusing to guess what this witness granted (see docs/operations.md, "Witness store")`,
        );
      }
      out.push(record.data);
    }
    return out;
  }

  /** Writes the records in one durable transaction; resolves when they are on disk. */
  putAll(records: readonly WitnessRecord[]): void {
    if (records.length === 0) return;
    this.root.transactionSync(() => {
      for (const record of records) this.root.putSync(record.workload, JSON.stringify(record));
    });
  }

  async close(): Promise<void> {
    await this.root.close();
  }
}
