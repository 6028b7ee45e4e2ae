import * as Y from 'yjs';
import type { ClusterState } from './cluster-state.js';
import { byKey, onMapsChange, RecordChecker, type ViewOptions } from './record-check.js';
import {
  type ImagesHeld,
  ImagesHeldSchema,
  MAX_IMAGES_HELD,
  MAX_PEERS_HELD,
  NodeIdSchema,
  NodeReportEnvelopeSchema,
  type ObservedStatus,
  ObservedStatusSchema,
  type PeersHeld,
  PeersHeldSchema,
  WorkloadNameSchema,
} from './schemas.js';

export interface ObservedViewOptions extends ViewOptions {
  /** The node this agent runs as: the only entry it writes. */
  nodeId: string;
}

/** A node's report as its owner rewrites it: valid statuses by workload name, its images and its peers. */
interface Report {
  statuses: Record<string, ObservedStatus>;
  images: ImagesHeld | null;
  /** Absent until the node first records its connections (and in reports of older agents). */
  peers?: PeersHeld;
}

/** Where a node's entry was read from: `reports`, or the maps of agents before reports. */
type Source = { kind: 'report'; value: unknown } | { kind: 'legacy' } | { kind: 'none' };

/**
 * Typed access to the observed document (docs/protocol.md, "Documents"):
 * `reports` (nodeId → `{statuses: {workload → ObservedStatus}, images}`), one
 * plain value per node, written whole by that node and by no other.
 *
 * Why one value per node and not a Y.Map of statuses: Yjs keeps a tombstone
 * (an item with its origin and parent) for every overwritten map entry, so a
 * status map grows by about 10 bytes per status change, forever. Successive
 * overwrites of *one* key by *one* writer, with nothing else written by it in
 * between, are consecutive items that Yjs merges into a single deleted run.
 * Every write of a node to this document is a rewrite of its own report, so
 * its history collapses to one run per agent life (client id), and the
 * document stays the size of the live reports (bench `doc-growth`). The cost:
 * each status change sends the node's whole report (`batch` makes a pass of
 * changes one update).
 *
 * Agents before reports wrote `nodes/<id>` (a Y.Map of statuses) and
 * `images/<id>`; they are read for a node that has no report, and a node
 * deletes its own on its first report (which drops their history too).
 */
export class ObservedView {
  readonly nodeId: string;
  private readonly state: ClusterState;
  private readonly check: RecordChecker;
  private readonly options: ObservedViewOptions;
  /** This node's report as last parsed, valid while the document still holds `source`. */
  private own: { source: unknown; report: Report } | null = null;

  constructor(options: ObservedViewOptions) {
    this.options = options;
    this.state = options.state;
    this.check = new RecordChecker('observed', options);
    this.nodeId = this.check.require('reports', String(options.nodeId), options.nodeId, NodeIdSchema);
  }

  private get reports(): Y.Map<unknown> {
    return this.state.doc('observed').getMap('reports');
  }

  private get legacyNodes(): Y.Map<unknown> {
    return this.state.doc('observed').getMap('nodes');
  }

  private get legacyImages(): Y.Map<unknown> {
    return this.state.doc('observed').getMap('images');
  }

  /**
   * Runs `fn` as one transaction: every write in it reaches the document,
   * the disk and the peers as one update (the report as it is at the end).
   */
  batch<T>(fn: () => T): T {
    return this.state.transactLocal('observed', () => fn());
  }

  /** Writes this node's status of `workload`; durable on return (or at the end of a batch). */
  setStatus(nodeId: string, workload: string, status: ObservedStatus): ObservedStatus {
    this.requireOwn(nodeId, 'set a status');
    const name = this.check.require('reports', `${nodeId}/${String(workload)}`, workload, WorkloadNameSchema);
    const valid = this.check.require('reports', `${nodeId}/${name}`, status, ObservedStatusSchema);
    this.writeOwn((report) => {
      report.statuses[name] = valid;
    });
    return valid;
  }

  get(nodeId: string, workload: string): ObservedStatus | undefined {
    const source = this.sourceOf(nodeId);
    if (source.kind === 'report') {
      const envelope = this.envelope(nodeId, source.value);
      if (envelope === undefined || !Object.hasOwn(envelope.statuses, workload)) return undefined;
      return this.readStatus('reports', nodeId, workload, envelope.statuses[workload]);
    }
    if (source.kind === 'none') return undefined;
    const inner = this.legacyInner(nodeId);
    return inner ? this.readStatus('nodes', nodeId, workload, inner.get(workload)) : undefined;
  }

