// Tests for the key server: names, keystores (mem and fs), master key, KES ciphertext layout.
// The keystore behaviour suite itself lives in helpers/keystore-suite.ts, shared with the aws keystore.

import test from 'ava';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { chmod, copyFile, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gcm } from '@noble/ciphers/aes.js';
import { ErrorCode, MountdError } from '../src/errors/index.js';
import {
  FsKeystore,
  KeyServer,
  MemKeystore,
  isValidKeyName,
  loadOrCreateMasterKey,
  parseMasterKey,
  validateKeyName,
} from '../src/kes/index.js';
import type { KeyEntry, Keystore } from '../src/kes/index.js';
import { ctx, enc, independentDecrypt, independentEncrypt, keystoreSuite, rejectsWith } from './helpers/keystore-suite.js';

const roots: string[] = [];

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'mountd-kes-test-'));
  roots.push(d);
  return d;
}

test.after.always(async () => {
  await Promise.all(roots.map((d) => rm(d, { recursive: true, force: true })));
});

/** Wraps randomBytes and remembers every output, so a test knows every EK the server made. */
function recordingRandom(): { random: (n: number) => Uint8Array; outputs: Uint8Array[] } {
  const outputs: Uint8Array[] = [];
  return {
    outputs,
    random: (n) => {
      const b = new Uint8Array(randomBytes(n));
      outputs.push(new Uint8Array(b));
      return b;
    },
  };
}

async function fsServer(dir?: string, masterKey?: Uint8Array) {
  const d = dir ?? join(await tempDir(), 'keys');
  const mk = masterKey ?? new Uint8Array(randomBytes(32));
  return { dir: d, masterKey: mk, server: new KeyServer(new FsKeystore(d, mk)) };
}

// ---------------------------------------------------------------- names

const goodNames = ['a', 'A', '0', '_', 'my-key', 'my_key', 'minio-default-key', 'a-b-c', '_-_', 'x'.repeat(80), 'Key123'];
const badNames = [
  '',
  '-',
  '-a',
  'a-',
  'x'.repeat(81),
  'a b',
  'a.b',
  'a/b',
  '../a',
  '.hidden',
  'a*',
  'ключ',
  'é',
  'a\0',
  'a\n',
];

for (const name of goodNames) {
  test(`key name accepted: ${JSON.stringify(name.length > 20 ? `${name.slice(0, 8)}…(${name.length})` : name)}`, (t) => {
    t.true(isValidKeyName(name));
    t.notThrows(() => validateKeyName(name));
  });
}

for (const name of badNames) {
  test(`key name refused: ${JSON.stringify(name.length > 20 ? `${name.slice(0, 8)}…(${name.length})` : name)}`, (t) => {
    t.false(isValidKeyName(name));
    const err = t.throws(() => validateKeyName(name), { instanceOf: MountdError });
    t.is(err?.code, ErrorCode.InvalidKeyName);
  });
}

test('KeyServer refuses invalid names on every operation', async (t) => {
  const server = new KeyServer(new MemKeystore());
  await rejectsWith(t, server.createKey('-bad', 'test'), ErrorCode.InvalidKeyName);
  await rejectsWith(t, server.importKey('a/b', new Uint8Array(32), 'test'), ErrorCode.InvalidKeyName);
  await rejectsWith(t, server.describeKey('../x'), ErrorCode.InvalidKeyName);
  await rejectsWith(t, server.generate('a b', enc('c')), ErrorCode.InvalidKeyName);
  await rejectsWith(t, server.deleteKey(''), ErrorCode.InvalidKeyName);
  await rejectsWith(t, server.disableKey('x'.repeat(81)), ErrorCode.InvalidKeyName);
});

// ---------------------------------------------------------------- keystore behaviour suite (mem and fs; aws in keystore-aws.test.ts)

keystoreSuite('mem', async (options) => {
  const keystore = new MemKeystore();
  return { keystore, server: new KeyServer(keystore, options), reopen: () => keystore };
});

keystoreSuite('fs', async (options) => {
  const dir = join(await tempDir(), 'keys');
  const masterKey = new Uint8Array(randomBytes(32));
  const keystore = new FsKeystore(dir, masterKey);
  return { keystore, server: new KeyServer(keystore, options), reopen: () => new FsKeystore(dir, masterKey) };
});

// ---------------------------------------------------------------- independent check of the layout

