import { InputError } from '../util/input-error.js';
import { codeOf, SiloError, type SiloErrorCode } from '../util/silo-error.js';

/** The `silo` exit codes (docs/cli.md). */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  input: 3,
  unreachable: 4,
  notFound: 5,
  unauthorized: 6,
  revoked: 7,
} as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** The exit code of each SiloError code that reaches the top level (docs/cli.md, "Exit codes"). */
const EXIT_OF: Record<SiloErrorCode, ExitCode> = {
  invalid_input: EXIT.input,
  bad_request: EXIT.input,
  invalid_token: EXIT.unauthorized,
  token_expired: EXIT.unauthorized,
  token_used_up: EXIT.unauthorized,
  token_revoked: EXIT.unauthorized,
  unauthorized: EXIT.unauthorized,
  revoked: EXIT.revoked,
  not_found: EXIT.notFound,
  not_held: EXIT.notFound,
  unreachable: EXIT.unreachable,
  conflict: EXIT.failure,
  too_large: EXIT.failure,
  rate_limited: EXIT.failure,
  busy: EXIT.failure,
  timeout: EXIT.failure,
  refused: EXIT.failure,
  limit: EXIT.failure,
  malformed: EXIT.failure,
  digest_mismatch: EXIT.failure,
  invalid_update: EXIT.failure,
  invalid_record: EXIT.failure,
  integrity: EXIT.failure,
  command_failed: EXIT.failure,
  store_failed: EXIT.failure,
  exhausted: EXIT.failure,
  unavailable: EXIT.failure,
  image_refused: EXIT.failure,
  image_invalid: EXIT.failure,
  encryption_failed: EXIT.failure,
  generator_failed: EXIT.failure,
  stream_ended: EXIT.failure,
  internal: EXIT.failure,
};

/** The SiloError code an exit code stands for, so a CliError is a SiloError like any other. */
const CODE_OF_EXIT: Record<ExitCode, SiloErrorCode> = {
  [EXIT.ok]: 'internal',
  [EXIT.failure]: 'internal',
  [EXIT.usage]: 'invalid_input',
  [EXIT.input]: 'invalid_input',
  [EXIT.unreachable]: 'unreachable',
  [EXIT.notFound]: 'not_found',
  [EXIT.unauthorized]: 'unauthorized',
  [EXIT.revoked]: 'revoked',
};

/** An error the CLI reports as one line on stderr and turns into an exit code. */
export class CliError extends SiloError {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
  ) {
    super(CODE_OF_EXIT[exitCode], message);
  }
}

export const inputError = (message: string): CliError => new CliError(message, EXIT.input);

/** Exit code for any error that reaches the top level. */
export function exitCodeOf(err: unknown): ExitCode {
  if (err instanceof CliError) return err.exitCode;
  // ConfigError, AgentSetupError, ManifestError, KeyFileError, EnrollmentFormatError, ImageBuildError
  // are InputErrors: invalid_input, exit code 3.
  if (err instanceof SiloError) return EXIT_OF[codeOf(err)];
  return EXIT.failure;
}

/** The message printed for `err`: one line (several problems joined by "; "), no stack. */
export function messageOf(err: unknown): string {
  if (err instanceof InputError) return err.oneLine();
  const text = err instanceof Error ? err.message : String(err);
  return text.trim().split(/\n\s*/).join('; ');
}
