import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { workloadRows } from '../../src/agent/api/views.js';
import type { NodeAgent } from '../../src/agent/node-agent.js';
import { signRevocation } from '../../src/identity/ca.js';
import type { EnrolledNode } from '../agent/enrolled-cluster.js';
import { LoopCluster, nameRankedFirst, nodesIn, waitFor, waitRunningOnOne } from './loop-cluster.js';

/**
 * Revoking the node that holds a service (outside testing: the service
 * stayed down for good). The revoked holder cannot renew its witness lease
 * (every node refuses it), so it fences; the others count it as gone at once
 * and take the workload over as soon as the witnesses' hold of its lease
 * ends. Real agents on loopback, real processes.
 */
describe('reconcile loop: a revoked holder', { timeout: 180_000 }, () => {
  const cluster = new LoopCluster();
  const nodes = new Map<string, EnrolledNode>();
  let first: NodeAgent;
  const ids = ['node-a', 'node-b', 'node-c'];
  const agent = (id: string) => cluster.agents.get(id)!;

  before(async () => {
    first = await cluster.startMesh(ids, nodes);
  });
  after(() => cluster.close());

  test('the workload moves off a revoked holder, and never runs twice', async () => {
    const name = nameRankedFirst('revoked', ids, 'node-b');
    first.workloads.put(await cluster.counterSpec(name));
    assert.equal(await waitRunningOnOne(first, name), 'node-b');
    let overlap = false;
    const watch = setInterval(() => {
      const running = ids.filter((id) => agent(id).reconciler!.runner.status(name)?.phase === 'running');
      if (running.length > 1) overlap = true;
    }, 20);
    try {
      first.enrollment.revoke(
        signRevocation(cluster.org.caPrivateKey, { nodeId: 'node-b', revokedAt: Date.now(), reason: 'test' }),
      );
      let taker = '';
      await waitFor(
        'node-a or node-c runs it',
        () => {
          taker = ['node-a', 'node-c'].find((id) => first.observed.get(id, name)?.phase === 'running') ?? '';
          return taker !== '';
        },
        60_000,
      );
      // node-b's own entry still says running (nobody accepts its updates any
      // more); what operators see leaves the revoked node out.
      assert.deepEqual(
        nodesIn(first, name, 'running').filter((id) => id !== 'node-b'),
        [taker],
      );
      assert.equal(workloadRows(first).find((row) => row.name === name)?.holder, taker);
      await waitFor(
        'node-b stopped its copy',
        () => agent('node-b').reconciler!.runner.status(name)?.phase !== 'running',
      );
    } finally {
      clearInterval(watch);
    }
    assert.equal(overlap, false, 'two copies ran at once');
    // node-b hears why nobody answers: a member handed it the revocation (or it arrived by gossip first).
    await waitFor('node-b knows it was revoked', () => agent('node-b').revocationOfSelf() !== null, 30_000);
    assert.deepEqual(agent('node-b').status().revoked?.reason, 'test');
    assert.equal(
      agent('node-b').trust?.isPeerAllowed(agent('node-a').gossip.peerId),
      false,
      'it cuts itself off',
    );
  });

  test('a revocation handed over by a member counts only with the CA signature', async () => {
    const nodeC = agent('node-c');
    const forged = signRevocation(generateKeyPairSync('ed25519').privateKey, {
      nodeId: 'node-c',
      revokedAt: Date.now(),
      reason: 'forged',
    });
    await first.gossip.notifyRevokedAndClose(nodeC.gossip.peerId, forged);
    await waitFor('node-a and node-c connected again', () =>
      first.gossip.peers().includes(nodeC.gossip.peerId),
    );
    assert.equal(nodeC.revocationOfSelf(), null, 'a forged revocation is ignored');
    assert.equal(nodeC.enrollment.revocation('node-c'), undefined);
    // The real one, handed over only (node-a's document does not hold it): node-c records it and learns.
    const real = signRevocation(cluster.org.caPrivateKey, {
      nodeId: 'node-c',
      revokedAt: Date.now(),
      reason: 'real',
    });
    await first.gossip.notifyRevokedAndClose(nodeC.gossip.peerId, real);
    assert.equal(first.enrollment.revocation('node-c'), undefined);
    await waitFor('node-c knows it was revoked', () => nodeC.revocationOfSelf()?.reason === 'real');
    await waitFor('node-c closed every connection', () => nodeC.gossip.peers().length === 0);
  });
});
