// Unit tests of src/format: header, package AAD, offset arithmetic and the key record, including every rejection.
import test from 'ava';
import {
  CONTENT_ALGORITHM_AES256GCM,
  FORMAT_VERSION,
  HEADER_BYTES,
  KEY_RECORD_XATTR,
  KeyKind,
  META_XATTR,
  PACKAGE_CIPHERTEXT,
  PACKAGE_NONCE,
  PACKAGE_OVERHEAD,
  PACKAGE_PLAINTEXT,
  RECORD_ALGORITHM_V1,
  RECORD_VERSION,
  backingSize,
  decodeHeader,
  decodeRecord,
  dekContext,
  encodeHeader,
  encodeRecord,
  packageAad,
  packageCount,
  packageOffset,
  packagePlaintextLength,
  plaintextSize,
  sealAad,
  type KeyRecord,
} from '../src/format/index.js';

const P = PACKAGE_PLAINTEXT;
const integrity = { code: 'ENGINE_INTEGRITY' };
const unsupported = { code: 'ENGINE_UNSUPPORTED_FORMAT' };
const fileId = Buffer.from('00112233445566778899aabbccddeeff', 'hex');

test('constants of format version 1', (t) => {
  t.is(FORMAT_VERSION, 1);
  t.is(CONTENT_ALGORITHM_AES256GCM, 1);
  t.is(HEADER_BYTES, 32);
  t.is(P, 65536);
  t.is(PACKAGE_NONCE, 12);
  t.is(PACKAGE_OVERHEAD, 28);
  t.is(PACKAGE_CIPHERTEXT, 65564);
  t.is(RECORD_VERSION, 1);
  t.is(RECORD_ALGORITHM_V1, 1);
  t.is(KEY_RECORD_XATTR, 'user.mountd.key');
  t.is(META_XATTR, 'user.mountd.meta');
  t.deepEqual(KeyKind, { Default: 1, Named: 2, Customer: 3 });
});

test('header: exact bytes, decode round trip', (t) => {
  const h = encodeHeader(fileId);
  t.is(h.bytes.toString('hex'), '6d6e7464' + '01' + '01' + '0000' + fileId.toString('hex') + '00'.repeat(8));
  const d = decodeHeader(h.bytes);
  t.deepEqual(d.fileId, fileId);
  t.deepEqual(d.bytes, h.bytes);
  t.is(d.version, 1);
  t.is(d.algorithm, 1);
  // Extra bytes after the header (the first package) are ignored.
  t.deepEqual(decodeHeader(Buffer.concat([h.bytes, Buffer.alloc(10, 0xff)])).bytes, h.bytes);
  t.throws(() => encodeHeader(Buffer.alloc(15)), { instanceOf: TypeError });
});

test('header: every rejection', (t) => {
  const good = encodeHeader(fileId).bytes;
  const edit = (i: number, v: number) => {
    const b = Buffer.from(good);
    b[i] = v;
    return b;
  };
  t.throws(() => decodeHeader(good.subarray(0, 31)), integrity);
  t.throws(() => decodeHeader(Buffer.alloc(0)), integrity);
  for (let i = 0; i < 4; i++) t.throws(() => decodeHeader(edit(i, good[i]! ^ 0x20)), integrity, `magic byte ${i}`);
  t.throws(() => decodeHeader(edit(4, 2)), unsupported);
  t.throws(() => decodeHeader(edit(4, 0)), unsupported);
  t.throws(() => decodeHeader(edit(5, 2)), unsupported);
  for (const i of [6, 7, 24, 25, 26, 27, 28, 29, 30, 31]) t.throws(() => decodeHeader(edit(i, 1)), integrity, `reserved byte ${i}`);
  // The file id is free-form.
  t.notThrows(() => decodeHeader(edit(8, 0xff)));
});

test('packageAad: header || u64be(index) || u8(final)', (t) => {
  const h = encodeHeader(fileId).bytes;
  const aad = packageAad(h, 0x0102030405, true);
  t.is(aad.length, 41);
  t.deepEqual(aad.subarray(0, 32), h);
  t.is(aad.subarray(32).toString('hex'), '0000000102030405' + '01');
  t.is(packageAad(h, 0, false).subarray(32).toString('hex'), '0000000000000000' + '00');
  t.is(packageAad(Buffer.concat([h, Buffer.alloc(5, 9)]), 1, false).length, 41, 'only the 32 header bytes are used');
});

test('package arithmetic at and around package boundaries', (t) => {
  const rows: Array<[number, number, number[]]> = [
    [0, 1, [0]],
    [1, 1, [1]],
    [P - 1, 1, [P - 1]],
    [P, 1, [P]],
    [P + 1, 2, [P, 1]],
    [2 * P, 2, [P, P]],
    [3 * P - 7, 3, [P, P, P - 7]],
  ];
  for (const [size, count, lengths] of rows) {
    t.is(packageCount(size), count, `count(${size})`);
    t.deepEqual(
      lengths.map((_, i) => packagePlaintextLength(size, i)),
      lengths,
      `lengths(${size})`,
    );
    t.is(packagePlaintextLength(size, count), 0);
    t.is(backingSize(size), HEADER_BYTES + lengths.reduce((a, l) => a + l + PACKAGE_OVERHEAD, 0), `backing(${size})`);
  }
  t.is(packageOffset(0), 32);
  t.is(packageOffset(3), 32 + 3 * 65564);
});

