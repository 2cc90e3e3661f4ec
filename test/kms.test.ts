// Tests for the key service layer: the in-process adapter and the DEK cache (hits, copies, purges, TTL, bound).

import test from 'ava';
import type { ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, MountdError } from '../src/errors/index.js';
import { FsKeystore, KeyServer, MemKeystore } from '../src/kes/index.js';
import { CachingKeyService, InProcessKeyService } from '../src/kms/index.js';
import type { GeneratedKey, KeyInfo, KeyService, KeyServiceStatus } from '../src/kms/index.js';

const roots: string[] = [];

test.after.always(async () => {
  await Promise.all(roots.map((d) => rm(d, { recursive: true, force: true })));
});

const enc = (s: string) => new TextEncoder().encode(s);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function rejectsWith(t: ExecutionContext, p: Promise<unknown>, code: ErrorCode): Promise<MountdError> {
  return (await t.throwsAsync(p, { instanceOf: MountdError, code })) as MountdError;
}

/** Counts calls to the inner service; `failNext` makes the next call of a method throw after forwarding it. */
class CountingKeyService implements KeyService {
  readonly calls = { decrypt: 0, generate: 0, encrypt: 0, disableKey: 0, deleteKey: 0 };
  failAfter: 'disableKey' | 'deleteKey' | undefined;
  gateDecrypt: Promise<void> | undefined;

  constructor(readonly inner: KeyService) {}

  createKey(name: string) {
    return this.inner.createKey(name);
  }
  async deleteKey(name: string) {
    this.calls.deleteKey++;
    await this.inner.deleteKey(name);
    this.#maybeFail('deleteKey');
  }
  describeKey(name: string): Promise<KeyInfo> {
    return this.inner.describeKey(name);
  }
  listKeys(prefix?: string): Promise<KeyInfo[]> {
    return this.inner.listKeys(prefix);
  }
  generate(name: string, context: Uint8Array): Promise<GeneratedKey> {
    this.calls.generate++;
    return this.inner.generate(name, context);
  }
  encrypt(name: string, plaintext: Uint8Array, context: Uint8Array): Promise<Uint8Array> {
    this.calls.encrypt++;
    return this.inner.encrypt(name, plaintext, context);
  }
  async decrypt(name: string, ciphertext: Uint8Array, context: Uint8Array): Promise<Uint8Array> {
    this.calls.decrypt++;
    const gate = this.gateDecrypt;
    this.gateDecrypt = undefined;
    const result = await this.inner.decrypt(name, ciphertext, context);
    if (gate) await gate;
    return result;
  }
  async disableKey(name: string) {
    this.calls.disableKey++;
    await this.inner.disableKey(name);
    this.#maybeFail('disableKey');
  }
  enableKey(name: string) {
    return this.inner.enableKey(name);
  }
  status(): Promise<KeyServiceStatus> {
    return this.inner.status();
  }
  #maybeFail(method: 'disableKey' | 'deleteKey') {
    if (this.failAfter === method) {
      this.failAfter = undefined;
      throw new MountdError(ErrorCode.KeyServerUnavailable, 'simulated failure after the change');
    }
  }
}

async function setup(options: { max?: number; ttl?: number } = {}) {
  const inner = new CountingKeyService(new InProcessKeyService(new KeyServer(new MemKeystore())));
  const kms = new CachingKeyService(inner, options);
  await kms.createKey('ek');
  await kms.createKey('other');
  return { inner, kms };
}

const ctxA = enc('{"b":"b/a"}');
const ctxB = enc('{"b":"b/b"}');

test('InProcessKeyService: status, identity, KeyInfo shape, errors pass through', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mountd-kms-test-'));
  roots.push(dir);
  const svc = new InProcessKeyService(new KeyServer(new FsKeystore(join(dir, 'keys'), new Uint8Array(randomBytes(32)))), {
    identity: 'daemon-1',
  });
  t.deepEqual(await svc.status(), { kind: 'embedded', endpoint: 'in-process', reachable: true });
  await svc.createKey('k2');
  await svc.createKey('k1');
  const info = await svc.describeKey('k1');
  t.is(info.name, 'k1');
  t.is(info.algorithm, 'AES256');
  t.is(info.createdBy, 'daemon-1');
  t.true(info.enabled);
  t.false(Number.isNaN(Date.parse(info.createdAt)));
  t.deepEqual((await svc.listKeys()).map((k) => k.name), ['k1', 'k2']);
  t.deepEqual((await svc.listKeys('k2')).map((k) => k.name), ['k2']);
  const g = await svc.generate('k1', ctxA);
  t.deepEqual(await svc.decrypt('k1', g.ciphertext, ctxA), g.plaintext);
  await rejectsWith(t, svc.decrypt('k1', g.ciphertext, ctxB), ErrorCode.NotAuthentic);
  await rejectsWith(t, svc.createKey('k1'), ErrorCode.KeyExists);
  await rejectsWith(t, svc.describeKey('nope'), ErrorCode.KeyNotFound);
  await rejectsWith(t, svc.createKey('bad name'), ErrorCode.InvalidKeyName);
});

