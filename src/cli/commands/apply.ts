import { createReadStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { signImageDigest } from '../../identity/image-signing.js';
import { loadOrg } from '../../identity/org.js';
import { buildImage, DIGEST_PATTERN, digestFile } from '../../reconciler/image.js';
import { loadManifest, manifestToSpec } from '../../reconciler/manifest.js';
import type { WorkloadSpec } from '../../state/schemas.js';
import type { ApiClient, ConnectionFlags } from '../api-client.js';
import { type CliContext, type JsonFlag, withConnection, withJson } from '../context.js';
import { CliError, EXIT, inputError } from '../errors.js';
import { shortDigest } from '../format.js';

export interface ApplyOptions {
  manifestFile: string;
  orgDir: string;
  /** For a manifest whose `image` is a name: the digest of an image already in the cluster. */
  digest?: string;
  /** An image directory or tar to use instead of the one the manifest names (the spec keeps the manifest's image name). */
  image?: string;
  /** Progress notes ("building image ..."). */
  onProgress?: (text: string) => void;
  /** Write the spec with `encrypted = false` whatever the manifest says (the demo, where FUSE is missing). */
  plainState?: boolean;
}

export interface ApplyResult {
  name: string;
  revision: number;
  changed: boolean;
  imageDigest: string;
  /** The image was copied into the agent's store (false: it was there already, or only a digest was given). */
  uploaded: boolean;
}

/**
 * `silo apply`: manifest → image (built from a directory, or a tar digested)
 * → signed by the org CA → uploaded into the local agent's image store →
 * spec written. Nothing is written to the cluster before the manifest, the
 * image and the org key have all been checked.
 */
/**
 * What to do about a manifest's image that is not there: build the tar from
 * a directory beside it (the example's `image/`, or the tar's name without
 * `.tar`), or point --image at one.
 */
async function missingImageHint(imagePath: string, fromFlag: boolean): Promise<string> {
  if (fromFlag) return '';
  const dir = dirname(imagePath);
  for (const candidate of [imagePath.replace(/\.tar$/, ''), join(dir, 'image')]) {
    if (candidate === imagePath) continue;
    if ((await stat(candidate).catch(() => null))?.isDirectory()) {
      return `; build it with \`silo image build ${candidate} -o ${imagePath}\`, or pass --image ${candidate}`;
    }
  }
  return '; build it with `silo image build <dir> -o <file.tar>`, or pass --image <dir or tar>';
}

export async function applyManifest(client: ApiClient, options: ApplyOptions): Promise<ApplyResult> {
  const loaded = await loadManifest(options.manifestFile);
  const { manifest } = loaded;
  const imagePath = options.image !== undefined ? resolve(options.image) : loaded.imagePath;
  const imageSource = options.image !== undefined ? '--image' : `${options.manifestFile}: image:`;
  const org = await loadOrg(options.orgDir);
  let scratch: string | null = null;
  try {
    let tarFile: string | null = null;
    let digest: string;
    if (imagePath !== null) {
      const info = await stat(imagePath).catch(() => null);
      if (info === null) {
        throw inputError(
          `${imageSource} ${imagePath} does not exist (expected an image directory or tar)${await missingImageHint(imagePath, options.image !== undefined)}`,
        );
      }
      if (info.isDirectory()) {
        scratch = await mkdtemp(join(tmpdir(), 'silo-apply-'));
        tarFile = join(scratch, 'image.tar');
        options.onProgress?.(`building image from ${imagePath}`);
        digest = (await buildImage(imagePath, tarFile)).digest;
      } else {
        tarFile = imagePath;
        digest = await digestFile(imagePath);
      }
      if (options.digest !== undefined && options.digest !== digest) {
        throw inputError(`--digest ${options.digest} does not match the image ${imagePath} (${digest})`);
      }
    } else {
      if (options.digest === undefined) {
        throw inputError(
          `${options.manifestFile}: image "${manifest.image}" is a name; give --digest sha256:<hex> of an image ` +
            'already in the cluster, or set image to a directory or .tar path',
        );
      }
      if (!DIGEST_PATTERN.test(options.digest))
        throw inputError(`--digest "${options.digest}": expected sha256:<64 hex>`);
      digest = options.digest;
    }
    const signature = signImageDigest(org.caPrivateKey, digest);
    let uploaded = false;
    if (tarFile !== null && !(await hasImage(client, digest))) {
      options.onProgress?.(`uploading image ${shortDigest(digest)}`);
      await client.request('PUT', `/v1/images/${digest}`, {
        stream: createReadStream(tarFile),
        contentType: 'application/x-tar',
        headers: { 'x-silo-image-signature': signature },
      });
      uploaded = true;
    }
    const draft = manifestToSpec(manifest, { imageDigest: digest, imageSignature: signature });
    if (options.plainState === true) draft.encrypted = false;
    const { spec, changed } = await client.request<{ spec: WorkloadSpec; changed: boolean }>(
      'PUT',
      `/v1/workloads/${manifest.name}`,
      { json: draft, timeoutMs: 30_000 },
    );
    return { name: spec.name, revision: spec.revision, changed, imageDigest: digest, uploaded };
  } finally {
    if (scratch !== null) await rm(scratch, { recursive: true, force: true });
  }
}

async function hasImage(client: ApiClient, digest: string): Promise<boolean> {
  try {
    await client.request('GET', `/v1/images/${digest}`, { timeoutMs: 30_000 });
    return true;
  } catch (err) {
    if (err instanceof CliError && err.exitCode === EXIT.notFound) return false;
    throw err;
  }
}

interface ApplyFlags extends JsonFlag, ConnectionFlags {
  org: string;
  digest?: string;
  image?: string;
}

export function registerApplyCommands(program: Command, ctx: CliContext): void {
  withConnection(
    withJson(
      program
        .command('apply')
        .description('run a service: build/sign/upload its image and write its spec')
        .argument('<manifest.toml>', 'service manifest (docs/services.md)')
        .requiredOption('--org <orgdir>', 'org directory: its CA key signs the image')
        .option('--image <path>', "an image directory or tar to use instead of the manifest's image")
        .option('--digest <sha256:hex>', 'for a manifest whose image is a name: the image digest to run'),
    ),
  ).action(async (manifestFile: string, flags: ApplyFlags) => {
    const client = await ctx.client(flags);
    const result = await applyManifest(client, {
      manifestFile,
      orgDir: flags.org,
      digest: flags.digest,
      image: flags.image,
      onProgress: flags.json ? undefined : (text) => ctx.note(`${text} ...`),
    });
    ctx.print(flags, result, () =>
      result.changed
        ? `applied "${result.name}" (revision ${result.revision}, image ${shortDigest(result.imageDigest)})`
        : `"${result.name}" unchanged (revision ${result.revision})`,
    );
  });

  withConnection(
    withJson(
      program.command('delete').description('stop and remove a service').argument('<name>', 'workload name'),
    ),
  ).action(async (name: string, flags: JsonFlag & ConnectionFlags) => {
    const client = await ctx.client(flags);
    const result = await client.request<{ deleted: string }>(
      'DELETE',
      `/v1/workloads/${encodeURIComponent(name)}`,
      {
        timeoutMs: 30_000,
      },
    );
    ctx.print(flags, result, () => `deleted "${result.deleted}"`);
  });
}
