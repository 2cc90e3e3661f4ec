// Key rotation: records re-wrapped to the new key, data untouched, resumable, old key no longer needed.
import test from 'ava';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { decodeRecord, KEY_RECORD_XATTR } from '../src/format/index.js';
import type { RotateProgress } from '../src/engine/index.js';
import { makeFixture, readAll } from './helpers/engine.js';

async function recordOf(dir: string, rel: string) {
  const { getAttribute } = await import('@napi-rs/xattr');
  return decodeRecord((await getAttribute(path.join(dir, rel), KEY_RECORD_XATTR))!);
}

test('rotation re-wraps every record to the new key and leaves data alone', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.createKey('next-key');
  await e.createKey('other-key');
  const bodies = new Map<string, Buffer>();
  for (let i = 0; i < 40; i++) {
    const body = Buffer.from(`object ${i} `.repeat(i * 50 + 1));
    bodies.set(`d${i % 3}/o${i}`, body);
    await e.putObject('bucket', `d${i % 3}/o${i}`, body);
  }
  await e.putObject('bucket', 'other', Buffer.from('under another key'), { encryption: { kind: 'named', keyName: 'other-key' } });
  await e.putObject('bucket', 'ssec', Buffer.from('customer'), { encryption: { kind: 'customer', customerKey: Buffer.alloc(32, 9) } });
  const dataBefore = await fsp.readFile(path.join(fx.dir, 'bucket/d1/o1'));
  const h = await e.open('bucket', 'd2/o2');

  const progress: RotateProgress[] = [];
  const result = await e.rotateKey({ from: 'default-key', to: 'next-key', onProgress: (p) => progress.push(p) });
  t.is(result.rotated, 40);
  t.is(result.skipped, 2);
  t.is(result.failed, 0);
  t.true(progress.at(-1)!.done);
  t.is((await recordOf(fx.dir, 'bucket/d1/o1')).keyName, 'next-key');
  t.is((await recordOf(fx.dir, 'bucket/other')).keyName, 'other-key');
  t.deepEqual(await fsp.readFile(path.join(fx.dir, 'bucket/d1/o1')), dataBefore, 'data bytes are not rewritten');

  // The old key is no longer needed by anything rotated, including the handle opened before.
  await e.disableKey('default-key');
  for (const [key, body] of bodies) t.deepEqual(await readAll((await e.getObject('bucket', key)).body), body, key);
  t.deepEqual(await e.read(h, 0, 8), bodies.get('d2/o2')!.subarray(0, 8));
  await e.release(h);
  // And it survives a restart with the old key still disabled.
  const e2 = await fx.reopen();
  for (const [key, body] of bodies) t.deepEqual(await readAll((await e2.getObject('bucket', key)).body), body, key);
});

test('an interrupted rotation resumes where it stopped', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.createKey('next-key');
  for (let i = 0; i < 30; i++) await e.putObject('bucket', `o${String(i).padStart(2, '0')}`, Buffer.from(`v${i}`));
  const ctl = new AbortController();
  let seen = 0;
  const origGet = e.store.getXattr.bind(e.store);
  e.store.getXattr = async (p, n) => {
    if (n === KEY_RECORD_XATTR && ++seen === 12) ctl.abort();
    return origGet(p, n);
  };
  const err = await t.throwsAsync(e.rotateKey({ from: 'default-key', to: 'next-key', signal: ctl.signal }));
  t.regex(err!.message, /run it again to resume/);
  e.store.getXattr = origGet;
  const again = await e.rotateKey({ from: 'default-key', to: 'next-key' });
  t.true(again.skipped >= 11 && again.skipped < 30, `skipped ${again.skipped}`);
  t.is(again.rotated + again.skipped, 30);
  const third = await e.rotateKey({ from: 'default-key', to: 'next-key' });
  t.is(third.rotated, 0);
  t.is(third.skipped, 30);
  await e.disableKey('default-key');
  for (let i = 0; i < 30; i++) t.is((await readAll((await e.getObject('bucket', `o${String(i).padStart(2, '0')}`)).body)).toString(), `v${i}`);
});

