import { InputError } from '../util/input-error.js';

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

/** An error the CLI reports as one line on stderr and turns into an exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export const inputError = (message: string): CliError => new CliError(message, EXIT.input);

/** Exit code for any error that reaches the top level. */
export function exitCodeOf(err: unknown): ExitCode {
  if (err instanceof CliError) return err.exitCode;
  // ConfigError, AgentSetupError, ManifestError, KeyFileError, EnrollmentFormatError, ImageBuildError.
  if (err instanceof InputError) return EXIT.input;
  return EXIT.failure;
}

/** The message printed for `err`: one line (several problems joined by "; "), no stack. */
export function messageOf(err: unknown): string {
  if (err instanceof InputError) return err.oneLine();
  const text = err instanceof Error ? err.message : String(err);
  return text.trim().split(/\n\s*/).join('; ');
}
