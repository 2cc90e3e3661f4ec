// mountctl and the control socket against a real daemon: status, keys, stat, verify, unmount, socket permissions, the route table.
import anyTest, { type TestFn } from 'ava';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { ROUTES, callControl, ControlError } from '../src/control/index.js';
import { HAS_FUSE, fuseMountsUnder, mountctl, sh, startFdHolder, startMount, type MountFixture, reportMissingFuse } from './helpers/mount.js';

const test = anyTest as TestFn<{ fx: MountFixture; sock: string }>;
const daemonTest = HAS_FUSE ? test.serial : test.skip;

reportMissingFuse(test, 'mountctl.test.ts', 'mountctl tests against a mounted daemon');

test.before(async (t) => {
  if (!HAS_FUSE) return;
  const fx = await startMount('ctl');
  t.context = { fx, sock: path.join(fx.dataDir, '.mountd', 'control.sock') };
  await sh(`mkdir ${fx.mnt}/ctl-bucket && echo hello > ${fx.mnt}/ctl-bucket/file.txt && mkdir ${fx.mnt}/ctl-bucket/dir && echo x > ${fx.mnt}/ctl-bucket/dir/y`);
});

test.after.always(async (t) => {
  if (t.context.fx) await t.context.fx.cleanup();
});

const ctl = (t: { context: { fx: MountFixture } }, ...args: string[]) => mountctl(t.context.fx.dataDir, args);

/** One raw request line on the socket, one raw response line back. */
async function raw(sock: string, line: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const c = net.connect(sock);
    let buf = '';
    c.on('connect', () => c.write(line + '\n'));
    c.on('data', (d) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        c.end();
        resolve(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
      }
    });
    c.on('error', reject);
  });
}

test('the route table is pinned: changing the control API is deliberate', (t) => {
  t.deepEqual(
    ROUTES.map((r) => ({ command: r.command, args: r.args, timeoutMs: r.timeoutMs, after: r.after !== undefined })),
    [
      { command: 'status', args: {}, timeoutMs: 10_000, after: false },
      { command: 'key.create', args: { name: { type: 'string', required: true } }, timeoutMs: 30_000, after: false },
      { command: 'key.list', args: { prefix: { type: 'string', required: false } }, timeoutMs: 30_000, after: false },
      { command: 'key.disable', args: { name: { type: 'string', required: true } }, timeoutMs: 120_000, after: false },
      { command: 'key.enable', args: { name: { type: 'string', required: true } }, timeoutMs: 30_000, after: false },
      { command: 'key.delete', args: { name: { type: 'string', required: true }, confirm: { type: 'boolean', required: true } }, timeoutMs: 120_000, after: false },
      { command: 'key.rotate', args: { from: { type: 'string', required: true }, to: { type: 'string', required: true }, bucket: { type: 'string', required: false } }, timeoutMs: 24 * 3600_000, after: false },
      { command: 'verify', args: { bucket: { type: 'string', required: false }, prefix: { type: 'string', required: false } }, timeoutMs: 24 * 3600_000, after: false },
      { command: 'stat', args: { bucket: { type: 'string', required: true }, key: { type: 'string', required: true } }, timeoutMs: 30_000, after: false },
      { command: 'unmount', args: {}, timeoutMs: 10_000, after: true },
    ],
  );
});

