// Disk full: the data directory is a 64 MiB tmpfs (user.* xattrs work on tmpfs on this kernel).
// Fill it through the mount and through S3: the mount says ENOSPC, S3 answers a 5xx (507
// XMountdStorageFull, src/s3/errors.ts), nothing committed before is damaged (the files being
// appended to when the disk filled included), deleting gives the space back, writes work again.
import anyTest, { type TestFn } from 'ava';
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { removeDir, startDaemon, type Daemon } from './helpers/daemon.js';
import { tempDir } from './helpers/engine.js';
import { hashOnMount, runPython, sha256hex } from './helpers/fsx.js';
import { HAS_FUSE, fuseMissingBanner, fuseMountsUnder, run, sh } from './helpers/mount.js';
import { errorCode, s3request } from './helpers/s3.js';

interface Ctx {
  root: string;
  data: string;
  mnt: string;
  daemon?: Daemon;
  tmpfs: boolean;
}
const test = anyTest as TestFn<Ctx>;
const MiB = 1024 * 1024;
const IS_ROOT = process.getuid?.() === 0;
const CAN_RUN = HAS_FUSE && IS_ROOT;
const fuseTest = CAN_RUN ? test.serial : test.serial.skip;

if (!CAN_RUN) {
  const banner = HAS_FUSE ? 'reliability-enospc.test.ts needs root to mount a tmpfs: the DISK FULL TESTS DID NOT RUN' : fuseMissingBanner('reliability-enospc.test.ts');
  console.error(banner);
  test('disk full tests skipped (no FUSE or not root)', (t) => {
    t.log(banner);
    t.pass();
  });
}

/** Mounts of any type at or below `dir`, from /proc/mounts. */
async function mountsUnder(dir: string): Promise<string[]> {
  const text = await fsp.readFile('/proc/mounts', 'utf8');
  return text
    .split('\n')
    .map((l) => l.split(' ')[1]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))))
    .filter((m): m is string => m !== undefined && (m === dir || m.startsWith(dir + '/')));
}

test.before(async (t) => {
  if (!CAN_RUN) return;
  const root = await tempDir('mountd-enospc');
  const data = path.join(root, 'data');
  const mnt = path.join(root, 'mnt');
  await fsp.mkdir(data);
  t.context = { root, data, mnt, tmpfs: false };
  await sh(`mount -t tmpfs -o size=64m,mode=0755 tmpfs ${data}`);
  t.context.tmpfs = true;
  // tmpfs must keep user.* xattrs (the key records live there): check before relying on it.
  await sh(`touch ${data}/probe && setfattr -n user.probe -v 1 ${data}/probe && getfattr -n user.probe ${data}/probe && rm ${data}/probe`);
  t.context.daemon = await startDaemon({ dataDir: data, mount: mnt, s3: true });
});

test.after.always(async (t) => {
  const { root, data, daemon } = t.context;
  if (!root) return;
  const problems: string[] = [];
  if (daemon) {
    const code = await daemon.stop();
    if (code !== 0 && code !== null) problems.push(`mountd exited with ${code}\n${daemon.log()}`);
  }
  for (const m of await fuseMountsUnder(root)) {
    problems.push(`FUSE mount left behind: ${m}`);
    await run('fusermount', ['-uz', m]).catch(() => undefined);
  }
  if (t.context.tmpfs) {
    const r = await run('umount', [data]);
    if (r.code !== 0) {
      problems.push(`umount ${data}: ${r.stderr}`);
      await run('umount', ['-l', data]).catch(() => undefined);
    }
  }
  const left = await mountsUnder(root);
  if (left.length > 0) problems.push(`mounts left behind: ${left.join(', ')}`);
  else await removeDir(root);
  if (problems.length > 0) throw new Error(problems.join('\n'));
});

