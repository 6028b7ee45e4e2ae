import { rename, rm, writeFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { PidRecord } from './orphans.js';

/**
 * A service's `supervise/pid` record, so that a restarted agent can reap a
 * copy its predecessor left running (orphans.ts). Written through a temp
 * file and renamed, so a reader never sees half a record.
 */
export class PidFile {
  constructor(
    readonly path: string,
    private readonly logger: Logger,
  ) {}

  /**
   * Never rejects: a failed write is logged (the service still runs; only
   * reaping loses it). `stillCurrent` is asked after the write: the run may
   * have ended meanwhile, and a record of a dead run must never be left.
   */
  async write(record: PidRecord, stillCurrent: () => boolean): Promise<void> {
    const temp = `${this.path}.tmp`;
    try {
      await writeFile(temp, `${JSON.stringify(record)}\n`, { mode: 0o644 });
      if (stillCurrent()) await rename(temp, this.path);
      else await rm(temp, { force: true });
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'pid file not written');
    }
  }

  remove(): Promise<void> {
    return rm(this.path, { force: true });
  }
}
