// KES semantics over a Keystore, independent of HTTP: key lifecycle, generate/encrypt/decrypt.

import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { ErrorCode, MountdError } from '../errors/index.js';
import { EK_LENGTH } from './keystore.js';
import type { KeyEntry, Keystore } from './keystore.js';
import { validateKeyName } from './names.js';

/** What describe and list reveal about a key: everything but its material. */
export interface KeyDescription {
  name: string;
  algorithm: 'AES256';
  createdAt: string;
  createdBy: string;
  /** Our extension to KES: a disabled key refuses generate/encrypt/decrypt. */
  enabled: boolean;
}

export interface GeneratedDek {
  plaintext: Uint8Array;
  ciphertext: Uint8Array;
}

export interface KeyServerOptions {
  /** Source of IVs, nonces, DEKs and new EKs; must return exactly `n` fresh bytes. Tests inject one. */
  random?: (n: number) => Uint8Array;
  now?: () => Date;
  /**
   * Keep unsealed EKs in memory between calls (default true). Safe only while this KeyServer
   * is the sole writer of its keystore, since another writer's disable would not be seen.
   */
  cacheKeys?: boolean;
}

export const DEK_LENGTH = 32;
export const CIPHERTEXT_IV_LENGTH = 16;
export const CIPHERTEXT_NONCE_LENGTH = 12;
export const CIPHERTEXT_TAG_LENGTH = 16;
/** Bytes a ciphertext adds to its plaintext: tag, iv and nonce (a 32-byte DEK becomes 76). */
export const CIPHERTEXT_OVERHEAD = CIPHERTEXT_TAG_LENGTH + CIPHERTEXT_IV_LENGTH + CIPHERTEXT_NONCE_LENGTH;

// EKs are few; the bound only stops a scan over many names from growing memory without limit.
const MAX_CACHED_KEYS = 1024;

const EMPTY = new Uint8Array(0);

export class KeyServer {
  readonly #keystore: Keystore;
  readonly #random: (n: number) => Uint8Array;
  readonly #now: () => Date;
  readonly #cacheKeys: boolean;
  readonly #cache = new Map<string, KeyEntry>();
  /**
   * Bumped on every invalidation. A read that started before a disable must not put the
   * pre-disable entry back into the cache when it finishes; comparing epochs prevents that.
   */
  #epoch = 0;
  readonly #locks = new Map<string, Promise<void>>();

  constructor(keystore: Keystore, options: KeyServerOptions = {}) {
    this.#keystore = keystore;
    this.#random = options.random ?? ((n) => randomBytes(n));
    this.#now = options.now ?? (() => new Date());
    this.#cacheKeys = options.cacheKeys ?? true;
  }

  async createKey(name: string, createdBy: string): Promise<void> {
    validateKeyName(name);
    const key = this.#bytes(EK_LENGTH);
    try {
      await this.#exclusive(name, () => this.#keystore.create(this.#newEntry(name, key, createdBy)));
    } finally {
      key.fill(0);
    }
  }

  /** Stores caller-provided EK material (KES `import`); the caller keeps and wipes its copy. */
  async importKey(name: string, key: Uint8Array, createdBy: string): Promise<void> {
    validateKeyName(name);
    if (!(key instanceof Uint8Array) || key.length !== EK_LENGTH) {
      throw new MountdError(ErrorCode.InvalidArgument, `key '${name}': imported key must be ${EK_LENGTH} bytes`);
    }
    await this.#exclusive(name, () => this.#keystore.create(this.#newEntry(name, key, createdBy)));
  }

  async describeKey(name: string): Promise<KeyDescription> {
    const entry = await this.#load(name);
    entry.key.fill(0);
    return describe(entry);
  }

