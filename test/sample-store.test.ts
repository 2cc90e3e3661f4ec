// The committed sample store of format version 1 (test/sample-store/v1) must read, through the engine and independently, forever.
import test from 'ava';
import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gcm } from '@noble/ciphers/aes.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { setAttributeSync } from '@napi-rs/xattr';
import { Domain } from '../src/crypto/index.js';
import { KeyKind, decodeHeader, decodeRecord } from '../src/format/index.js';
import type { Engine } from '../src/engine/index.js';
import { openEngineAt, readAll, tempDir } from './helpers/engine.js';
import { listFiles, nobleDecryptFile, nobleUnsealOek } from './helpers/scan.js';

const sampleDir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'sample-store', 'v1');
const load = async <T>(name: string): Promise<T> => JSON.parse(await fsp.readFile(path.join(sampleDir, name), 'utf8')) as T;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

interface ExpectedObject {
  bucket: string;
  key: string;
  size: number;
  sha256: string;
  meta: { etag?: string; contentType?: string; user: Record<string, string> };
  encryption: { kind: 'default' | 'named' | 'customer'; keyName?: string };
  customerKey?: string;
  symlinkTarget?: string;
}
interface Expected {
  formatVersion: number;
  masterKey: string;
  keys: string[];
  buckets: Record<string, { encryption: unknown }>;
  directoryMarkers: Array<{ bucket: string; key: string }>;
  objects: ExpectedObject[];
}
interface Layout {
  emptyDirectories: string[];
  modes: Record<string, string>;
  files: string[];
}

/** Copies the committed store to a temp dir and restores what git drops: xattrs, empty directories, modes. */
async function restoredCopy(): Promise<string> {
  const dir = path.join(await tempDir('mountd-sample'), 'store');
  await fsp.cp(path.join(sampleDir, 'store'), dir, { recursive: true });
  const xattrs = await load<Record<string, Record<string, string>>>('xattrs.json');
  const layout = await load<Layout>('layout.json');
  for (const d of layout.emptyDirectories) await fsp.mkdir(path.join(dir, d), { recursive: true });
  for (const [rel, attrs] of Object.entries(xattrs)) {
    for (const [name, value] of Object.entries(attrs)) setAttributeSync(path.join(dir, rel), name, Buffer.from(value, 'base64'));
  }
  for (const [rel, mode] of Object.entries(layout.modes)) await fsp.chmod(path.join(dir, rel), Number.parseInt(mode, 8));
  return dir;
}

test('the committed sample store holds exactly the files its layout lists, and no lock file', async (t) => {
  const layout = await load<Layout>('layout.json');
  const committed = (await listFiles(path.join(sampleDir, 'store'))).sort();
  t.deepEqual(committed, [...layout.files].sort());
  t.false(committed.some((f) => path.basename(f) === 'lock'));
  t.true(layout.files.includes(path.join('.mountd', 'kes', 'master.key')));
  const xattrs = await load<Record<string, Record<string, string>>>('xattrs.json');
  const expected = await load<Expected>('expected.json');
  for (const o of expected.objects) t.truthy(xattrs[path.join(o.bucket, ...o.key.split('/'))]?.['user.mountd.key'], `${o.bucket}/${o.key} has its record in the sidecar`);
});

test('format v1 sample store: every object reads through the engine with its content, size and metadata', async (t) => {
  const dir = await restoredCopy();
  let e: Engine | undefined;
  t.teardown(async () => {
    await e?.close();
    await e?.store.close();
    await fsp.rm(path.dirname(dir), { recursive: true, force: true });
  });
  e = await openEngineAt(dir);
  const expected = await load<Expected>('expected.json');
  t.is(expected.formatVersion, 1);
  t.true(expected.objects.length >= 9);
  t.deepEqual(
    (await e.listBuckets()).map((b) => b.name),
    Object.keys(expected.buckets).sort(),
  );
  t.deepEqual(
    (await e.listKeys()).map((k) => k.name),
    expected.keys,
  );
  for (const [bucket, { encryption }] of Object.entries(expected.buckets)) t.deepEqual(await e.getBucketEncryption(bucket), encryption, bucket);
  for (const bucket of Object.keys(expected.buckets)) {
    const listed = (await e.list(bucket)).objects.map((o) => o.key);
    const want = [...expected.objects.filter((o) => o.bucket === bucket).map((o) => o.key), ...expected.directoryMarkers.filter((m) => m.bucket === bucket).map((m) => m.key)];
    t.deepEqual(listed, want.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))), `listing of ${bucket}`);
  }
  for (const o of expected.objects) {
    const what = `${o.bucket}/${o.key}`;
    const customerKey = o.customerKey ? Buffer.from(o.customerKey, 'hex') : undefined;
    const g = await e.getObject(o.bucket, o.key, { customerKey });
    const body = await readAll(g.body);
    t.is(body.length, o.size, what);
    t.is(sha(body), o.sha256, what);
    t.is(g.size, o.size, what);
    t.deepEqual(
      { etag: g.meta.etag, contentType: g.meta.contentType, user: g.meta.user },
      { etag: o.meta.etag, contentType: o.meta.contentType, user: o.meta.user },
      `${what}: metadata`,
    );
    t.is(g.encryption.kind, o.encryption.kind, what);
    t.is(g.encryption.keyName, o.encryption.keyName, what);
    t.is(g.encryption.formatVersion, 1);
    t.is((await e.stat(o.bucket, o.key)).size, o.size, `${what}: stat`);
    if (o.symlinkTarget) {
      t.is((await e.stat(o.bucket, o.key)).type, 'symlink');
      t.is(await e.readlink(o.bucket, o.key), o.symlinkTarget);
    }
    if (customerKey) {
      const err = await t.throwsAsync(e.getObject(o.bucket, o.key));
      t.is((err as { code?: string }).code, 'ENGINE_CUSTOMER_KEY_REQUIRED');
    }
  }
  for (const m of expected.directoryMarkers) t.is((await e.headObject(m.bucket, m.key)).size, 0);
});

