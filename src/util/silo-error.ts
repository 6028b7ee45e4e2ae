/**
 * The one base of silo's errors (docs/architecture.md, "Errors"). Every
 * error silo throws on purpose carries a typed `code` from SiloErrorCode, so
 * the control API maps it to an HTTP status and the CLI to an exit code by
 * table (src/agent/api/errors.ts, src/cli/errors.ts), never by matching
 * message text. The tables are `Record<SiloErrorCode, …>`: a new code does
 * not compile until both say what it means.
 *
 * This module has no imports, so the CLI's error handling can load it
 * without loading the subsystems that throw.
 */

/** Codes, grouped by what the caller can do about them. Spelled snake_case, everywhere. */
export type SiloErrorCode =
  // What the user gave is wrong (a file, a flag, a manifest, a key, a body).
  | 'invalid_input'
  | 'bad_request'
  | 'invalid_token'
  | 'token_expired'
  | 'token_used_up'
  | 'token_revoked'
  | 'unauthorized'
  | 'revoked'
  | 'not_found'
  | 'not_held'
  | 'conflict'
  | 'too_large'
  | 'rate_limited'
  // A peer, a helper program or the store did not do what it should.
  | 'unreachable'
  | 'busy'
  | 'timeout'
  | 'refused'
  | 'limit'
  | 'malformed'
  | 'digest_mismatch'
  | 'invalid_update'
  | 'invalid_record'
  | 'integrity'
  | 'command_failed'
  | 'store_failed'
  | 'exhausted'
  | 'unavailable'
  | 'image_refused'
  | 'image_invalid'
  | 'encryption_failed'
  | 'generator_failed'
  | 'stream_ended'
  // A bug or an unclassified failure.
  | 'internal';

export class SiloError<C extends SiloErrorCode = SiloErrorCode> extends Error {
  constructor(
    readonly code: C,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    // The subclass's own name in logs and stacks, without each one setting it.
    this.name = new.target.name;
  }
}

/** The code of any thrown value: a SiloError's own, else `internal`. */
export function codeOf(err: unknown): SiloErrorCode {
  return err instanceof SiloError ? err.code : 'internal';
}
