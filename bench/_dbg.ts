import '../src/util/polyfill.js';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { GossipLayer } from '../src/gossip/index.js';
import { ClusterState } from '../src/state/cluster-state.js';
const logger = pino({ level: 'silent' });
const dbg = pino({ level: 'debug' }, pino.destination(2));
const nodes: GossipLayer[] = [];
for (let i = 0; i < 25; i++) {
  const bootstrap = nodes.length > 0 ? [nodes[0]!.multiaddrs()[0]!] : [];
  const g = await GossipLayer.create({ org: 'b', nodeId: `n${i}`, state: new ClusterState({ logger }), logger, registry: new Registry(), bootstrap, logger: i >= 20 ? dbg : logger, connectionLimits: { inboundPerHostPerSecond: 1000 } });
  await g.start();
  nodes.push(g);
}
for (let k = 0; k < 8; k++) {
  console.log(nodes.map((n) => n.peers().length).join(' '));
  await new Promise((r) => setTimeout(r, 1000));
}
try { await nodes[24]!.dial(nodes[0]!.multiaddrs()[0]!); console.log('ok'); } catch (e) { console.log('dial error', e); }
try { await nodes[24]!.dial(nodes[5]!.multiaddrs()[0]!); console.log('ok to 5'); } catch (e) { console.log('dial error', e); }
await Promise.all(nodes.map((n) => n.stop()));
