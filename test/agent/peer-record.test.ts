import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { describe, test } from 'node:test';
import { Registry } from 'prom-client';
import { PeerRecord } from '../../src/agent/peer-record.js';
import { ClusterState } from '../../src/state/cluster-state.js';
import { ObservedView } from '../../src/state/observed-view.js';
import { quietLogger } from '../fixtures/state-store.js';

/**
 * PeerRecord against a real ObservedView: connection events (an
 * EventEmitter standing in for libp2p's, which the agent tests cover end to
 * end) are debounced, and only a changed set rewrites the report.
 */
function setup(settleMs: number) {
  const state = new ClusterState({ logger: quietLogger });
  const observed = new ObservedView({
    state,
    logger: quietLogger,
    registry: new Registry(),
    nodeId: 'node-a',
  });
  const events = new EventEmitter();
  let connected: string[] = [];
  const writes: string[][] = [];
  const written = new EventEmitter();
  observed.onChange(() => {
    const nodes = observed.peersOf('node-a')?.nodes ?? [];
    writes.push(nodes);
    written.emit('write', nodes);
  });
  const record = new PeerRecord({
    nodeId: 'node-a',
    observed,
    logger: quietLogger,
    connectedNodes: () => connected,
    onConnectionsChange: (listener) => {
      events.on('change', listener);
      return () => events.off('change', listener);
    },
    settleMs,
    refreshMs: 3_600_000,
  });
  return {
    observed,
    record,
    writes,
    nextWrite: async () => (await once(written, 'write'))[0] as string[],
    connect: (ids: string[]) => {
      connected = ids;
      events.emit('change');
    },
    listeners: () => events.listenerCount('change'),
  };
}

describe('PeerRecord', { timeout: 30_000 }, () => {
  test('a burst of connection events is recorded once, after it settles; an unchanged set writes nothing', async () => {
    const t = setup(2000);
    // The record's timers are unref'd (they must not keep an agent alive): hold the loop open meanwhile.
    const keepAlive = setInterval(() => {}, 1000);
    t.record.start();
    assert.deepEqual(t.writes, [[]], 'the first set is recorded at start');
    const settled = t.nextWrite();
    // A flapping connection: open, closed, open again, faster than the quiet period.
    for (const ids of [['node-b'], [], ['node-b'], ['node-c', 'node-b'], ['node-b', 'node-c']]) {
      t.connect(ids);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.deepEqual(await settled, ['node-b', 'node-c']);
    assert.equal(t.writes.length, 2, 'one write for the start, one for the whole burst');
    // Our own id is never recorded, and the same set again is no write.
    t.connect(['node-c', 'node-a', 'node-b']);
    t.record.record();
    assert.equal(t.writes.length, 2);
    t.record.stop();
    clearInterval(keepAlive);
    assert.equal(t.listeners(), 0, 'stop unsubscribes');
  });

  test('a failing connection source is logged, not thrown', () => {
    const t = setup(10_000);
    const record = new PeerRecord({
      nodeId: 'node-a',
      observed: t.observed,
      logger: quietLogger,
      connectedNodes: () => {
        throw new Error('libp2p is stopping');
      },
      onConnectionsChange: () => () => {},
    });
    assert.doesNotThrow(() => record.record());
    assert.equal(t.observed.peersOf('node-a'), undefined);
  });
});