daemonTest('verify: every file authenticates (data, symlinks, empty files); a flipped byte is found, named and exits 1; a disabled key is reported as locked, not as damage', async (t) => {
  const { fx } = t.context;
  const b = `${fx.mnt}/verify-b`;
  await sh(`mkdir -p ${b}/sub && head -c 300000 /dev/urandom > ${b}/big && echo small > ${b}/sub/small && ln -s sub/small ${b}/link && : > ${b}/empty`);
  let r = await ctl(t, 'verify', 'verify-b');
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^verified: 4 files, 4 ok, 0 damaged; 0\.3 MB in /);
  r = await ctl(t, 'verify', 's3://verify-b/sub/', '--json');
  t.is(r.code, 0, r.stderr);
  t.like(JSON.parse(r.stdout), { scanned: 1, ok: 1, failed: 0, bytes: 6, done: true, damaged: [] });
  r = await ctl(t, 'verify', `${b}/sub`, '--json');
  t.like(JSON.parse(r.stdout), { scanned: 1, ok: 1 });
  t.is((await ctl(t, 'verify', 'no-such-bucket')).code, 1);

  // One flipped ciphertext byte in the backing file: the whole-store run names the file and exits 1.
  const backing = path.join(fx.dataDir, 'verify-b', 'big');
  const fh = await fsp.open(backing, 'r+');
  const one = Buffer.alloc(1);
  await fh.read(one, 0, 1, 150_000);
  await fh.write(Buffer.from([one[0]! ^ 0x01]), 0, 1, 150_000);
  r = await ctl(t, 'verify');
  t.is(r.code, 1, r.stdout);
  t.regex(r.stdout, /^verified: \d+ files, \d+ ok, 1 damaged;/);
  t.regex(r.stdout, /\n {2}damaged: verify-b\/big package \d+: integrity check failed\n/);
  t.regex(r.stderr, /1 file\(s\) failed verification/);
  await fh.write(one, 0, 1, 150_000);
  await fh.close();
  t.is((await ctl(t, 'verify', 'verify-b')).code, 0, 'the byte put back, the file verifies again');

  // Under a disabled key nothing can be checked, and nothing is called damaged.
  t.is((await ctl(t, 'key', 'disable', 'mountd-default')).code, 0);
  try {
    r = await ctl(t, 'verify', 'verify-b');
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, /^verified: 4 files, 0 ok, 0 damaged, 4 locked \(not checked\);/);
    t.regex(r.stdout, /\n {2}locked: verify-b\/big: /);
  } finally {
    t.is((await ctl(t, 'key', 'enable', 'mountd-default')).code, 0);
  }
});

daemonTest('the control socket is 0600 in a 0700 directory, owned by the daemon user', async (t) => {
  const st = await fsp.lstat(t.context.sock);
  t.true(st.isSocket());
  t.is(st.mode & 0o777, 0o600);
  t.is(st.uid, process.getuid!());
  t.is((await fsp.stat(path.dirname(t.context.sock))).mode & 0o777, 0o700);
});

daemonTest('status --json: mount point, S3, key server, keys with their state, open files, caches', async (t) => {
  const r = await ctl(t, 'status', '--json');
  t.is(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout) as Record<string, unknown>;
  t.deepEqual(Object.keys(s).sort(), ['dataDir', 'defaultKey', 'dekCache', 'dirtyBytes', 'handles', 'keyServer', 'keys', 'maxDirtyBytes', 'mount', 'openFiles', 'pid', 's3', 'startedAt', 'uptimeSeconds'].sort());
  const binding = process.env.MOUNTD_FUSE_BINDING || 'lowlevel';
  t.like(s.mount as object, { mountPoint: t.context.fx.mnt, error: null, binding });
  const nodes = (s.mount as { nodes: number | null }).nodes;
  if (binding === 'lowlevel') t.true(typeof nodes === 'number' && nodes >= 1, `nodes: ${nodes}`);
  else t.is(nodes, null);
  t.deepEqual(s.s3, { address: null });
  t.is(s.pid, t.context.fx.daemon.proc.pid);
  t.is(s.dataDir, t.context.fx.dataDir);
  t.like(s.keyServer as object, { kind: 'embedded', reachable: true });
  t.is(s.defaultKey, 'mountd-default');
  t.like((s.keys as Array<object>).find((k) => (k as { name: string }).name === 'mountd-default'), { enabled: true, algorithm: 'AES256' });
  t.is(typeof s.openFiles, 'number');
  t.is(typeof s.dirtyBytes, 'number');
  t.like(s.dekCache as object, { max: 10_000 });
});

daemonTest('status shows open files and buffered bytes while a file is being written', async (t) => {
  const holder = startFdHolder();
  t.teardown(() => holder.close());
  const fd = (await holder.send(`open ${t.context.fx.mnt}/ctl-bucket/file.txt rw`)).split(' ')[1];
  t.is(await holder.send(`pwrite ${fd} 0 ${Buffer.alloc(1000, 1).toString('hex')}`), 'ok 1000');
  const s = (await callControl(t.context.sock, 'status')) as { openFiles: number; handles: number; dirtyBytes: number };
  t.is(s.openFiles, 1);
  t.is(s.handles, 1);
  t.true(s.dirtyBytes > 0, 'the write is buffered until flush');
  await holder.send(`close ${fd}`);
  await sh(`echo hello > ${t.context.fx.mnt}/ctl-bucket/file.txt`);
});

