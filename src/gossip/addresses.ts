import { multiaddr } from '@multiformats/multiaddr';

/** Why `value` is not a multiaddr, or null when it is one (for validators outside src/gossip). */
export function multiaddrProblem(value: string): string | null {
  try {
    multiaddr(value);
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}