test('format v1 sample store: the current engine can keep using it (write, rename, rotate)', async (t) => {
  const dir = await restoredCopy();
  let e: Engine | undefined;
  t.teardown(async () => {
    await e?.close();
    await e?.store.close();
    await fsp.rm(path.dirname(dir), { recursive: true, force: true });
  });
  e = await openEngineAt(dir);
  const expected = await load<Expected>('expected.json');
  await e.putObject('sample', 'new-object', Buffer.from('written by this version'));
  t.is((await readAll((await e.getObject('sample', 'new-object')).body)).toString(), 'written by this version');
  await e.rename('sample', 'hundred.bin', 'sample', 'hundred-renamed.bin');
  const hundred = expected.objects.find((o) => o.key === 'hundred.bin')!;
  t.is(sha(await readAll((await e.getObject('sample', 'hundred-renamed.bin')).body)), hundred.sha256);
  const h = await e.open('sample', 'seventy-thousand');
  await e.write(h, 69_999, Buffer.from('!+'));
  await e.release(h);
  const seventy = await readAll((await e.getObject('sample', 'seventy-thousand')).body);
  t.is(seventy.length, 70_001);
  t.is(seventy.subarray(69_999).toString(), '!+');
  const rotated = await e.rotateKey({ from: 'tenant-key', to: 'default-key' });
  t.is(rotated.rotated, 2);
  t.is(rotated.failed, 0);
  const named = expected.objects.find((o) => o.key === 'named/object')!;
  t.is(sha(await readAll((await e.getObject('tenant-bucket', 'named/object')).body)), named.sha256);
});

test('format v1 sample store decrypts independently with @noble, from the master key down', async (t) => {
  const store = path.join(sampleDir, 'store');
  const expected = await load<Expected>('expected.json');
  const master = Buffer.from((await fsp.readFile(path.join(store, '.mountd', 'kes', 'master.key'), 'utf8')).trim(), 'hex');
  t.is(master.toString('hex'), expected.masterKey);
  const xattrs = await load<Record<string, Record<string, string>>>('xattrs.json');
  // EKs: keystore files sealed under the master key, AAD = "mountd kes keystore v1\0" || name.
  const eks = new Map<string, Uint8Array>();
  for (const name of expected.keys) {
    const doc = JSON.parse(await fsp.readFile(path.join(store, '.mountd', 'kes', 'keys', `${name}.key`), 'utf8')) as { version: number; name: string; sealed: string };
    t.is(doc.version, 1);
    t.is(doc.name, name);
    const sealed = Buffer.from(doc.sealed, 'base64');
    eks.set(name, gcm(master, sealed.subarray(0, 12), Buffer.concat([Buffer.from('mountd kes keystore v1\0'), Buffer.from(name)])).decrypt(sealed.subarray(12)));
  }
  let decrypted = 0;
  for (const o of expected.objects) {
    const rel = path.join(o.bucket, ...o.key.split('/'));
    const file = await fsp.readFile(path.join(store, rel));
    const header = decodeHeader(file);
    t.is(header.version, 1);
    const rawRecord = Buffer.from(xattrs[rel]!['user.mountd.key']!, 'base64');
    t.is(rawRecord[0], 1, `${rel}: record version`);
    t.is(rawRecord[1], 1, `${rel}: record algorithm`);
    const record = decodeRecord(rawRecord);
    const objectPath = `${o.bucket}/${o.key}`;
    let oek: Buffer;
    if (record.kind === KeyKind.Customer) {
      const secret = hmac(sha256, Buffer.from(o.customerKey!, 'hex'), new TextEncoder().encode('mountd customer key secret v1'));
      oek = nobleUnsealOek(record, secret, Domain.Customer, objectPath);
    } else {
      // KES ciphertext: GCM(HMAC-SHA256(EK, iv), nonce, DEK, AAD = context) || iv(16) || nonce(12).
      const c = record.dekCiphertext;
      const iv = c.subarray(c.length - 28, c.length - 12);
      const nonce = c.subarray(c.length - 12);
      const k = hmac(sha256, eks.get(record.keyName)!, iv);
      const dek = gcm(k, nonce, record.context).decrypt(c.subarray(0, c.length - 28));
      oek = nobleUnsealOek(record, dek, Domain.KeyServer, objectPath);
    }
    const plain = nobleDecryptFile(file, oek);
    t.is(sha(plain), o.sha256, objectPath);
    decrypted++;
  }
  t.is(decrypted, expected.objects.length);
});
