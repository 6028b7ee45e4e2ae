import '../../src/util/polyfill.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LinkModel } from '../../sim/net/link-model.js';
import { Prng } from '../../sim/net/prng.js';
import { SimNetwork } from '../../sim/net/sim-network.js';
import { waitFor } from '../helpers/wait.js';

/** Sends `count` items at once on a fresh channel and resolves with each item's delivery delay in ms. */
function burst(model: LinkModel, count: number, from = 'a', to = 'b'): Promise<number[]> {
  return new Promise((resolve) => {
    const start = performance.now();
    const delays: number[] = [];
    const channel = model.openChannel<number>(from, to, (item) => {
      delays[item] = performance.now() - start;
      if (delays.length === count && !delays.includes(Number.NaN)) resolve(delays);
    });
    for (let i = 0; i < count; i++) channel.send(i);
  });
}

describe('Prng', () => {
  test('the same seed gives the same sequence; another seed a different one', () => {
    const draw = (seed: number | string) => {
      const prng = new Prng(seed);
      return Array.from({ length: 20 }, () => prng.nextUint32());
    };
    assert.deepEqual(draw(42), draw(42));
    assert.deepEqual(draw('run-7'), draw('run-7'));
    assert.notDeepEqual(draw(42), draw(43));
  });

  test('next() stays in [0, 1) and int/pick/shuffle/sample respect their bounds', () => {
    const prng = new Prng(1);
    for (let i = 0; i < 10_000; i++) {
      const x = prng.next();
      assert.ok(x >= 0 && x < 1);
      const n = prng.int(7);
      assert.ok(Number.isInteger(n) && n >= 0 && n < 7);
    }
    const items = ['a', 'b', 'c', 'd', 'e'];
    assert.deepEqual(prng.shuffle(items).sort(), items);
    assert.equal(new Set(prng.sample(items, 3)).size, 3);
    assert.ok(items.includes(prng.pick(items)));
  });

  test('fork(label) depends on the seed and label, not on draws made before', () => {
    const a = new Prng(9);
    const b = new Prng(9);
    b.next();
    b.next();
    assert.equal(a.fork('x').nextUint32(), b.fork('x').nextUint32());
    assert.notEqual(a.fork('x').nextUint32(), a.fork('y').nextUint32());
  });

  test('bad input is rejected with a clear error', () => {
    const prng = new Prng(1);
    assert.throws(() => new Prng(Number.NaN), /finite number/);
    assert.throws(() => prng.int(0), /positive integer/);
    assert.throws(() => prng.chance(1.5), /within \[0, 1\]/);
    assert.throws(() => prng.pick([]), /empty/);
    assert.throws(() => prng.sample([1], 2), /count/);
    assert.throws(() => prng.range(2, 1), /max must be >= min/);
  });
});