/** A Python writer: appends `chunkMiB` chunks to FILE until `limitMiB` or an error; then fsync and close, reporting each step's errno. */
const FILL_PY = String.raw`
import json, os, sys
cfg = json.loads(sys.stdin.readline())
res = {'written': 0, 'writeErrno': None, 'fsyncErrno': None, 'closeErrno': None}
fd = os.open(cfg['file'], os.O_WRONLY | os.O_CREAT | (os.O_APPEND if cfg.get('append') else os.O_TRUNC), 0o644)
chunk = os.urandom(cfg['chunk'])
while res['written'] < cfg['limit']:
    try:
        res['written'] += os.write(fd, chunk)
    except OSError as e:
        res['writeErrno'] = e.errno
        break
try:
    os.fsync(fd)
except OSError as e:
    res['fsyncErrno'] = e.errno
try:
    os.close(fd)
except OSError as e:
    res['closeErrno'] = e.errno
print(json.dumps(res))
`;

interface Fill {
  written: number;
  writeErrno: number | null;
  fsyncErrno: number | null;
  closeErrno: number | null;
}

const ENOSPC = 28;

async function dfFree(dir: string): Promise<number> {
  const s = await fsp.statfs(dir);
  return s.bavail * s.bsize;
}

fuseTest('a full data directory: ENOSPC at the mount, 507 at S3, committed files intact, space given back, writes work again', async (t) => {
  const { data, mnt, daemon } = t.context;
  const port = daemon!.s3Port!;
  const committed = new Map<string, string>();
  t.is((await s3request(port, { method: 'PUT', path: '/full' })).status, 200);
  for (let i = 0; i < 4; i++) {
    const body = randomBytes(MiB + i * 70_000);
    t.is((await s3request(port, { method: 'PUT', path: `/full/s3-${i}.bin`, body })).status, 200);
    committed.set(`s3-${i}.bin`, sha256hex(body));
  }
  // Files written through the mount and closed; two of them get appended to when the disk is full.
  for (const [name, size] of [['m-0.bin', 300_000], ['m-1.bin', 65536 * 3], ['grow-a.bin', 100_000], ['grow-b.bin', 65536 * 2]] as const) {
    const local = path.join(t.context.root, name);
    const body = randomBytes(size);
    await fsp.writeFile(local, body);
    await sh(`cp ${local} ${mnt}/full/${name}`);
    committed.set(name, sha256hex(body));
  }
  t.log(`free before filling: ${((await dfFree(data)) / MiB).toFixed(1)} MiB`);

  // Fill through the mount: 1 MiB writes until the daemon says the disk is full.
  const fill = await runPython<Fill>(FILL_PY, { file: `${mnt}/full/fill-mount.bin`, chunk: MiB, limit: 200 * MiB });
  t.log(`mount fill: ${fill.written} bytes accepted; write errno ${fill.writeErrno}, fsync errno ${fill.fsyncErrno}, close errno ${fill.closeErrno}`);
  t.true([fill.writeErrno, fill.fsyncErrno, fill.closeErrno].includes(ENOSPC), 'the mount reports ENOSPC (on a write, the fsync or the close)');
  t.false([fill.writeErrno, fill.fsyncErrno, fill.closeErrno].some((e) => e !== null && e !== ENOSPC), 'and no other error');

  // A failed flush puts the file back as it was: fill the rest through S3 until it says full too.
  const fillers: string[] = [];
  for (const size of [4 * MiB, MiB, 256 * 1024]) {
    for (let i = 0; i < 64; i++) {
      const name = `fill-s3-${fillers.length}.bin`;
      const r = await s3request(port, { method: 'PUT', path: `/full/${name}`, body: randomBytes(size) });
      if (r.status !== 200) {
        t.is(r.status, 507, r.text);
        break;
      }
      fillers.push(name);
    }
  }
  t.log(`S3 fill: ${fillers.length} more objects until 507; ${((await dfFree(data)) / MiB).toFixed(2)} MiB left`);

  // S3 on a full disk: a 5xx, and no temp file left behind.
  const full = await s3request(port, { method: 'PUT', path: '/full/s3-big.bin', body: randomBytes(8 * MiB) });
  t.is(full.status, 507, full.text);
  t.is(errorCode(full), 'XMountdStorageFull');
  t.is((await s3request(port, { method: 'HEAD', path: '/full/s3-big.bin' })).status, 404, 'nothing partial is visible');
  t.deepEqual(await fsp.readdir(path.join(data, '.mountd', 'tmp')), [], 'the failed PUT left no temp file');
  // Appends to committed files on the full disk fail, and must not damage what they held.
  for (const name of ['grow-a.bin', 'grow-b.bin']) {
    const a = await runPython<Fill>(FILL_PY, { file: `${mnt}/full/${name}`, append: true, chunk: 256 * 1024, limit: 8 * MiB });
    t.true([a.writeErrno, a.fsyncErrno, a.closeErrno].includes(ENOSPC), `${name}: the append reports ENOSPC (${JSON.stringify(a)})`);
  }
  // Multipart parts on a full disk: 507 too.
  const init = await s3request(port, { method: 'POST', path: '/full/mp.bin', query: { uploads: '' } });
  const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(init.text)?.[1];
  if (init.status === 200 && uploadId) {
    const part = await s3request(port, { method: 'PUT', path: '/full/mp.bin', query: { partNumber: '1', uploadId }, body: randomBytes(8 * MiB) });
    t.is(part.status, 507, part.text);
    t.is((await s3request(port, { method: 'DELETE', path: '/full/mp.bin', query: { uploadId } })).status, 204);
  } else {
    t.is(init.status, 507, `CreateMultipartUpload on a full disk: ${init.status} ${init.text}`);
  }

  // Nothing committed before is damaged, through either door.
  const check = async (when: string) => {
    const onMount = await hashOnMount(`${mnt}/full`, [...committed.keys()]);
    for (const [name, sha] of committed) {
      t.is(onMount[name], sha, `${when}: ${name} through the mount`);
      const r = await s3request(port, { method: 'GET', path: `/full/${name}` });
      t.is(r.status === 200 ? sha256hex(r.body) : `${r.status} ${errorCode(r)}`, sha, `${when}: ${name} through S3`);
    }
  };
  await check('disk full');
  // The file that filled the disk: what reads back is a prefix of what was written (no wrong bytes); it is then removed.
  const partial = await runPython<{ size: number; errno: number | null }>(
    'import json, os, sys\ncfg = json.loads(sys.stdin.readline())\nr = {"size": os.stat(cfg["f"]).st_size, "errno": None}\ntry:\n    open(cfg["f"], "rb").read()\nexcept OSError as e:\n    r["errno"] = e.errno\nprint(json.dumps(r))',
    { f: `${mnt}/full/fill-mount.bin` },
  );
  t.log(`the file that filled the disk: ${partial.size} bytes, read ${partial.errno === null ? 'whole' : `fails with errno ${partial.errno}`}`);
  t.is(partial.errno, null, 'the file that hit ENOSPC reads back (its last committed state), no EIO');

  // Deleting gives the space back; writes work again through both doors.
  const freeFull = await dfFree(data);
  await sh(`rm ${mnt}/full/fill-mount.bin`);
  for (const name of fillers) t.is((await s3request(port, { method: 'DELETE', path: `/full/${name}` })).status, 204);
  const freeAfter = await dfFree(data);
  t.log(`free with the disk full: ${(freeFull / MiB).toFixed(1)} MiB; after deleting the filler: ${(freeAfter / MiB).toFixed(1)} MiB`);
  t.true(freeAfter > freeFull + 16 * MiB, 'the space is given back');
  const again = randomBytes(8 * MiB);
  t.is((await s3request(port, { method: 'PUT', path: '/full/s3-big.bin', body: again })).status, 200);
  committed.set('s3-big.bin', sha256hex(again));
  const w = await runPython<Fill>(FILL_PY, { file: `${mnt}/full/after.bin`, chunk: MiB, limit: 4 * MiB });
  t.deepEqual([w.written, w.writeErrno, w.fsyncErrno, w.closeErrno], [4 * MiB, null, null, null], 'the mount writes again');
  await check('after the space came back');
  t.deepEqual(await fsp.readdir(path.join(data, '.mountd', 'tmp')), [], '.mountd/tmp is clean');
  const errors = daemon!.log().split('\n').filter((l) => / mountd error /.test(l) && !/no space|ENOSPC|ENGINE_NO_SPACE/i.test(l));
  t.deepEqual(errors, [], 'nothing but "no space" was logged as an error');
});
