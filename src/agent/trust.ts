import type { Logger } from 'pino';
import type { Counter, Gauge, Registry } from 'prom-client';
import type { EnrollmentBundle } from '../identity/bundle.js';
import { checkWitnessConfigRecord } from '../identity/ca.js';
import { type EnrollmentView as ActiveNodes, computeActiveNodes } from '../identity/enrollment-verifier.js';
import type { EnrollmentView } from '../state/enrollment-view.js';
import type { Revocation, SignedEnrollment } from '../state/schemas.js';
import { Listeners } from '../util/listeners.js';
import { counterIn, gaugeIn } from '../util/metrics.js';

export interface EnrollmentTrustOptions {
  bundle: EnrollmentBundle;
  enrollment: EnrollmentView;
  logger: Logger;
  registry: Registry;
}

/** A peer that was admitted and no longer is, with the node id its record carried. */
export interface LostPeer {
  peerId: string;
  nodeId: string;
}

type RevokedListener = (lost: LostPeer[]) => void;

/**
 * Who may talk to this node: the org's active enrolled nodes, computed from
 * the enrollment document by src/identity's rules (valid CA signature, not
 * revoked, no duplicate overlay IP / peer id / WireGuard key) and recomputed
 * on every change of the document. The connection gater and the gossip
 * sender checks read it on every call.
 *
 * Bootstrap: until the document names an active node other than this one,
 * the seed peers of the enrollment bundle (CA-signed, so as trusted as a
 * record) are admitted too, so that the first sync can happen at all.
 */
export class EnrollmentTrust {
  readonly caPublicKey: string;
  readonly overlayCidr: string;
  readonly self: SignedEnrollment;
  private readonly bundle: EnrollmentBundle;
  private readonly enrollment: EnrollmentView;
  private readonly logger: Logger;
  private readonly seedPeerIds: Set<string>;
  private readonly listeners = new Listeners<Parameters<RevokedListener>>((err) =>
    this.logger.error({ err }, 'a revocation listener threw'),
  );
  private readonly changeListeners = new Listeners<[]>((err) =>
    this.logger.error({ err }, 'an active-set listener threw'),
  );
  private readonly activeGauge: Gauge;
  private readonly rejectedGauge: Gauge;
  private readonly deniedTotal: Counter<'stage'>;
  private current: ActiveNodes;
  private revokedSelf = false;
  private unsubscribe: (() => void) | null = null;

  constructor(options: EnrollmentTrustOptions) {
    this.bundle = options.bundle;
    this.caPublicKey = options.bundle.caPublicKey;
    this.overlayCidr = options.bundle.overlayCidr;
    this.self = options.bundle.record;
    this.enrollment = options.enrollment;
    this.logger = options.logger.child({ component: 'trust' });
    this.seedPeerIds = new Set(options.bundle.seedPeers.map(peerIdOfMultiaddr).filter((id) => id !== null));
    this.activeGauge = gaugeIn(options.registry, {
      name: 'silo_enrollment_active_nodes',
      help: 'Enrolled nodes with a valid CA signature, not revoked',
    });
    this.rejectedGauge = gaugeIn(options.registry, {
      name: 'silo_enrollment_rejected_records',
      help: 'Enrollment records ignored (bad signature, revoked, duplicate IP/peer/key)',
    });
    this.deniedTotal = counterIn(options.registry, {
      name: 'silo_connections_denied_total',
      help: 'Connections refused because the peer is not an active enrolled node',
      labelNames: ['stage'],
    });
    this.current = this.compute();
    this.revokedSelf = this.selfRevocation() !== null;
  }

  /**
   * Publishes our own signed record and the bundle's seed records (when the
   * document has none for them yet), and the bundle's witness configuration
   * (when the document has none or an older version), then follows the
   * document. Records are CA-signed, so carrying them is harmless; the seeds'
   * records let the gate and the overlay admit the seeds before the first
   * sync.
   */
  start(): void {
    const present = new Map(this.enrollment.rawEntries('nodes'));
    if (JSON.stringify(present.get(this.self.nodeId)) !== JSON.stringify(this.self))
      this.enrollment.put(this.self);
    for (const seed of this.bundle.seedRecords) {
      if (!present.has(seed.nodeId) && seed.nodeId !== this.self.nodeId) this.enrollment.put(seed);
    }
    this.publishWitnessConfig();
    this.refresh();
    this.unsubscribe = this.enrollment.onChange(() => this.refresh());
  }

