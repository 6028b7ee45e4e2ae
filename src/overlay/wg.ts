import { SiloError } from '../util/silo-error.js';
import type { CommandRunner } from './exec.js';

/**
 * Typed wrapper over wireguard-tools' `wg`. Works the same against a kernel
 * interface and a wireguard-go one (wg talks netlink to the first and the
 * UAPI socket in /var/run/wireguard to the second).
 */

/** A WireGuard key: 32 bytes, standard base64 (44 chars, one "=" of padding). */
export const WG_KEY_PATTERN = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;

export interface WgInterfaceState {
  /** null when no private key is set. */
  privateKey: string | null;
  publicKey: string | null;
  listenPort: number;
  /** null when no fwmark is set ("off"). */
  fwmark: number | null;
}

export interface WgPeerState {
  publicKey: string;
  presharedKey: string | null;
  /** "host:port" (IPv6 as "[addr]:port") or null when the peer has no known endpoint yet. */
  endpoint: string | null;
  allowedIps: string[];
  /** Unix seconds of the latest handshake; 0 = never. */
  latestHandshake: number;
  rxBytes: number;
  txBytes: number;
  /** Seconds, or null when off. */
  persistentKeepalive: number | null;
}

export interface WgDump {
  interface: WgInterfaceState;
  peers: WgPeerState[];
}

export class WgDumpParseError extends SiloError<'malformed'> {
  constructor(line: number, problem: string) {
    super('malformed', `cannot parse \`wg show dump\` output, line ${line}: ${problem}`);
  }
}

const NONE = '(none)';
const UINT = /^[0-9]+$/;
const ALLOWED_IP = /^[0-9a-fA-F.:]+\/[0-9]{1,3}$/;
const ENDPOINT = /^(?:[0-9.]+|\[[0-9a-fA-F:.%a-zA-Z0-9]+\]):[0-9]{1,5}$/;

/**
 * Parse the output of `wg show <interface> dump`: one tab-separated line for
 * the interface (private-key public-key listen-port fwmark), then one per peer
 * (public-key preshared-key endpoint allowed-ips latest-handshake rx-bytes
 * tx-bytes persistent-keepalive).
 */
export function parseWgDump(text: string): WgDump {
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  if (lines.length === 0) throw new WgDumpParseError(1, 'empty output (expected the interface line)');
  const iface = parseInterfaceLine(lines[0]!);
  const peers: WgPeerState[] = [];
  const seen = new Set<string>();
  for (let i = 1; i < lines.length; i++) {
    const peer = parsePeerLine(lines[i]!, i + 1);
    if (seen.has(peer.publicKey)) throw new WgDumpParseError(i + 1, `duplicate peer ${peer.publicKey}`);
    seen.add(peer.publicKey);
    peers.push(peer);
  }
  return { interface: iface, peers };
}

function fields(line: string, lineNo: number, count: number, what: string): string[] {
  const parts = line.split('\t');
  if (parts.length !== count) {
    throw new WgDumpParseError(
      lineNo,
      `${what} line has ${parts.length} tab-separated fields, expected ${count}`,
    );
  }
  return parts;
}

function parseInterfaceLine(line: string): WgInterfaceState {
  const [privateKey, publicKey, port, fwmark] = fields(line, 1, 4, 'interface') as [
    string,
    string,
    string,
    string,
  ];
  return {
    privateKey: optionalKey(privateKey, 1, 'private key'),
    publicKey: optionalKey(publicKey, 1, 'public key'),
    listenPort: uint(port, 1, 'listen port', 65535),
    fwmark: parseFwmark(fwmark),
  };

  function parseFwmark(value: string): number | null {
    if (value === 'off') return null;
    if (/^0x[0-9a-f]{1,8}$/.test(value)) return Number.parseInt(value.slice(2), 16);
    throw new WgDumpParseError(1, `fwmark "${value}" is neither "off" nor a hex number`);
  }
}

function parsePeerLine(line: string, lineNo: number): WgPeerState {
  const [publicKey, psk, endpoint, allowed, handshake, rx, tx, keepalive] = fields(
    line,
    lineNo,
    8,
    'peer',
  ) as [string, string, string, string, string, string, string, string];
  const key = optionalKey(publicKey, lineNo, 'peer public key');
  if (key === null) throw new WgDumpParseError(lineNo, 'peer without a public key');
  if (endpoint !== NONE && !ENDPOINT.test(endpoint)) {
    throw new WgDumpParseError(lineNo, `endpoint "${endpoint}" is not host:port`);
  }
  const allowedIps = allowed === NONE ? [] : allowed.split(',');
  for (const entry of allowedIps) {
    if (!ALLOWED_IP.test(entry))
      throw new WgDumpParseError(lineNo, `allowed IP "${entry}" is not address/prefix`);
  }
  return {
    publicKey: key,
    presharedKey: optionalKey(psk, lineNo, 'preshared key'),
    endpoint: endpoint === NONE ? null : endpoint,
    allowedIps,
    latestHandshake: uint(handshake, lineNo, 'latest handshake'),
    rxBytes: uint(rx, lineNo, 'rx bytes'),
    txBytes: uint(tx, lineNo, 'tx bytes'),
    persistentKeepalive: keepalive === 'off' ? null : uint(keepalive, lineNo, 'persistent keepalive', 65535),
  };
}

