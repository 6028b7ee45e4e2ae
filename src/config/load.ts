import { readFileSync } from 'node:fs';
import { parse as parseToml } from 'smol-toml';
import { z } from 'zod';
import { InputError } from '../util/input-error.js';
import { suggest } from '../util/suggest.js';
import { type AgentConfig, AgentConfigSchema } from './schema.js';

/** A config problem: names the file, the key and what is wrong with it. */
export class ConfigError extends InputError {
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super(`${source}: invalid configuration\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }

  override oneLine(): string {
    return `${this.source}: invalid configuration: ${this.problems.join('; ')}`;
  }
}

const SECTIONS = new Set([
  'node',
  'gossip',
  'overlay',
  'storage',
  'api',
  'services',
  'membership',
  'provisioner',
  'log',
]);
const ENV_PREFIX = 'SILO_';

/**
 * Environment overrides: `SILO_<SECTION>_<KEY>=value` sets `<section>.<key>`
 * (e.g. `SILO_GOSSIP_DEAD_AFTER=5s`), `SILO_ORG` sets `org`. Values that parse
 * as JSON (numbers, booleans, arrays) are taken as such, others as strings.
 * Variables the agent reads itself (SILO_CONFIG, ...) are not config keys and
 * are ignored here.
 */
export function envOverrides(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, Record<string, unknown> | unknown> = {};
  for (const { path, raw } of envKeys(env)) {
    const [section, key] = path;
    if (key === undefined) {
      out[section] = raw;
      continue;
    }
    const table = (out[section] ?? {}) as Record<string, unknown>;
    table[key] = parseEnvValue(raw);
    out[section] = table;
  }
  return out;
}

/** The config keys the environment sets: variable name, key path, raw value. */
function envKeys(env: NodeJS.ProcessEnv): { name: string; path: [string] | [string, string]; raw: string }[] {
  const found: { name: string; path: [string] | [string, string]; raw: string }[] = [];
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || raw === undefined) continue;
    const rest = name.slice(ENV_PREFIX.length).toLowerCase();
    if (rest === 'org') {
      found.push({ name, path: ['org'], raw });
      continue;
    }
    const underscore = rest.indexOf('_');
    if (underscore < 0) continue;
    const section = rest.slice(0, underscore);
    if (!SECTIONS.has(section)) continue;
    found.push({ name, path: [section, rest.slice(underscore + 1)], raw });
  }
  return found;
}

function parseEnvValue(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

function isTable(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function merge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const current = out[key];
    out[key] = isTable(current) && isTable(value) ? merge(current, value) : value;
  }
  return out;
}

/** The object schema inside `schema`, looking through defaults, prefaults and pipes. */
function shapeOf(schema: z.ZodType | undefined): Record<string, z.ZodType> | undefined {
  let current = schema;
  for (let depth = 0; depth < 8 && current; depth++) {
    if (current instanceof z.ZodObject) return current.shape as Record<string, z.ZodType>;
    const def = current.def as { innerType?: z.ZodType; in?: z.ZodType };
    current = def.innerType ?? def.in;
  }
  return undefined;
}

/** The keys the config schema knows at `path` (e.g. ["gossip"]), or [] when it is not a table. */
function knownKeys(path: readonly PropertyKey[]): string[] {
  let shape = shapeOf(AgentConfigSchema);
  for (const key of path) shape = shapeOf(shape?.[String(key)]);
  return shape ? Object.keys(shape) : [];
}

function unknownKey(key: string, known: readonly string[]): string {
  const suggestion = suggest(key, known);
  return suggestion === null ? `"${key}"` : `"${key}" (did you mean "${suggestion}"?)`;
}

/**
 * One line per problem. `fromEnv` maps "section.key" to the environment
 * variable that set it, so that a bad value is blamed on the variable, not
 * on the file.
 */
export function formatIssues(
  issues: readonly z.core.$ZodIssue[],
  fromEnv: ReadonlyMap<string, string> = new Map(),
): string[] {
  const blame = (path: readonly PropertyKey[]): string => {
    const variable = fromEnv.get(path.slice(0, 2).map(String).join('.'));
    return variable === undefined ? '' : ` (set by $${variable})`;
  };
  return issues.map((issue) => {
    const key = issue.path.length > 0 ? issue.path.join('.') : '(top level)';
    if (issue.code === 'unrecognized_keys') {
      const known = knownKeys(issue.path);
      const keys = issue.keys.map((k) => `${unknownKey(k, known)}${blame([...issue.path, k])}`);
      return `${key}: unknown key(s) ${keys.join(', ')}`;
    }
    return `${key}: ${issue.message}${blame(issue.path)}`;
  });
}

/** Validates an already-parsed config object (from a file, a test or the demo). */
export function parseAgentConfig(raw: unknown, source: string, env: NodeJS.ProcessEnv = {}): AgentConfig {
  const base = isTable(raw) ? raw : {};
  const result = AgentConfigSchema.safeParse(merge(base, envOverrides(env)));
  if (!result.success) {
    const fromEnv = new Map(envKeys(env).map(({ name, path }) => [path.join('.'), name]));
    throw new ConfigError(source, formatIssues(result.error.issues, fromEnv));
  }
  return result.data;
}

/** Reads, parses and validates an agent config file with environment overrides. */
export function loadAgentConfig(file: string, env: NodeJS.ProcessEnv = process.env): AgentConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [
      `cannot read file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    ]);
  }
  let raw: unknown;
  try {
    raw = parseToml(text);
  } catch (err) {
    // smol-toml's errors carry the position; the first line of the message says what is wrong.
    const { line, column } = err as { line?: number; column?: number };
    const at =
      typeof line === 'number'
        ? ` at line ${line}${typeof column === 'number' ? `, column ${column}` : ''}`
        : '';
    throw new ConfigError(file, [`TOML syntax error${at}: ${(err as Error).message.split('\n')[0]}`]);
  }
  return parseAgentConfig(raw, file, env);
}
