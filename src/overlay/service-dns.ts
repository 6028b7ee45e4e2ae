import * as dnsPacket from 'dns-packet';

/**
 * Answers for service names (docs/services.md, "Service addresses"):
 * `<workload>.<zone>`, zone = `<org>.silo`. Pure: bytes in, bytes out, the
 * address looked up by the caller's function; the wire format is dns-packet's.
 * Authoritative for the zone only: anything else is REFUSED (no recursion),
 * so a service's other lookups must go to another resolver.
 */

/** Seconds a resolver may cache an answer. A service address does not change when the service moves. */
export const SERVICE_DNS_TTL = 30;

const RCODE = { NOERROR: 0, FORMERR: 1, NXDOMAIN: 3, REFUSED: 5 } as const;

export function serviceZone(org: string, suffix = 'silo'): string {
  return `${org}.${suffix}`.toLowerCase();
}

/**
 * The response to one DNS query message, or null when `query` cannot even
 * be decoded (no id to answer to: dropped).
 */
export function answerDnsQuery(
  query: Buffer,
  zone: string,
  lookup: (workload: string) => string | undefined,
): Buffer | null {
  let packet: dnsPacket.DecodedPacket;
  try {
    packet = dnsPacket.decode(query);
  } catch {
    return null;
  }
  const id = packet.id ?? 0;
  const recursionDesired = packet.flag_rd ? dnsPacket.RECURSION_DESIRED : 0;
  const reply = (rcode: number, question: dnsPacket.Question[], answers: dnsPacket.Answer[] = []): Buffer =>
    dnsPacket.encode({
      type: 'response',
      id,
      flags: dnsPacket.AUTHORITATIVE_ANSWER | recursionDesired | rcode,
      questions: question,
      answers,
    });
  const questions = packet.questions ?? [];
  const question = questions[0];
  if (packet.type !== 'query' || questions.length !== 1 || question === undefined) {
    return reply(RCODE.FORMERR, questions.slice(0, 1));
  }
  const name = question.name.toLowerCase().replace(/\.$/, '');
  if (name !== zone && !name.endsWith(`.${zone}`)) return reply(RCODE.REFUSED, [question]);
  const label = name.slice(0, Math.max(0, name.length - zone.length - 1));
  const address = label === '' || label.includes('.') ? undefined : lookup(label);
  if (address === undefined) return reply(name === zone ? RCODE.NOERROR : RCODE.NXDOMAIN, [question]);
  // dns-packet's types omit ANY (255), which it decodes as "ANY".
  const type = String(question.type);
  if (type !== 'A' && type !== 'ANY') return reply(RCODE.NOERROR, [question]);
  return reply(
    RCODE.NOERROR,
    [question],
    [{ type: 'A', class: 'IN', name: question.name, ttl: SERVICE_DNS_TTL, data: address }],
  );
}
