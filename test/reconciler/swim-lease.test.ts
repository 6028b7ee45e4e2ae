import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemberIndex, type MemberState, SwimCore, type SwimMessage } from '../../src/membership/swim-core.js';
import { SwimLeaseSource, type SwimLivenessView } from '../../src/reconciler/swim-lease.js';

type Change = { node: string; state: MemberState; incarnation: number };

/**
 * Real SwimCores exchanging messages in memory, in virtual time (as the
 * property tests drive them), with node `a`'s core seen through the
 * SwimLivenessView the reconciler reads.
 */
class ThreeCores {
  now = 0;
  readonly up = new Set(['a', 'b', 'c']);
  private readonly cores = new Map<string, SwimCore>();
  private readonly listeners = new Set<(change: Change) => void>();
  private queue: { at: number; from: string; to: string; message: SwimMessage }[] = [];

  constructor() {
    const index = new MemberIndex();
    let seed = 7;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (const id of this.up) {
      const core = new SwimCore({ selfId: id, index, random });
      core.setMembers(this.up);
      this.cores.set(id, core);
    }
  }

  readonly view: SwimLivenessView = {
    stateOf: (nodeId) => this.cores.get('a')!.stateOf(nodeId),
    onChange: (listener) => {
      this.listeners.add(listener);
      return () => this.listeners.delete(listener);
    },
  };

  /** Runs virtual time forward by `ms`, 10 ms a step, delivering messages between live cores after 5 ms. */
  run(ms: number): void {
    const end = this.now + ms;
    for (; this.now <= end; this.now += 10) {
      const due = this.queue.filter((m) => m.at <= this.now);
      this.queue = this.queue.filter((m) => m.at > this.now);
      for (const m of due) if (this.up.has(m.to)) this.cores.get(m.to)!.receive(this.now, m.from, m.message);
      for (const [id, core] of this.cores) {
        if (!this.up.has(id)) continue;
        if (core.nextWakeAt() <= this.now) core.tick(this.now);
        const { send, events } = core.takeOutput();
        for (const out of send)
          this.queue.push({ at: this.now + 5, from: id, to: out.to, message: out.message });
        if (id !== 'a') continue;
        for (const event of events) if (event.kind === 'member') for (const l of this.listeners) l(event);
      }
    }
  }
}

describe('SwimLeaseSource (placement reads SWIM membership)', () => {
  test('liveness and lastHeard follow SWIM: alive is heard now; a crash is heard last when suspected', () => {
    const net = new ThreeCores();
    const source = new SwimLeaseSource({
      selfId: 'a',
      swim: net.view,
      activeNodeIds: () => ['a', 'b', 'c', 'd'],
      now: () => net.now,
    });
    const changes: number[] = [];
    source.onChange(() => changes.push(net.now));
    net.run(5000);
    assert.deepEqual(Object.fromEntries(source.liveness(net.now)), { a: 'alive', b: 'alive', c: 'alive' });
    // d is enrolled but not a SWIM member yet: left out (dead to placement), and never heard.
    assert.equal(source.lastHeard().get('b'), net.now);
    assert.equal(source.lastHeard().has('d'), false);
    assert.equal(source.listeningSince(), 0);

    net.up.delete('c');
    let suspectedAt: number | null = null;
    for (let t = 0; t < 60_000 && source.liveness(net.now).get('c') !== 'dead'; t += 100) {
      net.run(100);
      if (suspectedAt === null && source.liveness(net.now).get('c') === 'suspect') suspectedAt = net.now;
    }
    assert.equal(source.liveness(net.now).get('c'), 'dead');
    assert.ok(suspectedAt !== null, 'c was suspect before dead');
    const heard = source.lastHeard().get('c');
    assert.ok(heard !== undefined && heard <= suspectedAt && heard > suspectedAt - 200, `lastHeard ${heard}`);
    assert.ok(source.attestedDeadSince(net.now).has('c'));
    assert.ok(changes.length >= 2, 'the loop was told of suspect and dead');
    // Later calls do not move a dead member's lastHeard.
    net.run(2000);
    assert.equal(source.lastHeard().get('c'), heard);

    source.close();
    const before = changes.length;
    net.up.delete('b');
    net.run(30_000);
    assert.equal(changes.length, before, 'no listener calls after close');
  });
});
