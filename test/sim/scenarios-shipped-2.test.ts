import { scenarioTests } from './scenario-tests.js';

scenarioTests(['drain', 'flapping-node', 'churn', 'restore-wait']);
