// Engine round trips (S3 and handle paths), ranged and random reads, listings, @noble decryption of what it wrote, and the secrets scan.
import test from 'ava';
import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { Domain } from '../src/crypto/index.js';
import { KeyKind, PACKAGE_CIPHERTEXT, PACKAGE_PLAINTEXT, backingSize } from '../src/format/index.js';
import type { Engine } from '../src/engine/index.js';
import { makeFixture, readAll } from './helpers/engine.js';
import {
  collectFileKeys,
  collectKeyServerSecrets,
  markerSecret,
  nobleDecryptFile,
  nobleUnsealOek,
  readRecordSync,
  scanForSecrets,
  type Secret,
} from './helpers/scan.js';

const P = PACKAGE_PLAINTEXT;
const SIZES = [0, 1, 65535, 65536, 65537, 10 * 1024 * 1024];
const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');

/** Small deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** Bytes that differ at every offset and from package to package, so that a misplaced byte shows. */
function pattern(size: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = seed * 2654435761;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

async function* chunked(b: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

async function getBody(e: Engine, bucket: string, key: string, opts: Parameters<Engine['getObject']>[2] = {}): Promise<Buffer> {
  return readAll((await e.getObject(bucket, key, opts)).body);
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (err) {
    return (err as { code?: string }).code ?? `uncoded: ${(err as Error).message}`;
  }
}

test('putObject/getObject round trip at package boundaries, from a buffer and from odd-sized chunks', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  for (const size of SIZES) {
    const body = pattern(size, size + 1);
    for (const [key, src] of [
      [`buf-${size}`, body],
      [`chunks-${size}`, chunked(body, 7777)],
      [`small-${size}`, chunked(body, 1000)],
    ] as const) {
      const put = await e.putObject('bucket', key, src);
      t.is(put.size, size, key);
      t.is(put.etag, md5(body), key);
      t.is(put.encryption.kind, 'default');
      t.is(put.encryption.keyName, 'default-key');
      t.regex(put.encryption.fileId, /^[0-9a-f]{32}$/);
      const got = await getBody(e, 'bucket', key);
      t.is(got.length, size, key);
      t.true(got.equals(body), key);
      t.is((await fsp.stat(path.join(fx.dir, 'bucket', key))).size, backingSize(size), `${key}: backing size`);
      const head = await e.headObject('bucket', key);
      t.is(head.size, size);
      t.is(head.meta.etag, md5(body));
      t.is((await e.stat('bucket', key)).size, size);
    }
  }
});

test('metadata that does not fit beside the key record is MetadataTooLarge before a byte of the body is read, at PUT, multipart create and metadata updates; nothing is left behind', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  let read = false;
  async function* untouchable(): AsyncGenerator<Uint8Array> {
    read = true;
    yield Buffer.from('never');
  }
  const tooMuch = { user: { note: 'n'.repeat(2000) }, tags: Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`k${i}`.padEnd(128, 'k'), 'v'.repeat(256)])) };
  await t.throwsAsync(e.putObject('bucket', 'crowded', untouchable(), tooMuch), { code: 'ENGINE_METADATA_TOO_LARGE' });
  t.false(read, 'the body was never read');
  t.is(await e.statOrNull('bucket', 'crowded'), null);
  await t.throwsAsync(e.createUpload('bucket', 'crowded', tooMuch), { code: 'ENGINE_METADATA_TOO_LARGE' });
  // An update that would overflow leaves the metadata as it was.
  await e.putObject('bucket', 'fits', Buffer.from('x'), { user: { a: '1' } });
  await t.throwsAsync(e.updateMeta('bucket', 'fits', (m) => ({ ...m, tags: tooMuch.tags })), { code: 'ENGINE_METADATA_TOO_LARGE' });
  t.deepEqual((await e.headObject('bucket', 'fits')).meta.user, { a: '1' });
  t.is((await e.headObject('bucket', 'fits')).meta.tags, undefined);
  const leftovers = await fsp.readdir(path.join(fx.dir, '.mountd', 'tmp'));
  t.deepEqual(leftovers, [], 'no temp file left');
});