  private publishWitnessConfig(): void {
    const bundled = this.bundle.witnessConfig;
    if (bundled === undefined) return;
    const current = this.enrollment.witnessConfig();
    if (current !== null && current.version >= bundled.version) return;
    // Readers ignore an unsigned configuration anyway; do not even carry one.
    const checked = checkWitnessConfigRecord(this.caPublicKey, bundled);
    if (!checked.ok) {
      this.logger.warn(
        { version: bundled.version, reason: checked.failure.reason },
        `the bundle's witness configuration is not published: ${checked.failure.message}`,
      );
      return;
    }
    this.enrollment.putWitnessConfig(checked.value);
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  /** The active enrolled nodes right now. */
  active(): ActiveNodes {
    return this.current;
  }

  /**
   * The CA-signed revocation that covers this node's own record, or null.
   * Not when the document holds a newer active record with our key (the
   * operator enrolled us again after the revocation).
   */
  selfRevocation(): Revocation | null {
    if (this.current.byPeerId.has(this.self.peerId)) return null;
    const revocation = this.enrollment.revocation(this.self.nodeId);
    return revocation !== undefined && revocation.revokedAt >= this.self.issuedAt ? revocation : null;
  }

  isPeerAllowed = (peerId: string): boolean => {
    // A revoked node cuts itself off: every member refuses it anyway, and
    // dialing them only fills its log (docs/security.md, "Revocation").
    if (this.revokedSelf) return false;
    if (this.current.byPeerId.has(peerId)) return true;
    return this.bootstrapping() && this.seedPeerIds.has(peerId);
  };

  /** A gossip message claiming to come from `nodeId` must be signed by that node's enrolled peer id. */
  isSenderAllowed = (peerId: string, nodeId: string): boolean => {
    return this.current.byNodeId.get(nodeId)?.peerId === peerId;
  };

  countDenied(stage: string): void {
    this.deniedTotal.inc({ stage });
  }

  /** Called with the peers that lost their admission (revoked or superseded). */
  onRevoked(listener: RevokedListener): () => void {
    return this.listeners.add(listener);
  }

  /** Called after every recomputation of the active set (cheap consumers may ignore no-op changes). */
  onActiveChange(listener: () => void): () => void {
    return this.changeListeners.add(listener);
  }

  private bootstrapping(): boolean {
    return !this.current.active.some((record) => record.nodeId !== this.self.nodeId);
  }

  private compute(): ActiveNodes {
    return computeActiveNodes({
      caPublicKey: this.caPublicKey,
      overlayCidr: this.bundle.overlayCidr,
      records: this.enrollment.rawEntries('nodes'),
      revocations: this.enrollment.rawEntries('revocations'),
    });
  }

  private refresh(): void {
    const before = this.current;
    this.current = this.compute();
    this.revokedSelf = this.selfRevocation() !== null;
    this.activeGauge.set(this.current.active.length);
    this.rejectedGauge.set(this.current.rejectedRecords.length);
    this.changeListeners.emit();
    const lost = [...before.byPeerId.values()]
      .filter((record) => !this.current.byPeerId.has(record.peerId))
      .map((record) => ({ peerId: record.peerId, nodeId: record.nodeId }));
    for (const rejection of this.current.rejectedRecords) {
      if (!before.rejectedRecords.some((r) => r.key === rejection.key && r.reason === rejection.reason)) {
        this.logger.warn({ record: rejection.key, reason: rejection.reason }, rejection.message);
      }
    }
    if (lost.length === 0) return;
    this.logger.warn(
      { peers: lost.map((p) => p.nodeId) },
      'peers lost their enrollment; handing them the revocation, closing their connections',
    );
    this.listeners.emit(lost);
  }
}

function peerIdOfMultiaddr(addr: string): string | null {
  const match = /\/p2p\/([^/]+)/.exec(addr);
  return match?.[1] ?? null;
}
