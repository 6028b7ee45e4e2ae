import {
  type Message,
  type PeerId,
  type SubscriptionChangeData,
  TopicValidatorResult,
} from '@libp2p/interface';
import type { Logger } from 'pino';
import type { Counter, Histogram, Registry } from 'prom-client';
import * as Y from 'yjs';
import type { ClusterState } from '../state/cluster-state.js';
import { judgeEpoch } from '../state/epochs/epoch.js';
import { DOC_NAMES, type DocName, Origin } from '../state/names.js';
import { counterIn, histogramIn } from '../util/metrics.js';
import {
  decodeEnvelope,
  ENVELOPE_OVERHEAD_BYTES,
  type EnvelopeRejection,
  encodeEnvelope,
} from './envelope.js';
import { ThrottledLog } from './log-throttle.js';
import type { GossipNode } from './node.js';
import { docTopic } from './topics.js';

/** Decides whether a message signed by libp2p peer `peerId` may carry updates from node `nodeId`. */
export type SenderCheck = (peerId: string, nodeId: string) => boolean;

export const allowAnySender: SenderCheck = () => true;

/** Why a received document message was rejected: an envelope defect or one found after decoding. */
export type ReplicationRejection = EnvelopeRejection | 'unsigned' | 'sender-not-allowed' | 'invalid-update';

export interface ReplicatorOptions {
  node: GossipNode;
  state: ClusterState;
  org: string;
  nodeId: string;
  logger: Logger;
  registry: Registry;
  /** How long local updates are collected before one merged publish, ms. */
  batchMs?: number;
  isSenderAllowed?: SenderCheck;
  /**
   * Called with the libp2p peer id that forwarded an update of a later
   * epoch of a document than ours (docs/epochs.md): a sync with it brings
   * that epoch, which this node then adopts. Default: nothing (sync at its
   * own pace, prompted by the digests, brings it).
   */
  onLaterEpoch?: (peerId: string, doc: DocName) => void;
}

export const DEFAULT_BATCH_MS = 5;

class ReplicatorMetrics {
  readonly updatesOut: Counter<'doc'>;
  readonly bytesOut: Counter<'doc'>;
  readonly updatesIn: Counter<'doc'>;
  readonly bytesIn: Counter<'doc'>;
  readonly rejects: Counter<'reason'>;
  readonly publishFailures: Counter<'reason'>;
  readonly otherEpoch: Counter<'doc' | 'epoch'>;
  readonly relays: Counter<'doc' | 'result'>;
  readonly unheard: Counter<'doc' | 'result'>;
  readonly batchSize: Histogram;

  constructor(registry: Registry) {
    this.updatesOut = counterIn(registry, {
      name: 'silo_gossip_updates_published_total',
      help: 'Envelopes published (each may merge several local updates)',
      labelNames: ['doc'],
    });
    this.bytesOut = counterIn(registry, {
      name: 'silo_gossip_published_bytes_total',
      help: 'Envelope bytes published (before gossipsub framing and signature)',
      labelNames: ['doc'],
    });
    this.updatesIn = counterIn(registry, {
      name: 'silo_gossip_updates_received_total',
      help: 'Envelopes received, validated and applied',
      labelNames: ['doc'],
    });
    this.bytesIn = counterIn(registry, {
      name: 'silo_gossip_received_bytes_total',
      help: 'Envelope bytes received and applied',
      labelNames: ['doc'],
    });
    this.rejects = counterIn(registry, {
      name: 'silo_gossip_rejected_total',
      help: 'Document messages rejected by the topic validator, by reason',
      labelNames: ['reason'],
    });
    this.otherEpoch = counterIn(registry, {
      name: 'silo_gossip_other_epoch_updates_total',
      help: 'Document updates of another epoch than ours, not applied: earlier (the sender carries its writes over) or later (fetched by sync)',
      labelNames: ['doc', 'epoch'],
    });
    this.publishFailures = counterIn(registry, {
      name: 'silo_gossip_publish_failures_total',
      help: 'Local batches that could not be published (sync carries them later)',
      labelNames: ['reason'],
    });
    this.relays = counterIn(registry, {
      name: 'silo_gossip_relays_total',
      help: 'Updates learned from a returning node by anti-entropy, by whether they were queued for publishing (relayed) or were too large (too-large: sync carries them)',
      labelNames: ['doc', 'result'],
    });
    this.unheard = counterIn(registry, {
      name: 'silo_gossip_unheard_updates_total',
      help: 'Local updates nobody subscribed heard (written before the gossip layer started, or published to no peer): held until a peer subscribes to the document (held), then published again (republished), or dropped when too large to hold (too-large: sync carries them)',
      labelNames: ['doc', 'result'],
    });
    this.batchSize = histogramIn(registry, {
      name: 'silo_gossip_publish_batch_updates',
      help: 'Local updates merged into one published envelope',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
    });
  }
}