  /** Keys whose names start with `prefix`, sorted by name. */
  async listKeys(prefix = ''): Promise<KeyDescription[]> {
    const names = await this.#keystore.list(prefix);
    const out: KeyDescription[] = [];
    for (const name of names) {
      try {
        out.push(await this.describeKey(name));
      } catch (err) {
        // Deleted between list and describe: it is simply no longer there.
        if (err instanceof MountdError && err.code === ErrorCode.KeyNotFound) continue;
        throw err;
      }
    }
    return out;
  }

  async deleteKey(name: string): Promise<void> {
    validateKeyName(name);
    await this.#exclusive(name, async () => {
      this.#invalidate(name);
      try {
        await this.#keystore.delete(name);
      } finally {
        this.#invalidate(name);
      }
    });
  }

  async disableKey(name: string): Promise<void> {
    await this.#setEnabled(name, false);
  }

  async enableKey(name: string): Promise<void> {
    await this.#setEnabled(name, true);
  }

  /** A fresh 32-byte DEK and its ciphertext under `name`, bound to `context`. */
  async generate(name: string, context: Uint8Array = EMPTY): Promise<GeneratedDek> {
    const ek = await this.#loadEnabledKey(name);
    try {
      const random = this.#bytes(DEK_LENGTH);
      // A plain Uint8Array, detached from whatever buffer the random source handed out.
      const plaintext = new Uint8Array(random);
      random.fill(0);
      return { plaintext, ciphertext: this.#wrap(ek, plaintext, context) };
    } finally {
      ek.fill(0);
    }
  }

  async encrypt(name: string, plaintext: Uint8Array, context: Uint8Array = EMPTY): Promise<Uint8Array> {
    const ek = await this.#loadEnabledKey(name);
    try {
      return this.#wrap(ek, plaintext, context);
    } finally {
      ek.fill(0);
    }
  }

  /** NotAuthentic for any ciphertext not produced by `encrypt`/`generate` under this key and context. */
  async decrypt(name: string, ciphertext: Uint8Array, context: Uint8Array = EMPTY): Promise<Uint8Array> {
    const ek = await this.#loadEnabledKey(name);
    try {
      return unwrap(ek, ciphertext, context);
    } finally {
      ek.fill(0);
    }
  }

  #newEntry(name: string, key: Uint8Array, createdBy: string): KeyEntry {
    return {
      name,
      key,
      algorithm: 'AES256',
      createdAt: this.#now().toISOString(),
      createdBy,
      enabled: true,
    };
  }

  async #setEnabled(name: string, enabled: boolean): Promise<void> {
    validateKeyName(name);
    await this.#exclusive(name, async () => {
      // Read from the keystore, not the cache: the flag we write must sit on the current entry.
      this.#invalidate(name);
      const entry = await this.#keystore.get(name);
      try {
        if (entry.enabled !== enabled) {
          await this.#keystore.update({ ...entry, enabled });
        }
      } finally {
        entry.key.fill(0);
        this.#invalidate(name);
      }
    });
  }

  /** Returns the EK bytes as a private copy the caller must wipe; KeyDisabled if disabled. */
  async #loadEnabledKey(name: string): Promise<Uint8Array> {
    const entry = await this.#load(name);
    if (!entry.enabled) {
      entry.key.fill(0);
      throw new MountdError(ErrorCode.KeyDisabled, `key '${name}' is disabled`);
    }
    return entry.key;
  }

  /**
   * Always hands out a copy: a cached entry may be wiped by an invalidation while a caller is
   * between its await and its use, and a wiped EK would silently encrypt under zeros.
   */
  async #load(name: string): Promise<KeyEntry> {
    validateKeyName(name);
    const cached = this.#cache.get(name);
    if (cached) return { ...cached, key: new Uint8Array(cached.key) };
    const epoch = this.#epoch;
    const entry = await this.#keystore.get(name);
    if (this.#cacheKeys && epoch === this.#epoch) {
      if (this.#cache.size >= MAX_CACHED_KEYS) this.#evictOldest();
      this.#cache.set(name, { ...entry, key: new Uint8Array(entry.key) });
    }
    return entry;
  }

  #invalidate(name: string): void {
    this.#epoch++;
    const cached = this.#cache.get(name);
    if (cached) {
      cached.key.fill(0);
      this.#cache.delete(name);
    }
  }

  #evictOldest(): void {
    const first = this.#cache.keys().next();
    if (!first.done) this.#invalidate(first.value);
  }

  /** Serialises lifecycle changes per key, so a disable and an enable land in call order. */
  async #exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(name) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = prev.then(() => mine);
    this.#locks.set(name, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.#locks.get(name) === tail) this.#locks.delete(name);
    }
  }

  #bytes(n: number): Uint8Array {
    const b = this.#random(n);
    if (!(b instanceof Uint8Array) || b.length !== n) {
      throw new MountdError(ErrorCode.Internal, `random source returned ${b?.length ?? 'no'} bytes, expected ${n}`);
    }
    return b;
  }

  /** KES AES-256-GCM layout: AEAD(HMAC-SHA256(EK, iv), nonce, plaintext, AD = context) || iv || nonce. */
  #wrap(ek: Uint8Array, plaintext: Uint8Array, context: Uint8Array): Uint8Array {
    const iv = this.#bytes(CIPHERTEXT_IV_LENGTH);
    const nonce = this.#bytes(CIPHERTEXT_NONCE_LENGTH);
    const k = createHmac('sha256', ek).update(iv).digest();
    try {
      const cipher = createCipheriv('aes-256-gcm', k, nonce);
      cipher.setAAD(context);
      const parts = [cipher.update(plaintext), cipher.final(), cipher.getAuthTag(), iv, nonce];
      const out = new Uint8Array(plaintext.length + CIPHERTEXT_OVERHEAD);
      let off = 0;
      for (const p of parts) {
        out.set(p, off);
        off += p.length;
      }
      return out;
    } finally {
      k.fill(0);
    }
  }
}

