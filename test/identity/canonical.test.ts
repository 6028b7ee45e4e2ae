import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { CanonicalEncodingError, canonicalBytes, canonicalJson } from '../../src/identity/canonical.js';

describe('canonical encoding', () => {
  test('sorts keys at every level and emits no whitespace', () => {
    const value = { b: 1, a: { d: [3, { z: true, y: null }], c: 'x' } };
    assert.equal(canonicalJson(value), '{"a":{"c":"x","d":[3,{"y":null,"z":true}]},"b":1}');
  });

  test('is independent of key insertion order', () => {
    const one = { nodeId: 'n1', capacity: { cpus: 2, memoryMb: 512 }, labels: { b: '2', a: '1' } };
    const two = { labels: { a: '1', b: '2' }, capacity: { memoryMb: 512, cpus: 2 }, nodeId: 'n1' };
    assert.equal(canonicalJson(one), canonicalJson(two));
  });

  test('pins the exact bytes of a record-shaped value (stability across versions)', () => {
    const record = {
      nodeId: 'node-1',
      peerId: '12D3KooWExample',
      wgPublicKey: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=',
      overlayIp: '10.88.0.2',
      endpoints: ['wg://192.0.2.1:51820', '/ip4/192.0.2.1/tcp/4001'],
      capacity: { cpus: 1.5, memoryMb: 2048, scratchMb: 0 },
      labels: { zone: 'eu-1', é: 'ü' },
      issuedAt: 1700000000000,
    };
    const expected =
      '{"capacity":{"cpus":1.5,"memoryMb":2048,"scratchMb":0},' +
      '"endpoints":["wg://192.0.2.1:51820","/ip4/192.0.2.1/tcp/4001"],"issuedAt":1700000000000,' +
      '"labels":{"zone":"eu-1","é":"ü"},"nodeId":"node-1","overlayIp":"10.88.0.2",' +
      '"peerId":"12D3KooWExample","wgPublicKey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}';
    assert.equal(canonicalJson(record), expected);
    const bytes = canonicalBytes(record);
    assert.equal(Buffer.from(bytes).toString('utf8'), expected);
    // "é" and "ü" are two UTF-8 bytes each.
    assert.equal(bytes.length, expected.length + 2);
  });

  test('orders keys by UTF-16 code units (RFC 8785 section 3.2.3 example)', () => {
    const value = {
      '\u20ac': 'Euro Sign',
      '\r': 'Carriage Return',
      '\ufb33': 'Hebrew Letter Dalet With Dagesh',
      '1': 'One',
      '\ud83d\ude00': 'Emoji: Grinning Face',
      '\u0080': 'Control',
      '\u00f6': 'Latin Small Letter O With Diaeresis',
    };
    const keys = Object.keys(JSON.parse(canonicalJson(value)) as object);
    // JSON.parse preserves text order for non-integer keys; "1" is an integer key, so check the text instead.
    assert.deepEqual(
      keys.filter((k) => k !== '1'),
      ['\r', '\u0080', '\u00f6', '\u20ac', '\ud83d\ude00', '\ufb33'],
    );
    const text = canonicalJson(value);
    const order = ['"\\r"', '"1"', '"\u0080"', '"\u00f6"', '"\u20ac"', '"\ud83d\ude00"', '"\ufb33"'].map(
      (k) => text.indexOf(k),
    );
    assert.deepEqual(
      order,
      [...order].sort((a, b) => a - b),
    );
  });

  test('formats numbers and escapes strings as JSON.stringify does', () => {
    assert.equal(canonicalJson([1e21, 1e-7, 0.1, -0, 255, -1.5]), '[1e+21,1e-7,0.1,0,255,-1.5]');
    assert.equal(canonicalJson('a"b\\c\n\u0001\u2028'), '"a\\"b\\\\c\\n\\u0001\u2028"');
  });

  test('accepts null-prototype objects', () => {
    const value = Object.assign(Object.create(null) as object, { b: 2, a: 1 });
    assert.equal(canonicalJson(value), '{"a":1,"b":2}');
  });

  const rejected: [string, unknown, RegExp][] = [
    ['undefined', undefined, /\$: undefined is not a JSON value/],
    ['undefined property', { a: { b: undefined } }, /\$\.a\.b: undefined/],
    ['NaN', { n: Number.NaN }, /\$\.n: non-finite number NaN/],
    ['Infinity', [Number.POSITIVE_INFINITY], /\$\[0\]: non-finite/],
    ['bigint', { n: 1n }, /bigint is not a JSON value/],
    ['function', { f: () => 1 }, /function is not a JSON value/],
    ['symbol', Symbol('x'), /symbol is not a JSON value/],
    ['Date', { d: new Date(0) }, /\$\.d: Date is not a plain JSON object/],
    ['Map', new Map(), /Map is not a plain JSON object/],
    ['Uint8Array', { b: new Uint8Array(2) }, /Uint8Array is not a plain JSON object/],
    ['class instance', new (class Foo {})(), /Foo is not a plain JSON object/],
    // biome-ignore lint/suspicious/noSparseArray: the hole is the point
    ['sparse array', [1, , 3], /\$\[1\]: sparse array hole/],
    ['lone surrogate', { s: 'a\ud800b' }, /lone UTF-16 surrogate/],
    ['lone surrogate key', { ['\udc00']: 1 }, /key contains a lone/],
    ['symbol key', { [Symbol('k')]: 1 }, /symbol keys/],
  ];
  for (const [name, value, message] of rejected) {
    test(`rejects ${name}`, () => {
      assert.throws(
        () => canonicalJson(value),
        (err: unknown) => {
          assert.ok(err instanceof CanonicalEncodingError);
          assert.match(err.message, message);
          return true;
        },
      );
    });
  }

  test('rejects cycles and excessive depth, but allows shared (acyclic) references', () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    assert.throws(() => canonicalJson(cyclic), /\$\.self: cyclic reference/);
    const shared = { x: 1 };
    assert.equal(canonicalJson({ a: shared, b: shared }), '{"a":{"x":1},"b":{"x":1}}');
    let deep: unknown = 0;
    for (let i = 0; i < 100; i++) deep = [deep];
    assert.throws(() => canonicalJson(deep), /nested deeper than 64/);
  });

  test('property: parse(canonical(x)) round-trips and canonical is a fixed point', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 5 }), (value) => {
        const text = canonicalJson(value);
        const reparsed = JSON.parse(text) as unknown;
        assert.equal(canonicalJson(reparsed), text);
        // Same content as JSON.stringify, modulo key order.
        assert.deepEqual(reparsed, JSON.parse(JSON.stringify(value)));
      }),
      { numRuns: 300 },
    );
  });

  test('property: shuffling keys never changes the encoding', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 2 })), fc.integer(), (dict, seed) => {
        const entries = Object.entries(dict);
        // Deterministic shuffle driven by `seed`.
        const shuffled = entries
          .map((entry, i) => ({ entry, k: Math.sin(seed + i) }))
          .sort((a, b) => a.k - b.k)
          .map(({ entry }) => entry);
        assert.equal(canonicalJson(Object.fromEntries(shuffled)), canonicalJson(dict));
      }),
      { numRuns: 200 },
    );
  });
});