interface PendingBatch {
  updates: Uint8Array[];
  bytes: number;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Document ⇄ topic. Publishes local updates (batched, merged, enveloped)
 * and validates + applies updates from the document topics inside the
 * gossipsub topic validator, so a message is forwarded only once it has
 * been applied here and a malformed one is never forwarded at all.
 */
export class Replicator {
  private readonly node: GossipNode;
  private readonly state: ClusterState;
  private readonly org: string;
  private readonly nodeId: string;
  private readonly logger: Logger;
  private readonly rejectLog: ThrottledLog;
  private readonly metrics: ReplicatorMetrics;
  private readonly batchMs: number;
  private readonly isSenderAllowed: SenderCheck;
  private readonly topics: Record<DocName, string>;
  private readonly maxEnvelopeBytes: number;
  private readonly pending = new Map<DocName, PendingBatch>();
  private readonly inflight = new Set<Promise<void>>();
  /** Per document, the local updates no subscribed peer has heard yet (see hold()). */
  private readonly held = new Map<DocName, { updates: Uint8Array[]; bytes: number }>();
  private readonly topicDocs: Map<string, DocName>;
  private unsubscribeState: (() => void) | undefined;
  private unsubscribeEpochs: (() => void) | undefined;
  private readonly onLaterEpoch: (peerId: string, doc: DocName) => void;
  private running = false;

  constructor(options: ReplicatorOptions) {
    this.node = options.node;
    this.state = options.state;
    this.org = options.org;
    this.nodeId = options.nodeId;
    this.logger = options.logger.child({ component: 'replicator' });
    this.rejectLog = new ThrottledLog(this.logger);
    this.metrics = new ReplicatorMetrics(options.registry);
    this.batchMs = options.batchMs ?? DEFAULT_BATCH_MS;
    this.isSenderAllowed = options.isSenderAllowed ?? allowAnySender;
    this.onLaterEpoch = options.onLaterEpoch ?? (() => {});
    this.maxEnvelopeBytes = this.state.maxUpdateBytes + ENVELOPE_OVERHEAD_BYTES;
    const topics = {} as Record<DocName, string>;
    for (const doc of DOC_NAMES) topics[doc] = docTopic(this.org, doc);
    this.topics = topics;
    this.topicDocs = new Map(DOC_NAMES.map((doc) => [topics[doc], doc]));
    // Listening from construction on: what is written before start() (the node's own enrollment
    // record, written before the first connection) is held and published to the first peer
    // that subscribes, instead of reaching only the peers this node happens to sync with.
    this.listenToState();
  }

  private listenToState(): void {
    if (this.unsubscribeState !== undefined) return;
    // Batched and held updates belong to the epoch they were written in. After a switch they are
    // dropped: what they wrote is in the new epoch already (a start copies it, an adoption carries
    // it over and publishes the carried records as a new local update).
    this.unsubscribeEpochs = this.state.onEpoch((doc) => {
      const batch = this.pending.get(doc);
      if (batch?.timer) clearTimeout(batch.timer);
      this.pending.delete(doc);
      this.held.delete(doc);
    });
    this.unsubscribeState = this.state.onChange((doc, update, origin) => {
      if (origin === Origin.local) {
        if (this.running) this.enqueue(doc, update);
        else this.hold(doc, update);
      } else if (origin === Origin.catchUp && this.running) {
        this.relay(doc, update);
      }
    });
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    const pubsub = this.node.services.pubsub;
    for (const doc of DOC_NAMES) {
      const topic = this.topics[doc];
      // The validator is registered before subscribing so that no message
      // on the topic is ever accepted unchecked.
      pubsub.topicValidators.set(topic, (peer, message) => this.validate(doc, peer, message));
      pubsub.subscribe(topic);
    }
    pubsub.addEventListener('subscription-change', this.onSubscriptionChange);
    this.listenToState();
    // Published to whoever already subscribes (nobody, usually: the first subscription-change
    // publishes them again).
    for (const doc of [...this.held.keys()]) this.republish(doc);
  }

