import { readFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { basename, dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { z } from 'zod';
import {
  MAX_SERVICE_PORTS,
  MAX_WORKLOAD_CPUS,
  MAX_WORKLOAD_MEMORY_MB,
  MAX_WORKLOAD_SCRATCH_MB,
  WORKLOAD_NAME_PATTERN,
  type WorkloadSpec,
} from '../state/schemas.js';
import { InputError } from '../util/input-error.js';
import { suggest } from '../util/suggest.js';

/**
 * Service manifests as users write them: TOML, snake_case keys
 * (docs/services.md, "Manifest reference"). Parsing fills the defaults;
 * `manifestToSpec` turns a manifest plus the image's digest and CA signature
 * into the camelCase WorkloadSpec of the workloads document.
 */

/** Directory variables silo sets itself; a manifest may not override them. */
export const RESERVED_ENV = [
  'RUNTIME_DIRECTORY',
  'STATE_DIRECTORY',
  'CACHE_DIRECTORY',
  'LOGS_DIRECTORY',
] as const;

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const SIGNAL_NAMES = new Set(Object.keys(osConstants.signals));
const UNCATCHABLE = new Set(['SIGKILL', 'SIGSTOP']);

const positiveSeconds = z.number().positive().finite();
const positiveInt = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);

const ManifestSchema = z.strictObject({
  name: z.string().regex(WORKLOAD_NAME_PATTERN),
  tier: z.string().min(1).max(63).default('org-container'),
  image: z.string().min(1).max(253),
  command: z.string().min(1),
  args: z.array(z.string()).default([]),
  env: z
    .record(z.string().regex(ENV_NAME), z.string())
    .default({})
    .superRefine((env, ctx) => {
      for (const key of RESERVED_ENV) {
        if (key in env) ctx.addIssue({ code: 'custom', path: [key], message: 'reserved', input: env[key] });
      }
    }),
  scratch_mb: positiveInt.max(MAX_WORKLOAD_SCRATCH_MB).default(256),
  scratch_class: z.enum(['persistent', 'volatile']).default('persistent'),
  network: z.enum(['overlay', 'host', 'none']).default('overlay'),
  ports: z
    .array(z.number().int().min(1).max(65535))
    .max(MAX_SERVICE_PORTS)
    .refine((ports) => new Set(ports).size === ports.length, 'listed twice')
    .optional(),
  cpus: z.number().positive().finite().max(MAX_WORKLOAD_CPUS).default(1),
  memory_mb: positiveInt.max(MAX_WORKLOAD_MEMORY_MB).default(256),
  restart: z.enum(['always', 'on-failure', 'never']).default('always'),
  notification_fd: z.number().int().min(3).max(255).optional(),
  encrypted: z.boolean().optional(),
  stop_signal: z
    .string()
    .transform((s) => (s.startsWith('SIG') ? s : `SIG${s}`))
    .refine((s) => SIGNAL_NAMES.has(s) && !UNCATCHABLE.has(s))
    .default('SIGTERM'),
  stop_timeout: positiveSeconds.default(10),
  start_timeout: positiveSeconds.default(30),
  restore_wait: positiveSeconds.optional(),
  generator: z.string().min(1).optional(),
  constraints: z.record(z.string().min(1).max(63), z.string().max(253)).default({}),
  on_partition: z.enum(['stop', 'keep']).optional(),
});

type ParsedManifest = z.output<typeof ManifestSchema>;
/** A manifest with every default filled in (on_partition included). */
export type Manifest = Omit<ParsedManifest, 'on_partition'> & { on_partition: 'stop' | 'keep' };
export const MANIFEST_FIELDS = Object.keys(ManifestSchema.shape) as (keyof ParsedManifest)[];

/** What each field accepts, in words, for error messages (and docs/services.md). */
const EXPECTED: Record<keyof ParsedManifest, string> = {
  name: 'a name of 1-63 lowercase letters, digits, "-" or "_", starting with a letter or digit',
  tier: 'a non-empty string of at most 63 characters',
  image: 'an image tar path or an image name (1-253 characters)',
  command: 'the path of the program inside the image',
  args: 'an array of strings',
  env: 'a table of NAME = "value" strings',
  scratch_mb: `a positive integer up to ${MAX_WORKLOAD_SCRATCH_MB}`,
  scratch_class: '"persistent" or "volatile"',
  network: '"overlay", "host" or "none"',
  ports: `an array of at most ${MAX_SERVICE_PORTS} distinct port numbers from 1 to 65535`,
  cpus: `a positive number up to ${MAX_WORKLOAD_CPUS}`,
  memory_mb: `a positive integer up to ${MAX_WORKLOAD_MEMORY_MB}`,
  restart: '"always", "on-failure" or "never"',
  notification_fd: 'an integer file descriptor from 3 to 255',
  encrypted: 'true or false',
  stop_signal: 'a catchable signal name such as "SIGTERM" or "SIGINT"',
  stop_timeout: 'a positive number of seconds',
  start_timeout: 'a positive number of seconds',
  restore_wait: 'a positive number of seconds',
  generator: 'the path of the generator program inside the image',
  constraints: 'a table of label = "value" strings',
  on_partition: '"stop" or "keep"',
};

export interface ManifestProblem {
  /** Dotted path of the offending key ("" for the document itself). */
  field: string;
  message: string;
}

/** A manifest that could not be read, parsed or validated; `message` lists every problem, one a line. */
export class ManifestError extends InputError {
  constructor(
    readonly file: string,
    readonly problems: ManifestProblem[],
  ) {
    super(problems.map((p) => `${file}: ${p.field === '' ? '' : `${p.field}: `}${p.message}`).join('\n'));
    this.name = 'ManifestError';
  }
}

/** Parse and validate manifest text; `file` names the source in every error. */
export function parseManifest(text: string, file = 'manifest.toml'): Manifest {
  let raw: unknown;
  try {
    raw = parseToml(text);
  } catch (err) {
    if (err instanceof TomlError) {
      const firstLine = err.message.split('\n')[0]?.replace(/^Invalid TOML document: /, '') ?? err.message;
      throw new ManifestError(`${file}:${err.line}:${err.column}`, [
        { field: '', message: `TOML syntax error: ${firstLine}` },
      ]);
    }
    throw err;
  }
  const result = ManifestSchema.safeParse(raw, { reportInput: true });
  if (!result.success) throw new ManifestError(file, describeIssues(result.error.issues, raw));
  const parsed = result.data;
  const onPartition = parsed.on_partition ?? (parsed.scratch_class === 'persistent' ? 'stop' : 'keep');
  return { ...parsed, on_partition: onPartition };
}

export interface LoadedManifest {
  manifest: Manifest;
  file: string;
  /** Absolute path of the image tar when `image` names a file, else null (an image name). */
  imagePath: string | null;
}

/** Read a manifest file; a relative image path is resolved against the manifest's directory. */
export async function loadManifest(file: string): Promise<LoadedManifest> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ManifestError(file, [{ field: '', message: `cannot read: ${(err as Error).message}` }]);
  }
  const manifest = parseManifest(text, file);
  const imagePath = isImagePath(manifest.image) ? resolve(dirname(file), manifest.image) : null;
  return { manifest, file, imagePath };
}

