import { deepFreeze } from '../util/deep-freeze.js';
import type { ClusterState } from './cluster-state.js';
import { isTombstone } from './epochs/records.js';
import { byKey, onMapsChange, RecordChecker, type ViewOptions } from './record-check.js';
import {
  type DrainFlag,
  DrainFlagSchema,
  NodeIdSchema,
  type Revocation,
  RevocationSchema,
  type SignedEnrollment,
  SignedEnrollmentSchema,
  type SignedScratchSecret,
  SignedScratchSecretSchema,
  type WitnessConfigRecord,
  WitnessConfigRecordSchema,
} from './schemas.js';
import { SlottedMap } from './slotted-map.js';

export interface EnrollmentViewOptions extends ViewOptions {
  /**
   * Signature check of an enrollment record: null when valid, else the
   * reason. Records it rejects are skipped and reported (src/identity
   * supplies it). Without it every schema-valid record is returned.
   */
  verify?: (record: SignedEnrollment) => string | null;
  /** The same for revocations: an unsigned revocation must not revoke anyone. */
  verifyRevocation?: (record: Revocation) => string | null;
  /** The same for witness configurations: an unsigned one must not name witnesses. */
  verifyWitnessConfig?: (record: WitnessConfigRecord) => string | null;
  /** The same for scratch key envelopes: only the CA may hand a node a scratch secret. */
  verifyScratchKey?: (envelope: SignedScratchSecret) => string | null;
}

const ENROLLMENT_MAPS = ['nodes', 'revocations', 'draining', 'witnesses', 'scratchKeys'] as const;
type EnrollmentMap = (typeof ENROLLMENT_MAPS)[number];

/**
 * Typed access to the enrollment document (docs/protocol.md, "Documents"):
 * `nodes` (nodeId → SignedEnrollment), `revocations` (nodeId → Revocation),
 * `draining` (nodeId → DrainFlag), `witnesses` (`v<version>` →
 * WitnessConfigRecord), `scratchKeys` (`<nodeId>/g<generation>` →
 * SignedScratchSecret), each value a plain object, each map one of slotted
 * last-writer-wins records (SlottedMap, docs/epochs.md).
 */
export class EnrollmentView {
  private readonly state: ClusterState;
  private readonly check: RecordChecker;
  private readonly verify: EnrollmentViewOptions['verify'];
  private readonly verifyRevocation: EnrollmentViewOptions['verifyRevocation'];
  private readonly options: EnrollmentViewOptions;
  /**
   * `list()` and `revocations()` as of the document's last update. Readers
   * such as the lease ask on every heartbeat (N² times per heartbeat interval
   * across a cluster); parsing and verifying every record each time took a
   * fifth of the simulator's CPU after a partition healed. Both are shared
   * with every caller, hence deeply frozen.
   */
  private cached: {
    nodes?: readonly SignedEnrollment[];
    revocations?: readonly Revocation[];
    witnesses?: WitnessConfigRecord | null;
  } = {};

  constructor(options: EnrollmentViewOptions) {
    this.options = options;
    this.state = options.state;
    this.check = new RecordChecker('enrollment', options);
    this.verify = options.verify;
    this.verifyRevocation = options.verifyRevocation;
    // Every change, local or remote, happens in a transaction: drop both lists
    // when one begins (reads during it bypass the cache, see `cacheable`), so
    // observers called after it already read the new records; and after an
    // epoch switch, which replaces the document without one.
    this.state.onTransaction('enrollment', 'before', () => {
      this.cached = {};
    });
    this.state.onTransaction('enrollment', 'after', (tr) => {
      if (tr === null) this.cached = {};
    });
    // The four maps of CA-signed records: a key's winner is its newest valid, verified record
    // (SlottedMap `accepts`), never a deletion or a record the CA did not sign.
    const signed = (name: EnrollmentMap, read: (key: string, value: unknown) => unknown) =>
      new SlottedMap(this.state, 'enrollment', name, this.check, Date.now, (key, record) =>
        isTombstone(record) ? false : read(key, record.value) !== undefined,
      );
    this.maps = {
      nodes: signed('nodes', (key, value) => this.readNode(key, value)),
      revocations: signed('revocations', (key, value) => this.readRevocation(key, value)),
      draining: new SlottedMap(this.state, 'enrollment', 'draining', this.check),
      witnesses: signed('witnesses', (key, value) => this.readWitnessConfig(key, value)),
      scratchKeys: signed('scratchKeys', (key, value) => this.readScratchKey(key, value)),
    };
  }

  private readonly maps: Record<EnrollmentMap, SlottedMap>;

  private map(name: EnrollmentMap): SlottedMap {
    return this.maps[name];
  }