test('open/write/read/release round trip at package boundaries, in writes of several sizes', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  for (const size of SIZES) {
    for (const step of [4096, 65536, 100_000, 1 << 20]) {
      if (size < 70000 && step > 65536) continue;
      const key = `h-${size}-${step}`;
      const body = pattern(size, step + size);
      const h = await e.create('bucket', key);
      for (let at = 0; at < size; at += step) t.is(await e.write(h, at, body.subarray(at, at + step)), Math.min(step, size - at));
      t.is(e.handleSize(h), size);
      t.is((await e.stat('bucket', key)).size, size, 'stat sees buffered writes');
      t.true((await e.read(h, 0, size + 10)).equals(body), `${key}: read before release`);
      await e.release(h);
      t.is((await fsp.stat(path.join(fx.dir, 'bucket', key))).size, backingSize(size), `${key}: backing size`);
      const h2 = await e.open('bucket', key);
      const back: Buffer[] = [];
      for (let at = 0; at < size; at += 1 << 20) back.push(await e.read(h2, at, 1 << 20));
      t.true(Buffer.concat(back).equals(body), `${key}: read after reopen`);
      t.is((await e.read(h2, size, 10)).length, 0, 'read at EOF is empty');
      await e.release(h2);
      t.true((await getBody(e, 'bucket', key)).equals(body), `${key}: S3 view`);
    }
  }
});

test('ranged getObject reads, clamped end, and unsatisfiable ranges', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  const size = 3 * P + 1234;
  const body = pattern(size, 9);
  await e.putObject('bucket', 'r', body);
  const ranges: Array<[number, number]> = [
    [0, 0],
    [0, P - 1],
    [P - 1, P],
    [P, 2 * P - 1],
    [P - 5, 2 * P + 5],
    [size - 1, size - 1],
    [1, size - 2],
    [3 * P, size - 1],
  ];
  for (const [start, end] of ranges) {
    const g = await e.getObject('bucket', 'r', { range: { start, end } });
    t.is(g.start, start);
    t.is(g.end, end);
    t.true((await readAll(g.body)).equals(body.subarray(start, end + 1)), `${start}-${end}`);
  }
  const clamped = await e.getObject('bucket', 'r', { range: { start: size - 10, end: size + 1000 } });
  t.is(clamped.end, size - 1);
  t.true((await readAll(clamped.body)).equals(body.subarray(size - 10)));
  t.is(await codeOf(e.getObject('bucket', 'r', { range: { start: 10, end: 5 } })), 'ENGINE_INVALID_ARGUMENT');
  t.is(await codeOf(e.getObject('bucket', 'r', { range: { start: size, end: size + 5 } })), 'ENGINE_INVALID_ARGUMENT');
  t.is(await codeOf(e.getObject('bucket', 'r', { range: { start: -1, end: 5 } })), 'ENGINE_INVALID_ARGUMENT');
  await e.putObject('bucket', 'empty', Buffer.alloc(0));
  t.is((await getBody(e, 'bucket', 'empty')).length, 0);
  t.is(await codeOf(e.getObject('bucket', 'empty', { range: { start: 1, end: 5 } })), 'ENGINE_INVALID_ARGUMENT');
  // No leaked references: nothing stays open after the streams ended or failed.
  t.is(e.status().openFiles, 0);
});

test('random reads through a handle and through ranged gets match the plaintext', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  const seed = 4242;
  const rnd = prng(seed);
  const size = 10 * P + 777;
  const body = pattern(size, 3);
  await e.putObject('bucket', 'rand', body);
  const h = await e.open('bucket', 'rand');
  for (let i = 0; i < 300; i++) {
    const at = Math.floor(rnd() * (size + 100));
    const len = Math.floor(rnd() * (rnd() < 0.2 ? 4 * P : 300)) + 1;
    const got = await e.read(h, at, len);
    t.true(got.equals(body.subarray(at, at + len)), `seed ${seed} read ${i}: ${at}+${len}`);
    if (i % 5 === 0 && at < size) {
      const g = await getBody(e, 'bucket', 'rand', { range: { start: at, end: at + len - 1 } });
      t.true(g.equals(body.subarray(at, at + len)), `seed ${seed} range ${i}`);
    }
  }
  await e.release(h);
});