test('ciphertext layout matches an independent implementation, both directions', async (t) => {
  const { server } = await fsServer();
  const ek = Uint8Array.from({ length: 32 }, (_, i) => i);
  await server.importKey('known', ek, 'test');
  const c = ctx('docs', 'report.pdf');

  const g = await server.generate('known', c);
  t.is(g.ciphertext.length, 76);
  t.deepEqual(independentDecrypt(ek, g.ciphertext, c), g.plaintext);
  t.throws(() => independentDecrypt(ek, g.ciphertext, ctx('docs', 'other.pdf')));

  const dek = new Uint8Array(32).fill(0xab);
  const foreign = independentEncrypt(ek, dek, c, new Uint8Array(16).fill(1), new Uint8Array(12).fill(2));
  t.deepEqual(await server.decrypt('known', foreign, c), dek);
});

test('known-answer vector with injected randomness', async (t) => {
  // iv = 16 x 0x11, nonce = 12 x 0x22, DEK = 32 x 0x33, EK = 0..31, context "ctx".
  const queue = [new Uint8Array(32).fill(0x33), new Uint8Array(16).fill(0x11), new Uint8Array(12).fill(0x22)];
  const server = new KeyServer(new MemKeystore(), {
    random: (n) => {
      const next = queue.shift();
      if (!next || next.length !== n) throw new Error(`unexpected random(${n})`);
      return next;
    },
  });
  const ek = Uint8Array.from({ length: 32 }, (_, i) => i);
  await server.importKey('kat', ek, 'test');
  const g = await server.generate('kat', enc('ctx'));
  t.deepEqual(g.plaintext, new Uint8Array(32).fill(0x33));
  const expected = independentEncrypt(ek, g.plaintext, enc('ctx'), new Uint8Array(16).fill(0x11), new Uint8Array(12).fill(0x22));
  t.deepEqual(g.ciphertext, expected);
  t.deepEqual(g.ciphertext.subarray(48, 64), new Uint8Array(16).fill(0x11));
  t.deepEqual(g.ciphertext.subarray(64), new Uint8Array(12).fill(0x22));
});

// ---------------------------------------------------------------- FsKeystore on disk

test('fs: files hold no key material, files are 0600 and the directory 0700, no temp files left', async (t) => {
  const dir = join(await tempDir(), 'keys');
  const rec = recordingRandom();
  const masterKey = new Uint8Array(randomBytes(32));
  const server = new KeyServer(new FsKeystore(dir, masterKey), { random: rec.random });
  await server.createKey('random-key', 'test');
  const createdEk = rec.outputs[0];
  t.is(createdEk?.length, 32);
  const importedEk = new Uint8Array(randomBytes(32));
  await server.importKey('imported-key', importedEk, 'test');
  await server.disableKey('imported-key'); // a rewrite must not leak either
  await server.enableKey('imported-key');

  const secrets = [createdEk!, importedEk, masterKey];
  const needles: Buffer[] = [];
  for (const s of secrets) {
    const b = Buffer.from(s);
    needles.push(
      b,
      Buffer.from(b.toString('hex')),
      Buffer.from(b.toString('hex').toUpperCase()),
      Buffer.from(b.toString('base64')),
      Buffer.from(b.toString('base64url')),
      // Unaligned base64 of the key would differ; the middle 30 bytes catch an embedded copy.
      Buffer.from(b.subarray(1, 31).toString('base64')),
      Buffer.from(b.subarray(2, 32).toString('base64')),
    );
  }

  const files = (await readdir(dir)).sort();
  t.deepEqual(files, ['imported-key.key', 'random-key.key']);
  t.is((await stat(dir)).mode & 0o777, 0o700);
  for (const f of files) {
    const path = join(dir, f);
    t.is((await stat(path)).mode & 0o777, 0o600, f);
    const content = await readFile(path);
    for (const needle of needles) t.is(content.indexOf(needle), -1, `${f} contains key material`);
    const doc = JSON.parse(content.toString('utf8')) as Record<string, unknown>;
    t.deepEqual(Object.keys(doc).sort(), ['algorithm', 'created_at', 'created_by', 'enabled', 'name', 'sealed', 'version']);
    t.is(doc.version, 2);
    t.is(doc.algorithm, 'AES256');
    t.is(`${String(doc.name)}.key`, f);
    t.is(Buffer.from(String(doc.sealed), 'base64').length, 12 + 32 + 16);
  }

  // The sealed form really is the documented one: unseal it independently.
  const doc = JSON.parse(await readFile(join(dir, 'imported-key.key'), 'utf8')) as { sealed: string; algorithm: string; created_at: string; created_by: string; enabled: boolean };
  const sealed = new Uint8Array(Buffer.from(doc.sealed, 'base64'));
  const aad = `mountd kes keystore v2\0${JSON.stringify(['imported-key', doc.algorithm, doc.created_at, doc.created_by, doc.enabled])}`;
  const unsealed = gcm(masterKey, sealed.slice(0, 12), enc(aad)).decrypt(sealed.slice(12));
  t.deepEqual(unsealed, importedEk);
});

