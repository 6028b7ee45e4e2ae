import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * A full garbage collection without starting node with --expose-gc (the
 * npm script's command line is fixed): the flag is set at run time and the
 * `gc` function picked up from a fresh context. Used to measure heap per
 * agent; RSS alone keeps what earlier sizes of a run left behind.
 */
let collect: (() => void) | null | undefined;

export function fullGc(): boolean {
  if (collect === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      collect = runInNewContext('gc') as () => void;
    } catch {
      collect = null;
    }
  }
  collect?.();
  return collect !== null;
}

/** Heap in use after a full collection, bytes. */
export function heapAfterGc(): number {
  fullGc();
  return process.memoryUsage().heapUsed;
}