  /** A node's valid statuses by workload name, in name order. */
  listForNode(nodeId: string): Map<string, ObservedStatus> {
    return this.readNode(nodeId) ?? new Map();
  }

  /** Every node's valid statuses, in node id order. Nodes whose entry is unreadable are left out. */
  listAll(): Map<string, Map<string, ObservedStatus>> {
    const out = new Map<string, Map<string, ObservedStatus>>();
    const ids = new Set<string>([...this.reports.keys(), ...this.legacyNodes.keys()]);
    for (const nodeId of [...ids].sort()) {
      const map = this.reports.has(nodeId) ? 'reports' : 'nodes';
      if (!this.check.key(map, nodeId, undefined, NodeIdSchema)) continue;
      const statuses = this.readNode(nodeId);
      if (statuses !== undefined) out.set(nodeId, statuses);
    }
    return out;
  }

  /** Removes this node's status of `workload`; true if there was one. Durable on return. */
  remove(nodeId: string, workload: string): boolean {
    this.requireOwn(nodeId, 'remove a status');
    if (!Object.hasOwn(this.ownReport().statuses, workload)) return false;
    this.writeOwn((report) => {
      delete report.statuses[workload];
    });
    return true;
  }

  /**
   * Records the image digests this node's store holds (its report's `images`,
   * docs/protocol.md). Writes nothing when the set is unchanged; durable on
   * return. At most MAX_IMAGES_HELD (the first ones given are kept).
   */
  setImagesHeld(nodeId: string, digests: readonly string[], at: number): boolean {
    this.requireOwn(nodeId, 'record held images');
    const unique = [...new Set(digests)].slice(0, MAX_IMAGES_HELD).sort();
    const current = this.imagesOf(nodeId);
    if (current !== undefined && sameList(current.digests, unique)) return false;
    const valid = this.check.require(
      'reports',
      `${nodeId}/images`,
      { digests: unique, at },
      ImagesHeldSchema,
    );
    this.writeOwn((report) => {
      report.images = valid;
    });
    return true;
  }

  /** A node's recorded images, if it wrote a valid entry. */
  imagesOf(nodeId: string): ImagesHeld | undefined {
    const source = this.sourceOf(nodeId);
    if (source.kind === 'report') {
      const images = this.envelope(nodeId, source.value)?.images;
      if (images === undefined || images === null) return undefined;
      return this.check.parse('reports', `${nodeId}/images`, images, ImagesHeldSchema);
    }
    const value = this.legacyImages.get(nodeId);
    if (value === undefined) return undefined;
    return this.check.parse('images', nodeId, value, ImagesHeldSchema);
  }

  /**
   * Records the enrolled nodes this node is connected to (its report's
   * `peers`, docs/protocol.md). Writes nothing when the set is unchanged, so
   * the report is rewritten only when a connection opens or closes for good
   * (the caller debounces). At most MAX_PEERS_HELD (the first ones in id order).
   */
  setPeers(nodeId: string, peers: readonly string[], at: number): boolean {
    this.requireOwn(nodeId, 'record peers');
    const unique = [...new Set(peers)].sort().slice(0, MAX_PEERS_HELD);
    const current = this.peersOf(nodeId);
    if (current !== undefined && sameList(current.nodes, unique)) return false;
    const valid = this.check.require('reports', `${nodeId}/peers`, { nodes: unique, at }, PeersHeldSchema);
    this.writeOwn((report) => {
      report.peers = valid;
    });
    return true;
  }

  /** A node's recorded peers, if its report has a valid entry (older agents write none). */
  peersOf(nodeId: string): PeersHeld | undefined {
    const source = this.sourceOf(nodeId);
    if (source.kind !== 'report') return undefined;
    const peers = this.envelope(nodeId, source.value)?.peers;
    if (peers === undefined || peers === null) return undefined;
    return this.check.parse('reports', `${nodeId}/peers`, peers, PeersHeldSchema);
  }

  /** Nodes whose recorded images include `digest`, in node id order (this node included). */
  holdersOf(digest: string): string[] {
    const ids = new Set<string>([...this.reports.keys(), ...this.legacyImages.keys()]);
    const out: string[] = [];
    for (const nodeId of [...ids].sort()) {
      if (!this.check.key(this.reports.has(nodeId) ? 'reports' : 'images', nodeId, undefined, NodeIdSchema))
        continue;
      if (this.imagesOf(nodeId)?.digests.includes(digest)) out.push(nodeId);
    }
    return out;
  }

  onChange(listener: (origin: unknown) => void): () => void {
    return onMapsChange(this.state, 'observed', ['reports', 'nodes'], this.options.logger, listener);
  }

