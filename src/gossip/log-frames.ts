import * as lp from 'it-length-prefixed';
import { WORKLOAD_NAME_PATTERN } from '../state/schemas.js';
import { SiloError, type SiloErrorCode } from '../util/silo-error.js';
import { isPlainRecord, isSafeNonNegativeInt, packMessage } from './codec.js';

/**
 * The frames of `/silo/logs/1` (docs/protocol.md, "Log exchange"): the
 * request and its checks, the error codes as the wire spells them, and the
 * error a client gets. The exchange itself (client and server) is
 * log-exchange.ts.
 */

export const LOGS_PROTOCOL = '/silo/logs/1';
/** The same bound as the control API's `lines`. */
export const MAX_LOG_LINES = 100_000;

export interface LogRequest {
  workload: string;
  /** Lines from the end of the log to send first. */
  lines: number;
  /** Keep sending what is appended until the client goes away. */
  follow: boolean;
}

/**
 * Reads a workload's log on this node: null when this node has none, else
 * the tail (`lines`), then, with `follow`, what is appended, until `signal`
 * aborts. Provided by the agent (it knows the service directories).
 */
export type LogReader = (
  request: LogRequest,
  signal: AbortSignal,
) => Promise<AsyncIterable<Uint8Array> | null>;

export type LogErrorCode =
  | 'not-found'
  | 'malformed'
  | 'refused'
  | 'busy'
  | 'limit'
  | 'timeout'
  | 'unreachable'
  | 'error';

const WIRE_CODES: ReadonlySet<string> = new Set<LogErrorCode>([
  'not-found',
  'malformed',
  'refused',
  'busy',
  'limit',
  'timeout',
  'error',
]);

/** What each wire code means to the rest of silo (src/util/silo-error.ts). */
const LOG_ERROR_CODES: Record<LogErrorCode, SiloErrorCode> = {
  'not-found': 'not_found',
  malformed: 'malformed',
  refused: 'refused',
  busy: 'busy',
  limit: 'limit',
  timeout: 'timeout',
  unreachable: 'unreachable',
  error: 'internal',
};

/** `wireCode` is the code as the protocol spells it (docs/protocol.md); `code` silo's own. */
export class LogFetchError extends SiloError {
  constructor(
    readonly wireCode: LogErrorCode,
    message: string,
  ) {
    super(LOG_ERROR_CODES[wireCode], message);
  }
}

/** One length-prefixed msgpack frame of the protocol. */
export function frame(message: Record<string, unknown>): Uint8Array {
  return lp.encode.single(packMessage({ v: 1, ...message })).subarray();
}

/** Checks a decoded request; returns it or the reason it is refused. */
export function parseLogRequest(value: unknown): LogRequest | string {
  if (!isPlainRecord(value) || value.v !== 1) return 'request is not a v1 map';
  const { workload, lines, follow } = value;
  if (typeof workload !== 'string' || !WORKLOAD_NAME_PATTERN.test(workload))
    return 'workload must be a workload name';
  if (!isSafeNonNegativeInt(lines) || lines > MAX_LOG_LINES)
    return `lines must be an integer from 0 to ${MAX_LOG_LINES}`;
  if (typeof follow !== 'boolean') return 'follow must be a boolean';
  const extra = Object.keys(value).filter((key) => !['v', 'workload', 'lines', 'follow'].includes(key));
  if (extra.length > 0) return `unknown fields: ${extra.join(', ')}`;
  return { workload, lines, follow };
}

/** The error a server's refusal or end code becomes on the client. */
export function remoteError(message: Record<string, unknown>, peerId: string): LogFetchError {
  const code = typeof message.code === 'string' && WIRE_CODES.has(message.code) ? message.code : 'error';
  const text = typeof message.message === 'string' ? message.message.slice(0, 500) : String(message.code);
  return new LogFetchError(code as LogErrorCode, `${peerId}: ${text}`);
}
