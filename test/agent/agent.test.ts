import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { NodeAgent } from '../../src/agent/node-agent.js';
import { signRevocation } from '../../src/identity/ca.js';
import type { WorkloadSpec } from '../../src/state/schemas.js';
import { silentLogger } from '../../src/util/logger.js';
import { EnrolledCluster, type EnrolledNode, FAST_GOSSIP, ORG_NAME, waitFor } from './enrolled-cluster.js';

function spec(name: string): Omit<WorkloadSpec, 'revision'> {
  return {
    name,
    tier: 'org-service',
    image: 'example',
    imageDigest: `sha256:${'a'.repeat(64)}`,
    imageSignature: 'c2lnbmF0dXJl',
    command: '/bin/service',
    args: [],
    env: {},
    scratchMb: 16,
    scratchClass: 'persistent',
    network: 'overlay',
    cpus: 0.5,
    memoryMb: 64,
    restart: 'always',
    stopSignal: 'SIGTERM',
    stopTimeoutMs: 10_000,
    startTimeoutMs: 30_000,
    constraints: {},
    onPartition: 'stop',
  };
}

describe('enrolled agents on loopback', () => {
  const cluster = new EnrolledCluster();
  const nodes: EnrolledNode[] = [];
  let first: NodeAgent;

  before(async () => {
    nodes.push(await cluster.enroll('node-a'));
    first = await cluster.start(nodes[0]!);
    const seed = first.gossip.multiaddrs()[0]!;
    for (const id of ['node-b', 'node-c']) {
      const node = await cluster.enroll(id, [seed]);
      // The operator publishes the signed record through a running agent
      // (`silo enroll`), so the org admits the node before it dials in.
      first.enrollment.put(node.bundle.record);
      nodes.push(node);
    }
    for (const node of nodes.slice(1)) await cluster.start(node, node.bundle.seedPeers);
  });
  after(() => cluster.close());

  const agents = () => [...cluster.agents.values()];
  /** Connections this agent's gate refused, every stage together. */
  const deniedConnections = async (agent: NodeAgent): Promise<number> => {
    const metric = await agent.registry.getSingleMetric('silo_connections_denied_total')?.get();
    return (metric?.values ?? []).reduce((sum, v) => sum + v.value, 0);
  };
  /** A member's write that every agent in `among` must see: what was sent before it had its chance. */
  const sentinelEverywhere = async (name: string, among: NodeAgent[] = agents()): Promise<void> => {
    among[0]!.workloads.put(spec(name));
    await waitFor(`the sentinel ${name} everywhere`, () =>
      among.every((agent) => agent.workloads.get(name) !== undefined),
    );
  };
  const converged = () => agents().every((a) => a.sameStateAs(first));

  test('writes on every enrolled agent converge, and every agent sees three active nodes', async () => {
    for (const [i, agent] of agents().entries()) agent.workloads.put(spec(`svc-${i}`));
    await waitFor('convergence', () => converged() && agents().every((a) => a.workloads.list().length === 3));
    for (const agent of agents()) {
      assert.deepEqual(
        agent.trust?.active().active.map((r) => r.nodeId),
        ['node-a', 'node-b', 'node-c'],
      );
    }
  });

  test('an agent restarted from disk keeps every acknowledged write and rejoins', async () => {
    const node = nodes[1]!;
    const agent = cluster.agents.get(node.nodeId)!;
    agent.workloads.put(spec('written-before-restart'));
    const digests = agent.state.digestsAll();
    await cluster.stop(node.nodeId);
    const restarted = await cluster.start(node, node.bundle.seedPeers);
    assert.equal(restarted.workloads.get('written-before-restart')?.name, 'written-before-restart');
    // Nothing was lost: the restored documents contain everything acknowledged before the stop.
    for (const doc of ['workloads', 'observed'] as const)
      assert.equal(restarted.state.digest(doc), digests[doc]);
    await waitFor('restarted agent reconnected', () => restarted.gossip.peers().length >= 1);
    restarted.workloads.put(spec('written-after-restart'));
    await waitFor('post-restart write everywhere', () =>
      agents().every((a) => a.workloads.get('written-after-restart') !== undefined),
    );
  });

  test('an unenrolled agent that knows every address cannot connect or inject a write', async () => {
    const intruder = await NodeAgent.create({
      org: ORG_NAME,
      nodeId: 'intruder',
      logger: silentLogger(),
      gossip: { ...FAST_GOSSIP, bootstrap: agents().map((a) => a.gossip.multiaddrs()[0]!) },
    });
    try {
      await intruder.start();
      // The dial may complete on the intruder's side before the agent's gate
      // (which runs once noise has authenticated the peer id) closes it.
      for (const agent of agents())
        await intruder.gossip.dial(agent.gossip.multiaddrs()[0]!).catch(() => undefined);
      await waitFor('every agent refused the intruder', () => intruder.gossip.peers().length === 0, 10_000);
      intruder.workloads.put(spec('injected'));
      // Barrier, not a sleep: after the write the intruder tries every agent again and each one refuses
      // it (its gate counts the denial), and a write of a member's reaches every agent afterwards.
      const deniedBefore = await Promise.all(agents().map(deniedConnections));
      for (const agent of agents())
        await intruder.gossip.dial(agent.gossip.multiaddrs()[0]!).catch(() => undefined);
      await waitFor('every agent refused the intruder again after its write', async () => {
        const denied = await Promise.all(agents().map(deniedConnections));
        return denied.every((n, i) => n > deniedBefore[i]!) && intruder.gossip.peers().length === 0;
      });
      await sentinelEverywhere('after-intruder');
      for (const agent of agents()) {
        assert.equal(agent.workloads.get('injected'), undefined);
        assert.ok(
          !agent.gossip.peers().includes(intruder.gossip.peerId),
          `${agent.nodeId} admitted the intruder`,
        );
      }
    } finally {
      await intruder.stop();
    }
  });

  test('a revoked node loses its connections everywhere and its later writes are refused', async () => {
    const victim = cluster.agents.get('node-c')!;
    const others = agents().filter((a) => a !== victim);
    const revocation = signRevocation(cluster.org.caPrivateKey, {
      nodeId: 'node-c',
      revokedAt: Date.now(),
      reason: 'decommissioned',
    });
    first.enrollment.revoke(revocation);
    // The revoked node, once handed its revocation, closes its side too; so
    // wait for the revocation itself everywhere, not only for the closes.
    await waitFor(
      'others dropped the revoked node and closed their connections to it',
      () =>
        others.every(
          (a) =>
            !a.trust?.active().byNodeId.has('node-c') && !a.gossip.peers().includes(victim.gossip.peerId),
        ),
      10_000,
    );
    await waitFor('the revoked node knows it', () => victim.revocationOfSelf()?.reason === 'decommissioned');
    victim.workloads.put(spec('from-revoked'));
    // Barrier, not a sleep: the revoked node cannot even dial a member (its own gate refuses), and a
    // member's write made after it reaches every other member.
    await victim.gossip.dial(first.gossip.multiaddrs()[0]!).catch(() => undefined);
    assert.equal(victim.gossip.peers().length, 0, 'the revoked node has no connection');
    await sentinelEverywhere('after-revoked', others);
    for (const agent of others) assert.equal(agent.workloads.get('from-revoked'), undefined);
  });

  test('a bundle for another node or key is refused at start with a clear error', async () => {
    const node = nodes[0]!;
    const other = await cluster.enroll('node-z');
    await assert.rejects(
      NodeAgent.create({
        org: ORG_NAME,
        nodeId: 'node-a',
        logger: silentLogger(),
        trust: { bundle: other.bundle },
        gossip: { privateKey: node.identity.libp2pPrivateKey },
      }),
      /bundle is for node "node-z".*bundle names peer/,
    );
  });
});