test('the engine writes what FORMAT.md says: @noble decrypts every file with keys derived independently', async (t) => {
  const fx = await makeFixture({ maxDirtyBytesPerFile: 128 * 1024 });
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.createKey('named-key');
  const customerKey = Buffer.alloc(32, 0x5c);
  const expected = new Map<string, Buffer>();
  for (const size of [0, 1, 3 * P - 1, 3 * P, 3 * P + 1]) {
    expected.set(`put/${size}`, pattern(size, size));
    await e.putObject('bucket', `put/${size}`, pattern(size, size));
  }
  expected.set('named', pattern(2 * P + 3, 5));
  await e.putObject('bucket', 'named', expected.get('named')!, { encryption: { kind: 'named', keyName: 'named-key' } });
  expected.set('ssec', pattern(P + 9, 6));
  await e.putObject('bucket', 'ssec', expected.get('ssec')!, { encryption: { kind: 'customer', customerKey } });
  // Through a handle, with forced flushes, rewrites in the middle, a shrink and a grow.
  const model = pattern(5 * P + 10, 7);
  await e.mkdir('bucket', 'handle');
  const h = await e.create('bucket', 'handle/written');
  await e.write(h, 0, model);
  const patch = Buffer.alloc(P, 0xee);
  await e.write(h, P + 100, patch);
  patch.copy(model, P + 100);
  await e.ftruncate(h, 4 * P + 5);
  await e.ftruncate(h, 4 * P + 50);
  const final = Buffer.concat([model.subarray(0, 4 * P + 5), Buffer.alloc(45)]);
  await e.release(h);
  expected.set('handle/written', final);

  for (const [key, plain] of expected) {
    const file = path.join(fx.dir, 'bucket', key);
    const record = readRecordSync(file);
    const objectPath = `bucket/${key}`;
    let oek: Buffer;
    if (record.kind === KeyKind.Customer) {
      const secret = hmac(sha256, customerKey, new TextEncoder().encode('mountd customer key secret v1'));
      oek = nobleUnsealOek(record, secret, Domain.Customer, objectPath);
    } else {
      t.is(record.keyName, key === 'named' ? 'named-key' : 'default-key');
      t.is(record.kind, key === 'named' ? KeyKind.Named : KeyKind.Default);
      t.is(record.context.toString('utf8'), JSON.stringify({ bucket: objectPath }));
      const dek = await e.keyService.decrypt(record.keyName, record.dekCiphertext, record.context);
      oek = nobleUnsealOek(record, dek, Domain.KeyServer, objectPath);
    }
    const data = await fsp.readFile(file);
    t.is(data.subarray(0, 4).toString('latin1'), 'mntd');
    t.true(nobleDecryptFile(data, oek).equals(plain), `${key}: @noble plaintext`);
  }
});

test('no (key, nonce) pair is reused: every rewrite of a package draws a fresh nonce', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  const file = path.join(fx.dir, 'bucket', 'n');
  const h = await e.create('bucket', 'n');
  // nonce -> the package bytes it sealed; one file has one OEK, so a nonce may seal one package only.
  const sealedBy = new Map<string, string>();
  const firstPackageNonces = new Set<string>();
  let reused = 0;
  const seen = async () => {
    const data = await fsp.readFile(file);
    for (let at = 32; at < data.length; at += PACKAGE_CIPHERTEXT) {
      const nonce = data.subarray(at, at + 12).toString('hex');
      const sealed = createHash('sha256').update(data.subarray(at, at + PACKAGE_CIPHERTEXT)).digest('hex');
      if ((sealedBy.get(nonce) ?? sealed) !== sealed) reused++;
      sealedBy.set(nonce, sealed);
      if (at === 32) firstPackageNonces.add(nonce);
    }
  };
  const steps = 20;
  for (let i = 0; i < steps; i++) {
    await e.write(h, (i * 1000) % (2 * P), Buffer.from(`write ${i}`)); // rewrites in the middle of package 0 or 1
    await e.flush(h);
    await seen();
  }
  await e.ftruncate(h, P + 1); // the last package changes
  await e.flush(h);
  await seen();
  await e.write(h, e.handleSize(h), Buffer.alloc(P)); // append: the old last package loses its final flag
  await e.flush(h);
  await seen();
  await e.release(h);
  t.is(reused, 0);
  // Package 0 changed at 10 of the write steps (the others wrote package 1) and in the first flush.
  t.true(firstPackageNonces.size >= steps / 2, `${firstPackageNonces.size} nonces for package 0`);
  t.true(sealedBy.size >= steps + 2, `${sealedBy.size} distinct nonces`);
});

