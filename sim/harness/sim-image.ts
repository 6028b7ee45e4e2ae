/**
 * The one image every simulated workload names. Simulated processes never
 * execute it, but the reconcile loop checks (digest recomputed, CA
 * signature) and fetches images before every claim, so it must be a real,
 * signed image in each node's image store. A throwaway CA key signs it; the
 * agents verify with its public key.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateEd25519KeyPair } from '../../src/identity/ed25519.js';
import { signImageDigest } from '../../src/identity/image-signing.js';
import { buildImage } from '../../src/reconciler/image.js';
import { caImageVerifier, type ImageSignatureVerifier } from '../../src/reconciler/image-store.js';

export interface SimImage {
  tar: string;
  digest: string;
  signature: string;
  verify: ImageSignatureVerifier;
}

export const SIM_IMAGE_COMMAND = '/bin/sim-service';

export async function buildSimImage(dir: string): Promise<SimImage> {
  const source = join(dir, 'image-src');
  await mkdir(join(source, 'bin'), { recursive: true });
  await writeFile(
    join(source, 'bin', 'sim-service'),
    '#!/bin/sh\n# Never run: the simulator stands in a simulated process for it.\nexit 0\n',
    { mode: 0o755 },
  );
  const tar = join(dir, 'sim-service.tar');
  const { digest } = await buildImage(source, tar);
  const ca = generateEd25519KeyPair();
  return {
    tar,
    digest,
    signature: signImageDigest(ca.privateKey, digest),
    verify: caImageVerifier(ca.publicKey),
  };
}
