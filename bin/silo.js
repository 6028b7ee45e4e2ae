#!/usr/bin/env node
// The `silo` command. silo ships as TypeScript and runs through tsx's loader,
// so the installed package needs no build step.
import { register } from 'tsx/esm/api';

register();
await import('../src/util/polyfill.ts');
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv);
