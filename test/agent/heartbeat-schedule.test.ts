import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  DEFAULT_SWIM_HEARTBEAT_INTERVAL_MS,
  HEARTBEAT_WARMUP_BEATS,
  heartbeatSchedule,
  SWIM_HEARTBEATS_PER_INTERVAL,
} from '../../src/agent/heartbeat-schedule.js';
import { parseAgentConfig } from '../../src/config/load.js';

describe('heartbeat schedule per liveness source', () => {
  test('acked heartbeats: every heartbeat, with acks, never spread', () => {
    const s = heartbeatSchedule('acked-heartbeats', { heartbeatMs: 1000, swimIntervalMs: 10_000 });
    assert.deepEqual(s, {
      heartbeatMs: 1000,
      heartbeatWarmup: { count: HEARTBEAT_WARMUP_BEATS, intervalMs: 1000 },
      heartbeatAcks: true,
    });
    assert.equal(heartbeatSchedule('local-detector', { heartbeatMs: 500 }).heartbeatAcks, false);
  });

  test('swim: the long interval, spread by cluster size, no acks, a warm-up at the short one', () => {
    const s = heartbeatSchedule('swim', { heartbeatMs: 1000, swimIntervalMs: 20_000 });
    assert.deepEqual(s, {
      heartbeatMs: 20_000,
      heartbeatWarmup: { count: HEARTBEAT_WARMUP_BEATS, intervalMs: 1000 },
      heartbeatsPerInterval: SWIM_HEARTBEATS_PER_INTERVAL,
      heartbeatAcks: false,
    });
    assert.equal(
      heartbeatSchedule('swim', { heartbeatMs: 1000 }).heartbeatMs,
      DEFAULT_SWIM_HEARTBEAT_INTERVAL_MS,
    );
  });

  test("the config's default heartbeat_interval is the schedule's default", () => {
    assert.equal(
      parseAgentConfig({ org: 'o', node: { id: 'n1', data_dir: '/tmp/unused' } }, 'test').membership
        .heartbeat_interval,
      DEFAULT_SWIM_HEARTBEAT_INTERVAL_MS,
    );
  });
});
