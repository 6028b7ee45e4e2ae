/**
 * The receive buffer of one simulated connection end: chunks the link model
 * delivered, waiting for libp2p (the connection encrypter, then the muxer) to
 * read them through an async iterator. Unbounded, like a socket's receive
 * buffer with no window: the simulator models delay, not bandwidth.
 */
export class ChunkQueue {
  private buffer: Uint8Array[] = [];
  private head = 0;
  private ended = false;
  private failure: Error | undefined;
  private readerGone = false;
  private wake: (() => void) | undefined;

  push(chunk: Uint8Array): void {
    if (this.ended || this.readerGone) return;
    this.buffer.push(chunk);
    this.notify();
  }

  /** Graceful end (FIN): the reader still gets what is buffered, then the iterator finishes. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.notify();
  }

  /** Abrupt end (RST, crash, cut): buffered chunks are discarded and the reader's next read throws. */
  fail(err: Error): void {
    if (this.failure !== undefined) return;
    this.ended = true;
    this.failure = err;
    this.buffer = [];
    this.head = 0;
    this.notify();
  }

  get pending(): number {
    return this.buffer.length - this.head;
  }

  async *read(): AsyncGenerator<Uint8Array> {
    try {
      while (true) {
        if (this.failure !== undefined) throw this.failure;
        if (this.head < this.buffer.length) {
          const chunk = this.buffer[this.head++] as Uint8Array;
          if (this.head === this.buffer.length) {
            this.buffer = [];
            this.head = 0;
          }
          yield chunk;
          continue;
        }
        if (this.ended) return;
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
      }
    } finally {
      // The reader stopped (returned, threw or finished): stop buffering for it.
      this.readerGone = true;
      this.buffer = [];
      this.head = 0;
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
