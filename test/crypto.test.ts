// Unit tests of src/crypto: AEAD, KEK derivation and key sealing, cross-checked with @noble, with negative tables for every binding.
import test from 'ava';
import { gcm } from '@noble/ciphers/aes.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import {
  Domain,
  SEALED_KEY_BYTES,
  customerSecret,
  deriveKek,
  gcmOpen,
  gcmSeal,
  lengthPrefixed,
  metadataKey,
  openMetadata,
  sealMetadata,
  sealObjectKey,
  systemRandom,
  unsealObjectKey,
  type SealParams,
} from '../src/crypto/index.js';

const fill = (n: number, v: number) => Buffer.alloc(n, v);
const flip = (b: Uint8Array, i: number) => {
  const c = Buffer.from(b);
  c[i] = c[i]! ^ 0x01;
  return c;
};
const integrity = { code: 'ENGINE_INTEGRITY' };

test('gcmSeal output is ciphertext || tag and matches @noble in both directions', (t) => {
  const key = fill(32, 7);
  const nonce = fill(12, 8);
  const aad = Buffer.from('associated');
  for (const len of [0, 1, 15, 16, 17, 1000, 65536]) {
    const plain = Buffer.alloc(len, len & 0xff);
    const sealed = gcmSeal(key, nonce, plain, aad);
    t.is(sealed.length, len + 16);
    t.deepEqual(Buffer.from(gcm(key, nonce, aad).encrypt(plain)), sealed, `len ${len}`);
    t.deepEqual(Buffer.from(gcm(key, nonce, aad).decrypt(sealed)), plain);
    t.deepEqual(gcmOpen(key, nonce, gcm(key, nonce, aad).encrypt(plain), aad), plain);
  }
});

test('gcmOpen refuses a wrong key, nonce, AAD, any flipped byte and short input with ENGINE_INTEGRITY', (t) => {
  const key = fill(32, 1);
  const nonce = fill(12, 2);
  const aad = Buffer.from('aad');
  const sealed = gcmSeal(key, nonce, Buffer.from('sixteen byte msg'), aad);
  t.throws(() => gcmOpen(fill(32, 9), nonce, sealed, aad), integrity);
  t.throws(() => gcmOpen(key, fill(12, 9), sealed, aad), integrity);
  t.throws(() => gcmOpen(key, nonce, sealed, Buffer.from('aaD')), integrity);
  t.throws(() => gcmOpen(key, nonce, sealed, Buffer.alloc(0)), integrity);
  for (let i = 0; i < sealed.length; i++) t.throws(() => gcmOpen(key, nonce, flip(sealed, i), aad), integrity, `byte ${i}`);
  t.throws(() => gcmOpen(key, nonce, sealed.subarray(0, 15), aad), integrity);
  t.throws(() => gcmOpen(key, nonce, sealed.subarray(1), aad), integrity);
  t.throws(() => gcmOpen(key, nonce, Buffer.concat([sealed, Buffer.from([0])]), aad), integrity);
});

test('gcm entry points assert key and nonce lengths', (t) => {
  t.throws(() => gcmSeal(fill(31, 0), fill(12, 0), Buffer.alloc(1), Buffer.alloc(0)), { instanceOf: TypeError });
  t.throws(() => gcmSeal(fill(32, 0), fill(16, 0), Buffer.alloc(1), Buffer.alloc(0)), { instanceOf: TypeError });
  t.throws(() => gcmOpen(fill(16, 0), fill(12, 0), Buffer.alloc(32), Buffer.alloc(0)), { instanceOf: TypeError });
  t.throws(() => gcmSeal(fill(32, 0), fill(12, 0), 'text' as unknown as Uint8Array, Buffer.alloc(0)), { instanceOf: TypeError });
});

test('lengthPrefixed is u32be length || bytes and separates part boundaries', (t) => {
  t.is(lengthPrefixed([Buffer.from('ab'), Buffer.from('c')]).toString('hex'), '000000026162' + '0000000163');
  t.notDeepEqual(lengthPrefixed([Buffer.from('ab'), Buffer.from('c')]), lengthPrefixed([Buffer.from('a'), Buffer.from('bc')]));
  t.is(lengthPrefixed([]).length, 0);
  // A subarray view is encoded by its own bytes, not its backing buffer.
  const big = Buffer.from('xxhelloxx');
  t.deepEqual(lengthPrefixed([big.subarray(2, 7)]), lengthPrefixed([Buffer.from('hello')]));
});

test('deriveKek: every input changes the KEK, and it equals HMAC-SHA256 over the documented encoding', (t) => {
  const secret = fill(32, 1);
  const iv = fill(32, 2);
  const base = deriveKek(secret, iv, Domain.KeyServer, 'b/k');
  const variants = [
    deriveKek(fill(32, 3), iv, Domain.KeyServer, 'b/k'),
    deriveKek(secret, fill(32, 3), Domain.KeyServer, 'b/k'),
    deriveKek(secret, iv, Domain.Customer, 'b/k'),
    deriveKek(secret, iv, Domain.KeyServer, 'b/K'),
    deriveKek(secret, iv, Domain.KeyServer, 'c/k'),
    deriveKek(secret, iv, Domain.KeyServer, 'b/k/'),
  ];
  t.is(new Set([base, ...variants].map((k) => k.toString('hex'))).size, 7);
  const enc = new TextEncoder();
  const msg = lengthPrefixed([enc.encode('mountd key encryption key derivation v1'), iv, enc.encode(Domain.KeyServer), enc.encode('AES-256-GCM sealed object key, HMAC-SHA256 derived key'), enc.encode('b/k')]);
  t.deepEqual(Buffer.from(hmac(sha256, secret, msg)), base);
  t.throws(() => deriveKek(fill(31, 0), iv, Domain.KeyServer, 'b/k'), { instanceOf: TypeError });
  t.throws(() => deriveKek(secret, fill(16, 0), Domain.KeyServer, 'b/k'), { instanceOf: TypeError });
});

