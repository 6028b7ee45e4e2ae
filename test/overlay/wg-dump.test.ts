import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  formatWireguardEndpoint,
  libp2pAddressesOf,
  parseWireguardEndpoint,
  wireguardEndpointOf,
} from '../../src/overlay/endpoints.js';
import { CommandError, ExecaRunner, withNetns } from '../../src/overlay/exec.js';
import { checkInterfaceName } from '../../src/overlay/ip.js';
import { parseWgDump, WgDumpParseError } from '../../src/overlay/wg.js';

// Captured from `wg show sampwg0 dump` (wireguard-tools v1.0.20210914, wireguard-go 0.0.20220316).
const REAL_SAMPLE = [
  '+FxE4bNk5neZko9DbSU9OheOjQk1cLbVk//GW3KxDFU=\tLcIltPqNzn44FKtW5OAkJfEvCZjPZnnxNqEO3Lk5XAc=\t51999\t0x10',
  'VWHR7MW3/3VPcXv0qrJZ296oLDYhbpdM99DuGwi8o0E=\t(none)\t(none)\t10.231.100.3/32\t0\t0\t0\toff',
  'cuprkYKf5y/Z8YWTjTLzUGMjiTmF/7xl2uxMcG4RxRA=\t(none)\t10.231.9.2:51820\t10.231.100.2/32,10.231.101.0/24\t0\t0\t0\t25',
  '',
].join('\n');

const KEY = 'cuprkYKf5y/Z8YWTjTLzUGMjiTmF/7xl2uxMcG4RxRA=';

describe('wg show dump parser', () => {
  test('parses a real sample', () => {
    const dump = parseWgDump(REAL_SAMPLE);
    assert.deepEqual(dump.interface, {
      privateKey: '+FxE4bNk5neZko9DbSU9OheOjQk1cLbVk//GW3KxDFU=',
      publicKey: 'LcIltPqNzn44FKtW5OAkJfEvCZjPZnnxNqEO3Lk5XAc=',
      listenPort: 51999,
      fwmark: 0x10,
    });
    assert.deepEqual(dump.peers, [
      {
        publicKey: 'VWHR7MW3/3VPcXv0qrJZ296oLDYhbpdM99DuGwi8o0E=',
        presharedKey: null,
        endpoint: null,
        allowedIps: ['10.231.100.3/32'],
        latestHandshake: 0,
        rxBytes: 0,
        txBytes: 0,
        persistentKeepalive: null,
      },
      {
        publicKey: KEY,
        presharedKey: null,
        endpoint: '10.231.9.2:51820',
        allowedIps: ['10.231.100.2/32', '10.231.101.0/24'],
        latestHandshake: 0,
        rxBytes: 0,
        txBytes: 0,
        persistentKeepalive: 25,
      },
    ]);
  });

  test('parses an unconfigured interface, IPv6 endpoints, traffic counters and a preshared key', () => {
    const text = [
      '(none)\t(none)\t0\toff',
      `${KEY}\t${KEY}\t[fd00::1]:51820\t(none)\t1700000000\t123456789012\t42\toff`,
    ].join('\n');
    const dump = parseWgDump(text);
    assert.deepEqual(dump.interface, { privateKey: null, publicKey: null, listenPort: 0, fwmark: null });
    const [peer] = dump.peers;
    assert.equal(peer?.endpoint, '[fd00::1]:51820');
    assert.equal(peer?.presharedKey, KEY);
    assert.deepEqual(peer?.allowedIps, []);
    assert.equal(peer?.latestHandshake, 1_700_000_000);
    assert.equal(peer?.rxBytes, 123_456_789_012);
  });

  const garbage: [string, string, RegExp][] = [
    ['empty output', '', /line 1: empty output/],
    ['an error message', 'Unable to access interface: No such device\n', /line 1: interface line has 1/],
    ['a short interface line', 'a\tb\tc\n', /line 1: interface line has 3 tab-separated fields, expected 4/],
    ['a bad key', 'notakey\t(none)\t0\toff', /line 1: private key "notakey" is not a WireGuard key/],
    ['a bad port', '(none)\t(none)\t70000\toff', /listen port 70000 is out of range/],
    ['a negative port', '(none)\t(none)\t-1\toff', /listen port "-1" is not a non-negative integer/],
    ['a bad fwmark', '(none)\t(none)\t1\t16', /fwmark "16"/],
    ['a short peer line', `(none)\t(none)\t1\toff\n${KEY}\t(none)`, /line 2: peer line has 2/],
    [
      'a bad endpoint',
      `(none)\t(none)\t1\toff\n${KEY}\t(none)\tsomewhere\t(none)\t0\t0\t0\toff`,
      /line 2: endpoint "somewhere"/,
    ],
    [
      'a bad allowed IP',
      `(none)\t(none)\t1\toff\n${KEY}\t(none)\t(none)\t10.0.0.1\t0\t0\t0\toff`,
      /allowed IP "10\.0\.0\.1"/,
    ],
    [
      'a bad counter',
      `(none)\t(none)\t1\toff\n${KEY}\t(none)\t(none)\t(none)\t0\tlots\t0\toff`,
      /rx bytes "lots"/,
    ],
    [
      'a duplicate peer',
      `(none)\t(none)\t1\toff\n${KEY}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n${KEY}\t(none)\t(none)\t(none)\t0\t0\t0\toff`,
      /line 3: duplicate peer/,
    ],
    [
      'a peer without key',
      `(none)\t(none)\t1\toff\n(none)\t(none)\t(none)\t(none)\t0\t0\t0\toff`,
      /peer without/,
    ],
    ['`wg show all dump` output', `wg0\t(none)\t(none)\t1\toff`, /interface line has 5/],
  ];
  for (const [name, text, message] of garbage) {
    test(`rejects ${name}`, () => {
      assert.throws(
        () => parseWgDump(text),
        (err: unknown) => err instanceof WgDumpParseError && message.test(err.message),
      );
    });
  }
});

