// The secrets scan of a whole daemon run: a real mountd (mount, S3 listener, embedded key server)
// writes plaintext markers through both doors (SSE-S3, SSE-KMS, SSE-C, multipart, mount writes,
// appends, renames), rotates a key, and fails on purpose (a disabled key, a wrong customer key, a
// deleted key, a kill -9 with buffered writes). Then the data directory, every file the run left
// in the OS temp directory, and the daemon's and mountctl's output are searched for the markers
// and for every key (master key, EKs, DEKs, OEKs, the customer key) in every encoding.
import anyTest, { type TestFn } from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { openEmbeddedKeyService } from '../src/kms/embedded.js';
import { collectFileKeys, collectKeyServerSecrets, markerSecret, needles, scanForSecrets, type Secret } from './helpers/scan.js';
import { HAS_FUSE, mountctl, sh, startMount, type MountFixture, reportMissingFuse } from './helpers/mount.js';
import { s3request } from './helpers/s3.js';

const test = anyTest as TestFn<{ fx: MountFixture }>;
const fuseTest = HAS_FUSE ? test.serial : test.serial.skip;

reportMissingFuse(test, 'secrets-daemon.test.ts', 'the daemon secrets scan');

const MARKER = `SECRET-MARKER-${randomBytes(6).toString('hex')}-plaintext`;
const body = (n: number) => Buffer.from(`${MARKER}\n`.repeat(Math.ceil(n / (MARKER.length + 1)))).subarray(0, n);
const customerKey = randomBytes(32);
const ssec = {
  'x-amz-server-side-encryption-customer-algorithm': 'AES256',
  'x-amz-server-side-encryption-customer-key': customerKey.toString('base64'),
  'x-amz-server-side-encryption-customer-key-md5': createHash('md5').update(customerKey).digest('base64'),
};

/**
 * Files below `dir` (no FUSE mount: -xdev) changed since `since`, skipping `skip`. A directory
 * that has not changed since then is not entered: nothing was created directly in it, and what a
 * daemon leaves in a temp directory is in it directly or in directories it made (new ones).
 * Only a file written into an existing tree deeper down would be missed. This keeps the walk of
 * a shared temp directory (other projects' trees, node_modules) to what this run could have made.
 */
async function newFiles(dir: string, since: number, skip: string[]): Promise<string[]> {
  const out: string[] = [];
  // One file system, as find -xdev: the temp dir also holds the live FUSE mounts of test files
  // running at the same time, and reading through them opens their files (a concurrent
  // fusermount -u then fails with EBUSY, an open-file count is one too many).
  const dev = (await fsp.stat(dir)).dev;
  const walk = async (d: string): Promise<void> => {
    for (const e of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(d, e.name);
      if (skip.some((s) => p === s || p.startsWith(s + path.sep))) continue;
      const st = await fsp.lstat(p).catch(() => null);
      if (!st || st.dev !== dev) continue;
      if (e.isDirectory()) {
        if (st.mtimeMs >= since - 1000 || st.ctimeMs >= since - 1000) await walk(p);
      }
      else if (e.isFile() && st.ctimeMs >= since - 1000) out.push(p);
    }
  };
  await walk(dir);
  return out;
}

