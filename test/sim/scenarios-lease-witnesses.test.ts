import { leaseScenarioTests } from './scenario-tests.js';

leaseScenarioTests(['lease-witnesses-split', 'lease-witness-change']);
