import type { Command, Help, Option } from 'commander';

/**
 * What `--help` adds to commander's output (docs/cli.md): required options
 * say so, and the commands operators reach for first end with examples.
 */

/** Marks options declared with `requiredOption`; commander's help does not tell them apart. */
export function optionDescription(help: Help, option: Option): string {
  const base = help.optionDescription(option);
  return option.mandatory ? `${base} (required)` : base;
}

/** Examples by command path ("ca sign"), shown after the options. */
export const EXAMPLES: Readonly<Record<string, readonly string[]>> = {
  'org init': ['silo org init --dir ./acme-org --name acme --cidr 10.42.0.0/16'],
  'node init': [
    'silo node init --dir /var/lib/silo/identity --id node-7 --endpoint wg://203.0.113.7:51820 --label zone=eu-1',
  ],
  'ca sign': [
    'silo ca sign --org ./acme-org request.json -o bundle.json --seed /ip4/10.42.0.1/tcp/7946/p2p/12D3Koo...',
  ],
  'ca revoke': ['silo ca revoke --org ./acme-org node-7 --reason "disk replaced"'],
  'token create': [
    'silo token create --org ./acme-org --provisioner 203.0.113.1:7948 --ttl 1h --label zone=eu-1',
  ],
  'token revoke': ['silo token revoke --org ./acme-org 3f2a9c41d07e5b16'],
  join: [
    "silo join 'silo1.eyJ2Ijox...' --dir /var/lib/silo/identity --id node-7 --endpoint wg://203.0.113.7:51820",
  ],
  agent: [
    'silo agent --config /etc/silo/agent.toml',
    'SILO_LOG_LEVEL=debug silo agent --config ./agent.toml',
  ],
  apply: [
    'silo apply config/examples/counter/manifest.toml --org ./acme-org --image config/examples/counter/image',
  ],
  workloads: ['silo workloads', 'silo workloads counter --json'],
  nodes: ['silo nodes', 'silo nodes --json --socket /var/lib/silo/silo.sock'],
  drain: ['silo drain node-2'],
  undrain: ['silo undrain node-2'],
  logs: ['silo logs counter --tail 50', 'silo logs counter -f'],
  events: ['silo events', 'silo events --json --count 20'],
  top: ['silo top', 'silo top --interval 5 --socket /var/lib/silo/silo.sock'],
  completion: ['silo completion bash > /etc/bash_completion.d/silo'],
  demo: ['silo demo --nodes 3', 'silo demo --nodes 5 --duration-s 60 --json'],
};

/** Adds EXAMPLES to the commands of `program` (call after every command is registered). */
export function addExamples(program: Command): void {
  const visit = (command: Command, path: string[]) => {
    const key = path.join(' ');
    const examples = EXAMPLES[key];
    if (examples) command.addHelpText('after', `\nExamples:\n${examples.map((e) => `  ${e}`).join('\n')}\n`);
    for (const sub of command.commands) visit(sub, [...path, sub.name()]);
  };
  for (const command of program.commands) visit(command, [command.name()]);
}
