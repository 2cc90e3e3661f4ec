// kill -9 of a real mountd (mount + S3) in the middle of a streaming write, a multipart Complete, a directory rename of
// 1,000 files and a key rotation; restart on the same data directory and mount point; nothing committed is lost.
//
// The contract these tests hold the daemon to (README, "Crashes"):
// - A file closed (close(2) returned), fsynced (fsync(2) returned) or PUT (200 received) before the
//   kill is intact after the restart, through both doors.
// - A file being written at the kill that was not fsynced since its last change may have lost the
//   writes still buffered in the daemon (up to 16 MiB per file) and its tail may be torn: reading
//   the torn part fails (EIO at the mount, an error or a cut-off body at S3). What can be read
//   is the right plaintext; never wrong bytes. Its fsynced prefix stays readable.
// - An S3 PUT or CompleteMultipartUpload cut by the kill leaves the old object whole (or the new
//   one whole, if the rename into place happened); the upload can be completed again.
// - A rename cut by the kill is finished (or not started) at the next start: the tree is wholly
//   at one name, every file readable, the journal empty.
// - A rotation cut by the kill leaves every file readable under one key or the other; running it
//   again finishes it.
// - The daemon's temp directory is empty after a restart.
import anyTest, { type TestFn } from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { watch } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { getAttributeSync } from '@napi-rs/xattr';
import { KEY_RECORD_XATTR, decodeRecord } from '../src/format/index.js';
import { comparePrefix, hashOnMount, runPython, seedFrom, sha256hex, walkS3 } from './helpers/fsx.js';
import { HAS_FUSE, mountctl, sh, startMount, type MountFixture, reportMissingFuse } from './helpers/mount.js';
import { s3request } from './helpers/s3.js';

interface Ctx {
  fx: MountFixture;
  /** bucket/key -> SHA-256 of everything committed so far. */
  committed: Map<string, string>;
}
/** Figures for the README (module-level: ava gives each test a shallow copy of the context). */
const figures = { crashes: 0, bytesLost: 0, objectsWalked: 0, integrityErrors: 0 };
const test = anyTest as TestFn<Ctx>;
const fuseTest = HAS_FUSE ? test.serial : test.serial.skip;
const MiB = 1024 * 1024;
const SEED = seedFrom('CRASH_SEED');
let rngState = SEED;
/** A seeded number in [0, n). */
const rand = (n: number) => ((rngState = (rngState * 1103515245 + 12345) % 2 ** 31), rngState % n);

reportMissingFuse(test, 'reliability-crash.test.ts', 'crash tests');

test.before(async (t) => {
  if (!HAS_FUSE) return;
  const fx = await startMount('crash', { s3: true });
  t.context = { fx, committed: new Map() };
  for (const b of ['crash', 'many']) t.is((await s3request(fx.daemon.s3Port!, { method: 'PUT', path: `/${b}` })).status, 200);
});

test.after.always(async (t) => {
  const { fx } = t.context;
  if (!fx) return;
  t.log(`crash seed ${SEED} (CRASH_SEED reproduces the timings), ${figures.crashes} crashes survived, ${figures.objectsWalked} objects walked through S3 after restarts, ${figures.integrityErrors} integrity errors, ${figures.bytesLost} un-fsynced bytes lost at the tail of files being written`);
  await fx.cleanup(); // fails the run if a mount is left behind
});

const port = (t: { context: Ctx }) => t.context.fx.daemon.s3Port!;
const enc = (key: string) => key.split('/').map(encodeURIComponent).join('/');

async function put(t: { context: Ctx }, bucket: string, key: string, body: Buffer): Promise<void> {
  const r = await s3request(port(t), { method: 'PUT', path: `/${bucket}/${enc(key)}`, body });
  if (r.status !== 200) throw new Error(`PUT ${bucket}/${key}: ${r.status} ${r.text}`);
  t.context.committed.set(`${bucket}/${key}`, sha256hex(body));
}

async function putMany(t: { context: Ctx }, bucket: string, keys: string[], size: () => number, concurrency = 16): Promise<void> {
  const todo = [...keys];
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let k = todo.shift(); k !== undefined; k = todo.shift()) await put(t, bucket, k, randomBytes(size()));
    }),
  );
}

