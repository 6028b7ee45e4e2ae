import type { Command } from 'commander';
import { loadAgentConfig } from '../../config/load.js';
import type { CliContext } from '../context.js';

const STOP_SIGNALS = ['SIGTERM', 'SIGINT'] as const;

/**
 * Runs the agent of `configFile` in the foreground until SIGTERM/SIGINT
 * (`silo agent`, and `silo join --start` once it has written the config).
 */
export async function runAgentForeground(configFile: string, env: NodeJS.ProcessEnv): Promise<void> {
  const config = loadAgentConfig(configFile, env);
  // Loaded on demand: the agent (libp2p, lmdb) is a second of start-up every other command would pay.
  const { startAgent } = await import('../../agent/run-agent.js');
  const running = await startAgent(config);
  const signal = await new Promise<string>((resolve) => {
    for (const name of STOP_SIGNALS) process.once(name, () => resolve(name));
  });
  running.logger.info({ signal }, 'stopping');
  // A second signal while stopping means "now": the store is already safe after every write.
  const force = (): void => {
    running.logger.warn('second signal: exiting without a clean stop');
    process.exit(1);
  };
  for (const name of STOP_SIGNALS) process.once(name, force);
  await running.stop();
  for (const name of STOP_SIGNALS) process.off(name, force);
  running.logger.flush?.();
}

export function registerAgentCommand(program: Command, ctx: CliContext): void {
  program
    .command('agent')
    .description('run the node agent in the foreground (SIGTERM/SIGINT stop it cleanly)')
    .requiredOption('--config <file>', 'agent config (TOML); see config/agent.toml')
    .action(async (flags: { config: string }) => {
      await runAgentForeground(flags.config, ctx.env);
    });
}
