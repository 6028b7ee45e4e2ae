import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Registry } from 'prom-client';
import { ServiceNetwork } from '../../src/agent/service-network.js';
import { ClusterState } from '../../src/state/cluster-state.js';
import { Origin } from '../../src/state/names.js';
import { ObservedView } from '../../src/state/observed-view.js';
import { defaultServiceRange } from '../../src/state/service-addresses.js';
import { WorkloadsView } from '../../src/state/workloads-view.js';
import { observedStatus, workloadSpec } from '../fixtures/state-records.js';
import { quietLogger } from '../fixtures/state-store.js';

function node(selfId: string) {
  const state = new ClusterState({ logger: quietLogger });
  const options = { state, logger: quietLogger, registry: new Registry() };
  const workloads = new WorkloadsView({ ...options, serviceRange: defaultServiceRange('10.42.0.0/16') });
  const observed = new ObservedView({ ...options, nodeId: selfId });
  const deferred: (() => void)[] = [];
  const network = new ServiceNetwork({
    selfId,
    workloads,
    observed,
    members: () => new Set(['n1', 'n2', 'n3']),
    logger: quietLogger,
    defer: (task) => deferred.push(task),
  });
  const flush = () => {
    while (deferred.length > 0) deferred.shift()?.();
  };
  return { state, workloads, observed, network, flush };
}

describe('ServiceNetwork (agent)', () => {
  test('repairs a spec that arrived without a claim, and routes the address to the observed holder', () => {
    const n1 = node('n1');
    n1.network.start();
    n1.flush();
    // A spec written by a writer that claims nothing (e.g. an agent without a service range).
    const plain = new WorkloadsView({ state: n1.state, logger: quietLogger, registry: new Registry() });
    plain.put(workloadSpec('web'));
    assert.equal(n1.workloads.serviceAddresses().get('web'), undefined);
    n1.flush();
    const address = n1.workloads.serviceAddresses().get('web') ?? '';
    assert.match(
      address,
      /^10\.42\.(12[89]|1[3-9][0-9]|2[0-5][0-9])\.\d+$/,
      'an address from the upper half',
    );
    assert.deepEqual(n1.network.peerRoutes(), new Map());

    let changes = 0;
    const off = n1.network.onChange(() => changes++);
    // Observed statuses of other nodes arrive by replication; here the view writes them as its own.
    const n2 = node('n2');
    n2.observed.setStatus('n2', 'web', observedStatus(1, { phase: 'running', epoch: 3 }));
    n1.state.applyRemote('observed', n2.state.encodeDiff('observed'), Origin.remote);
    assert.ok(changes > 0, 'a change of the observed document is a change of the routes');
    assert.deepEqual(n1.network.peerRoutes(), new Map([['n2', [`${address}/32`]]]));
    assert.equal(n1.network.holders().get(address)?.nodeId, 'n2');
    off();
    n1.network.stop();
  });
});