/**
 * An image reference is a path when it looks like one (contains "/", starts
 * with "." or ends in ".tar"); anything else ("org:counter:1.0") is a name.
 */
export function isImagePath(image: string): boolean {
  return image.includes('/') || image.startsWith('.') || image.endsWith('.tar') || isAbsolute(image);
}

/** The image name recorded in the spec: the manifest's name, or a tar path's file name without ".tar". */
export function imageName(image: string): string {
  return isImagePath(image) ? basename(image).replace(/\.tar$/, '') || image : image;
}

export interface ImageAttestation {
  /** `sha256:<hex>` of the image tar. */
  imageDigest: string;
  /** The org CA's signature over the digest (base64). */
  imageSignature: string;
}

/** A WorkloadSpec before a writer assigns its revision. */
export type WorkloadSpecDraft = Omit<WorkloadSpec, 'revision'>;

export function manifestToSpec(manifest: Manifest, attestation: ImageAttestation): WorkloadSpecDraft {
  const draft: WorkloadSpecDraft = {
    name: manifest.name,
    tier: manifest.tier,
    image: imageName(manifest.image),
    imageDigest: attestation.imageDigest,
    imageSignature: attestation.imageSignature,
    command: manifest.command,
    args: [...manifest.args],
    env: { ...manifest.env },
    scratchMb: manifest.scratch_mb,
    scratchClass: manifest.scratch_class,
    network: manifest.network,
    cpus: manifest.cpus,
    memoryMb: manifest.memory_mb,
    restart: manifest.restart,
    stopSignal: manifest.stop_signal,
    stopTimeoutMs: secondsToMs(manifest.stop_timeout),
    startTimeoutMs: secondsToMs(manifest.start_timeout),
    constraints: { ...manifest.constraints },
    onPartition: manifest.on_partition,
  };
  if (manifest.notification_fd !== undefined) draft.notificationFd = manifest.notification_fd;
  // Only the opt-out is recorded: a spec without the field is encrypted.
  if (manifest.encrypted === false) draft.encrypted = false;
  if (manifest.ports !== undefined) draft.ports = [...manifest.ports].sort((a, b) => a - b);
  if (manifest.generator !== undefined) draft.generator = manifest.generator;
  if (manifest.restore_wait !== undefined) draft.restoreWaitMs = secondsToMs(manifest.restore_wait);
  return draft;
}