test('the ETag is removed once content changes through a handle, including by flushes forced by the dirty budget', async (t) => {
  const fx = await makeFixture({ maxDirtyBytesPerFile: 128 * 1024 });
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.putObject('bucket', 'x', Buffer.from('original'), { contentType: 'text/plain', user: { color: 'blue' } });
  t.is((await e.headObject('bucket', 'x')).meta.etag, md5(Buffer.from('original')));
  const h = await e.open('bucket', 'x');
  await e.write(h, 0, Buffer.alloc(300 * 1024, 1)); // forces flushes inside write()
  await e.release(h);
  const meta = (await e.headObject('bucket', 'x')).meta;
  t.is(meta.etag, undefined, 'a stale MD5 would make S3 clients reject the download');
  t.is(meta.contentType, 'text/plain');
  t.deepEqual(meta.user, { color: 'blue' });
  // A put replaces the object: the new ETag is the new MD5.
  await e.putObject('bucket', 'x', Buffer.from('again'));
  t.is((await e.headObject('bucket', 'x')).meta.etag, md5(Buffer.from('again')));
});

test('a handle on a replaced or unlinked object keeps working and does not touch the new object', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.putObject('bucket', 'y', Buffer.from('old old old'), { user: { v: 'old' } });
  const h = await e.open('bucket', 'y');
  await e.putObject('bucket', 'y', Buffer.from('new content'), { user: { v: 'new' } });
  await e.write(h, 0, Buffer.from('OLD'));
  await e.flush(h);
  t.is((await e.read(h, 0, 100)).toString(), 'OLD old old');
  await e.release(h);
  t.is((await getBody(e, 'bucket', 'y')).toString(), 'new content');
  const head = await e.headObject('bucket', 'y');
  t.deepEqual(head.meta.user, { v: 'new' });
  t.is(head.meta.etag, md5(Buffer.from('new content')));

  const h2 = await e.open('bucket', 'y');
  await e.unlink('bucket', 'y');
  await e.write(h2, 0, Buffer.from('NEW'));
  await e.flush(h2);
  t.is((await e.read(h2, 0, 100)).toString(), 'NEW content');
  await e.release(h2);
  t.is(await codeOf(e.getObject('bucket', 'y')), 'ENGINE_NOT_FOUND');
});

