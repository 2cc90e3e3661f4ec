// Read-only opens through the kernel's page cache (src/fuse/lowlevel.ts, cacheReads) and what
// must drop those pages: a write through another descriptor, and a key lock (native/fuse-ll.c,
// invalidate), which also reaches MAP_PRIVATE mappings the kernel serves from its cache.
import anyTest, { type TestFn } from 'ava';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { HAS_FUSE, fuseMountsUnder, mountctl, reportMissingFuse, run, sh, startFdHolder, startMount, type MountFixture } from './helpers/mount.js';
import { s3request } from './helpers/s3.js';

const test = anyTest as TestFn<{ fx: MountFixture }>;
const lowLevel = process.env.MOUNTD_FUSE_BINDING !== 'fuse-native';
const fuseTest = HAS_FUSE && lowLevel ? test.serial : test.skip;

reportMissingFuse(test, 'fuse-cache.test.ts', 'page-cache tests');

test.before(async (t) => {
  if (!HAS_FUSE || !lowLevel) return;
  t.context = { fx: await startMount('cache', { s3: true }) };
});

test.after.always(async (t) => {
  if (t.context.fx) await t.context.fx.cleanup();
});

async function ctl(fx: MountFixture, ...args: string[]): Promise<string> {
  const r = await mountctl(fx.dataDir, args);
  if (r.code !== 0) throw new Error(`mountctl ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** Writes `body` to bucket/name through the mount (cp), making the bucket if needed. */
async function fileWith(fx: MountFixture, bucket: string, name: string, body: Buffer): Promise<string> {
  const dir = path.join(fx.mnt, bucket);
  await fsp.mkdir(dir, { recursive: true });
  const src = path.join(fx.root, `${bucket}-${name}.src`);
  await fsp.writeFile(src, body);
  await sh(`cp ${src} ${dir}/${name}`);
  return path.join(dir, name);
}

/**
 * A Python process that maps `file` (MAP_PRIVATE or MAP_SHARED, read-only), reads all of it (every
 * page is then in the page cache), says "mapped HEX", waits for a line, reads its first bytes
 * again and says "after HEX"; a read the kernel cannot serve kills it with SIGBUS.
 */
function mapper(file: string, len: number, shared: boolean) {
  const script = String.raw`
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
m = mmap.mmap(fd, int(sys.argv[2]), flags=(mmap.MAP_SHARED if sys.argv[3] == 'shared' else mmap.MAP_PRIVATE), prot=mmap.PROT_READ)
os.close(fd)
whole = m[:]
print('mapped ' + whole[:16].hex(), flush=True)
sys.stdin.readline()
print('after ' + m[:16].hex(), flush=True)
`;
  const child = spawn('python3', ['-u', '-c', script, file, String(len), shared ? 'shared' : 'private'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return {
    async mapped(): Promise<string> {
      for (let i = 0; i < 200 && !out.includes('\n'); i++) await new Promise((r) => setTimeout(r, 50));
      if (!out.startsWith('mapped ')) throw new Error(`mapper: ${out} ${err}`);
      return out.split('\n')[0]!.slice('mapped '.length);
    },
    async readAgain(): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }> {
      child.stdin.end('go\n');
      const r = await exited;
      return { ...r, out };
    },
    kill: () => child.kill('SIGKILL'),
  };
}

fuseTest('a read-only open reads through the page cache: MAP_SHARED read-only mappings work, small reads are whole', async (t) => {
  const { fx } = t.context;
  const body = randomBytes(300_000);
  const f = await fileWith(fx, 'cache-basic', 'f.bin', body);
  const holder = startFdHolder();
  t.teardown(() => holder.close());
  // Under direct_io a shared mapping is refused (ENODEV): this one works only through the cache.
  t.is(await holder.send(`mmap ${f} 0 read`), `ok ${body.toString('hex')}`, 'MAP_SHARED, PROT_READ');
  t.is(await sh(`dd if=${f} bs=4k status=none | sha256sum`), `${createHash('sha256').update(body).digest('hex')}  -\n`);
  const fd = (await holder.send(`open ${f}`)).split(' ')[1];
  t.is(await holder.send(`pread ${fd} 100 299950`), `ok ${body.subarray(299950).toString('hex')}`, 'a read across the end');
  t.is(await holder.send(`close ${fd}`), 'ok ');
});

fuseTest('a write through another descriptor is seen at once by a reader holding cached pages (in place and appended)', async (t) => {
  const { fx } = t.context;
  const body = Buffer.alloc(10_000, 'a');
  const f = await fileWith(fx, 'cache-coherent', 'f.txt', body);
  const holder = startFdHolder();
  t.teardown(() => holder.close());
  const r = (await holder.send(`open ${f}`)).split(' ')[1];
  // Fills the reader's cache with the whole file.
  t.is(await holder.send(`pread ${r} 10000 0`), `ok ${body.toString('hex')}`);
  const w = (await holder.send(`open ${f} rw`)).split(' ')[1];
  t.is(await holder.send(`pwrite ${w} 5000 ${Buffer.from('ZZ').toString('hex')}`), 'ok 2');
  t.is(await holder.send(`pread ${r} 4 4999`), `ok ${Buffer.from('aZZa').toString('hex')}`, 'the cached page was dropped before the write returned');
  const a = (await holder.send(`open ${f} a`)).split(' ')[1];
  t.is(await holder.send(`write ${a} ${Buffer.from('tail').toString('hex')}`), 'ok 4');
  t.is(await holder.send(`pread ${r} 100 9998`), `ok ${Buffer.from('aatail').toString('hex')}`, 'tail -f: the appended bytes, in the page that was cached');
  t.is(await holder.send(`fstat ${r}`), 'ok 10004');
  for (const fd of [r, w, a]) t.is(await holder.send(`close ${fd}`), 'ok ');
  // A new reader after all closed: the committed file.
  t.is(await sh(`head -c 5002 ${f} | tail -c 3`), 'aZZ');
});

fuseTest('fallocate through another descriptor (punch-hole, zero-range, growth) is seen at once by a reader holding cached pages', async (t) => {
  const { fx } = t.context;
  const f = await fileWith(fx, 'cache-falloc', 'f.bin', Buffer.alloc(20_000, 'a'));
  const holder = startFdHolder();
  t.teardown(() => holder.close());
  const r = (await holder.send(`open ${f}`)).split(' ')[1];
  t.is(await holder.send(`pread ${r} 20000 0`), `ok ${Buffer.alloc(20_000, 'a').toString('hex')}`);
  const w = (await holder.send(`open ${f} rw`)).split(' ')[1];
  t.is((await run('fallocate', ['-p', '-o', '5000', '-l', '100', f])).code, 0);
  t.is(await holder.send(`pread ${r} 4 4998`), `ok ${Buffer.from([0x61, 0x61, 0, 0]).toString('hex')}`, 'punched');
  t.is((await run('fallocate', ['-z', '-o', '12000', '-l', '10', f])).code, 0);
  t.is(await holder.send(`pread ${r} 4 11998`), `ok ${Buffer.from([0x61, 0x61, 0, 0]).toString('hex')}`, 'zeroed');
  t.is((await run('fallocate', ['-l', '30000', f])).code, 0);
  t.is(await holder.send(`fstat ${r}`), 'ok 30000', 'grown');
  t.is(await holder.send(`pread ${r} 4 19998`), `ok ${Buffer.from([0x61, 0x61, 0, 0]).toString('hex')}`);
  for (const fd of [r, w]) t.is(await holder.send(`close ${fd}`), 'ok ');
  t.is(await sh(`head -c 5002 ${f} | tail -c 3 | od -An -c | tr -d ' '`), 'a\\0\\0\n');
});

fuseTest('an S3 PUT that grows a file the kernel has fresh attributes of: a new open reads all of it', async (t) => {
  const { fx } = t.context;
  const f = await fileWith(fx, 'cache-s3', 'obj', Buffer.from('short\n'));
  // Fresh attributes (size 6) and no read: a cached read refreshes them as a side effect (the
  // kernel marks the access time stale), which would hide what this test is about.
  t.is(await sh(`stat -c %s ${f}`), '6\n');
  const big = randomBytes(50_000);
  t.is((await s3request(fx.daemon.s3Port!, { method: 'PUT', path: '/cache-s3/obj', body: big })).status, 200);
  // Within the attribute timeout the kernel still holds size 6 for this node.
  t.is(await sh(`sha256sum < ${f}`), `${createHash('sha256').update(big).digest('hex')}  -\n`);
});

fuseTest('an S3 PUT replaces a file a descriptor reads through the cache: the descriptor keeps the old file whole, stat and new opens see the new one', async (t) => {
  const { fx } = t.context;
  const old = randomBytes(200_000);
  const f = await fileWith(fx, 'cache-replace', 'obj', old);
  const holder = startFdHolder();
  t.teardown(() => holder.close());
  const fd = (await holder.send(`open ${f}`)).split(' ')[1];
  t.is(await holder.send(`pread ${fd} 16 0`), `ok ${old.subarray(0, 16).toString('hex')}`);
  const small = randomBytes(5000);
  t.is((await s3request(fx.daemon.s3Port!, { method: 'PUT', path: '/cache-replace/obj', body: small })).status, 200);
  // The PUT's answer came after the kernel dropped the name: stat finds the new object at once.
  t.is(await sh(`stat -c %s ${f}`), '5000\n', 'stat: the new object');
  t.is(await holder.send(`pread ${fd} 200000 0`), `ok ${old.toString('hex')}`, 'the descriptor opened before reads all of the old file, not 5000 bytes of it');
  t.is(await holder.send(`fstat ${fd}`), 'ok 200000');
  t.is(await sh(`sha256sum < ${f}`), `${createHash('sha256').update(small).digest('hex')}  -\n`, 'a new open: the new object');
  t.is(await holder.send(`close ${fd}`), 'ok ');
});

fuseTest('key disable drops cached pages: a read-only descriptor, a MAP_PRIVATE and a MAP_SHARED mapping made before it are locked; enable restores', async (t) => {
  const { fx } = t.context;
  const body = randomBytes(200_000);
  const f = await fileWith(fx, 'cache-lock', 'f.bin', body);
  const holder = startFdHolder();
  t.teardown(() => holder.close());
  const fd = (await holder.send(`open ${f}`)).split(' ')[1];
  const all = body.toString('hex');
  t.is(await holder.send(`pread ${fd} 200000 0`), `ok ${all}`, 'the whole file is now in the page cache');
  const priv = mapper(f, 200_000, false);
  const shared = mapper(f, 200_000, true);
  t.teardown(() => {
    priv.kill();
    shared.kill();
  });
  t.is(await priv.mapped(), body.subarray(0, 16).toString('hex'));
  t.is(await shared.mapped(), body.subarray(0, 16).toString('hex'));

  t.regex(await ctl(fx, 'key', 'disable', 'mountd-default'), /disabled key mountd-default/);
  try {
    t.regex(await holder.send(`pread ${fd} 4096 0`), /^err 126 /, 'a cached read-only descriptor');
    t.regex(await holder.send(`pread ${fd} 100 150000`), /^err 126 /);
    const p = await priv.readAgain();
    t.is(p.signal, 'SIGBUS', `a MAP_PRIVATE mapping's pages are gone (got ${JSON.stringify(p)})`);
    const s = await shared.readAgain();
    t.is(s.signal, 'SIGBUS', `a MAP_SHARED mapping's pages are gone (got ${JSON.stringify(s)})`);
  } finally {
    await ctl(fx, 'key', 'enable', 'mountd-default');
  }
  t.is(await holder.send(`pread ${fd} 16 0`), `ok ${body.subarray(0, 16).toString('hex')}`, 'the same descriptor reads again after enable');
  t.is(await holder.send(`close ${fd}`), 'ok ');
});