function secondsToMs(seconds: number): number {
  return Math.max(1, Math.round(seconds * 1000));
}

// ---- error messages ---------------------------------------------------------

function describeIssues(issues: readonly z.core.$ZodIssue[], raw: unknown): ManifestProblem[] {
  const problems: ManifestProblem[] = [];
  const seen = new Set<string>();
  const add = (problem: ManifestProblem): void => {
    const key = `${problem.field}\u0000${problem.message}`;
    if (!seen.has(key)) {
      seen.add(key);
      problems.push(problem);
    }
  };
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    return [{ field: '', message: 'expected a TOML table of manifest fields' }];
  }
  for (const issue of issues) {
    const path = issue.path.map(String);
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) add({ field: [...path, key].join('.'), message: unknownKeyMessage(key) });
      continue;
    }
    const top = path[0] as keyof ParsedManifest | undefined;
    if (top === undefined) continue;
    const field = path.join('.');
    const value = valueAt(raw, path);
    if (value === undefined && path.length === 1) {
      add({ field, message: `required field is missing (expected ${EXPECTED[top]})` });
    } else if (issue.code === 'invalid_key') {
      add({
        field,
        message:
          top === 'env'
            ? `invalid variable name ${show(path[1])} (letters, digits and "_", not starting with a digit)`
            : `invalid key ${show(path[1])} (1-63 characters)`,
      });
    } else if (top === 'env' && issue.code === 'custom') {
      add({ field, message: 'reserved: silo sets this variable to the service directory' });
    } else if (path.length > 1 && (top === 'env' || top === 'constraints')) {
      add({ field, message: `expected a string, got ${show(value)}` });
    } else if (path.length > 1 && top === 'args') {
      add({ field: `args[${path[1]}]`, message: `expected a string, got ${show(value)}` });
    } else {
      add({ field: top, message: `expected ${EXPECTED[top]}, got ${show(valueAt(raw, [top]))}` });
    }
  }
  const order = (field: string): number => {
    const index = (MANIFEST_FIELDS as string[]).indexOf(field.split(/[.[]/)[0] ?? '');
    return index < 0 ? MANIFEST_FIELDS.length : index;
  };
  return problems.sort((a, b) => order(a.field) - order(b.field));
}

function unknownKeyMessage(key: string): string {
  const suggestion = suggestField(key);
  return suggestion === null
    ? `unknown field (known fields: ${MANIFEST_FIELDS.join(', ')})`
    : `unknown field (did you mean "${suggestion}"?)`;
}

/** The known field a typo most likely meant (src/util/suggest.ts). */
export function suggestField(key: string): string | null {
  return suggest(key, MANIFEST_FIELDS);
}

function valueAt(root: unknown, path: readonly string[]): unknown {
  let node: unknown = root;
  for (const key of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (typeof value === 'string') return JSON.stringify(value);
  if (value instanceof Date) return `a date (${value.toISOString()})`;
  if (Array.isArray(value)) return `an array ${truncate(JSON.stringify(value))}`;
  if (typeof value === 'object' && value !== null) return `a table ${truncate(JSON.stringify(value))}`;
  return String(value);
}

function truncate(text: string): string {
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