  private requireOwn(nodeId: string, what: string): void {
    if (nodeId !== this.nodeId) {
      throw new Error(
        `observed: node ${JSON.stringify(this.nodeId)} may not ${what} for node ${JSON.stringify(nodeId)}; ` +
          'each node writes only its own entry',
      );
    }
  }

  /** Where `nodeId`'s entry lives: its report, else (an agent before reports) the legacy maps. */
  private sourceOf(nodeId: string): Source {
    const value = this.reports.get(nodeId);
    if (value !== undefined) return { kind: 'report', value };
    if (this.legacyNodes.has(nodeId) || this.legacyImages.has(nodeId)) return { kind: 'legacy' };
    return { kind: 'none' };
  }

  /** This node's valid statuses and images as the document holds them now. */
  private ownReport(): Report {
    const value = this.reports.get(this.nodeId);
    if (this.own !== null && value !== undefined && Object.is(this.own.source, value)) return this.own.report;
    const statuses: Record<string, ObservedStatus> = {};
    for (const [name, status] of this.readNode(this.nodeId) ?? []) statuses[name] = status;
    const peers = this.peersOf(this.nodeId);
    const report: Report = { statuses, images: this.imagesOf(this.nodeId) ?? null };
    if (peers !== undefined) report.peers = peers;
    this.own = value === undefined ? null : { source: value, report };
    return report;
  }

  /**
   * Rewrites this node's report with `change` applied, as one transaction
   * that also deletes its legacy entries. A report read from the document
   * is never mutated: the change goes to a copy, which becomes the value.
   */
  private writeOwn(change: (report: Report) => void): void {
    const current = this.ownReport();
    const next: Report = { ...current, statuses: { ...current.statuses } };
    change(next);
    const statuses: Record<string, ObservedStatus> = {};
    for (const name of Object.keys(next.statuses).sort())
      statuses[name] = next.statuses[name] as ObservedStatus;
    // `peers` only once recorded: a report without it is what older agents write and read.
    const value: Report = { statuses, images: next.images };
    if (next.peers !== undefined) value.peers = next.peers;
    this.state.transactLocal('observed', () => {
      this.reports.set(this.nodeId, value);
      if (this.legacyNodes.has(this.nodeId)) this.legacyNodes.delete(this.nodeId);
      if (this.legacyImages.has(this.nodeId)) this.legacyImages.delete(this.nodeId);
    });
    this.own = { source: value, report: value };
  }

  private envelope(
    nodeId: string,
    value: unknown,
  ): { statuses: Record<string, unknown>; images?: unknown; peers?: unknown } | undefined {
    return this.check.parse('reports', nodeId, value, NodeReportEnvelopeSchema);
  }

  /** A node's valid statuses, or undefined when its entry is missing or unreadable. */
  private readNode(nodeId: string): Map<string, ObservedStatus> | undefined {
    const source = this.sourceOf(nodeId);
    if (source.kind === 'none') return undefined;
    const out = new Map<string, ObservedStatus>();
    if (source.kind === 'report') {
      const envelope = this.envelope(nodeId, source.value);
      if (envelope === undefined) return undefined;
      for (const [workload, raw] of Object.entries(envelope.statuses).sort(byKey)) {
        const status = this.readStatus('reports', nodeId, workload, raw);
        if (status) out.set(workload, status);
      }
      return out;
    }
    const inner = this.legacyInner(nodeId);
    if (inner === undefined) return this.legacyNodes.has(nodeId) ? undefined : out;
    for (const [workload, raw] of [...inner.entries()].sort(byKey)) {
      const status = this.readStatus('nodes', nodeId, workload, raw);
      if (status) out.set(workload, status);
    }
    return out;
  }

  /** A legacy `nodes/<id>` entry, if it is the Y.Map it should be. */
  private legacyInner(nodeId: string): Y.Map<unknown> | undefined {
    const value = this.legacyNodes.get(nodeId);
    if (value === undefined) return undefined;
    if (value instanceof Y.Map) return value;
    this.check.report('nodes', nodeId, value, 'node entry is not a Y.Map of statuses', 'invalid');
    return undefined;
  }

  private readStatus(
    map: 'reports' | 'nodes',
    nodeId: string,
    workload: string,
    value: unknown,
  ): ObservedStatus | undefined {
    if (value === undefined) return undefined;
    const key = `${nodeId}/${workload}`;
    if (!this.check.key(map, key, value, WorkloadNameSchema, workload)) return undefined;
    return this.check.parse(map, key, value, ObservedStatusSchema);
  }
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((item, i) => item === b[i]);
}