test('listing: prefix, delimiter, markers, pruning and name conflicts', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  for (const k of ['a/1', 'a/2', 'a/b/3', 'ab', 'b', 'c/d/e', 'a-b']) await e.putObject('bucket', k, Buffer.from(k));
  await e.putObject('bucket', 'empty/', Buffer.alloc(0));
  await e.mkdir('bucket', 'c/d/f');
  const keys = async (o: Parameters<Engine['list']>[1]) => {
    const r = await e.list('bucket', o);
    return { objects: r.objects.map((x) => x.key), prefixes: r.commonPrefixes, truncated: r.isTruncated };
  };
  t.deepEqual(await keys({}), { objects: ['a-b', 'a/1', 'a/2', 'a/b/3', 'ab', 'b', 'c/d/e', 'c/d/f/', 'empty/'], prefixes: [], truncated: false });
  t.deepEqual(await keys({ delimiter: '/' }), { objects: ['a-b', 'ab', 'b'], prefixes: ['a/', 'c/', 'empty/'], truncated: false });
  t.deepEqual(await keys({ prefix: 'a/', delimiter: '/' }), { objects: ['a/1', 'a/2'], prefixes: ['a/b/'], truncated: false });
  t.deepEqual(await keys({ prefix: 'a' }), { objects: ['a-b', 'a/1', 'a/2', 'a/b/3', 'ab'], prefixes: [], truncated: false });
  t.deepEqual(await keys({ prefix: 'a', delimiter: '/' }), { objects: ['a-b', 'ab'], prefixes: ['a/'], truncated: false });
  t.deepEqual(await keys({ prefix: 'c/d/', delimiter: '/' }), { objects: ['c/d/e'], prefixes: ['c/d/f/'], truncated: false });
  t.deepEqual(await keys({ prefix: 'zzz' }), { objects: [], prefixes: [], truncated: false });
  t.deepEqual(await keys({ maxKeys: 2 }), { objects: ['a-b', 'a/1'], prefixes: [], truncated: true });
  t.deepEqual(await keys({ startAfter: 'a/2' }), { objects: ['a/b/3', 'ab', 'b', 'c/d/e', 'c/d/f/', 'empty/'], prefixes: [], truncated: false });
  t.deepEqual(await keys({ delimiter: '/', startAfter: 'a/' }), { objects: ['ab', 'b'], prefixes: ['c/', 'empty/'], truncated: false });
  const listed = (await e.list('bucket', { prefix: 'a/1' })).objects[0]!;
  t.is(listed.size, 3);
  t.false(listed.isDirectoryMarker);
  // A prefix that names an empty directory lists its marker (S3 lists a folder object under its own key).
  t.deepEqual(await keys({ prefix: 'empty/' }), { objects: ['empty/'], prefixes: [], truncated: false });
  t.deepEqual(await keys({ prefix: 'empty/', delimiter: '/' }), { objects: ['empty/'], prefixes: [], truncated: false });
  t.deepEqual(await keys({ prefix: 'c/d/f/', delimiter: '/' }), { objects: ['c/d/f/'], prefixes: [], truncated: false });
  t.deepEqual(await keys({ prefix: 'empty/', startAfter: 'empty/' }), { objects: [], prefixes: [], truncated: false });
  t.deepEqual(await keys({ prefix: 'a/' }), { objects: ['a/1', 'a/2', 'a/b/3'], prefixes: [], truncated: false });
  t.true((await e.list('bucket', {})).objects.find((o) => o.key === 'empty/')!.isDirectoryMarker);

  // deleteObject prunes empty parents, but not the bucket and not non-empty ones.
  await e.putObject('bucket', 'x/y/z', Buffer.from('z'));
  await e.putObject('bucket', 'x/w', Buffer.from('w'));
  await e.deleteObject('bucket', 'x/y/z');
  t.is(await codeOf(fsp.stat(path.join(fx.dir, 'bucket', 'x', 'y'))), 'ENOENT');
  t.true((await fsp.stat(path.join(fx.dir, 'bucket', 'x'))).isDirectory());
  await e.deleteObject('bucket', 'x/w');
  t.is(await codeOf(fsp.stat(path.join(fx.dir, 'bucket', 'x'))), 'ENOENT');
  t.true((await fsp.stat(path.join(fx.dir, 'bucket'))).isDirectory());
  await e.deleteObject('bucket', 'never/existed');
  await e.deleteObject('bucket', 'empty/');
  t.false((await keys({})).objects.includes('empty/'));

  // A key that would need a file and a directory of the same name.
  t.is(await codeOf(e.putObject('bucket', 'b/child', Buffer.from('x'))), 'ENGINE_NAME_CONFLICT');
  t.is(await codeOf(e.putObject('bucket', 'a', Buffer.from('x'))), 'ENGINE_NAME_CONFLICT');
  t.is(await codeOf(e.putObject('bucket', 'b/', Buffer.alloc(0))), 'ENGINE_NAME_CONFLICT');
  t.is((await getBody(e, 'bucket', 'b')).toString(), 'b', 'the file in the way is intact');
  t.is((await getBody(e, 'bucket', 'a/1')).toString(), 'a/1', 'the directory in the way is intact');
  t.is((await fsp.readdir(path.join(fx.dir, '.mountd', 'tmp'))).length, 0, 'no temp file left behind');
});

