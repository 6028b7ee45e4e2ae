/** Values `waitFor` resolves with: whatever `check` returned, minus the falsy cases it kept polling through. */
export type Truthy<T> = Exclude<T, false | 0 | '' | null | undefined>;

/**
 * Polls `check` every `pollMs` until it returns a truthy value, and resolves
 * with that value. A `check` that throws is polled again (a peer that is
 * still starting may refuse a request); after `timeoutMs` the wait fails,
 * naming `what` and the last error seen. Tests wait on behaviour, never on
 * fixed sleeps, so a slow machine makes a test slower, not red.
 */
export async function waitFor<T>(
  what: string,
  check: () => T | Promise<T>,
  timeoutMs = 30_000,
  pollMs = 25,
): Promise<Truthy<T>> {
  const started = Date.now();
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as Truthy<T>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() - started > timeoutMs) {
      const cause = lastError === undefined ? '' : `: ${(lastError as Error).message ?? String(lastError)}`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${cause}`);
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}