test('fs: wrong master key, tampered file and a key file moved to another name are integrity errors', async (t) => {
  const { dir, masterKey, server } = await fsServer();
  await server.createKey('ek', 'test');
  await server.createKey('victim', 'test');
  const g = await server.generate('ek', enc('c'));

  const wrong = new KeyServer(new FsKeystore(dir, new Uint8Array(randomBytes(32))));
  const e1 = await rejectsWith(t, wrong.decrypt('ek', g.ciphertext, enc('c')), ErrorCode.Integrity);
  t.true(e1.message.includes(join(dir, 'ek.key')));
  await rejectsWith(t, wrong.describeKey('ek'), ErrorCode.Integrity);
  // An update under the wrong master key must not overwrite the key file.
  const before = await readFile(join(dir, 'ek.key'), 'utf8');
  await rejectsWith(t, wrong.disableKey('ek'), ErrorCode.Integrity);
  t.is(await readFile(join(dir, 'ek.key'), 'utf8'), before);

  // Flip one bit of the sealed key.
  const path = join(dir, 'ek.key');
  const doc = JSON.parse(before) as { sealed: string };
  const sealed = Buffer.from(doc.sealed, 'base64');
  sealed[20] = (sealed[20] ?? 0) ^ 0x80;
  await writeFile(path, JSON.stringify({ ...doc, sealed: sealed.toString('base64') }), { mode: 0o600 });
  const fresh = new KeyServer(new FsKeystore(dir, masterKey));
  const e2 = await rejectsWith(t, fresh.decrypt('ek', g.ciphertext, enc('c')), ErrorCode.Integrity);
  t.false(e2.message.includes(sealed.toString('base64')));

  // Not JSON at all.
  await writeFile(path, 'garbage', { mode: 0o600 });
  await rejectsWith(t, fresh.describeKey('ek'), ErrorCode.Integrity);

  // Someone copies victim's file over as "stolen" and fixes up the name field: the AAD binds the name.
  const victimDoc = JSON.parse(await readFile(join(dir, 'victim.key'), 'utf8')) as Record<string, unknown>;
  await writeFile(join(dir, 'stolen.key'), JSON.stringify({ ...victimDoc, name: 'stolen' }), { mode: 0o600 });
  await rejectsWith(t, fresh.describeKey('stolen'), ErrorCode.Integrity);
  // Or without fixing the name field.
  await copyFile(join(dir, 'victim.key'), join(dir, 'stolen2.key'));
  await rejectsWith(t, fresh.describeKey('stolen2'), ErrorCode.Integrity);

  t.throws(() => new FsKeystore(dir, new Uint8Array(16)), { instanceOf: MountdError, code: ErrorCode.InvalidArgument });
});

test('fs: an unknown file version is reported as unsupported, not as a missing key', async (t) => {
  const { dir, server } = await fsServer();
  await server.createKey('ek', 'test');
  const path = join(dir, 'ek.key');
  const doc = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  await writeFile(path, JSON.stringify({ ...doc, version: 3 }), { mode: 0o600 });
  await rejectsWith(t, new KeyServer(new FsKeystore(dir, new Uint8Array(32))).describeKey('ek'), ErrorCode.UnsupportedFormat);
});

