import { scenarioTests } from './scenario-tests.js';

scenarioTests(['drain', 'flapping-node', 'restore-wait', 'churn', 'service-crash']);
// Placement on SWIM liveness (heartbeats without acks).
scenarioTests(['node-crash-swim']);
// 20 agents on SWIM liveness with the agent's default probe timings: crashes found, a takeover, a return.
scenarioTests(['swim-twenty']);
// An image on one node only, found through the observed document's `images` record.
scenarioTests(['image-one-holder']);
