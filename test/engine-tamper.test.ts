// Tampering with data files and key records on the backing store is an error with a stable code, never wrong plaintext.
import test, { type ExecutionContext } from 'ava';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { getAttributeSync, listAttributesSync, removeAttributeSync, setAttributeSync } from '@napi-rs/xattr';
import { KEY_RECORD_XATTR, META_XATTR, PACKAGE_CIPHERTEXT, PACKAGE_PLAINTEXT, decodeRecord, encodeRecord, type KeyRecord } from '../src/format/index.js';
import type { Engine } from '../src/engine/index.js';
import { makeFixture, type Fixture } from './helpers/engine.js';

const P = PACKAGE_PLAINTEXT;
const C = PACKAGE_CIPHERTEXT;
const INTEGRITY = 'ENGINE_INTEGRITY';

function pattern(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = seed >>> 0;
  for (let i = 0; i < size; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

interface Outcome {
  code: string;
  /** Bytes delivered before the error (a stream may deliver the packages before a bad one). */
  delivered: Buffer;
}

/** Reads an object through getObject and through a handle; both must fail the same way. */
async function readBoth(e: Engine, bucket: string, key: string, customerKey?: Uint8Array): Promise<{ s3: Outcome; handle: Outcome }> {
  const s3: Outcome = { code: 'no error', delivered: Buffer.alloc(0) };
  const chunks: Buffer[] = [];
  try {
    const g = await e.getObject(bucket, key, { customerKey });
    for await (const c of g.body) chunks.push(Buffer.from(c as Uint8Array));
  } catch (err) {
    s3.code = (err as { code?: string }).code ?? `uncoded: ${(err as Error).message}`;
  }
  s3.delivered = Buffer.concat(chunks);
  const handle: Outcome = { code: 'no error', delivered: Buffer.alloc(0) };
  const parts: Buffer[] = [];
  let h: number | undefined;
  try {
    h = await e.open(bucket, key, { customerKey });
    for (let at = 0; ; at += P) {
      const b = await e.read(h, at, P);
      if (b.length === 0) break;
      parts.push(b);
    }
  } catch (err) {
    handle.code = (err as { code?: string }).code ?? `uncoded: ${(err as Error).message}`;
  } finally {
    if (h !== undefined) await e.release(h).catch(() => undefined);
  }
  handle.delivered = Buffer.concat(parts);
  return { s3, handle };
}

/** The object fails with `code` through both doors, and nothing delivered is anything but a prefix of the true plaintext. */
async function expectFailure(t: ExecutionContext, fx: Fixture, key: string, plain: Buffer, code: string | string[], what: string, bucket = 'bucket', customerKey?: Uint8Array) {
  const { s3, handle } = await readBoth(fx.engine, bucket, key, customerKey);
  const codes = Array.isArray(code) ? code : [code];
  t.true(codes.includes(s3.code), `${what}: getObject gave ${s3.code}, expected ${codes.join(' or ')}`);
  t.true(codes.includes(handle.code), `${what}: handle read gave ${handle.code}, expected ${codes.join(' or ')}`);
  for (const o of [s3, handle]) t.true(plain.subarray(0, o.delivered.length).equals(o.delivered), `${what}: only true plaintext was delivered`);
  t.is(fx.engine.status().openFiles, 0, `${what}: no file left open`);
}

const file = (fx: Fixture, key: string, bucket = 'bucket') => path.join(fx.dir, bucket, ...key.split('/'));

async function put(fx: Fixture, key: string, size: number, seed: number): Promise<Buffer> {
  const body = pattern(size, seed);
  await fx.engine.putObject('bucket', key, body);
  const { s3 } = await readBoth(fx.engine, 'bucket', key);
  if (s3.code !== 'no error' || !s3.delivered.equals(body)) throw new Error(`setup: ${key} does not read back`);
  return body;
}

async function editBytes(p: string, edit: (b: Buffer) => Buffer): Promise<void> {
  await fsp.writeFile(p, edit(await fsp.readFile(p)));
}

const flipAt = (offset: number) => (b: Buffer) => {
  b[offset] = b[offset]! ^ 0x40;
  return b;
};

function editRecord(p: string, edit: (r: KeyRecord) => KeyRecord | Buffer): void {
  const r = decodeRecord(getAttributeSync(p, KEY_RECORD_XATTR)!);
  const next = edit(r);
  setAttributeSync(p, KEY_RECORD_XATTR, Buffer.isBuffer(next) ? next : encodeRecord(next));
}

function copyXattrs(from: string, to: string): void {
  for (const name of listAttributesSync(from)) setAttributeSync(to, name, getAttributeSync(from, name)!);
}

test('data tampering: flipped bytes in packages, tags, nonces and the header', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const cases: Array<[string, number, string]> = [
    ['ciphertext byte of package 1', 32 + C + 12 + 1000, INTEGRITY],
    ['first ciphertext byte of package 0', 32 + 12, INTEGRITY],
    ['tag byte of package 0', 32 + C - 1, INTEGRITY],
    ['tag byte of the last package', -1, INTEGRITY],
    ['nonce byte of package 0', 32 + 3, INTEGRITY],
    ['nonce byte of package 2', 32 + 2 * C + 11, INTEGRITY],
    ['file id byte in the header', 10, INTEGRITY],
    ['magic byte', 0, INTEGRITY],
    ['reserved header byte', 30, INTEGRITY],
    ['reserved header byte 6', 6, INTEGRITY],
    ['format version byte', 4, 'ENGINE_UNSUPPORTED_FORMAT'],
    ['content algorithm byte', 5, 'ENGINE_UNSUPPORTED_FORMAT'],
  ];
  let seed = 1;
  for (const [what, offset, code] of cases) {
    const key = `flip-${seed}`;
    const plain = await put(fx, key, 2 * P + 500, seed++);
    await editBytes(file(fx, key), (b) => flipAt(offset < 0 ? b.length + offset : offset)(b));
    await expectFailure(t, fx, key, plain, code, what);
  }
});

test('data tampering: swapped, borrowed, dropped and appended packages', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const pkg = (b: Buffer, i: number) => Buffer.from(b.subarray(32 + i * C, Math.min(b.length, 32 + (i + 1) * C)));

  const swap = await put(fx, 'swap', 3 * P, 1);
  await editBytes(file(fx, 'swap'), (b) => Buffer.concat([b.subarray(0, 32), pkg(b, 1), pkg(b, 0), pkg(b, 2)]));
  await expectFailure(t, fx, 'swap', swap, INTEGRITY, 'packages 0 and 1 swapped');

  // Another file's package at the same index, same key server key, same size.
  const mine = await put(fx, 'mine', 3 * P, 2);
  await put(fx, 'theirs', 3 * P, 3);
  const theirs = await fsp.readFile(file(fx, 'theirs'));
  await editBytes(file(fx, 'mine'), (b) => Buffer.concat([b.subarray(0, 32 + C), pkg(theirs, 1), b.subarray(32 + 2 * C)]));
  await expectFailure(t, fx, 'mine', mine, INTEGRITY, 'package 1 copied from another file');

  // Another file's header (file id) with this file's packages.
  const hdr = await put(fx, 'hdr', P + 10, 4);
  await editBytes(file(fx, 'hdr'), (b) => Buffer.concat([theirs.subarray(0, 32), b.subarray(32)]));
  await expectFailure(t, fx, 'hdr', hdr, INTEGRITY, 'header copied from another file');

  // Truncation at a package boundary: the last of 3 full packages dropped, and the partial last one dropped.
  const full = await put(fx, 'trunc-full', 3 * P, 5);
  await editBytes(file(fx, 'trunc-full'), (b) => b.subarray(0, 32 + 2 * C));
  await expectFailure(t, fx, 'trunc-full', full, INTEGRITY, 'last full package dropped');
  const partial = await put(fx, 'trunc-partial', 2 * P + 100, 6);
  await editBytes(file(fx, 'trunc-partial'), (b) => b.subarray(0, 32 + 2 * C));
  await expectFailure(t, fx, 'trunc-partial', partial, INTEGRITY, 'partial last package dropped');
  const empty = await put(fx, 'trunc-empty', P, 7);
  await editBytes(file(fx, 'trunc-empty'), (b) => b.subarray(0, 32));
  await expectFailure(t, fx, 'trunc-empty', empty, INTEGRITY, 'only package dropped');
  const torn = await put(fx, 'torn', 2 * P + 100, 8);
  await editBytes(file(fx, 'torn'), (b) => b.subarray(0, b.length - 1));
  await expectFailure(t, fx, 'torn', torn, INTEGRITY, 'one byte cut off the end');
  const torn2 = await put(fx, 'torn2', 2 * P + 10, 9);
  await editBytes(file(fx, 'torn2'), (b) => b.subarray(0, b.length - 20));
  await expectFailure(t, fx, 'torn2', torn2, INTEGRITY, 'cut inside the last package overhead');

  // Appending: a copy of a full package, a package from another file, and an empty final package.
  const app = await put(fx, 'append', 2 * P, 10);
  await editBytes(file(fx, 'append'), (b) => Buffer.concat([b, pkg(b, 1)]));
  await expectFailure(t, fx, 'append', app, INTEGRITY, 'package appended (copy of the last)');
  const app2 = await put(fx, 'append2', 2 * P, 11);
  await editBytes(file(fx, 'append2'), (b) => Buffer.concat([b, pkg(theirs, 2)]));
  await expectFailure(t, fx, 'append2', app2, INTEGRITY, 'package appended from another file');
  const app3 = await put(fx, 'append3', P + 5, 12);
  await editBytes(file(fx, 'append3'), (b) => Buffer.concat([b.subarray(0, 32 + C), pkg(b, 0), b.subarray(32 + C)]));
  await expectFailure(t, fx, 'append3', app3, INTEGRITY, 'package duplicated in the middle');
});

