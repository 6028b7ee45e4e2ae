import type { Logger } from 'pino';
import type { ObservedView } from '../state/observed-view.js';
import type { ImageStore } from './image-store.js';

export interface ImageHolderRecordOptions {
  nodeId: string;
  store: ImageStore;
  observed: ObservedView;
  logger: Logger;
  /** Re-reads the store this often (another process or store instance may have written to it). */
  refreshMs?: number;
  now?: () => number;
}

/**
 * Keeps this node's entry in the observed document's `images` map equal to
 * the digests its image store holds (docs/protocol.md, "observed"), so that
 * a node placing a workload asks a node that has the image, connected or
 * not (src/reconciler/reconcile-loop.ts `imageHints`). Rewritten when the
 * store says it changed and every `refreshMs`; an unchanged set writes
 * nothing.
 */
export class ImageHolderRecord {
  private readonly options: ImageHolderRecordOptions;
  private timer: NodeJS.Timeout | null = null;
  private unsubscribe: (() => void) | null = null;
  /** Publishes run one after another; a request during one runs once more after it. */
  private running: Promise<void> | null = null;
  private again = false;

  constructor(options: ImageHolderRecordOptions) {
    this.options = options;
  }

  async start(): Promise<void> {
    if (this.timer !== null) return;
    this.unsubscribe = this.options.store.onChange(() => this.publish());
    this.timer = setInterval(() => this.publish(), this.options.refreshMs ?? 30_000);
    this.timer.unref();
    await this.publish();
  }

  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.unsubscribe?.();
    this.unsubscribe = null;
    await this.running;
  }

  /** Writes the current set (now, or right after the write in progress). */
  publish(): Promise<void> {
    if (this.running !== null) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.writeOnce();
      } while (this.again && this.timer !== null);
    })().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async writeOnce(): Promise<void> {
    const { store, observed, nodeId, logger } = this.options;
    try {
      const digests = await store.list();
      // Newest first, so that a store above the record's limit lists what it got last.
      if (observed.setImagesHeld(nodeId, digests.reverse(), (this.options.now ?? Date.now)())) {
        logger.debug({ images: digests.length }, 'recorded the images this node holds');
      }
    } catch (err) {
      logger.warn({ err: (err as Error).message }, 'could not record the images this node holds');
    }
  }
}