  /** Writes (or replaces) a node's signed record; durable on return. Does not check the signature. */
  put(record: SignedEnrollment): SignedEnrollment {
    const key = typeof record?.nodeId === 'string' ? record.nodeId : '?';
    const valid = this.check.require('nodes', key, record, SignedEnrollmentSchema);
    this.state.transactLocal('enrollment', () => this.map('nodes').set(valid.nodeId, valid));
    return valid;
  }

  /** The node's record if present, schema-valid and verified. */
  get(nodeId: string): SignedEnrollment | undefined {
    return this.readNode(nodeId, this.map('nodes').get(nodeId));
  }

  /**
   * Every schema-valid, verified record, sorted by node id, revoked nodes
   * included; frozen, as it is shared with every caller until the next
   * change. Which nodes are active (not revoked, no duplicate IP, peer id or
   * key) is computeActiveNodes' job (src/identity), one rule for every reader.
   */
  list(): readonly SignedEnrollment[] {
    if (this.cached.nodes && this.cacheable()) return this.cached.nodes;
    const out: SignedEnrollment[] = [];
    for (const [key, value] of [...this.map('nodes').entries()].sort(byKey)) {
      const record = this.readNode(key, value);
      if (record) out.push(record);
    }
    const frozen = deepFreeze(out);
    if (this.cacheable()) this.cached.nodes = frozen;
    return frozen;
  }

  /**
   * Records a signed witness configuration; durable on return. Does not
   * check the signature, nor that it is a permitted change (readers take the
   * newest valid version; `silo ca witnesses set` checks the change).
   */
  putWitnessConfig(record: WitnessConfigRecord): WitnessConfigRecord {
    const key = typeof record?.version === 'number' ? `v${record.version}` : '?';
    const valid = this.check.require('witnesses', key, record, WitnessConfigRecordSchema);
    this.state.transactLocal('enrollment', () => this.map('witnesses').set(`v${valid.version}`, valid));
    return valid;
  }

  /**
   * The witness configuration in force: the newest schema-valid, verified
   * record (null when there is none: then this node claims nothing
   * exclusive). Its witness list is sorted and free of duplicates.
   */
  witnessConfig(): WitnessConfigRecord | null {
    if (this.cached.witnesses !== undefined && this.cacheable()) return this.cached.witnesses;
    let best: WitnessConfigRecord | null = null;
    for (const [key, value] of this.map('witnesses').entries()) {
      const record = this.readWitnessConfig(key, value);
      if (!record) continue;
      if (new Set(record.witnesses).size !== record.witnesses.length) continue;
      if (best === null || record.version > best.version) best = record;
    }
    const result = best === null ? null : deepFreeze({ ...best, witnesses: [...best.witnesses].sort() });
    if (this.cacheable()) this.cached.witnesses = result;
    return result;
  }

  /** Records a signed revocation; durable on return. Does not check the signature. */
  revoke(revocation: Revocation): Revocation {
    const key = typeof revocation?.nodeId === 'string' ? revocation.nodeId : '?';
    const valid = this.check.require('revocations', key, revocation, RevocationSchema);
    this.state.transactLocal('enrollment', () => this.map('revocations').set(valid.nodeId, valid));
    return valid;
  }

  revocation(nodeId: string): Revocation | undefined {
    return this.readRevocation(nodeId, this.map('revocations').get(nodeId));
  }

  isRevoked(nodeId: string): boolean {
    return this.revocations().some((r) => r.nodeId === nodeId);
  }

  /** Every valid, verified revocation, sorted by node id; frozen (shared, like `list`). */
  revocations(): readonly Revocation[] {
    if (this.cached.revocations && this.cacheable()) return this.cached.revocations;
    const out: Revocation[] = [];
    for (const [key, value] of [...this.map('revocations').entries()].sort(byKey)) {
      const record = this.readRevocation(key, value);
      if (record) out.push(record);
    }
    const frozen = deepFreeze(out);
    if (this.cacheable()) this.cached.revocations = frozen;
    return frozen;
  }

  /** Sets the operator drain flag of `nodeId` (`draining: false` clears it, keeping who and when). */
  setDraining(nodeId: string, flag: DrainFlag): DrainFlag {
    const id = this.check.require('draining', String(nodeId), nodeId, NodeIdSchema);
    const valid = this.check.require('draining', id, flag, DrainFlagSchema);
    this.state.transactLocal('enrollment', () => this.map('draining').set(id, valid));
    return valid;
  }

