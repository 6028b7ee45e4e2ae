import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type ClusterNode, silo, siloProcess, startSingleAgent } from './helpers.js';

/**
 * `silo events` and `silo top` against a real agent process: the stream,
 * --json lines, --count, the end of the stream; top's frame.
 */
describe('silo events', () => {
  let stop: (() => Promise<void>) | undefined;
  let node: ClusterNode;

  before(async () => {
    ({ node, stop } = await startSingleAgent({ prefix: 'silo-events-', org: 'ev', cidr: '10.62.0.0/24' }));
  });

  after(async () => {
    await stop?.();
  });

  /** Writes to the enrollment document (drain, undrain) until `done` settles: each write is a `state` event. */
  async function writeUntil(done: Promise<unknown>): Promise<void> {
    let settled = false;
    void done.finally(() => {
      settled = true;
    });
    for (let i = 0; !settled && i < 120; i++) {
      await silo([i % 2 === 0 ? 'drain' : 'undrain', 'n1', '--socket', node.socket]);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  test('--json: a line per event, hello first, then the updates; --count ends it with exit 0', async () => {
    const run = siloProcess(['events', '--json', '--count', '3', '--socket', node.socket], {}, 60_000);
    await writeUntil(run);
    const res = await run;
    assert.equal(res.code, 0, res.stderr);
    const lines = res.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.equal(lines.length, 3);
    assert.equal(lines[0]?.event, 'hello');
    assert.equal(lines[0]?.nodeId, 'n1');
    for (const line of lines.slice(1)) {
      assert.equal(line.event, 'state');
      assert.equal(line.doc, 'enrollment');
      assert.equal(line.origin, 'local');
    }
  });

  test('human lines; a bad --count is a usage error', async () => {
    const res = await siloProcess(['events', '--count', '1', '--socket', node.socket], {}, 60_000);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /^\d\d:\d\d:\d\d\.\d{3} hello {5}n1 \(enrollment=[0-9a-f]+ workloads=/);
    const bad = await silo(['events', '--count', '0', '--socket', node.socket]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /expected a whole number of events, at least 1/);
  });

  test('silo top --once: one frame with ownership, nodes and workloads; piped without --once, frames follow', async () => {
    const once = await silo(['top', '--once', '--socket', node.socket]);
    assert.equal(once.code, 0, once.stderr);
    assert.match(once.stdout, /^silo top: n1 \(org ev\) at \d\d:\d\d:\d\d, \d+ connections, documents /);
    assert.match(once.stdout, /^witnesses {4}v1: 1 of 1 alive, quorum 1: ok$/m);
    assert.match(once.stdout, /^NODE +LIVENESS/m);
    assert.match(once.stdout, /^n1\* +alive/m);
    assert.match(once.stdout, /^no workloads$/m);
    // Not a terminal and no --once: frames one after another until killed.
    const piped = siloProcess(['top', '--interval', '0.2', '--socket', node.socket], {}, 8000);
    const res = await piped;
    assert.ok((res.stdout.match(/^silo top: n1/gm) ?? []).length >= 2, res.stdout);
    const bad = await silo(['top', '--interval', '0', '--socket', node.socket]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /expected seconds between 0\.2 and 3600/);
  });

  test('the agent stopping ends the stream with exit 4 and says so', async () => {
    const run = siloProcess(['events', '--socket', node.socket], {}, 60_000);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.equal(await node.agent?.stop(), 0);
    const res = await run;
    assert.equal(res.code, 4, `${res.stdout}\n${res.stderr}`);
    assert.match(res.stderr, /event stream ended: the agent closed it/);
  });
});