fuseTest('MOUNTD_FUSE_CACHE_READS=0: every read reaches the daemon again (a shared mapping is refused under direct_io)', async (t) => {
  const { fx } = t.context;
  const f = await fileWith(fx, 'cache-off', 'f.bin', randomBytes(5000));
  await fx.restart({ env: { MOUNTD_FUSE_CACHE_READS: '0' } });
  const holder = startFdHolder();
  t.teardown(() => holder.close());
  t.regex(await holder.send(`mmap ${f} 0 read`), /^err 19 /);
  await fx.restart();
  t.regex(await holder.send(`mmap ${f} 0 read`), /^ok /);
});

fuseTest('a daemon that stops drops the pages it let the kernel cache: a descriptor that outlives it reads nothing of them', async (t) => {
  const { fx } = t.context;
  const body = randomBytes(200_000);
  const f = await fileWith(fx, 'cache-restart', 'f.bin', body);
  const holder = startFdHolder();
  t.teardown(() => holder.close());
  const fd = (await holder.send(`open ${f}`)).split(' ')[1];
  t.is(await holder.send(`pread ${fd} 200000 0`), `ok ${body.toString('hex')}`, 'all of it is in the page cache');
  await fx.restart();
  // The old mount is gone: its pages too, or no later key lock could reach them.
  t.regex(await holder.send(`pread ${fd} 16 0`), /^err /);
  t.regex(await holder.send(`pread ${fd} 16 150000`), /^err /);
  await holder.send(`close ${fd}`);
});