const params = (over: Partial<SealParams> = {}): SealParams => ({
  secret: fill(32, 0x11),
  iv: fill(32, 0x22),
  domain: Domain.KeyServer,
  path: 'bucket/dir/object',
  aad: Buffer.from('record bytes'),
  ...over,
});

test('sealObjectKey: 60 bytes, nonce first, unseals with the same parameters', (t) => {
  const oek = fill(32, 0x33);
  const nonce = fill(12, 0x44);
  const sealed = sealObjectKey(oek, nonce, params());
  t.is(sealed.length, SEALED_KEY_BYTES);
  t.is(SEALED_KEY_BYTES, 60);
  t.deepEqual(sealed.subarray(0, 12), nonce);
  t.deepEqual(unsealObjectKey(sealed, params()), oek);
  t.notDeepEqual(sealed.subarray(12, 44), oek, 'the OEK is not stored in clear');
  t.throws(() => sealObjectKey(fill(31, 0), nonce, params()), { instanceOf: TypeError });
});

// minio/internal/crypto style negative table: unsealing fails for anything but the exact binding.
const negatives: Array<[string, Partial<SealParams>]> = [
  ['another bucket', { path: 'other/dir/object' }],
  ['another object', { path: 'bucket/dir/object2' }],
  ['a parent directory', { path: 'bucket/dir' }],
  ['the same name in another directory', { path: 'bucket/object' }],
  ['the customer domain', { domain: Domain.Customer }],
  ['another secret (DEK)', { secret: fill(32, 0x12) }],
  ['another iv', { iv: fill(32, 0x23) }],
  ['another record (AAD)', { aad: Buffer.from('record byteS') }],
  ['an empty AAD', { aad: Buffer.alloc(0) }],
];
for (const [name, over] of negatives) {
  test(`unsealObjectKey fails for ${name}`, (t) => {
    const sealed = sealObjectKey(fill(32, 0x33), fill(12, 0x44), params());
    t.throws(() => unsealObjectKey(sealed, params(over)), integrity);
  });
}

test('unsealObjectKey fails for any flipped byte of the sealed key and for a wrong length', (t) => {
  const sealed = sealObjectKey(fill(32, 0x33), fill(12, 0x44), params());
  for (let i = 0; i < sealed.length; i++) t.throws(() => unsealObjectKey(flip(sealed, i), params()), integrity, `byte ${i}`);
  t.throws(() => unsealObjectKey(sealed.subarray(0, 59), params()), integrity);
  t.throws(() => unsealObjectKey(Buffer.concat([sealed, Buffer.alloc(1)]), params()), integrity);
});

test('customerSecret is HMAC-SHA256(customer key, label), never the key itself, and checks length', (t) => {
  const key = fill(32, 0x55);
  const secret = customerSecret(key);
  t.deepEqual(secret, Buffer.from(hmac(sha256, key, new TextEncoder().encode('mountd customer key secret v1'))));
  t.notDeepEqual(secret, key);
  t.notDeepEqual(customerSecret(fill(32, 0x56)), secret);
  t.throws(() => customerSecret(fill(16, 0)), { instanceOf: TypeError });
});

test('metadata seal: version byte, round trip, @noble opens it, and every binding is checked', (t) => {
  const oek = fill(32, 0x66);
  const aad = Buffer.from('header bytes');
  const plain = Buffer.from('{"user":{"a":"b"}}');
  const sealed = sealMetadata(oek, fill(12, 0x77), plain, aad);
  t.is(sealed[0], 1);
  t.is(sealed.length, 1 + 12 + plain.length + 16);
  t.deepEqual(openMetadata(oek, sealed, aad), plain);
  t.deepEqual(Buffer.from(gcm(metadataKey(oek), sealed.subarray(1, 13), aad).decrypt(sealed.subarray(13))), plain);
  // The metadata key is a subkey, not the OEK.
  t.throws(() => gcm(oek, sealed.subarray(1, 13), aad).decrypt(sealed.subarray(13)));
  t.throws(() => openMetadata(fill(32, 0x67), sealed, aad), integrity);
  t.throws(() => openMetadata(oek, sealed, Buffer.from('header byteS')), integrity);
  for (let i = 0; i < sealed.length; i++) t.throws(() => openMetadata(oek, flip(sealed, i), aad), integrity, `byte ${i}`);
  t.throws(() => openMetadata(oek, sealed.subarray(0, 28), aad), integrity);
});

test('systemRandom returns fresh bytes of the asked length', (t) => {
  const a = systemRandom(32);
  const b = systemRandom(32);
  t.is(a.length, 32);
  t.is(systemRandom(0).length, 0);
  t.notDeepEqual(Buffer.from(a), Buffer.from(b));
});
