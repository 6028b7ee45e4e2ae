import { pino } from 'pino';
import { Registry } from 'prom-client';
import type { Heartbeat, HeartbeatAck } from '../../src/gossip/heartbeat.js';
import { GossipLayer, type GossipLayerOptions } from '../../src/gossip/index.js';
import { ClusterState } from '../../src/state/cluster-state.js';
import { DOC_NAMES } from '../../src/state/names.js';
import { FAST_GOSSIP } from '../helpers/fast-timings.js';

export const ORG = 'testorg';
export const silentLogger = pino({ level: 'silent' });

export interface TestNode {
  nodeId: string;
  state: ClusterState;
  registry: Registry;
  gossip: GossipLayer;
}

export type NodeOverrides = Partial<
  Omit<GossipLayerOptions, 'org' | 'nodeId' | 'state' | 'logger' | 'registry'>
> & {
  maxUpdateBytes?: number;
  maxSyncUpdateBytes?: number;
  /** A state built beforehand (it must carry this node's id); default: a fresh memory-only one. */
  state?: ClusterState;
};

/** Small timings so tests finish quickly; real libp2p over loopback TCP. */
export const FAST: NodeOverrides = FAST_GOSSIP;

export async function startNode(nodeId: string, overrides: NodeOverrides = {}): Promise<TestNode> {
  const node = await createNode(nodeId, overrides);
  await node.gossip.start();
  return node;
}

/** A node whose gossip layer is created but not started (what an agent has before its start). */
export async function createNode(nodeId: string, overrides: NodeOverrides = {}): Promise<TestNode> {
  const { maxUpdateBytes, maxSyncUpdateBytes, state: given, ...gossipOverrides } = overrides;
  const state =
    given ?? new ClusterState({ logger: silentLogger, nodeId, maxUpdateBytes, maxSyncUpdateBytes });
  const registry = new Registry();
  const gossip = await GossipLayer.create({
    org: ORG,
    nodeId,
    state,
    logger: silentLogger,
    registry,
    ...FAST,
    ...gossipOverrides,
  });
  return { nodeId, state, registry, gossip };
}

/** Starts `n` nodes; each dials the first node, so the cluster is connected from the start. */
export async function startCluster(n: number, overrides: NodeOverrides = {}): Promise<TestNode[]> {
  const nodes: TestNode[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const bootstrap = nodes.length > 0 ? [nodes[0]!.gossip.multiaddrs()[0]!] : [];
      nodes.push(await startNode(`node-${i}`, { bootstrap, ...overrides }));
    }
  } catch (err) {
    await stopAll(nodes);
    throw err;
  }
  return nodes;
}

export async function stopAll(nodes: TestNode[]): Promise<void> {
  await Promise.allSettled(nodes.map((n) => stopNode(n)));
}

export async function stopNode(node: TestNode): Promise<void> {
  await node.gossip.stop();
  await node.state.close();
}

export { waitFor } from '../helpers/wait.js';

export function digestsEqual(nodes: TestNode[]): boolean {
  const first = nodes[0]!.state.digestsAll();
  return nodes.every((n) => {
    const d = n.state.digestsAll();
    return DOC_NAMES.every((doc) => d[doc] === first[doc]);
  });
}

/** Writes `key = value` into the workloads document's `specs` map on `node`. */
export function writeSpec(node: TestNode, key: string, value: unknown): void {
  node.state.transactLocal('workloads', (doc) => doc.getMap('specs').set(key, value));
}

export function readSpec(node: TestNode, key: string): unknown {
  return node.state.doc('workloads').getMap('specs').get(key);
}

export async function metricValue(
  node: TestNode,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const metric = node.registry.getSingleMetric(name);
  if (!metric) return 0;
  const { values } = await metric.get();
  let total = 0;
  for (const v of values) {
    const vl = v.labels as Record<string, string | number>;
    if (Object.entries(labels).every(([k, val]) => String(vl[k]) === val)) total += v.value;
  }
  return total;
}

/** A decoded heartbeat from `nodeId` (org "acme"), as the ledger tests feed it; `acks`/`dead` as entry lists. */
export function heartbeatFrom(
  nodeId: string,
  incarnation: number,
  seq: number,
  extra: { acks?: [string, HeartbeatAck][]; dead?: [string, number][] } = {},
): Heartbeat {
  return {
    v: 1,
    org: 'acme',
    nodeId,
    incarnation,
    seq,
    digests: { enrollment: 'a', workloads: 'b', observed: 'c' },
    sentAt: 0,
    addrs: [],
    acks: new Map(extra.acks ?? []),
    dead: new Map(extra.dead ?? []),
  };
}