// The low-level binding's node table follows the kernel: every lookup is counted, and the nodes
// the kernel forgets (here: dentries dropped with drop_caches) leave the table.
daemonTest('the node table of the mount shrinks again when the kernel forgets what it looked up', async (t) => {
  if ((process.env.MOUNTD_FUSE_BINDING || 'lowlevel') !== 'lowlevel') {
    t.pass('fuse-native keeps no node table of ours');
    return;
  }
  const dir = `${t.context.fx.mnt}/ctl-bucket/nodes`;
  await sh(`mkdir -p ${dir} && for i in $(seq 1 300); do echo $i > ${dir}/f$i; done && ls -l ${dir} > /dev/null`);
  const nodes = async () => ((await callControl(t.context.sock, 'status')) as { mount: { nodes: number } }).mount.nodes;
  const full = await nodes();
  t.true(full >= 300, `after 300 creates and a listing the kernel holds ${full} nodes`);
  await sh(`rm -rf ${dir}`);
  await sh('sync; echo 2 > /proc/sys/vm/drop_caches');
  let after = await nodes();
  // The kernel's FORGETs reach the daemon in their own time: up to 20 s on a loaded machine.
  for (const end = Date.now() + 20_000; after >= 50 && Date.now() < end; ) {
    await new Promise((r) => setTimeout(r, 100));
    after = await nodes();
  }
  t.true(after < 50, `after rm -rf and drop_caches ${after} nodes are left (from ${full})`);
});

// st_ino is the backing file's inode number, not the node id: it survives the kernel forgetting
// the node (git, backup tools and find -inum compare inode numbers from one run to the next).
daemonTest('a file keeps its inode number when the kernel forgets it and looks it up again; listings agree', async (t) => {
  if ((process.env.MOUNTD_FUSE_BINDING || 'lowlevel') !== 'lowlevel') {
    t.pass('fuse-native numbers inodes by libfuse node (its high-level API without use_ino)');
    return;
  }
  const dir = `${t.context.fx.mnt}/ctl-bucket/inodes`;
  await sh(`mkdir -p ${dir} && echo one > ${dir}/a && echo two > ${dir}/b`);
  const before = (await fsp.stat(`${dir}/a`)).ino;
  const backing = (await fsp.stat(path.join(t.context.fx.dataDir, 'ctl-bucket', 'inodes', 'a'))).ino;
  t.is(before, backing, 'st_ino is the backing file\'s inode number');
  t.not((await fsp.stat(`${dir}/b`)).ino, before);
  // ls -i reads d_ino from the listing; for a name the kernel has looked up it is the same.
  const listed = (await sh(`ls -i ${dir}`)).split('\n').find((l) => / a$/.test(l.trim()));
  t.is(Number(listed?.trim().split(/\s+/)[0]), before, `ls -i: ${listed}`);
  await sh('sync; echo 2 > /proc/sys/vm/drop_caches');
  t.is((await fsp.stat(`${dir}/a`)).ino, before, 'the same number after the kernel forgot the node');
  await sh(`rm -rf ${dir}`);
});

daemonTest('status in human form', async (t) => {
  const r = await ctl(t, 'status');
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, new RegExp(`mount: +${t.context.fx.mnt} \\((lowlevel binding, \\d+ nodes held by the kernel|fuse-native binding)\\)\\n`));
  t.regex(r.stdout, /S3: +off/);
  t.regex(r.stdout, /key server: +embedded .*reachable/);
  t.regex(r.stdout, /mountd-default +enabled .*\(default\)/);
  t.regex(r.stdout, /DEK cache: +\d+ of 10000 entries/);
});

