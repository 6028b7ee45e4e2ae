import { scenarioTests } from './scenario-tests.js';

// The scenarios that came before witness leases still hold (node-crash, partitions, drain, ...).
scenarioTests(['node-crash', 'minority-partition', 'majority-partition', 'asymmetric-partition']);
