import type { ServerResponse } from 'node:http';
import type { ImageStore } from '../../reconciler/image-store.js';
import type { NodeAgent } from '../node-agent.js';
import type { PeerDigests } from '../peer-digests.js';

/** What the route handlers work with (one per API, shared by its listeners). */
export interface RouteContext {
  agent: NodeAgent;
  /** The agent's data directory: service logs live under <dataDir>/services/<name>/logs. */
  dataDir: string;
  /** The org CA public key (base64): revocations, enrollment records and image signatures are checked with it. */
  caPublicKey?: string;
  /** The org's overlay CIDR: enrollment records outside it are refused. */
  overlayCidr?: string;
  images?: ImageStore;
  peerDigests?: PeerDigests;
  /** The scratch key generations this node holds (docs/security.md, "Encrypted scratch"); absent on clients. */
  scratchKeyGenerations?: () => number[];
  maxImageBytes: number;
  /** services.max_stop_timeout, ms: the longest stop_timeout an exclusive workload may have (lease-bounds.ts). */
  maxStopTimeoutMs: number;
  /** Long-lived responses (event streams, log follows), ended when the API closes. */
  streams: Set<ServerResponse>;
}
