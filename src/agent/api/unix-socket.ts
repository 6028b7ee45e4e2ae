import { lstat, mkdir, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { SiloError } from '../../util/silo-error.js';

/** sun_path is 108 bytes on Linux, NUL included. */
export const MAX_SOCKET_PATH_BYTES = 107;

export class SocketPathError extends SiloError<'invalid_input'> {
  constructor(
    readonly path: string,
    problem: string,
  ) {
    super('invalid_input', `control API socket ${path}: ${problem}`);
  }
}

/**
 * Makes `path` ready to bind: its directory exists, and a socket file left
 * by an agent that died is removed. A socket something still listens on is
 * never replaced (a second agent on the same data dir would take over the
 * first one's API), and neither is a file that is not a socket.
 */
export async function prepareSocketPath(path: string): Promise<void> {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new SocketPathError(
      path,
      `path is longer than ${MAX_SOCKET_PATH_BYTES} bytes (a unix socket limit)`,
    );
  }
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const info = await lstat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  if (info === null) return;
  if (!info.isSocket()) throw new SocketPathError(path, 'exists and is not a socket; refusing to replace it');
  if (await isListening(path)) {
    throw new SocketPathError(
      path,
      'another process is listening on it (is another agent running on this data dir?)',
    );
  }
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

/** True when a connection to the socket succeeds. */
export function isListening(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    const finish = (listening: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(listening);
    };
    // A listener too busy to accept within the timeout is still a listener.
    const timer = setTimeout(() => finish(true), timeoutMs);
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}
