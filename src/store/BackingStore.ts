// The backing directory: bucket and object paths, xattrs, temp files, fsync and the daemon lock. No crypto.
import { closeSync, constants as fsConstants, fsync, openSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { getAttributeSync, listAttributesSync, removeAttributeSync, setAttributeSync } from '@napi-rs/xattr';
import { ErrorCode, MountdError, fromSystemError } from '../errors/index.js';
import { parseObjectKey, validateBucketName } from './names.js';

/** The daemon's own directory; valid bucket names never start with ".". */
export const INTERNAL_DIR = '.mountd';

export class BackingStore {
  readonly root: string;
  readonly internalDir: string;
  readonly tmpDir: string;
  readonly journalDir: string;
  /** Copies of packages that flushes in progress rewrite in place: put back after a crash. */
  readonly tailsDir: string;
  private lockHeld = false;

  private constructor(root: string) {
    this.root = root;
    this.internalDir = path.join(root, INTERNAL_DIR);
    this.tmpDir = path.join(this.internalDir, 'tmp');
    this.journalDir = path.join(this.internalDir, 'journal');
    this.tailsDir = path.join(this.internalDir, 'tails');
  }

  /** Creates the layout if needed and takes the lock that keeps a second daemon off this directory. */
  static async open(root: string, options: { lock?: boolean } = {}): Promise<BackingStore> {
    const abs = path.resolve(root);
    await fsp.mkdir(abs, { recursive: true, mode: 0o755 });
    const store = new BackingStore(await fsp.realpath(abs));
    await fsp.mkdir(store.internalDir, { recursive: true, mode: 0o700 });
    await fsp.chmod(store.internalDir, 0o700);
    for (const d of [store.tmpDir, store.journalDir, store.tailsDir]) await fsp.mkdir(d, { recursive: true, mode: 0o700 });
    if (options.lock !== false) await store.acquireLock();
    return store;
  }

  private get lockPath(): string {
    return path.join(this.internalDir, 'lock');
  }

  private async acquireLock(): Promise<void> {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fh = await fsp.open(this.lockPath, 'wx', 0o600);
        await fh.writeFile(`${process.pid}\n`);
        await fh.close();
        this.lockHeld = true;
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw fromSystemError(err, 'lock file');
      }
      const pid = Number.parseInt(await fsp.readFile(this.lockPath, 'utf8').catch(() => ''), 10);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid)) {
        throw new MountdError(ErrorCode.Busy, `data directory ${this.root} is in use by another daemon (pid ${pid})`);
      }
      // A lock left by a daemon that died: take it over.
      await fsp.rm(this.lockPath, { force: true });
    }
    throw new MountdError(ErrorCode.Busy, `could not lock data directory ${this.root}`);
  }

  async close(): Promise<void> {
    if (this.lockHeld) {
      this.lockHeld = false;
      await fsp.rm(this.lockPath, { force: true });
    }
  }

  bucketPath(bucket: string): string {
    validateBucketName(bucket);
    return this.contained(path.join(this.root, bucket));
  }

  /** The backing path of an object key (a directory marker maps to its directory). */
  objectPath(bucket: string, key: string): string {
    // A pure function of its arguments, asked several times per request on the mount (every
    // stat): validated paths are kept, so that the checks run once per name, not once per call.
    const id = `${bucket}\0${key}`;
    const hit = this.paths.get(id);
    if (hit !== undefined) return hit;
    const parsed = parseObjectKey(key);
    const p = this.contained(path.join(this.bucketPath(bucket), ...parsed.segments));
    if (this.paths.size >= BackingStore.PATH_CACHE) this.paths.clear();
    this.paths.set(id, p);
    return p;
  }

  private static readonly PATH_CACHE = 8192;
  private readonly paths = new Map<string, string>();

  /** Defence in depth behind name validation: the joined path must stay under a bucket. */
  private contained(p: string): string {
    const rel = path.relative(this.root, p);
    if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel) || rel.split(path.sep)[0] === INTERNAL_DIR) {
      throw new MountdError(ErrorCode.InvalidName, 'path escapes the data directory');
    }
    return p;
  }

  /** A fresh path in the daemon's temp directory (same filesystem, so rename is atomic). */
  tempPath(tag = 'tmp'): string {
    return path.join(this.tmpDir, `${tag}-${randomBytes(12).toString('hex')}`);
  }

  /** Removes temp files a crashed daemon left; they hold ciphertext only, never plaintext. */
  async cleanTemp(): Promise<number> {
    const names = await fsp.readdir(this.tmpDir);
    await Promise.all(names.map((n) => fsp.rm(path.join(this.tmpDir, n), { recursive: true, force: true })));
    return names.length;
  }

  // xattrs are read and written with synchronous system calls: a few microseconds on a local
  // file system, where a trip through libuv's thread pool costs tens (and the mount makes one
  // or more per file it creates or opens). The promises keep the callers' shape.

  async getXattr(p: string, name: string): Promise<Buffer | null> {
    try {
      return getAttributeSync(p, name);
    } catch (err) {
      throw fromSystemError(err, `xattr ${name}`);
    }
  }

  async setXattr(p: string, name: string, value: Uint8Array): Promise<void> {
    try {
      setAttributeSync(p, name, value);
    } catch (err) {
      throw fromSystemError(err, `xattr ${name}`);
    }
  }

  async removeXattr(p: string, name: string): Promise<void> {
    try {
      removeAttributeSync(p, name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENODATA' || /No data|ENODATA/i.test(String(err))) return;
      throw fromSystemError(err, `xattr ${name}`);
    }
  }

  async listXattrs(p: string): Promise<string[]> {
    try {
      return listAttributesSync(p);
    } catch (err) {
      throw fromSystemError(err, 'xattr list');
    }
  }

  /**
   * fsync of a directory, with group commit: callers that arrive while one is running share the
   * next one (which starts after it, so it covers every change they made before calling). Sixteen
   * S3 PUTs into one bucket then cost two or three directory syncs, not sixteen.
   */
  async fsyncDir(dir: string): Promise<void> {
    let state = this.dirSyncs.get(dir);
    if (!state) {
      state = { running: null, next: null };
      this.dirSyncs.set(dir, state);
    }
    const st = state;
    if (st.running) {
      st.next ??= st.running
        .catch(() => undefined)
        .then(() => {
          st.next = null;
          return this.runDirSync(dir, st);
        });
      return st.next;
    }
    return this.runDirSync(dir, st);
  }

  private readonly dirSyncs = new Map<string, { running: Promise<void> | null; next: Promise<void> | null }>();

  private runDirSync(dir: string, st: { running: Promise<void> | null; next: Promise<void> | null }): Promise<void> {
    const run = (async () => {
      // Open and close directly (quick metadata calls); the fsync itself in the thread pool.
      const fd = openSync(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
      try {
        await new Promise<void>((resolve, reject) => fsync(fd, (err) => (err ? reject(err) : resolve())));
      } finally {
        closeSync(fd);
      }
    })();
    st.running = run;
    const clear = () => {
      if (st.running === run) st.running = null;
      if (!st.running && !st.next) this.dirSyncs.delete(dir);
    };
    run.then(clear, clear);
    return run;
  }

  async fsyncFile(p: string): Promise<void> {
    const fh = await fsp.open(p, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
