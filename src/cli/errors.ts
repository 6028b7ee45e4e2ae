import { AgentSetupError } from '../agent/setup-error.js';
import { ConfigError } from '../config/load.js';
import { EnrollmentFormatError } from '../identity/bundle.js';
import { KeyFileError } from '../identity/key-files.js';
import { ImageBuildError } from '../reconciler/image.js';
import { ManifestError } from '../reconciler/manifest.js';

/** The `silo` exit codes (docs/cli.md). */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  input: 3,
  unreachable: 4,
  notFound: 5,
  unauthorized: 6,
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
  if (
    err instanceof ConfigError ||
    err instanceof AgentSetupError ||
    err instanceof ManifestError ||
    err instanceof KeyFileError ||
    err instanceof EnrollmentFormatError ||
    err instanceof ImageBuildError
  ) {
    return EXIT.input;
  }
  return EXIT.failure;
}

/** The message printed for `err`: one line (several problems joined by "; "), no stack. */
export function messageOf(err: unknown): string {
  if (err instanceof ConfigError) return `${err.source}: invalid configuration: ${err.problems.join('; ')}`;
  const text = err instanceof Error ? err.message : String(err);
  return text.trim().split(/\n\s*/).join('; ');
}
