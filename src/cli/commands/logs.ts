import type { Command } from 'commander';
import type { ConnectionFlags } from '../api-client.js';
import { type CliContext, type JsonFlag, withConnection, withJson } from '../context.js';
import { CliError, EXIT } from '../errors.js';
import { nonNegativeInt } from './node.js';

interface LogsFlags extends JsonFlag, ConnectionFlags {
  follow?: boolean;
  lines: number;
}

export function registerLogsCommand(program: Command, ctx: CliContext): void {
  withConnection(
    withJson(
      program
        .command('logs')
        .description("a service's stdout/stderr on this node (LOGS_DIRECTORY/current)")
        .argument('<workload>', 'workload name')
        .option('-f, --follow', 'keep printing what the service writes (Ctrl-C stops)')
        .option('-n, --lines <n>', 'lines from the end to show first', nonNegativeInt, 100),
    ),
  ).action(async (workload: string, flags: LogsFlags) => {
    if (flags.follow && flags.json) throw new CliError('--json cannot be combined with --follow', EXIT.usage);
    const client = await ctx.client(flags);
    const path = `/v1/logs/${encodeURIComponent(workload)}?lines=${flags.lines}`;
    if (!flags.follow) {
      const text = await client.request<string>('GET', path, { timeoutMs: 30_000 });
      if (flags.json)
        ctx.print(
          flags,
          { workload, lines: text === '' ? [] : text.replace(/\n$/, '').split('\n') },
          () => '',
        );
      else ctx.io.out(text);
      return;
    }
    const res = await client.open(`${path}&follow=1`);
    await new Promise<void>((resolve) => {
      const stop = (): void => {
        res.destroy();
        resolve();
      };
      process.once('SIGINT', stop);
      res.on('data', (chunk: Buffer) => ctx.io.out(chunk.toString('utf8')));
      res.on('end', () => {
        process.off('SIGINT', stop);
        resolve();
      });
      res.on('error', () => {
        process.off('SIGINT', stop);
        resolve();
      });
    });
  });
}
