#!/usr/bin/env node
// A pass-through FUSE filesystem with no crypto: the ceiling of the binding for the benchmark.
// Through fuse-native, or with --lowlevel through mountd's own binding (native/fuse-ll.c and
// dist/fuse/lowlevel.js, the node table included).
// Usage: node bench/nullfs.mjs BACKING MOUNTPOINT [--direct-io] [--lowlevel]
import Fuse from 'fuse-native';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { constants as os } from 'node:os';

const [backing, mnt] = process.argv.slice(2);
const directIo = process.argv.includes('--direct-io');
const lowLevel = process.argv.includes('--lowlevel');
if (!backing || !mnt) {
  console.error('usage: nullfs.mjs BACKING MOUNTPOINT [--direct-io] [--lowlevel]');
  process.exit(2);
}
const p = (x) => path.join(backing, x);
const err = (e) => -(os.errno[e?.code] ?? os.errno.EIO);
const done = (cb) => (e, v) => (e ? cb(err(e)) : cb(0, v));

const ops = {
  getattr: (x, cb) => fs.lstat(p(x), done(cb)),
  fgetattr: (x, fd, cb) => fs.fstat(fd, done(cb)),
  readdir: (x, cb) => fs.readdir(p(x), done(cb)),
  open: (x, flags, cb) => fs.open(p(x), flags, done(cb)),
  create: (x, mode, cb) => fs.open(p(x), 'wx+', mode, done(cb)),
  read: (x, fd, buf, len, pos, cb) => fs.read(fd, buf, 0, len, pos, (e, n) => cb(e ? err(e) : n)),
  write: (x, fd, buf, len, pos, cb) => fs.write(fd, buf, 0, len, pos, (e, n) => cb(e ? err(e) : n)),
  release: (x, fd, cb) => fs.close(fd, done(cb)),
  flush: (x, fd, cb) => cb(0),
  fsync: (x, datasync, fd, cb) => fs.fsync(fd, done(cb)),
  truncate: (x, size, cb) => fs.truncate(p(x), size, done(cb)),
  ftruncate: (x, fd, size, cb) => fs.ftruncate(fd, size, done(cb)),
  unlink: (x, cb) => fs.unlink(p(x), done(cb)),
  mkdir: (x, mode, cb) => fs.mkdir(p(x), { mode }, done(cb)),
  rmdir: (x, cb) => fs.rmdir(p(x), done(cb)),
  rename: (a, b, cb) => fs.rename(p(a), p(b), done(cb)),
  chmod: (x, mode, cb) => fs.chmod(p(x), mode, done(cb)),
  chown: (x, uid, gid, cb) => fs.lchown(p(x), uid, gid, done(cb)),
  utimens: (x, atime, mtime, cb) => fs.utimes(p(x), atime, mtime, done(cb)),
  symlink: (target, x, cb) => fs.symlink(target, p(x), done(cb)),
  readlink: (x, cb) => fs.readlink(p(x), done(cb)),
  statfs: (x, cb) => fs.statfs(backing, (e, s) => (e ? cb(err(e)) : cb(0, { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, fsid: 0, flag: 0, namemax: 255 }))),
};

if (lowLevel) {
  const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
  const { LowLevelMount, loadLowLevel } = await import(path.join(ROOT, 'dist/fuse/lowlevel.js'));
  const log = { info() {}, debug() {}, warn: (m) => console.error(m), error: (m) => console.error(m) };
  const llOps = { ...ops, readdir: (x, cb) => fs.readdir(p(x), (e, names) => (e ? cb(err(e)) : cb(0, ['.', '..', ...names]))) };
  const m = new LowLevelMount(loadLowLevel(), llOps, { mountPoint: mnt, options: 'fsname=nullfs,subtype=nullfs,big_writes,max_write=131072', directIo, log });
  m.mount();
  console.error('nullfs: ready');
  const stopLl = () => {
    m.unmount();
    process.exit(0);
  };
  process.on('SIGINT', stopLl);
  process.on('SIGTERM', stopLl);
} else {
const fuse = new Fuse(mnt, ops, { force: true, mkdir: true, fsname: `nullfs,big_writes,max_write=131072${directIo ? ',direct_io' : ''}` });
  fuse.mount((e) => {
    if (e) {
      console.error(`nullfs: mount failed: ${e.message}`);
      process.exit(1);
    }
    console.error('nullfs: ready');
  });
  const stop = () => fuse.unmount(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