test('fs: the enabled flag and the other fields are authenticated: a disabled key does not come back by an edit of its file', async (t) => {
  const { dir, masterKey, server } = await fsServer();
  await server.createKey('ek', 'test');
  const g = await server.generate('ek', enc('c'));
  await server.disableKey('ek');
  const path = join(dir, 'ek.key');
  const doc = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  t.is(doc.version, 2);
  t.is(doc.enabled, false);
  for (const edit of [{ enabled: true }, { created_by: 'someone else' }, { created_at: '2020-01-01T00:00:00.000Z' }]) {
    await writeFile(path, JSON.stringify({ ...doc, ...edit }), { mode: 0o600 });
    const fresh = new KeyServer(new FsKeystore(dir, masterKey));
    await rejectsWith(t, fresh.decrypt('ek', g.ciphertext, enc('c')), ErrorCode.Integrity);
    await rejectsWith(t, fresh.describeKey('ek'), ErrorCode.Integrity);
  }
  await writeFile(path, JSON.stringify(doc), { mode: 0o600 });
  const back = new KeyServer(new FsKeystore(dir, masterKey));
  await rejectsWith(t, back.decrypt('ek', g.ciphertext, enc('c')), ErrorCode.KeyDisabled);
});

test('fs: version-1 key files (enabled flag not authenticated) are rewritten as version 2 when the keystore opens, same key and state', async (t) => {
  const { dir, masterKey, server } = await fsServer();
  await server.createKey('on', 'test');
  await server.createKey('off', 'test');
  await server.disableKey('off');
  const gOn = await server.generate('on', enc('c'));
  // What version 1 wrote: the same fields, the key sealed with only its name as AAD.
  for (const name of ['on', 'off']) {
    const path = join(dir, `${name}.key`);
    const doc = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown> & { sealed: string };
    const sealed = Buffer.from(doc.sealed, 'base64');
    const d = createDecipheriv('aes-256-gcm', masterKey, sealed.subarray(0, 12));
    d.setAAD(Buffer.from(`mountd kes keystore v2\0${JSON.stringify([name, doc.algorithm, doc.created_at, doc.created_by, doc.enabled])}`));
    d.setAuthTag(sealed.subarray(44));
    const ek = Buffer.concat([d.update(sealed.subarray(12, 44)), d.final()]);
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', masterKey, nonce);
    c.setAAD(Buffer.from(`mountd kes keystore v1\0${name}`));
    const v1 = Buffer.concat([nonce, c.update(ek), c.final(), c.getAuthTag()]);
    await writeFile(path, JSON.stringify({ ...doc, version: 1, sealed: v1.toString('base64') }), { mode: 0o600 });
  }
  const reopened = new KeyServer(new FsKeystore(dir, masterKey));
  t.deepEqual(await reopened.decrypt('on', gOn.ciphertext, enc('c')), gOn.plaintext);
  await rejectsWith(t, reopened.generate('off', enc('c')), ErrorCode.KeyDisabled);
  for (const name of ['on', 'off']) t.is((JSON.parse(await readFile(join(dir, `${name}.key`), 'utf8')) as { version: number }).version, 2, name);
});

test('fs: list ignores files that are not key files', async (t) => {
  const { dir, server } = await fsServer();
  await server.createKey('real', 'test');
  await writeFile(join(dir, '.real.0123.tmp'), 'x');
  await writeFile(join(dir, 'notes.txt'), 'x');
  await writeFile(join(dir, 'bad name.key'), 'x');
  t.deepEqual((await server.listKeys()).map((k) => k.name), ['real']);
});

test('fs: a loosely permitted existing keystore directory is tightened to 0700', async (t) => {
  const dir = join(await tempDir(), 'keys');
  const { mkdir } = await import('node:fs/promises');
  await mkdir(dir, { mode: 0o755 });
  await chmod(dir, 0o755);
  const server = new KeyServer(new FsKeystore(dir, new Uint8Array(32)));
  await server.createKey('k', 'test');
  t.is((await stat(dir)).mode & 0o777, 0o700);
});

// ---------------------------------------------------------------- key cache inside KeyServer

/** A keystore whose next get() snapshots the entry at once but answers only when released. */
class GatedKeystore implements Keystore {
  readonly inner = new MemKeystore();
  #gate: { release: () => void; wait: Promise<void> } | undefined;

  gateNextGet(): () => void {
    let release!: () => void;
    const wait = new Promise<void>((r) => {
      release = r;
    });
    this.#gate = { release, wait };
    return release;
  }