test('a backing file copied or moved with its xattrs does not decrypt at its new path', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.createBucket('other');
  const plain = await put(fx, 'dir/orig', P + 77, 1);
  const src = file(fx, 'dir/orig');
  for (const [bucket, key] of [
    ['bucket', 'dir/copy'],
    ['bucket', 'copy-at-top'],
    ['bucket', 'dir/orig2'],
    ['other', 'dir/orig'],
    ['other', 'copy'],
  ] as const) {
    await fsp.mkdir(path.dirname(file(fx, key, bucket)), { recursive: true });
    await fsp.copyFile(src, file(fx, key, bucket));
    copyXattrs(src, file(fx, key, bucket));
    await expectFailure(t, fx, key, plain, INTEGRITY, `copied to ${bucket}/${key}`, bucket);
    t.is(await e.encryptionInfo(bucket, key).then((i) => i.keyError), INTEGRITY);
  }
  // The same with the record's context rewritten to name the new path: the key server refuses the DEK ciphertext.
  editRecord(file(fx, 'copy', 'other'), (r) => ({ ...r, context: Buffer.from(JSON.stringify({ other: 'other/copy' })) }));
  await expectFailure(t, fx, 'copy', plain, 'KMS_NOT_AUTHENTIC', 'copied, context rewritten', 'other');
  // Moved by someone else (not through the engine).
  await fsp.rename(src, file(fx, 'moved'));
  await expectFailure(t, fx, 'moved', plain, INTEGRITY, 'moved on the backing store');
  // The original path still works when the file is put back.
  await fsp.rename(file(fx, 'moved'), src);
  const back = await readBoth(e, 'bucket', 'dir/orig');
  t.is(back.s3.code, 'no error');
  t.true(back.s3.delivered.equals(plain));
});

