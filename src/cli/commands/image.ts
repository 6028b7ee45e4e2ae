import { createReadStream } from 'node:fs';
import type { Command } from 'commander';
import { signImageDigest } from '../../identity/image-signing.js';
import { loadOrg } from '../../identity/org.js';
import { buildImage, DIGEST_PATTERN, digestFile } from '../../reconciler/image.js';
import type { ConnectionFlags } from '../api-client.js';
import { type CliContext, type JsonFlag, withConnection, withJson } from '../context.js';
import { inputError } from '../errors.js';

export function registerImageCommands(program: Command, ctx: CliContext): void {
  const image = program.command('image').description('build and sign service images');
  withJson(
    image
      .command('build')
      .description('pack a directory into a reproducible image tar; prints its digest')
      .argument('<dir>', 'the root filesystem of the service')
      .requiredOption('-o, --output <file.tar>', 'where to write the tar'),
  ).action(async (dir: string, flags: JsonFlag & { output: string }) => {
    const built = await buildImage(dir, flags.output);
    ctx.print(flags, { ...built, file: flags.output }, () => built.digest);
  });

  withJson(
    image
      .command('sign')
      .description('sign an image digest with the org CA key; prints the signature')
      .argument('<digest>', 'sha256:<64 hex>, as printed by `silo image build`')
      .requiredOption('--org <orgdir>', 'org directory (ca.key)'),
  ).action(async (digest: string, flags: JsonFlag & { org: string }) => {
    if (!DIGEST_PATTERN.test(digest))
      throw inputError(`"${digest}" is not an image digest (sha256:<64 lowercase hex>)`);
    const org = await loadOrg(flags.org);
    const signature = signImageDigest(org.caPrivateKey, digest);
    ctx.print(flags, { digest, signature }, () => signature);
  });

  withConnection(
    withJson(
      image
        .command('push')
        .description(
          "upload an image tar into the agent's image store (peers fetch it from there over /silo/image/1)",
        )
        .argument('<file.tar>', 'an image tar, as written by `silo image build`')
        .requiredOption(
          '--org <orgdir>',
          'org directory (ca.key): the upload carries the CA signature of its digest',
        ),
    ),
  ).action(async (file: string, flags: JsonFlag & ConnectionFlags & { org: string }) => {
    let digest: string;
    try {
      digest = await digestFile(file);
    } catch (err) {
      throw inputError(
        `${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      );
    }
    const org = await loadOrg(flags.org);
    const signature = signImageDigest(org.caPrivateKey, digest);
    const client = await ctx.client(flags);
    await client.request('PUT', `/v1/images/${digest}`, {
      stream: createReadStream(file),
      contentType: 'application/x-tar',
      headers: { 'x-silo-image-signature': signature },
    });
    ctx.print(flags, { digest, signature, pushed: true }, () => `pushed ${digest}`);
  });
}
