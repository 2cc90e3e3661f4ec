// The keystore behaviour suite: every Keystore (mem, fs, aws) must pass it, directly and under a KeyServer.

import test from 'ava';
import type { ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { gcm } from '@noble/ciphers/aes.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { ErrorCode, MountdError } from '../../src/errors/index.js';
import { KeyServer } from '../../src/kes/index.js';
import type { KeyEntry, KeyServerOptions, Keystore } from '../../src/kes/index.js';

export const enc = (s: string) => new TextEncoder().encode(s);
export const ctx = (bucket: string, object: string) => enc(JSON.stringify({ [bucket]: `${bucket}/${object}` }));

export async function rejectsWith(t: ExecutionContext, p: Promise<unknown>, code: ErrorCode): Promise<MountdError> {
  const err = await t.throwsAsync(p, { instanceOf: MountdError, code });
  return err as MountdError;
}

/** Decrypts per the KES layout, with @noble only: AEAD(HMAC-SHA256(EK, iv), nonce, pt, ctx) || iv || nonce. */
export function independentDecrypt(ek: Uint8Array, ciphertext: Uint8Array, context: Uint8Array): Uint8Array {
  const n = ciphertext.length;
  const nonce = ciphertext.slice(n - 12);
  const iv = ciphertext.slice(n - 28, n - 12);
  const sealed = ciphertext.slice(0, n - 28);
  const k = hmac(sha256, ek, iv);
  return gcm(k, nonce, context).decrypt(sealed);
}

export function independentEncrypt(ek: Uint8Array, plaintext: Uint8Array, context: Uint8Array, iv: Uint8Array, nonce: Uint8Array): Uint8Array {
  const k = hmac(sha256, ek, iv);
  const sealed = gcm(k, nonce, context).encrypt(plaintext);
  const out = new Uint8Array(sealed.length + 28);
  out.set(sealed, 0);
  out.set(iv, sealed.length);
  out.set(nonce, sealed.length + 16);
  return out;
}

export interface KeystoreFixture {
  keystore: Keystore;
  /** A KeyServer over `keystore`, built with the options given to the factory. */
  server: KeyServer;
  /**
   * Another Keystore instance over the same storage (same directory and master key, same
   * secret prefix...), as a restarted daemon or a second kesd would open it. An in-memory
   * store has nothing to reopen and returns itself.
   */
  reopen: () => Keystore;
}

/** Makes a fresh, empty keystore; `options` go to its KeyServer. */
export type KeystoreFactory = (options?: KeyServerOptions) => Promise<KeystoreFixture>;

/** Registers the suite's tests, titled `${kind}: ...`. Call it at module load time. */
export function keystoreSuite(kind: string, make: KeystoreFactory): void {
  test(`${kind}: keystore interface: create, get, update, delete, list, copies in and out`, async (t) => {
    const { keystore } = await make();
    const key = new Uint8Array(randomBytes(32));
    const entry: KeyEntry = {
      name: 'direct',
      key: new Uint8Array(key),
      algorithm: 'AES256',
      createdAt: '2025-01-02T03:04:05.678Z',
      createdBy: 'alice',
      enabled: true,
    };
    t.deepEqual(await keystore.list(), []);
    await keystore.create(entry);
    entry.key.fill(0); // the store kept its own copy
    const got = await keystore.get('direct');
    t.deepEqual(got, { ...entry, key });
    got.key.fill(0); // and handed out a copy
    t.deepEqual((await keystore.get('direct')).key, key);

    await rejectsWith(t, keystore.create({ ...entry, key: new Uint8Array(32), createdBy: 'mallory' }), ErrorCode.KeyExists);
    t.is((await keystore.get('direct')).createdBy, 'alice');
    t.deepEqual((await keystore.get('direct')).key, key);

    await keystore.update({ ...entry, key: new Uint8Array(key), enabled: false });
    const disabled = await keystore.get('direct');
    t.false(disabled.enabled);
    t.deepEqual(disabled.key, key);
    t.is(disabled.createdAt, '2025-01-02T03:04:05.678Z');
    await keystore.update({ ...entry, key: new Uint8Array(key), enabled: true });
    t.true((await keystore.get('direct')).enabled);

    await rejectsWith(t, keystore.get('missing'), ErrorCode.KeyNotFound);
    await rejectsWith(t, keystore.update({ ...entry, name: 'missing', key: new Uint8Array(32) }), ErrorCode.KeyNotFound);
    await rejectsWith(t, keystore.delete('missing'), ErrorCode.KeyNotFound);
    t.deepEqual(await keystore.list(), ['direct']);

    await rejectsWith(t, keystore.create({ ...entry, name: 'short', key: new Uint8Array(16) }), ErrorCode.InvalidArgument);
    await rejectsWith(t, keystore.create({ ...entry, name: 'a/b', key: new Uint8Array(32) }), ErrorCode.InvalidKeyName);
    await rejectsWith(t, keystore.update({ ...entry, key: new Uint8Array(31) }), ErrorCode.InvalidArgument);
    t.deepEqual((await keystore.get('direct')).key, key);

    for (const name of ['other', 'direct-2', 'Direct', 'd']) {
      await keystore.create({ ...entry, name, key: new Uint8Array(randomBytes(32)) });
    }
    // Code-unit order: upper case sorts before lower case.
    t.deepEqual(await keystore.list(), ['Direct', 'd', 'direct', 'direct-2', 'other']);
    t.deepEqual(await keystore.list('direct'), ['direct', 'direct-2']);
    t.deepEqual(await keystore.list('D'), ['Direct']);
    t.deepEqual(await keystore.list('x'), []);

    await keystore.delete('direct');
    await rejectsWith(t, keystore.get('direct'), ErrorCode.KeyNotFound);
    t.deepEqual(await keystore.list('direct'), ['direct-2']);
  });

  test(`${kind}: create, describe, list, delete`, async (t) => {
    const fixed = new Date('2025-01-02T03:04:05.678Z');
    const { keystore, server } = await make({ now: () => fixed });

    t.deepEqual(await server.listKeys(), []);
    await server.createKey('beta', 'alice');
    await server.createKey('alpha', 'bob');
    await server.createKey('alpha-2', 'bob');
    await server.createKey('gamma', 'carol');

    t.deepEqual(await server.describeKey('alpha'), {
      name: 'alpha',
      algorithm: 'AES256',
      createdAt: '2025-01-02T03:04:05.678Z',
      createdBy: 'bob',
      enabled: true,
    });
    t.deepEqual((await server.listKeys()).map((k) => k.name), ['alpha', 'alpha-2', 'beta', 'gamma']);
    t.deepEqual((await server.listKeys('alp')).map((k) => k.name), ['alpha', 'alpha-2']);
    t.deepEqual((await server.listKeys('zzz')).map((k) => k.name), []);
    t.deepEqual(await keystore.list('b'), ['beta']);

    const dup = await rejectsWith(t, server.createKey('alpha', 'mallory'), ErrorCode.KeyExists);
    t.regex(dup.message, /alpha/);
    await rejectsWith(t, server.importKey('beta', new Uint8Array(32), 'mallory'), ErrorCode.KeyExists);
    // The losing create must not have replaced the original.
    t.is((await server.describeKey('alpha')).createdBy, 'bob');

    await server.deleteKey('alpha');
    t.deepEqual((await server.listKeys()).map((k) => k.name), ['alpha-2', 'beta', 'gamma']);
    await rejectsWith(t, server.describeKey('alpha'), ErrorCode.KeyNotFound);
    await rejectsWith(t, server.deleteKey('alpha'), ErrorCode.KeyNotFound);
    await rejectsWith(t, server.generate('alpha', enc('c')), ErrorCode.KeyNotFound);
    await rejectsWith(t, server.decrypt('alpha', new Uint8Array(76), enc('c')), ErrorCode.KeyNotFound);
    await rejectsWith(t, server.disableKey('alpha'), ErrorCode.KeyNotFound);
    await rejectsWith(t, server.enableKey('nope'), ErrorCode.KeyNotFound);

    // A deleted name can be reused, and the new key is a different key.
    await server.createKey('alpha', 'dave');
    t.is((await server.describeKey('alpha')).createdBy, 'dave');
  });

  test(`${kind}: generate and decrypt round trip, ciphertext is 76 bytes`, async (t) => {
    const { server } = await make();
    await server.createKey('ek', 'test');
    const c = ctx('photos', '2024/cat.jpg');
    const g1 = await server.generate('ek', c);
    const g2 = await server.generate('ek', c);
    t.is(g1.plaintext.length, 32);
    t.is(g1.ciphertext.length, 76);
    t.notDeepEqual(g1.plaintext, g2.plaintext);
    t.notDeepEqual(g1.ciphertext, g2.ciphertext);
    t.deepEqual(await server.decrypt('ek', g1.ciphertext, c), g1.plaintext);
    t.deepEqual(await server.decrypt('ek', g2.ciphertext, c), g2.plaintext);
  });

  test(`${kind}: decrypt refuses wrong context, wrong key, tampering and truncation`, async (t) => {
    const { server } = await make();
    await server.createKey('ek', 'test');
    await server.createKey('other', 'test');
    const c = ctx('b', 'o');
    const { ciphertext } = await server.generate('ek', c);

    const e1 = await rejectsWith(t, server.decrypt('ek', ciphertext, ctx('b', 'o2')), ErrorCode.NotAuthentic);
    t.is(e1.message, 'ciphertext is not authentic');
    await rejectsWith(t, server.decrypt('ek', ciphertext, new Uint8Array(0)), ErrorCode.NotAuthentic);
    await rejectsWith(t, server.decrypt('other', ciphertext, c), ErrorCode.NotAuthentic);

    // Every byte of every region: sealed DEK 0..31, tag 32..47, iv 48..63, nonce 64..75.
    for (let i = 0; i < ciphertext.length; i++) {
      const bad = new Uint8Array(ciphertext);
      bad[i] = (bad[i] ?? 0) ^ 0x01;
      await rejectsWith(t, server.decrypt('ek', bad, c), ErrorCode.NotAuthentic);
    }
    for (const len of [0, 1, 43, 44, 75]) {
      await rejectsWith(t, server.decrypt('ek', ciphertext.subarray(0, len), c), ErrorCode.NotAuthentic);
    }
    // Dropping leading bytes keeps iv and nonce in place but must still fail.
    await rejectsWith(t, server.decrypt('ek', ciphertext.subarray(1), c), ErrorCode.NotAuthentic);
    const longer = new Uint8Array(77);
    longer.set(ciphertext, 1);
    await rejectsWith(t, server.decrypt('ek', longer, c), ErrorCode.NotAuthentic);

    // And the untouched ciphertext still decrypts after all that.
    t.is((await server.decrypt('ek', ciphertext, c)).length, 32);
  });

  test(`${kind}: encrypt and decrypt arbitrary plaintext`, async (t) => {
    const { server } = await make();
    await server.createKey('ek', 'test');
    for (const size of [0, 1, 32, 1000]) {
      const pt = new Uint8Array(randomBytes(size));
      const c = enc(`ctx-${size}`);
      const ct = await server.encrypt('ek', pt, c);
      t.is(ct.length, size + 44);
      t.deepEqual(await server.decrypt('ek', ct, c), pt);
      await rejectsWith(t, server.decrypt('ek', ct, enc('other')), ErrorCode.NotAuthentic);
    }
  });

  test(`${kind}: disable refuses generate/encrypt/decrypt, enable restores`, async (t) => {
    const { server } = await make();
    await server.createKey('ek', 'test');
    await server.createKey('bystander', 'test');
    const c = ctx('b', 'o');
    const g = await server.generate('ek', c);
    const gb = await server.generate('bystander', c);

    await server.disableKey('ek');
    await server.disableKey('ek'); // idempotent
    const e = await rejectsWith(t, server.generate('ek', c), ErrorCode.KeyDisabled);
    t.regex(e.message, /ek/);
    await rejectsWith(t, server.decrypt('ek', g.ciphertext, c), ErrorCode.KeyDisabled);
    await rejectsWith(t, server.encrypt('ek', enc('x'), c), ErrorCode.KeyDisabled);
    t.false((await server.describeKey('ek')).enabled);
    t.deepEqual(
      (await server.listKeys()).map((k) => [k.name, k.enabled]),
      [['bystander', true], ['ek', false]],
    );
    // Other keys are unaffected.
    t.deepEqual(await server.decrypt('bystander', gb.ciphertext, c), gb.plaintext);

    await server.enableKey('ek');
    t.true((await server.describeKey('ek')).enabled);
    t.deepEqual(await server.decrypt('ek', g.ciphertext, c), g.plaintext);
    t.is((await server.generate('ek', c)).ciphertext.length, 76);
  });

  test(`${kind}: import with a known EK; imported material must be 32 bytes`, async (t) => {
    const { server } = await make();
    const ek = new Uint8Array(32).fill(0x42);
    await server.importKey('imported', ek, 'ops');
    ek.fill(0); // the server must have kept its own copy
    const ct = await server.encrypt('imported', enc('hello'), enc('c'));
    t.deepEqual(await server.decrypt('imported', ct, enc('c')), enc('hello'));
    t.deepEqual(independentDecrypt(new Uint8Array(32).fill(0x42), ct, enc('c')), enc('hello'));
    for (const len of [0, 16, 31, 33, 64]) {
      await rejectsWith(t, server.importKey(`bad-${len}`, new Uint8Array(len), 'ops'), ErrorCode.InvalidArgument);
    }
    t.deepEqual((await server.listKeys('bad')).length, 0);
  });

  test(`${kind}: disabled state persists across new keystore and server instances`, async (t) => {
    const { server, reopen } = await make();
    await server.createKey('ek', 'test');
    const c = ctx('b', 'o');
    const g = await server.generate('ek', c);
    await server.disableKey('ek');

    const again = new KeyServer(reopen());
    t.false((await again.describeKey('ek')).enabled);
    await rejectsWith(t, again.decrypt('ek', g.ciphertext, c), ErrorCode.KeyDisabled);
    await rejectsWith(t, again.generate('ek', c), ErrorCode.KeyDisabled);

    await again.enableKey('ek');
    const third = new KeyServer(reopen());
    t.true((await third.describeKey('ek')).enabled);
    t.deepEqual(await third.decrypt('ek', g.ciphertext, c), g.plaintext);
  });

  test(`${kind}: concurrent disable and enable apply in call order`, async (t) => {
    const { server } = await make();
    await server.createKey('ek', 'test');
    await Promise.all([server.disableKey('ek'), server.enableKey('ek'), server.disableKey('ek')]);
    t.false((await server.describeKey('ek')).enabled);
    await Promise.all([server.enableKey('ek'), server.disableKey('ek'), server.enableKey('ek')]);
    t.true((await server.describeKey('ek')).enabled);
  });

  test(`${kind}: concurrent creates of one name: exactly one wins`, async (t) => {
    const { reopen } = await make();
    // Two servers on two keystore instances over one storage, so only the storage can arbitrate.
    const a = new KeyServer(reopen());
    const b = new KeyServer(reopen());
    const results = await Promise.allSettled([a.createKey('race', 'a'), b.createKey('race', 'b'), a.createKey('race', 'a2')]);
    t.is(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results) {
      if (r.status === 'rejected') t.is((r.reason as MountdError).code, ErrorCode.KeyExists);
    }
  });

  test(`${kind}: deleting a key makes its ciphertexts unreadable even after re-creating the name`, async (t) => {
    const { server } = await make();
    await server.createKey('ek', 'test');
    const g = await server.generate('ek', enc('c'));
    await server.deleteKey('ek');
    await rejectsWith(t, server.decrypt('ek', g.ciphertext, enc('c')), ErrorCode.KeyNotFound);
    await server.createKey('ek', 'test');
    await rejectsWith(t, server.decrypt('ek', g.ciphertext, enc('c')), ErrorCode.NotAuthentic);
  });
}
