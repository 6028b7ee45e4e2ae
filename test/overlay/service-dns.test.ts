import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import * as dnsPacket from 'dns-packet';
import fc from 'fast-check';
import { ServiceDnsServer } from '../../src/overlay/dns-server.js';
import { answerDnsQuery, SERVICE_DNS_TTL, serviceZone } from '../../src/overlay/service-dns.js';
import { serviceResolvConf } from '../../src/overlay/service-netns.js';
import { silentLogger } from '../../src/util/logger.js';

const ZONE = serviceZone('acme');
const ADDRESSES = new Map([['web', '10.42.128.7']]);
const lookup = (name: string) => ADDRESSES.get(name);

function query(name: string, type: dnsPacket.RecordType = 'A', id = 42): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, class: 'IN', name }],
  });
}

function ask(name: string, type: dnsPacket.RecordType = 'A'): dnsPacket.DecodedPacket & { rcode?: string } {
  const response = answerDnsQuery(query(name, type), ZONE, lookup);
  assert.ok(response !== null);
  return dnsPacket.decode(response);
}

describe('service DNS answers', () => {
  test('a service name resolves to its address, authoritatively, with the query id', () => {
    const answer = ask('web.acme.silo');
    assert.equal(answer.type, 'response');
    assert.equal(answer.id, 42);
    assert.equal(answer.flag_aa, true);
    assert.equal(answer.rcode, 'NOERROR');
    assert.deepEqual(
      (answer.answers ?? []).map((a) => [
        a.type,
        a.name,
        'data' in a ? a.data : null,
        'ttl' in a ? a.ttl : null,
      ]),
      [['A', 'web.acme.silo', '10.42.128.7', SERVICE_DNS_TTL]],
    );
    assert.equal(ask('WEB.Acme.Silo.').answers?.length, 1, 'case-insensitive, trailing dot allowed');
  });

  test('unknown service: NXDOMAIN; other types: no data; outside the zone: REFUSED', () => {
    assert.equal(ask('db.acme.silo').rcode, 'NXDOMAIN');
    assert.equal(ask('a.web.acme.silo').rcode, 'NXDOMAIN');
    const aaaa = ask('web.acme.silo', 'AAAA');
    assert.equal(aaaa.rcode, 'NOERROR');
    assert.deepEqual(aaaa.answers, []);
    assert.equal(ask('example.com').rcode, 'REFUSED');
    assert.equal(ask('web.other.silo').rcode, 'REFUSED');
  });

  test('any bytes: dropped or answered, never a throw', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        const response = answerDnsQuery(Buffer.from(bytes), ZONE, lookup);
        if (response !== null) assert.equal(dnsPacket.decode(response).type, 'response');
      }),
      { seed: 20_261_204, numRuns: 2000 },
    );
  });

  test('the UDP server answers on loopback and follows the lookup', async (t) => {
    const addresses = new Map(ADDRESSES);
    const server = new ServiceDnsServer({
      host: '127.0.0.1',
      port: 0,
      zone: ZONE,
      lookup: (name) => addresses.get(name),
      logger: silentLogger(),
    });
    await server.start();
    t.after(() => server.stop());
    const bound = server.address()!;
    const client = createSocket('udp4');
    t.after(() => client.close());
    const resolve = (name: string, id: number) =>
      new Promise<dnsPacket.DecodedPacket & { rcode?: string }>((done, fail) => {
        const timer = setTimeout(() => fail(new Error('no DNS answer')), 2000);
        client.once('message', (message) => {
          clearTimeout(timer);
          done(dnsPacket.decode(message));
        });
        client.send(query(name, 'A', id), bound.port, bound.host);
      });
    const first = await resolve('web.acme.silo', 1);
    assert.equal(first.id, 1);
    assert.equal(
      first.answers?.[0] && 'data' in first.answers[0] ? first.answers[0].data : null,
      '10.42.128.7',
    );
    client.send(Buffer.from([1, 2, 3]), bound.port, bound.host); // garbage: dropped, the server lives on
    addresses.set('db', '10.42.128.9');
    const second = await resolve('db.acme.silo', 2);
    assert.equal(second.id, 2);
    assert.equal(
      second.answers?.[0] && 'data' in second.answers[0] ? second.answers[0].data : null,
      '10.42.128.9',
    );
  });
});

describe('service resolv.conf', () => {
  test('service DNS first, then the host nameservers a namespace can reach; none over a symlinked host file', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'silo-resolv-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const hostFile = join(dir, 'resolv.conf');
    await writeFile(hostFile, '# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.53\noptions edns0\n');
    const make = serviceResolvConf({ nameserver: '10.42.0.1', zone: 'acme.silo' }, silentLogger(), hostFile);
    assert.equal(await make(), 'search acme.silo\nnameserver 10.42.0.1\nnameserver 192.0.2.53\n');
    const link = join(dir, 'link.conf');
    await symlink(hostFile, link);
    const linked = serviceResolvConf({ nameserver: '10.42.0.1', zone: 'acme.silo' }, silentLogger(), link);
    assert.equal(await linked(), undefined);
  });
});