  /** Publishes what is still batched, then leaves the topics. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.unsubscribeState?.();
    this.unsubscribeState = undefined;
    this.unsubscribeEpochs?.();
    this.unsubscribeEpochs = undefined;
    const pubsub = this.node.services.pubsub;
    pubsub.removeEventListener('subscription-change', this.onSubscriptionChange);
    for (const doc of DOC_NAMES) this.flush(doc);
    await Promise.allSettled([...this.inflight]);
    // Durable locally: anti-entropy carries them once the node runs again.
    this.held.clear();
    for (const doc of DOC_NAMES) {
      pubsub.unsubscribe(this.topics[doc]);
      pubsub.topicValidators.delete(this.topics[doc]);
    }
  }

  /** Resolves once every batch queued so far has been handed to gossipsub. */
  async drain(): Promise<void> {
    for (const doc of DOC_NAMES) this.flush(doc);
    await Promise.allSettled([...this.inflight]);
  }

  /**
   * Publishes what a catch-up session added here (Yjs hands over only what
   * was new to us). After a healed partition, the two ends of the first
   * connection across learn the other side's writes by sync; relayed, they
   * reach the rest of each side in one gossip round instead of one catch-up
   * session per node. Receivers apply it as `remote` and do not relay it
   * again, so a relay travels one gossip hop-tree and stops.
   */
  private relay(doc: DocName, update: Uint8Array): void {
    // Above half the limit it would be published alone and may be refused;
    // the others' own catch-up sessions carry it instead.
    if (update.byteLength > this.state.maxUpdateBytes / 2) {
      this.metrics.relays.inc({ doc, result: 'too-large' });
      return;
    }
    this.metrics.relays.inc({ doc, result: 'relayed' });
    this.logger.debug({ doc, bytes: update.byteLength }, 'relaying what a catch-up session brought');
    this.enqueue(doc, update);
  }

  /**
   * Keeps a local update that no subscribed peer heard, beside what is already held for its
   * document, until a peer subscribes. Above half the update limit in all, the held updates are
   * dropped instead (a merged publish that large may be refused): anti-entropy delivers them as
   * it always would.
   */
  private hold(doc: DocName, update: Uint8Array): void {
    // Merged only when published: a lone node holds every write it makes, and merging on each
    // would cost the size of all of them per write.
    const held = this.held.get(doc) ?? { updates: [], bytes: 0 };
    held.updates.push(update);
    held.bytes += update.byteLength;
    if (held.bytes > this.state.maxUpdateBytes / 2) {
      this.held.delete(doc);
      this.metrics.unheard.inc({ doc, result: 'too-large' });
      this.logger.debug({ doc, bytes: held.bytes }, 'unheard updates too large to hold; sync carries them');
      return;
    }
    this.held.set(doc, held);
    this.metrics.unheard.inc({ doc, result: 'held' });
  }

  private republish(doc: DocName): void {
    const held = this.held.get(doc);
    if (held === undefined) return;
    this.held.delete(doc);
    const update = held.updates.length === 1 ? held.updates[0]! : Y.mergeUpdates(held.updates);
    this.metrics.unheard.inc({ doc, result: 'republished' });
    this.logger.debug({ doc, bytes: update.byteLength }, 'publishing unheard updates to a new subscriber');
    this.enqueue(doc, update);
  }

  private readonly onSubscriptionChange = (event: CustomEvent<SubscriptionChangeData>): void => {
    if (!this.running) return;
    for (const { topic, subscribe } of event.detail.subscriptions) {
      const doc = this.topicDocs.get(topic);
      if (subscribe && doc !== undefined) this.republish(doc);
    }
  };

  private enqueue(doc: DocName, update: Uint8Array): void {
    let batch = this.pending.get(doc);
    if (!batch) {
      batch = { updates: [], bytes: 0, timer: undefined };
      this.pending.set(doc, batch);
    }
    batch.updates.push(update);
    batch.bytes += update.byteLength;
    // A batch is cut early when it nears the size peers accept, so that a
    // burst of writes never merges into one envelope they must reject.
    if (batch.bytes >= this.state.maxUpdateBytes / 2) {
      this.flush(doc);
    } else if (!batch.timer) {
      batch.timer = setTimeout(() => this.flush(doc), this.batchMs);
    }
  }