test('listing pages through 2,500 keys in UTF-8 byte order without duplicates', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  const all: string[] = [];
  // Non-ASCII keys where UTF-16 order and UTF-8 byte order disagree: U+FF5E sorts after an emoji in UTF-16, before it in UTF-8.
  const specials = ['\uFF5E', '😀', 'é', 'Z', 'z', '~', '日本/語', 'a\u00A0b', 'a b', 'A'];
  for (const s of specials) all.push(s);
  for (let i = 0; all.length < 2500; i++) all.push(`${['p', 'q', 'p/r', 'ü'][i % 4]}/${String(i * 7919 % 10007).padStart(5, '0')}`);
  const body = Buffer.from('x');
  const started = Date.now();
  for (let i = 0; i < all.length; i += 50) await Promise.all(all.slice(i, i + 50).map((k) => e.putObject('bucket', k, body)));
  t.log(`${all.length} puts in ${Date.now() - started} ms`);
  const expected = [...all].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  t.true(expected.indexOf('\uFF5E') < expected.indexOf('😀'));

  const pages: string[][] = [];
  let startAfter: string | undefined;
  for (;;) {
    const r = await e.list('bucket', { maxKeys: 1000, startAfter });
    pages.push(r.objects.map((o) => o.key));
    if (!r.isTruncated) break;
    t.is(r.nextStartAfter, r.objects.at(-1)!.key);
    startAfter = r.nextStartAfter;
  }
  t.deepEqual(
    pages.map((p) => p.length),
    [1000, 1000, 500],
  );
  const flat = pages.flat();
  t.is(new Set(flat).size, flat.length, 'no duplicates');
  t.deepEqual(flat, expected);

  // With a delimiter, pages of objects and common prefixes, each prefix once.
  const seen: string[] = [];
  startAfter = undefined;
  let calls = 0;
  for (;;) {
    const r = await e.list('bucket', { delimiter: '/', maxKeys: 3, startAfter });
    calls++;
    const names = [...r.objects.map((o) => o.key), ...r.commonPrefixes].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    seen.push(...names);
    if (!r.isTruncated) break;
    startAfter = r.nextStartAfter;
  }
  t.deepEqual(seen, ['A', 'Z', 'a b', 'a\u00A0b', 'p/', 'q/', 'z', '~', 'é', 'ü/', '日本/', '\uFF5E', '😀']);
  t.is(calls, 5);
});

test('the secrets scan: no plaintext, DEK, OEK, EK or master key anywhere in the data directory', async (t) => {
  const fx = await makeFixture({ maxDirtyBytesPerFile: 128 * 1024 });
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  const marker = 'MARKER-7f3e9c1a-plaintext-must-never-reach-the-disk';
  const markerBody = (n: number) => Buffer.from(`${marker}\n`.repeat(Math.ceil(n / (marker.length + 1)))).subarray(0, n);
  const customerKey = Buffer.alloc(32, 0x3c);
  await e.createKey('named-key');
  await e.createKey('doomed-key');
  const secrets: Secret[] = [markerSecret(marker), { label: 'customer key', bytes: customerKey }];
  // Objects through S3: default, named, SSE-C; with the marker in content type and metadata too.
  await e.putObject('bucket', 's3/default', markerBody(3 * P + 5), { contentType: marker, user: { note: marker } });
  await e.putObject('bucket', 's3/named', markerBody(P), { encryption: { kind: 'named', keyName: 'named-key' } });
  await e.putObject('bucket', 's3/ssec', markerBody(1000), { encryption: { kind: 'customer', customerKey } });
  await e.putObject('bucket', 's3/doomed', markerBody(5000), { encryption: { kind: 'named', keyName: 'doomed-key' } });
  // Through handles, with flushes forced by the dirty budget, rewrites, truncates.
  await e.mkdir('bucket', 'mount');
  const h = await e.create('bucket', 'mount/big');
  for (let i = 0; i < 10; i++) await e.write(h, i * 100_000, markerBody(100_000));
  await e.ftruncate(h, 700_000);
  await e.setUserMeta('bucket', 'mount/big', 'note', marker);
  await e.release(h);
  const held = await e.create('bucket', 'mount/held', { encryption: { kind: 'named', keyName: 'named-key' } });
  await e.write(held, 0, markerBody(50_000));
  secrets.push(...(await collectFileKeys(fx.dir, e.keyService, [customerKey])));
  // Renames of a file and a directory (re-sealed records), then collect the new DEKs/OEKs.
  await e.rename('bucket', 's3/default', 'bucket', 's3/moved-default');
  await e.rename('bucket', 'mount', 'bucket', 'mount2');
  secrets.push(...(await collectFileKeys(fx.dir, e.keyService, [customerKey])));
  secrets.push(...(await collectKeyServerSecrets(fx.dir)));
  // Disable with buffered writes in an open handle, then delete a key.
  await e.write(held, 50_000, markerBody(10_000));
  await e.disableKey('named-key');
  await e.deleteKey('doomed-key');
  await e.release(held).catch(() => undefined);
  await e.enableKey('named-key');
  t.true((await getBody(e, 'bucket', 'mount2/held')).equals(Buffer.concat([markerBody(50_000), markerBody(10_000)])));
  secrets.push(...(await collectFileKeys(fx.dir, e.keyService, [customerKey])));

  const labels = new Set(secrets.map((s) => s.label));
  t.true(labels.has('master key') && labels.has('EK default-key') && labels.has('EK doomed-key'));
  t.true(labels.has('OEK of bucket/s3/moved-default') && labels.has('DEK of bucket/s3/default') && labels.has('OEK of bucket/s3/ssec'));
  t.true(secrets.length >= 20, `${secrets.length} secrets`);
  await fx.reopen();
  t.deepEqual(await scanForSecrets(fx.dir, secrets), []);
});

