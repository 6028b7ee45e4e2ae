import '../../src/util/polyfill.js';
import { startCluster, stopAll, waitFor, digestsEqual, writeSpec, metricValue } from './helpers.js';
const t0 = Date.now();
const nodes = await startCluster(5);
console.log('started', Date.now() - t0);
const lt = '/silo/testorg/liveness/1';
for (let i = 0; i < 30; i++) {
  console.log(Date.now() - t0, nodes.map((n) => `${n.gossip.peers().length}/${n.gossip.meshPeers(lt).length}/${n.gossip.node.services.pubsub.getSubscribers(lt).length}/${n.gossip.detector.nodesIn('alive').length}`).join(' '));
  await new Promise((r) => setTimeout(r, 200));
}
await stopAll(nodes);
