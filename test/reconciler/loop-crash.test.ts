import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { NodeAgent } from '../../src/agent/node-agent.js';
import { replicaNodes } from '../../src/reconciler/checkpoints.js';
import type { EnrolledNode } from '../agent/enrolled-cluster.js';
import { entriesOf, LoopCluster, nameRankedFirst, readCount, waitFor } from './loop-cluster.js';

/** pids of live counter processes whose working directory (STATE_DIRECTORY) is under `root`. */
function countersUnder(root: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (!cmdline.includes('counter.sh') || state === 'Z') continue;
      if (readlinkSync(`/proc/${entry}/cwd`).startsWith(root)) pids.push(Number(entry));
    } catch {
      // raced with its exit
    }
  }
  return pids;
}

describe('reconcile loop: a crashed holder', { timeout: 240_000 }, () => {
  const cluster = new LoopCluster();
  const nodes = new Map<string, EnrolledNode>();
  let first: NodeAgent;
  const ids = ['node-a', 'node-b', 'node-c'];
  const inProcess = () => [...cluster.agents.values()];

  before(async () => {
    const started = await cluster.enrollAround(ids, nodes);
    first = started.first;
    const seed = started.seed;
    await cluster.startAgent(nodes.get('node-b')!, [seed]);
    // node-c runs in a process of its own so that it can really crash.
    await cluster.startChild(nodes.get('node-c')!, [seed]);
    await waitFor('every agent hears the two others', () =>
      inProcess().every((agent) => agent.gossip.detector.nodesIn('alive').length === 2),
    );
    await first.reconciler!.images.importFile((await cluster.counterImage()).tar);
  });
  after(() => cluster.close());

  test('crash: workloads run elsewhere after dead_after from their newest checkpoints; a restart leaves one copy', async () => {
    // Both held by node-c. `local`'s checkpoint replica is node-a; `remote`'s
    // is node-b, which drains before the crash, so node-a takes both over:
    // one from its own copy, the other fetched from the replica.
    const local = nameRankedFirst('crash-local', ids, 'node-c', 'node-a');
    const remote = nameRankedFirst('crash-remote', ids, 'node-c', 'node-b');
    assert.deepEqual(replicaNodes(local, 'node-c', ['node-a', 'node-b'], 1), ['node-a']);
    assert.deepEqual(replicaNodes(remote, 'node-c', ['node-a', 'node-b'], 1), ['node-b']);
    const replicaOf = { [local]: 'node-a', [remote]: 'node-b' };
    const cDir = nodes.get('node-c')!.dataDir;
    for (const name of [local, remote]) first.workloads.put(await cluster.counterSpec(name));
    for (const name of [local, remote]) {
      await waitFor(
        `${name} running on node-c`,
        () => entriesOf(first, name).get('node-c')?.phase === 'running',
        60_000,
      );
    }
    await waitFor(
      'node-c counts to 10',
      async () => (await readCount(cDir, remote)) >= 10 && (await readCount(cDir, local)) >= 10,
    );
    // Equal states make equal (content-addressed) snapshots: tell the two apart.
    for (const name of [local, remote]) {
      await writeFile(join(cDir, 'services', name, 'state', 'workload'), `${name}\n`);
    }
    const countedTo10At = Date.now();
    for (const name of [local, remote]) {
      const replica = cluster.agents.get(replicaOf[name]!)!;
      await waitFor(
        `${replica.nodeId} keeps a checkpoint of ${name} taken after its count reached 10`,
        async () => {
          const ref = entriesOf(first, name).get('node-c')?.snapshot;
          return (
            ref != null &&
            ref.at >= countedTo10At &&
            (await replica.reconciler!.snapshotStore.has(ref.digest))
          );
        },
        30_000,
      );
    }
    first.enrollment.setDraining('node-b', { draining: true, at: Date.now(), by: 'test' });
    await waitFor('node-b drains everywhere', () =>
      [...cluster.agents.values()].every((a) => a.enrollment.isDraining('node-b')),
    );
    const atCrash = await readCount(cDir, remote);

    await cluster.crashChild('node-c');
    // Its services may outlive it (own process groups) until their next write to the dead agent's pipe.
    assert.ok(countersUnder(cDir).length <= 2);

    const aDir = nodes.get('node-a')!.dataDir;
    for (const name of [local, remote]) {
      await waitFor(
        `node-a runs ${name}`,
        () => entriesOf(first, name).get('node-a')?.phase === 'running',
        60_000,
      );
      const status = entriesOf(first, name).get('node-a')!;
      assert.match(
        status.reason ?? '',
        /took over from node-c: restored its checkpoint of .*writes after it are lost/,
      );
      const restored = await readCount(aDir, name);
      // From a checkpoint, not from empty: at least the count the replica had seen.
      assert.ok(restored >= 10, `${name}: restored count ${restored} should be at least 10`);
    }
    assert.ok((await readCount(aDir, remote)) <= atCrash + 200, 'the count came from node-c');
    assert.match(entriesOf(first, remote).get('node-a')!.reason ?? '', /fetched from node-b/);
    assert.doesNotMatch(entriesOf(first, local).get('node-a')!.reason ?? '', /fetched from/);
    const restores = await first.registry.getSingleMetricAsString('silo_reconcile_restores_total');
    assert.match(restores, /source="checkpoint"} 2/);

    // The crashed agent comes back on the same data directory: it reaps its
    // orphans, sees the workloads running on node-a and forgets its entries.
    await cluster.startChild(nodes.get('node-c')!, [first.gossip.multiaddrs()[0]!]);
    for (const name of [local, remote]) {
      await waitFor(`node-c forgets ${name}`, () => !entriesOf(first, name).has('node-c'), 60_000);
    }
    await waitFor('no orphan left on node-c', () => countersUnder(cDir).length === 0, 30_000);
    const everywhere = countersUnder(cluster.root);
    assert.equal(everywhere.length, 2, `one counter process per workload (pids ${everywhere.join(', ')})`);
    for (const name of [local, remote]) {
      const running = [...entriesOf(first, name)].filter(([, s]) => s.phase === 'running').map(([id]) => id);
      assert.deepEqual(running, ['node-a']);
    }
  });
});