fuseTest('no marker and no key material in the data directory, the temp directory or any log after a run that writes, rotates and fails', async (t) => {
  const started = Date.now();
  const fx = await startMount('secrets', { s3: true });
  t.teardown(() => fx.cleanup().catch(() => undefined));
  const port = fx.daemon.s3Port!;
  const mnt = fx.mnt;
  const ctlOutput: string[] = [];
  const ctl = async (...args: string[]) => {
    const r = await mountctl(fx.dataDir, args);
    ctlOutput.push(r.stdout, r.stderr);
    return r;
  };
  t.is((await ctl('key', 'create', 'team-key')).code, 0);
  t.is((await ctl('key', 'create', 'next-key')).code, 0);
  t.is((await ctl('key', 'create', 'doomed-key')).code, 0);

  // S3: default, SSE-KMS, SSE-C, metadata carrying the marker, a multipart upload.
  t.is((await s3request(port, { method: 'PUT', path: '/vault' })).status, 200);
  t.is((await s3request(port, { method: 'PUT', path: '/vault/s3-default', body: body(200_000), headers: { 'x-amz-meta-note': MARKER, 'content-type': 'text/x-marker' } })).status, 200);
  t.is((await s3request(port, { method: 'PUT', path: '/vault/s3-kms', body: body(70_000), headers: { 'x-amz-server-side-encryption': 'aws:kms', 'x-amz-server-side-encryption-aws-kms-key-id': 'team-key' } })).status, 200);
  t.is((await s3request(port, { method: 'PUT', path: '/vault/s3-doomed', body: body(1000), headers: { 'x-amz-server-side-encryption': 'aws:kms', 'x-amz-server-side-encryption-aws-kms-key-id': 'doomed-key' } })).status, 200);
  t.is((await s3request(port, { method: 'PUT', path: '/vault/s3-ssec', body: body(90_000), headers: ssec })).status, 200);
  const init = await s3request(port, { method: 'POST', path: '/vault/s3-multi', query: { uploads: '' } });
  const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(init.text)![1]!;
  const etags: string[] = [];
  for (const n of [1, 2]) {
    const r = await s3request(port, { method: 'PUT', path: '/vault/s3-multi', query: { partNumber: String(n), uploadId }, body: body(n === 1 ? 5 * 1024 * 1024 : 1000) });
    t.is(r.status, 200);
    etags.push(String(r.headers.etag));
  }
  const complete = `<CompleteMultipartUpload>${etags.map((e, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${e}</ETag></Part>`).join('')}</CompleteMultipartUpload>`;
  t.is((await s3request(port, { method: 'POST', path: '/vault/s3-multi', query: { uploadId }, body: complete })).status, 200);
  // An abandoned upload keeps its (encrypted) parts: they are scanned too.
  const open = await s3request(port, { method: 'POST', path: '/vault/s3-abandoned', query: { uploads: '' } });
  const openId = /<UploadId>([^<]+)<\/UploadId>/.exec(open.text)![1]!;
  t.is((await s3request(port, { method: 'PUT', path: '/vault/s3-abandoned', query: { partNumber: '1', uploadId: openId }, body: body(300_000) })).status, 200);

  // The mount: writes, appends, an editor-style save, a directory rename, user metadata.
  const m = (s: string) => `printf '%s\\n' ${MARKER}`.concat(s);
  await sh(`mkdir -p ${mnt}/vault/dir && for i in $(seq 1 2000); do echo ${MARKER}; done > ${mnt}/vault/dir/big && ${m(` >> ${mnt}/vault/dir/big`)}`);
  await sh(`${m(` > ${mnt}/vault/.save.tmp`)} && mv ${mnt}/vault/.save.tmp ${mnt}/vault/saved && mv ${mnt}/vault/dir ${mnt}/vault/moved`);
  await sh(`setfattr -n user.note -v ${MARKER} ${mnt}/vault/saved`);
  // Rotation of team-key to next-key (streams progress through mountctl).
  t.is((await ctl('key', 'rotate', '--from', 'team-key', '--to', 'next-key')).code, 0);

  // Failures: a wrong customer key, a disabled key (read and write refused), a deleted key.
  const wrong = { ...ssec, 'x-amz-server-side-encryption-customer-key': randomBytes(32).toString('base64') };
  wrong['x-amz-server-side-encryption-customer-key-md5'] = createHash('md5').update(Buffer.from(wrong['x-amz-server-side-encryption-customer-key'], 'base64')).digest('base64');
  t.is((await s3request(port, { method: 'GET', path: '/vault/s3-ssec', headers: wrong })).status, 403);
  t.is((await ctl('key', 'disable', 'next-key')).code, 0);
  t.is((await s3request(port, { method: 'GET', path: '/vault/s3-kms' })).status, 403);
  t.is((await s3request(port, { method: 'PUT', path: '/vault/s3-kms-2', body: body(10), headers: { 'x-amz-server-side-encryption': 'aws:kms', 'x-amz-server-side-encryption-aws-kms-key-id': 'next-key' } })).status, 403);
  t.is((await ctl('key', 'enable', 'next-key')).code, 0);

  // Collect every key while the files can still be opened (before the delete), from a second
  // key service on the same keystore (the fs keystore is read-only here).
  const keys = await openEmbeddedKeyService({ internalDir: path.join(fx.dataDir, '.mountd') });
  const secrets: Secret[] = [markerSecret(MARKER), { label: 'customer key', bytes: customerKey }];
  secrets.push(...(await collectFileKeys(fx.dataDir, keys, [customerKey])));
  secrets.push(...(await collectKeyServerSecrets(fx.dataDir)));
  t.is((await ctl('key', 'delete', 'doomed-key', '--yes')).code, 0);
  t.is((await s3request(port, { method: 'GET', path: '/vault/s3-doomed' })).status, 404);

  // A crash with writes buffered in the daemon: kill -9, restart, the mount works again.
  const writer = sh(`python3 -c "
