import type { Command } from 'commander';
import { signImageDigest } from '../../identity/image-signing.js';
import { loadOrg } from '../../identity/org.js';
import { buildImage, DIGEST_PATTERN } from '../../reconciler/image.js';
import { type CliContext, type JsonFlag, withJson } from '../context.js';
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
}
