import type { NodeAgent } from '../../src/agent/node-agent.js';
import type { Capacity } from '../../src/state/schemas.js';

const UNSIGNED = Buffer.from('unsigned: the simulator runs without enrollment trust').toString('base64');

/**
 * The simulator's stand-in for the CA (docs/sim.md): the witness
 * configuration as it issued it last, written into agents' enrollment
 * documents (version 1 at the first agent's start).
 */
export class SimWitnessIssuer {
  private config: { version: number; witnesses: string[] } | null = null;

  /** The witnesses of the configuration issued last (empty before the first agent started). */
  witnesses(): string[] {
    return [...(this.config?.witnesses ?? [])];
  }

  /** Version 1, issued once: what every agent's bundle would carry. */
  issueInitial(witnesses: readonly string[]): void {
    if (this.config === null) this.config = { version: 1, witnesses: [...witnesses].sort() };
  }

  /** The next configuration; returns its version. */
  issue(witnesses: readonly string[]): number {
    const version = (this.config?.version ?? 0) + 1;
    this.config = { version, witnesses: [...witnesses].sort() };
    return version;
  }

  /** Writes the latest configuration through `agent` unless it already knows it or a later one. */
  writeTo(agent: NodeAgent): void {
    const config = this.config;
    if (config === null) return;
    const known = agent.enrollment.witnessConfig();
    if (known !== null && known.version >= config.version) return;
    agent.enrollment.putWitnessConfig({ ...config, issuedAt: Date.now(), cert: UNSIGNED });
  }
}

/**
 * Without an enrollment bundle (the simulator admits every peer) nobody
 * writes a node's record, so each agent writes its own, as EnrollmentTrust
 * does for enrolled agents: placement needs it (capacity, labels).
 */
export function enrollSelf(
  agent: NodeAgent,
  node: { name: string; index: number; peerId: string },
  capacity: Capacity,
  /** Its libp2p listen address on the simulated network: peers dial it from the record. */
  address: string,
): void {
  const existing = agent.enrollment.get(node.name);
  if (existing?.peerId === node.peerId && existing.endpoints.includes(address)) return;
  agent.enrollment.put({
    nodeId: node.name,
    peerId: node.peerId,
    wgPublicKey: Buffer.alloc(32, node.index % 256).toString('base64'),
    overlayIp: `10.${(node.index >> 16) & 255}.${(node.index >> 8) & 255}.${node.index & 255}`,
    endpoints: [address],
    capacity,
    labels: { sim: 'true' },
    issuedAt: Date.now(),
    cert: UNSIGNED,
  });
}
