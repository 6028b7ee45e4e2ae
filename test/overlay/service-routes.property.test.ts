import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Registry } from 'prom-client';
import { peerServiceRoutes, serviceHolders } from '../../src/overlay/service-routes.js';
import { ClusterState } from '../../src/state/cluster-state.js';
import { Origin } from '../../src/state/names.js';
import { ObservedView } from '../../src/state/observed-view.js';
import { type Phase, PhaseSchema } from '../../src/state/schemas.js';
import { observedStatus } from '../fixtures/state-records.js';
import { quietLogger } from '../fixtures/state-store.js';

/*
 * Routing from state (src/overlay/service-routes.ts): replicas of the
 * observed document, each written only by its own node, exchange updates in
 * any order; every node computes its WireGuard peers' extra AllowedIPs.
 *   R1. on every node, at every moment, each service address is routed to at
 *       most one peer (and never to a peer when the node holds it itself);
 *   R2. once the replicas have converged, all nodes route each address to
 *       the same node (the holder routes it locally, nobody else to itself).
 */

const SEED = Number(process.env.SERVICE_ROUTES_SEED ?? 20_261_204);
const NODES = ['n1', 'n2', 'n3', 'n4'] as const;
const WORKLOADS = new Map([
  ['web', '10.0.128.1'],
  ['db', '10.0.128.2'],
  ['cache', '10.0.128.3'],
]);

interface Replica {
  nodeId: string;
  state: ClusterState;
  observed: ObservedView;
}

function replicas(): Replica[] {
  return NODES.map((nodeId) => {
    const state = new ClusterState({ logger: quietLogger });
    return {
      nodeId,
      state,
      observed: new ObservedView({ state, logger: quietLogger, registry: new Registry(), nodeId }),
    };
  });
}

function send(from: Replica, to: Replica): void {
  to.state.applyRemote(
    'observed',
    from.state.encodeDiff('observed', to.state.encodeStateVector('observed')),
    Origin.remote,
  );
}

type Op =
  | { k: 'status'; node: number; workload: string; phase: Phase; epoch: number | null }
  | { k: 'send'; from: number; to: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    k: fc.constant('status' as const),
    node: fc.nat(NODES.length - 1),
    workload: fc.constantFrom(...WORKLOADS.keys()),
    phase: fc.constantFrom(...PhaseSchema.options),
    epoch: fc.option(fc.integer({ min: 1, max: 4 }), { nil: null }),
  }),
  fc.record({
    k: fc.constant('send' as const),
    from: fc.nat(NODES.length - 1),
    to: fc.nat(NODES.length - 1),
  }),
);

function routesOf(replica: Replica, members: ReadonlySet<string>) {
  const holders = serviceHolders({ addresses: WORKLOADS, observed: replica.observed.listAll(), members });
  return { holders, peers: peerServiceRoutes(holders, replica.nodeId) };
}

function checkAtMostOnePeer(replica: Replica, peers: Map<string, string[]>): void {
  assert.equal(peers.has(replica.nodeId), false, 'a node never routes to itself');
  const seen = new Set<string>();
  for (const list of peers.values()) {
    for (const route of list) {
      assert.equal(seen.has(route), false, `${replica.nodeId} routes ${route} to two peers`);
      seen.add(route);
    }
  }
}

describe('service routes from the observed document', () => {
  test('R1 at every step, R2 once converged', () => {
    fc.assert(
      fc.property(
        fc.array(opArb, { maxLength: 50 }),
        fc.subarray([...NODES], { minLength: 1 }),
        (ops, members) => {
          const nodes = replicas();
          const memberSet = new Set<string>(members);
          let since = 1;
          for (const op of ops) {
            if (op.k === 'status') {
              const node = nodes[op.node]!;
              node.observed.setStatus(
                node.nodeId,
                op.workload,
                observedStatus(since++, { phase: op.phase, epoch: op.epoch }),
              );
            } else if (op.from !== op.to) send(nodes[op.from]!, nodes[op.to]!);
            for (const node of nodes) checkAtMostOnePeer(node, routesOf(node, memberSet).peers);
          }
          for (const a of nodes) for (const b of nodes) if (a !== b) send(a, b);
          const reference = routesOf(nodes[0]!, memberSet).holders;
          for (const node of nodes) {
            const { holders, peers } = routesOf(node, memberSet);
            checkAtMostOnePeer(node, peers);
            assert.deepEqual(
              [...holders].sort(),
              [...reference].sort(),
              `${node.nodeId} picks other holders`,
            );
            for (const holder of holders.values()) {
              const routedTo = [...peers]
                .filter(([, list]) => list.includes(`${holder.address}/32`))
                .map(([id]) => id);
              assert.deepEqual(routedTo, holder.nodeId === node.nodeId ? [] : [holder.nodeId]);
              assert.ok(memberSet.has(holder.nodeId));
            }
          }
        },
      ),
      { seed: SEED, numRuns: 300 },
    );
  });

  test('a move: the address leaves the old holder and follows the higher epoch', () => {
    const [n1, n2, n3] = replicas() as [Replica, Replica, Replica, Replica];
    const members = new Set<string>(NODES);
    n1.observed.setStatus('n1', 'web', observedStatus(1, { phase: 'running', epoch: 1 }));
    send(n1, n3);
    assert.deepEqual(routesOf(n3, members).peers, new Map([['n1', ['10.0.128.1/32']]]));
    // Drain: n1 stops and releases, n2 takes the lease with a higher ballot and starts.
    n1.observed.setStatus('n1', 'web', observedStatus(2, { phase: 'stopping', epoch: 1 }));
    n2.observed.setStatus('n2', 'web', observedStatus(3, { phase: 'starting', epoch: 2 }));
    send(n1, n3);
    send(n2, n3);
    assert.deepEqual(routesOf(n3, members).peers, new Map([['n2', ['10.0.128.1/32']]]));
    n1.observed.setStatus('n1', 'web', observedStatus(4, { phase: 'released', epoch: null }));
    send(n2, n1);
    assert.deepEqual(routesOf(n1, members).peers, new Map([['n2', ['10.0.128.1/32']]]));
    assert.equal(routesOf(n2, members).peers.size, 0, 'the holder routes its address locally');
  });

  test('a revoked or inactive node routes nothing, whatever it claims', () => {
    const [n1, , n3] = replicas() as [Replica, Replica, Replica, Replica];
    n1.observed.setStatus('n1', 'web', observedStatus(1, { phase: 'running', epoch: 9 }));
    send(n1, n3);
    assert.equal(routesOf(n3, new Set(['n2', 'n3'])).peers.size, 0);
  });
});
