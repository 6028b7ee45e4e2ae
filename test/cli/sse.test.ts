import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describeEvent } from '../../src/cli/commands/events.js';
import { SseReader } from '../../src/cli/sse.js';

test('SSE: events split across chunks, keep-alive comments, CRLF, non-JSON data and unknown fields', () => {
  const reader = new SseReader();
  assert.deepEqual(reader.push('event: hello\ndata: {"nodeId":'), []);
  assert.deepEqual(reader.push('"n1"}\n\n: keep-alive\n\n'), [{ event: 'hello', data: { nodeId: 'n1' } }]);
  assert.deepEqual(reader.push('event: state\r\nid: 7\r\ndata: {"doc":"workloads"}\r\n\r\n'), [
    { event: 'state', data: { doc: 'workloads' } },
  ]);
  assert.deepEqual(reader.push('data: not json\n\nevent: empty\n\n'), [
    { event: 'message', data: null, raw: 'not json' },
  ]);
});

test('SSE: a block that never ends is not buffered without bound', () => {
  const reader = new SseReader();
  reader.push(`data: ${'x'.repeat(1 << 20)}`);
  assert.deepEqual(reader.push('\n\nevent: state\ndata: {"doc":"observed"}\n\n'), [
    { event: 'state', data: { doc: 'observed' } },
  ]);
});

test('events: one human line per kind', () => {
  const at = Date.UTC(2026, 11, 4, 10, 0, 0, 123);
  assert.equal(
    describeEvent({ event: 'hello', data: { nodeId: 'n1', digests: { enrollment: 'ab12' }, at } }),
    '10:00:00.123 hello     n1 (enrollment=ab12)',
  );
  assert.equal(
    describeEvent({ event: 'state', data: { doc: 'workloads', digest: 'cd34', origin: 'remote', at } }),
    '10:00:00.123 state     workloads now cd34 (remote)',
  );
  assert.equal(
    describeEvent({
      event: 'liveness',
      data: { nodeId: 'n2', state: 'alive', previous: 'dead', rejoined: true, at },
    }),
    '10:00:00.123 liveness  n2 alive (was dead, restarted)',
  );
  assert.match(describeEvent({ event: 'other', data: null, raw: 'x' }), / other {5}x$/);
});
