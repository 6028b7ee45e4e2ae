/**
 * IPv4 addresses and CIDR blocks as unsigned 32-bit integers. Strict parsing:
 * dotted quad, decimal, no leading zeros (inet_aton would read "010" as
 * octal 8, so such input is ambiguous and rejected).
 */

const OCTET = /^(?:0|[1-9][0-9]{0,2})$/;

/** Overlay CIDRs must leave room for hosts: /8 (16M addresses) to /30 (2 hosts). */
export const MIN_OVERLAY_PREFIX = 8;
export const MAX_OVERLAY_PREFIX = 30;

export interface Ipv4Cidr {
  /** Network address, host bits zero. */
  network: number;
  prefix: number;
  /** First and last usable host address (network and broadcast excluded). */
  firstHost: number;
  lastHost: number;
}

export function parseIpv4(text: string): number {
  const parts = text.split('.');
  if (parts.length !== 4) throw new Error(`"${text}" is not an IPv4 address (expected a.b.c.d)`);
  let value = 0;
  for (const part of parts) {
    if (!OCTET.test(part) || Number(part) > 255) {
      throw new Error(
        `"${text}" is not an IPv4 address (octet "${part}" must be 0-255 without leading zeros)`,
      );
    }
    value = value * 256 + Number(part);
  }
  return value;
}

export function formatIpv4(value: number): string {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff)
    throw new Error(`${value} is not an IPv4 address`);
  return [value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff].join('.');
}

/** Parse an overlay CIDR such as "10.88.0.0/16"; host bits must be zero. */
export function parseOverlayCidr(text: string): Ipv4Cidr {
  const match = /^([0-9.]+)\/([0-9]{1,2})$/.exec(text);
  if (!match) throw new Error(`overlay CIDR "${text}" is not of the form a.b.c.d/prefix`);
  const address = parseIpv4(match[1]!);
  const prefix = Number(match[2]);
  if (prefix < MIN_OVERLAY_PREFIX || prefix > MAX_OVERLAY_PREFIX) {
    throw new Error(
      `overlay CIDR "${text}": prefix must be between /${MIN_OVERLAY_PREFIX} and /${MAX_OVERLAY_PREFIX}`,
    );
  }
  const size = 2 ** (32 - prefix);
  const network = address - (address % size);
  if (network !== address) {
    throw new Error(
      `overlay CIDR "${text}" has host bits set (did you mean ${formatIpv4(network)}/${prefix}?)`,
    );
  }
  return { network, prefix, firstHost: network + 1, lastHost: network + size - 2 };
}

/** True when `address` is a usable host address of `cidr` (not its network or broadcast address). */
export function isHostInCidr(cidr: Ipv4Cidr, address: number): boolean {
  return address >= cidr.firstHost && address <= cidr.lastHost;
}
