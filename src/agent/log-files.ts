import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { LogRequest } from '../gossip/index.js';
import { serviceDirs } from '../reconciler/scratch.js';
import { sleep } from '../util/sleep.js';

/** A tail reads at most this much of the end of the log file. */
export const TAIL_WINDOW_BYTES = 1024 * 1024;
const FOLLOW_POLL_MS = 300;
/** One read while following; a fast writer is caught up with in several. */
const FOLLOW_READ_BYTES = 256 * 1024;

/** `<dataDir>/services/<name>/logs/current`: the supervisor's rotating log of the service (LOGS_DIRECTORY). */
export function serviceLogFile(dataDir: string, workload: string): string {
  return join(serviceDirs(dataDir, workload).logs, 'current');
}

/**
 * A service's log on this node, as the control API and `/silo/logs/1` serve
 * it: null when there is no log file; else the last `lines` lines, then,
 * with `follow`, what is appended (rotation followed: a new or shrunk file is
 * read from its start), until `signal` aborts.
 */
export async function readServiceLog(
  dataDir: string,
  request: LogRequest,
  signal: AbortSignal,
  pollMs = FOLLOW_POLL_MS,
): Promise<AsyncIterable<Uint8Array> | null> {
  const file = serviceLogFile(dataDir, request.workload);
  const info = await stat(file).catch(() => null);
  if (!info?.isFile()) return null;
  const { text, end } = await tail(file, request.lines);
  return (async function* () {
    if (text.byteLength > 0) yield text;
    if (request.follow) yield* follow(file, end, info.ino, signal, pollMs);
  })();
}

/** The last `lines` lines of `file` (from its last TAIL_WINDOW_BYTES) and the offset read up to. */
async function tail(file: string, lines: number): Promise<{ text: Buffer; end: number }> {
  const handle = await open(file, 'r');
  try {
    const { size } = await handle.stat();
    if (lines === 0) return { text: Buffer.alloc(0), end: size };
    const start = Math.max(0, size - TAIL_WINDOW_BYTES);
    const buffer = Buffer.alloc(size - start);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, start);
    const window = buffer.subarray(0, bytesRead);
    // Count newlines from the end; a trailing newline ends the last line rather than starting one.
    let cut = window.length;
    if (cut > 0 && window[cut - 1] === 0x0a) cut--;
    let found = 0;
    let from = 0;
    for (let i = cut - 1; i >= 0; i--) {
      if (window[i] === 0x0a && ++found === lines) {
        from = i + 1;
        break;
      }
    }
    return { text: window.subarray(from), end: start + bytesRead };
  } finally {
    await handle.close();
  }
}

async function* follow(
  file: string,
  offset: number,
  inode: number,
  signal: AbortSignal,
  pollMs: number,
): AsyncGenerator<Uint8Array> {
  let position = offset;
  let ino = inode;
  while (!signal.aborted) {
    const info = await stat(file).catch(() => null);
    if (info) {
      if (info.ino !== ino || info.size < position) {
        ino = info.ino;
        position = 0;
      }
      if (info.size > position) {
        // Read, close, then yield: a slow consumer must not keep the file open.
        const chunk = await readAt(file, position, Math.min(info.size - position, FOLLOW_READ_BYTES));
        position += chunk.byteLength;
        if (chunk.byteLength > 0) {
          yield chunk;
          continue;
        }
      }
    }
    await sleep(pollMs, signal);
  }
}

async function readAt(file: string, position: number, length: number): Promise<Buffer> {
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await handle.read(buffer, 0, length, position);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}