test('the secrets scan finds what it looks for (it can fail)', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  await fx.engine.putObject('bucket', 'o', Buffer.from('x'));
  const [master] = await collectKeyServerSecrets(fx.dir);
  const dek = Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 37 + 11) & 0xff));
  t.deepEqual(await scanForSecrets(fx.dir, [master!, { label: 'dek', bytes: dek }]), [], 'master.key itself is allowed');
  await fsp.writeFile(path.join(fx.dir, 'bucket', 'leak1'), `key=${Buffer.from(master!.bytes).toString('hex').toUpperCase()}`);
  await fsp.writeFile(path.join(fx.dir, '.mountd', 'leak2'), Buffer.concat([Buffer.from('z'), dek]).toString('base64'));
  const { setAttributeSync } = await import('@napi-rs/xattr');
  setAttributeSync(path.join(fx.dir, 'bucket'), 'user.leak', 'marker text here');
  const found = await scanForSecrets(fx.dir, [master!, { label: 'dek', bytes: dek }, markerSecret('marker text here')]);
  t.deepEqual(found.sort(), ['dek (base64@1) in .mountd/leak2', 'dek (base64url@1) in .mountd/leak2', 'marker "marker text here" (raw) in bucket xattr user.leak', 'master key (HEX) in bucket/leak1']);
});

test('a put replaces atomically: a reader in progress sees the old object whole; a failed put leaves the old one and no temp file', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  const oldBody = Buffer.alloc(48 * P, 0x61);
  const newBody = Buffer.alloc(40 * P + 3, 0x62);
  await e.putObject('bucket', 'obj', oldBody, { user: { v: 'old' } });
  const g = await e.getObject('bucket', 'obj');
  const it = g.body[Symbol.asyncIterator]();
  const first = (await it.next()).value as Buffer;
  await e.putObject('bucket', 'obj', newBody, { user: { v: 'new' } });
  const rest: Buffer[] = [first];
  for (let r = await it.next(); !r.done; r = await it.next()) rest.push(r.value as Buffer);
  t.true(Buffer.concat(rest).equals(oldBody), 'the reader that started on the old object finishes it');
  t.true((await getBody(e, 'bucket', 'obj')).equals(newBody));
  t.deepEqual((await e.headObject('bucket', 'obj')).meta.user, { v: 'new' });

  async function* failing(): AsyncGenerator<Uint8Array> {
    yield Buffer.alloc(3 * P, 0x63);
    throw new Error('client went away');
  }
  const err = await t.throwsAsync(e.putObject('bucket', 'obj', failing()));
  t.regex(err!.message, /client went away|internal/);
  t.true((await getBody(e, 'bucket', 'obj')).equals(newBody), 'the failed put left the object as it was');
  await e.putObject('bucket', 'fresh/key', Buffer.from('x'));
  await t.throwsAsync(e.putObject('bucket', 'never/created', failing()));
  t.is(await codeOf(e.getObject('bucket', 'never/created')), 'ENGINE_NOT_FOUND');
  t.deepEqual((await e.list('bucket')).objects.map((o) => o.key), ['fresh/key', 'obj'], 'no parent directory was left behind');
  t.deepEqual(await fsp.readdir(path.join(fx.dir, '.mountd', 'tmp')), []);
  t.is(e.status().openFiles, 0);
});