test('key record tampering: every field, unknown versions, a missing record', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.createKey('other-key');
  const flip = (b: Buffer, i: number) => {
    const c = Buffer.from(b);
    c[i] = c[i]! ^ 0x01;
    return c;
  };
  const cases: Array<[string, (r: KeyRecord) => KeyRecord | Buffer, string | string[]]> = [
    // The key server is asked with another key name: its ciphertext does not authenticate.
    ['key name -> another existing key', (r) => ({ ...r, keyName: 'other-key' }), 'KMS_NOT_AUTHENTIC'],
    ['key name -> a key that does not exist', (r) => ({ ...r, keyName: 'no-such-key' }), 'KMS_KEY_NOT_FOUND'],
    ['DEK ciphertext first byte', (r) => ({ ...r, dekCiphertext: flip(r.dekCiphertext, 0) }), 'KMS_NOT_AUTHENTIC'],
    ['DEK ciphertext last byte', (r) => ({ ...r, dekCiphertext: flip(r.dekCiphertext, r.dekCiphertext.length - 1) }), 'KMS_NOT_AUTHENTIC'],
    ['DEK ciphertext truncated', (r) => ({ ...r, dekCiphertext: r.dekCiphertext.subarray(0, 40) }), 'KMS_NOT_AUTHENTIC'],
    ['context names another object', (r) => ({ ...r, context: Buffer.from('{"bucket":"bucket/other"}') }), INTEGRITY],
    ['context with extra whitespace', (r) => ({ ...r, context: Buffer.from(r.context.toString().replace(':', ': ')) }), INTEGRITY],
    ['context emptied', (r) => ({ ...r, context: Buffer.alloc(0) }), INTEGRITY],
    ['iv first byte', (r) => ({ ...r, iv: flip(r.iv, 0) }), INTEGRITY],
    ['iv last byte', (r) => ({ ...r, iv: flip(r.iv, 31) }), INTEGRITY],
    ['sealed key nonce', (r) => ({ ...r, sealedKey: flip(r.sealedKey, 0) }), INTEGRITY],
    ['sealed key ciphertext', (r) => ({ ...r, sealedKey: flip(r.sealedKey, 20) }), INTEGRITY],
    ['sealed key tag', (r) => ({ ...r, sealedKey: flip(r.sealedKey, 59) }), INTEGRITY],
    ['sealed key truncated', (r) => ({ ...r, sealedKey: r.sealedKey.subarray(0, 59) }), INTEGRITY],
    ['kind default -> named', (r) => ({ ...r, kind: 2 }), INTEGRITY],
    ['kind -> customer', (r) => Buffer.concat([Buffer.from([1, 1, 3, 0]), encodeRecord(r).subarray(4)]), INTEGRITY],
    ['kind 9', (r) => Buffer.concat([Buffer.from([1, 1, 9, 0]), encodeRecord(r).subarray(4)]), INTEGRITY],
    ['reserved byte', (r) => Buffer.concat([Buffer.from([1, 1, 1, 7]), encodeRecord(r).subarray(4)]), INTEGRITY],
    ['version 2', (r) => Buffer.concat([Buffer.from([2]), encodeRecord(r).subarray(1)]), 'ENGINE_UNSUPPORTED_FORMAT'],
    ['version 0', (r) => Buffer.concat([Buffer.from([0]), encodeRecord(r).subarray(1)]), 'ENGINE_UNSUPPORTED_FORMAT'],
    ['algorithm 2', (r) => Buffer.concat([Buffer.from([1, 2]), encodeRecord(r).subarray(2)]), 'ENGINE_UNSUPPORTED_FORMAT'],
    ['trailing byte', (r) => Buffer.concat([encodeRecord(r), Buffer.from([0])]), INTEGRITY],
    ['truncated record', (r) => encodeRecord(r).subarray(0, 50), INTEGRITY],
    ['empty record', () => Buffer.alloc(0), INTEGRITY],
  ];
  let seed = 1;
  for (const [what, edit, code] of cases) {
    const key = `rec-${seed}`;
    const plain = await put(fx, key, P + 300, seed++);
    editRecord(file(fx, key), edit);
    await expectFailure(t, fx, key, plain, code, what);
  }
  // A missing record.
  const plain = await put(fx, 'no-record', 100, 99);
  removeAttributeSync(file(fx, 'no-record'), KEY_RECORD_XATTR);
  await expectFailure(t, fx, 'no-record', plain, INTEGRITY, 'record removed');
  t.is(await e.encryptionInfo('bucket', 'no-record').then(() => 'no error', (err: { code: string }) => err.code), INTEGRITY);
});

