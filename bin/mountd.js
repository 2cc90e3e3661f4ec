#!/usr/bin/env node
// Runs the compiled mountd (npm ci builds dist/ through the prepare script; or run: npm run build).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = new URL('../dist/cli/mountd.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write('mountd: dist/ is missing; run "npm run build" (or scripts/start) first\n');
  process.exit(1);
}
await import(entry.href);
