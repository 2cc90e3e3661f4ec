// Where the key server keeps its external keys (EKs): in memory, or sealed in files on disk.

import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { chmod, link, mkdir, open, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, MountdError, integrity } from '../errors/index.js';
import { isValidKeyName, validateKeyName } from './names.js';

export const EK_LENGTH = 32;

export interface KeyEntry {
  name: string;
  /** 32 bytes of EK material. */
  key: Uint8Array;
  algorithm: 'AES256';
  /** ISO 8601. */
  createdAt: string;
  /** The identity that created or imported the key. */
  createdBy: string;
  enabled: boolean;
}

/**
 * Implementations copy entries on the way in and out, so a caller wiping its buffer
 * (or the store wiping its own) never corrupts the other side.
 */
export interface Keystore {
  /** KeyExists if `name` is taken. */
  create(entry: KeyEntry): Promise<void>;
  /** KeyNotFound if absent. */
  get(name: string): Promise<KeyEntry>;
  /** Replaces an existing entry (used for the enabled flag). KeyNotFound if absent. */
  update(entry: KeyEntry): Promise<void>;
  /** KeyNotFound if absent. */
  delete(name: string): Promise<void>;
  /** Names starting with `prefix`, sorted. */
  list(prefix?: string): Promise<string[]>;
}

const keyNotFound = (name: string) => new MountdError(ErrorCode.KeyNotFound, `key '${name}' does not exist`);
const keyExists = (name: string) => new MountdError(ErrorCode.KeyExists, `key '${name}' already exists`);

function checkEntry(entry: KeyEntry): void {
  validateKeyName(entry.name);
  if (!(entry.key instanceof Uint8Array) || entry.key.length !== EK_LENGTH) {
    throw new MountdError(ErrorCode.InvalidArgument, `key '${entry.name}': key material must be ${EK_LENGTH} bytes`);
  }
  if (entry.algorithm !== 'AES256') {
    throw new MountdError(ErrorCode.InvalidArgument, `key '${entry.name}': unsupported algorithm`);
  }
}

function copyEntry(entry: KeyEntry): KeyEntry {
  return {
    name: entry.name,
    key: new Uint8Array(entry.key),
    algorithm: entry.algorithm,
    createdAt: entry.createdAt,
    createdBy: entry.createdBy,
    enabled: entry.enabled,
  };
}

