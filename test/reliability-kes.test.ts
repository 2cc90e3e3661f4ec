// The key server gone mid-operation, and back: mountd (mount + S3) against a separate kesd, kill -9 of kesd
// during a stream of S3 PUTs and mount file creations. Failures are clean (S3 503, mount EIO or ENOKEY),
// never a hang; nothing half-written is visible; everything recovers by itself once kesd is back.
import anyTest, { type TestFn } from 'ava';
import { spawn } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { hashOnMount, listKeys, sha256hex } from './helpers/fsx.js';
import { startKesd, type Kesd } from './helpers/kesd.js';
import { HAS_FUSE, startMount, type MountFixture, reportMissingFuse } from './helpers/mount.js';
import { errorCode, s3request } from './helpers/s3.js';

const test = anyTest as TestFn<{ fx: MountFixture; kesd: Kesd }>;
const fuseTest = HAS_FUSE ? test.serial : test.serial.skip;
const CREDS = { accessKeyId: 'kes-reliability', secretAccessKey: 'kes-reliability-secret' };
const EIO = 5;
const ENOKEY = 126;

reportMissingFuse(test, 'reliability-kes.test.ts', 'key server outage test');

test.before(async (t) => {
  if (!HAS_FUSE) return;
  const kesd = await startKesd({ keystore: 'fs' });
  const env = {
    MINIO_KMS_KES_ENDPOINT: kesd.endpoint,
    MINIO_KMS_KES_API_KEY: kesd.adminApiKey,
    MINIO_KMS_KES_CAPATH: kesd.certFile,
    MINIO_KMS_KES_KEY_NAME: 'outage-key',
    MINIO_ROOT_USER: CREDS.accessKeyId,
    MINIO_ROOT_PASSWORD: CREDS.secretAccessKey,
  };
  // A short DEK cache so that reads need the key server too once it expired.
  t.context = { kesd, fx: await startMount('kes-outage', { s3: true, env, args: ['--dek-cache-ttl', '3'] }) };
});

test.after.always(async (t) => {
  const { fx, kesd } = t.context;
  try {
    await fx?.cleanup(); // fails the run if a mount is left behind
  } finally {
    await kesd?.cleanup();
  }
});

/** Creates files on the mount one after another (content derived from the name), saying how each went. */
const CREATOR_PY = String.raw`
import hashlib, json, os, sys, time
d, seconds, stop = sys.argv[1], float(sys.argv[2]), sys.argv[3]
end = time.time() + seconds
n = 0
while time.time() < end and not os.path.exists(stop):
    n += 1
    name = 'm-%05d' % n
    body = hashlib.sha256(name.encode()).digest() * (1 + n % 4000)
    t0 = time.time()
    try:
        fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, body)
        finally:
            os.close(fd)
        r = {'name': name, 'ok': True}
    except OSError as e:
        r = {'name': name, 'ok': False, 'errno': e.errno}
    r['ms'] = int((time.time() - t0) * 1000)
    r['start'] = int(t0 * 1000)
    print(json.dumps(r), flush=True)
    time.sleep(0.01)
`;
const bodyOf = (name: string, n: number) => {
  const h = sha256hex(name);
  return Buffer.concat(Array.from({ length: 1 + (n % 4000) }, () => Buffer.from(h, 'hex')));
};

