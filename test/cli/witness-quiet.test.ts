import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type ClusterNode, silo, startAgentProcess, startSingleAgent, waitFor } from './helpers.js';

/**
 * Rule W6 (docs/placement.md) with a real agent process: a witness that
 * starts on a store that existed grants nothing for one maximal lease, and
 * says so; a witness on a new store grants at once.
 */
describe('witness quiet period after a restart', () => {
  let stop: (() => Promise<void>) | undefined;
  let node: ClusterNode;

  interface StatusJson {
    ownership: { witnessQuietMs: number | null };
  }

  async function status(): Promise<{ text: string; json: StatusJson }> {
    const text = await silo(['status', '--socket', node.socket]);
    assert.equal(text.code, 0, text.stderr);
    const json = await silo(['status', '--json', '--socket', node.socket]);
    return { text: text.stdout, json: JSON.parse(json.stdout) as StatusJson };
  }

  before(async () => {
    ({ node, stop } = await startSingleAgent({
      prefix: 'silo-quiet-',
      org: 'wq',
      cidr: '10.61.0.0/24',
      // Lease bound 4 × 1 s + 2 s + 2 s = 8 s: the quiet period after a restart.
      config: { services: { fence_after: '1s', max_stop_timeout: '2s' } },
    }));
  });

  after(async () => {
    await stop?.();
  });

  test('a new store: no quiet period', async () => {
    const { text, json } = await status();
    assert.equal(json.ownership.witnessQuietMs, 0);
    assert.doesNotMatch(text, /^witness {6}quiet/m);
  });

  test('a restart on the same store: quiet for one maximal lease, shown by status; then it grants again', async () => {
    assert.equal(await node.agent?.stop(), 0);
    node.agent = await startAgentProcess(node.config, node.socket);
    const { text, json } = await status();
    const quietMs = json.ownership.witnessQuietMs ?? 0;
    assert.ok(quietMs > 0 && quietMs <= 8100, `quiet ${quietMs} ms`);
    assert.match(
      text,
      /^witness {6}quiet \d+ s more: restarted on an existing store, it grants no lease until every lease it may have granted before has ended$/m,
    );
    await waitFor(
      'the quiet period ends',
      async () => ((await status()).json.ownership.witnessQuietMs === 0 ? true : null),
      30_000,
    );
    assert.doesNotMatch((await status()).text, /^witness {6}quiet/m);
  });
});
