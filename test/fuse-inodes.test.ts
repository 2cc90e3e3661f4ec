// st_ino through the low-level binding (src/fuse/lowlevel.ts) on a real FUSE mount with a tiny
// operations table: the backing inode number when JavaScript can carry it exactly, a number of
// the mount's own when it cannot (above 2^53 neighbours round to one double).
import test from 'ava';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { execFile, execFileSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import type { FuseOperations, FuseStat } from '../src/fuse/binding.js';
import { LowLevelMount, loadLowLevel } from '../src/fuse/lowlevel.js';

const HAS_FUSE = existsSync('/dev/fuse');
if (!HAS_FUSE) console.error('########## /dev/fuse is missing: the FUSE inode test CANNOT RUN ##########');
const fuseTest = HAS_FUSE ? test : test.skip;

fuseTest('st_ino is the backing inode number when exact, else a distinct number of the mount', async (t) => {
  const native = loadLowLevel();
  t.truthy(native, 'native/build/fuse-ll.node is built');
  const now = Date.now();
  const file = (ino: number): FuseStat => ({ mode: 0o100644, uid: 0, gid: 0, size: 0, nlink: 1, ino, atime: now, mtime: now, ctime: now });
  // 2^63 + 14, + 15 and + 16 are one double: what Node's lstat gives for overlayfs xino numbers.
  const files: Record<string, FuseStat> = { '/small': file(1234), '/big1': file(2 ** 63 + 14), '/big2': file(2 ** 63 + 15), '/big3': file(2 ** 63 + 16) };
  const enoent = -os.constants.errno.ENOENT;
  const ops = {
    getattr: (p: string, cb: (err: number, st?: FuseStat) => void) =>
      p === '/' ? cb(0, { ...file(1), mode: 0o40755, nlink: 2 }) : files[p] ? cb(0, files[p]) : cb(enoent),
    readdir: (p: string, cb: (err: number, names?: string[]) => void) => (p === '/' ? cb(0, ['.', '..', ...Object.keys(files).map((x) => x.slice(1))]) : cb(enoent)),
  } as unknown as FuseOperations;
  const mnt = mkdtempSync(path.join(os.tmpdir(), 'mountd-inodes-'));
  const log = { info() {}, debug() {}, warn: (m: string) => t.log(m), error: (m: string) => t.log(m) };
  const m = new LowLevelMount(native!, ops, { mountPoint: mnt, options: 'fsname=inotest,subtype=inotest', directIo: true, log: log as never });
  m.mount();
  try {
    // stat(2) from another process: this one serves the requests on its event loop.
    const inos = JSON.parse(
      await new Promise<string>((resolve, reject) => {
        const script = `const fs=require('fs');console.log(JSON.stringify(['small','big1','big2','big3'].map(n=>fs.statSync(${JSON.stringify(mnt)}+'/'+n,{bigint:true}).ino.toString())))`;
        execFile(process.execPath, ['-e', script], (err, out) => (err ? reject(err) : resolve(out)));
      }),
    ) as string[];
    t.is(inos[0], '1234', 'an exact backing number is the one shown');
    const big = inos.slice(1).map(BigInt);
    t.is(new Set(big.map(String)).size, 3, `files whose numbers round to one double keep distinct numbers: ${big.join(', ')}`);
    for (const b of big) t.true(b >= 2n ** 52n && b < 2n ** 53n, `${b} is in the mount's own range`);
  } finally {
    m.unmount();
    try {
      execFileSync('fusermount', ['-uz', mnt], { stdio: 'ignore' });
    } catch {
      // unmounted already
    }
    rmSync(mnt, { recursive: true, force: true });
  }
  t.false(readdirSync(os.tmpdir()).includes(path.basename(mnt)));
});
