import { InputError } from '../util/input-error.js';

/**
 * A problem the operator fixes in files (config, identity, bundle, token):
 * the CLI exits with code 3 and prints the message, which names the file
 * and, where one exists, the `silo` command that creates what is missing.
 * (A module of its own so the CLI can recognise it without loading the agent.)
 */
export class AgentSetupError extends InputError {
  constructor(message: string) {
    super(message);
    this.name = 'AgentSetupError';
  }
}
