import { leaseScenarioTests } from './scenario-tests.js';

leaseScenarioTests(['lease-race-slow-path', 'lease-early-crash']);
