// What the mount shows right after a change made through either door, now that the kernel may
// keep names and attributes for 5 s (ENTRY_TIMEOUT, ATTR_TIMEOUT in src/fuse/lowlevel.ts): each
// change that moves what stat shows must reach the kernel before it is answered. Every check is
// made at once after the change; with a stale cache each would see the old state for seconds.
import anyTest, { type TestFn } from 'ava';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { HAS_FUSE, reportMissingFuse, run, sh, startMount, type MountFixture } from './helpers/mount.js';
import { s3request } from './helpers/s3.js';

const test = anyTest as TestFn<{ fx: MountFixture }>;
// The notifications are the low-level binding's (native/fuse-ll.c); fuse-native keeps 1 s timeouts.
const lowLevel = process.env.MOUNTD_FUSE_BINDING !== 'fuse-native';
const fuseTest = HAS_FUSE && lowLevel ? test.serial : test.skip;

reportMissingFuse(test, 'fuse-notify.test.ts', 'the tests of what the mount shows right after a change');

test.before(async (t) => {
  if (!HAS_FUSE || !lowLevel) return;
  t.context = { fx: await startMount('notify', { s3: true }) };
});

test.after.always(async (t) => {
  if (t.context.fx) await t.context.fx.cleanup();
});

/** stat -c FORMAT of a path at the mount and of its backing file. */
async function both(fx: MountFixture, rel: string, format: string): Promise<{ mount: string; disk: string }> {
  const mount = (await sh(`stat -c '${format}' '${path.join(fx.mnt, rel)}'`)).trim();
  const disk = (await sh(`stat -c '${format}' '${path.join(fx.dataDir, rel)}'`)).trim();
  return { mount, disk };
}

/**
 * Fields of two `stat -c` outputs agree: times (with a '.') to within 10 us (the engine keeps
 * times as milliseconds in a double, which loses the last digits of nanoseconds), others exactly.
 */
