// Reads of what the page cache holds on the main thread (native/io.c, preadv2 with RWF_NOWAIT),
// with the thread pool for the rest (src/engine/FdFile.ts).
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { rm } from 'node:fs/promises';
import { tempDir } from './helpers/engine.js';
import { FdFile, nativeReadsEnabled } from '../src/engine/FdFile.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const io = createRequire(import.meta.url)('../native/build/io.node') as {
  preadNoWait(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): number;
};

/** Drops the page cache (root only): true when it was dropped. */
async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await tempDir('mountd-io');
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Drops one file's pages from the page cache: GNU dd's iflag=nocache with count=0 asks the
 * kernel (posix_fadvise DONTNEED) for the whole file. No root needed, and the rest of the
 * machine's cache stays (a drop_caches would slow whatever else runs).
 */
function dropFileCache(file: string): void {
  execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
}

test('the native reads are what the tests run (scripts/setup builds native/build/io.node)', (t) => {
  t.true(nativeReadsEnabled());
});

test('preadNoWait reads cached bytes exactly, at an offset into the buffer, and 0 at the end', async (t) => {
  await withTempDir(async (dir) => {
    const f = path.join(dir, 'f');
    const data = randomBytes(300_000);
    writeFileSync(f, data);
    const fd = openSync(f, 'r');
    try {
      const buf = Buffer.alloc(100_010, 0xee);
      t.is(io.preadNoWait(fd, buf, 10, 100_000, 123_456), 100_000);
      t.deepEqual(buf.subarray(10), data.subarray(123_456, 223_456));
      t.deepEqual(buf.subarray(0, 10), Buffer.alloc(10, 0xee));
      t.is(io.preadNoWait(fd, buf, 0, 1000, 299_500), 500, 'a read across the end is short');
      t.is(io.preadNoWait(fd, buf, 0, 1000, 300_000), 0);
      t.throws(() => io.preadNoWait(fd, buf, 100_000, 11, 0), { instanceOf: RangeError });
      t.throws(() => io.preadNoWait(fd, buf, -1, 1, 0), { instanceOf: RangeError });
      t.throws(() => io.preadNoWait(fd, 'x' as unknown as Uint8Array, 0, 1, 0), { instanceOf: TypeError });
      t.is(io.preadNoWait(987_654, buf, 0, 1, 0), -osConstants.errno.EBADF);
    } finally {
      closeSync(fd);
    }
  });
});

test('what the page cache does not hold answers EAGAIN, and FdFile.read reads it through the pool all the same', async (t) => {
  await withTempDir(async (dir) => {
    const f = path.join(dir, 'f');
    const data = randomBytes(8 * 1024 * 1024);
    writeFileSync(f, data);
    const w = openSync(f, 'r+');
    fsyncSync(w);
    closeSync(w);
    dropFileCache(f);
    const fd = openSync(f, 'r');
    try {
      const probe = Buffer.alloc(4096);
      t.is(io.preadNoWait(fd, probe, 0, 4096, 4 * 1024 * 1024), -osConstants.errno.EAGAIN, 'nothing cached: EAGAIN, no wait');
      // Cache the first pages only (and what readahead adds): a long read from 0 is then cut short
      // by the native read and finished by the pool.
      readSync(fd, probe, 0, 4096, 0);
      const cut = io.preadNoWait(fd, Buffer.alloc(3 * 1024 * 1024), 0, 3 * 1024 * 1024, 0);
      t.true(cut > 0 && cut < 3 * 1024 * 1024, `a read from 0 stops where the cache does (${cut} bytes)`);
      const fh = FdFile.open(f, 'r');
      try {
        const buf = Buffer.alloc(data.length);
        const { bytesRead } = await fh.read(buf, 0, 3 * 1024 * 1024, 0);
        t.is(bytesRead, 3 * 1024 * 1024);
        t.deepEqual(buf.subarray(0, bytesRead), data.subarray(0, bytesRead));
        // Past the end: the pool's short read is added to the native one.
        const tail = await fh.read(buf, 0, 1024 * 1024, data.length - 1000);
        t.is(tail.bytesRead, 1000);
        t.deepEqual(buf.subarray(0, 1000), data.subarray(data.length - 1000));
      } finally {
        await fh.close();
      }
    } finally {
      closeSync(fd);
    }
  });
});

test('MOUNTD_NATIVE_IO=0 sends every read through the pool (the built daemon in dist/)', (t) => {
  const probe = `import { nativeReadsEnabled } from './dist/engine/FdFile.js'; console.log(nativeReadsEnabled());`;
  const run = (env: NodeJS.ProcessEnv) => execFileSync(process.execPath, ['--input-type=module', '-e', probe], { cwd: ROOT, env: { ...process.env, ...env } }).toString().trim();
  t.is(run({ MOUNTD_NATIVE_IO: '0' }), 'false');
  t.is(run({ MOUNTD_NATIVE_IO: '' }), 'true');
});
