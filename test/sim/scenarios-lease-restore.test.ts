import { leaseScenarioTests } from './scenario-tests.js';

// A witness restarted on an older copy of its data directory (rule W6).
leaseScenarioTests(['lease-restore-old-copy']);