fuseTest('kill -9 of the key server during S3 PUTs and mount creates: clean failures, nothing half-written, recovery', async (t) => {
  const { fx, kesd } = t.context;
  const port = fx.daemon.s3Port!;
  const req = (spec: Parameters<typeof s3request>[1]) => s3request(port, { creds: CREDS, ...spec });
  t.is((await req({ method: 'PUT', path: '/outage' })).status, 200);
  const phases = { up: 2500, down: 4000, back: 6000 };
  // The writers run until told to stop (a file for the creator), at the latest after this.
  const total = 120;
  const stopFile = path.join(fx.root, 'kes-outage.stop');
  let stopped = false;

  const creator = spawn('python3', ['-u', '-c', CREATOR_PY, path.join(fx.mnt, 'outage'), String(total), stopFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  const creates: Array<{ name: string; ok: boolean; errno?: number; ms: number; start: number; at: number }> = [];
  let buffered = '';
  creator.stdout.on('data', (d: Buffer) => {
    buffered += d.toString();
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      creates.push({ ...(JSON.parse(buffered.slice(0, nl)) as { name: string; ok: boolean; errno?: number; ms: number; start: number }), at: Date.now() });
      buffered = buffered.slice(nl + 1);
    }
  });
  const creatorDone = new Promise((r) => creator.once('close', r));

  const started = Date.now();
  const puts: Array<{ key: string; status: number; code?: string; ms: number; start: number; at: number }> = [];
  const putter = (async () => {
    for (let n = 1; !stopped && Date.now() - started < total * 1000; n++) {
      const key = `s-${String(n).padStart(5, '0')}`;
      const t0 = Date.now();
      const r = await req({ method: 'PUT', path: `/outage/${key}`, body: bodyOf(key, n) });
      puts.push({ key, status: r.status, code: errorCode(r), ms: Date.now() - t0, start: t0, at: Date.now() });
      await new Promise((res) => setTimeout(res, 10));
    }
  })();

  await new Promise((r) => setTimeout(r, phases.up));
  const killedAt = Date.now();
  await kesd.kill();
  await new Promise((r) => setTimeout(r, phases.down));
  const restartAt = Date.now();
  await kesd.start();
  // Back means ready and answering (kesd's start is seconds on a loaded machine): the recovery
  // is timed from then, and the writers go on long enough to be seen working after it.
  const backAt = Date.now();
  await new Promise((r) => setTimeout(r, phases.back));
  stopped = true;
  await fsp.writeFile(stopFile, '');
  await Promise.all([putter, creatorDone]);

  const during = (at: number) => at > killedAt + 200 && at < restartAt;
  // Operations that began 3 s or more after kesd was back must all succeed.
  const after = (start: number) => start > backAt + 3000;
  const putFailures = puts.filter((p) => p.status !== 200);
  const createFailures = creates.filter((c) => !c.ok);
  t.log(
    `S3: ${puts.length} PUTs, ${putFailures.length} refused (${[...new Set(putFailures.map((p) => `${p.status} ${p.code}`))].join(', ')}); ` +
      `mount: ${creates.length} creates, ${createFailures.length} refused (errno ${[...new Set(createFailures.map((c) => c.errno))].join(', ')}); ` +
      `slowest answer ${Math.max(...puts.map((p) => p.ms), ...creates.map((c) => c.ms))} ms`,
  );
  // Clean failures only, and never a hang.
  t.deepEqual(putFailures.filter((p) => p.status !== 503), [], 'S3 refuses with 503 while the key server is gone');
  t.deepEqual(createFailures.filter((c) => c.errno !== EIO && c.errno !== ENOKEY), [], 'the mount refuses with EIO or ENOKEY');
  t.true(puts.every((p) => p.ms < 15_000) && creates.every((c) => c.ms < 15_000), 'every answer within 15 s');
  t.true(puts.some((p) => during(p.at) && p.status === 503), 'S3 PUTs were refused during the outage');
  t.true(creates.some((c) => during(c.at) && !c.ok), 'mount creates were refused during the outage');
  // Recovery by itself: everything works again a few seconds after kesd is back.
  t.true(puts.filter((p) => after(p.start)).length > 0 && puts.filter((p) => after(p.start)).every((p) => p.status === 200), 'S3 PUTs work again');
  t.true(creates.filter((c) => after(c.start)).length > 0 && creates.filter((c) => after(c.start)).every((c) => c.ok), 'mount creates work again');

  // Nothing half-written: exactly what succeeded exists, whole, through both doors.
  const listed = new Set(await listKeys(port, 'outage', CREDS));
  const expected = new Map<string, string>();
  puts.forEach((p, i) => p.status === 200 && expected.set(p.key, sha256hex(bodyOf(p.key, i + 1))));
  for (const c of creates) if (c.ok) expected.set(c.name, sha256hex(bodyOf(c.name, Number(c.name.slice(2)))));
  const failedNames = [...putFailures.map((p) => p.key), ...createFailures.map((c) => c.name)];
  t.deepEqual(failedNames.filter((n) => listed.has(n)), [], 'no refused write left an object behind');
  t.deepEqual([...listed].filter((n) => !expected.has(n)), [], 'nothing unexpected is listed');
  const onMount = await hashOnMount(path.join(fx.mnt, 'outage'), [...expected.keys()]);
  const wrong: string[] = [];
  for (const [name, sha] of expected) {
    if (onMount[name] !== sha) wrong.push(`${name} mount ${onMount[name]}`);
    const r = await req({ method: 'GET', path: `/outage/${name}` });
    if (r.status !== 200 || sha256hex(r.body) !== sha) wrong.push(`${name} S3 ${r.status}`);
  }
  t.deepEqual(wrong, [], `all ${expected.size} written objects read back through both doors`);
  t.false(/ mountd error (?!.*(KMS_UNAVAILABLE|key server))/.test(fx.daemon.log()), 'errors logged only about the key server');
});
