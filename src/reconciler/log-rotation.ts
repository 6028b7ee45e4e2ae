import { closeSync, fstatSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export interface RotatingLogOptions {
  /** Directory holding the files (the service's LOGS_DIRECTORY on the host). */
  dir: string;
  /** No file grows past this many bytes (rotation cuts at line ends when a line fits). */
  maxBytes: number;
  /** Rotated files kept besides `current` (current.1 newest … current.<keep> oldest). */
  keep: number;
}

/**
 * s6-log style size-based rotation of a service's stdout/stderr into
 * `<dir>/current`. Writes are synchronous: they keep the byte order of the
 * two streams exactly as it arrived, and a service's output is small next to
 * the cost of an ordered async queue.
 */
export class RotatingLog {
  readonly path: string;
  private fd: number | null = null;
  private size = 0;

  constructor(private readonly options: RotatingLogOptions) {
    if (!Number.isInteger(options.maxBytes) || options.maxBytes <= 0) {
      throw new Error(`log rotation: maxBytes must be a positive integer, got ${options.maxBytes}`);
    }
    if (!Number.isInteger(options.keep) || options.keep < 0) {
      throw new Error(`log rotation: keep must be a non-negative integer, got ${options.keep}`);
    }
    this.path = join(options.dir, 'current');
  }

  write(chunk: Buffer): void {
    let rest = chunk;
    while (rest.length > 0) {
      const fd = this.open();
      const room = this.options.maxBytes - this.size;
      if (rest.length <= room) {
        writeSync(fd, rest);
        this.size += rest.length;
        return;
      }
      // Fill the file up to maxBytes, cutting after the last whole line that fits
      // (mid-line only when not even one line fits), then rotate.
      const lastNewline = rest.subarray(0, room).lastIndexOf(0x0a);
      const cut = lastNewline >= 0 ? lastNewline + 1 : this.size === 0 ? room : 0;
      if (cut > 0) {
        writeSync(fd, rest.subarray(0, cut));
        this.size += cut;
        rest = rest.subarray(cut);
      }
      this.rotate();
    }
  }

  close(): void {
    if (this.fd !== null) {
      closeSync(this.fd);
      this.fd = null;
    }
  }

  private open(): number {
    if (this.fd === null) {
      mkdirSync(this.options.dir, { recursive: true });
      this.fd = openSync(this.path, 'a', 0o644);
      this.size = fstatSync(this.fd).size;
    }
    return this.fd;
  }

  private rotate(): void {
    this.close();
    const { dir, keep } = this.options;
    if (keep === 0) {
      rmSync(this.path, { force: true });
    } else {
      rmSync(join(dir, `current.${keep}`), { force: true });
      for (let i = keep - 1; i >= 1; i--) {
        try {
          renameSync(join(dir, `current.${i}`), join(dir, `current.${i + 1}`));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        }
      }
      renameSync(this.path, join(dir, 'current.1'));
    }
    this.size = 0;
  }
}