test('key record substitution: records that are valid elsewhere or earlier do not open this file', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  // An earlier version of the object at the same path: its DEK ciphertext is valid for this context and key.
  await put(fx, 'v', P + 1, 1);
  const old = decodeRecord(getAttributeSync(file(fx, 'v'), KEY_RECORD_XATTR)!);
  const oldMeta = getAttributeSync(file(fx, 'v'), META_XATTR)!;
  const plain = await put(fx, 'v', P + 1, 2);
  const current = decodeRecord(getAttributeSync(file(fx, 'v'), KEY_RECORD_XATTR)!);
  t.false(old.dekCiphertext.equals(current.dekCiphertext));
  const cases: Array<[string, KeyRecord | Buffer]> = [
    ['the earlier DEK ciphertext (the key server accepts it; the seal does not)', { ...current, dekCiphertext: old.dekCiphertext }],
    ['the earlier iv', { ...current, iv: old.iv }],
    ['the earlier sealed key', { ...current, sealedKey: old.sealedKey }],
    // Rollback of the record alone: it unseals, but to the earlier OEK, which does not open these packages.
    ['the whole earlier record', encodeRecord(old)],
  ];
  for (const [what, rec] of cases) {
    setAttributeSync(file(fx, 'v'), KEY_RECORD_XATTR, Buffer.isBuffer(rec) ? rec : encodeRecord(rec));
    await expectFailure(t, fx, 'v', plain, INTEGRITY, what);
  }
  // The record of another object: bound to its path.
  await put(fx, 'w', P + 1, 3);
  setAttributeSync(file(fx, 'v'), KEY_RECORD_XATTR, getAttributeSync(file(fx, 'w'), KEY_RECORD_XATTR)!);
  await expectFailure(t, fx, 'v', plain, INTEGRITY, "another object's record");
  // Restored, it reads again; then the metadata xattr of the earlier version is refused.
  setAttributeSync(file(fx, 'v'), KEY_RECORD_XATTR, encodeRecord(current));
  t.is((await readBoth(fx.engine, 'bucket', 'v')).s3.code, 'no error');
  setAttributeSync(file(fx, 'v'), META_XATTR, oldMeta);
  t.is(await fx.engine.headObject('bucket', 'v').then(() => 'no error', (err: { code: string }) => err.code), INTEGRITY);
  const meta = getAttributeSync(file(fx, 'w'), META_XATTR)!;
  meta[meta.length - 1] = meta[meta.length - 1]! ^ 1;
  setAttributeSync(file(fx, 'w'), META_XATTR, meta);
  t.is(await fx.engine.headObject('bucket', 'w').then(() => 'no error', (err: { code: string }) => err.code), INTEGRITY);
});

