import { readFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import type { Readable } from 'node:stream';
import { CliError, EXIT, type ExitCode, inputError } from './errors.js';

export const DEFAULT_SOCKET = '/var/lib/silo/silo.sock';

/** Where the agent's control API is: its unix socket, or loopback TCP with a bearer token. */
export interface Connection {
  socketPath?: string;
  url?: URL;
  token?: string;
}

export interface ConnectionFlags {
  socket?: string;
  url?: string;
  tokenFile?: string;
}

/** --socket / --url / --token-file, with $SILO_SOCKET and the default socket as fallbacks. */
export async function connectionFrom(
  flags: ConnectionFlags,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Connection> {
  if (flags.url !== undefined) {
    let url: URL;
    try {
      url = new URL(flags.url);
    } catch {
      throw inputError(`--url "${flags.url}" is not a URL (expected http://127.0.0.1:<port>)`);
    }
    if (url.protocol !== 'http:')
      throw inputError(`--url "${flags.url}": only http:// (loopback) is supported`);
    let token: string | undefined;
    if (flags.tokenFile !== undefined) {
      try {
        token = (await readFile(flags.tokenFile, 'utf8')).trim();
      } catch (err) {
        throw inputError(
          `--token-file ${flags.tokenFile}: cannot read (${(err as NodeJS.ErrnoException).code})`,
        );
      }
    }
    return { url, token };
  }
  if (flags.tokenFile !== undefined)
    throw inputError('--token-file goes with --url (the unix socket needs no token)');
  return { socketPath: flags.socket ?? env.SILO_SOCKET ?? DEFAULT_SOCKET };
}

export function describeConnection(connection: Connection): string {
  return connection.socketPath !== undefined
    ? `socket ${connection.socketPath}`
    : `url ${connection.url?.origin}`;
}

interface ErrorBody {
  error?: { code?: string; message?: string };
}

const EXIT_BY_STATUS: Record<number, ExitCode> = {
  400: EXIT.input,
  401: EXIT.unauthorized,
  404: EXIT.notFound,
};

export interface RequestInit {
  /** A JSON body, or a stream sent as-is with `contentType`. */
  json?: unknown;
  stream?: Readable;
  contentType?: string;
  headers?: Record<string, string>;
  /** ms; none for uploads and streams. */
  timeoutMs?: number;
}

/** A small client of the control API (docs/api.md) that turns every failure into a CliError. */
export class ApiClient {
  constructor(readonly connection: Connection) {}

  async get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  async request<T>(method: string, path: string, init: RequestInit = {}): Promise<T> {
    const res = await this.send(method, path, init);
    const text = await readAll(res);
    const status = res.statusCode ?? 0;
    if (status >= 200 && status < 300) {
      if ((res.headers['content-type'] ?? '').startsWith('application/json')) return JSON.parse(text) as T;
      return text as T;
    }
    throw this.httpError(status, text);
  }

  /** Opens a streaming response (events, followed logs); the caller consumes and closes it. */
  async open(path: string): Promise<IncomingMessage> {
    const res = await this.send('GET', path, {});
    const status = res.statusCode ?? 0;
    if (status >= 200 && status < 300) return res;
    throw this.httpError(status, await readAll(res));
  }

  private httpError(status: number, text: string): CliError {
    let message = `HTTP ${status}`;
    let exit = EXIT_BY_STATUS[status] ?? EXIT.failure;
    try {
      const body = JSON.parse(text) as ErrorBody;
      if (body.error?.message) message = body.error.message;
      // Another node the agent needed (a workload's holder, for logs) is unreachable: same exit as our own agent.
      if (body.error?.code === 'unreachable') exit = EXIT.unreachable;
      if (body.error?.code === 'revoked') exit = EXIT.revoked;
    } catch {
      if (text.trim().length > 0) message = `HTTP ${status}: ${text.trim().slice(0, 200)}`;
    }
    if (status === 401) message = `unauthorized: ${message} (check --token-file)`;
    return new CliError(message, exit);
  }

  private send(method: string, path: string, init: RequestInit): Promise<IncomingMessage> {
    const headers: Record<string, string> = { accept: 'application/json', ...init.headers };
    let payload: string | undefined;
    if (init.json !== undefined) {
      payload = JSON.stringify(init.json);
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(payload));
    } else if (init.stream !== undefined) {
      headers['content-type'] = init.contentType ?? 'application/octet-stream';
    }
    if (this.connection.token !== undefined) headers.authorization = `Bearer ${this.connection.token}`;
    const options: RequestOptions = { method, path, headers };
    if (this.connection.socketPath !== undefined) {
      options.socketPath = this.connection.socketPath;
    } else if (this.connection.url !== undefined) {
      options.host = this.connection.url.hostname.replace(/^\[|\]$/g, '');
      options.port = Number(this.connection.url.port || 80);
      options.path = `${this.connection.url.pathname.replace(/\/$/, '')}${path}`;
    }
    return new Promise((resolve, reject) => {
      const req = httpRequest(options, resolve);
      req.on('error', (err: NodeJS.ErrnoException) => reject(this.connectionError(err)));
      if (init.timeoutMs !== undefined) {
        req.setTimeout(init.timeoutMs, () => {
          req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' }));
        });
      }
      if (init.stream !== undefined) {
        init.stream.on('error', (err) => req.destroy(err));
        init.stream.pipe(req);
      } else {
        req.end(payload);
      }
    });
  }

  private connectionError(err: NodeJS.ErrnoException): CliError {
    const where = describeConnection(this.connection);
    switch (err.code) {
      case 'ENOENT':
      case 'ECONNREFUSED':
      case 'ENOTSOCK':
      case 'ECONNRESET':
      case 'EHOSTUNREACH':
        return new CliError(
          `cannot reach the agent (${err.code}): is the agent running? ${where}`,
          EXIT.unreachable,
        );
      case 'EACCES':
      case 'EPERM':
        return new CliError(
          `cannot reach the agent (${err.code}): permission denied on ${where} (run as the agent's user)`,
          EXIT.unreachable,
        );
      case 'ETIMEDOUT':
        return new CliError(`the agent did not answer in time (${where})`, EXIT.unreachable);
      default:
        return new CliError(`cannot reach the agent: ${err.message} (${where})`, EXIT.unreachable);
    }
  }
}

function readAll(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (chunk: Buffer) => chunks.push(chunk));
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', reject);
  });
}
