import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { sleep } from '../../src/util/sleep.js';
import {
  FAST,
  metricValue,
  type NodeOverrides,
  readSpec,
  startCluster,
  stopAll,
  type TestNode,
  waitFor,
  writeSpec,
} from './helpers.js';

// Only connection and catch-up sessions: no periodic sync, and a digest grace
// far beyond the test, so B can learn C's writes only by a relay through A.
const NO_BACKGROUND_SYNC: NodeOverrides = { syncIntervalMs: 0, syncGraceMs: 600_000 };
/** dead_after of these nodes (FAST's). */
const NO_BACKGROUND_SYNC_DEAD_AFTER_MS = FAST.deadAfterMs ?? 0;

async function cut(a: TestNode, b: TestNode): Promise<void> {
  await a.gossip.block(b.gossip.peerId);
  await b.gossip.block(a.gossip.peerId);
}

function join(a: TestNode, b: TestNode): void {
  a.gossip.unblock(b.gossip.peerId);
  b.gossip.unblock(a.gossip.peerId);
}

/** A and B together, C alone until each side considers the other dead; C wrote meanwhile. */
async function isolateAndWrite(
  nodes: TestNode[],
  write: (c: TestNode) => void,
): Promise<[TestNode, TestNode, TestNode]> {
  const [a, b, c] = nodes as [TestNode, TestNode, TestNode];
  await waitFor('every node hears every other', () =>
    nodes.every((n) => n.gossip.detector.view().filter((m) => m.state === 'alive').length === 2),
  );
  await cut(a, c);
  await cut(b, c);
  await waitFor(
    'A and B consider C dead, and C them',
    () =>
      a.gossip.detector.state(c.nodeId) === 'dead' &&
      b.gossip.detector.state(c.nodeId) === 'dead' &&
      c.gossip.detector.state(a.nodeId) === 'dead',
  );
  write(c);
  return [a, b, c];
}