daemonTest('key create, list, disable, enable; delete needs --yes', async (t) => {
  t.is((await ctl(t, 'key', 'create', 'ctl-key')).stdout, 'created key ctl-key\n');
  const dup = await ctl(t, 'key', 'create', 'ctl-key');
  t.is(dup.code, 1);
  t.regex(dup.stderr, /KMS_KEY_EXISTS/);
  const list = JSON.parse((await ctl(t, 'key', 'list', '--json')).stdout) as Array<{ name: string; enabled: boolean }>;
  t.deepEqual(list.map((k) => [k.name, k.enabled]), [['ctl-key', true], ['mountd-default', true]]);
  t.regex((await ctl(t, 'key', 'disable', 'ctl-key')).stdout, /disabled key ctl-key/);
  t.regex((await ctl(t, 'key', 'list', 'ctl')).stdout, /ctl-key +DISABLED/);
  t.notRegex((await ctl(t, 'key', 'list', 'ctl')).stdout, /mountd-default/, 'a prefix filters');
  t.regex((await ctl(t, 'key', 'enable', 'ctl-key')).stdout, /enabled key ctl-key/);
  const noYes = await ctl(t, 'key', 'delete', 'ctl-key');
  t.is(noYes.code, 2);
  t.regex(noYes.stderr, /without --yes/);
  t.regex((await ctl(t, 'key', 'list')).stdout, /ctl-key/, 'still there');
  const raw = await callControl(t.context.sock, 'key.delete', { name: 'ctl-key', confirm: false }).catch((e: ControlError) => e);
  t.is((raw as ControlError).code, 'ENGINE_INVALID_ARGUMENT', 'the daemon also wants the confirmation');
  t.is((await ctl(t, 'key', 'delete', 'ctl-key', '--yes')).code, 0);
  t.notRegex((await ctl(t, 'key', 'list')).stdout, /ctl-key/);
  const missing = await ctl(t, 'key', 'disable', 'no-such-key', '--json');
  t.is(missing.code, 1);
  t.deepEqual(Object.keys(JSON.parse(missing.stderr).error), ['code', 'message']);
});

daemonTest('stat FILE: by path under the mount, relative path, BUCKET/KEY and s3://; never key material', async (t) => {
  const { fx } = t.context;
  const viaPath = JSON.parse((await ctl(t, 'stat', `${fx.mnt}/ctl-bucket/dir/y`, '--json')).stdout) as Record<string, unknown>;
  t.deepEqual(Object.keys(viaPath).sort(), ['algorithm', 'bucket', 'fileId', 'formatVersion', 'key', 'keyName', 'keyUsable', 'kind']);
  t.like(viaPath, { bucket: 'ctl-bucket', key: 'dir/y', algorithm: 'AES-256-GCM', formatVersion: 1, kind: 'default', keyName: 'mountd-default', keyUsable: true });
  t.regex(viaPath.fileId as string, /^[0-9a-f]{32}$/);
  t.deepEqual(JSON.parse((await ctl(t, 'stat', 'ctl-bucket/dir/y', '--json')).stdout), viaPath);
  t.deepEqual(JSON.parse((await ctl(t, 'stat', 's3://ctl-bucket/dir/y', '--json')).stdout), viaPath);
  const rel = await mountctl(fx.dataDir, ['stat', 'dir/y', '--json'], { cwd: `${fx.mnt}/ctl-bucket` });
  t.deepEqual(JSON.parse(rel.stdout), viaPath, rel.stderr);
  const human = await ctl(t, 'stat', `${fx.mnt}/ctl-bucket/file.txt`);
  t.regex(human.stdout, /encryption: +AES-256-GCM, format version 1\nkey: +mountd-default \(default key\)\nkey usable: +yes/);
  const missing = await ctl(t, 'stat', `${fx.mnt}/ctl-bucket/nope`);
  t.is(missing.code, 1);
  t.regex(missing.stderr, /not found \[ENGINE_NOT_FOUND\]/);
  const bucketOnly = await ctl(t, 'stat', `${fx.mnt}/ctl-bucket`);
  t.is(bucketOnly.code, 2);
  const outside = await ctl(t, 'stat', '/etc/passwd');
  t.is(outside.code, 2);
  t.regex(outside.stderr, /not under the mount point/);
});

daemonTest('usage errors exit 2; an unreachable daemon exits 3', async (t) => {
  t.is((await ctl(t, 'frobnicate')).code, 2);
  t.is((await ctl(t, 'key')).code, 2);
  t.is((await ctl(t)).code, 2);
  const help = await ctl(t, '--help');
  t.is(help.code, 0);
  t.regex(help.stdout, /Exit codes/);
  const none = await mountctl(path.join(t.context.fx.root, 'no-such-data'), ['status']);
  t.is(none.code, 3);
  t.regex(none.stderr, /no daemon is listening on .*no-such-data\/\.mountd\/control\.sock/);
  const viaControl = await mountctl('/nonexistent', ['--control', t.context.sock, 'status', '--json']);
  t.is(viaControl.code, 0, '--control wins over --data');
});

