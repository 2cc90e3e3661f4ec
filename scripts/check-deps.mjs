#!/usr/bin/env node
// Checks the import graph of ARCHITECTURE.md: each layer imports only the layers below it.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'src');

/** layer -> the layers it may import (besides itself). */
const ALLOWED = {
  errors: [],
  crypto: ['errors'],
  format: ['errors'],
  store: ['errors'],
  kes: ['errors'],
  kms: ['kes', 'errors'],
  engine: ['store', 'format', 'crypto', 'kms', 'errors'],
  control: ['engine', 'kms', 'errors'],
  fuse: ['engine', 'errors'],
  s3: ['engine', 'kms', 'errors'],
  cli: ['control', 'fuse', 's3', 'engine', 'kms', 'kes', 'store', 'format', 'crypto', 'errors'],
};

function* files(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* files(p);
    else if (p.endsWith('.ts')) yield p;
  }
}

const IMPORT_RE = /(?:^|\s)(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|^\s*import\s+['"]([^'"]+)['"]/gm;
const problems = [];
let checked = 0;
for (const file of files(root)) {
  const layer = relative(root, file).split(sep)[0];
  if (!(layer in ALLOWED)) {
    problems.push(`${relative(root, file)}: folder ${layer} is not a layer of ARCHITECTURE.md`);
    continue;
  }
  const text = readFileSync(file, 'utf8');
  for (const m of text.matchAll(IMPORT_RE)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (!spec.startsWith('.')) continue;
    checked++;
    const target = relative(root, resolve(dirname(file), spec));
    if (target.startsWith('..')) {
      problems.push(`${relative(root, file)}: imports ${spec}, outside src/`);
      continue;
    }
    const to = target.split(sep)[0];
    if (to === layer) continue;
    if (!ALLOWED[layer].includes(to)) problems.push(`${relative(root, file)}: ${layer}/ must not import ${to}/ (${spec})`);
  }
}
if (problems.length > 0) {
  console.error(`import graph: ${problems.length} violation(s)`);
  for (const p of problems) console.error(`  ${p}`);
  process.exit(1);
}
console.log(`import graph: ${checked} imports checked, all point down the layers of ARCHITECTURE.md`);