test('SSE-C objects: tampered data is an integrity error; a tampered record is indistinguishable from a wrong key', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const customerKey = Buffer.alloc(32, 0x77);
  const plain = pattern(2 * P + 5, 1);
  await fx.engine.putObject('bucket', 'c1', plain, { encryption: { kind: 'customer', customerKey } });
  await fx.engine.putObject('bucket', 'c2', plain, { encryption: { kind: 'customer', customerKey } });
  await editBytes(file(fx, 'c1'), flipAt(32 + C + 50));
  await expectFailure(t, fx, 'c1', plain, INTEGRITY, 'SSE-C package flipped', 'bucket', customerKey);
  editRecord(file(fx, 'c2'), (r) => ({ ...r, iv: Buffer.alloc(32, 1) }));
  await expectFailure(t, fx, 'c2', plain, 'ENGINE_CUSTOMER_KEY_MISMATCH', 'SSE-C record iv edited', 'bucket', customerKey);
  await fsp.copyFile(file(fx, 'c1'), file(fx, 'c3'));
  copyXattrs(file(fx, 'c1'), file(fx, 'c3'));
  await expectFailure(t, fx, 'c3', plain, 'ENGINE_CUSTOMER_KEY_MISMATCH', 'SSE-C copied to another path', 'bucket', customerKey);
});