/** Polls `probe` every few ms until it returns true (or the time is up); returns whether it did. */
async function until(probe: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 5): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await probe()) return true;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return false;
}

async function crashAndRestart(t: import('ava').ExecutionContext<Ctx>, what: string): Promise<void> {
  const { fx } = t.context;
  const log = fx.daemon.log();
  await fx.daemon.kill();
  figures.crashes++;
  await fx.restart();
  t.log(`killed -9 during ${what}; restarted (${fx.daemon.log().match(/removed \d+ temp file\(s\)|finished an interrupted rename[^\n]*/g)?.join('; ') ?? 'nothing to recover'})`);
  t.deepEqual(unexpectedErrors(log), [], 'no error logged before the kill but for the files in flight');
}

/** Files a crash may have torn (reads of them log integrity errors); removed by the test that made them. */
const inFlight = new Set<string>();

function unexpectedErrors(log: string): string[] {
  return log.split('\n').filter((l) => / mountd error /.test(l) && ![...inFlight].some((n) => l.includes(n)));
}

/** After every restart: empty journal and temp dir, and every committed object intact through S3 and the mount. */
async function checkCommitted(t: import('ava').ExecutionContext<Ctx>, skip: Set<string> = new Set()): Promise<void> {
  const { fx, committed } = t.context;
  const internal = path.join(fx.dataDir, '.mountd');
  t.deepEqual(await fsp.readdir(path.join(internal, 'journal')), [], 'the rename journal is empty after the restart');
  t.deepEqual(await fsp.readdir(path.join(internal, 'tmp')), [], '.mountd/tmp is clean after the restart');
  const walk = await walkS3(port(t), ['crash', 'many']);
  const bad: string[] = [];
  for (const [name, err] of walk.errors) if (!skip.has(name)) bad.push(`${name}: ${err}`);
  figures.objectsWalked += walk.objects;
  figures.integrityErrors += bad.length;
  t.deepEqual(bad, [], 'no object is unreadable through S3');
  const wrong: string[] = [];
  for (const [name, sha] of committed) if (walk.hashes.get(name) !== sha && !skip.has(name)) wrong.push(`${name}: S3 ${walk.hashes.get(name) ?? walk.errors.get(name) ?? 'missing'}`);
  const onMount = await hashOnMount(fx.mnt, [...committed.keys()]);
  for (const [name, sha] of committed) if (onMount[name] !== sha && !skip.has(name)) wrong.push(`${name}: mount ${onMount[name]}`);
  t.deepEqual(wrong.slice(0, 20), [], `committed objects intact (${committed.size} checked through both doors, ${walk.objects} walked through S3)`);
  t.deepEqual(unexpectedErrors(fx.daemon.log()), [], 'no error logged but for the files in flight');
  t.log(`${committed.size} committed objects intact through S3 and the mount; ${walk.objects} objects walked, ${walk.errors.size - [...walk.errors.keys()].filter((k) => skip.has(k)).length} integrity errors`);
}

