// The CLI bundle's entry (node_modules/.cache/silo/cli.mjs, built by
// `npm run build:cli`; docs/cli.md "Start-up"): the polyfills first, then main.
import '../util/polyfill.js';

export { main } from './main.js';
