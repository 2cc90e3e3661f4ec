// Real S3 clients (aws CLI, boto3, s3cmd, rclone, s3fs) against a real mountd listener on 127.0.0.1, and the two doors together.
import { createHash, randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import test from 'ava';
import { ROOT, removeDir, startDaemon, type Daemon } from './helpers/daemon.js';
import { tempDir } from './helpers/engine.js';
import { HAS_FUSE, fuseMountsUnder, reportMissingFuse, sh } from './helpers/mount.js';
import { CREDS, awsEnv, rawExchange, run, type RunResult } from './helpers/s3.js';

let daemon: Daemon;
/** The tests that need a FUSE mount (ours, and s3fs's) run where /dev/fuse exists, and say so loudly where it does not. */
const fuseTest = HAS_FUSE ? test : test.skip;
reportMissingFuse(test, 's3-clients.test.ts', 'the two-doors test and the s3fs test');
let endpoint: string;
let work: string;

test.before(async () => {
  daemon = await startDaemon({ s3: true });
  endpoint = `http://127.0.0.1:${daemon.s3Port}`;
  work = await tempDir('mountd-s3-clients');
});

test.after.always(async () => {
  await daemon?.stop();
  await removeDir(daemon?.dataDir);
  await removeDir(work);
});

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

function aws(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  return run('aws', ['--endpoint-url', endpoint, ...args], { env: awsEnv(env), timeoutMs: 90_000 });
}

function ok(t: import('ava').ExecutionContext, r: RunResult, what: string): string {
  t.is(r.code, 0, `${what}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

async function tree(dir: string, files: Record<string, Buffer>): Promise<void> {
  for (const [rel, data] of Object.entries(files)) {
    await fsp.mkdir(path.dirname(path.join(dir, rel)), { recursive: true });
    await fsp.writeFile(path.join(dir, rel), data);
  }
}

test('aws s3: mb, cp, sync, ls, rm, rb', async (t) => {
  const src = path.join(work, 'sync-src');
  const files = { 'a.txt': Buffer.from('alpha\n'), 'sub/b.bin': randomBytes(300_000), 'sub/deeper/c d.txt': Buffer.from('with a space\n') };
  await tree(src, files);
  ok(t, await aws(['s3', 'mb', 's3://cli-sync']), 'mb');
  ok(t, await aws(['s3', 'cp', path.join(src, 'a.txt'), 's3://cli-sync/single/a.txt']), 'cp');
  ok(t, await aws(['s3', 'sync', src, 's3://cli-sync/tree']), 'sync');
  const listing = ok(t, await aws(['s3', 'ls', '--recursive', 's3://cli-sync']), 'ls');
  for (const rel of Object.keys(files)) t.true(listing.includes(`tree/${rel}`), listing);
  // A second sync finds nothing to do; a sync back down reproduces the tree.
  t.is(ok(t, await aws(['s3', 'sync', src, 's3://cli-sync/tree']), 'sync again').trim(), '');
  const dst = path.join(work, 'sync-dst');
  ok(t, await aws(['s3', 'sync', 's3://cli-sync/tree', dst]), 'sync down');
  for (const [rel, data] of Object.entries(files)) t.true((await fsp.readFile(path.join(dst, rel))).equals(data), rel);
  ok(t, await aws(['s3', 'rm', '--recursive', 's3://cli-sync']), 'rm');
  ok(t, await aws(['s3', 'rb', 's3://cli-sync']), 'rb');
  t.false(ok(t, await aws(['s3', 'ls']), 'ls buckets').includes('cli-sync'));
});

test('aws s3api: ranges, SSE-S3, SSE-KMS with a key id, SSE-C', async (t) => {
  ok(t, await aws(['s3', 'mb', 's3://cli-api']), 'mb');
  const file = path.join(work, 'api.bin');
  const data = randomBytes(100_000);
  await fsp.writeFile(file, data);
  const out = path.join(work, 'api.out');

  const put = JSON.parse(ok(t, await aws(['s3api', 'put-object', '--bucket', 'cli-api', '--key', 'r.bin', '--body', file, '--server-side-encryption', 'AES256']), 'put'));
  t.is(put.ETag, `"${md5(data)}"`);
  t.is(put.ServerSideEncryption, 'AES256');
  const ranged = JSON.parse(ok(t, await aws(['s3api', 'get-object', '--bucket', 'cli-api', '--key', 'r.bin', '--range', 'bytes=1000-1999', out]), 'get range'));
  t.is(ranged.ContentRange, `bytes 1000-1999/${data.length}`);
  t.true((await fsp.readFile(out)).equals(data.subarray(1000, 2000)));
  const bad = await aws(['s3api', 'get-object', '--bucket', 'cli-api', '--key', 'r.bin', '--range', `bytes=${data.length}-`, out]);
  t.not(bad.code, 0);
  t.regex(bad.stderr, /InvalidRange|416/);

  const kms = JSON.parse(ok(t, await aws(['s3api', 'put-object', '--bucket', 'cli-api', '--key', 'k.bin', '--body', file, '--server-side-encryption', 'aws:kms', '--ssekms-key-id', 'mountd-default']), 'put kms'));
  t.is(kms.ServerSideEncryption, 'aws:kms');
  t.is(kms.SSEKMSKeyId, 'mountd-default');
  ok(t, await aws(['s3', 'cp', file, 's3://cli-api/k2.bin', '--sse', 'aws:kms', '--sse-kms-key-id', 'mountd-default']), 's3 cp --sse aws:kms');
  t.is(JSON.parse(ok(t, await aws(['s3api', 'head-object', '--bucket', 'cli-api', '--key', 'k2.bin']), 'head kms')).SSEKMSKeyId, 'mountd-default');
  ok(t, await aws(['s3', 'cp', file, 's3://cli-api/s2.bin', '--sse', 'AES256']), 's3 cp --sse AES256');
  t.is(JSON.parse(ok(t, await aws(['s3api', 'head-object', '--bucket', 'cli-api', '--key', 's2.bin']), 'head s3')).ServerSideEncryption, 'AES256');
  const missing = await aws(['s3api', 'put-object', '--bucket', 'cli-api', '--key', 'm.bin', '--body', file, '--server-side-encryption', 'aws:kms', '--ssekms-key-id', 'no-such-key']);
  t.regex(missing.stderr, /kms:KeyNotFound/);

  const key = randomBytes(32).toString('base64').slice(0, 32);
  ok(t, await aws(['s3api', 'put-object', '--bucket', 'cli-api', '--key', 'c.bin', '--body', file, '--sse-customer-algorithm', 'AES256', '--sse-customer-key', key]), 'put ssec');
  t.not((await aws(['s3api', 'head-object', '--bucket', 'cli-api', '--key', 'c.bin'])).code, 0, 'SSE-C needs the key to read');
  const head = JSON.parse(ok(t, await aws(['s3api', 'head-object', '--bucket', 'cli-api', '--key', 'c.bin', '--sse-customer-algorithm', 'AES256', '--sse-customer-key', key]), 'head ssec'));
  t.is(head.ContentLength, data.length);
  t.is(head.SSECustomerAlgorithm, 'AES256');
  ok(t, await aws(['s3api', 'get-object', '--bucket', 'cli-api', '--key', 'c.bin', '--sse-customer-algorithm', 'AES256', '--sse-customer-key', key, out]), 'get ssec');
  t.true((await fsp.readFile(out)).equals(data));
  const wrong = await aws(['s3api', 'get-object', '--bucket', 'cli-api', '--key', 'c.bin', '--sse-customer-algorithm', 'AES256', '--sse-customer-key', 'x'.repeat(32), out]);
  t.regex(wrong.stderr, /AccessDenied|403/);
});

test('aws s3 cp of 20 MiB in 5 MiB parts (multipart), with and without SSE-C', async (t) => {
  const cfg = path.join(work, 'aws-multipart.cfg');
  await fsp.writeFile(cfg, '[default]\ns3 =\n  multipart_threshold = 5MB\n  multipart_chunksize = 5MB\n');
  const file = path.join(work, 'big.bin');
  const data = randomBytes(20 * 1024 * 1024);
  await fsp.writeFile(file, data);
  ok(t, await aws(['s3', 'mb', 's3://cli-multipart']), 'mb');
  ok(t, await aws(['s3', 'cp', file, 's3://cli-multipart/big.bin'], { AWS_CONFIG_FILE: cfg }), 'cp up');
  const head = JSON.parse(ok(t, await aws(['s3api', 'head-object', '--bucket', 'cli-multipart', '--key', 'big.bin']), 'head'));
  t.is(head.ContentLength, data.length);
  t.regex(head.ETag, /^"[0-9a-f]{32}-4"$/);
  const out = path.join(work, 'big.out');
  ok(t, await aws(['s3', 'cp', 's3://cli-multipart/big.bin', out], { AWS_CONFIG_FILE: cfg }), 'cp down');
  t.is(md5(await fsp.readFile(out)), md5(data));
  const key = 'k'.repeat(32);
  ok(t, await aws(['s3', 'cp', file, 's3://cli-multipart/ssec.bin', '--sse-c', 'AES256', '--sse-c-key', key], { AWS_CONFIG_FILE: cfg }), 'cp up ssec');
  ok(t, await aws(['s3', 'cp', 's3://cli-multipart/ssec.bin', out, '--sse-c', 'AES256', '--sse-c-key', key], { AWS_CONFIG_FILE: cfg }), 'cp down ssec');
  t.is(md5(await fsp.readFile(out)), md5(data));
});

test('boto3: put/get/list/head/delete, multipart, copies, trailing checksums, SSE-C, presigned URLs', async (t) => {
  const r = await run('python3', [path.join(ROOT, 'test/s3_boto3.py'), endpoint, 'boto3-bucket'], { env: { AWS_CA_BUNDLE: undefined }, timeoutMs: 120_000 });
  t.is(r.code, 0, r.stderr + r.stdout);
  t.regex(r.stdout, /^OK$/m);
});

test('s3cmd: mb, put, ls, get, info, setacl (and aws s3 cp --acl public-read is refused)', async (t) => {
  const cfg = path.join(work, 's3cmd.cfg');
  const hostPort = endpoint.replace('http://', '');
  await fsp.writeFile(cfg, `[default]\naccess_key = ${CREDS.accessKeyId}\nsecret_key = ${CREDS.secretAccessKey}\nhost_base = ${hostPort}\nhost_bucket = ${hostPort}\nuse_https = False\nsignature_v2 = False\nbucket_location = us-east-1\n`);
  const s3cmd = (...args: string[]) => run('s3cmd', ['-c', cfg, ...args], { timeoutMs: 60_000 });
  const file = path.join(work, 's3cmd.bin');
  const data = randomBytes(50_000);
  await fsp.writeFile(file, data);
  ok(t, await s3cmd('mb', 's3://s3cmd-bucket'), 'mb');
  ok(t, await s3cmd('put', file, 's3://s3cmd-bucket/dir/file.bin'), 'put');
  t.regex(ok(t, await s3cmd('ls', 's3://s3cmd-bucket/dir/'), 'ls'), /50000\s+s3:\/\/s3cmd-bucket\/dir\/file\.bin/);
  const out = path.join(work, 's3cmd.out');
  ok(t, await s3cmd('get', '--force', 's3://s3cmd-bucket/dir/file.bin', out), 'get');
  t.true((await fsp.readFile(out)).equals(data));
  // ACLs: info reads the owner's FULL_CONTROL; making an object public is refused, not ignored.
  t.regex(ok(t, await s3cmd('info', 's3://s3cmd-bucket/dir/file.bin'), 'info'), /ACL:\s+mountd: FULL_CONTROL/);
  ok(t, await s3cmd('setacl', '--acl-private', 's3://s3cmd-bucket/dir/file.bin'), 'setacl private');
  const pub = await s3cmd('setacl', '--acl-public', 's3://s3cmd-bucket/dir/file.bin');
  t.not(pub.code, 0);
  t.regex(pub.stderr, /AccessControlListNotSupported/);
  const cpPublic = await aws(['s3', 'cp', '--acl', 'public-read', file, 's3://s3cmd-bucket/public.bin']);
  t.not(cpPublic.code, 0);
  t.regex(cpPublic.stderr, /AccessControlListNotSupported/);
});

test('rclone: copy a directory, then rclone check verifies every MD5', async (t) => {
  const src = path.join(work, 'rclone-src');
  await tree(src, { 'one.txt': Buffer.from('one\n'), 'sub/two.bin': randomBytes(200_000), 'sub/three + four.txt': Buffer.from('3+4\n'), 'big.bin': randomBytes(6 * 1024 * 1024) });
  const env = {
    RCLONE_CONFIG: '/dev/null',
    RCLONE_CONFIG_M_TYPE: 's3',
    RCLONE_CONFIG_M_PROVIDER: 'Other',
    RCLONE_CONFIG_M_ACCESS_KEY_ID: CREDS.accessKeyId,
    RCLONE_CONFIG_M_SECRET_ACCESS_KEY: CREDS.secretAccessKey,
    RCLONE_CONFIG_M_ENDPOINT: endpoint,
    RCLONE_CONFIG_M_REGION: 'us-east-1',
    AWS_CA_BUNDLE: undefined,
  };
  const rclone = (...args: string[]) => run('rclone', [...args, '--retries', '1', '--low-level-retries', '1'], { env, timeoutMs: 90_000 });
  ok(t, await rclone('mkdir', 'm:rclone-bucket'), 'mkdir');
  ok(t, await rclone('copy', src, 'm:rclone-bucket/dir', '--s3-upload-cutoff', '5M', '--s3-chunk-size', '5M'), 'copy');
  const check = await rclone('check', src, 'm:rclone-bucket/dir');
  t.is(check.code, 0, check.stderr);
  t.regex(check.stderr, /0 differences found/);
  t.regex(check.stderr, /4 matching files/);
});

test('bad input against the daemon gets 4xx and it keeps serving', async (t) => {
  const port = daemon.s3Port!;
  t.regex(await rawExchange(port, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(9000)}\r\n\r\n`), /^HTTP\/1.1 431 /);
  t.regex(await rawExchange(port, 'GET / HTTP/1.1\r\nHost: x\r\nAuthorization: AWS4-HMAC-SHA256 nonsense\r\nx-amz-date: 20300101T000000Z\r\n\r\n', 1000), /^HTTP\/1.1 400 [\s\S]*AuthorizationHeaderMalformed/);
  t.regex(await rawExchange(port, 'GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n', 1000), /^HTTP\/1.1 4\d\d /);
  t.regex(await rawExchange(port, '\x00\x01\x02 garbage\r\n\r\n', 1000), /^HTTP\/1.1 400 /);
  ok(t, await aws(['s3', 'ls']), 'ls after bad input');
});