daemonTest('the socket refuses malformed requests with stable codes', async (t) => {
  const { sock } = t.context;
  t.like(await raw(sock, 'not json'), { ok: false, error: { code: 'CONTROL_BAD_REQUEST', message: 'request is not JSON' } });
  t.like(await raw(sock, '{"command":"nope","id":7}'), { ok: false, id: 7, error: { code: 'CONTROL_UNKNOWN_COMMAND' } });
  t.like(await raw(sock, '{"command":"key.create","args":{"name":"x","extra":1}}'), { ok: false, error: { code: 'CONTROL_BAD_REQUEST' } });
  t.like(await raw(sock, '{"command":"key.create","args":{"name":5}}'), { ok: false, error: { code: 'CONTROL_BAD_REQUEST' } });
  t.like(await raw(sock, '{"command":"status","v":2}'), { ok: false, error: { code: 'CONTROL_BAD_REQUEST' } });
  t.like(await raw(sock, '{"command":"status","v":1,"id":"a"}'), { ok: true, id: 'a', v: 1 });
  t.like(await raw(sock, 'x'.repeat(70 * 1024)), { ok: false, error: { code: 'CONTROL_BAD_REQUEST' } });
});

daemonTest('unmount flushes buffered writes, unmounts and stops the daemon', async (t) => {
  const { fx } = t.context;
  const holder = startFdHolder();
  t.teardown(() => holder.close());
  const fd = (await holder.send(`open ${fx.mnt}/ctl-bucket/file.txt rw`)).split(' ')[1];
  t.is(await holder.send(`pwrite ${fd} 0 ${Buffer.from('HELLO').toString('hex')}`), 'ok 5');
  const r = await ctl(t, 'unmount');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'flushed, unmounted and stopped\n');
  t.is(await fx.daemon.stop(), 0);
  t.deepEqual(await fuseMountsUnder(fx.root), []);
  await fsp.access(t.context.sock).then(
    () => t.fail('socket left behind'),
    () => t.pass(),
  );
  await holder.close();
  await fx.restart();
  t.is(await sh(`cat ${fx.mnt}/ctl-bucket/file.txt`), 'HELLO\n', 'the buffered write reached the disk');
});

daemonTest('key rotate re-wraps every file to the new key with progress lines; the old key can then be disabled', async (t) => {
  const { fx } = t.context;
  await sh(`mkdir -p ${fx.mnt}/rot/a/b && for i in $(seq 1 120); do echo "rotated file $i" > ${fx.mnt}/rot/a/b/f$i; done`);
  t.is((await ctl(t, 'key', 'create', 'rotation-target')).code, 0);
  const r = await ctl(t, 'key', 'rotate', '--from', 'mountd-default', '--to', 'rotation-target', '--bucket', 'rot');
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /rotation done: 120 rotated, 0 skipped, 0 failed, 120 scanned in [\d.]+ s \(\d+ files\/s\)/);
  t.regex(r.stderr, /rotat/, 'progress lines go to stderr');
  const stat = await ctl(t, '--json', 'stat', `${fx.mnt}/rot/a/b/f7`);
  t.is((JSON.parse(stat.stdout) as { keyName: string }).keyName, 'rotation-target');
  // Running it again resumes: nothing left to do.
  const again = await ctl(t, '--json', 'key', 'rotate', '--from', 'mountd-default', '--to', 'rotation-target', '--bucket', 'rot');
  t.is(again.code, 0, again.stderr);
  t.like(JSON.parse(again.stdout), { rotated: 0, skipped: 120, failed: 0, done: true });
  // Files outside the bucket stay under the old key; the rotated ones no longer need it.
  t.is((await ctl(t, 'key', 'disable', 'mountd-default')).code, 0);
  try {
    t.is((await sh(`cat ${fx.mnt}/rot/a/b/f7`)).trim(), 'rotated file 7');
    await t.throwsAsync(sh(`cat ${fx.mnt}/ctl-bucket/file.txt`), { message: /Required key not available/ });
  } finally {
    t.is((await ctl(t, 'key', 'enable', 'mountd-default')).code, 0);
  }
  const bad = await ctl(t, 'key', 'rotate', '--from', 'mountd-default', '--to', 'no-such-key');
  t.is(bad.code, 1);
  t.regex(bad.stderr, /KMS_KEY_NOT_FOUND/);
});
