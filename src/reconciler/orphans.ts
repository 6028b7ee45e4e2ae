import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { z } from 'zod';
import { killCgroupMembers } from './limits.js';
import { isSameProcessAlive, killQuietly, waitUntilGone } from './proc.js';

/**
 * Orphan reaping (docs/reconciler.md): services a previous agent left
 * running are found by the pid records their supervisors wrote, matched by
 * pid and start time, and killed before anything starts.
 */

/** What a supervisor records of its run in `supervise/pid` (written by Supervisor, read here). */
export const PidRecordSchema = z.object({
  name: z.string(),
  revision: z.number(),
  pid: z.number().int().positive(),
  startTime: z.string().regex(/^\d+$/),
  childPid: z.number().int().positive().nullable(),
  childStartTime: z.string().regex(/^\d+$/).nullable(),
  cgroupDirs: z.array(z.string()),
  writtenAt: z.number(),
});
export type PidRecord = z.infer<typeof PidRecordSchema>;

export interface ReapedService {
  name: string;
  pid: number;
  /** True when the recorded process was still alive and has been killed. */
  killed: boolean;
}

/**
 * After an agent restart: kill every service copy a previous agent left
 * running (recorded in `<dataDir>/services/<name>/supervise/pid`, matched by
 * pid AND start time so a reused pid is never hit), and remove the records.
 * Run it before starting anything, so exactly one copy runs afterwards.
 */
export async function reapOrphans(dataDir: string, logger?: Logger): Promise<ReapedService[]> {
  const servicesDir = join(dataDir, 'services');
  const names = await readdir(servicesDir).catch(() => [] as string[]);
  const reaped: ReapedService[] = [];
  for (const name of names) {
    const file = join(servicesDir, name, 'supervise', 'pid');
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch {
      continue;
    }
    let record: PidRecord;
    try {
      record = PidRecordSchema.parse(JSON.parse(text));
    } catch {
      logger?.warn({ file }, 'unreadable pid file removed');
      await rm(file, { force: true });
      continue;
    }
    const alive = isSameProcessAlive(record.pid, record.startTime);
    const childAlive =
      record.childPid !== null && isSameProcessAlive(record.childPid, record.childStartTime ?? '');
    if (alive) killQuietly(-record.pid, 'SIGKILL');
    if (alive) killQuietly(record.pid, 'SIGKILL');
    if (childAlive && record.childPid !== null) killQuietly(record.childPid, 'SIGKILL');
    await killCgroupMembers(record.cgroupDirs);
    if (alive) await waitUntilGone(record.pid, record.startTime, 5000);
    if (childAlive && record.childPid !== null) {
      await waitUntilGone(record.childPid, record.childStartTime ?? undefined, 5000);
    }
    await rm(file, { force: true });
    reaped.push({ name, pid: record.pid, killed: alive || childAlive });
    if (alive || childAlive)
      logger?.warn({ service: name, pid: record.pid }, 'killed a service left by a previous agent');
  }
  return reaped;
}
