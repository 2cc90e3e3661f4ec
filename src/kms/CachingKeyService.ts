// A KeyService decorator that keeps plaintext DEKs in a bounded, expiring, purgeable cache.

import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { GeneratedKey, KeyInfo, KeyService, KeyServiceStatus } from './KeyService.js';

export interface CachingKeyServiceOptions {
  /** Most DEKs held at once (default 10000). */
  max?: number;
  /** Milliseconds a DEK stays usable after it was cached (default 5 minutes). */
  ttl?: number;
}

export interface CachingKeyServiceStats {
  entries: number;
  max: number;
  ttlMs: number;
}

interface CachedDek {
  name: string;
  plaintext: Uint8Array;
}

const DEFAULT_MAX = 10_000;
const DEFAULT_TTL_MS = 5 * 60 * 1000;

/**
 * Only DEKs obtained through this instance are cached, and only disables and deletes made
 * through this instance purge them: route every key lifecycle call through it. A disable made
 * elsewhere (another daemon on a shared kesd) takes effect here only once entries expire.
 */
export class CachingKeyService implements KeyService {
  readonly #inner: KeyService;
  readonly #cache: LRUCache<string, CachedDek>;
  readonly #max: number;
  readonly #ttlMs: number;
  /**
   * Bumped on every purge. A decrypt that was in flight when a key was disabled must not
   * put its result into the cache afterwards; comparing epochs prevents that.
   */
  #epoch = 0;

  constructor(inner: KeyService, options: CachingKeyServiceOptions = {}) {
    const max = options.max ?? DEFAULT_MAX;
    const ttl = options.ttl ?? DEFAULT_TTL_MS;
    if (!Number.isInteger(max) || max < 1) throw new RangeError('CachingKeyService: max must be a positive integer');
    if (!Number.isFinite(ttl) || ttl <= 0) throw new RangeError('CachingKeyService: ttl must be a positive number of ms');
    this.#inner = inner;
    this.#max = max;
    this.#ttlMs = ttl;
    this.#cache = new LRUCache<string, CachedDek>({
      max,
      ttl,
      // Without it an expired DEK would sit in memory until touched or evicted.
      ttlAutopurge: true,
      // Every way out of the cache wipes the plaintext; callers only ever hold copies.
      dispose: (value) => value.plaintext.fill(0),
    });
  }

  async decrypt(name: string, ciphertext: Uint8Array, context: Uint8Array): Promise<Uint8Array> {
    const id = cacheId(name, context, ciphertext);
    const hit = this.#cache.get(id);
    if (hit) return new Uint8Array(hit.plaintext);
    const epoch = this.#epoch;
    const plaintext = await this.#inner.decrypt(name, ciphertext, context);
    this.#remember(epoch, id, name, plaintext);
    return plaintext;
  }

  async generate(name: string, context: Uint8Array): Promise<GeneratedKey> {
    const epoch = this.#epoch;
    const generated = await this.#inner.generate(name, context);
    // The engine decrypts this very ciphertext soon after writing the file.
    this.#remember(epoch, cacheId(name, context, generated.ciphertext), name, generated.plaintext);
    return generated;
  }

  encrypt(name: string, plaintext: Uint8Array, context: Uint8Array): Promise<Uint8Array> {
    return this.#inner.encrypt(name, plaintext, context);
  }

  /** Purges before and after the inner call, so no DEK of `name` survives it, even on failure. */
  async disableKey(name: string): Promise<void> {
    this.purgeKey(name);
    try {
      await this.#inner.disableKey(name);
    } finally {
      this.purgeKey(name);
    }
  }

  async deleteKey(name: string): Promise<void> {
    this.purgeKey(name);
    try {
      await this.#inner.deleteKey(name);
    } finally {
      this.purgeKey(name);
    }
  }

  enableKey(name: string): Promise<void> {
    return this.#inner.enableKey(name);
  }

  createKey(name: string): Promise<void> {
    return this.#inner.createKey(name);
  }

  describeKey(name: string): Promise<KeyInfo> {
    return this.#inner.describeKey(name);
  }

  listKeys(prefix?: string): Promise<KeyInfo[]> {
    return this.#inner.listKeys(prefix);
  }

  status(): Promise<KeyServiceStatus> {
    return this.#inner.status();
  }

  /** Drops (and wipes) every cached DEK of `name`. */
  purgeKey(name: string): void {
    this.#epoch++;
    // entries() skips expired ones; purging them first wipes those too.
    this.#cache.purgeStale();
    const doomed: string[] = [];
    for (const [id, value] of this.#cache.entries()) {
      if (value.name === name) doomed.push(id);
    }
    for (const id of doomed) this.#cache.delete(id);
  }

  /** Drops (and wipes) every cached DEK. */
  clear(): void {
    this.#epoch++;
    this.#cache.clear();
  }

  stats(): CachingKeyServiceStats {
    this.#cache.purgeStale();
    return { entries: this.#cache.size, max: this.#max, ttlMs: this.#ttlMs };
  }

  #remember(epoch: number, id: string, name: string, plaintext: Uint8Array): void {
    if (epoch !== this.#epoch) return;
    this.#cache.set(id, { name, plaintext: new Uint8Array(plaintext) });
  }
}

/** SHA-256 over length-prefixed parts, so no two (name, context, ciphertext) triples collide by concatenation. */
function cacheId(name: string, context: Uint8Array, ciphertext: Uint8Array): string {
  const h = createHash('sha256');
  for (const part of [Buffer.from(name, 'utf8'), context, ciphertext]) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(part.length, 0);
    h.update(len);
    h.update(part);
  }
  return h.digest('hex');
}
