import type { ConnectionGater, MultiaddrConnection, PeerId } from '@libp2p/interface';

/**
 * The enrollment gate (docs/security.md: nothing is trusted that is not enrolled): libp2p
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
  | 'inbound-address'
  | 'dial-peer'
  | 'inbound-encrypted'
  | 'outbound-encrypted'
  | 'inbound-upgraded'
  | 'outbound-upgraded';

export interface EnrollmentGaterOptions {
  isPeerAllowed: (peerId: string) => boolean;
  /**
   * Checks an inbound connection's remote address before anything else runs.
   * With the WireGuard overlay the agent listens on its overlay IP, which
   * Linux also answers from the underlay; only overlay source addresses are
   * admitted then (a TCP handshake cannot complete from a forged source,
   * since the replies go out through WireGuard).
   */
  isRemoteAddrAllowed?: (remoteAddr: string) => boolean;
  /** Told about every denial: the peer id, or the remote address at stage 'inbound-address'. */
  onDenied?: (peerIdOrAddr: string, stage: GateStage) => void;
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
  const checkAddr = options.isRemoteAddrAllowed;
  return {
    ...(checkAddr
      ? {
          denyInboundConnection: (maConn: MultiaddrConnection): boolean => {
            const addr = maConn.remoteAddr.toString();
            if (checkAddr(addr)) return false;
            options.onDenied?.(addr, 'inbound-address');
            return true;
          },
        }
      : {}),
    denyDialPeer: at('dial-peer'),
    denyInboundEncryptedConnection: at('inbound-encrypted'),
    denyOutboundEncryptedConnection: at('outbound-encrypted'),
    denyInboundUpgradedConnection: at('inbound-upgraded'),
    denyOutboundUpgradedConnection: at('outbound-upgraded'),
  };
}
