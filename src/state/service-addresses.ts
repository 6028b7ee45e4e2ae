import { formatIpv4, type Ipv4Cidr, parseIpv4, parseOverlayCidr } from '../identity/ipv4-cidr.js';
import { SiloError } from '../util/silo-error.js';

/**
 * Service addresses (docs/services.md, "Service addresses"): every workload
 * with `network = "overlay"` gets one overlay address of its own from the
 * org's service range. Pure functions only: no I/O, no clock (the caller
 * passes `now`), so every node computes the same assignment from the same
 * converged workloads document, and property tests can drive them.
 *
 * The document holds *claims*: map `addresses`, key `<address>/<workload>`,
 * value `{at}`. Two nodes claiming the same address for different workloads
 * write different keys, so both claims survive the merge and nothing is lost
 * to last-writer-wins; `resolveServiceAddresses` then decides, the same way
 * on every node, which claim wins (docs/protocol.md, "workloads").
 */

/** The block of the org CIDR that service addresses come from. */
export interface ServiceRange {
  /** First and last address of the range (inclusive, both usable host addresses). */
  first: number;
  last: number;
}

export interface AddressClaim {
  address: string;
  workload: string;
  /** When the claim was written (ms): the older claim keeps a contested address. */
  at: number;
}

/** A claim's map key: `<address>/<workload>`. */
export function claimKey(address: string, workload: string): string {
  return `${address}/${workload}`;
}

/** The address and workload of a claim key, or null when the key has another shape. */
export function parseClaimKey(key: string): { address: string; workload: string } | null {
  const slash = key.indexOf('/');
  if (slash <= 0 || slash === key.length - 1) return null;
  return { address: key.slice(0, slash), workload: key.slice(slash + 1) };
}

/**
 * The upper half of the org CIDR (its lower half is where node addresses are
 * allocated from, lowest first: src/identity/ca.ts), broadcast address excluded.
 */
export function defaultServiceRange(overlayCidr: string | Ipv4Cidr): ServiceRange {
  const cidr = typeof overlayCidr === 'string' ? parseOverlayCidr(overlayCidr) : overlayCidr;
  const size = 2 ** (32 - cidr.prefix);
  return { first: cidr.network + size / 2, last: cidr.lastHost };
}

/**
 * The service range an org configured at `silo org init --service-range`
 * (docs/services.md): a CIDR block strictly inside the overlay CIDR, its
 * usable part clipped to the overlay's host addresses. Throws a message that
 * names what is wrong.
 */
export function serviceRangeFromCidr(text: string, overlayCidr: string | Ipv4Cidr): ServiceRange {
  const overlay = typeof overlayCidr === 'string' ? parseOverlayCidr(overlayCidr) : overlayCidr;
  let block: Ipv4Cidr;
  try {
    block = parseOverlayCidr(text);
  } catch (err) {
    throw new Error(`service range: ${(err as Error).message.replace(/^overlay CIDR/, 'CIDR')}`);
  }
  const overlayText = `${formatIpv4(overlay.network)}/${overlay.prefix}`;
  const blockEnd = block.network + 2 ** (32 - block.prefix) - 1;
  const overlayEnd = overlay.network + 2 ** (32 - overlay.prefix) - 1;
  if (block.prefix <= overlay.prefix || block.network < overlay.network || blockEnd > overlayEnd) {
    throw new Error(
      `service range ${text} must be a smaller block inside the overlay CIDR ${overlayText} (nodes need the rest)`,
    );
  }
  return { first: Math.max(block.network, overlay.firstHost), last: Math.min(blockEnd, overlay.lastHost) };
}

export function rangeSize(range: ServiceRange): number {
  return range.last - range.first + 1;
}

export function inRange(range: ServiceRange, address: number): boolean {
  return address >= range.first && address <= range.last;
}

/** A string address inside the range, as a number; null for anything else. */
function addressIn(range: ServiceRange, text: string): number | null {
  try {
    const value = parseIpv4(text);
    return inRange(range, value) ? value : null;
  } catch {
    return null;
  }
}

