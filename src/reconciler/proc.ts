import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Small /proc helpers for the supervisor. A pid alone is not an identity
 * (pids are reused), so every place that kills a process it did not just
 * spawn checks the pair (pid, start time in clock ticks since boot, field 22
 * of /proc/<pid>/stat).
 */

export interface ProcStat {
  pid: number;
  state: string;
  ppid: number;
  pgid: number;
  startTime: string;
}

/** Parsed /proc/<pid>/stat, or null when the process does not exist (or is unreadable). */
export function readProcStat(pid: number): ProcStat | null {
  if (!Number.isInteger(pid) || pid <= 0) return null;
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) is in parentheses and may itself contain ") ",
  // so split after the LAST closing parenthesis.
  const close = text.lastIndexOf(')');
  if (close < 0) return null;
  const fields = text
    .slice(close + 2)
    .trim()
    .split(' ');
  // fields[0] is field 3 (state); field N is fields[N - 3].
  const state = fields[0];
  const ppid = Number(fields[1]);
  const pgid = Number(fields[2]);
  const startTime = fields[19];
  if (state === undefined || startTime === undefined) return null;
  return { pid, state, ppid, pgid, startTime };
}

/** True while `pid` exists, is not a zombie and (if given) still has `startTime`. */
export function isSameProcessAlive(pid: number, startTime?: string): boolean {
  const stat = readProcStat(pid);
  if (stat === null || stat.state === 'Z' || stat.state === 'X') return false;
  return startTime === undefined || stat.startTime === startTime;
}

/** process.kill that treats "no such process" as success (the goal, a dead process, holds). */
export function killQuietly(pid: number, signal: NodeJS.Signals | number): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

/** Poll until the process is gone (or a zombie); false on timeout. */
export async function waitUntilGone(
  pid: number,
  startTime: string | undefined,
  timeoutMs: number,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isSameProcessAlive(pid, startTime)) {
    if (Date.now() >= deadline) return false;
    await sleep(20);
  }
  return true;
}

/** The pids of every process whose process group is `pgid` (a /proc scan; cheap enough at stop time). */
export function processGroupMembers(pgid: number): number[] {
  const members: number[] = [];
  let entries: string[];
  try {
    entries = readdirNumeric('/proc');
  } catch {
    return members;
  }
  for (const entry of entries) {
    const stat = readProcStat(Number(entry));
    if (stat !== null && stat.pgid === pgid && stat.state !== 'Z') members.push(stat.pid);
  }
  return members;
}

function readdirNumeric(dir: string): string[] {
  return readdirSync(dir).filter((name) => /^\d+$/.test(name));
}
