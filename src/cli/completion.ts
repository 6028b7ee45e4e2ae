import type { Command } from 'commander';

/**
 * Shell completion scripts generated from the command tree itself, so they
 * never drift from what `silo` accepts (docs/cli.md, "Shell completion").
 * Pure: takes the built program, returns the script text.
 */

/** One command path ("" for `silo` itself, " ca" for `silo ca`, " ca sign") and what may follow it. */
interface CompletionEntry {
  path: string;
  subcommands: string[];
  /** Long options, `--help` included. */
  flags: string[];
}

export const COMPLETION_SHELLS = ['bash', 'zsh'] as const;
export type CompletionShell = (typeof COMPLETION_SHELLS)[number];

/** Every command path of `program` with its subcommands and long options, depth first. */
export function completionEntries(program: Command): CompletionEntry[] {
  const entries: CompletionEntry[] = [];
  const walk = (command: Command, path: string): void => {
    const subcommands = command.commands.filter((c) => !isHidden(c));
    const flags = command.options
      .filter((o) => !o.hidden && o.long !== undefined)
      .map((o) => o.long as string);
    entries.push({
      path,
      subcommands: [...new Set(subcommands.flatMap((c) => [c.name(), ...c.aliases()]))],
      flags: [...new Set([...flags, '--help'])],
    });
    for (const sub of subcommands) {
      for (const name of [sub.name(), ...sub.aliases()]) walk(sub, `${path} ${name}`);
    }
  };
  walk(program, '');
  return entries;
}

function isHidden(command: Command): boolean {
  return (command as unknown as { _hidden?: boolean })._hidden === true;
}

/** Words are command names and `--flags`: nothing a shell would expand, but quote them anyway. */
function shellWord(text: string): string {
  if (!/^[A-Za-z0-9_. -]*$/.test(text)) throw new Error(`unexpected character in a completion word: ${text}`);
  return `"${text}"`;
}

/**
 * A bash completion function: walks the words typed so far, descending into
 * a subcommand only when that path exists, then offers what may follow the
 * deepest path reached: its long options after a `-`, else its
 * subcommands, else file names (manifests, images, org directories).
 */
export function bashCompletion(program: Command): string {
  const entries = completionEntries(program);
  const paths = entries.filter((e) => e.path !== '').map((e) => shellWord(e.path));
  const cases = entries
    .map(
      (e) =>
        `    ${shellWord(e.path)}) subs=${shellWord(e.subcommands.join(' '))}; flags=${shellWord(e.flags.join(' '))} ;;`,
    )
    .join('\n');
  return `# silo shell completion (bash). Install: silo completion bash > /etc/bash_completion.d/silo
# or add to ~/.bashrc: source <(silo completion bash)
_silo_complete() {
  local cur path next i w subs flags
  cur="\${COMP_WORDS[COMP_CWORD]}"
  path=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    case "$w" in -*) continue ;; esac
    next="$path $w"
    case "$next" in
      ${paths.join('|')}) path="$next" ;;
    esac
  done
  case "$path" in
${cases}
    *) subs=""; flags="--help" ;;
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
  elif [[ -n "$subs" ]]; then
    COMPREPLY=($(compgen -W "$subs" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -F _silo_complete silo
`;
}

/** zsh runs the bash function through bashcompinit. */
export function zshCompletion(program: Command): string {
  return `# silo shell completion (zsh). Add to ~/.zshrc: source <(silo completion zsh)
autoload -U +X compinit && compinit
autoload -U +X bashcompinit && bashcompinit
${bashCompletion(program).replace(/^# .*\n(# .*\n)?/, '')}`;
}

export function completionScript(shell: CompletionShell, program: Command): string {
  return shell === 'bash' ? bashCompletion(program) : zshCompletion(program);
}
