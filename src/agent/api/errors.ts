import { SiloError, type SiloErrorCode } from '../../util/silo-error.js';

/**
 * Errors of the control API. Every failure leaves the API as
 * `{error: {code, message}}` with the matching HTTP status, so the CLI (and
 * any other client) can map it to an exit code without parsing prose.
 */

export type ApiErrorCode =
  | 'bad_request'
  | 'unauthorized'
  | 'revoked'
  | 'not_found'
  | 'not_held'
  | 'conflict'
  | 'too_large'
  | 'internal'
  | 'unreachable'
  | 'busy';

const STATUS: Record<ApiErrorCode, number> = {
  bad_request: 400,
  unauthorized: 401,
  /** This node's own enrollment is revoked: it takes no writes (they would reach nobody). */
  revoked: 403,
  not_found: 404,
  /** A workload no node holds or reported on: nothing to read its log from. */
  not_held: 404,
  conflict: 409,
  /** A body over the API's limit. */
  too_large: 413,
  internal: 500,
  /** Another node this request needs (a workload's holder, for logs) cannot be reached. */
  unreachable: 502,
  /** Another node refuses for now (its log streams are all in use). */
  busy: 503,
};

export class ApiError extends SiloError<ApiErrorCode> {
  readonly status: number;

  constructor(code: ApiErrorCode, message: string) {
    super(code, message);
    this.status = STATUS[code];
  }
}

export interface ApiErrorBody {
  error: { code: ApiErrorCode; message: string };
}

export function errorBody(code: ApiErrorCode, message: string): ApiErrorBody {
  return { error: { code, message } };
}

export const badRequest = (message: string): ApiError => new ApiError('bad_request', message);
export const notFound = (message: string): ApiError => new ApiError('not_found', message);
export const conflict = (message: string): ApiError => new ApiError('conflict', message);

/** The API error code that an HTTP status maps to (fastify's own errors carry only a status). */
export function codeForStatus(status: number): ApiErrorCode {
  if (status === 401) return 'unauthorized';
  if (status === 404) return 'not_found';
  if (status === 409) return 'conflict';
  if (status === 413) return 'too_large';
  if (status >= 400 && status < 500) return 'bad_request';
  return 'internal';
}

/**
 * What each SiloError code means to an API client. A code in the last group
 * is silo's own failure, not the request's: answered 500 and logged.
 */
const API_CODE_OF: Record<SiloErrorCode, ApiErrorCode> = {
  invalid_input: 'bad_request',
  bad_request: 'bad_request',
  invalid_token: 'bad_request',
  token_expired: 'bad_request',
  token_used_up: 'bad_request',
  token_revoked: 'bad_request',
  invalid_update: 'bad_request',
  invalid_record: 'bad_request',
  digest_mismatch: 'bad_request',
  image_refused: 'bad_request',
  image_invalid: 'bad_request',
  unauthorized: 'unauthorized',
  revoked: 'revoked',
  not_found: 'not_found',
  not_held: 'not_held',
  conflict: 'conflict',
  exhausted: 'conflict',
  too_large: 'too_large',
  rate_limited: 'busy',
  busy: 'busy',
  limit: 'busy',
  unreachable: 'unreachable',
  unavailable: 'unreachable',
  timeout: 'unreachable',
  refused: 'unreachable',
  malformed: 'unreachable',
  integrity: 'internal',
  command_failed: 'internal',
  store_failed: 'internal',
  encryption_failed: 'internal',
  generator_failed: 'internal',
  stream_ended: 'internal',
  internal: 'internal',
};

/** The API error a SiloError becomes; an ApiError stays itself. */
export function apiErrorOf(err: SiloError): ApiError {
  if (err instanceof ApiError) return err;
  return new ApiError(API_CODE_OF[err.code], err.message);
}