test('repeated decrypt is served from the cache', async (t) => {
  const { inner, kms } = await setup();
  const ct = await inner.encrypt('ek', new Uint8Array(32).fill(9), ctxA);
  const p1 = await kms.decrypt('ek', ct, ctxA);
  const p2 = await kms.decrypt('ek', ct, ctxA);
  const p3 = await kms.decrypt('ek', ct, ctxA);
  t.is(inner.calls.decrypt, 1);
  t.deepEqual(p1, new Uint8Array(32).fill(9));
  t.deepEqual(p2, p1);
  t.deepEqual(p3, p1);
  t.is(kms.stats().entries, 1);
});

test('generate seeds the cache under its ciphertext and context', async (t) => {
  const { inner, kms } = await setup();
  const g = await kms.generate('ek', ctxA);
  const expected = new Uint8Array(g.plaintext);
  t.deepEqual(await kms.decrypt('ek', g.ciphertext, ctxA), expected);
  t.is(inner.calls.decrypt, 0);
  // Same ciphertext, other context: a miss, and the key server says no.
  await rejectsWith(t, kms.decrypt('ek', g.ciphertext, ctxB), ErrorCode.NotAuthentic);
  t.is(inner.calls.decrypt, 1);
  // Same ciphertext and context under another key name: a miss too.
  await rejectsWith(t, kms.decrypt('other', g.ciphertext, ctxA), ErrorCode.NotAuthentic);
  t.is(inner.calls.decrypt, 2);
  // A failed decrypt is not cached.
  await rejectsWith(t, kms.decrypt('ek', g.ciphertext, ctxB), ErrorCode.NotAuthentic);
  t.is(inner.calls.decrypt, 3);
  t.is(kms.stats().entries, 1);
});

test('callers get copies: wiping a returned DEK does not corrupt the cache', async (t) => {
  const { kms } = await setup();
  const g = await kms.generate('ek', ctxA);
  const expected = new Uint8Array(g.plaintext);
  g.plaintext.fill(0);
  const p1 = await kms.decrypt('ek', g.ciphertext, ctxA);
  t.deepEqual(p1, expected);
  p1.fill(0xff);
  const p2 = await kms.decrypt('ek', g.ciphertext, ctxA);
  t.deepEqual(p2, expected);
  t.not(p1, p2);
  // And a purge wipes only the cache's own buffer, never one a caller holds.
  kms.purgeKey('ek');
  t.deepEqual(p2, expected);
});

test('disable purges at once: the next decrypt reaches the key server and fails; enable restores', async (t) => {
  const { inner, kms } = await setup();
  const g = await kms.generate('ek', ctxA);
  const go = await kms.generate('other', ctxA);
  const expected = new Uint8Array(g.plaintext);
  const held = await kms.decrypt('ek', g.ciphertext, ctxA);
  t.is(inner.calls.decrypt, 0);
  t.is(kms.stats().entries, 2);

  await kms.disableKey('ek');
  t.is(inner.calls.disableKey, 1);
  t.is(kms.stats().entries, 1); // only the other key's DEK is left
  await rejectsWith(t, kms.decrypt('ek', g.ciphertext, ctxA), ErrorCode.KeyDisabled);
  t.is(inner.calls.decrypt, 1);
  await rejectsWith(t, kms.generate('ek', ctxA), ErrorCode.KeyDisabled);
  t.false((await kms.describeKey('ek')).enabled);
  t.deepEqual(held, expected, 'a DEK already handed out is the caller’s copy');

  // The other key keeps being served from the cache.
  t.deepEqual(await kms.decrypt('other', go.ciphertext, ctxA), go.plaintext);
  t.is(inner.calls.decrypt, 1);

  await kms.enableKey('ek');
  t.deepEqual(await kms.decrypt('ek', g.ciphertext, ctxA), expected);
  t.is(inner.calls.decrypt, 2);
  t.deepEqual(await kms.decrypt('ek', g.ciphertext, ctxA), expected);
  t.is(inner.calls.decrypt, 2);
});

test('delete purges: the DEK is gone with the key', async (t) => {
  const { inner, kms } = await setup();
  const g = await kms.generate('ek', ctxA);
  await kms.deleteKey('ek');
  t.is(kms.stats().entries, 0);
  await rejectsWith(t, kms.decrypt('ek', g.ciphertext, ctxA), ErrorCode.KeyNotFound);
  t.is(inner.calls.decrypt, 1);
});

