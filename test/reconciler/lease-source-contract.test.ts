import { FailureDetector } from '../../src/gossip/failure-detector.js';
import type { Heartbeat } from '../../src/gossip/heartbeat.js';
import { HeartbeatLedger } from '../../src/gossip/heartbeat-ledger.js';
import { HeartbeatLeaseSource } from '../../src/reconciler/heartbeat-lease.js';
import { DetectorLeaseSource, type LeaseSource } from '../../src/reconciler/lease.js';
import { SwimLeaseSource } from '../../src/reconciler/swim-lease.js';
import { heartbeatFrom } from '../gossip/helpers.js';
import { VirtualSwim } from '../helpers/virtual-swim.js';
import { type LeaseWorld, leaseSourceContract } from './lease-source-contract.js';

const SELF = 'a';
const PEERS = ['b', 'c'] as const;
const BEAT_MS = 100;
const SUSPECT_AFTER_MS = 500;
const DEAD_AFTER_MS = 1000;

/**
 * Node `a`'s real FailureDetector and HeartbeatLedger, fed the heartbeats
 * that peers `b` and `c` would send every 100 ms: each acknowledges `a`'s
 * newest heartbeat and lists dead the peers that have been silent for
 * dead_after (what their own detectors would say).
 */
class HeartbeatWorld implements LeaseWorld {
  private t = 1_000;
  private active: readonly string[] = ['a', 'b', 'c'];
  readonly detector = new FailureDetector({
    now: () => this.t,
    suspectAfterMs: SUSPECT_AFTER_MS,
    deadAfterMs: DEAD_AFTER_MS,
  });
  readonly ledger = new HeartbeatLedger({
    selfId: SELF,
    incarnation: 1,
    detector: this.detector,
    now: () => this.t,
  });
  readonly source: LeaseSource;
  readonly settleMs = DEAD_AFTER_MS * 3;
  private readonly peers = new Map<string, { incarnation: number; seq: number; crashedAt: number | null }>();
  private lastOwn: { incarnation: number; seq: number } | null = null;
  private sinceBeat = 0;

  constructor(makeSource: (world: HeartbeatWorld, activeNodeIds: () => readonly string[]) => LeaseSource) {
    for (const peer of PEERS) this.peers.set(peer, { incarnation: 1, seq: 0, crashedAt: null });
    this.source = makeSource(this, () => this.active);
  }

  now(): number {
    return this.t;
  }

  run(ms: number): void {
    const end = this.t + ms;
    while (this.t < end) {
      const step = Math.min(10, end - this.t);
      this.t += step;
      this.sinceBeat += step;
      if (this.sinceBeat >= BEAT_MS) {
        this.sinceBeat = 0;
        this.beat();
      }
      this.detector.tick();
    }
  }

  private beat(): void {
    const own = this.ledger.nextHeartbeat();
    this.lastOwn = { incarnation: own.incarnation, seq: own.seq };
    for (const [peer, state] of this.peers) {
      if (state.crashedAt !== null) continue;
      const dead: [string, number][] = [];
      for (const [other, otherState] of this.peers) {
        if (
          other !== peer &&
          otherState.crashedAt !== null &&
          this.t - otherState.crashedAt >= DEAD_AFTER_MS
        ) {
          dead.push([other, otherState.incarnation]);
        }
      }
      const heartbeat: Heartbeat = heartbeatFrom(peer, state.incarnation, state.seq++, {
        acks: this.lastOwn ? [[SELF, [this.lastOwn.incarnation, this.lastOwn.seq]]] : [],
        dead,
      });
      if (this.detector.observe(heartbeat.nodeId, heartbeat.incarnation, heartbeat.seq)) {
        this.ledger.record(heartbeat);
      }
    }
  }

  crash(peer: string): void {
    this.peers.get(peer)!.crashedAt = this.t;
  }

  restart(peer: string): void {
    const state = this.peers.get(peer)!;
    state.incarnation++;
    state.seq = 0;
    state.crashedAt = null;
  }

  setActive(ids: readonly string[]): void {
    this.active = [...ids];
  }
}

/** Real SwimCores for `a`, `b` and `c` in virtual time (VirtualSwim), `a` seen through its view. */
class SwimWorld implements LeaseWorld {
  private readonly swim = new VirtualSwim();
  private active: readonly string[] = ['a', 'b', 'c'];
  readonly source: LeaseSource = new SwimLeaseSource({
    selfId: SELF,
    swim: this.swim.view,
    activeNodeIds: () => this.active,
    now: () => this.swim.now,
  });
  readonly settleMs = 15_000;

  now(): number {
    return this.swim.now;
  }

  run(ms: number): void {
    this.swim.run(ms);
  }

  crash(peer: string): void {
    this.swim.crash(peer);
  }

  restart(peer: string): void {
    this.swim.restart(peer);
  }

  setActive(ids: readonly string[]): void {
    this.active = [...ids];
  }
}

leaseSourceContract(
  'acked-heartbeats',
  () =>
    new HeartbeatWorld(
      (world, activeNodeIds) =>
        new HeartbeatLeaseSource({
          selfId: SELF,
          ledger: world.ledger,
          detector: world.detector,
          activeNodeIds,
          now: () => world.now(),
        }),
    ),
);

leaseSourceContract(
  'local-detector',
  () =>
    new HeartbeatWorld(
      (world, activeNodeIds) =>
        new DetectorLeaseSource({
          selfId: SELF,
          detector: world.detector,
          activeNodeIds,
          now: () => world.now(),
        }),
    ),
);

leaseSourceContract('swim', () => new SwimWorld());