fuseTest('kill -9 during a 200 MiB streaming write (and an fsyncing writer): committed files intact, the writes in flight torn at most at their tail', async (t) => {
  const { fx } = t.context;
  // Committed before: S3 PUTs and files written and closed through the mount.
  for (let i = 0; i < 10; i++) await put(t, 'crash', `before/s3-${i}.bin`, randomBytes([0, 1, 65535, 65536, 65537, 300_000, 2 * MiB + 3][i % 7]!));
  const local = path.join(fx.root, 'local');
  await fsp.mkdir(local, { recursive: true });
  for (let i = 0; i < 5; i++) {
    const body = randomBytes(100_000 * i + 17);
    await fsp.writeFile(path.join(local, `m${i}`), body);
    await sh(`cp ${local}/m${i} ${fx.mnt}/crash/before/mount-${i}.bin`);
    t.context.committed.set(`crash/before/mount-${i}.bin`, sha256hex(body));
  }
  const src = path.join(fx.root, 'src-200m.bin');
  await sh(`head -c ${200 * MiB} /dev/urandom > ${src}`);

  // Two streams of 1 MiB writes (as dd bs=1M): 200 MiB with no fsync, and 64 MiB with an fsync
  // every 4 MiB. Each says how far its writes were acknowledged and synced.
  const writerPy = String.raw`
import os, sys
src, dst, limit, every = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
with open(src, 'rb') as s:
    n = 0
    while n < limit:
        c = s.read(1024 * 1024)
        os.write(fd, c)
        n += len(c)
        print('acked', n, flush=True)
        if every and n % every == 0:
            os.fsync(fd)
            print('synced', n, flush=True)
os.close(fd)
`;
  const stream = (file: string, limit: number, every: number) => {
    const child = spawn('python3', ['-u', '-c', writerPy, src, `${fx.mnt}/crash/${file}`, String(limit), String(every)], { stdio: ['ignore', 'pipe', 'ignore'] });
    const state = { acked: 0, synced: 0, done: new Promise((r) => child.once('close', r)) };
    child.stdout.on('data', (d: Buffer) => {
      for (const m of d.toString().matchAll(/(acked|synced) (\d+)/g)) state[m[1] as 'acked' | 'synced'] = Math.max(state[m[1] as 'acked' | 'synced'], Number(m[2]));
    });
    return state;
  };
  const streaming = stream('big.bin', 200 * MiB, 0);
  const syncing = stream('synced.bin', 64 * MiB, 4 * MiB);
  const bigBacking = path.join(fx.dataDir, 'crash', 'big.bin');
  inFlight.add('crash/big.bin').add('crash/synced.bin');
  const killAt = (40 + rand(100)) * MiB;
  const reached = await until(async () => ((await fsp.stat(bigBacking).catch(() => null))?.size ?? 0) >= killAt && syncing.synced >= 8 * MiB, 60_000, 2);
  t.true(reached, 'the writes got going');
  const syncedAtKill = syncing.synced;
  await crashAndRestart(t, `a streaming write at ${Math.round(killAt / MiB)} MiB on disk and an fsyncing writer at ${syncedAtKill / MiB} MiB synced`);
  await Promise.all([streaming.done, syncing.done]);
  const acked = streaming.acked;

  // The fsynced prefix of the fsyncing writer is intact.
  const s = await comparePrefix(`${fx.mnt}/crash/synced.bin`, src, syncedAtKill);
  t.is(s.mismatchAt, null, 'never wrong plaintext');
  t.is(s.readable, syncedAtKill, `the fsynced ${syncedAtKill} bytes read back (errno ${s.errno})`);
  // The streaming file: what reads is the source's prefix; the rest may be lost or torn (EIO), never wrong.
  const big = await comparePrefix(`${fx.mnt}/crash/big.bin`, src);
  t.is(big.mismatchAt, null, 'never wrong plaintext in the torn file');
  t.true(big.errno === null || big.errno === 5, `a torn tail reads as EIO, got errno ${big.errno}`);
  figures.bytesLost += Math.max(0, acked - big.readable);
  t.log(`${acked} bytes of the streaming write were acknowledged when the daemon died; ${big.readable} read back intact (size ${big.size}, tail ${big.errno === 5 ? 'torn: EIO' : 'clean'}); fsyncing writer: ${s.readable} of ${syncedAtKill} synced bytes intact`);
  // The files in flight are the only ones allowed to fail a whole read; then they are removed.
  await checkCommitted(t, inFlight);
  await sh(`rm -f ${fx.mnt}/crash/big.bin ${fx.mnt}/crash/synced.bin ${src}`);
});

