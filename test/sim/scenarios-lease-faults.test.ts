import { leaseScenarioTests } from './scenario-tests.js';

leaseScenarioTests(['lease-one-way-cut', 'lease-witness-restart']);
