import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemberIndex, SwimCore, type SwimMessage, type SwimParams } from '../../src/membership/swim-core.js';

/**
 * The gossip messages (docs/membership.md, "Updates and the order they
 * settle in"): real SwimCores in virtual time, 10 ms links, no loss. They
 * go out only while updates wait, so a quiet cluster's cost stays one ping
 * and one ack a second per node; when something changes they carry it.
 */
class Cluster {
  now = 0;
  readonly sent = new Map<SwimMessage['kind'], number>();
  private readonly cores: SwimCore[];
  private readonly down = new Set<number>();
  private flights: { at: number; to: number; from: string; message: SwimMessage }[] = [];

  constructor(
    readonly size: number,
    params: Partial<SwimParams>,
  ) {
    const index = new MemberIndex();
    const ids = Array.from({ length: size }, (_, i) => `n${i}`);
    let seed = 99;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    this.cores = ids.map((selfId) => new SwimCore({ selfId, index, random, params }));
    for (const core of this.cores) core.setMembers(ids);
  }

  crash(i: number): void {
    this.down.add(i);
  }

  /** Whether every live node holds `i` dead. */
  deadEverywhere(i: number): boolean {
    return this.cores.every((core, j) => this.down.has(j) || core.stateOf(`n${i}`)?.state === 'dead');
  }

  run(ms: number): void {
    const end = this.now + ms;
    for (; this.now < end; this.now += 10) {
      const due = this.flights.filter((f) => f.at <= this.now);
      this.flights = this.flights.filter((f) => f.at > this.now);
      for (const f of due) if (!this.down.has(f.to)) this.cores[f.to]!.receive(this.now, f.from, f.message);
      this.cores.forEach((core, i) => {
        if (this.down.has(i)) return;
        if (core.nextWakeAt() <= this.now) core.tick(this.now);
        for (const out of core.takeOutput().send) {
          this.sent.set(out.message.kind, (this.sent.get(out.message.kind) ?? 0) + 1);
          this.flights.push({
            at: this.now + 10,
            to: Number(out.to.slice(1)),
            from: `n${i}`,
            message: out.message,
          });
        }
      });
    }
  }

  count(kind: SwimMessage['kind']): number {
    return this.sent.get(kind) ?? 0;
  }
}

describe('SWIM gossip messages', () => {
  test('a quiet cluster sends none: one ping and one ack a second per node', () => {
    const cluster = new Cluster(40, {});
    cluster.run(30_000);
    assert.equal(cluster.count('gossip'), 0);
    const perNodeS = (cluster.count('ping') + cluster.count('ack')) / 40 / 30;
    assert.ok(perNodeS > 1.9 && perNodeS <= 2.05, `${perNodeS} messages per node per second`);
  });

  test('a crash is carried by gossip, known everywhere sooner than by probes alone, and the gossip stops', () => {
    const detect = (gossipNodes: number) => {
      const cluster = new Cluster(40, { gossipNodes });
      cluster.run(5000);
      cluster.crash(7);
      const crashedAt = cluster.now;
      while (!cluster.deadEverywhere(7) && cluster.now < crashedAt + 120_000) cluster.run(100);
      const ms = cluster.now - crashedAt;
      const gossipAtDetection = cluster.count('gossip');
      cluster.run(30_000);
      const gossipLate = cluster.count('gossip') - gossipAtDetection;
      cluster.run(10_000);
      return {
        ms,
        gossip: cluster.count('gossip'),
        quietAfter: cluster.count('gossip') - gossipAtDetection - gossipLate,
      };
    };
    const withGossip = detect(1);
    const probesOnly = detect(0);
    assert.equal(probesOnly.gossip, 0);
    assert.ok(withGossip.gossip > 0, 'gossip carried the suspicion and the obituary');
    assert.ok(
      withGossip.ms < probesOnly.ms,
      `with gossip ${withGossip.ms} ms, probes only ${probesOnly.ms} ms`,
    );
    // Once every update has gone out its retransmit limit, the queue is empty and no more gossip is sent.
    assert.equal(withGossip.quietAfter, 0);
  });
});