describe('LinkModel', () => {
  test('per-link overrides sit on top of the defaults, per direction', () => {
    const model = new LinkModel({ seed: 1, defaultLatencyMs: 10, defaultJitterMs: 2 });
    model.setLink('a', 'b', { latencyMs: 50 });
    model.setDirection('b', 'c', { lossPct: 5 });
    assert.deepEqual(model.params('a', 'b'), { latencyMs: 50, jitterMs: 2, lossPct: 0 });
    assert.deepEqual(model.params('b', 'a'), { latencyMs: 50, jitterMs: 2, lossPct: 0 });
    assert.deepEqual(model.params('b', 'c'), { latencyMs: 10, jitterMs: 2, lossPct: 5 });
    assert.deepEqual(model.params('c', 'b'), { latencyMs: 10, jitterMs: 2, lossPct: 0 });
    model.setDefault({ latencyMs: 20 });
    assert.equal(model.params('c', 'b').latencyMs, 20);
    assert.equal(model.params('a', 'b').latencyMs, 50);
  });

  test('invalid parameters are rejected', () => {
    assert.throws(
      () => new LinkModel({ seed: 1, defaultLatencyMs: -1 }),
      /latencyMs must be a finite number >= 0/,
    );
    const model = new LinkModel({ seed: 1 });
    assert.throws(() => model.setLink('a', 'b', { jitterMs: Number.NaN }), /jitterMs/);
    assert.throws(() => model.setLink('a', 'b', { lossPct: 100 }), /lossPct must be within \[0, 100\)/);
    assert.throws(() => new LinkModel({ seed: 1, retransmitTimeoutMs: 0 }), /retransmitTimeoutMs/);
  });

  test('jitter stays within [latency, latency + jitter) and repeats for the same seed', () => {
    const draws = (seed: number) => {
      const model = new LinkModel({ seed, defaultLatencyMs: 30, defaultJitterMs: 20 });
      return Array.from({ length: 200 }, () => model.sampleDelayMs('a', 'b'));
    };
    const first = draws(7);
    assert.deepEqual(first, draws(7));
    assert.notDeepEqual(first, draws(8));
    for (const d of first) assert.ok(d >= 30 && d < 50, `delay ${d} outside [30, 50)`);
    assert.ok(new Set(first).size > 100, 'jitter should vary');
  });

  test('a SimNetwork draws the same jitter for the same seed', () => {
    const draws = (seed: number) => {
      const net = new SimNetwork({ seed, defaultLatencyMs: 5, defaultJitterMs: 10, defaultLossPct: 5 });
      return Array.from({ length: 100 }, () => net.links.sampleDelayMs('n1', 'n2'));
    };
    assert.deepEqual(draws(2024), draws(2024));
    assert.notDeepEqual(draws(2024), draws(2025));
  });

  test('each direction has its own random stream: draws on one do not shift another', () => {
    const quiet = new LinkModel({ seed: 3, defaultJitterMs: 10 });
    const busy = new LinkModel({ seed: 3, defaultJitterMs: 10 });
    for (let i = 0; i < 50; i++) busy.sampleDelayMs('c', 'd');
    assert.deepEqual(
      Array.from({ length: 10 }, () => quiet.sampleDelayMs('a', 'b')),
      Array.from({ length: 10 }, () => busy.sampleDelayMs('a', 'b')),
    );
  });

  test('loss delays a chunk by the retransmission timeout (with backoff) instead of dropping it', () => {
    const model = new LinkModel({
      seed: 5,
      defaultLatencyMs: 10,
      defaultLossPct: 30,
      retransmitTimeoutMs: 200,
    });
    const delays = Array.from({ length: 2000 }, () => model.sampleDelayMs('a', 'b'));
    const lost = delays.filter((d) => d > 10);
    // Every delay is latency plus a sum of doubling RTOs: 10, 210, 610, 1410, ...
    for (const d of delays)
      assert.ok([10, 210, 610, 1410, 3010, 6210, 12610].includes(d), `unexpected delay ${d}`);
    const share = lost.length / delays.length;
    assert.ok(share > 0.2 && share < 0.4, `about 30% should be delayed, got ${share}`);
  });

  test('a burst of 50 chunks arrives after about one latency, in order, not after 50 latencies', async () => {
    const model = new LinkModel({ seed: 1, defaultLatencyMs: 100 });
    const delays = await burst(model, 50);
    const last = Math.max(...delays);
    assert.ok(Math.min(...delays) >= 99, 'nothing may arrive before the latency');
    // Generous: the flawed per-chunk model would take 50 × 100 ms = 5 s.
    assert.ok(last < 1000, `last chunk after ${last} ms`);
    for (let i = 1; i < delays.length; i++) assert.ok((delays[i] as number) >= (delays[i - 1] as number));
  });

  test('order is kept even when jitter would reorder chunks', async () => {
    const model = new LinkModel({ seed: 11, defaultLatencyMs: 5, defaultJitterMs: 50 });
    const got: number[] = [];
    await new Promise<void>((resolve) => {
      const channel = model.openChannel<number>('a', 'b', (item) => {
        got.push(item);
        if (got.length === 100) resolve();
      });
      for (let i = 0; i < 100; i++) channel.send(i);
    });
    assert.deepEqual(
      got,
      Array.from({ length: 100 }, (_, i) => i),
    );
  });

  test('hold() keeps items until release(); close() drops them', async () => {
    const model = new LinkModel({ seed: 1, defaultLatencyMs: 10 });
    const got: string[] = [];
    const channel = model.openChannel<string>('a', 'b', (item) => got.push(item));
    // Barrier: a probe on another link of the same latency (no jitter), sent after; once it arrived,
    // anything the held or closed channel had delivered would have arrived too.
    const probed: string[] = [];
    const probe = model.openChannel<string>('a', 'c', (item) => probed.push(item));
    const probeArrives = async (label: string) => {
      probe.send(label);
      await waitFor(`probe ${label}`, () => probed.includes(label));
    };
    channel.send('in-flight');
    channel.hold();
    channel.send('sent-while-held');
    await probeArrives('while held');
    assert.deepEqual(got, []);
    assert.equal(channel.pending, 2);
    channel.release();
    await waitFor('the held items', () => got.length === 2);
    assert.deepEqual(got, ['in-flight', 'sent-while-held']);

    channel.send('dropped');
    channel.close();
    channel.send('after-close');
    await probeArrives('after close');
    assert.deepEqual(got, ['in-flight', 'sent-while-held']);
  });
});
