import type { ConnectionGater, PeerId } from '@libp2p/interface';

/**
 * The enrollment gate (DESIGN: "Nothing trusted that is not enrolled"): libp2p
 * refuses to dial, or to finish a connection with, any peer whose id is not
 * in the org's active enrolled set. The peer id is known to be authentic only
 * once the noise handshake has run, so inbound connections are judged at the
 * encrypted and upgraded stages; outbound ones are also stopped before the
 * dial when the peer id is known up front (a peer id, or a multiaddr with
 * /p2p/: libp2p asks denyDialPeer for both), else after the handshake.
 *
 * `isPeerAllowed` is read on every call, so the gate follows the enrollment
 * view (e.g. `view.byPeerId.has(id)` from computeActiveNodes) without being
 * rebuilt. Already open connections of a newly revoked peer are not closed
 * here; the owner of the view does that.
 */

export type GateStage =
  | 'dial-peer'
  | 'inbound-encrypted'
  | 'outbound-encrypted'
  | 'inbound-upgraded'
  | 'outbound-upgraded';

export interface EnrollmentGaterOptions {
  isPeerAllowed: (peerId: string) => boolean;
  /** Told about every denial (for a log line or a counter). */
  onDenied?: (peerId: string, stage: GateStage) => void;
}

export function enrollmentGater(options: EnrollmentGaterOptions): ConnectionGater {
  const deny = (peerId: string, stage: GateStage): boolean => {
    if (options.isPeerAllowed(peerId)) return false;
    options.onDenied?.(peerId, stage);
    return true;
  };
  const at =
    (stage: GateStage) =>
    (peer: PeerId): boolean =>
      deny(peer.toString(), stage);
  return {
    denyDialPeer: at('dial-peer'),
    denyInboundEncryptedConnection: at('inbound-encrypted'),
    denyOutboundEncryptedConnection: at('outbound-encrypted'),
    denyInboundUpgradedConnection: at('inbound-upgraded'),
    denyOutboundUpgradedConnection: at('outbound-upgraded'),
  };
}
