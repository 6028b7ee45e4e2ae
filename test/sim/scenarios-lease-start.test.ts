import { leaseScenarioTests } from './scenario-tests.js';

leaseScenarioTests(['lease-start-200ms', 'lease-start-500ms']);
