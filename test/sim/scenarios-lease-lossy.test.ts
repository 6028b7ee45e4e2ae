import { leaseScenarioTests } from './scenario-tests.js';

leaseScenarioTests(['lease-lossy-links']);
