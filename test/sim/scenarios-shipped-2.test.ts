import { scenarioTests } from './scenario-tests.js';

scenarioTests(['drain', 'flapping-node', 'restore-wait', 'churn']);
// Placement on SWIM liveness (heartbeats without acks).
scenarioTests(['node-crash-swim']);
// An image on one node only, found through the observed document's `images` record.
scenarioTests(['image-one-holder']);