fuseTest('an S3 PUT under a cached reader: a new descriptor gets a node of its own, and neither sees a mix of the two files', async (t) => {
  const { fx } = t.context;
  const f = await fileWith(fx, 'cache-mix', 'obj', Buffer.alloc(200_000, 'o'));
  const script = String.raw`
import mmap, os, sys
f = sys.argv[1]
a = os.open(f, os.O_RDONLY)
print('A0 ' + os.pread(a, 200000, 0)[:4].decode(), flush=True)
sys.stdin.readline()
b = os.open(f, os.O_RDONLY)
m = mmap.mmap(b, 200000, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
print('B0 ' + m[0:4].decode(), flush=True)
print('A150k ' + os.pread(a, 4, 150000).decode(), flush=True)
print('B150k ' + m[150000:150004].decode(), flush=True)
print('A0again ' + os.pread(a, 4, 0).decode(), flush=True)
`;
  const child = spawn('python3', ['-u', '-c', script, f], { stdio: ['pipe', 'pipe', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  // The PUT must come after the reader has read the old file through the cache: wait for its
  // line (up to 20 s: python's start on a loaded machine), and say so if it never came.
  for (const end = Date.now() + 20_000; !out.includes('A0 ') && Date.now() < end; ) await new Promise((r) => setTimeout(r, 25));
  t.regex(out, /^A0 oooo$/m, 'the reader read the old file before the PUT');
  t.is((await s3request(fx.daemon.s3Port!, { method: 'PUT', path: '/cache-mix/obj', body: Buffer.alloc(200_000, 'N') })).status, 200);
  // Within the kernel's entry timeout: the name still leads to the node the reader holds.
  child.stdin.end('go\n');
  await new Promise((r) => child.on('exit', r));
  const got = (k: string) => new RegExp(`^${k} (\\S+)$`, 'm').exec(out)?.[1];
  t.is(got('B0'), 'NNNN', out);
  t.is(got('B150k'), 'NNNN', 'one mapping of the new file shows the new file only');
  t.is(got('A150k'), 'oooo');
  t.is(got('A0again'), 'oooo', 'the old descriptor reads the old file only');
});

fuseTest('a session the kernel aborts (umount -f of a busy mount): the daemon drops what was cached and removes the dead mount; S3 goes on', async (t) => {
  const { fx } = t.context;
  const body = randomBytes(300_000);
  const f = await fileWith(fx, 'cache-abort', 'f.bin', body);
  // A descriptor and a MAP_PRIVATE mapping, every page of both read (cached) before the abort.
  const script = String.raw`
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
a = os.pread(fd, 1 << 20, 0)
m = mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
_ = m[:]
print('cached', flush=True)
sys.stdin.readline()
try:
    print('pread after: same=%s' % (os.pread(fd, 1 << 20, 0) == a), flush=True)
except OSError as e:
    print('pread after: %s' % e.strerror, flush=True)
print('mmap after: same=%s' % (m[:] == a), flush=True)
`;
  const child = spawn('python3', ['-u', '-c', script, f], { stdio: ['pipe', 'pipe', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const childExit = new Promise<NodeJS.Signals | null>((r) => child.on('exit', (_c, sig) => r(sig)));
  for (let i = 0; i < 400 && !out.includes('cached'); i++) await new Promise((r) => setTimeout(r, 25));
  t.true(out.includes('cached'), out);
  // Busy (the holder has the file open): the unmount fails, but the kernel aborts the connection.
  await run('umount', ['-f', fx.mnt]);
  for (let i = 0; i < 400 && !/removed the dead mount/.test(fx.daemon.log()); i++) await new Promise((r) => setTimeout(r, 25));
  t.regex(fx.daemon.log(), /removed the dead mount/);
  t.deepEqual(await fuseMountsUnder(fx.root), [], 'no dead mount left behind');
  child.stdin.end('\n');
  const sig = await childExit;
  t.notRegex(out, /same=True/, `nothing cached stays readable: ${out}`);
  t.regex(out, /pread after: /, out);
  t.is(sig, 'SIGBUS', `the mapping's pages are gone: ${out}`);
  t.is(fx.daemon.proc.exitCode, null, 'the daemon goes on serving S3');
  t.is((await s3request(fx.daemon.s3Port!, { method: 'GET', path: '/' })).status, 200);
  await fx.restart();
});

fuseTest('what S3 changes the mount sees at once: a PUT over a file, a DELETE, the directories a DELETE empties, a bucket removed', async (t) => {
  const { fx } = t.context;
  const port = fx.daemon.s3Port!;
  const b = path.join(fx.mnt, 'cache-doors');
  await fileWith(fx, 'cache-doors', 'f', Buffer.from('short\n'));
  await sh(`mkdir -p ${b}/a/b && echo deep > ${b}/a/b/c && echo gone > ${b}/g`);
  // The kernel now holds the names and their attributes (for its timeouts).
  t.is(await sh(`stat -c %s ${b}/f ${b}/g ${b}/a/b/c && ls ${b}/a`), '6\n5\n5\nb\n');
  t.is((await s3request(port, { method: 'PUT', path: '/cache-doors/f', body: Buffer.alloc(50_000, 'x') })).status, 200);
  t.is(await sh(`stat -c %s ${b}/f`), '50000\n', 'the new size, right after the PUT was answered');
  t.is((await s3request(port, { method: 'DELETE', path: '/cache-doors/g' })).status, 204);
  t.regex((await run('stat', [`${b}/g`])).stderr, /No such file/, 'a deleted name is gone at once');
  t.is(await sh(`echo again > ${b}/g && cat ${b}/g`), 'again\n', 'and can be made again through the mount');
  t.is((await s3request(port, { method: 'DELETE', path: '/cache-doors/a/b/c' })).status, 204);
  t.regex((await run('stat', [`${b}/a`])).stderr, /No such file/, 'the directories the DELETE emptied are gone too');
  await sh(`rm ${b}/f ${b}/g`);
  t.is(await sh(`stat -c %F ${b}`), 'directory\n');
  t.is((await s3request(port, { method: 'DELETE', path: '/cache-doors' })).status, 204);
  t.regex((await run('stat', [b])).stderr, /No such file/, 'a bucket deleted through S3');
});

fuseTest('a close that writes what was buffered: stat at the mount shows the file\'s new time at once, though the kernel was given the old one just before', async (t) => {
  const { fx } = t.context;
  const f = await fileWith(fx, 'cache-mtime', 'f', Buffer.from('v1\n'));
  const script = String.raw`
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
os.pwrite(fd, b'v2 longer\n', 0)
os.fstat(fd)
time.sleep(0.05)
os.close(fd)
`;
  await run('python3', ['-c', script, f]);
  const [mountNs, size] = (await sh(`stat -c '%.9Y %s' ${f}`)).trim().split(' ');
  const backingNs = (await sh(`stat -c '%.9Y' ${path.join(fx.dataDir, 'cache-mtime', 'f')}`)).trim();
  // Times travel as fractional milliseconds: equal to within a few microseconds. The time the
  // kernel was given before the close is 50 ms older.
  const diffUs = Math.abs(Number(mountNs) - Number(backingNs)) * 1e6;
  t.true(diffUs < 5, `the modification time of the flush: ${mountNs} at the mount, ${backingNs} on disk`);
  t.is(size, '10');
});
