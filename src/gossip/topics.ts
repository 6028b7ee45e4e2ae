import { DOC_NAMES, type DocName } from '../state/names.js';
import { ORG_NAME_PATTERN } from '../state/schemas.js';

/** Anti-entropy stream protocol (docs/protocol.md, "Anti-entropy sync"). */
export const SYNC_PROTOCOL = '/silo/sync/1';

/**
 * An org name appears inside topic strings, so it may not contain `/` or
 * anything that would make two orgs' topics collide or a topic ambiguous.
 */
const ORG_PATTERN = ORG_NAME_PATTERN;

export function assertOrgName(org: string): void {
  if (!ORG_PATTERN.test(org)) {
    throw new Error(`invalid org name "${org}": expected ${ORG_PATTERN} (lower-case letters, digits, . _ -)`);
  }
}

/** `/silo/<org>/<doc>/1`: the gossip topic that carries one document's updates. */
export function docTopic(org: string, doc: DocName): string {
  assertOrgName(org);
  return `/silo/${org}/${doc}/1`;
}

/** `/silo/<org>/liveness/1`: heartbeats. */
export function livenessTopic(org: string): string {
  assertOrgName(org);
  return `/silo/${org}/liveness/1`;
}

/** Every topic a node of `org` subscribes to. */
export function orgTopics(org: string): { docs: Record<DocName, string>; liveness: string; all: string[] } {
  const docs = {} as Record<DocName, string>;
  for (const name of DOC_NAMES) docs[name] = docTopic(org, name);
  const liveness = livenessTopic(org);
  return { docs, liveness, all: [...Object.values(docs), liveness] };
}