import os, time
f = open('${mnt}/vault/crashing', 'wb')
for i in range(200):
    f.write(b'${MARKER}\\n' * 500)
    time.sleep(0.005)
"`).catch(() => undefined);
  await new Promise((r) => setTimeout(r, 400));
  await fx.daemon.kill();
  await writer;
  await sh(`fusermount -uz ${mnt} || true`);
  const logs = [fx.daemon.log()];
  await fx.restart({ s3: true });
  t.true((await sh(`cat ${mnt}/vault/saved`)).includes(MARKER));
  secrets.push(...(await collectFileKeys(fx.dataDir, keys, [customerKey])));

  const labels = secrets.map((s) => s.label);
  for (const want of ['master key', 'EK team-key', 'EK next-key', 'EK doomed-key', 'OEK of vault/s3-ssec', 'DEK of vault/s3-kms', 'OEK of vault/s3-multi', 'OEK of vault/moved/big', 'DEK of vault/s3-doomed']) {
    t.true(labels.includes(want), `collected ${want}`);
  }
  await fx.daemon.stop();
  logs.push(fx.daemon.log());

  // 1. The data directory: file contents and xattrs.
  const inData = await scanForSecrets(fx.dataDir, secrets);
  t.deepEqual(inData, [], 'secrets in the data directory');
  // 2. Every file this run created or changed in the OS temp directory (other than the data
  //    directory just scanned and the mount point).
  const tmpFiles = await newFiles(os.tmpdir(), started, [fx.dataDir, fx.mnt]);
  const prepared = secrets.map((s) => ({ s, n: needles(s.bytes) }));
  const inTmp: string[] = [];
  for (const f of tmpFiles) {
    const data = await fsp.readFile(f).catch(() => Buffer.alloc(0));
    for (const { s, n } of prepared) for (const x of n) if (x.bytes.length > 0 && data.includes(x.bytes)) inTmp.push(`${s.label} (${x.how}) in ${f}`);
  }
  t.deepEqual(inTmp, [], 'secrets in files the run left in the temp directory');
  // 3. The daemon's output (both runs) and mountctl's.
  const output = Buffer.from([...logs, ...ctlOutput].join('\n'));
  const inLogs: string[] = [];
  for (const { s, n } of prepared) for (const x of n) if (x.bytes.length > 0 && output.includes(x.bytes)) inLogs.push(`${s.label} (${x.how})`);
  t.deepEqual(inLogs, [], 'secrets in the daemon or mountctl output');
  t.log(`${secrets.length} secrets (${labels.filter((l) => l.startsWith('DEK')).length} DEKs, ${labels.filter((l) => l.startsWith('OEK')).length} OEKs) sought in ${tmpFiles.length} new temp files, the data directory and ${output.length} bytes of output`);
  t.true(output.length > 500, 'the daemon did log');
});