  /** Valid drain flags by node id (flags with `draining: false` included), in node id order. */
  drainFlags(): Map<string, DrainFlag> {
    const out = new Map<string, DrainFlag>();
    for (const [key, value] of [...this.map('draining').entries()].sort(byKey)) {
      if (!this.check.key('draining', key, value, NodeIdSchema)) continue;
      const flag = this.check.parse('draining', key, value, DrainFlagSchema);
      if (flag) out.set(key, flag);
    }
    return out;
  }

  isDraining(nodeId: string): boolean {
    const value = this.map('draining').get(nodeId);
    if (value === undefined) return false;
    return this.check.parse('draining', nodeId, value, DrainFlagSchema)?.draining === true;
  }

  /**
   * The raw entries of `nodes` or `revocations`, unchecked, for
   * computeActiveNodes (src/identity), which applies the full rules
   * (signature, revocation, duplicate IP/peer/key) in one pass.
   */
  rawEntries(map: 'nodes' | 'revocations'): [string, unknown][] {
    return [...this.map(map).entries()].sort(byKey);
  }

  /**
   * Records CA-signed scratch secrets sealed to nodes (one entry per node
   * and generation, docs/protocol.md, "Scratch key envelopes"); durable on
   * return. Does not check the signature (the control API does).
   */
  putScratchKeys(envelopes: readonly SignedScratchSecret[]): SignedScratchSecret[] {
    const valid = envelopes.map((envelope) => {
      const key =
        typeof envelope?.nodeId === 'string' && typeof envelope?.generation === 'number'
          ? scratchKeyOf(envelope)
          : '?';
      return this.check.require('scratchKeys', key, envelope, SignedScratchSecretSchema);
    });
    this.state.transactLocal('enrollment', () => {
      for (const envelope of valid) this.map('scratchKeys').set(scratchKeyOf(envelope), envelope);
    });
    return valid;
  }

  /** The schema-valid, verified envelopes addressed to `nodeId`, by generation. */
  scratchKeysFor(nodeId: string): SignedScratchSecret[] {
    const out: SignedScratchSecret[] = [];
    const prefix = `${nodeId}/`;
    for (const [key, value] of this.map('scratchKeys').entries()) {
      if (!key.startsWith(prefix)) continue;
      const envelope = this.readScratchKey(key, value);
      if (envelope) out.push(envelope);
    }
    return out.sort((a, b) => a.generation - b.generation);
  }

  /** Calls `listener` after every transaction that changed any of the five maps. */
  onChange(listener: (origin: unknown) => void): () => void {
    return onMapsChange(this.state, 'enrollment', ENROLLMENT_MAPS, this.options.logger, listener);
  }

  /** Not inside a transaction, where the maps may hold changes made after the cache was dropped. */
  private cacheable(): boolean {
    return this.state.doc('enrollment')._transaction === null;
  }

  private readNode(key: string, value: unknown): SignedEnrollment | undefined {
    if (value === undefined) return undefined;
    const record = this.check.parse('nodes', key, value, SignedEnrollmentSchema, (r) =>
      r.nodeId === key ? null : `record of node ${JSON.stringify(r.nodeId)} stored under another node's key`,
    );
    if (!record || !this.check.verified('nodes', key, value, record, this.verify)) return undefined;
    return record;
  }

  private readWitnessConfig(key: string, value: unknown): WitnessConfigRecord | undefined {
    const record = this.check.parse('witnesses', key, value, WitnessConfigRecordSchema, (r) =>
      key === `v${r.version}` ? null : `witness configuration v${r.version} stored under key ${key}`,
    );
    if (!record || !this.check.verified('witnesses', key, value, record, this.options.verifyWitnessConfig))
      return undefined;
    return record;
  }

  private readScratchKey(key: string, value: unknown): SignedScratchSecret | undefined {
    const envelope = this.check.parse('scratchKeys', key, value, SignedScratchSecretSchema, (e) =>
      scratchKeyOf(e) === key ? null : `scratch key of ${scratchKeyOf(e)} stored under key ${key}`,
    );
    if (!envelope || !this.check.verified('scratchKeys', key, value, envelope, this.options.verifyScratchKey))
      return undefined;
    return envelope;
  }

  private readRevocation(key: string, value: unknown): Revocation | undefined {
    if (value === undefined) return undefined;
    const record = this.check.parse('revocations', key, value, RevocationSchema, (r) =>
      r.nodeId === key
        ? null
        : `revocation of node ${JSON.stringify(r.nodeId)} stored under another node's key`,
    );
    if (!record || !this.check.verified('revocations', key, value, record, this.verifyRevocation))
      return undefined;
    return record;
  }
}

/** Where a scratch key envelope lives in the `scratchKeys` map. */
function scratchKeyOf(envelope: Pick<SignedScratchSecret, 'nodeId' | 'generation'>): string {
  return `${envelope.nodeId}/g${envelope.generation}`;
}
