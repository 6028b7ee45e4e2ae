import { SiloError } from '../util/silo-error.js';

/** The errors of the durable store (src/state/lmdb-log.ts; docs/protocol.md, "Durable storage"). */

/** The store could not be opened; names the path and why. */
export class StoreOpenError extends SiloError<'store_failed'> {
  constructor(
    readonly path: string,
    reason: string,
    options?: ErrorOptions,
  ) {
    super('store_failed', `cannot open silo store at ${path}: ${reason}`, options);
  }
}

/** A write the store did not take (lmdb failed it): nothing of it was written. */
export class StoreWriteError extends SiloError<'store_failed'> {
  constructor(path: string, what: string, cause: unknown) {
    super('store_failed', `silo store ${path}: ${what} failed: ${messageOf(cause)}`, { cause });
  }
}

/**
 * A caller's mistake: a closed store, a document silo does not have, an
 * update that is no bytes. A bug in the caller, never the store's state, so
 * it is thrown before anything is written.
 */
export class UpdateLogUsageError extends SiloError<'internal'> {
  constructor(path: string, message: string) {
    super('internal', `silo store ${path}: ${message}`);
  }
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