function optionalKey(value: string, lineNo: number, what: string): string | null {
  if (value === NONE) return null;
  if (!WG_KEY_PATTERN.test(value))
    throw new WgDumpParseError(lineNo, `${what} "${value}" is not a WireGuard key`);
  return value;
}

function uint(value: string, lineNo: number, what: string, max = Number.MAX_SAFE_INTEGER): number {
  if (!UINT.test(value))
    throw new WgDumpParseError(lineNo, `${what} "${value}" is not a non-negative integer`);
  const n = Number(value);
  if (n > max) throw new WgDumpParseError(lineNo, `${what} ${value} is out of range`);
  return n;
}

export interface WgPeerSettings {
  publicKey: string;
  /** host:port; omitted = leave the peer's current endpoint alone. */
  endpoint?: string;
  allowedIps: readonly string[];
  /** Seconds; 0 turns keepalive off. */
  persistentKeepalive: number;
}

export interface WgOptions {
  runner: CommandRunner;
  /** Path or name of the wg binary. */
  wgPath?: string;
}

export class Wg {
  readonly #runner: CommandRunner;
  readonly #wg: string;

  constructor(options: WgOptions) {
    this.#runner = options.runner;
    this.#wg = options.wgPath ?? 'wg';
  }

  /** A new WireGuard private key (base64). */
  async genkey(): Promise<string> {
    const { stdout } = await this.#runner.run([this.#wg, 'genkey']);
    return checkKey(stdout.trim(), 'wg genkey output');
  }

  /** The public key of a private key (base64). */
  async pubkey(privateKey: string): Promise<string> {
    checkKey(privateKey, 'private key');
    const { stdout } = await this.#runner.run([this.#wg, 'pubkey'], { input: `${privateKey}\n` });
    return checkKey(stdout.trim(), 'wg pubkey output');
  }

  async showDump(interfaceName: string, netns?: string): Promise<WgDump> {
    const { stdout } = await this.#runner.run(
      [this.#wg, 'show', interfaceName, 'dump'],
      optionalNetns(netns),
    );
    return parseWgDump(stdout);
  }

  /** Set the interface's private key (read by wg from a file, so it never appears in argv) and listen port. */
  async setInterface(
    interfaceName: string,
    settings: { privateKeyFile: string; listenPort: number },
    netns?: string,
  ): Promise<void> {
    await this.#runner.run(
      [
        this.#wg,
        'set',
        interfaceName,
        'private-key',
        settings.privateKeyFile,
        'listen-port',
        String(settings.listenPort),
      ],
      optionalNetns(netns),
    );
  }

  /** Add a peer or update it in place (allowed-ips replaces the peer's list). */
  async setPeer(interfaceName: string, peer: WgPeerSettings, netns?: string): Promise<void> {
    checkKey(peer.publicKey, 'peer public key');
    const argv = [this.#wg, 'set', interfaceName, 'peer', peer.publicKey];
    if (peer.endpoint !== undefined) argv.push('endpoint', peer.endpoint);
    // An empty allowed-ips argument clears the list, which is what an empty array means.
    argv.push('allowed-ips', peer.allowedIps.join(','));
    argv.push(
      'persistent-keepalive',
      peer.persistentKeepalive === 0 ? 'off' : String(peer.persistentKeepalive),
    );
    await this.#runner.run(argv, optionalNetns(netns));
  }

  async removePeer(interfaceName: string, publicKey: string, netns?: string): Promise<void> {
    checkKey(publicKey, 'peer public key');
    await this.#runner.run(
      [this.#wg, 'set', interfaceName, 'peer', publicKey, 'remove'],
      optionalNetns(netns),
    );
  }
}

function optionalNetns(netns: string | undefined): { netns?: string } {
  return netns === undefined ? {} : { netns };
}

function checkKey(value: string, what: string): string {
  if (!WG_KEY_PATTERN.test(value)) throw new Error(`${what} is not a WireGuard key (44 chars of base64)`);
  return value;
}