function sortedMatching(names: Iterable<string>, prefix: string): string[] {
  const out: string[] = [];
  for (const n of names) if (n.startsWith(prefix)) out.push(n);
  // Code-unit order: names are ASCII, and a locale-aware sort would differ between hosts.
  return out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

export class MemKeystore implements Keystore {
  readonly #entries = new Map<string, KeyEntry>();

  async create(entry: KeyEntry): Promise<void> {
    checkEntry(entry);
    if (this.#entries.has(entry.name)) throw keyExists(entry.name);
    this.#entries.set(entry.name, copyEntry(entry));
  }

  async get(name: string): Promise<KeyEntry> {
    const e = this.#entries.get(name);
    if (!e) throw keyNotFound(name);
    return copyEntry(e);
  }

  async update(entry: KeyEntry): Promise<void> {
    checkEntry(entry);
    const old = this.#entries.get(entry.name);
    if (!old) throw keyNotFound(entry.name);
    old.key.fill(0);
    this.#entries.set(entry.name, copyEntry(entry));
  }

  async delete(name: string): Promise<void> {
    const old = this.#entries.get(name);
    if (!old) throw keyNotFound(name);
    old.key.fill(0);
    this.#entries.delete(name);
  }

  async list(prefix = ''): Promise<string[]> {
    return sortedMatching(this.#entries.keys(), prefix);
  }
}

/**
 * On-disk record of one key; `sealed` = base64(nonce(12) || AES-256-GCM ciphertext || tag(16)).
 * Version 2 authenticates every field (the enabled flag above all: a disabled key must not come
 * back to life by an edit of the file); version 1 bound only the name, and is rewritten as
 * version 2 when the keystore opens.
 */
interface KeyFile {
  version: 1 | 2;
  name: string;
  algorithm: 'AES256';
  created_at: string;
  created_by: string;
  enabled: boolean;
  sealed: string;
}

const KEY_FILE_SUFFIX = '.key';
const SEAL_NONCE_LENGTH = 12;
const SEAL_TAG_LENGTH = 16;
const SEALED_LENGTH = SEAL_NONCE_LENGTH + EK_LENGTH + SEAL_TAG_LENGTH;
const SEAL_AAD_PREFIX = 'mountd kes keystore v1\0';
const SEAL_AAD_PREFIX_V2 = 'mountd kes keystore v2\0';

/** Version 1: binds a sealed key to its name only. */
function sealAad(name: string): Buffer {
  return Buffer.from(SEAL_AAD_PREFIX + name, 'utf8');
}

/** Version 2: binds the sealed key to its name, algorithm, creation and enabled state. */
function sealAadV2(e: { name: string; algorithm: string; createdAt: string; createdBy: string; enabled: boolean }): Buffer {
  return Buffer.from(SEAL_AAD_PREFIX_V2 + JSON.stringify([e.name, e.algorithm, e.createdAt, e.createdBy, e.enabled]), 'utf8');
}

/**
 * One JSON file per key, `<dir>/<name>.key`, with the key material sealed under a master key.
 * Files are replaced atomically (temp file, fsync, rename, fsync of the directory).
 */
export class FsKeystore implements Keystore {
  readonly dir: string;
  readonly #masterKey: Uint8Array;
  #ready: Promise<void> | undefined;

  constructor(dir: string, masterKey: Uint8Array) {
    if (!(masterKey instanceof Uint8Array) || masterKey.length !== 32) {
      throw new MountdError(ErrorCode.InvalidArgument, 'keystore master key must be 32 bytes');
    }
    this.dir = dir;
    this.#masterKey = new Uint8Array(masterKey);
  }

  async create(entry: KeyEntry): Promise<void> {
    checkEntry(entry);
    await this.#ensureDir();
    const file = this.#path(entry.name);
    const tmp = await this.#writeTemp(entry);
    try {
      // link() refuses to replace an existing file, which rename() would silently do.
      await link(tmp, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw keyExists(entry.name);
      throw this.#failure(`create key '${entry.name}'`, err);
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
    await this.#syncDir();
  }

  async get(name: string): Promise<KeyEntry> {
    validateKeyName(name);
    await this.#ensureDir();
    const file = this.#path(name);
    let raw: string;
    try {
      raw = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw keyNotFound(name);
      throw this.#failure(`read key '${name}'`, err);
    }
    return this.#parse(name, file, raw);
  }

  async update(entry: KeyEntry): Promise<void> {
    checkEntry(entry);
    await this.#ensureDir();
    const file = this.#path(entry.name);
    // Also proves the existing file unseals under our master key, so an update can never
    // overwrite a key we could not read (for example after a master key mix-up).
    (await this.get(entry.name)).key.fill(0);
    const tmp = await this.#writeTemp(entry);
    try {
      await rename(tmp, file);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw this.#failure(`update key '${entry.name}'`, err);
    }
    await this.#syncDir();
  }

  async delete(name: string): Promise<void> {
    validateKeyName(name);
    await this.#ensureDir();
    try {
      await unlink(this.#path(name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw keyNotFound(name);
      throw this.#failure(`delete key '${name}'`, err);
    }
    await this.#syncDir();
  }

  async list(prefix = ''): Promise<string[]> {
    await this.#ensureDir();
    let files: string[];
    try {
      files = await readdir(this.dir);
    } catch (err) {
      throw this.#failure('list keys', err);
    }
    const names: string[] = [];
    for (const f of files) {
      if (!f.endsWith(KEY_FILE_SUFFIX)) continue;
      const name = f.slice(0, -KEY_FILE_SUFFIX.length);
      // Temp files start with '.', which no valid name does.
      if (isValidKeyName(name)) names.push(name);
    }
    return sortedMatching(names, prefix);
  }

  #path(name: string): string {
    return join(this.dir, name + KEY_FILE_SUFFIX);
  }

  #ensureDir(): Promise<void> {
    if (!this.#ready) {
      this.#ready = (async () => {
        try {
          await mkdir(this.dir, { recursive: true, mode: 0o700 });
          // The directory is ours alone; tighten one created earlier under a looser umask.
          await chmod(this.dir, 0o700);
          await this.#upgradeV1Files();
        } catch (err) {
          this.#ready = undefined;
          throw this.#failure(`open keystore directory ${this.dir}`, err);
        }
      })();
    }
    return this.#ready;
  }

  /**
   * Rewrites version-1 key files (whose enabled flag was not authenticated) as version 2, same
   * key, same state. A file that does not unseal is left as it is: reading it reports why.
   */
  async #upgradeV1Files(): Promise<void> {
    let upgraded = 0;
    for (const f of await readdir(this.dir)) {
      const name = f.endsWith(KEY_FILE_SUFFIX) ? f.slice(0, -KEY_FILE_SUFFIX.length) : '';
      if (!isValidKeyName(name)) continue;
      const file = this.#path(name);
      try {
        const raw = await readFile(file, 'utf8');
        if ((JSON.parse(raw) as { version?: unknown }).version !== 1) continue;
        const entry = this.#parse(name, file, raw);
        try {
          await rename(await this.#writeTemp(entry), file);
          upgraded++;
        } finally {
          entry.key.fill(0);
        }
      } catch {
        // unreadable or tampered: get() reports it
      }
    }
    if (upgraded > 0) await this.#syncDir();
  }

  #seal(entry: KeyEntry): string {
    const nonce = randomBytes(SEAL_NONCE_LENGTH);
    const cipher = createCipheriv('aes-256-gcm', this.#masterKey, nonce);
    cipher.setAAD(sealAadV2(entry));
    const ct = Buffer.concat([cipher.update(entry.key), cipher.final()]);
    const sealed = Buffer.concat([nonce, ct, cipher.getAuthTag()]);
    return sealed.toString('base64');
  }

  #parse(name: string, file: string, raw: string): KeyEntry {
    let doc: Partial<KeyFile>;
    try {
      doc = JSON.parse(raw) as Partial<KeyFile>;
    } catch (err) {
      throw integrity(`key file ${file}`, err);
    }
    if (typeof doc !== 'object' || doc === null) throw integrity(`key file ${file}`);
    if (doc.version !== 1 && doc.version !== 2) {
      throw new MountdError(ErrorCode.UnsupportedFormat, `key file ${file}: unsupported version`);
    }
    if (
      doc.name !== name ||
      doc.algorithm !== 'AES256' ||
      typeof doc.created_at !== 'string' ||
      typeof doc.created_by !== 'string' ||
      typeof doc.enabled !== 'boolean' ||
      typeof doc.sealed !== 'string'
    ) {
      throw integrity(`key file ${file}`);
    }
    const sealed = Buffer.from(doc.sealed, 'base64');
    if (sealed.length !== SEALED_LENGTH) throw integrity(`key file ${file}`);
    let key: Buffer;
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#masterKey, sealed.subarray(0, SEAL_NONCE_LENGTH));
      decipher.setAAD(
        doc.version === 1 ? sealAad(name) : sealAadV2({ name, algorithm: doc.algorithm, createdAt: doc.created_at, createdBy: doc.created_by, enabled: doc.enabled }),
      );
      decipher.setAuthTag(sealed.subarray(SEAL_NONCE_LENGTH + EK_LENGTH));
      key = Buffer.concat([
        decipher.update(sealed.subarray(SEAL_NONCE_LENGTH, SEAL_NONCE_LENGTH + EK_LENGTH)),
        decipher.final(),
      ]);
    } catch (err) {
      // Tampering and a wrong master key look the same from here.
      throw integrity(`key file ${file} (tampered, or sealed under a different master key)`, err);
    }
    const out = new Uint8Array(key);
    key.fill(0);
    return {
      name,
      key: out,
      algorithm: 'AES256',
      createdAt: doc.created_at,
      createdBy: doc.created_by,
      enabled: doc.enabled,
    };
  }

  async #writeTemp(entry: KeyEntry): Promise<string> {
    const doc: KeyFile = {
      version: 2,
      name: entry.name,
      algorithm: entry.algorithm,
      created_at: entry.createdAt,
      created_by: entry.createdBy,
      enabled: entry.enabled,
      sealed: this.#seal(entry),
    };
    const tmp = join(this.dir, `.${entry.name}.${randomBytes(8).toString('hex')}.tmp`);
    try {
      const fh = await open(tmp, 'wx', 0o600);
      try {
        await fh.writeFile(`${JSON.stringify(doc, null, 2)}\n`, 'utf8');
        await fh.sync();
      } finally {
        await fh.close();
      }
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw this.#failure(`write key '${entry.name}'`, err);
    }
    return tmp;
  }

  async #syncDir(): Promise<void> {
    try {
      const fh = await open(this.dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    } catch (err) {
      throw this.#failure(`sync keystore directory ${this.dir}`, err);
    }
  }

  /** A backend failure is the key server being unavailable, as KES reports it (502). */
  #failure(what: string, err: unknown): MountdError {
    if (err instanceof MountdError) return err;
    return new MountdError(ErrorCode.KeyServerUnavailable, `keystore: cannot ${what}`, { cause: err });
  }
}
