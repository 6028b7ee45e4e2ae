import type { Readable } from 'node:stream';
import { parseBwrapStatusLine } from './sandbox.js';

/**
 * What a supervisor reads from a run besides its output: the readiness
 * newline on `notification_fd`, and bwrap's `--json-status-fd` lines that
 * name the service's own pid. Stream errors are ignored: the run's exit
 * says what happened.
 */

/** Calls `onReady` once, at the first newline the service writes. */
export function watchReadinessLine(stream: Readable | null, onReady: () => void): void {
  if (stream === null) return;
  let seen = false;
  stream.on('data', (chunk: Buffer) => {
    if (!seen && chunk.includes(0x0a)) {
      seen = true;
      onReady();
    }
  });
  stream.on('error', () => undefined);
}

/** Calls `onChildPid` for each child-pid bwrap reports on its status fd. */
export function watchBwrapChildPid(stream: Readable | null, onChildPid: (childPid: number) => void): void {
  if (stream === null) return;
  let buffered = '';
  stream.setEncoding('utf8');
  stream.on('data', (text: string) => {
    buffered += text;
    let newline = buffered.indexOf('\n');
    while (newline >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      const status = parseBwrapStatusLine(line);
      if (status !== null && 'childPid' in status) onChildPid(status.childPid);
      newline = buffered.indexOf('\n');
    }
  });
  stream.on('error', () => undefined);
}