  private flush(doc: DocName): void {
    const batch = this.pending.get(doc);
    if (!batch || batch.updates.length === 0) return;
    this.pending.delete(doc);
    if (batch.timer) clearTimeout(batch.timer);
    const update = batch.updates.length === 1 ? batch.updates[0]! : Y.mergeUpdates(batch.updates);
    this.metrics.batchSize.observe(batch.updates.length);
    if (update.byteLength > this.state.maxUpdateBytes) {
      this.metrics.publishFailures.inc({ reason: 'oversize' });
      this.logger.error(
        { doc, bytes: update.byteLength, limit: this.state.maxUpdateBytes },
        'local update exceeds the size peers accept; not published',
      );
      return;
    }
    const envelope = encodeEnvelope({
      org: this.org,
      doc,
      from: this.nodeId,
      update,
      epoch: this.state.epoch(doc),
    });
    const publishing = this.node.services.pubsub.publish(this.topics[doc], envelope).then(
      ({ recipients }) => {
        this.metrics.updatesOut.inc({ doc });
        this.metrics.bytesOut.inc({ doc }, envelope.byteLength);
        // Flood publish sends to every subscribed peer: none means nobody heard it.
        if (recipients.length === 0 && this.running) this.hold(doc, update);
      },
      (err: unknown) => {
        // Not fatal: the update is durable locally and anti-entropy sync
        // delivers it to peers that missed it.
        this.metrics.publishFailures.inc({ reason: 'publish-error' });
        this.logger.warn({ err, doc }, 'publish failed');
      },
    );
    this.inflight.add(publishing);
    void publishing.finally(() => this.inflight.delete(publishing));
  }

  private validate(doc: DocName, propagationSource: PeerId, message: Message): TopicValidatorResult {
    // StrictSign makes gossipsub drop unsigned messages before us; checked
    // again because the sender check below needs the signer.
    if (message.type !== 'signed') return this.reject('unsigned', doc, undefined, 'message is not signed');
    const signer = message.from.toString();
    const decoded = decodeEnvelope(message.data, { org: this.org, doc, maxBytes: this.maxEnvelopeBytes });
    if (!decoded.ok) return this.reject(decoded.reason, doc, signer, decoded.detail);
    const { envelope } = decoded;
    if (!this.isSenderAllowed(signer, envelope.from)) {
      return this.reject('sender-not-allowed', doc, signer, `node "${envelope.from}"`);
    }
    if (!this.state.hasEpochs(doc) && envelope.epoch.number > 0) {
      return this.reject('malformed', doc, signer, `an epoch for ${doc}, which has none`);
    }
    const verdict = judgeEpoch(this.state.epoch(doc), envelope.epoch);
    if (verdict !== 'merge') {
      // Another epoch's update means nothing in ours. Not forwarded: its other receivers
      // judge it the same way. An earlier one's sender carries its writes over once it
      // adopts ours; a later one is fetched whole from the peer that forwarded it.
      this.metrics.otherEpoch.inc({ doc, epoch: verdict === 'adopt' ? 'later' : 'earlier' });
      if (verdict === 'adopt') this.onLaterEpoch(propagationSource.toString(), doc);
      return TopicValidatorResult.Ignore;
    }
    try {
      // applyRemote validates the whole update before Yjs sees it.
      this.state.applyRemote(doc, envelope.update, Origin.remote);
    } catch (err) {
      return this.reject('invalid-update', doc, signer, (err as Error).message);
    }
    this.metrics.updatesIn.inc({ doc });
    this.metrics.bytesIn.inc({ doc }, message.data.byteLength);
    return TopicValidatorResult.Accept;
  }

  private reject(
    reason: ReplicationRejection,
    doc: DocName,
    signer: string | undefined,
    detail: string,
  ): TopicValidatorResult {
    this.metrics.rejects.inc({ reason });
    this.rejectLog.warn(
      `${reason}:${signer}`,
      { reason, doc, peer: signer, detail },
      'rejected document message',
    );
    return TopicValidatorResult.Reject;
  }
}
