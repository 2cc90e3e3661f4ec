// The in-place AES-256-GCM (native/crypto.c, with node:crypto as the fallback) against @noble,
// and the buffer pools the bulk path reuses.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { gcm } from '@noble/ciphers/aes.js';
import { aeadImplementation, gcmOpen, gcmOpenInto, gcmSeal, gcmSealInto } from '../src/crypto/index.js';
import { isMountdError, ErrorCode } from '../src/errors/index.js';
import { BufferPool } from '../src/engine/BufferPool.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

test('the native AEAD is what the tests run (scripts/setup builds it)', (t) => {
  // scripts/test runs setup first: a missing native/build/crypto.node here means the build broke.
  t.is(aeadImplementation, 'native');
});

for (const len of [0, 1, 15, 16, 17, 4096, 65535, 65536]) {
  test(`gcmSealInto and gcmOpenInto match @noble for ${len} bytes, with and without AAD`, (t) => {
    for (const aad of [new Uint8Array(0), randomBytes(45)]) {
      const key = randomBytes(32);
      const nonce = randomBytes(12);
      const plain = randomBytes(len);
      const out = Buffer.alloc(len + 16, 0xee);
      gcmSealInto(key, nonce, plain, aad, out);
      t.deepEqual(new Uint8Array(out), gcm(key, nonce, aad).encrypt(plain));
      t.deepEqual(gcmSeal(key, nonce, plain, aad), out);
      const back = Buffer.alloc(len, 0xee);
      gcmOpenInto(key, nonce, out, aad, back);
      t.deepEqual(back, plain);
      t.deepEqual(gcmOpen(key, nonce, out, aad), plain);
    }
  });
}

test('gcmOpenInto: a flipped bit anywhere, a wrong AAD or a wrong key is an Integrity error and the output is zeroed', (t) => {
  const key = randomBytes(32);
  const nonce = randomBytes(12);
  const aad = Buffer.from('package 7');
  const plain = randomBytes(1000);
  const sealed = gcmSeal(key, nonce, plain, aad);
  const tries: [string, Buffer, Buffer, Buffer][] = [];
  for (const at of [0, 500, 999, 1000, 1015]) {
    const bad = Buffer.from(sealed);
    bad[at]! ^= 1;
    tries.push([`bit at ${at}`, key, bad, aad]);
  }
  tries.push(['aad', key, sealed, Buffer.from('package 8')]);
  tries.push(['key', randomBytes(32), sealed, aad]);
  for (const [what, k, s, a] of tries) {
    const out = Buffer.alloc(1000, 0xaa);
    const err = t.throws(() => gcmOpenInto(k, nonce, s, a, out, 'test'), undefined, what);
    t.true(isMountdError(err, ErrorCode.Integrity), what);
    t.true(out.every((b) => b === 0), `${what}: output zeroed`);
  }
});

test('gcmSealInto and gcmOpenInto refuse wrong sizes instead of writing past a buffer', (t) => {
  const key = randomBytes(32);
  const nonce = randomBytes(12);
  t.throws(() => gcmSealInto(key, nonce, Buffer.alloc(10), Buffer.alloc(0), Buffer.alloc(25)), { instanceOf: TypeError });
  t.throws(() => gcmSealInto(key, nonce, Buffer.alloc(10), Buffer.alloc(0), Buffer.alloc(27)), { instanceOf: TypeError });
  t.throws(() => gcmSealInto(randomBytes(16), nonce, Buffer.alloc(10), Buffer.alloc(0), Buffer.alloc(26)), { instanceOf: TypeError });
  t.throws(() => gcmOpenInto(key, nonce, Buffer.alloc(26), Buffer.alloc(0), Buffer.alloc(11)), { instanceOf: TypeError });
  t.throws(() => gcmOpenInto(key, randomBytes(8), Buffer.alloc(26), Buffer.alloc(0), Buffer.alloc(10)), { instanceOf: TypeError });
});

test('MOUNTD_NATIVE_CRYPTO=0 falls back to node:crypto, which produces the same bytes (the built daemon in dist/)', (t) => {
  const script = `
    import { aeadImplementation, gcmSealInto, gcmOpenInto } from './dist/crypto/index.js';
    const key = Buffer.alloc(32, 1), nonce = Buffer.alloc(12, 2), plain = Buffer.alloc(70000, 3), aad = Buffer.from('x');
    const out = Buffer.alloc(70016);
    gcmSealInto(key, nonce, plain, aad, out);
    const back = Buffer.alloc(70000);
    gcmOpenInto(key, nonce, out, aad, back);
    console.log(aeadImplementation, out.toString('base64').slice(-64), back.equals(plain));`;
  const run = (env: Record<string, string>) =>
    execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, env: { ...process.env, ...env }, encoding: 'utf8' }).trim().split(' ');
  const fallback = run({ MOUNTD_NATIVE_CRYPTO: '0' });
  const native = run({});
  t.is(fallback[0], 'node:crypto');
  t.is(native[0], 'native');
  t.is(fallback[1], native[1]);
  t.is(fallback[2], 'true');
  t.is(native[2], 'true');
});

test('BufferPool: buffers come back zeroed, only its own size is kept, and never more than the cap', (t) => {
  const pool = new BufferPool(64, 2);
  const a = pool.take();
  const b = pool.take();
  const c = pool.take();
  t.is(a.length, 64);
  a.fill(7);
  b.fill(7);
  c.fill(7);
  pool.give(a);
  pool.give(b);
  pool.give(c);
  t.is(pool.idle, 2, 'capped');
  t.true(c.every((x) => x === 0), 'zeroed even when dropped');
  const d = pool.take();
  t.true(d.every((x) => x === 0));
  t.true(d === b || d === a);
  const view = Buffer.alloc(128).subarray(0, 64);
  view.fill(9);
  pool.give(view);
  t.true(view.every((x) => x === 0));
  t.is(pool.idle, 1, 'a view of another buffer is not pooled');
  const cipherPool = new BufferPool(16, 1, false);
  const e = cipherPool.take().fill(5);
  cipherPool.give(e);
  t.true(e.every((x) => x === 5), 'ciphertext pools are not zeroed');
});
