// biome-ignore-all lint/suspicious/noExplicitAny: temporary debug
import type { SimNetwork } from './sim-network.js';
export function inspect(net: SimNetwork): string {
  const live = (net as any).live as Set<any>;
  const now = performance.now();
  let overdue = 0, pending = 0, noTimer = 0, inbound = 0, held = 0, maxOver = 0;
  for (const pair of live) {
    for (const ch of [pair.forward, pair.backward]) {
      pending += ch.pending;
      if (ch.held) held++;
      if (ch.pending > 0) {
        const at = ch.queue[ch.head].at;
        if (at < now - 100) { overdue++; maxOver = Math.max(maxOver, now - at); }
        if (ch.cancelTimer === undefined) noTimer++;
      }
    }
    inbound += pair.dialerEnd.inbound.pending + pair.listenerEnd.inbound.pending;
  }
  const imm = process.getActiveResourcesInfo().filter((r) => r === 'Immediate').length;
  const tmo = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  return `live ${live.size} pending ${pending} overdueChannels ${overdue} (max ${maxOver.toFixed(0)} ms) noTimer ${noTimer} held ${held} inboundBuffered ${inbound} immediates ${imm} timeouts ${tmo}`;
}
