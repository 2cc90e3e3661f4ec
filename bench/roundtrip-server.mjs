#!/usr/bin/env node
// The file systems bench/roundtrip.ts measures: each answers "the root is a directory, nothing
// else exists", so that a stat of a missing name measures one request's round trip and nothing else.
// Usage: node bench/roundtrip-server.mjs fuse-native|fuse-ll MOUNTPOINT
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const [kind, mnt] = process.argv.slice(2);
const ENOENT = 2;

if (kind === 'fuse-native') {
  process.env.FUSE_NATIVE_PREBUILD ??= path.join(ROOT, 'native');
  const Fuse = require('fuse-native');
  const now = new Date();
  const root = { mode: 0o40755, size: 0, uid: 0, gid: 0, nlink: 2, mtime: now, atime: now, ctime: now };
  const fuse = new Fuse(mnt, { getattr: (p, cb) => (p === '/' ? cb(0, root) : cb(Fuse.ENOENT)), readdir: (p, cb) => cb(0, []) }, { force: true, fsname: 'rtprobe' });
  fuse.mount((e) => (e ? (console.error(e.message), process.exit(1)) : console.error('ready')));
  process.on('SIGINT', () => fuse.unmount(() => process.exit(0)));
  process.on('SIGTERM', () => fuse.unmount(() => process.exit(0)));
} else if (kind === 'fuse-ll') {
  // mountd's own binding (native/fuse-ll.c through src/fuse/lowlevel.ts, node table included).
  const { LowLevelMount, loadLowLevel } = await import(path.join(ROOT, 'dist/fuse/lowlevel.js'));
  const now = Date.now();
  const root = { mode: 0o40755, size: 0, uid: 0, gid: 0, nlink: 2, mtime: now, atime: now, ctime: now };
  const ops = { getattr: (p, cb) => (p === '/' ? cb(0, root) : cb(-ENOENT)), readdir: (p, cb) => cb(0, ['.', '..']) };
  const log = { info() {}, warn: (m) => console.error(m), error: (m) => console.error(m), debug() {} };
  const m = new LowLevelMount(loadLowLevel(), ops, { mountPoint: mnt, options: 'fsname=rtprobe', directIo: true, log });
  m.mount();
  console.error('ready');
  const stop = () => {
    m.unmount();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
} else {
  console.error('usage: roundtrip-server.mjs fuse-native|fuse-ll MOUNTPOINT');
  process.exit(2);
}
