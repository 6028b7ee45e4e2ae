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

export class ApiError extends Error {
  readonly status: number;

  constructor(
    readonly code: ApiErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
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