test('plaintextSize inverts backingSize and rejects every size no plaintext maps to', (t) => {
  // Every backing size from 0 to just past three packages: valid sizes map back exactly, others are integrity errors.
  const valid = new Set<number>();
  for (let s = 0; s <= 3 * P + 100; s++) valid.add(backingSize(s));
  let rejected = 0;
  for (let b = 0; b <= backingSize(3 * P + 100); b++) {
    if (valid.has(b)) {
      t.is(backingSize(plaintextSize(b)), b);
    } else {
      rejected++;
      try {
        plaintextSize(b);
        t.fail(`backing size ${b} should be rejected`);
      } catch (err) {
        t.is((err as { code?: string }).code, 'ENGINE_INTEGRITY');
      }
    }
  }
  // Sizes below 60, and the 28 sizes after each full package that cannot hold a non-empty package.
  t.is(rejected, 60 + 3 * 28);
});

test('the random-access formula of FORMAT.md: byte o lives at 32 + floor(o/P)*65564 + 12 + o mod P', (t) => {
  for (const o of [0, 1, P - 1, P, P + 1, 5 * P + 123]) {
    const index = Math.floor(o / P);
    t.is(packageOffset(index) + PACKAGE_NONCE + (o % P), 32 + index * 65564 + 12 + (o % P));
  }
});

test('backingSize rejects negative, fractional and unsafe sizes', (t) => {
  t.throws(() => backingSize(-1), { instanceOf: RangeError });
  t.throws(() => backingSize(1.5), { instanceOf: RangeError });
  t.throws(() => backingSize(Number.MAX_SAFE_INTEGER + 1), { instanceOf: RangeError });
  t.throws(() => backingSize(Number.NaN), { instanceOf: RangeError });
});

const sample = (over: Partial<KeyRecord> = {}): KeyRecord => ({
  version: 1,
  algorithm: 1,
  kind: KeyKind.Default,
  keyName: 'default-key',
  dekCiphertext: Buffer.alloc(76, 0xaa),
  context: dekContext('bucket', 'a/b'),
  iv: Buffer.alloc(32, 0xbb),
  sealedKey: Buffer.alloc(60, 0xcc),
  ...over,
});

test('key record: layout, sealAad is every byte before the sealed key, round trip of every kind', (t) => {
  const r = sample();
  const bytes = encodeRecord(r);
  const aad = sealAad(r);
  t.deepEqual(bytes.subarray(0, aad.length), aad);
  t.is(bytes.subarray(aad.length).toString('hex'), '003c' + 'cc'.repeat(60));
  t.is(bytes.subarray(0, 6).toString('hex'), '01010100' + '000b');
  t.is(bytes.length, 4 + 2 + 11 + 2 + 76 + 2 + r.context.length + 2 + 32 + 2 + 60);
  t.deepEqual(decodeRecord(bytes), r);
  const named = sample({ kind: KeyKind.Named, keyName: 'ключ-ü' });
  t.deepEqual(decodeRecord(encodeRecord(named)), named);
  const customer = sample({ kind: KeyKind.Customer, keyName: '', dekCiphertext: Buffer.alloc(0), context: Buffer.alloc(0) });
  t.deepEqual(decodeRecord(encodeRecord(customer)), customer);
  // A view into a larger buffer decodes by its own bytes.
  const padded = Buffer.concat([Buffer.alloc(7), bytes, Buffer.alloc(3)]);
  t.deepEqual(decodeRecord(padded.subarray(7, 7 + bytes.length)), r);
});

test('key record: every rejection', (t) => {
  const bytes = encodeRecord(sample());
  const edit = (i: number, v: number) => {
    const b = Buffer.from(bytes);
    b[i] = v;
    return b;
  };
  t.throws(() => decodeRecord(edit(0, 2)), unsupported);
  t.throws(() => decodeRecord(edit(0, 0)), unsupported);
  t.throws(() => decodeRecord(edit(1, 2)), unsupported);
  t.throws(() => decodeRecord(edit(2, 0)), integrity);
  t.throws(() => decodeRecord(edit(2, 4)), integrity);
  t.throws(() => decodeRecord(edit(3, 1)), integrity);
  // Every truncation is refused, never misread.
  for (let n = 0; n < bytes.length; n++) t.throws(() => decodeRecord(bytes.subarray(0, n)), integrity, `truncated to ${n}`);
  t.throws(() => decodeRecord(Buffer.concat([bytes, Buffer.from([0])])), integrity);
  t.throws(() => decodeRecord(encodeRecord(sample({ iv: Buffer.alloc(31) }))), integrity);
  t.throws(() => decodeRecord(encodeRecord(sample({ keyName: '' }))), integrity);
  t.throws(() => decodeRecord(encodeRecord(sample({ kind: KeyKind.Customer }))), integrity, 'a customer record with a key name');
  t.throws(() => decodeRecord(encodeRecord(sample({ kind: KeyKind.Customer, keyName: '' }))), integrity, 'a customer record with a DEK');
  t.throws(() => encodeRecord(sample({ context: Buffer.alloc(0x10000) })), { instanceOf: RangeError });
});

test('dekContext is the compact JSON MinIO uses, escaped', (t) => {
  t.is(dekContext('bucket', 'a/b').toString('utf8'), '{"bucket":"bucket/a/b"}');
  t.is(dekContext('b1', 'q"uote\\ü').toString('utf8'), '{"b1":"b1/q\\"uote\\\\ü"}');
  t.deepEqual(JSON.parse(dekContext('b1', 'x"y').toString('utf8')), { b1: 'b1/x"y' });
});
