// The ETag's MD5 (src/engine/Md5.ts): inline for the first 8 MiB, then on a thread of its own
// (native/crypto.c), against node:crypto; and a PUT's ETag across that threshold.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createHash, randomBytes } from 'node:crypto';
import { Md5, md5Implementation } from '../src/engine/Md5.js';
import { makeFixture } from './helpers/engine.js';

const MiB = 1024 * 1024;
const ROOT = fileURLToPath(new URL('..', import.meta.url));

test('the threaded MD5 is what the tests run (scripts/setup builds native/build/crypto.node)', (t) => {
  t.is(md5Implementation, 'threaded');
});

for (const size of [0, 1, 8 * MiB - 1, 8 * MiB, 8 * MiB + 1, 41 * MiB + 17]) {
  test(`MD5 of ${size} bytes in uneven chunks matches node:crypto`, async (t) => {
    const data = randomBytes(size);
    const h = new Md5();
    // Chunks of 1 byte to 1 MiB, so that one straddles the inline limit.
    for (let at = 0, step = 1; at < size; at += step, step = Math.min(MiB, step * 7 + 3)) h.update(data.subarray(at, Math.min(size, at + step)));
    t.is(await h.hex(), createHash('md5').update(data).digest('hex'));
  });
}

test('hashers run side by side; an aborted one stops and refuses more; abort after the digest does nothing', async (t) => {
  const blobs = [randomBytes(20 * MiB), randomBytes(12 * MiB), randomBytes(30 * MiB)];
  const hashers = blobs.map(() => new Md5());
  for (let at = 0; at < 30 * MiB; at += MiB) blobs.forEach((b, i) => at < b.length && hashers[i]!.update(b.subarray(at, at + MiB)));
  const got = await Promise.all(hashers.map((h) => h.hex()));
  t.deepEqual(got, blobs.map((b) => createHash('md5').update(b).digest('hex')));
  hashers[0]!.abort();
  const dropped = new Md5();
  dropped.update(randomBytes(16 * MiB));
  dropped.abort();
  t.throws(() => dropped.update(Buffer.alloc(1)), { message: /already ended/ });
});

test('a PUT larger than the inline part gets the MD5 of its body as ETag', async (t) => {
  const fx = await makeFixture();
  try {
    const body = randomBytes(20 * MiB + 5);
    const chunks = async function* () {
      for (let at = 0; at < body.length; at += 300_001) yield body.subarray(at, at + 300_001);
    };
    const put = await fx.engine.putObject('bucket', 'big', chunks());
    t.is(put.etag, createHash('md5').update(body).digest('hex'));
    t.is(put.size, body.length);
  } finally {
    await fx.cleanup();
  }
});

test('MOUNTD_NATIVE_CRYPTO=0 hashes through node:crypto, with the same digest (the built daemon in dist/)', (t) => {
  const probe = `
    import { Md5, md5Implementation } from './dist/engine/Md5.js';
    import { createHash } from 'node:crypto';
    const data = Buffer.alloc(20 * 1024 * 1024, 7);
    const h = new Md5();
    for (let at = 0; at < data.length; at += 1000003) h.update(data.subarray(at, at + 1000003));
    console.log(md5Implementation, (await h.hex()) === createHash('md5').update(data).digest('hex'));`;
  const run = (env: NodeJS.ProcessEnv) =>
    execFileSync(process.execPath, ['--input-type=module', '-e', probe], { cwd: ROOT, env: { ...process.env, ...env } }).toString().trim();
  t.is(run({ MOUNTD_NATIVE_CRYPTO: '0' }), 'node:crypto true');
  t.is(run({ MOUNTD_NATIVE_CRYPTO: '' }), 'threaded true');
});
