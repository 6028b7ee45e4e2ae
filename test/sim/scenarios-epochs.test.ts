import { leaseScenarioTests } from './scenario-tests.js';

// Epoch switches under continuous writes, a partition with competing epochs, and a node back two epochs
// late (docs/epochs.md): five seeds, as the lease races, since the switches meet the writes differently each time.
leaseScenarioTests(['epoch-switch']);
