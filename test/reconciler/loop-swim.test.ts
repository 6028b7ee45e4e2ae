import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { NodeAgent } from '../../src/agent/node-agent.js';
import type { EnrolledNode } from '../agent/enrolled-cluster.js';
import {
  entriesOf,
  LoopCluster,
  nameRankedFirst,
  nodesIn,
  waitFor,
  waitRunningOnOne,
} from './loop-cluster.js';

/**
 * `services.lease = "swim"` (docs/reconciler.md, "The liveness source"):
 * placement reads SWIM membership and heartbeats travel without acks. A
 * holder that is SIGKILLed is declared dead by SWIM and its exclusive
 * workload runs again on exactly one other node.
 */
describe('reconcile loop on SWIM liveness', { timeout: 240_000 }, () => {
  const cluster = new LoopCluster({
    gossip: { heartbeatAcks: false },
    // Not tighter: a 150 ms probe timeout let a busy machine (the child compiling with tsx) make node-c
    // suspect for a moment, and placement then chose node-b for the workload meant for node-c.
    membership: { swim: true, params: { probeIntervalMs: 600, probeTimeoutMs: 300 } },
    reconciler: { leaseKind: 'swim' },
  });
  const nodes = new Map<string, EnrolledNode>();
  const ids = ['node-a', 'node-b', 'node-c'];
  let first: NodeAgent;
  let second: NodeAgent;

  before(async () => {
    const started = await cluster.enrollAround(ids, nodes);
    first = started.first;
    const seed = started.seed;
    second = await cluster.startAgent(nodes.get('node-b')!, [seed]);
    await cluster.startChild(nodes.get('node-c')!, [seed]);
    await waitFor('SWIM on both in-process agents sees the two others alive', () =>
      [first, second].every(
        (agent) => agent.swim?.view().filter((member) => member.state === 'alive').length === 2,
      ),
    );
    await first.reconciler!.images.importFile((await cluster.counterImage()).tar);
  });
  after(() => cluster.close());

  test('placement reads SWIM; heartbeats carry no acks', async () => {
    assert.equal(first.reconciler!.livenessKind, 'swim');
    assert.equal(second.reconciler!.livenessKind, 'swim');
    await waitFor(
      'node-a heard node-b heartbeats',
      () => first.gossip.heartbeatLedger.report('node-b') !== undefined,
    );
    // Without acks nobody proves anything about our heartbeats: the report of a peer has no ack of us.
    assert.equal(first.gossip.heartbeatLedger.report('node-b')?.ackOfSelf, undefined);
  });

  test('a SIGKILLed holder is declared dead by SWIM and its exclusive workload runs on one other node', async () => {
    // A busy machine can make node-c suspect for a moment while the spec is placed (the child compiles with
    // tsx; probes time out after 300 ms), and placement then rightly picks another node. This test is about
    // the crash of the holder, so it places again under a new name until the workload runs on node-c, the
    // child it can SIGKILL.
    let name = '';
    for (let attempt = 0; ; attempt++) {
      name = nameRankedFirst(`swim-crash-${attempt}`, ids, 'node-c');
      first.workloads.put(await cluster.counterSpec(name));
      const holder = await waitRunningOnOne(first, name);
      if (holder === 'node-c') break;
      assert.ok(attempt < 3, `${name} placed on ${holder} instead of node-c, ${attempt + 1} times`);
      first.workloads.delete(name);
      const gone = name;
      await waitFor(`${gone} stopped and forgotten`, () =>
        [first, second].every((agent) => entriesOf(agent, gone).size === 0),
      );
    }
    await cluster.crashChild('node-c');
    await waitFor(
      'SWIM on node-a and node-b declares node-c dead',
      () => [first, second].every((agent) => agent.swim?.stateOf('node-c')?.state === 'dead'),
      60_000,
    );
    // Never two live copies: node-a and node-b each report only their own entry, so watch both.
    let twice = false;
    const watch = setInterval(() => {
      const live = ['node-a', 'node-b'].filter(
        (id) => nodesIn(first, name, 'running').includes(id) || nodesIn(second, name, 'running').includes(id),
      );
      if (live.length > 1) twice = true;
    }, 50);
    try {
      await waitFor(
        `${name} running on node-a or node-b`,
        () => ['node-a', 'node-b'].some((id) => nodesIn(first, name, 'running').includes(id)),
        90_000,
      );
    } finally {
      clearInterval(watch);
    }
    assert.equal(twice, false, 'the workload ran on two live nodes at once');
  });
});