fuseTest('the two doors: a file written at the mount is readable with aws s3 cp after close; a boto3 put shows in the mount at once', async (t) => {
  const both = await startDaemon({ s3: true, mount: true });
  try {
    t.regex(both.log(), /mounted at /);
    const ep = `http://127.0.0.1:${both.s3Port}`;
    const aws2 = (args: string[]) => run('aws', ['--endpoint-url', ep, ...args], { env: awsEnv(), timeoutMs: 60_000 });
    ok(t, await aws2(['s3', 'mb', 's3://doors']), 'mb');
    const data = randomBytes(150_000);
    await fsp.writeFile(path.join(both.mountPoint!, 'doors', 'from-mount.bin'), data);
    const out = path.join(work, 'doors.out');
    ok(t, await aws2(['s3', 'cp', 's3://doors/from-mount.bin', out]), 'cp');
    t.true((await fsp.readFile(out)).equals(data));
    const py = `import boto3\nboto3.client("s3", endpoint_url="${ep}", region_name="us-east-1", aws_access_key_id="${CREDS.accessKeyId}", aws_secret_access_key="${CREDS.secretAccessKey}").put_object(Bucket="doors", Key="sub/from-s3.txt", Body=b"hello mount")\n`;
    ok(t, await run('python3', ['-c', py], { env: { AWS_CA_BUNDLE: undefined } }), 'boto3 put');
    const started = Date.now();
    let seen = '';
    while (Date.now() - started < 1000) {
      seen = await fsp.readFile(path.join(both.mountPoint!, 'doors', 'sub', 'from-s3.txt'), 'utf8').catch(() => '');
      if (seen) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    t.is(seen, 'hello mount');
    t.true((await fsp.readdir(path.join(both.mountPoint!, 'doors', 'sub'))).includes('from-s3.txt'));
  } finally {
    await both.stop();
    await removeDir(both.dataDir);
    await removeDir(both.mountPoint);
  }
});

fuseTest('s3fs: a bucket mounted through the S3 listener; files, directories, chmod, rename, append, truncate and a multipart upload agree with our mount', async (t) => {
  const both = await startDaemon({ s3: true, mount: true });
  const s3m = await tempDir('mountd-s3fs-mnt');
  const ours = path.join(both.mountPoint!, 's3fs-bucket');
  try {
    t.regex(both.log(), /mounted at /);
    await fsp.mkdir(ours);
    const pw = path.join(work, 's3fs.passwd');
    await fsp.writeFile(pw, `${CREDS.accessKeyId}:${CREDS.secretAccessKey}\n`, { mode: 0o600 });
    // No stat or list cache in s3fs: each look goes to the listener, so it sees our mount's changes at once.
    ok(t, await run('s3fs', ['s3fs-bucket', s3m, '-o', `passwd_file=${pw},url=http://127.0.0.1:${both.s3Port},use_path_request_style,stat_cache_expire=0,multipart_size=5,dbglevel=warn,logfile=${path.join(work, 's3fs.log')}`], { timeoutMs: 30_000 }), 's3fs mount');
    t.deepEqual(await fuseMountsUnder(s3m), [s3m]);

    // Written through s3fs, read at our mount.
    const small = Buffer.from('from s3fs\n');
    const big = randomBytes(23 * 1024 * 1024 + 17); // over s3fs's multipart_size: a multipart upload
    await fsp.writeFile(path.join(s3m, 'small.txt'), small);
    await fsp.mkdir(path.join(s3m, 'dir'));
    await fsp.writeFile(path.join(s3m, 'dir', 'big.bin'), big);
    t.true((await fsp.readFile(path.join(ours, 'small.txt'))).equals(small));
    t.is(md5(await fsp.readFile(path.join(ours, 'dir', 'big.bin'))), md5(big));
    t.true((await fsp.stat(path.join(ours, 'dir'))).isDirectory());
    const headBig = await run('aws', ['--endpoint-url', `http://127.0.0.1:${both.s3Port}`, 's3api', 'head-object', '--bucket', 's3fs-bucket', '--key', 'dir/big.bin'], { env: awsEnv(), timeoutMs: 60_000 });
    t.regex(JSON.parse(ok(t, headBig, 'head-object')).ETag, /^"[0-9a-f]{32}-[2-9]"$/, 's3fs uploaded it in parts');

    // chmod is a copy onto itself with new metadata; rename is a copy and a delete; append and
    // truncate rewrite the object.
    await fsp.chmod(path.join(s3m, 'small.txt'), 0o600);
    t.is((await fsp.stat(path.join(s3m, 'small.txt'))).mode & 0o777, 0o600);
    await fsp.rename(path.join(s3m, 'small.txt'), path.join(s3m, 'dir', 'moved.txt'));
    await fsp.appendFile(path.join(s3m, 'dir', 'moved.txt'), 'and more\n');
    t.is(await fsp.readFile(path.join(ours, 'dir', 'moved.txt'), 'utf8'), 'from s3fs\nand more\n');
    t.false(await fsp.access(path.join(ours, 'small.txt')).then(() => true, () => false));
    await fsp.truncate(path.join(s3m, 'dir', 'moved.txt'), 4);
    t.is(await fsp.readFile(path.join(ours, 'dir', 'moved.txt'), 'utf8'), 'from');

    // Written at our mount, seen through s3fs: files, a directory tree and an empty directory.
    await fsp.mkdir(path.join(ours, 'tree', 'sub'), { recursive: true });
    await fsp.writeFile(path.join(ours, 'tree', 'sub', 'f.txt'), 'from the mount');
    await fsp.mkdir(path.join(ours, 'empty'));
    t.is(await fsp.readFile(path.join(s3m, 'tree', 'sub', 'f.txt'), 'utf8'), 'from the mount');
    t.deepEqual((await fsp.readdir(s3m)).sort(), ['dir', 'empty', 'tree']);
    t.deepEqual((await fsp.readdir(path.join(s3m, 'dir'))).sort(), ['big.bin', 'moved.txt']);
    t.is(md5(await fsp.readFile(path.join(s3m, 'dir', 'big.bin'))), md5(big));

    // Removed through s3fs, gone at our mount.
    await fsp.rm(path.join(s3m, 'tree'), { recursive: true });
    await fsp.rmdir(path.join(s3m, 'empty'));
    await fsp.rm(path.join(s3m, 'dir', 'big.bin'));
    t.deepEqual((await fsp.readdir(ours)).sort(), ['dir']);
    t.deepEqual(await fsp.readdir(path.join(ours, 'dir')), ['moved.txt']);
  } finally {
    if ((await fuseMountsUnder(s3m)).length > 0) await sh(`fusermount -u ${s3m} || fusermount -uz ${s3m}`).catch((err) => t.log(`s3fs unmount: ${(err as Error).message}`));
    await both.stop();
    await removeDir(both.dataDir);
    await removeDir(both.mountPoint);
    await fsp.rmdir(s3m).catch(() => undefined);
  }
});