test('rotation to a missing or disabled key is refused before touching anything', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  await fx.engine.putObject('bucket', 'x', Buffer.from('x'));
  await t.throwsAsync(fx.engine.rotateKey({ from: 'default-key', to: 'nope' }), { code: 'KMS_KEY_NOT_FOUND' });
  await fx.engine.createKey('off-key');
  await fx.engine.disableKey('off-key');
  await t.throwsAsync(fx.engine.rotateKey({ from: 'default-key', to: 'off-key' }), { code: 'KMS_KEY_DISABLED' });
  t.is((await recordOf(fx.dir, 'bucket/x')).keyName, 'default-key');
});

test('rotation covers unfinished multipart uploads: parts stored before and after it complete without the old key', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.createKey('old-k');
  await e.createKey('new-k');
  const named = await e.createUpload('bucket', 'big/named.bin', { encryption: { kind: 'named', keyName: 'old-k' }, user: { note: 'kept' } });
  const parts = [Buffer.alloc(200_000, 1), Buffer.alloc(150_000, 2), Buffer.alloc(1000, 3)];
  const etags: Array<{ partNumber: number; etag: string }> = [];
  for (const [i, body] of parts.slice(0, 2).entries()) etags.push({ partNumber: i + 1, etag: (await e.putUploadPart('bucket', 'big/named.bin', named.uploadId, i + 1, body)).etag });
  // Another upload under another key is left alone.
  const other = await e.createUpload('bucket', 'big/other.bin', { encryption: { kind: 'named', keyName: 'new-k' } });
  await e.putUploadPart('bucket', 'big/other.bin', other.uploadId, 1, Buffer.from('other'));

  const r = await e.rotateKey({ from: 'old-k', to: 'new-k' });
  t.is(r.failed, 0, r.errors.join('; '));
  t.is(r.rotated, 3, 'the meta file and two parts of the upload under old-k');
  t.is(r.skipped, 2, 'the other upload (meta and a part)');
  // The old key goes; a part stored now is sealed under new-k; Complete needs only new-k.
  await e.disableKey('old-k');
  etags.push({ partNumber: 3, etag: (await e.putUploadPart('bucket', 'big/named.bin', named.uploadId, 3, parts[2]!)).etag });
  const done = await e.completeUpload('bucket', 'big/named.bin', named.uploadId, etags);
  t.is(done.encryption.keyName, 'new-k');
  const got = await e.getObject('bucket', 'big/named.bin');
  t.deepEqual(await readAll(got.body), Buffer.concat(parts));
  t.deepEqual(got.meta.user, { note: 'kept' });
  t.is((await e.rotateKey({ from: 'old-k', to: 'new-k' })).rotated, 0, 'nothing left under old-k');
});

test('unfinished multipart uploads older than the expiry are removed, younger ones stay', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  const old = await e.createUpload('bucket', 'stale.bin');
  await e.putUploadPart('bucket', 'stale.bin', old.uploadId, 1, Buffer.alloc(10_000, 7));
  const fresh = await e.createUpload('bucket', 'fresh.bin');
  const day = 86_400_000;
  const record = path.join(fx.dir, '.mountd', 'uploads', old.uploadId, 'upload.json');
  const u = JSON.parse(await fsp.readFile(record, 'utf8')) as { initiatedMs: number };
  await fsp.writeFile(record, JSON.stringify({ ...u, initiatedMs: Date.now() - 8 * day }));
  t.is(await e.expireUploads(7 * day), 1);
  t.deepEqual((await e.listUploads('bucket')).map((x) => x.uploadId), [fresh.uploadId]);
  await t.throwsAsync(e.getUpload('bucket', 'stale.bin', old.uploadId));
  t.is(await e.expireUploads(7 * day), 0);
  t.is(await e.expireUploads(0), 1, 'an expiry of 0 ms takes everything');
});