/**
 * Which claim wins, the same on every node that holds the same claims:
 * claims are taken oldest first (`at`, then workload name, then address, so
 * equal times still give one order), and a claim wins when neither its
 * workload nor its address has won before. The result is a one-to-one map:
 * no address for two workloads, no two addresses for one workload.
 *
 * Only claims of `workloads` (the overlay-network workloads whose specs the
 * document holds) inside `range` count; others are ignored (garbage that
 * `planAddressRepair` removes). Clock skew between writers can change who wins
 * a contested address, never that only one does.
 */
export function resolveServiceAddresses(
  claims: Iterable<AddressClaim>,
  workloads: ReadonlySet<string>,
  range: ServiceRange,
): Map<string, string> {
  const valid = [...claims].filter(
    (claim) => workloads.has(claim.workload) && addressIn(range, claim.address) !== null,
  );
  valid.sort(compareClaims);
  const byWorkload = new Map<string, string>();
  const taken = new Set<string>();
  for (const claim of valid) {
    if (byWorkload.has(claim.workload) || taken.has(claim.address)) continue;
    byWorkload.set(claim.workload, claim.address);
    taken.add(claim.address);
  }
  return byWorkload;
}

function compareClaims(a: AddressClaim, b: AddressClaim): number {
  if (a.at !== b.at) return a.at - b.at;
  if (a.workload !== b.workload) return a.workload < b.workload ? -1 : 1;
  return a.address < b.address ? -1 : a.address > b.address ? 1 : 0;
}

/** FNV-1a over the name's UTF-16 code units: spreads names over the range, the same on every node. */
function nameHash(name: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    hash ^= name.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

/**
 * The address a new claim for `workload` proposes: a hash of its name into
 * the range, then the next free one (linear probing). Two nodes applying
 * different workloads at once collide only when their names probe to the
 * same free address (instead of always, as "lowest free" would); the
 * resolution above settles the rare collision. Null when the range is full.
 */
export function proposeAddress(
  workload: string,
  taken: ReadonlySet<string>,
  range: ServiceRange,
): string | null {
  const size = rangeSize(range);
  if (taken.size >= size) return null;
  const start = nameHash(workload) % size;
  for (let i = 0; i < size; i++) {
    const address = formatIpv4(range.first + ((start + i) % size));
    if (!taken.has(address)) return address;
  }
  return null;
}

export interface AddressRepair {
  /** Claims to write (`at` = the caller's now). */
  claim: AddressClaim[];
  /** Claim keys to delete: losing claims, claims of deleted or non-overlay workloads, out of range. */
  remove: string[];
  /** Overlay workloads that get no address: the range is full. */
  exhausted: string[];
}

/**
 * What a node writes so that every overlay workload has exactly one claim
 * that wins and no other: a claim for each workload without an address
 * (in name order, each proposal avoiding the addresses already taken) and
 * the removal of every claim that does not win. Deterministic: nodes that
 * repair the same converged document at once write the same keys (their
 * `at` may differ; the document keeps one, and either is older than any
 * later claim), so concurrent repairs agree instead of fighting.
 */
export function planAddressRepair(
  claims: readonly (AddressClaim & { key: string })[],
  workloads: ReadonlySet<string>,
  range: ServiceRange,
  now: number,
): AddressRepair {
  const assigned = resolveServiceAddresses(claims, workloads, range);
  const winning = new Set([...assigned].map(([workload, address]) => claimKey(address, workload)));
  const remove = claims.filter((claim) => !winning.has(claim.key)).map((claim) => claim.key);
  const taken = new Set(assigned.values());
  const claim: AddressClaim[] = [];
  const exhausted: string[] = [];
  for (const workload of [...workloads].sort()) {
    if (assigned.has(workload)) continue;
    const address = proposeAddress(workload, taken, range);
    if (address === null) {
      exhausted.push(workload);
      continue;
    }
    taken.add(address);
    claim.push({ address, workload, at: now });
  }
  return { claim, remove: remove.sort(), exhausted };
}

/** Thrown by a writer when the service range has no free address left. */
export class ServiceRangeExhaustedError extends SiloError<'exhausted'> {
  constructor(workload: string, range: ServiceRange) {
    super(
      'exhausted',
      `no free service address for "${workload}": all ${rangeSize(range)} addresses of ${formatIpv4(range.first)}-${formatIpv4(range.last)} are taken (delete a workload or use a larger org CIDR)`,
    );
  }
}