function describe(entry: KeyEntry): KeyDescription {
  return {
    name: entry.name,
    algorithm: entry.algorithm,
    createdAt: entry.createdAt,
    createdBy: entry.createdBy,
    enabled: entry.enabled,
  };
}

const notAuthentic = (cause?: unknown) =>
  new MountdError(ErrorCode.NotAuthentic, 'ciphertext is not authentic', cause === undefined ? undefined : { cause });

function unwrap(ek: Uint8Array, ciphertext: Uint8Array, context: Uint8Array): Uint8Array {
  if (!(ciphertext instanceof Uint8Array) || ciphertext.length < CIPHERTEXT_OVERHEAD) throw notAuthentic();
  const n = ciphertext.length;
  const nonce = ciphertext.subarray(n - CIPHERTEXT_NONCE_LENGTH);
  const iv = ciphertext.subarray(n - CIPHERTEXT_NONCE_LENGTH - CIPHERTEXT_IV_LENGTH, n - CIPHERTEXT_NONCE_LENGTH);
  const sealedEnd = n - CIPHERTEXT_NONCE_LENGTH - CIPHERTEXT_IV_LENGTH;
  const tag = ciphertext.subarray(sealedEnd - CIPHERTEXT_TAG_LENGTH, sealedEnd);
  const body = ciphertext.subarray(0, sealedEnd - CIPHERTEXT_TAG_LENGTH);
  const k = createHmac('sha256', ek).update(iv).digest();
  try {
    const decipher = createDecipheriv('aes-256-gcm', k, nonce);
    decipher.setAAD(context);
    decipher.setAuthTag(tag);
    const head = decipher.update(body);
    let tail: Buffer;
    try {
      tail = decipher.final();
    } catch (err) {
      // Unauthenticated output must not outlive the failed check.
      head.fill(0);
      throw notAuthentic(err);
    }
    const out = new Uint8Array(head.length + tail.length);
    out.set(head, 0);
    out.set(tail, head.length);
    head.fill(0);
    tail.fill(0);
    return out;
  } finally {
    k.fill(0);
  }
}
