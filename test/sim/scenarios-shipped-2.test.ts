import { scenarioTests } from './scenario-tests.js';

scenarioTests(['drain', 'flapping-node', 'restore-wait', 'churn']);