test('purge happens even when the inner disable or delete fails after taking effect', async (t) => {
  const { inner, kms } = await setup();
  const g = await kms.generate('ek', ctxA);
  inner.failAfter = 'disableKey';
  await rejectsWith(t, kms.disableKey('ek'), ErrorCode.KeyServerUnavailable);
  t.is(kms.stats().entries, 0);
  await rejectsWith(t, kms.decrypt('ek', g.ciphertext, ctxA), ErrorCode.KeyDisabled);

  await kms.enableKey('ek');
  const g2 = await kms.generate('ek', ctxA);
  inner.failAfter = 'deleteKey';
  await rejectsWith(t, kms.deleteKey('ek'), ErrorCode.KeyServerUnavailable);
  t.is(kms.stats().entries, 0);
  await rejectsWith(t, kms.decrypt('ek', g2.ciphertext, ctxA), ErrorCode.KeyNotFound);
});

test('a decrypt in flight during disable does not repopulate the cache', async (t) => {
  const { inner, kms } = await setup();
  const ct = await inner.encrypt('ek', new Uint8Array(32).fill(5), ctxA);
  let release!: () => void;
  inner.gateDecrypt = new Promise<void>((r) => {
    release = r;
  });
  const inFlight = kms.decrypt('ek', ct, ctxA); // the key server answers, the answer is held back
  await sleep(5);
  await kms.disableKey('ek');
  release();
  t.deepEqual(await inFlight, new Uint8Array(32).fill(5)); // began before the disable
  t.is(kms.stats().entries, 0);
  await rejectsWith(t, kms.decrypt('ek', ct, ctxA), ErrorCode.KeyDisabled);
});

test('entries expire after the TTL', async (t) => {
  // A TTL long enough that the two decrypts below always fall within it, even on a loaded
  // machine (with 60 ms, a pause of the worker between them expired the entry: 2 calls, not 1).
  const { inner, kms } = await setup({ ttl: 1000 });
  t.deepEqual(kms.stats(), { entries: 0, max: 10_000, ttlMs: 1000 });
  const ct = await inner.encrypt('ek', new Uint8Array(32).fill(1), ctxA);
  await kms.decrypt('ek', ct, ctxA);
  await kms.decrypt('ek', ct, ctxA);
  t.is(inner.calls.decrypt, 1);
  t.is(kms.stats().entries, 1);
  await sleep(1300);
  t.is(kms.stats().entries, 0);
  t.deepEqual(await kms.decrypt('ek', ct, ctxA), new Uint8Array(32).fill(1));
  t.is(inner.calls.decrypt, 2);
});

test('the cache holds at most `max` entries, evicting the least recently used', async (t) => {
  const { inner, kms } = await setup({ max: 3 });
  t.deepEqual(kms.stats(), { entries: 0, max: 3, ttlMs: 5 * 60 * 1000 });
  const cts: Uint8Array[] = [];
  for (let i = 0; i < 5; i++) cts.push(await inner.encrypt('ek', new Uint8Array(32).fill(i), ctxA));
  for (const ct of cts) await kms.decrypt('ek', ct, ctxA);
  t.is(inner.calls.decrypt, 5);
  t.is(kms.stats().entries, 3);
  // The last three are cached; the first was evicted.
  for (const ct of cts.slice(2)) await kms.decrypt('ek', ct, ctxA);
  t.is(inner.calls.decrypt, 5);
  t.deepEqual(await kms.decrypt('ek', cts[0]!, ctxA), new Uint8Array(32).fill(0));
  t.is(inner.calls.decrypt, 6);
  t.is(kms.stats().entries, 3);
});

test('clear() and purgeKey() drop entries; other keys survive purgeKey', async (t) => {
  const { inner, kms } = await setup();
  const a = await kms.generate('ek', ctxA);
  const b = await kms.generate('ek', ctxB);
  const o = await kms.generate('other', ctxA);
  t.is(kms.stats().entries, 3);
  kms.purgeKey('ek');
  t.is(kms.stats().entries, 1);
  await kms.decrypt('other', o.ciphertext, ctxA);
  t.is(inner.calls.decrypt, 0);
  await kms.decrypt('ek', a.ciphertext, ctxA);
  await kms.decrypt('ek', b.ciphertext, ctxB);
  t.is(inner.calls.decrypt, 2);
  kms.clear();
  t.is(kms.stats().entries, 0);
  await kms.decrypt('other', o.ciphertext, ctxA);
  t.is(inner.calls.decrypt, 3);
});

test('constructor refuses nonsensical limits', (t) => {
  const inner = new InProcessKeyService(new KeyServer(new MemKeystore()));
  t.throws(() => new CachingKeyService(inner, { max: 0 }), { instanceOf: RangeError });
  t.throws(() => new CachingKeyService(inner, { ttl: 0 }), { instanceOf: RangeError });
  t.throws(() => new CachingKeyService(inner, { max: 1.5 }), { instanceOf: RangeError });
});

test('encrypt, describe, list and status pass through uncached', async (t) => {
  const { inner, kms } = await setup();
  const ct = await kms.encrypt('ek', enc('hello'), ctxA);
  t.is(inner.calls.encrypt, 1);
  t.deepEqual(await kms.decrypt('ek', ct, ctxA), enc('hello'));
  t.deepEqual((await kms.listKeys()).map((k) => k.name), ['ek', 'other']);
  t.deepEqual((await kms.status()).kind, 'embedded');
});
