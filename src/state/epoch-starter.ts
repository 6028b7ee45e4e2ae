import type { Logger } from 'pino';
import type { Counter, Registry } from 'prom-client';
import { counterIn, gaugeIn } from '../util/metrics.js';
import type { ClusterState } from './cluster-state.js';
import { DOC_NAMES, type DocName } from './names.js';

export interface EpochStarterOptions {
  state: ClusterState;
  logger: Logger;
  registry: Registry;
  /**
   * Whether this node is the one that starts epochs now: the lowest node id
   * among the members it sees alive, itself included (docs/epochs.md, "When
   * to start"). Two nodes that both think so start competing epochs: safe,
   * one wins everywhere, only wasteful.
   */
  isStarter: () => boolean;
  /** How often the documents are looked at, ms (default 60 s; 0: only by `check()`). */
  intervalMs?: number;
  /** History below this many bytes is never worth an epoch (default 64 KiB). */
  minSavingsBytes?: number;
}

export const DEFAULT_EPOCH_CHECK_MS = 60_000;
export const DEFAULT_MIN_EPOCH_SAVINGS_BYTES = 64 * 1024;

/**
 * Starts a new epoch of a document when its history outweighs its content:
 * when the encoded document is larger than twice the same content written
 * once, plus `minSavingsBytes` (docs/epochs.md). Looking costs two encodings
 * of the document, so it looks only after at least `minSavingsBytes` of
 * updates were applied since the last look.
 */
export class EpochStarter {
  private readonly options: EpochStarterOptions;
  private readonly logger: Logger;
  private readonly minSavingsBytes: number;
  private readonly started: Counter<'doc'>;
  private readonly written = new Map<DocName, number>();
  private timer: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;

  constructor(options: EpochStarterOptions) {
    this.options = options;
    this.logger = options.logger.child({ component: 'epoch-starter' });
    this.minSavingsBytes = options.minSavingsBytes ?? DEFAULT_MIN_EPOCH_SAVINGS_BYTES;
    this.started = counterIn(options.registry, {
      name: 'silo_state_epochs_started_total',
      help: 'Epochs this node started (docs/epochs.md)',
      labelNames: ['doc'],
    });
    const state = options.state;
    gaugeIn(options.registry, {
      name: 'silo_state_epoch',
      help: "The number of each document's current epoch",
      labelNames: ['doc'],
      collect() {
        for (const doc of DOC_NAMES) if (state.hasEpochs(doc)) this.set({ doc }, state.epoch(doc).number);
      },
    });
  }

  start(): void {
    if (this.unsubscribe !== undefined) return;
    this.unsubscribe = this.options.state.onChange((doc, update) => {
      this.written.set(doc, (this.written.get(doc) ?? 0) + update.byteLength);
    });
    const interval = this.options.intervalMs ?? DEFAULT_EPOCH_CHECK_MS;
    if (interval > 0) {
      this.timer = setInterval(() => this.check(), interval);
      this.timer.unref();
    }
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Looks at every document once; returns the documents it started an epoch of. */
  check(): DocName[] {
    const startedDocs: DocName[] = [];
    const state = this.options.state;
    for (const doc of DOC_NAMES) {
      if (!state.hasEpochs(doc) || (this.written.get(doc) ?? 0) < this.minSavingsBytes) continue;
      if (!this.options.isStarter()) return startedDocs;
      this.written.set(doc, 0);
      try {
        const { currentBytes, freshBytes } = state.epochSavings(doc);
        if (currentBytes <= 2 * freshBytes + this.minSavingsBytes) continue;
        const epoch = state.startEpoch(doc);
        this.started.inc({ doc });
        this.logger.info({ doc, epoch, currentBytes, freshBytes }, 'history outweighed content: new epoch');
        startedDocs.push(doc);
      } catch (err) {
        this.logger.error({ err, doc }, 'could not start an epoch');
      }
    }
    return startedDocs;
  }
}