describe('record endpoints', () => {
  test('the first valid wg:// entry is the WireGuard endpoint; "/" entries are libp2p addresses', () => {
    const record = {
      endpoints: [
        '/ip4/192.0.2.1/tcp/4001',
        'wg://bad',
        'wg://192.0.2.1:51820',
        'wg://192.0.2.2:51821',
        '/dns4/n1.example/tcp/4001',
        'http://x',
      ],
    };
    assert.deepEqual(wireguardEndpointOf(record), {
      host: '192.0.2.1',
      port: 51820,
      hostPort: '192.0.2.1:51820',
    });
    assert.deepEqual(libp2pAddressesOf(record), ['/ip4/192.0.2.1/tcp/4001', '/dns4/n1.example/tcp/4001']);
    assert.equal(wireguardEndpointOf({ endpoints: ['/ip4/192.0.2.1/tcp/4001'] }), null);
  });

  test('host names and IPv6 endpoints', () => {
    assert.equal(
      parseWireguardEndpoint('wg://node-1.example.org:51820')?.hostPort,
      'node-1.example.org:51820',
    );
    assert.equal(parseWireguardEndpoint('wg://[fd00::1]:51820')?.hostPort, '[fd00::1]:51820');
    assert.equal(formatWireguardEndpoint('fd00::1', 51820), 'wg://[fd00::1]:51820');
    assert.equal(formatWireguardEndpoint('10.0.0.1', 1), 'wg://10.0.0.1:1');
    for (const bad of ['wg://', 'wg://host', 'wg://host:0', 'wg://host:65536', 'wg://a b:1', 'wg://h:1/x']) {
      assert.equal(parseWireguardEndpoint(bad), null, bad);
    }
    assert.throws(() => formatWireguardEndpoint('x y', 1), /invalid WireGuard endpoint/);
  });
});

describe('command runner', () => {
  const runner = new ExecaRunner();

  test('errors carry argv, exit code and stderr', async () => {
    await assert.rejects(
      runner.run(['sh', '-c', 'echo out; echo "it broke" >&2; exit 3']),
      (err: unknown) => {
        assert.ok(err instanceof CommandError);
        assert.deepEqual(err.argv, ['sh', '-c', 'echo out; echo "it broke" >&2; exit 3']);
        assert.equal(err.exitCode, 3);
        assert.equal(err.stderr, 'it broke');
        assert.match(err.message, /exited with code 3: it broke/);
        return true;
      },
    );
  });

  test('a missing command is a CommandError without exit code', async () => {
    await assert.rejects(runner.run(['silo-no-such-command-xyz']), (err: unknown) => {
      assert.ok(err instanceof CommandError);
      assert.equal(err.exitCode, undefined);
      assert.match(err.message, /command not found/);
      return true;
    });
  });

  test('stdin input and stdout', async () => {
    assert.equal((await runner.run(['cat'], { input: 'hello\n' })).stdout, 'hello');
  });

  test('namespaced commands run through ip netns exec; names are validated', () => {
    assert.deepEqual(withNetns(['wg', 'show'], 'ns-1'), ['ip', 'netns', 'exec', 'ns-1', 'wg', 'show']);
    assert.deepEqual(withNetns(['wg'], undefined), ['wg']);
    assert.throws(() => withNetns(['wg'], 'bad ns; rm -rf /'), /invalid network namespace/);
  });

  test('interface names are checked', () => {
    assert.equal(checkInterfaceName('silo-n1'), 'silo-n1');
    for (const bad of ['', 'a'.repeat(16), 'a b', 'a/b', '..']) {
      assert.throws(() => checkInterfaceName(bad), /invalid interface name/, bad);
    }
  });
});