  create(e: KeyEntry) {
    return this.inner.create(e);
  }
  async get(name: string) {
    const gate = this.#gate;
    this.#gate = undefined;
    const snapshot = await this.inner.get(name);
    if (gate) await gate.wait;
    return snapshot;
  }
  update(e: KeyEntry) {
    return this.inner.update(e);
  }
  delete(name: string) {
    return this.inner.delete(name);
  }
  list(prefix?: string) {
    return this.inner.list(prefix);
  }
}

test('a read in flight during disable does not put the enabled key back into the cache', async (t) => {
  const ks = new GatedKeystore();
  const server = new KeyServer(ks);
  await server.createKey('ek', 'test');
  const c = enc('c');
  const g = await server.generate('ek', c);
  await server.disableKey('ek'); // empties the cache
  await server.enableKey('ek');

  const release = ks.gateNextGet();
  const inFlight = server.decrypt('ek', g.ciphertext, c); // snapshots enabled=true, then waits
  await new Promise((r) => setImmediate(r));
  await server.disableKey('ek');
  release();
  // Began before the disable: may succeed.
  t.deepEqual(await inFlight, g.plaintext);
  // After disable returned: must not.
  await rejectsWith(t, server.decrypt('ek', g.ciphertext, c), ErrorCode.KeyDisabled);
  await rejectsWith(t, server.generate('ek', c), ErrorCode.KeyDisabled);
});

// ---------------------------------------------------------------- master key

test('master key: created 0600 as 64 hex chars, reused on the next load', async (t) => {
  const dir = await tempDir();
  const path = join(dir, 'master.key');
  const k1 = await loadOrCreateMasterKey(path);
  t.is(k1.length, 32);
  t.is((await stat(path)).mode & 0o777, 0o600);
  const text = await readFile(path, 'utf8');
  t.regex(text, /^[0-9a-f]{64}\n$/);
  t.deepEqual(new Uint8Array(Buffer.from(text.trim(), 'hex')), k1);
  const k2 = await loadOrCreateMasterKey(path);
  t.deepEqual(k2, k1);
  t.deepEqual((await readdir(dir)).sort(), ['master.key']);
  const other = await loadOrCreateMasterKey(join(dir, 'other.key'));
  t.notDeepEqual(other, k1);
});

test('master key: concurrent first loads agree on one key', async (t) => {
  const path = join(await tempDir(), 'master.key');
  const keys = await Promise.all([1, 2, 3, 4].map(() => loadOrCreateMasterKey(path)));
  for (const k of keys) t.deepEqual(k, keys[0]);
});

test('master key: refused when group or other can access it', async (t) => {
  const path = join(await tempDir(), 'master.key');
  await loadOrCreateMasterKey(path);
  for (const mode of [0o644, 0o640, 0o604, 0o660]) {
    await chmod(path, mode);
    const err = await rejectsWith(t, loadOrCreateMasterKey(path), ErrorCode.InvalidArgument);
    t.regex(err.message, /chmod 600/);
  }
  await chmod(path, 0o400);
  t.is((await loadOrCreateMasterKey(path)).length, 32);
});

test('master key: malformed contents are refused without echoing them', async (t) => {
  const dir = await tempDir();
  const secretish = 'ab'.repeat(31) + 'zz';
  const path = join(dir, 'bad.key');
  await writeFile(path, `${secretish}\n`, { mode: 0o600 });
  const err = await rejectsWith(t, loadOrCreateMasterKey(path), ErrorCode.InvalidArgument);
  t.false(err.message.includes(secretish));
  const empty = join(dir, 'empty.key');
  await writeFile(empty, '', { mode: 0o600 });
  await rejectsWith(t, loadOrCreateMasterKey(empty), ErrorCode.InvalidArgument);
});

test('parseMasterKey accepts 64 hex chars (any case, surrounding space) and nothing else', (t) => {
  const hex = '00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF';
  const k = parseMasterKey(`  ${hex}\n`);
  t.is(k.length, 32);
  t.is(k[0], 0x00);
  t.is(k[1], 0x11);
  t.is(k[31], 0xff);
  for (const bad of ['', hex.slice(2), `${hex}00`, `${hex.slice(0, 62)}gg`, Buffer.from(new Uint8Array(32)).toString('base64'), `${hex.slice(0, 32)} ${hex.slice(32)}`]) {
    const err = t.throws(() => parseMasterKey(bad), { instanceOf: MountdError, code: ErrorCode.InvalidArgument });
    if (bad.length > 8) t.false(err?.message.includes(bad));
  }
});
