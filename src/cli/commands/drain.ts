import type { Command } from 'commander';
import type { DrainFlag } from '../../state/schemas.js';
import type { ConnectionFlags } from '../api-client.js';
import { type CliContext, type JsonFlag, withConnection, withJson } from '../context.js';

export function registerDrainCommands(program: Command, ctx: CliContext): void {
  for (const action of ['drain', 'undrain'] as const) {
    withConnection(
      withJson(
        program
          .command(action)
          .description(
            action === 'drain'
              ? 'move every service off a node and place nothing new on it'
              : 'let a drained node take services again',
          )
          .argument('<node>', 'node id')
          .option('--by <who>', 'who asks (kept in the drain flag)'),
      ),
    ).action(async (node: string, flags: JsonFlag & ConnectionFlags & { by?: string }) => {
      const client = await ctx.client(flags);
      const result = await client.request<DrainFlag & { nodeId: string }>(
        'POST',
        `/v1/nodes/${encodeURIComponent(node)}/${action}`,
        { json: flags.by === undefined ? {} : { by: flags.by }, timeoutMs: 30_000 },
      );
      ctx.print(flags, result, () =>
        result.draining ? `node "${node}" is draining` : `node "${node}" is no longer draining`,
      );
    });
  }
}
