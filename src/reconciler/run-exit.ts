import { constants as osConstants } from 'node:os';
import type { ObservedStatus } from '../state/schemas.js';
import type { SandboxKind } from './sandbox.js';

/** How a supervised run ended, as its status reports it. */
export type LastExit = NonNullable<ObservedStatus['lastExit']>;

/** Wait for `promise` at most `ms`; true when it settled in time. The timer never outlives the wait. */
export async function settleWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** bwrap reports a child killed by signal N as exit code 128+N: turn that back into a signal. */
export function decodeExit(
  code: number | null,
  signal: NodeJS.Signals | null,
  kind: SandboxKind,
): { code: number | null; signal: string | null } {
  if (kind === 'bubblewrap' && code !== null && code > 128 && code <= 128 + 64) {
    const name = Object.entries(osConstants.signals).find(([, n]) => n === code - 128)?.[0];
    if (name !== undefined) return { code: null, signal: name };
  }
  return { code, signal };
}

export function describeExit(exit: LastExit): string {
  return exit.signal !== null ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
}