describe('relay of what a catch-up brought', () => {
  test("after a heal, a node that cannot reach the returned node gets its writes by its neighbour's relay", async (t) => {
    const nodes = await startCluster(3, NO_BACKGROUND_SYNC);
    t.after(() => stopAll(nodes));
    const [a, b, c] = await isolateAndWrite(nodes, (c) => {
      for (let k = 0; k < 30; k++) writeSpec(c, `c-${k}`, k);
    });
    assert.equal(readSpec(b, 'c-0'), undefined, 'the partition held');
    const bSessionsBefore = await metricValue(b, 'silo_sync_sessions_total');

    join(a, c); // B and C stay cut: B depends on A.
    await waitFor('A caught up with C', () => readSpec(a, 'c-29') === 29);
    await waitFor('B received C’s writes by gossip from A', () => readSpec(b, 'c-29') === 29);
    for (let k = 0; k < 30; k++) assert.equal(readSpec(b, `c-${k}`), k);

    assert.ok((await metricValue(a, 'silo_gossip_relays_total', { result: 'relayed' })) >= 1);
    // B learned by gossip, which is never relayed again.
    assert.equal(await metricValue(b, 'silo_gossip_relays_total'), 0);
    assert.equal(await metricValue(b, 'silo_sync_sessions_total'), bSessionsBefore, 'B ran no sync session');
  });

  test('a catch-up update above half the size limit is not relayed; the others catch up by sync', async (t) => {
    const nodes = await startCluster(3, { ...NO_BACKGROUND_SYNC, maxUpdateBytes: 64 * 1024 });
    t.after(() => stopAll(nodes));
    const big = 'x'.repeat(40 * 1024);
    const [a, b, c] = await isolateAndWrite(nodes, (c) => writeSpec(c, 'big', big));

    join(a, c);
    await waitFor('A caught up with C', () => readSpec(a, 'big') === big);
    await waitFor(
      'A counted the relay it skipped',
      async () => (await metricValue(a, 'silo_gossip_relays_total', { result: 'too-large' })) >= 1,
    );
    // Barrier: a write of A's own after the skip reaches B by gossip; a relay queued before it would have too.
    writeSpec(a, 'sentinel', 1);
    await waitFor('B has A’s later write', () => readSpec(b, 'sentinel') === 1);
    assert.equal(readSpec(b, 'big'), undefined, 'not relayed');
    assert.equal(await metricValue(a, 'silo_gossip_relays_total', { result: 'relayed' }), 0);

    join(b, c);
    await waitFor('B caught up with C by its own session', () => readSpec(b, 'big') === big);
  });

  test('a catch-up in slices is relayed only up to half the size limit; the others catch up by sync', async (t) => {
    const nodes = await startCluster(3, {
      ...NO_BACKGROUND_SYNC,
      maxUpdateBytes: 64 * 1024,
      syncSliceLimits: { bytes: 4096, structs: 20 },
    });
    t.after(() => stopAll(nodes));
    const pad = 'y'.repeat(1024);
    // About 300 KiB in 300 structs: sent in slices, far above half the limit (32 KiB) in all.
    const [a, b, c] = await isolateAndWrite(nodes, (c) => {
      for (let k = 0; k < 300; k++) writeSpec(c, `c-${k}`, `${k}:${pad}`);
    });

    join(a, c);
    await waitFor('A caught up with C', () => readSpec(a, 'c-299') === `299:${pad}`);
    await waitFor(
      'A relayed the first slices',
      async () => (await metricValue(a, 'silo_gossip_relays_total', { result: 'relayed' })) >= 1,
    );
    // Barrier: A's catch-up is applied (every relay decided); a write of A's own after it reaches B
    // by gossip, behind anything A relayed.
    writeSpec(a, 'sentinel', 1);
    await waitFor('B has A’s later write', () => readSpec(b, 'sentinel') === 1);
    assert.equal(readSpec(b, 'c-299'), undefined, 'the slices past half the limit were not relayed');

    join(b, c);
    await waitFor('B caught up with C by its own session', () => readSpec(b, 'c-299') === `299:${pad}`);
    for (let k = 0; k < 300; k++) assert.equal(readSpec(b, `c-${k}`), `${k}:${pad}`);
  });

  test('two groups that never heard each other relay what their first session across brought', async (t) => {
    // As when a cluster splits before every node heard every other: no node is dead to
    // anyone, yet each group lacks the other's writes.
    const [a, b] = (await startCluster(2, NO_BACKGROUND_SYNC)) as [TestNode, TestNode];
    t.after(() => stopAll([a, b]));
    const [c, d] = (await startCluster(2, NO_BACKGROUND_SYNC)) as [TestNode, TestNode];
    t.after(() => stopAll([c, d]));
    // Only A and C ever meet.
    await cut(a, d);
    await cut(b, c);
    await cut(b, d);
    writeSpec(b, 'from-b', 1);
    writeSpec(d, 'from-d', 2);
    await waitFor(
      'each pair holds its write',
      () => readSpec(a, 'from-b') === 1 && readSpec(c, 'from-d') === 2,
    );
    // Past dead_after of running: a node never heard by then is dead to us.
    await sleep(NO_BACKGROUND_SYNC_DEAD_AFTER_MS);
    const bSessionsBefore = await metricValue(b, 'silo_sync_sessions_total');
    const dSessionsBefore = await metricValue(d, 'silo_sync_sessions_total');

    await a.gossip.dial(c.gossip.multiaddrs()[0]!);
    await waitFor(
      'B has D’s write and D has B’s',
      () => readSpec(b, 'from-d') === 2 && readSpec(d, 'from-b') === 1,
    );
    assert.ok((await metricValue(a, 'silo_gossip_relays_total', { result: 'relayed' })) >= 1);
    assert.ok((await metricValue(c, 'silo_gossip_relays_total', { result: 'relayed' })) >= 1);
    assert.equal(await metricValue(b, 'silo_sync_sessions_total'), bSessionsBefore, 'B ran no sync session');
    assert.equal(await metricValue(d, 'silo_sync_sessions_total'), dSessionsBefore, 'D ran no sync session');
  });

  test('a node that just started does not relay what its first sessions bring', async (t) => {
    const [a, b] = (await startCluster(2, NO_BACKGROUND_SYNC)) as [TestNode, TestNode];
    t.after(() => stopAll([a, b]));
    for (let k = 0; k < 20; k++) writeSpec(a, `old-${k}`, k);
    await waitFor('B holds A’s writes', () => readSpec(b, 'old-19') === 19);
    const [c] = (await startCluster(1, {
      ...NO_BACKGROUND_SYNC,
      bootstrap: [a.gossip.multiaddrs()[0]!],
    })) as [TestNode];
    t.after(() => stopAll([c]));
    await waitFor('the newcomer synced', () => readSpec(c, 'old-19') === 19);
    // Barrier: a session with each peer (joining any still running) has ended, so everything the
    // first sessions brought has been applied and its relay decided.
    for (const peer of [a, b]) await c.gossip.syncWith(peer.gossip.peerId);
    // Everything it learned was old news to the others: relaying it would flood them.
    assert.equal(await metricValue(c, 'silo_gossip_relays_total'), 0);
  });
});
