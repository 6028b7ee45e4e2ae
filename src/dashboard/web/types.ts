/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
// The dashboard runs in a browser: its files need the DOM's types. A lib
// reference is program-wide in tsc, so node code could name DOM globals
// too; test/dashboard/dom-boundary.test.ts keeps them in src/dashboard/web/.
import type { NodeRow, OwnershipHealth, WorkloadRow } from '../../agent/api/views.js';
import type { AgentStatus } from '../../agent/node-agent.js';
import type { ConvergenceEstimate } from '../../agent/peer-digests.js';
import type { ConnectionInfo } from '../../gossip/index.js';

/**
 * The JSON the page reads, typed by the server's own view types (type-only
 * imports: esbuild erases them, nothing of the agent reaches the bundle).
 */
export type { NodeRow, WorkloadRow };

/** GET /v1/status (routes-cluster.ts). */
export type StatusBody = AgentStatus & {
  connections: ConnectionInfo[];
  now: number;
  convergence: ConvergenceEstimate | null;
  ownership: OwnershipHealth;
};

export interface Snapshot {
  status: StatusBody;
  nodes: NodeRow[];
  workloads: WorkloadRow[];
}

/** One server-sent event of GET /v1/events. */
export interface StreamEvent {
  event: string;
  data: Record<string, unknown>;
}
