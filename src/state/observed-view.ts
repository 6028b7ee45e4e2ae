import * as Y from 'yjs';
import type { ClusterState } from './cluster-state.js';
import { byKey, onMapsChange, RecordChecker, type ViewOptions } from './record-check.js';
import {
  type ImagesHeld,
  ImagesHeldSchema,
  MAX_IMAGES_HELD,
  NodeIdSchema,
  type ObservedStatus,
  ObservedStatusSchema,
  WorkloadNameSchema,
} from './schemas.js';

export interface ObservedViewOptions extends ViewOptions {
  /** The node this agent runs as: the only entry it writes. */
  nodeId: string;
}

/**
 * Typed access to the observed document (docs/protocol.md, "Documents"):
 * `nodes` (nodeId → Y.Map workloadName → ObservedStatus plain object).
 *
 * Each node writes only its own inner map, so writes of different nodes
 * never touch the same key. The inner Y.Map is created only by its owner,
 * once, on the owner's first status write (later writes find it in the
 * document, restored from disk at start-up). Two different Y.Maps set under
 * one node id concurrently would resolve last-writer-wins and hide the
 * loser's statuses; with a single creator that needs the owner to lose its
 * disk and write before syncing with a peer, and even then the owner's
 * reconciler re-asserts its statuses into the winning map on its next pass.
 */
export class ObservedView {
  readonly nodeId: string;
  private readonly state: ClusterState;
  private readonly check: RecordChecker;
  private readonly options: ObservedViewOptions;

  constructor(options: ObservedViewOptions) {
    this.options = options;
    this.state = options.state;
    this.check = new RecordChecker('observed', options);
    this.nodeId = this.check.require('nodes', String(options.nodeId), options.nodeId, NodeIdSchema);
  }

  private get nodes(): Y.Map<unknown> {
    return this.state.doc('observed').getMap('nodes');
  }

  private get images(): Y.Map<unknown> {
    return this.state.doc('observed').getMap('images');
  }

  /** Writes this node's status of `workload`; durable on return. */
  setStatus(nodeId: string, workload: string, status: ObservedStatus): ObservedStatus {
    this.requireOwn(nodeId, 'set a status');
    const name = this.check.require('nodes', `${nodeId}/${String(workload)}`, workload, WorkloadNameSchema);
    const valid = this.check.require('nodes', `${nodeId}/${name}`, status, ObservedStatusSchema);
    this.state.transactLocal('observed', () => this.ownMap().set(name, valid));
    return valid;
  }

  get(nodeId: string, workload: string): ObservedStatus | undefined {
    const inner = this.innerMap(nodeId, this.nodes.get(nodeId));
    if (!inner) return undefined;
    return this.readStatus(nodeId, workload, inner.get(workload));
  }

  /** A node's valid statuses by workload name, in name order. */
  listForNode(nodeId: string): Map<string, ObservedStatus> {
    return this.readNode(nodeId, this.nodes.get(nodeId));
  }

  /** Every node's valid statuses, in node id order. Nodes whose entry is unreadable are left out. */
  listAll(): Map<string, Map<string, ObservedStatus>> {
    const out = new Map<string, Map<string, ObservedStatus>>();
    for (const [nodeId, value] of [...this.nodes.entries()].sort(byKey)) {
      if (!this.check.key('nodes', nodeId, value, NodeIdSchema)) continue;
      if (!this.innerMap(nodeId, value)) continue;
      out.set(nodeId, this.readNode(nodeId, value));
    }
    return out;
  }

  /** Removes this node's status of `workload`; true if there was one. Durable on return. */
  remove(nodeId: string, workload: string): boolean {
    this.requireOwn(nodeId, 'remove a status');
    const inner = this.nodes.get(this.nodeId);
    if (!(inner instanceof Y.Map) || !inner.has(workload)) return false;
    this.state.transactLocal('observed', () => inner.delete(workload));
    return true;
  }

  /**
   * Records the image digests this node's store holds (`images/<nodeId>`,
   * docs/protocol.md). Writes nothing when the set is unchanged; durable on
   * return. At most MAX_IMAGES_HELD (the first ones given are kept).
   */
  setImagesHeld(nodeId: string, digests: readonly string[], at: number): boolean {
    this.requireOwn(nodeId, 'record held images');
    const unique = [...new Set(digests)].slice(0, MAX_IMAGES_HELD).sort();
    const current = this.imagesOf(nodeId);
    if (current !== undefined && sameList(current.digests, unique)) return false;
    const valid = this.check.require('images', nodeId, { digests: unique, at }, ImagesHeldSchema);
    this.state.transactLocal('observed', () => this.images.set(nodeId, valid));
    return true;
  }

  /** A node's recorded images, if it wrote a valid entry. */
  imagesOf(nodeId: string): ImagesHeld | undefined {
    const value = this.images.get(nodeId);
    if (value === undefined) return undefined;
    return this.check.parse('images', nodeId, value, ImagesHeldSchema);
  }

  /** Nodes whose recorded images include `digest`, in node id order (this node included). */
  holdersOf(digest: string): string[] {
    const out: string[] = [];
    for (const [nodeId, value] of [...this.images.entries()].sort(byKey)) {
      if (!this.check.key('images', nodeId, value, NodeIdSchema)) continue;
      if (this.check.parse('images', nodeId, value, ImagesHeldSchema)?.digests.includes(digest))
        out.push(nodeId);
    }
    return out;
  }

  onChange(listener: (origin: unknown) => void): () => void {
    return onMapsChange(this.state.doc('observed'), [this.nodes], this.options.logger, listener);
  }

  private requireOwn(nodeId: string, what: string): void {
    if (nodeId !== this.nodeId) {
      throw new Error(
        `observed: node ${JSON.stringify(this.nodeId)} may not ${what} for node ${JSON.stringify(nodeId)}; ` +
          'each node writes only its own entry',
      );
    }
  }

  /** This node's inner map, created on first use; call inside a transaction. */
  private ownMap(): Y.Map<unknown> {
    const existing = this.nodes.get(this.nodeId);
    if (existing instanceof Y.Map) return existing;
    if (existing !== undefined) {
      this.check.report('nodes', this.nodeId, existing, 'own entry is not a Y.Map; replacing it', 'invalid');
    }
    const created = new Y.Map<unknown>();
    this.nodes.set(this.nodeId, created);
    return created;
  }

  private innerMap(nodeId: string, value: unknown): Y.Map<unknown> | undefined {
    if (value === undefined) return undefined;
    if (value instanceof Y.Map) return value;
    this.check.report('nodes', nodeId, value, 'node entry is not a Y.Map of statuses', 'invalid');
    return undefined;
  }

  private readNode(nodeId: string, value: unknown): Map<string, ObservedStatus> {
    const out = new Map<string, ObservedStatus>();
    const inner = this.innerMap(nodeId, value);
    if (!inner) return out;
    for (const [workload, raw] of [...inner.entries()].sort(byKey)) {
      const status = this.readStatus(nodeId, workload, raw);
      if (status) out.set(workload, status);
    }
    return out;
  }

  private readStatus(nodeId: string, workload: string, value: unknown): ObservedStatus | undefined {
    if (value === undefined) return undefined;
    const key = `${nodeId}/${workload}`;
    if (!this.check.key('nodes', key, value, WorkloadNameSchema, workload)) return undefined;
    return this.check.parse('nodes', key, value, ObservedStatusSchema);
  }
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((item, i) => item === b[i]);
}
