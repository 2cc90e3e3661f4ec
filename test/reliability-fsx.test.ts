// fsx on a real mount: a seeded stream of pwrite, O_APPEND writes, truncates (grow and shrink), preads, mmap
// (ACCESS_COPY) reads, renames, fsyncs and close+reopen, each read checked against an in-memory model.
// FSX_SEED=N reproduces a run; FSX_OPS=N changes its length (scripts/soak runs millions).
import anyTest, { type TestFn } from 'ava';
import * as path from 'node:path';
import { makeFixture } from './helpers/engine.js';
import { runFsx, seedFrom, type FsxResult } from './helpers/fsx.js';
import { HAS_FUSE, sh, startMount, type MountFixture, reportMissingFuse } from './helpers/mount.js';

const test = anyTest as TestFn<{ fx: MountFixture }>;
const fuseTest = HAS_FUSE ? test : test.skip;

const OPS = Number(process.env.FSX_OPS ?? 15_000);
const FILES = Number(process.env.FSX_FILES ?? 2);
const MAX_SIZE = Number(process.env.FSX_MAX_SIZE ?? 1 << 20);
const SEED = seedFrom('FSX_SEED');

reportMissingFuse(test, 'reliability-fsx.test.ts', 'fsx');

test.before(async (t) => {
  if (!HAS_FUSE) return;
  t.context = { fx: await startMount('fsx') };
});

// cleanup() fails the run if a mount is left behind.
test.after.always(async (t) => {
  await t.context.fx?.cleanup();
});

function describe(r: FsxResult): string {
  const f = r.failure;
  if (!f) return 'ok';
  return [`seed ${r.seed}: ${f.what} failed at operation ${f.op}: ${f.detail}`, 'operations before it:', ...f.recent.map((l) => `  ${l}`), r.stderr ?? ''].join('\n');
}

fuseTest(`seeded random operations on ${FILES} files against a model (${OPS} operations each)`, async (t) => {
  const { fx } = t.context;
  t.log(`fsx seed ${SEED} (FSX_SEED=${SEED} reproduces), ${FILES} files x ${OPS} operations, max size ${MAX_SIZE}`);
  await sh(`mkdir ${fx.mnt}/fsx`);
  const started = Date.now();
  const results = await Promise.all(
    Array.from({ length: FILES }, (_, i) => {
      const dir = path.join(fx.mnt, 'fsx', `f${i}`);
      return sh(`mkdir -p ${dir}`).then(() => runFsx({ dir, name: 'file.bin', seed: SEED + i, ops: OPS, maxSize: MAX_SIZE, timeoutMs: Math.max(170_000, OPS * 2) }));
    }),
  );
  const seconds = (Date.now() - started) / 1000;
  const total = results.reduce((n, r) => n + (r.ok ? r.ops : 0), 0);
  const checks = results.reduce((n, r) => n + r.checks, 0);
  const written = results.reduce((n, r) => n + r.bytesWritten, 0);
  const read = results.reduce((n, r) => n + r.bytesRead, 0);
  const counts: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.counts)) counts[k] = (counts[k] ?? 0) + v;
  t.log(`fsx: ${total} operations (${JSON.stringify(counts)}), ${checks} checked reads, ${(written / 2 ** 20).toFixed(1)} MiB written, ${(read / 2 ** 20).toFixed(1)} MiB read and checked in ${seconds.toFixed(1)} s (${Math.round(total / seconds)} ops/s)`);
  for (const r of results) t.true(r.ok, describe(r));
  t.false(/ error /.test(fx.daemon.log()), `the daemon logged errors:\n${fx.daemon.log()}`);
});

// Found by this stream (seed 4, in-process replay, minimised): a shrinking truncate read the
// package at the cut with a sequential read-ahead, which cached packages past the cut; after
// the file grew again and was flushed, reads were served that stale plaintext instead of zeros.
test('regression: a truncate that reads ahead does not leave stale packages past the cut in the cache', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  const h = await e.create('bucket', 'f');
  await e.ftruncate(h, 65707);
  await e.fsync(h);
  await e.write(h, 276423, Buffer.alloc(82701, 0xaa));
  await e.fsync(h);
  await e.ftruncate(h, 131074);
  await e.ftruncate(h, 578102);
  await e.fsync(h);
  const all = await e.read(h, 0, 578102);
  t.is(all.length, 578102);
  t.is(all.findIndex((b) => b !== 0), -1, 'everything past the cut reads as zeros');
  await e.release(h);
});

// Found by this stream (FSX_SEED=898233960, two files; the CI seed did not hit it): the
// attributes an answer carries for libfuse's follow-up getattr (native/fuse-native.c, change 7)
// were taken by another answer on the same path whose signal fuse-native had queued first (a
// flush), and served to a getattr much later: stat showed a size from before two appends. The
// interleaving is the scheduler's: with the bug this failed in 2 of 3 runs, not every run.
fuseTest('regression: the attributes an answer carries go with that answer only (two files, the seed that found it)', async (t) => {
  const { fx } = t.context;
  const seed = 898233960;
  const results = await Promise.all(
    [0, 1].map(async (i) => {
      const dir = path.join(fx.mnt, 'fsx-primed', `f${i}`);
      await sh(`mkdir -p ${dir}`);
      return runFsx({ dir, name: 'file.bin', seed: seed + i, ops: 15_000, maxSize: MAX_SIZE, timeoutMs: 170_000 });
    }),
  );
  for (const r of results) t.true(r.ok, describe(r));
});
