import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type DetectionCluster, DetectionWatch } from '../../sim/harness/detection-watch.js';
import type { FaultEvent } from '../../sim/harness/sim-cluster.js';

/** A scripted cluster: the test sets each viewer's SWIM view and fires faults. */
function scripted() {
  const listeners = new Set<(e: FaultEvent) => void>();
  const views = new Map<string, Map<string, 'alive' | 'suspect' | 'dead'>>();
  let live = ['a', 'b', 'c'];
  const cluster: DetectionCluster = {
    onFault: (l) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
    live: () => live,
    swimStateOf: (viewer, node) => views.get(viewer)?.get(node) ?? null,
  };
  return {
    cluster,
    fault: (kind: FaultEvent['kind'], node: string, at: number) => {
      if (kind === 'crash') live = live.filter((n) => n !== node);
      for (const l of listeners) l({ kind, at, nodes: [node], detail: node });
    },
    see: (viewer: string, node: string, state: 'alive' | 'suspect' | 'dead') => {
      if (!views.has(viewer)) views.set(viewer, new Map());
      views.get(viewer)?.set(node, state);
    },
  };
}

describe('DetectionWatch (simulator: SWIM detection time with real agents)', () => {
  test('times the first suspicion and the moment every running agent holds the crashed node dead', async () => {
    const s = scripted();
    let clock = 1000;
    const watch = new DetectionWatch(s.cluster, { pollMs: 5, now: () => clock });
    watch.start();
    s.fault('crash', 'c', 1000);
    const tick = () => new Promise((resolve) => setTimeout(resolve, 20));
    clock = 1400;
    s.see('a', 'c', 'suspect');
    await tick();
    clock = 2000;
    s.see('a', 'c', 'dead');
    await tick();
    assert.equal(watch.detections().length, 0, 'b still holds it alive');
    clock = 3100;
    s.see('b', 'c', 'dead');
    await tick();
    watch.stop();
    assert.deepEqual(watch.detections(), [{ node: 'c', firstSuspectMs: 400, deadEverywhereMs: 2100 }]);
  });

  test('a node back before everyone found it, or never found, is reported without a time', async () => {
    const s = scripted();
    let clock = 0;
    const watch = new DetectionWatch(s.cluster, { pollMs: 5, now: () => clock, giveUpMs: 1000 });
    watch.start();
    s.fault('crash', 'c', 0);
    s.fault('restart', 'c', 10);
    s.fault('crash', 'b', 0);
    clock = 1500;
    await new Promise((resolve) => setTimeout(resolve, 20));
    watch.stop();
    assert.deepEqual(watch.detections(), [
      { node: 'c', firstSuspectMs: null, deadEverywhereMs: null },
      { node: 'b', firstSuspectMs: null, deadEverywhereMs: null },
    ]);
  });
});