function agree(t: { is(a: unknown, b: unknown, m?: string): void; true(v: boolean, m?: string): void }, got: { mount: string; disk: string }, what: string): void {
  const a = got.mount.split(' ');
  const b = got.disk.split(' ');
  t.is(a.length, b.length, what);
  a.forEach((x, i) => {
    if (x.includes('.')) {
      const ns = (v: string) => BigInt(v.replace('.', ''));
      const d = ns(x) - ns(b[i]!);
      t.true(d < 10_000n && d > -10_000n, `${what}: ${x} at the mount, ${b[i]} on disk`);
    } else t.is(x, b[i], `${what}: ${got.mount} at the mount, ${got.disk} on disk`);
  });
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Has the kernel take the attributes of `rel` at the mount (they are then cached 5 s), and lets
 * the clock move on, so that a change made next shows as a new time.
 */
async function cached(fx: MountFixture, rel: string): Promise<void> {
  await sh(`stat '${path.join(fx.mnt, rel)}'`);
  await pause(50);
}

fuseTest('an S3 PUT over a symlink the kernel holds: the name is a regular file at once (no EIO, no EINVAL)', async (t) => {
  const { fx } = t.context;
  const port = fx.daemon.s3Port!;
  const b = path.join(fx.mnt, 'nt-link');
  await fsp.mkdir(b);
  await sh(`echo target > ${b}/t && ln -s t ${b}/l && ln -s t ${b}/l2 && stat -c %F ${b}/l ${b}/l2 && cat ${b}/l2`);
  t.is((await s3request(port, { method: 'PUT', path: '/nt-link/l', body: Buffer.from('now a file\n') })).status, 200);
  t.is((await s3request(port, { method: 'PUT', path: '/nt-link/l2', body: Buffer.from('file two\n') })).status, 200);
  const r = await run('stat', ['-c', '%F %s', `${b}/l`]);
  t.is(r.stderr, '', 'stat right after the PUT was answered');
  t.is(r.stdout, 'regular file 11\n');
  // Followed as a link, the old dentry would send READLINK to what is no longer one.
  t.is(await fsp.readFile(`${b}/l2`, 'utf8'), 'file two\n');
});

fuseTest('ftruncate then close: stat at the mount shows the time the close committed', async (t) => {
  const { fx } = t.context;
  await fsp.mkdir(path.join(fx.mnt, 'nt-trunc'));
  await fsp.writeFile(path.join(fx.mnt, 'nt-trunc', 'f'), Buffer.alloc(100, 'x'));
  const script = String.raw`
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
os.ftruncate(fd, 10)
time.sleep(0.05)
os.close(fd)
`;
  await run('python3', ['-c', script, path.join(fx.mnt, 'nt-trunc', 'f')]);
  t.is((await fsp.stat(path.join(fx.mnt, 'nt-trunc', 'f'))).size, 10);
  agree(t, await both(fx, 'nt-trunc/f', '%.9Y'), 'mtime');
});

fuseTest('an S3 PUT that makes directories, or a directory marker: the directory the kernel holds shows its new link count and time', async (t) => {
  const { fx } = t.context;
  const port = fx.daemon.s3Port!;
  await fsp.mkdir(path.join(fx.mnt, 'nt-implicit'));
  await cached(fx, 'nt-implicit');
  t.is((await s3request(port, { method: 'PUT', path: '/nt-implicit/x/y/z', body: Buffer.from('z') })).status, 200);
  agree(t, await both(fx, 'nt-implicit', '%h %.9Y'), 'after PUT x/y/z: link count and mtime of the bucket');
  await cached(fx, 'nt-implicit/x');
  t.is((await s3request(port, { method: 'PUT', path: '/nt-implicit/x/marker/', body: Buffer.alloc(0) })).status, 200);
  agree(t, await both(fx, 'nt-implicit/x', '%h %.9Y'), 'after PUT x/marker/: link count and mtime of x');
});

fuseTest('an S3 CreateBucket: the mount root shows its new time and link count', async (t) => {
  const { fx } = t.context;
  const port = fx.daemon.s3Port!;
  await cached(fx, '');
  t.is((await s3request(port, { method: 'PUT', path: '/nt-newbucket' })).status, 200);
  const mount = (await sh(`stat -c '%.9Y' ${fx.mnt}`)).trim();
  const disk = (await sh(`stat -c '%.9Y' ${fx.dataDir}`)).trim();
  agree(t, { mount, disk }, 'mtime of the root');
});

fuseTest('S3 tagging and a metadata-replacing self-copy: the file shows its new change time', async (t) => {
  const { fx } = t.context;
  const port = fx.daemon.s3Port!;
  await fsp.mkdir(path.join(fx.mnt, 'nt-meta'));
  await fsp.writeFile(path.join(fx.mnt, 'nt-meta', 'f'), 'tagged\n');
  await cached(fx, 'nt-meta/f');
  const tagging = '<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value></Tag></TagSet></Tagging>';
  t.is((await s3request(port, { method: 'PUT', path: '/nt-meta/f', query: { tagging: '' }, body: Buffer.from(tagging) })).status, 200);
  agree(t, await both(fx, 'nt-meta/f', '%.9Z'), 'ctime after PutObjectTagging');
  await pause(50);
  const copy = await s3request(port, { method: 'PUT', path: '/nt-meta/f', headers: { 'x-amz-copy-source': '/nt-meta/f', 'x-amz-metadata-directive': 'REPLACE', 'content-type': 'text/plain' } });
  t.is(copy.status, 200, copy.text);
  agree(t, await both(fx, 'nt-meta/f', '%.9Z'), 'ctime after a self-copy with REPLACE');
});

fuseTest('a directory renamed at the mount: the files below show their new change time (their keys were re-sealed)', async (t) => {
  const { fx } = t.context;
  await sh(`mkdir -p ${fx.mnt}/nt-ren/d/sub && echo g > ${fx.mnt}/nt-ren/d/sub/g && stat ${fx.mnt}/nt-ren/d/sub/g`);
  await pause(50);
  await sh(`mv ${fx.mnt}/nt-ren/d ${fx.mnt}/nt-ren/e`);
  agree(t, await both(fx, 'nt-ren/e/sub/g', '%.9Z'), 'ctime of a file whose key was re-sealed');
});

/**
 * Maps `file` read-only (MAP_SHARED), touches every page, runs `action` (a rename, or waits for a
 * line on stdin while the test acts), and prints the pages resident (mincore) before and after.
 */
const RESIDENCY = String.raw`
import os, sys, ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
fd = os.open(sys.argv[1], os.O_RDONLY); n = os.fstat(fd).st_size; pages = (n + 4095) // 4096
addr = libc.mmap(None, n, 1, 1, fd, 0)
if addr in (None, ctypes.c_void_p(-1).value): raise OSError(ctypes.get_errno(), 'mmap')
def resident():
    vec = (ctypes.c_ubyte * pages)()
    if libc.mincore(addr, n, vec) != 0: raise OSError(ctypes.get_errno(), 'mincore')
    return sum(b & 1 for b in vec)
for i in range(pages): ctypes.c_ubyte.from_address(addr + i * 4096).value
before = resident()
if len(sys.argv) > 3: os.rename(sys.argv[2], sys.argv[3])
else: print('ready', flush=True); sys.stdin.readline()
print(pages, before, resident(), flush=True)
`;

fuseTest('a directory rename and S3 tagging keep the page cache of the files concerned (only their ctime moved)', async (t) => {
  const { fx } = t.context;
  const port = fx.daemon.s3Port!;
  const b = path.join(fx.mnt, 'nt-pages');
  await fsp.mkdir(path.join(b, 'd', 'sub'), { recursive: true });
  await sh(`head -c 4000000 /dev/urandom > ${b}/d/sub/f && head -c 2000000 /dev/urandom > ${b}/g`);
  const renamed = (await run('python3', ['-c', RESIDENCY, `${b}/d/sub/f`, `${b}/d`, `${b}/e`])).stdout.trim().split(' ').map(Number);
  t.is(renamed[1], renamed[0], 'every page of the mapping was resident before');
  t.is(renamed[2], renamed[1], `pages resident after a rename of the file's grandparent: ${renamed[2]} of ${renamed[1]}`);

  const { spawn } = await import('node:child_process');
  const child = spawn('python3', ['-c', RESIDENCY, `${b}/g`]);
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  while (!out.includes('ready')) await pause(20);
  const tagging = '<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value></Tag></TagSet></Tagging>';
  t.is((await s3request(port, { method: 'PUT', path: '/nt-pages/g', query: { tagging: '' }, body: Buffer.from(tagging) })).status, 200);
  child.stdin.end('go\n');
  await new Promise((r) => child.on('exit', r));
  const tagged = out.trim().split('\n').pop()!.split(' ').map(Number);
  t.is(tagged[1], tagged[0]);
  t.is(tagged[2], tagged[1], `pages resident after PutObjectTagging: ${tagged[2]} of ${tagged[1]}`);
});

fuseTest('S3 PutBucketEncryption and DeleteBucketEncryption: the bucket directory shows its new change time', async (t) => {
  const { fx } = t.context;
  const port = fx.daemon.s3Port!;
  await fsp.mkdir(path.join(fx.mnt, 'nt-enc'));
  await cached(fx, 'nt-enc');
  const cfg = '<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>';
  const put = await s3request(port, { method: 'PUT', path: '/nt-enc', query: { encryption: '' }, body: Buffer.from(cfg) });
  t.is(put.status, 200, put.text);
  agree(t, await both(fx, 'nt-enc', '%.9Z'), 'ctime after PutBucketEncryption');
  await pause(50);
  const del = await s3request(port, { method: 'DELETE', path: '/nt-enc', query: { encryption: '' } });
  t.is(del.status, 204, del.text);
  agree(t, await both(fx, 'nt-enc', '%.9Z'), 'ctime after DeleteBucketEncryption');
});
