/** The three replicated documents every org holds (docs/protocol.md, "Documents"). */
export const DOC_NAMES = ['enrollment', 'workloads', 'observed'] as const;
export type DocName = (typeof DOC_NAMES)[number];

export function isDocName(value: unknown): value is DocName {
  return typeof value === 'string' && (DOC_NAMES as readonly string[]).includes(value);
}

/**
 * Yjs transaction origins. The replicator publishes `local` updates, and
 * relays `catchUp` ones: what an anti-entropy session with a node heard again
 * after being dead (a healed partition, a restart) added here, which the rest
 * of our side most likely lacks too. `remote` (gossip) and `sync` (other
 * anti-entropy) updates are persisted but not re-published, and `load` marks
 * the replay of the durable log at start-up.
 */
export const Origin = {
  local: 'silo:local',
  remote: 'silo:remote',
  sync: 'silo:sync',
  catchUp: 'silo:catch-up',
  load: 'silo:load',
  /** Not a transaction's: what view listeners hear after a document moved to another epoch (docs/epochs.md). */
  epoch: 'silo:epoch',
} as const;
export type OriginName = (typeof Origin)[keyof typeof Origin];
