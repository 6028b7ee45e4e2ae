import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { NodeAgent } from '../../src/agent/node-agent.js';
import { silentLogger } from '../../src/util/logger.js';
import { type EnrolledNode, FAST_GOSSIP, ORG_NAME } from '../agent/enrolled-cluster.js';
import {
  entriesOf,
  LOOP_OPTIONS,
  LoopCluster,
  nameRankedFirst,
  waitFor,
  waitRunningOnOne,
} from './loop-cluster.js';

/**
 * Client-role records on a live cluster (docs/protocol.md, "Enrollment
 * roles"): two nodes, one client that runs (a tool's agent: gossip, no
 * reconciler) and three enrolled clients that never show up. Counted as
 * nodes, the six would need four acknowledgements for a lease and only
 * three agents run: the exclusive counter would never start, the absent
 * clients would be listed dead in every heartbeat, and placement could pick
 * the running client.
 */
describe('client-role records on a live cluster', { timeout: 180_000 }, () => {
  const cluster = new LoopCluster({ membership: { swim: true } });
  const NODES = ['node-a', 'node-b'];
  const CLIENTS = ['tool-1', 'tool-2', 'tool-3', 'tool-4'];
  let first: NodeAgent;
  let second: NodeAgent;
  let tool: NodeAgent;
  let toolNode: EnrolledNode;

  before(async () => {
    const a = await cluster.enroll('node-a');
    first = await cluster.startAgent(a);
    const seed = first.gossip.multiaddrs()[0]!;
    const b = await cluster.enroll('node-b', [seed]);
    first.enrollment.put(b.bundle.record);
    for (const id of CLIENTS) {
      const client = await cluster.enroll(id, [seed], 'client');
      first.enrollment.put(client.bundle.record);
      if (id === 'tool-1') toolNode = client;
    }
    second = await cluster.startAgent(b, b.bundle.seedPeers);
    // The client's agent is what a tool embeds: gossip and the documents, no reconciler, no SWIM.
    tool = await cluster.start(toolNode, toolNode.bundle.seedPeers);
    await waitFor('the nodes hear each other and the running client', () =>
      [first, second].every(
        (agent) =>
          agent.gossip.detector.nodesIn('alive').includes(agent === first ? 'node-b' : 'node-a') &&
          agent.gossip.detector.nodesIn('alive').includes('tool-1'),
      ),
    );
    await first.reconciler!.images.importFile((await cluster.counterImage()).tar);
  });
  after(() => cluster.close());

  test('a workload the client writes runs on a node, never on the client', async () => {
    // Ranked first onto the running client among every enrolled id: only the role keeps it off.
    const name = nameRankedFirst('counter', [...NODES, ...CLIENTS], 'tool-1');
    tool.workloads.put(await cluster.counterSpec(name));
    // An exclusive workload: it starts only under a quorum lease of the two nodes.
    const holder = await waitRunningOnOne(first, name);
    assert.ok(NODES.includes(holder), holder);
    await waitFor(
      'the client syncs the status back',
      () => entriesOf(tool, name).get(holder)?.phase === 'running',
    );
    for (const agent of [first, second, tool]) {
      for (const nodeId of entriesOf(agent, name).keys()) assert.ok(NODES.includes(nodeId), nodeId);
    }
  });

  test('the quorum counts the two nodes only: their acknowledgements alone prove the lease', async () => {
    for (const agent of [first, second]) {
      // Counted as nodes, the six enrolled would need three peers' acknowledgements; two peers run.
      const lease = agent.reconciler!.lease!;
      await waitFor(
        `${agent.nodeId} has acked-heartbeat quorum evidence`,
        () => lease.evidence(Date.now()).quorumVisible,
      );
      const liveness = lease.liveness(Date.now());
      assert.deepEqual([...liveness.keys()].sort(), NODES);
    }
  });

  test('heartbeats neither acknowledge clients nor list them dead', async () => {
    // Longer than dead_after since start: an absent member would be declared dead by now.
    await new Promise((resolve) => setTimeout(resolve, FAST_GOSSIP.deadAfterMs + 500));
    await waitFor('node-b has a heartbeat of node-a', () => second.gossip.heartbeatLedger.report('node-a'));
    const received = second.gossip.heartbeatLedger.report('node-a')!;
    for (const id of CLIENTS) assert.equal(received.dead.has(id), false, `${id} listed dead`);
    const next = first.gossip.heartbeatLedger.nextHeartbeat();
    assert.ok(next.acks.has('node-b'));
    for (const id of CLIENTS) {
      assert.equal(next.acks.has(id), false, `${id} acknowledged`);
      assert.equal(next.dead.has(id), false, `${id} listed dead`);
    }
    // The client is still heard (and admitted): it is just not counted.
    assert.ok(first.gossip.detector.nodesIn('alive').includes('tool-1'));
  });

  test('SWIM members are the nodes only', async () => {
    await waitFor(
      'node-a holds node-b as a SWIM member',
      () => first.swim!.stateOf('node-b')?.state === 'alive',
    );
    for (const agent of [first, second]) {
      const members = agent.swim!.view().map((m) => m.node);
      for (const id of CLIENTS) assert.ok(!members.includes(id), `${agent.nodeId} has ${id} as a member`);
    }
  });

  test('an agent with a client record refuses to run a reconciler or SWIM', async () => {
    const other = await cluster.enroll('tool-9', [], 'client');
    for (const extra of [{ reconciler: LOOP_OPTIONS }, { membership: { swim: true } }]) {
      await assert.rejects(
        NodeAgent.create({
          org: ORG_NAME,
          nodeId: other.nodeId,
          logger: silentLogger(),
          trust: { bundle: other.bundle },
          gossip: { ...FAST_GOSSIP, privateKey: other.identity.libp2pPrivateKey },
          ...extra,
        }),
        /enrolled as a client/,
      );
    }
  });
});