fuseTest('kill -9 during CompleteMultipartUpload: the old object stays whole (or the new one is whole); Complete works again', async (t) => {
  const { fx } = t.context;
  const key = 'mp/object.bin';
  const old = randomBytes(3 * MiB + 5);
  await put(t, 'crash', key, old);
  const p = `/crash/${key}`;
  const init = await s3request(port(t), { method: 'POST', path: p, query: { uploads: '' } });
  t.is(init.status, 200, init.text);
  const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(init.text)![1]!;
  const parts: Buffer[] = [];
  const etags: string[] = [];
  for (let n = 1; n <= 3; n++) {
    const body = randomBytes(32 * MiB + n);
    parts.push(body);
    const r = await s3request(port(t), { method: 'PUT', path: p, query: { partNumber: String(n), uploadId }, body });
    t.is(r.status, 200, r.text);
    etags.push(String(r.headers.etag));
  }
  const completeXml = `<CompleteMultipartUpload>${etags.map((e, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${e}</ETag></Part>`).join('')}</CompleteMultipartUpload>`;
  const whole = Buffer.concat(parts);
  const tmpDir = path.join(fx.dataDir, '.mountd', 'tmp');
  const killAt = (5 + rand(80)) * MiB;
  const complete = s3request(port(t), { method: 'POST', path: p, query: { uploadId }, body: completeXml }).catch((err: Error) => err);
  const reached = await until(async () => {
    for (const n of await fsp.readdir(tmpDir).catch(() => [] as string[])) {
      if (((await fsp.stat(path.join(tmpDir, n)).catch(() => null))?.size ?? 0) >= killAt) return true;
    }
    return false;
  }, 30_000, 2);
  await crashAndRestart(t, `CompleteMultipartUpload with ${Math.round(killAt / MiB)} MiB of the new object in the temp file (reached: ${reached})`);
  const answer = await complete;
  t.log(`the Complete request ended with: ${answer instanceof Error ? answer.message : `${answer.status}`}`);
  const after = await s3request(port(t), { method: 'GET', path: p });
  t.is(after.status, 200);
  const sha = sha256hex(after.body);
  t.true(sha === sha256hex(old) || sha === sha256hex(whole), 'the old object whole, or the new one whole; never a mix or a part');
  const again = await s3request(port(t), { method: 'POST', path: p, query: { uploadId }, body: completeXml });
  if (sha === sha256hex(old)) {
    t.is(again.status, 200, `the upload survived the crash and completes: ${again.text}`);
  } else {
    t.true(again.status === 200 || again.status === 404, `completed before the kill: the upload is gone or completes again (${again.status})`);
  }
  t.is(sha256hex((await s3request(port(t), { method: 'GET', path: p })).body), sha256hex(whole), 'the new object after the second Complete');
  t.context.committed.set(`crash/${key}`, sha256hex(whole));
  await checkCommitted(t);
});

/** Where the 1,000 files are: the backing directory of each name and how many files each holds. */
async function countBelow(dir: string): Promise<number> {
  const out = await sh(`find ${JSON.stringify(dir)} -type f 2>/dev/null | wc -l || true`);
  return Number(out.trim());
}

fuseTest('kill -9 during a directory rename of 1,000 files through the mount: wholly at one name after the restart, every file readable', async (t) => {
  const { fx } = t.context;
  const keys = Array.from({ length: 1000 }, (_, i) => `sub${i % 7}/file-${String(i).padStart(4, '0')}.txt`);
  await putMany(t, 'crash', keys.map((k) => `tree-a/${k}`), () => 50 + rand(3000));
  const names = ['tree-a', 'tree-b'];
  let at = 0;
  // Round 1: killed as soon as the intent is in the journal (the move and the re-seals are under way);
  // round 2: when the daemon logs that all 1,000 records are computed (the journal is being written);
  // round 3: after a seeded delay.
  const journalDir = path.join(fx.dataDir, '.mountd', 'journal');
  for (let round = 1; round <= 3; round++) {
    const from = names[at]!;
    const to = names[1 - at]!;
    const logBefore = fx.daemon.log().length;
    // Round 1 waits for the journal's inotify event, not a sample of the directory: the intent is
    // there only while the move and the records are written (100-300 ms), and a poll whose
    // process is not scheduled in that time would miss it. The kernel queues the event.
    const journaled =
      round === 1
        ? new Promise<boolean>((resolve) => {
            const w = watch(journalDir, () => done(true));
            const timer = setTimeout(() => done(false), 30_000);
            const done = (v: boolean) => {
              clearTimeout(timer);
              w.close();
              resolve(v);
            };
          })
        : undefined;
    const mv = spawn('mv', [`${fx.mnt}/crash/${from}`, `${fx.mnt}/crash/${to}`], { stdio: 'ignore' });
    const mvDone = new Promise((r) => mv.once('exit', r));
    let when: string;
    if (round === 1) {
      t.true(await journaled, 'the intent reached the journal');
      when = 'once the intent was in the journal';
    } else if (round === 2) {
      await until(() => fx.daemon.log().slice(logBefore).includes('re-sealed 1000/1000'), 30_000, 1);
      when = 'right after the re-seal of all 1,000 records';
    } else {
      const delay = rand(600);
      await new Promise((r) => setTimeout(r, delay));
      when = `${delay} ms into the rename`;
    }
    await crashAndRestart(t, `mv of a 1,000-file directory, ${when}`);
    await mvDone;
    const a = await countBelow(path.join(fx.dataDir, 'crash', from));
    const b = await countBelow(path.join(fx.dataDir, 'crash', to));
    t.true((a === 1000 && b === 0) || (a === 0 && b === 1000), `wholly at one name: ${a} at ${from}, ${b} at ${to}`);
    if (b === 1000) {
      for (const k of keys) {
        const sha = t.context.committed.get(`crash/${from}/${k}`)!;
        t.context.committed.delete(`crash/${from}/${k}`);
        t.context.committed.set(`crash/${to}/${k}`, sha);
      }
      at = 1 - at;
    }
    t.log(`round ${round}: the tree is at ${names[at]} after the restart`);
    if (round === 1) t.is(names[at], to, 'a rename whose intent was journaled is finished at the start');
    await checkCommitted(t);
  }
});

fuseTest('kill -9 during mountctl key rotate: every file readable under one key or the other; the rotation resumes and finishes', async (t) => {
  const { fx } = t.context;
  await putMany(t, 'many', Array.from({ length: 1500 }, (_, i) => `r/${String(i).padStart(5, '0')}`), () => 1 + rand(2000), 32);
  const created = await mountctl(fx.dataDir, ['key', 'create', 'rotated-key']);
  t.is(created.code, 0, created.stderr);
  // Rotation goes bucket by bucket ("crash" before "many"), each in sorted order: sample files across it.
  const tree = [...t.context.committed.keys()].filter((k) => k.startsWith('crash/tree-')).sort();
  const sample = [tree[0]!, tree[500]!, 'many/r/00000', 'many/r/00750', 'many/r/01499'];
  const keyOf = (name: string) => decodeRecord(getAttributeSync(path.join(fx.dataDir, ...name.split('/')), KEY_RECORD_XATTR)!).keyName;
  const rotate = mountctl(fx.dataDir, ['key', 'rotate', '--from', 'mountd-default', '--to', 'rotated-key']);
  const midway = await until(() => {
    const rotated = sample.filter((s) => keyOf(s) === 'rotated-key').length;
    return rotated > 0 && rotated < sample.length;
  }, 60_000, 2);
  const rotatedAtKill = sample.filter((s) => keyOf(s) === 'rotated-key').length;
  await crashAndRestart(t, `key rotation (${rotatedAtKill}/${sample.length} sampled files rotated${midway ? '' : ', not caught mid-way'})`);
  const first = await rotate;
  t.not(first.code, 0, 'the interrupted mountctl reports a failure');
  await checkCommitted(t);
  const again = await mountctl(fx.dataDir, ['--json', 'key', 'rotate', '--from', 'mountd-default', '--to', 'rotated-key'], { timeoutMs: 120_000 });
  t.is(again.code, 0, again.stderr + again.stdout);
  const result = JSON.parse(again.stdout) as { rotated: number; skipped: number; failed: number; scanned: number };
  t.is(result.failed, 0);
  t.log(`resumed rotation: ${result.rotated} rotated, ${result.skipped} skipped (already rotated before the kill), ${result.scanned} scanned`);
  // Every record names the new key now.
  const stale = (await sh(`cd ${fx.dataDir} && find crash many -type f`)).trim().split('\n').filter((n) => n && keyOf(n) !== 'rotated-key');
  t.deepEqual(stale, [], 'every file is under the new key');
  await checkCommitted(t);
  // And a disable of the old key locks nothing that matters any more.
  t.is((await mountctl(fx.dataDir, ['key', 'disable', 'mountd-default'])).code, 0);
  const r = await runPython<Record<string, string>>(
    'import hashlib, json, sys\ncfg = json.loads(sys.stdin.readline())\nprint(json.dumps({"sha": hashlib.sha256(open(cfg["f"], "rb").read()).hexdigest()}))',
    { f: `${fx.mnt}/many/r/00000` },
  );
  t.is(r.sha, t.context.committed.get('many/r/00000'));
  t.is((await mountctl(fx.dataDir, ['key', 'enable', 'mountd-default'])).code, 0);
});
