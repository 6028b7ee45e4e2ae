import { SiloError } from './silo-error.js';

/**
 * An error in what the user gave silo (a file, a flag, a key, a manifest):
 * the CLI reports it on one line with exit code 3 (docs/cli.md). It lives in
 * a module without dependencies so that the CLI's error handling
 * (src/cli/errors.ts) does not load the modules that throw these: every
 * `silo` command starts faster for it.
 */
export class InputError extends SiloError<'invalid_input'> {
  constructor(message: string, options?: ErrorOptions) {
    super('invalid_input', message, options);
  }

  /** The message on one line: several problems joined by "; ". */
  oneLine(): string {
    return this.message.trim().split(/\n\s*/).join('; ');
  }
}
