import type { Logger } from 'pino';
import { scratchSecretProblem } from '../identity/scratch-secret-signing.js';
import { type ScratchKeyring, unsealScratchSecret } from '../reconciler/scratch-keys.js';
import type { EnrollmentView } from '../state/enrollment-view.js';
import type { SignedScratchSecret } from '../state/schemas.js';

export interface ScratchKeyIntakeOptions {
  /** Where opened secrets go (in memory only). */
  keyring: ScratchKeyring;
  self: { nodeId: string; wgPrivateKey: string };
  caPublicKey: string;
  logger: Logger;
}

/**
 * Opens the scratch secrets addressed to this node (docs/security.md,
 * "Encrypted scratch") into the keyring: the ones its bundle carries, at
 * start, and every generation the CA later writes into the enrollment
 * document (after a revocation), as it arrives. Only CA-signed envelopes
 * sealed to this node's WireGuard key are opened; anything else is logged
 * and ignored, so a member cannot push a key of its choosing on another.
 */
export class ScratchKeyIntake {
  private unsubscribe: (() => void) | null = null;
  private readonly refused = new Set<string>();

  constructor(private readonly options: ScratchKeyIntakeOptions) {}

  /** The bundle's envelopes; a bad one is a setup error (the CA handed this node a broken bundle). */
  addBundle(envelopes: readonly SignedScratchSecret[]): void {
    for (const envelope of envelopes) {
      const problem = this.take(envelope);
      if (problem !== null) throw new Error(`enrollment bundle: ${problem}`);
    }
  }

  /** Takes what the enrollment document holds for this node now, then every change. */
  start(enrollment: Pick<EnrollmentView, 'scratchKeysFor' | 'onChange'>): void {
    const takeAll = (): void => {
      for (const envelope of enrollment.scratchKeysFor(this.options.self.nodeId)) {
        if (this.options.keyring.has(envelope.generation)) continue;
        const problem = this.take(envelope);
        if (problem === null) {
          this.options.logger.info(
            { generation: envelope.generation },
            'received a new scratch key generation from the enrollment document',
          );
        } else if (!this.refused.has(`${envelope.generation}/${envelope.ct}`)) {
          // Once per envelope: the document changes for many other reasons.
          this.refused.add(`${envelope.generation}/${envelope.ct}`);
          this.options.logger.warn({ generation: envelope.generation }, `scratch key refused: ${problem}`);
        }
      }
    };
    takeAll();
    this.unsubscribe = enrollment.onChange(takeAll);
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
  }

  /** Checks the CA's signature, opens the envelope into the keyring; null when taken, else why not. */
  private take(envelope: SignedScratchSecret): string | null {
    const signed = scratchSecretProblem(this.options.caPublicKey, envelope);
    if (signed !== null) return signed;
    let secret: Buffer;
    try {
      secret = unsealScratchSecret(envelope, this.self());
    } catch (err) {
      return (err as Error).message;
    }
    try {
      this.options.keyring.add(envelope.generation, secret);
    } finally {
      secret.fill(0);
    }
    return null;
  }

  private self(): { nodeId: string; privateKey: string } {
    return { nodeId: this.options.self.nodeId, privateKey: this.options.self.wgPrivateKey };
  }
}
