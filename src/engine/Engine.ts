// The storage engine both doors use: buckets, objects, open handles, renames, metadata and the key lifecycle.
import { createHash } from 'node:crypto';
import { chmodSync, constants as fsConstants, fchmodSync, fstatSync, readSync, lchownSync, linkSync, lstatSync, mkdirSync, renameSync, rmdirSync, statSync, unlinkSync, utimesSync, writeSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import { gcmSeal, openMetadata, sealMetadata, systemRandom, type RandomSource } from '../crypto/index.js';
import { ErrorCode, MountdError, fromSystemError, isMountdError } from '../errors/index.js';
import {
  FORMAT_VERSION,
  HEADER_BYTES,
  KEY_RECORD_XATTR,
  KeyKind,
  META_XATTR,
  PACKAGE_CIPHERTEXT,
  PACKAGE_NONCE,
  PACKAGE_PLAINTEXT,
  backingSize,
  decodeHeader,
  decodeRecord,
  encodeHeader,
  encodeRecord,
  packageAad,
  plaintextSize,
  type FileHeader,
  type KeyRecord,
} from '../format/index.js';
import type { KeyInfo, KeyService } from '../kms/KeyService.js';
import { BackingStore, INTERNAL_DIR, parseObjectKey, validateBucketName, validatePrefix } from '../store/index.js';
import { RenameJournal, type RenameIntent } from './journal.js';
import { listObjects, type ListOptions, type ListResult } from './list.js';
import { RwLock } from './mutex.js';
import { formatRotateProgress, type RotateOptions, type RotateProgress } from './rotate.js';
import { verifyStore, type VerifyOptions, type VerifyProgress } from './verify.js';
import { ObjectKeys, customerKeyMd5, type EncryptionSpec } from './ObjectKeys.js';
import { FdFile, Writeback } from './FdFile.js';
import { Md5 } from './Md5.js';
import { OpenFile, batchPool, packagePool, sealPackageInto, writeAll, writeFully, type DirtyBudget, type TailGuard } from './OpenFile.js';

export type { EncryptionSpec } from './ObjectKeys.js';
export type { ListOptions, ListResult, ListEntry } from './list.js';
export { formatRotateProgress, type RotateOptions, type RotateProgress } from './rotate.js';
export { formatVerifyProgress, type VerifyOptions, type VerifyProgress } from './verify.js';

export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };

/** A name an S3 request changed (written or replaced), or removed (`gone`); key "" is the bucket. */
export interface ObjectChange {
  bucket: string;
  key: string;
  gone: boolean;
  /** Only metadata was rewritten (an object's tags or content type, a bucket's default encryption). */
  meta?: boolean;
}

export interface EngineOptions {
  store: BackingStore;
  keys: KeyService;
  defaultKeyName: string;
  /** Create the default key in the key server when it does not exist (embedded default). */
  createDefaultKey?: boolean;
  random?: RandomSource;
  /** Buffered plaintext per open file before a flush is forced (default 16 MiB). */
  maxDirtyBytesPerFile?: number;
  /** Buffered plaintext across all open files before a flush is forced (default 256 MiB). */
  maxDirtyBytesTotal?: number;
  log?: Logger;
  /** Test hooks that simulate a crash between the steps of a rename. */
  faults?: { afterRenameJournal?: () => void; afterRenameMove?: () => void };
}

export type EntryType = 'file' | 'directory' | 'symlink';

export interface Stat {
  type: EntryType;
  /** Plaintext size for files (including buffered writes); backing size for directories. */
  size: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  ino: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
}

export interface ObjectMeta {
  /** Plaintext MD5 (or multipart ETag), without quotes; absent once the mount changed the content. */
  etag?: string;
  contentType?: string;
  /**
   * Other headers S3 stores with an object and answers GET and HEAD with: Cache-Control,
   * Content-Disposition, Content-Encoding, Content-Language, Expires (as sent).
   */
  headers?: Record<string, string>;
  /** User metadata: S3 x-amz-meta-NAME and mount xattr user.NAME. Names are lowercase for S3. */
  user: Record<string, string>;
  /** Object tags, if any. */
  tags?: Record<string, string>;
}

export interface EncryptionInfo {
  kind: 'default' | 'named' | 'customer';
  keyName?: string;
  /** For customer keys: base64 MD5 of the key, as S3 echoes it. */
  customerKeyMd5?: string;
  algorithm: 'AES-256-GCM';
  formatVersion: number;
  /** Random file id from the header (hex); stable for the life of the file, new on every replace. */
  fileId: string;
}

export interface ObjectInfo {
  bucket: string;
  key: string;
  size: number;
  mtimeMs: number;
  meta: ObjectMeta;
  encryption: EncryptionInfo;
}

export interface PutOptions {
  encryption?: EncryptionSpec;
  contentType?: string;
  headers?: Record<string, string>;
  user?: Record<string, string>;
  tags?: Record<string, string>;
  /** Overrides the computed MD5 ETag (multipart uploads). */
  etag?: string;
  /**
   * A conditional write (S3 If-None-Match / If-Match), decided atomically with the swap: 'absent'
   * needs no object at the name; a version (from `objectVersion`) needs that very object still
   * there, unchanged. Otherwise PreconditionFailed, and nothing is replaced.
   */
  expect?: 'absent' | ObjectVersion;
}

/** Which file is at a name, and which state of it: a replace or any change of content moves it. */
export interface ObjectVersion {
  ino: number;
  size: number;
  mtimeNs: bigint;
  /** Moves with every write and attribute change, and cannot be set back (mtime can: utimens). */
  ctimeNs: bigint;
}

export interface BucketEncryption {
  algorithm: 'AES256' | 'aws:kms';
  keyId?: string;
}

/** An unfinished multipart upload, as upload.json records it (nothing secret: the key name is already a file name). */
export interface UploadInfo {
  uploadId: string;
  bucket: string;
  key: string;
  initiatedMs: number;
  kind: EncryptionInfo['kind'];
  /** The key server key of a 'default' or 'named' upload. */
  keyName?: string;
}

export interface UploadPartInfo {
  partNumber: number;
  /** Plaintext MD5 of the part, without quotes. */
  etag: string;
  size: number;
  mtimeMs: number;
}

interface Handle {
  file: OpenFile;
  customerKey?: Uint8Array;
}

const BUCKET_SSE_XATTR = 'user.mountd.bucket-sse';
const SYMLINK_XATTR = 'user.mountd.symlink';
/**
 * Bytes of key record plus sealed metadata that always fit in one ext4 attribute block (4096
 * bytes, less its header, the entries' own headers and names, and the symlink marker), measured.
 */
const XATTR_BUDGET = 3800;
const MAX_SYMLINK = 4095;
const EMPTY_MD5 = 'd41d8cd98f00b204e9800998ecf8427e';
/** Multipart uploads live in DATA/.mountd/uploads/<uploadId>/: upload.json, the sealed `meta` file and `part-NNNNN` files. */
const UPLOADS_DIR = 'uploads';
const UPLOAD_ID_RE = /^[A-Za-z0-9_-]{32}$/;

/** Whether the open file `fd` is still the file at `p`, by exact (bigint) device and inode. */
function sameInode(fd: number, p: string): boolean {
  const a = fstatSync(fd, { bigint: true });
  const b = lstatSync(p, { bigint: true, throwIfNoEntry: false });
  return b !== undefined && a.ino === b.ino && a.dev === b.dev;
}

export class Engine {
  readonly store: BackingStore;
  readonly keyService: KeyService;
  readonly keys: ObjectKeys;
  private readonly random: RandomSource;
  private readonly log: Logger;
  private readonly budget: DirtyBudget;
  private readonly journal: RenameJournal;
  private readonly faults: NonNullable<EngineOptions['faults']>;
  /** Attached open files by backing path: all handles on one file share one state and one lock. */
  private readonly files = new Map<string, OpenFile>();
  private readonly loading = new Map<string, Promise<OpenFile>>();
  private readonly handles = new Map<number, Handle>();
  private nextHandle = 1;
  /** Renames take it exclusively; operations that resolve paths take it shared. */
  private readonly namespace = new RwLock();
  private closed = false;
  private readonly bucketEncryption = new Map<string, BucketEncryption | null>();
  /** Who must hear of changes made through S3 (the mount: the kernel's caches of those names). */
  private readonly changeHooks = new Set<(changes: ObjectChange[]) => Promise<void>>();
  /** What else must drop a key's plaintext when it locks (the mount: the kernel's page cache). */
  private readonly keyLockHooks = new Set<(name: string) => Promise<void>>();
  private readonly symlinkCache = new LRUCache<string, { ctimeMs: number; symlink: boolean }>({ max: 100_000 });

  private constructor(opts: EngineOptions) {
    this.store = opts.store;
    this.keyService = opts.keys;
    this.random = opts.random ?? systemRandom;
    this.log = opts.log ?? silentLogger;
    this.keys = new ObjectKeys(opts.keys, this.random, opts.defaultKeyName);
    this.budget = {
      dirtyBytes: 0,
      maxPerFile: opts.maxDirtyBytesPerFile ?? 16 * 1024 * 1024,
      maxTotal: opts.maxDirtyBytesTotal ?? 256 * 1024 * 1024,
    };
    this.journal = new RenameJournal(opts.store);
    this.faults = opts.faults ?? {};
  }

  /** Opens the engine: cleans temp files, replays unfinished renames, ensures the default key. */
  static async open(opts: EngineOptions): Promise<Engine> {
    const engine = new Engine(opts);
    const cleaned = await opts.store.cleanTemp();
    if (cleaned > 0) engine.log.info(`removed ${cleaned} temp file(s) left by an earlier run`);
    await engine.replayJournal();
    await engine.restoreTails();
    if (opts.createDefaultKey) await engine.ensureDefaultKey();
    return engine;
  }

  /** Keeps the committed tail package of a file while a flush rewrites it (see TailGuard). */
  private readonly tailGuard: TailGuard = {
    save: async (fileId, backingPath, oldBacking, at, bytes) => {
      const head = Buffer.from(`${JSON.stringify({ path: path.relative(this.store.root, backingPath), oldBacking, at })}\n`);
      // No fsync: this guards against a crash of the daemon (kill -9), whose writes the kernel
      // keeps; power loss is what fsync is for, and a flush is not committed before it.
      // Written under a temp name, then renamed: a copy under its final name is whole (a crash
      // while writing it leaves only the temp file, and the flush had not begun).
      const final = path.join(this.store.tailsDir, fileId.toString('hex'));
      await fsp.writeFile(`${final}.tmp`, Buffer.concat([head, bytes]), { mode: 0o600 });
      await fsp.rename(`${final}.tmp`, final);
    },
    drop: async (fileId) => {
      await fsp.rm(path.join(this.store.tailsDir, fileId.toString('hex')), { force: true });
    },
  };

  /**
   * After a crash: puts back the last package of every file whose flush was cut while it
   * rewrote that package, and the file's old length (the flush never completed, so nothing it
   * wrote was committed).
   */
  private async restoreTails(): Promise<void> {
    for (const name of await fsp.readdir(this.store.tailsDir).catch(() => [] as string[])) {
      const saved = path.join(this.store.tailsDir, name);
      if (name.endsWith('.tmp')) {
        // A copy cut short by the crash: its flush had not begun, so there is nothing to put back.
        await fsp.rm(saved, { force: true });
        continue;
      }
      try {
        const raw = await fsp.readFile(saved);
        const nl = raw.indexOf(0x0a);
        const meta = JSON.parse(raw.subarray(0, nl).toString('utf8')) as { path: string; oldBacking: number; at: number };
        const bytes = raw.subarray(nl + 1);
        const abs = path.resolve(this.store.root, meta.path);
        if (!abs.startsWith(this.store.root + path.sep) || meta.at + bytes.length !== meta.oldBacking || meta.at < HEADER_BYTES) throw new Error('malformed');
        const fh = await fsp.open(abs, fsConstants.O_RDWR | fsConstants.O_NOFOLLOW).catch(() => null);
        if (!fh) {
          this.log.warn(`a flush of ${meta.path} was cut by a crash, but the file is gone (renamed or deleted since): nothing to restore`);
        } else {
          try {
            const hb = Buffer.alloc(HEADER_BYTES);
            await fh.read(hb, 0, HEADER_BYTES, 0);
            if (decodeHeader(hb).fileId.toString('hex') !== name) {
              this.log.warn(`a flush of ${meta.path} was cut by a crash, but another file is there now: nothing to restore`);
            } else {
              await fh.truncate(meta.oldBacking);
              await writeFully(fh, bytes, meta.at);
              await fh.sync();
              this.log.warn(`restored ${meta.path} as it was before a flush that a crash cut short (its unflushed writes are lost; what was committed is intact)`);
            }
          } finally {
            await fh.close();
          }
        }
      } catch (err) {
        this.log.error(`tail copy ${name}: ${(err as Error).message}; removed`);
      }
      await fsp.rm(saved, { force: true });
    }
  }

  /**
   * Makes sure the default key exists. A key server that cannot be reached does not stop the
   * daemon (MinIO refuses to start; its users complain): it retries with backoff in the
   * background while everything that needs a key fails clearly.
   */
  private async ensureDefaultKey(attempt = 0): Promise<void> {
    const name = this.keys.defaultKeyName;
    try {
      try {
        await this.keyService.describeKey(name);
      } catch (err) {
        if (!isMountdError(err, ErrorCode.KeyNotFound)) throw err;
        await this.keyService.createKey(name);
        if ((await this.listBuckets()).length > 0) {
          this.log.warn(
            `created a NEW default key ${name}, but the data directory already holds buckets: files sealed under an earlier key of that name (deleted, or kept by another key server) stay unreadable`,
          );
        } else this.log.info(`created default key ${name}`);
      }
      if (attempt > 0) this.log.info(`key server reachable again; default key ${name} is ready`);
    } catch (err) {
      if (!isMountdError(err, ErrorCode.KeyServerUnavailable) || this.closed) throw err;
      const delay = Math.min(30_000, 500 * 2 ** attempt);
      this.log.warn(`key server unavailable (${err.message}); retrying in ${Math.round(delay / 1000)} s`);
      const timer = setTimeout(() => void this.ensureDefaultKey(attempt + 1).catch((e: Error) => this.log.error(`default key: ${e.message}`)), delay);
      timer.unref();
    }
  }

  /** Flushes every open file and closes them. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const errors: unknown[] = [];
    for (const f of new Set([...this.files.values(), ...[...this.handles.values()].map((h) => h.file)])) {
      await f.mutex
        .run(async () => {
          if (f.hasKey) await this.commit(f, true);
          await f.close();
        })
        .catch((err) => errors.push(err));
    }
    this.files.clear();
    this.handles.clear();
    if (errors.length > 0) this.log.error(`close: ${errors.length} file(s) could not be flushed`);
  }

  status() {
    return {
      openFiles: new Set([...this.files.values(), ...[...this.handles.values()].map((h) => h.file)]).size,
      handles: this.handles.size,
      dirtyBytes: this.budget.dirtyBytes,
      maxDirtyBytesTotal: this.budget.maxTotal,
      defaultKey: this.keys.defaultKeyName,
    };
  }

  // ---- buckets ----

  async createBucket(name: string): Promise<void> {
    const p = this.store.bucketPath(name);
    try {
      await fsp.mkdir(p, { mode: 0o755 });
    } catch (err) {
      throw fromSystemError(err, `bucket ${name}`);
    }
  }

  async deleteBucket(name: string): Promise<void> {
    const p = this.store.bucketPath(name);
    this.bucketEncryption.delete(name);
    try {
      await fsp.rmdir(p);
    } catch (err) {
      throw fromSystemError(err, `bucket ${name}`);
    }
  }

  async listBuckets(): Promise<Array<{ name: string; createdMs: number }>> {
    const out: Array<{ name: string; createdMs: number }> = [];
    for (const d of await fsp.readdir(this.store.root, { withFileTypes: true })) {
      if (!d.isDirectory() || d.name === INTERNAL_DIR) continue;
      try {
        validateBucketName(d.name);
      } catch {
        continue;
      }
      const st = await fsp.stat(path.join(this.store.root, d.name)).catch(() => null);
      if (st) out.push({ name: d.name, createdMs: st.birthtimeMs || st.ctimeMs });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async headBucket(name: string): Promise<void> {
    // Metadata calls on the request path are made directly: each call through the thread pool
    // costs the main thread a cross-CPU wake-up (100-170 us measured on the benchmark machine)
    // where the call itself takes 1-5 us on a cached tree. Bulk reads, writes and fsync still go
    // through the pool.
    let st;
    try {
      st = statSync(this.store.bucketPath(name));
    } catch (err) {
      throw fromSystemError(err, `bucket ${name}`);
    }
    if (!st.isDirectory()) throw new MountdError(ErrorCode.NotFound, `bucket ${name}: not found`);
  }

  async getBucketEncryption(name: string): Promise<BucketEncryption | null> {
    // Every create asks; this daemon is the only writer of the data directory (it holds the lock).
    const cached = this.bucketEncryption.get(name);
    if (cached !== undefined) return cached;
    await this.headBucket(name);
    const raw = await this.store.getXattr(this.store.bucketPath(name), BUCKET_SSE_XATTR);
    const cfg = raw ? (JSON.parse(raw.toString('utf8')) as BucketEncryption) : null;
    this.bucketEncryption.set(name, cfg);
    return cfg;
  }

  async setBucketEncryption(name: string, cfg: BucketEncryption | null): Promise<void> {
    this.bucketEncryption.delete(name);
    await this.headBucket(name);
    const p = this.store.bucketPath(name);
    if (cfg === null) await this.store.removeXattr(p, BUCKET_SSE_XATTR);
    else await this.store.setXattr(p, BUCKET_SSE_XATTR, Buffer.from(JSON.stringify(cfg), 'utf8'));
    this.bucketEncryption.delete(name);
  }

  /** The key for a new object: explicit spec, else the bucket default, else the daemon default. */
  private async resolveEncryption(bucket: string, spec: EncryptionSpec | undefined): Promise<EncryptionSpec> {
    if (spec && spec.kind !== 'default') return spec;
    const cfg = await this.getBucketEncryption(bucket).catch(() => null);
    if (!spec && cfg?.algorithm === 'aws:kms' && cfg.keyId) return { kind: 'named', keyName: cfg.keyId };
    return { kind: 'default' };
  }

  // ---- whole objects (S3) ----

  /**
   * Writes a whole object from a stream into a temp file (ciphertext only) and renames it into
   * place: readers see the old or the new object, never a mix or a partial one.
   */
  async putObject(bucket: string, key: string, body: AsyncIterable<Uint8Array> | Uint8Array, opts: PutOptions = {}): Promise<{ etag: string; size: number; encryption: EncryptionInfo }> {
    this.checkOpen();
    const parsed = parseObjectKey(key);
    const target = this.store.objectPath(bucket, key);
    await this.headBucket(bucket);
    if (parsed.isDirectoryMarker) {
      let n = 0;
      for await (const chunk of toIterable(body)) n += chunk.length;
      if (n > 0) throw new MountdError(ErrorCode.InvalidArgument, 'a directory marker (key ending in "/") must be empty');
      // A marker is there when its directory is: If-None-Match: * is decided atomically with the mkdir.
      const expectAbsent = opts.expect === 'absent';
      await (expectAbsent ? this.namespace.write.bind(this.namespace) : this.namespace.read.bind(this.namespace))(async () => {
        if (expectAbsent && lstatSync(target, { throwIfNoEntry: false })?.isDirectory()) {
          throw new MountdError(ErrorCode.PreconditionFailed, `${bucket}/${key}: an object exists at this name`);
        }
        await this.makeParents(bucket, parsed.segments);
      });
      await this.announce([{ bucket, key, gone: false }]);
      return { etag: EMPTY_MD5, size: 0, encryption: { kind: 'default', algorithm: 'AES-256-GCM', formatVersion: FORMAT_VERSION, fileId: '' } };
    }
    const spec = await this.resolveEncryption(bucket, opts.encryption);
    const tmp = this.store.tempPath('put');
    let ok = false;
    try {
      const sealed = await this.writeSealed(tmp, bucket, key, spec, body, { contentType: opts.contentType, headers: opts.headers, user: opts.user ?? {}, tags: opts.tags }, opts.etag);
      // Exclusive: no open of the path may load the old file and register it after the swap.
      await this.namespace.write(async () => {
        await this.makeParents(bucket, parsed.segments.slice(0, -1));
        const st = lstatSync(target, { throwIfNoEntry: false, bigint: true });
        if (st?.isDirectory()) throw new MountdError(ErrorCode.NameConflict, `${bucket}/${key}: a directory of that name exists`);
        await this.replaceAt(target, async () => {
          // Under the namespace lock and the old file's mutex: nothing can replace or change it
          // between this check and the rename.
          if (opts.expect !== undefined) this.checkExpected(bucket, key, target, opts.expect);
          renameSync(tmp, target);
        });
      });
      await this.store.fsyncDir(path.dirname(target));
      ok = true;
      await this.announce([{ bucket, key, gone: false }]);
      return { etag: sealed.etag, size: sealed.size, encryption: this.describeRecord(sealed.record, sealed.fileId, spec.kind === 'customer' ? spec.customerKey : undefined) };
    } catch (err) {
      throw fromSystemError(err, `${bucket}/${key}`);
    } finally {
      if (!ok) await fsp.rm(tmp, { force: true });
    }
  }

  /** Whether the backing store has the space to grow a file from one size to another (sealed zeros included). */
  async growthFits(fromSize: number, toSize: number): Promise<boolean> {
    const fs = await fsp.statfs(this.store.root);
    return backingSize(toSize) - backingSize(fromSize) <= fs.bavail * fs.bsize;
  }

  /**
   * The version of the object at a name (null: none), for a conditional write's `expect`: of the
   * committed file, what S3 reads (a mount writer's buffered bytes are not part of it yet).
   */
  objectVersion(bucket: string, key: string): ObjectVersion | null {
    return versionOf(lstatSync(this.store.objectPath(bucket, key), { throwIfNoEntry: false, bigint: true }));
  }

  private checkExpected(bucket: string, key: string, target: string, expect: 'absent' | ObjectVersion): void {
    const st = lstatSync(target, { throwIfNoEntry: false, bigint: true });
    const now = versionOf(st);
    const holds = expect === 'absent' ? st === undefined : now !== null && now.ino === expect.ino && now.size === expect.size && now.mtimeNs === expect.mtimeNs && now.ctimeNs === expect.ctimeNs;
    if (!holds) throw new MountdError(ErrorCode.PreconditionFailed, `${bucket}/${key}: ${expect === 'absent' ? 'an object exists at this name' : 'the object changed since its ETag was checked'}`);
  }

  /**
   * Encrypts a stream into a new file at `tmp` (ciphertext only), sealed for `bucket/sealKey`,
   * with its key record and sealed metadata, synced; the caller links it into place.
   */
  private async writeSealed(
    tmp: string,
    bucket: string,
    sealKey: string,
    spec: EncryptionSpec,
    body: AsyncIterable<Uint8Array> | Uint8Array,
    meta: Omit<ObjectMeta, 'etag'>,
    etagOverride?: string,
  ): Promise<{ etag: string; size: number; record: KeyRecord; fileId: Buffer }> {
    const { oek, record } = await this.keys.create(bucket, sealKey, spec);
    const header = encodeHeader(this.random(16));
    // Metadata that cannot fit is refused before the body is read, not after (the ETag's length is known).
    checkMetaFits(Buffer.byteLength(JSON.stringify({ etag: etagOverride ?? EMPTY_MD5, ...meta })), encodeRecord(record).length);
    // A multipart completion gives its ETag: its body needs no MD5.
    const md5 = etagOverride === undefined ? new Md5() : null;
    let size = 0;
    let fh: FdFile | undefined;
    try {
      // Open, header and close are direct system calls (see FdFile): a small PUT made three
      // trips through libuv's thread pool for them.
      fh = FdFile.open(tmp, 'wx', 0o644);
      const out = fh;
      for (let at = 0; at < header.bytes.length; ) at += writeSync(out.fd, header.bytes, at, header.bytes.length - at, at);
      let pos = HEADER_BYTES;
      let index = 0;
      // Packages are sealed into a pooled 2 MiB batch that goes out in one system call: no
      // buffer is allocated per package (see BufferPool).
      const batch = batchPool.take();
      let batchBytes = 0;
      // The disk writes the object while the rest of the body is encrypted (see Writeback).
      const writeback = new Writeback(out);
      const writeBatch = async () => {
        await writeAll(out, [batch.subarray(0, batchBytes)], pos);
        writeback.wrote(batchBytes);
        pos += batchBytes;
        batchBytes = 0;
      };
      const emit = async (plain: Buffer, final: boolean) => {
        if (batchBytes + PACKAGE_CIPHERTEXT > batch.length) await writeBatch();
        batchBytes += sealPackageInto(oek, this.random, header.bytes, index, final, plain, batch.subarray(batchBytes));
        index++;
        if (final) await writeBatch();
      };
      // Each byte of the body is copied once, into the package it belongs to. A full package
      // waits for the next byte: only the end of the stream tells whether it is the final one.
      const pkg = packagePool.take();
      try {
        let fill = 0;
        for await (const chunk of toIterable(body)) {
          md5?.update(chunk);
          size += chunk.length;
          for (let at = 0; at < chunk.length; ) {
            if (fill === PACKAGE_PLAINTEXT) {
              await emit(pkg, false);
              fill = 0;
            }
            const n = Math.min(PACKAGE_PLAINTEXT - fill, chunk.length - at);
            pkg.set(chunk.subarray(at, at + n), fill);
            fill += n;
            at += n;
          }
        }
        await emit(pkg.subarray(0, fill), true);
      } finally {
        packagePool.give(pkg);
        batchPool.give(batch);
        // No background fdatasync may outlive the file handle; its error is this PUT's.
        await writeback.settle();
      }
      const etag = etagOverride ?? (await md5!.hex());
      const recordBytes = encodeRecord(record);
      const sealedMeta = this.sealMeta(oek, header.bytes, { etag, ...meta }, recordBytes);
      await this.store.setXattr(tmp, KEY_RECORD_XATTR, recordBytes);
      await this.store.setXattr(tmp, META_XATTR, sealedMeta);
      await out.sync();
      fh = undefined;
      await out.close();
      return { etag, size, record, fileId: header.fileId };
    } finally {
      oek.fill(0);
      md5?.abort(); // a failed PUT's queued chunks (nothing once hex() ran)
      await fh?.close().catch(() => undefined);
    }
  }

  /** Metadata and encryption of an object; needs its key (SSE-C: the customer key). */
  async headObject(bucket: string, key: string, opts: { customerKey?: Uint8Array } = {}): Promise<ObjectInfo> {
    const parsed = parseObjectKey(key);
    if (parsed.isDirectoryMarker) return this.markerInfo(bucket, key);
    return this.withFile(bucket, key, opts.customerKey, async (f) => this.info(f, opts.customerKey));
  }

  /**
   * Streams an object's plaintext (a byte range if asked, `end` inclusive). The returned
   * stream holds the file open until it ends or is destroyed.
   */
  async getObject(
    bucket: string,
    key: string,
    opts: {
      range?: { start: number; end: number };
      /**
       * Decides the range from the object's metadata, taken from the same open file the body
       * streams from: headers built from `info` always describe the body. May throw (a failed
       * condition); the file is then released. `false`: no body at all (a HEAD, a 304).
       */
      plan?: (info: ObjectInfo) => { start: number; end: number } | null | false;
      customerKey?: Uint8Array;
    } = {},
  ): Promise<ObjectInfo & { body: Readable; start: number; end: number }> {
    const parsed = parseObjectKey(key);
    if (parsed.isDirectoryMarker) {
      const info = await this.markerInfo(bucket, key);
      opts.plan?.(info);
      return { ...info, body: Readable.from([]), start: 0, end: -1 };
    }
    const { f, result: info } = await this.acquireLocked(bucket, key, opts.customerKey, (file) => this.info(file, opts.customerKey));
    try {
      const range = opts.plan ? opts.plan(info) : opts.range;
      if (range === false) {
        await this.releaseFile(f);
        return { ...info, body: Readable.from([]), start: 0, end: -1 };
      }
      const start = range?.start ?? 0;
      const end = Math.min(range?.end ?? info.size - 1, info.size - 1);
      if (start < 0 || (info.size > 0 && start > end) || (info.size === 0 && start > 0)) {
        throw new MountdError(ErrorCode.InvalidArgument, 'range not satisfiable');
      }
      const engine = this;
      // Released exactly once: at the end of the stream, or when a consumer destroys it unread.
      let released = false;
      const release = async () => {
        if (released) return;
        released = true;
        await engine.releaseFile(f);
      };
      async function* chunks(): AsyncGenerator<Buffer> {
        try {
          for (let at = start; at <= end; ) {
            const n = Math.min(16 * PACKAGE_PLAINTEXT - (at % PACKAGE_PLAINTEXT), end - at + 1);
            const buf = await f.mutex.run(async () => {
              await engine.ensureKey(f, opts.customerKey);
              const b = await f.read(at, n);
              engine.keys.assertUsable(f.record);
              return b;
            });
            if (buf.length === 0) break;
            at += buf.length;
            yield buf;
          }
        } finally {
          await release();
        }
      }
      const body = Readable.from(chunks(), { objectMode: false });
      body.once('close', () => void release().catch((err: Error) => engine.log.error(`release after GET: ${err.message}`)));
      return { ...info, body, start, end };
    } catch (err) {
      await this.releaseFile(f);
      throw err;
    }
  }

  /** Deletes an object (S3 semantics: missing is fine; empty parent directories are pruned). */
  async deleteObject(bucket: string, key: string): Promise<void> {
    const parsed = parseObjectKey(key);
    await this.headBucket(bucket);
    const gone: ObjectChange[] = [];
    await this.namespace.read(async () => {
      const p = this.store.objectPath(bucket, key);
      try {
        const st = lstatSync(p);
        if (st.isDirectory()) {
          if (!parsed.isDirectoryMarker) return;
          try {
            rmdirSync(p);
            gone.push({ bucket, key: parsed.segments.join('/'), gone: true });
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'ENOTEMPTY') throw err;
          }
        } else {
          if (parsed.isDirectoryMarker) return;
          await this.replaceAt(p, async () => unlinkSync(p));
          gone.push({ bucket, key, gone: true });
        }
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return;
        throw fromSystemError(err, `${bucket}/${key}`);
      }
      for (const dir of await this.pruneEmptyParents(bucket, p)) gone.push({ bucket, key: dir, gone: true });
    });
    // After the namespace lock: what hears of it may wait on requests that need the lock.
    await this.announce(gone);
  }

  /**
   * Registers what hears of changes made through S3, after they are committed and before the
   * request is answered (the mount drops what the kernel cached of those names); the returned
   * function unregisters it. Hooks run outside the engine's locks and never fail a request.
   */
  onChange(fn: (changes: ObjectChange[]) => Promise<void>): () => void {
    this.changeHooks.add(fn);
    return () => this.changeHooks.delete(fn);
  }

  /** Tells the change hooks (for the S3 listener's own calls too: deleteBucket). */
  async announce(changes: ObjectChange[]): Promise<void> {
    if (changes.length === 0 || this.changeHooks.size === 0) return;
    for (const r of await Promise.allSettled([...this.changeHooks].map((fn) => fn(changes)))) {
      if (r.status === 'rejected') this.log.warn(`after an S3 change of ${changes[0]!.bucket}/${changes[0]!.key}: ${(r.reason as Error).message}`);
    }
  }

  async list(bucket: string, options: ListOptions = {}): Promise<ListResult> {
    await this.headBucket(bucket);
    validatePrefix(options.prefix);
    return listObjects(this.store.bucketPath(bucket), options);
  }

  /** Replaces metadata (content type, user metadata, tags) without touching data: CopyObject onto itself. */
  async updateMeta(bucket: string, key: string, update: (m: ObjectMeta) => ObjectMeta, customerKey?: Uint8Array): Promise<ObjectMeta> {
    return this.withFile(bucket, key, customerKey, async (f) => {
      const meta = update(await this.readMeta(f));
      await this.writeMeta(f, meta);
      return meta;
    });
  }

  // ---- multipart uploads (S3) ----
  // Parts are sealed files in the daemon's own directory, never plaintext. Each is sealed for
  // "bucket/key NUL upload ID NUL part N": NUL cannot occur in a key, so a part file moved into a
  // bucket never decrypts there. Complete decrypts the parts in order into putObject (fresh OEK,
  // atomic replace) and removes the upload.

  private uploadDir(uploadId: string): string {
    if (!UPLOAD_ID_RE.test(uploadId)) throw new MountdError(ErrorCode.NotFound, `upload ${uploadId}: not found`);
    return path.join(this.store.internalDir, UPLOADS_DIR, uploadId);
  }

  private static partSealKey(key: string, uploadId: string, part: number): string {
    return `${key}\0upload ${uploadId}\0part ${part}`;
  }

  private static partFile(part: number): string {
    return `part-${String(part).padStart(5, '0')}`;
  }

  /** Starts an upload; the key is chosen now (explicit spec, bucket default or daemon default). */
  async createUpload(bucket: string, key: string, opts: Omit<PutOptions, 'etag'> = {}): Promise<{ uploadId: string; encryption: EncryptionInfo }> {
    this.checkOpen();
    const parsed = parseObjectKey(key);
    if (parsed.isDirectoryMarker) throw new MountdError(ErrorCode.InvalidArgument, 'a directory marker cannot be uploaded in parts');
    await this.headBucket(bucket);
    const spec = await this.resolveEncryption(bucket, opts.encryption);
    const uploadId = Buffer.from(this.random(24)).toString('base64url');
    const dir = this.uploadDir(uploadId);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = this.store.tempPath('upload');
    try {
      // User metadata, content type and tags wait in a sealed empty file under the upload's key.
      const sealed = await this.writeSealed(tmp, bucket, Engine.partSealKey(key, uploadId, 0), spec, new Uint8Array(0), { contentType: opts.contentType, headers: opts.headers, user: opts.user ?? {}, tags: opts.tags });
      await fsp.rename(tmp, path.join(dir, 'meta'));
      const info = this.describeRecord(sealed.record, sealed.fileId, spec.kind === 'customer' ? spec.customerKey : undefined);
      const record: UploadInfo = { uploadId, bucket, key, initiatedMs: Date.now(), kind: info.kind, keyName: info.keyName };
      await fsp.writeFile(path.join(dir, 'upload.json'), JSON.stringify(record), { mode: 0o600 });
      return { uploadId, encryption: info };
    } catch (err) {
      await fsp.rm(dir, { recursive: true, force: true });
      throw fromSystemError(err, `${bucket}/${key}`);
    } finally {
      await fsp.rm(tmp, { force: true });
    }
  }

  /** The upload, checked to belong to bucket/key (NotFound otherwise). */
  async getUpload(bucket: string, key: string, uploadId: string): Promise<UploadInfo> {
    const raw = await fsp.readFile(path.join(this.uploadDir(uploadId), 'upload.json'), 'utf8').catch(() => null);
    const u = raw ? (JSON.parse(raw) as UploadInfo) : null;
    if (!u || u.bucket !== bucket || u.key !== key) throw new MountdError(ErrorCode.NotFound, `upload ${uploadId}: not found`);
    return u;
  }

  /** Unfinished uploads in a bucket, by key then start time. */
  async listUploads(bucket: string): Promise<UploadInfo[]> {
    await this.headBucket(bucket);
    const root = path.join(this.store.internalDir, UPLOADS_DIR);
    const ids = await fsp.readdir(root).catch(() => [] as string[]);
    const out: UploadInfo[] = [];
    for (const id of ids) {
      if (!UPLOAD_ID_RE.test(id)) continue;
      const raw = await fsp.readFile(path.join(root, id, 'upload.json'), 'utf8').catch(() => null);
      if (!raw) continue;
      const u = JSON.parse(raw) as UploadInfo;
      if (u.bucket === bucket) out.push(u);
    }
    const cmp = (a: string, b: string) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
    return out.sort((a, b) => cmp(a.key, b.key) || a.initiatedMs - b.initiatedMs || cmp(a.uploadId, b.uploadId));
  }

  /** The spec parts of this upload are sealed with; SSE-C uploads check the customer key against the sealed meta file. */
  private async uploadSpec(u: UploadInfo, customerKey: Uint8Array | undefined): Promise<{ spec: EncryptionSpec; meta: ObjectMeta }> {
    const meta = await this.readSealed(u, 0, customerKey, async (f) => this.readMeta(f));
    if (u.kind === 'customer') return { spec: { kind: 'customer', customerKey: customerKey! }, meta };
    if (u.kind === 'named') return { spec: { kind: 'named', keyName: u.keyName! }, meta };
    return { spec: { kind: 'default' }, meta };
  }

  /** Opens one sealed upload file (0: meta, N: part N) for `fn`, then closes it. */
  private async readSealed<T>(u: UploadInfo, part: number, customerKey: Uint8Array | undefined, fn: (f: OpenFile) => Promise<T>): Promise<T> {
    const p = path.join(this.uploadDir(u.uploadId), part === 0 ? 'meta' : Engine.partFile(part));
    const f = await this.load(p, u.bucket, Engine.partSealKey(u.key, u.uploadId, part), customerKey).catch((err) => {
      throw isMountdError(err, ErrorCode.NotFound) ? new MountdError(ErrorCode.NotFound, part === 0 ? `upload ${u.uploadId}: not found` : `part ${part}: not found`) : err;
    });
    try {
      const result = await fn(f);
      this.keys.assertUsable(f.record);
      return result;
    } finally {
      await f.close();
    }
  }

  /** Stores one part (replacing an earlier part of the same number); returns its plaintext MD5. */
  async putUploadPart(bucket: string, key: string, uploadId: string, partNumber: number, body: AsyncIterable<Uint8Array> | Uint8Array, opts: { customerKey?: Uint8Array } = {}): Promise<{ etag: string; size: number }> {
    this.checkOpen();
    if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > 10000) throw new MountdError(ErrorCode.InvalidArgument, 'part number must be 1 to 10000');
    const u = await this.getUpload(bucket, key, uploadId);
    const { spec } = await this.uploadSpec(u, opts.customerKey);
    const tmp = this.store.tempPath('part');
    try {
      const sealed = await this.writeSealed(tmp, bucket, Engine.partSealKey(key, uploadId, partNumber), spec, body, { user: {} });
      await fsp.rename(tmp, path.join(this.uploadDir(uploadId), Engine.partFile(partNumber)));
      return { etag: sealed.etag, size: sealed.size };
    } catch (err) {
      throw fromSystemError(err, `${bucket}/${key} part ${partNumber}`);
    } finally {
      await fsp.rm(tmp, { force: true });
    }
  }

  /** Parts stored so far, by number; their ETags are sealed, so this needs the upload's key. */
  async listUploadParts(bucket: string, key: string, uploadId: string, opts: { customerKey?: Uint8Array } = {}): Promise<UploadPartInfo[]> {
    const u = await this.getUpload(bucket, key, uploadId);
    const out: UploadPartInfo[] = [];
    for (const name of (await fsp.readdir(this.uploadDir(uploadId))).sort()) {
      const m = /^part-(\d{5})$/.exec(name);
      if (!m) continue;
      const partNumber = Number(m[1]);
      const part = await this.readSealed(u, partNumber, opts.customerKey, async (f) => {
        const st = await fsp.stat(f.backingPath);
        return { partNumber, etag: (await this.readMeta(f)).etag ?? '', size: f.size, mtimeMs: st.mtimeMs };
      }).catch((err) => {
        if (isMountdError(err, ErrorCode.NotFound)) return null; // replaced or aborted meanwhile
        throw err;
      });
      if (part) out.push(part);
    }
    return out;
  }

  /**
   * Joins the listed parts (ascending numbers, ETags as ListParts gives them) into the object,
   * replacing it atomically, and removes the upload.
   */
  async completeUpload(bucket: string, key: string, uploadId: string, parts: Array<{ partNumber: number; etag: string }>, opts: { customerKey?: Uint8Array; etag?: string; expect?: PutOptions['expect'] } = {}): Promise<{ etag: string; size: number; encryption: EncryptionInfo }> {
    this.checkOpen();
    const u = await this.getUpload(bucket, key, uploadId);
    const { spec, meta } = await this.uploadSpec(u, opts.customerKey);
    if (parts.length === 0) throw new MountdError(ErrorCode.InvalidArgument, 'an upload needs at least one part');
    for (let i = 1; i < parts.length; i++) {
      if (parts[i]!.partNumber <= parts[i - 1]!.partNumber) throw new MountdError(ErrorCode.InvalidArgument, 'parts must be listed in ascending order');
    }
    const engine = this;
    async function* plaintext(): AsyncGenerator<Buffer> {
      for (const { partNumber, etag } of parts) {
        const f = await engine.load(path.join(engine.uploadDir(uploadId), Engine.partFile(partNumber)), bucket, Engine.partSealKey(key, uploadId, partNumber), opts.customerKey);
        try {
          if ((await engine.readMeta(f)).etag !== etag) throw new MountdError(ErrorCode.InvalidArgument, `part ${partNumber}: ETag does not match`);
          for (let at = 0; at < f.size; ) {
            engine.keys.assertUsable(f.record);
            const buf = await f.read(at, 16 * PACKAGE_PLAINTEXT);
            if (buf.length === 0) break;
            at += buf.length;
            yield buf;
          }
        } finally {
          await f.close();
        }
      }
    }
    const result = await this.putObject(bucket, key, plaintext(), { encryption: spec, contentType: meta.contentType, headers: meta.headers, user: meta.user, tags: meta.tags, etag: opts.etag, expect: opts.expect });
    await fsp.rm(this.uploadDir(uploadId), { recursive: true, force: true });
    return result;
  }

  async abortUpload(bucket: string, key: string, uploadId: string): Promise<void> {
    await this.getUpload(bucket, key, uploadId);
    await fsp.rm(this.uploadDir(uploadId), { recursive: true, force: true });
  }

  // ---- the mount's operations ----

  /** Stat without decryption; `key` "" is the bucket itself. */
  async stat(bucket: string, key: string): Promise<Stat> {
    const st = await this.statOrNull(bucket, key);
    if (!st) throw new MountdError(ErrorCode.NotFound, `${bucket}/${key}: not found`);
    return st;
  }

  /**
   * stat, with null for a name that does not exist: the mount's lookups of missing names (a
   * create's first step, a search along PATH or include directories) make no error objects,
   * whose stack traces cost more than the lstat itself.
   */
  async statOrNull(bucket: string, key: string): Promise<Stat | null> {
    const p = key === '' ? this.store.bucketPath(bucket) : this.store.objectPath(bucket, key);
    let st;
    try {
      // Synchronous on purpose: getattr is the mount's most frequent call (libfuse answers every
      // setattr with one), and an lstat of a local backing directory takes microseconds, less
      // than the hop through libuv's thread pool.
      st = lstatSync(p, { throwIfNoEntry: false });
    } catch (err) {
      throw fromSystemError(err, `${bucket}/${key}`);
    }
    if (!st) return null;
    const base = { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, nlink: st.nlink, ino: st.ino, atimeMs: st.atimeMs, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
    if (st.isDirectory()) return { type: 'directory', size: st.size, ...base };
    if (!st.isFile()) throw new MountdError(ErrorCode.NotSupported, `${bucket}/${key}: not a regular file`);
    const open = this.files.get(p);
    let size: number;
    try {
      size = open ? open.size : plaintextSize(st.size);
    } catch {
      size = 0;
    }
    if (st.size <= backingSize(MAX_SYMLINK) && (await this.isSymlink(p, st))) {
      return { type: 'symlink', size, ...base };
    }
    return { type: 'file', size, ...base };
  }

  /**
   * Whether a small file carries the symlink mark. getattr is the hottest call of the mount, so
   * the answer is cached per inode; the mark is set once, before the file appears, and any
   * xattr change moves ctime, which invalidates the entry.
   */
  private async isSymlink(p: string, st: { dev: number; ino: number; ctimeMs: number; birthtimeMs: number }): Promise<boolean> {
    // With a birth time (statx on ext4, xfs, btrfs, tmpfs), device, inode and birth time name one
    // file for good: a reused inode number is born later. Without one, the change time guards
    // the entry (and every chmod, chown, utime or xattr change costs a new check).
    // An inode number above 2^53 (overlayfs with xino, Lustre) is rounded in a JavaScript
    // number and would name its neighbours too: no cache for those.
    if (!Number.isSafeInteger(st.ino)) return (await this.store.getXattr(p, SYMLINK_XATTR)) !== null;
    const born = st.birthtimeMs > 0;
    const id = born ? `${st.dev}:${st.ino}:${st.birthtimeMs}` : `${st.dev}:${st.ino}`;
    const hit = this.symlinkCache.get(id);
    if (hit && (born || hit.ctimeMs === st.ctimeMs)) return hit.symlink;
    const symlink = (await this.store.getXattr(p, SYMLINK_XATTR)) !== null;
    this.symlinkCache.set(id, { ctimeMs: st.ctimeMs, symlink });
    return symlink;
  }

  /** Names in a directory ("" is the bucket's top level). */
  async readdir(bucket: string, key: string): Promise<Array<{ name: string; type: EntryType }>> {
    const p = key === '' ? this.store.bucketPath(bucket) : this.store.objectPath(bucket, key);
    try {
      const out: Array<{ name: string; type: EntryType }> = [];
      for (const d of await fsp.readdir(p, { withFileTypes: true })) {
        if (d.isDirectory()) out.push({ name: d.name, type: 'directory' });
        else if (d.isFile()) out.push({ name: d.name, type: 'file' });
      }
      return out;
    } catch (err) {
      throw fromSystemError(err, `${bucket}/${key}`);
    }
  }

  async mkdir(bucket: string, key: string, mode = 0o755): Promise<void> {
    const p = this.store.objectPath(bucket, key);
    await this.namespace.read(async () => {
      try {
        mkdirSync(p, { mode });
      } catch (err) {
        throw fromSystemError(err, `${bucket}/${key}`);
      }
    });
  }

  async rmdir(bucket: string, key: string): Promise<void> {
    const p = this.store.objectPath(bucket, key);
    await this.namespace.read(async () => {
      try {
        rmdirSync(p);
      } catch (err) {
        throw fromSystemError(err, `${bucket}/${key}`);
      }
    });
  }

  /** Creates an empty object (exclusive) and returns a handle on it. */
  async create(bucket: string, key: string, opts: { mode?: number; encryption?: EncryptionSpec } = {}): Promise<number> {
    this.checkOpen();
    const parsed = parseObjectKey(key);
    if (parsed.isDirectoryMarker) throw new MountdError(ErrorCode.InvalidName, 'a file name cannot end in "/"');
    const target = this.store.objectPath(bucket, key);
    const spec = await this.resolveEncryption(bucket, opts.encryption);
    const { oek, record } = await this.keys.create(bucket, key, spec);
    let created: { fh: FdFile; header: FileHeader };
    try {
      created = (await this.writeEmptyFile(target, oek, record, opts.mode ?? 0o644, { user: {} }, true, undefined, true))!;
    } catch (err) {
      oek.fill(0);
      throw err;
    }
    // The new file's state is known: it becomes the shared open state directly, without
    // reopening, rereading and unsealing what was just written.
    const fresh = new OpenFile(target, bucket, key, created.fh, created.header, record, oek, 0, this.budget, this.random, this.tailGuard);
    fresh.mayHaveEtag = false;
    const existing = this.files.get(target);
    let f = fresh;
    if (existing) {
      await fresh.close();
      f = existing;
    } else this.files.set(target, fresh);
    f.refs++;
    const h = this.nextHandle++;
    this.handles.set(h, { file: f, customerKey: spec.kind === 'customer' ? spec.customerKey : undefined });
    return h;
  }

  /** Opens an existing object for reading and writing; handles on one object share state. */
  async open(bucket: string, key: string, opts: { truncate?: boolean; customerKey?: Uint8Array } = {}): Promise<number> {
    const f = await this.acquire(bucket, key, opts.customerKey);
    try {
      if (opts.truncate) {
        await f.mutex.run(async () => {
          await this.ensureKey(f, opts.customerKey);
          await f.truncate(0);
        });
      }
    } catch (err) {
      await this.releaseFile(f);
      throw err;
    }
    const h = this.nextHandle++;
    this.handles.set(h, { file: f, customerKey: opts.customerKey });
    return h;
  }

  /** A second handle on the file a handle has open (the same state, the same key). */
  dup(h: number): number {
    const handle = this.handle(h);
    handle.file.refs++;
    const n = this.nextHandle++;
    this.handles.set(n, { ...handle });
    return n;
  }

  /** Reads up to `length` bytes at `offset`; into `into` when given (no copy), else into a new buffer. */
  async read(h: number, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    return this.withHandle(h, (f) => f.read(offset, length, into));
  }

  async write(h: number, offset: number, data: Uint8Array): Promise<number> {
    return this.withHandle(h, (f) => f.write(offset, data));
  }

  async ftruncate(h: number, size: number): Promise<void> {
    await this.withHandle(h, (f) => f.truncate(size));
  }

  async flush(h: number): Promise<void> {
    await this.commitHandle(h, false);
  }

  async fsync(h: number): Promise<void> {
    await this.commitHandle(h, true);
  }

  /**
   * Flush or fsync of a handle. With nothing buffered there is nothing to encrypt, so no key is
   * needed: close(2) of a file whose key was disabled succeeds (its writes were encrypted and
   * written when the key locked); with writes buffered it needs the key, as any write does.
   */
  private async commitHandle(h: number, sync: boolean): Promise<void> {
    const handle = this.handle(h);
    const f = handle.file;
    await f.mutex.run(async () => {
      if (!f.isDirty && !(f.contentChanged && f.attached)) {
        if (sync) await f.syncDisk();
        return;
      }
      await this.ensureKey(f, handle.customerKey);
      await this.commit(f, sync);
      this.keys.assertUsable(f.record);
    });
  }

  handleSize(h: number): number {
    return this.handle(h).file.size;
  }

  /**
   * The attributes of the file a handle has open, whatever its name is now (it may have been
   * unlinked or replaced by a rename since): fstat(2) of an open descriptor.
   */
  handleStat(h: number): Stat {
    const f = this.handle(h).file;
    const st = f.backingStat();
    return { type: 'file', size: f.size, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, nlink: 1, ino: st.ino, atimeMs: st.atimeMs, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
  }

  /** Flushes and drops a handle; the file closes with its last handle. */
  async release(h: number): Promise<void> {
    const handle = this.handle(h);
    this.handles.delete(h);
    const f = handle.file;
    try {
      if (f.hasKey && !this.keys.isLocked(f.record.keyName)) await f.mutex.run(() => this.commit(f, false));
    } finally {
      await this.releaseFile(f);
    }
  }

  async truncate(bucket: string, key: string, size: number): Promise<void> {
    await this.withFile(bucket, key, undefined, async (f) => {
      await f.truncate(size);
      await this.commit(f, false);
    });
  }

  /** Unlinks a file (POSIX: open handles keep working on it; parents stay). */
  async unlink(bucket: string, key: string, opts: { ifIno?: number } = {}): Promise<void> {
    const p = this.store.objectPath(bucket, key);
    await this.namespace.read(async () => {
      // Direct system calls (rm -rf makes one unlink per file; see headBucket).
      let st;
      try {
        st = lstatSync(p);
      } catch (err) {
        throw fromSystemError(err, `${bucket}/${key}`);
      }
      if (st.isDirectory()) throw new MountdError(ErrorCode.IsDirectory, `${bucket}/${key}: is a directory`);
      // `ifIno`: only that file; one that replaced it since (a PUT, a rename) stays.
      if (opts.ifIno !== undefined && st.ino !== opts.ifIno) return;
      await this.replaceAt(p, async () => {
        try {
          unlinkSync(p);
        } catch (err) {
          throw fromSystemError(err, `${bucket}/${key}`);
        }
      });
    });
  }

  // chmod, chown and utimens: one direct system call each (tar and cp -a set all three on
  // every file they create; a thread-pool trip would cost more than the call).
  async chmod(bucket: string, key: string, mode: number): Promise<void> {
    const p = key === '' ? this.store.bucketPath(bucket) : this.store.objectPath(bucket, key);
    try {
      chmodSync(p, mode & 0o7777);
    } catch (err) {
      throw fromSystemError(err, `${bucket}/${key}`);
    }
  }

  async chown(bucket: string, key: string, uid: number, gid: number): Promise<void> {
    const p = key === '' ? this.store.bucketPath(bucket) : this.store.objectPath(bucket, key);
    try {
      lchownSync(p, uid, gid);
    } catch (err) {
      throw fromSystemError(err, `${bucket}/${key}`);
    }
  }

  async utimens(bucket: string, key: string, atimeMs: number, mtimeMs: number): Promise<void> {
    const p = key === '' ? this.store.bucketPath(bucket) : this.store.objectPath(bucket, key);
    try {
      utimesSync(p, atimeMs / 1000, mtimeMs / 1000);
    } catch (err) {
      throw fromSystemError(err, `${bucket}/${key}`);
    }
  }

  /** A symbolic link is an encrypted object holding its target, marked by an xattr: the target never reaches the disk in clear. */
  async symlink(bucket: string, key: string, target: string): Promise<void> {
    const bytes = Buffer.from(target, 'utf8');
    if (bytes.length === 0 || bytes.length > MAX_SYMLINK || target.includes('\0')) {
      throw new MountdError(ErrorCode.InvalidArgument, 'symlink target must be 1 to 4095 bytes without NUL');
    }
    const p = this.store.objectPath(bucket, key);
    const { oek, record } = await this.keys.create(bucket, key, await this.resolveEncryption(bucket, undefined));
    try {
      await this.writeEmptyFile(p, oek, record, 0o777, { user: {} }, true, bytes);
    } finally {
      oek.fill(0);
    }
  }

  async readlink(bucket: string, key: string): Promise<string> {
    const st = await this.stat(bucket, key);
    if (st.type !== 'symlink') throw new MountdError(ErrorCode.InvalidArgument, `${bucket}/${key}: not a symbolic link`);
    return this.withFile(bucket, key, undefined, async (f) => (await f.read(0, f.size)).toString('utf8'));
  }

  async getUserMeta(bucket: string, key: string): Promise<Record<string, string>> {
    return this.withFile(bucket, key, undefined, async (f) => (await this.readMeta(f)).user);
  }

  async setUserMeta(bucket: string, key: string, name: string, value: string | null): Promise<void> {
    await this.updateMeta(bucket, key, (m) => {
      const user = { ...m.user };
      if (value === null) {
        if (!(name in user)) throw new MountdError(ErrorCode.NotFound, `metadata ${name}: not found`);
        delete user[name];
      } else user[name] = value;
      return { ...m, user };
    });
  }

  /** Read-only view of an object's encryption: never key material. */
  async encryptionInfo(bucket: string, key: string): Promise<EncryptionInfo & { keyUsable: boolean; keyError?: string }> {
    const p = this.store.objectPath(bucket, key);
    const header = await headerAt(p).catch((err) => {
      throw fromSystemError(err, `${bucket}/${key}`);
    });
    const raw = await this.store.getXattr(p, KEY_RECORD_XATTR);
    if (!raw) throw new MountdError(ErrorCode.Integrity, `${bucket}/${key}: no key record`);
    const record = decodeRecord(raw);
    const info = this.describeRecord(record, header.fileId);
    if (record.kind === KeyKind.Customer) return { ...info, keyUsable: false, keyError: 'customer-provided key required' };
    try {
      (await this.keys.unseal(record, bucket, key)).fill(0);
      return { ...info, keyUsable: true };
    } catch (err) {
      return { ...info, keyUsable: false, keyError: isMountdError(err) ? err.code : 'error' };
    }
  }

  // ---- rename ----

  /**
   * Renames a file or a directory (replacing a target file or empty directory, as rename(2)).
   * Every file moved gets its OEK re-sealed for the new path; new records go to the intent
   * journal first, so a crash at any step is finished at the next start.
   */
  async rename(fromBucket: string, fromKey: string, toBucket: string, toKey: string): Promise<void> {
    this.checkOpen();
    const from = this.store.objectPath(fromBucket, fromKey);
    const to = this.store.objectPath(toBucket, toKey);
    if (from === to) return;
    if (to.startsWith(from + path.sep)) throw new MountdError(ErrorCode.InvalidArgument, 'cannot move a directory into itself');
    await this.namespace.write(async () => {
      const st = await fsp.lstat(from).catch((err) => {
        throw fromSystemError(err, `${fromBucket}/${fromKey}`);
      });
      const parent = await fsp.stat(path.dirname(to)).catch((err) => {
        throw fromSystemError(err, `${toBucket}/${toKey}`);
      });
      if (!parent.isDirectory()) throw new MountdError(ErrorCode.NotDirectory, `${toBucket}/${toKey}: parent is not a directory`);
      const target = await fsp.lstat(to).catch(() => null);
      if (target) {
        if (st.isDirectory() && !target.isDirectory()) throw new MountdError(ErrorCode.NotDirectory, `${toBucket}/${toKey}: not a directory`);
        if (!st.isDirectory() && target.isDirectory()) throw new MountdError(ErrorCode.IsDirectory, `${toBucket}/${toKey}: is a directory`);
      }
      const rels = st.isDirectory() ? await regularFilesBelow(from) : [''];
      const entries: RenameIntent['entries'] = [];
      let done = 0;
      const started = Date.now();
      for (const rel of rels) {
        const fk = rel === '' ? fromKey : `${fromKey}/${rel}`;
        const tk = rel === '' ? toKey : `${toKey}/${rel}`;
        const open = this.files.get(path.join(from, rel));
        const record = open ? open.record : await this.readRecord(path.join(from, rel), `${fromBucket}/${fk}`);
        const next = await this.keys.reseal(record, { bucket: fromBucket, key: fk }, { bucket: toBucket, key: tk });
        // The record grows with the new name, the sealed metadata stays: both must still fit in
        // the attribute block, or setxattr fails after the move (ENOSPC) and leaves the file
        // unreadable, with a journal that cannot be replayed either.
        await this.checkRecordFits(path.join(from, rel), next, `${toBucket}/${tk}`);
        entries.push({ rel, record: encodeRecord(next).toString('base64') });
        if (++done % 1000 === 0) this.log.info(`rename ${fromBucket}/${fromKey}: re-sealed ${done}/${rels.length} files (${Math.round(done / ((Date.now() - started) / 1000 || 1))}/s)`);
      }
      const intent: RenameIntent = { version: 1, op: 'rename', from: { bucket: fromBucket, key: fromKey }, to: { bucket: toBucket, key: toKey }, entries };
      const id = await this.journal.write(intent);
      this.faults.afterRenameJournal?.();
      try {
        await this.replaceAt(to, () => fsp.rename(from, to));
      } catch (err) {
        await this.journal.remove(id);
        throw fromSystemError(err, `${toBucket}/${toKey}`);
      }
      this.faults.afterRenameMove?.();
      // The move is done and stays done: a record that cannot be written now (a disk error) is
      // kept for the next start rather than left in a journal that would move things again.
      await this.applyIntentKeeping(id, intent);
      // Open files follow their path: new location, new record.
      for (const [p, f] of [...this.files]) {
        if (p !== from && !p.startsWith(from + path.sep)) continue;
        const rel = p === from ? '' : path.relative(from, p);
        const entry = entries.find((e) => e.rel === rel);
        this.files.delete(p);
        f.backingPath = rel === '' ? to : path.join(to, rel);
        f.bucket = toBucket;
        f.key = rel === '' ? toKey : `${toKey}/${rel.split(path.sep).join('/')}`;
        if (entry) f.record = decodeRecord(Buffer.from(entry.record, 'base64'));
        this.files.set(f.backingPath, f);
      }
      await this.store.fsyncDir(path.dirname(from));
      if (path.dirname(from) !== path.dirname(to)) await this.store.fsyncDir(path.dirname(to));
      await this.journal.remove(id);
    });
  }

  /**
   * A new key record (a rename's longer name, a rotation's longer key name) must still fit beside
   * the file's sealed metadata in its attribute block: else setxattr would fail (ENOSPC) after
   * the fact. MetadataTooLarge before anything changes instead.
   */
  private async checkRecordFits(p: string, next: KeyRecord, what: string): Promise<void> {
    const metaBytes = (await this.store.getXattr(p, META_XATTR))?.length ?? 0;
    const recordBytes = encodeRecord(next).length;
    if (metaBytes + recordBytes > XATTR_BUDGET) {
      throw new MountdError(ErrorCode.MetadataTooLarge, `${what}: the ${metaBytes}-byte sealed metadata does not fit beside the ${recordBytes}-byte key record in ${XATTR_BUDGET} bytes`);
    }
  }

  /** Writes every entry's new key record; `onError` takes an entry that failed, and the others go on. */
  private async applyIntent(intent: RenameIntent, onError: (entry: RenameIntent['entries'][number], err: unknown) => void): Promise<void> {
    const to = this.store.objectPath(intent.to.bucket, intent.to.key);
    for (const e of intent.entries) {
      const p = e.rel === '' ? to : path.join(to, e.rel);
      try {
        const exists = await fsp.lstat(p).catch(() => null);
        if (!exists?.isFile()) continue;
        // A kept entry's file may have been replaced (an S3 PUT, a rename over it) since the
        // start that kept it: the old record must not land on the new file.
        if (e.fileId !== undefined && (await this.fileIdAt(p)) !== e.fileId) {
          this.log.warn(`an interrupted rename to ${intent.to.bucket}/${intent.to.key}: ${e.rel || '(the file itself)'} is another file now; its kept key record is dropped`);
          continue;
        }
        await this.store.setXattr(p, KEY_RECORD_XATTR, Buffer.from(e.record, 'base64'));
      } catch (err) {
        onError(e, err);
      }
    }
  }

  /**
   * Finishes renames a crash interrupted. A file whose new record cannot be written (a disk
   * error, say) does not keep the daemon from starting: it is logged, reads as EIO meanwhile, and
   * its entry is kept in `DATA/.mountd/journal/ID.failed`, which the next start tries again.
   */
  /**
   * Writes the records of a rename whose move is done. Entries that fail are logged and kept as
   * `ID.failed` (the move marked done, each entry with its file's id) for the next start; the
   * caller removes the journal itself. Returns the entries that failed.
   */
  private async applyIntentKeeping(id: string, intent: RenameIntent): Promise<RenameIntent['entries']> {
    const to = this.store.objectPath(intent.to.bucket, intent.to.key);
    const failed: RenameIntent['entries'] = [];
    await this.applyIntent(intent, (e, err) => {
      failed.push(e);
      this.log.error(`a rename to ${intent.to.bucket}/${intent.to.key}: the key record of ${e.rel || '(the file itself)'} could not be written (${(err as Error).message}); it reads as EIO until a later start writes it`);
    });
    if (failed.length > 0) {
      // Each kept entry names the file it is for (see applyIntent).
      for (const e of failed) e.fileId ??= await this.fileIdAt(e.rel === '' ? to : path.join(to, e.rel));
      await this.journal.keepFailed(id, { ...intent, moved: true, entries: failed });
    }
    return failed;
  }

  private async replayJournal(): Promise<void> {
    for (const { id, intent } of await this.journal.pending()) {
      const from = this.store.objectPath(intent.from.bucket, intent.from.key);
      const to = this.store.objectPath(intent.to.bucket, intent.to.key);
      // A kept intent's move is done: what is at `from` now is another object.
      if (!intent.moved && (await fsp.lstat(from).catch(() => null))) await fsp.rename(from, to);
      const failed = await this.applyIntentKeeping(id, intent);
      await this.journal.remove(id);
      this.log.info(`finished an interrupted rename of ${intent.from.bucket}/${intent.from.key} to ${intent.to.bucket}/${intent.to.key} (${intent.entries.length - failed.length} of ${intent.entries.length} files)`);
    }
  }

  // ---- keys ----

  async createKey(name: string): Promise<void> {
    await this.keyService.createKey(name);
  }

  async listKeys(prefix = ''): Promise<KeyInfo[]> {
    return this.keyService.listKeys(prefix);
  }

  /**
   * Locks every file under the key before returning: new operations are refused at once,
   * buffered writes are encrypted and written (nothing is lost), then every unsealed key and
   * decrypted package in memory is dropped and the key server disables the key.
   */
  async disableKey(name: string): Promise<void> {
    this.keys.lock(name);
    await this.dropKeysOf(name);
    const hooks = await this.runKeyLockHooks(name);
    try {
      await this.keyService.disableKey(name);
    } catch (err) {
      // The key server refused (or has no such key): nothing was disabled, so nothing stays locked.
      this.keys.unlock(name);
      throw err;
    }
    if (hooks) throw hooks;
  }

  /**
   * Registers what runs when a key locks (disable, delete), after the engine dropped its own keys
   * and before the lock returns; the returned function unregisters it. A hook that rejects makes
   * the lock report an error (the key is locked all the same).
   */
  onKeyLock(fn: (name: string) => Promise<void>): () => void {
    this.keyLockHooks.add(fn);
    return () => this.keyLockHooks.delete(fn);
  }

  private async runKeyLockHooks(name: string): Promise<MountdError | null> {
    const results = await Promise.allSettled([...this.keyLockHooks].map((fn) => fn(name)));
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => (r.reason as Error).message);
    if (failed.length === 0) return null;
    this.log.error(`key ${name}: ${failed.join('; ')}`);
    return new MountdError(ErrorCode.Internal, `key ${name} is locked, but ${failed.join('; ')}`);
  }

  async enableKey(name: string): Promise<void> {
    await this.keyService.enableKey(name);
    this.keys.unlock(name);
  }

  /** Crypto-erase: after this, files under the key cannot be decrypted by anyone. */
  async deleteKey(name: string): Promise<void> {
    this.keys.lock(name);
    let hooks: MountdError | null;
    try {
      await this.dropKeysOf(name);
      hooks = await this.runKeyLockHooks(name);
      await this.keyService.deleteKey(name);
    } finally {
      this.keys.unlock(name);
    }
    if (hooks) throw hooks;
  }

  /**
   * Re-wraps every file under key `from` to key `to`: a new DEK ciphertext under `to`, a new
   * seal of the same OEK; data is not touched. Each file's record is replaced by one setxattr,
   * so a crash leaves every file readable under one key or the other, and running the rotation
   * again resumes it (files already under `to` are skipped).
   */
  async rotateKey(opts: RotateOptions): Promise<RotateProgress> {
    this.checkOpen();
    if (opts.from === opts.to) throw new MountdError(ErrorCode.InvalidArgument, 'rotation needs two different keys');
    const target = await this.keyService.describeKey(opts.to);
    if (!target.enabled || this.keys.isLocked(opts.to)) throw new MountdError(ErrorCode.KeyDisabled, `key ${opts.to} is disabled`);
    const started = Date.now();
    const p: RotateProgress = { rotated: 0, skipped: 0, failed: 0, scanned: 0, elapsedMs: 0, rate: 0, done: false, errors: [] };
    let lastReport = started;
    const report = (done: boolean) => {
      p.elapsedMs = Date.now() - started;
      p.rate = p.rotated / Math.max(p.elapsedMs / 1000, 0.001);
      p.done = done;
      opts.onProgress?.({ ...p, errors: [...p.errors] });
    };
    const buckets = opts.bucket ? [opts.bucket] : (await this.listBuckets()).map((b) => b.name);
    for (const bucket of buckets) {
      const root = this.store.bucketPath(bucket);
      for (const rel of await regularFilesBelow(root)) {
        if (opts.signal?.aborted) {
          report(false);
          throw new MountdError(ErrorCode.Busy, `rotation interrupted after ${p.rotated} files; run it again to resume`);
        }
        p.scanned++;
        const key = rel.split(path.sep).join('/');
        const abs = path.join(root, rel);
        try {
          await this.namespace.read(async () => {
            const raw = await this.store.getXattr(abs, KEY_RECORD_XATTR);
            if (!raw) {
              // Deleted or renamed since the listing (a rename re-seals it under its key): nothing to do here.
              if (!(await fsp.lstat(abs).catch(() => null))) {
                p.skipped++;
                return;
              }
              throw new MountdError(ErrorCode.Integrity, 'no key record');
            }
            const record = decodeRecord(raw);
            if (record.kind === KeyKind.Customer || record.keyName !== opts.from) {
              p.skipped++;
              return;
            }
            const next = await this.keys.rewrap(record, bucket, key, opts.to);
            await this.checkRecordFits(abs, next, `${bucket}/${key}`);
            const open = this.files.get(abs);
            const apply = async () => {
              await this.store.setXattr(abs, KEY_RECORD_XATTR, encodeRecord(next));
              if (open) open.record = next;
            };
            if (open) await open.mutex.run(apply);
            else await apply();
            p.rotated++;
          });
        } catch (err) {
          p.failed++;
          if (p.errors.length < 20) p.errors.push(`${bucket}/${key}: ${(err as Error).message}`);
        }
        if (Date.now() - lastReport >= 1000) {
          lastReport = Date.now();
          report(false);
        }
      }
    }
    await this.rotateUploads(opts, p);
    report(true);
    this.log.info(formatRotateProgress({ ...p, done: true }));
    return p;
  }

  /**
   * Authenticates every file (header, key record, metadata, every package), as reads would,
   * changing nothing: `mountctl verify`. Damage is reported per file, not thrown.
   */
  async verify(opts: VerifyOptions = {}): Promise<VerifyProgress> {
    this.checkOpen();
    const p = await verifyStore(
      {
        listBuckets: () => this.listBuckets(),
        headBucket: (b) => this.headBucket(b),
        keysOf: (b, prefix) => filesUnder(this.store.bucketPath(b), prefix),
        statOrNull: (b, k) => this.statOrNull(b, k),
        readlink: (b, k) => this.readlink(b, k),
        getObject: (b, k) => this.getObject(b, k),
        // An empty file's one package is never read by a GET: authenticate it (and so the header).
        checkEmpty: (b, k) => this.withFile(b, k, undefined, (f) => f.authenticatePackage(0)),
      },
      opts,
    );
    const line = `verification${opts.bucket !== undefined ? ` of ${opts.bucket}/${opts.prefix ?? ''}` : ''}: ${p.scanned} files, ${p.ok} ok, ${p.failed} damaged, ${p.lockedCount} locked, ${p.customerKey} SSE-C`;
    if (p.failed > 0) this.log.warn(line);
    else this.log.info(line);
    return p;
  }

  /**
   * Rotation of unfinished multipart uploads: the sealed meta file and every part under `from`
   * are re-wrapped like objects, and the upload's key becomes `to`, so that parts stored later
   * are sealed under `to` too (a part stored under `from` meanwhile is caught by the next run).
   */
  private async rotateUploads(opts: RotateOptions, p: RotateProgress): Promise<void> {
    const root = path.join(this.store.internalDir, UPLOADS_DIR);
    for (const id of await fsp.readdir(root).catch(() => [] as string[])) {
      if (!UPLOAD_ID_RE.test(id)) continue;
      const dir = path.join(root, id);
      const raw = await fsp.readFile(path.join(dir, 'upload.json'), 'utf8').catch(() => null);
      if (!raw) continue;
      const u = JSON.parse(raw) as UploadInfo;
      if (opts.bucket !== undefined && u.bucket !== opts.bucket) continue;
      if (u.kind === 'named' && u.keyName === opts.from) {
        await fsp.writeFile(path.join(dir, 'upload.json'), JSON.stringify({ ...u, keyName: opts.to }), { mode: 0o600 });
      }
      for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
        const m = /^part-(\d{5})$/.exec(name);
        if (name !== 'meta' && !m) continue;
        p.scanned++;
        const abs = path.join(dir, name);
        const sealKey = Engine.partSealKey(u.key, id, m ? Number(m[1]) : 0);
        try {
          const rawRecord = await this.store.getXattr(abs, KEY_RECORD_XATTR);
          if (!rawRecord) {
            p.skipped++; // completed or aborted since the listing
            continue;
          }
          const record = decodeRecord(rawRecord);
          if (record.kind === KeyKind.Customer || record.keyName !== opts.from) {
            p.skipped++;
            continue;
          }
          await this.store.setXattr(abs, KEY_RECORD_XATTR, encodeRecord(await this.keys.rewrap(record, u.bucket, sealKey, opts.to)));
          p.rotated++;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
            p.skipped++;
            continue;
          }
          p.failed++;
          if (p.errors.length < 20) p.errors.push(`upload ${id} of ${u.bucket}/${u.key}, ${name}: ${(err as Error).message}`);
        }
      }
    }
  }

  /**
   * Removes unfinished multipart uploads started more than `maxAgeMs` ago (S3's
   * AbortIncompleteMultipartUpload, for the whole store); returns how many went.
   */
  async expireUploads(maxAgeMs: number, now = Date.now()): Promise<number> {
    const root = path.join(this.store.internalDir, UPLOADS_DIR);
    let removed = 0;
    for (const id of await fsp.readdir(root).catch(() => [] as string[])) {
      if (!UPLOAD_ID_RE.test(id)) continue;
      const dir = path.join(root, id);
      const raw = await fsp.readFile(path.join(dir, 'upload.json'), 'utf8').catch(() => null);
      // An upload without its record is a createUpload that crashed half way: judge it by its directory.
      const started = raw ? (JSON.parse(raw) as UploadInfo).initiatedMs : ((await fsp.stat(dir).catch(() => null))?.mtimeMs ?? now);
      if (now - started < maxAgeMs) continue;
      await fsp.rm(dir, { recursive: true, force: true });
      removed++;
    }
    if (removed > 0) this.log.info(`removed ${removed} unfinished multipart upload(s) older than ${Math.round(maxAgeMs / 3_600_000)} h`);
    return removed;
  }

  private async dropKeysOf(name: string): Promise<void> {
    const all = new Set([...this.files.values(), ...[...this.handles.values()].map((h) => h.file)]);
    for (const f of all) {
      if (f.record.kind === KeyKind.Customer || f.record.keyName !== name) continue;
      await f.mutex.run(async () => {
        if (f.hasKey) {
          try {
            await this.commit(f, false);
          } catch (err) {
            this.log.error(`flush before locking ${f.bucket}/${f.key} failed: ${(err as Error).message}`);
          }
        }
        f.dropKey();
      });
    }
  }

  // ---- internals ----

  private checkOpen(): void {
    if (this.closed) throw new MountdError(ErrorCode.Busy, 'engine is closed');
  }

  private handle(h: number): Handle {
    const handle = this.handles.get(h);
    if (!handle) throw new MountdError(ErrorCode.BadHandle, `no open handle ${h}`);
    return handle;
  }

  private async withHandle<T>(h: number, fn: (f: OpenFile) => Promise<T>): Promise<T> {
    const handle = this.handle(h);
    const f = handle.file;
    return f.mutex.run(async () => {
      await this.ensureKey(f, handle.customerKey);
      const result = await fn(f);
      // A disable that landed while this operation waited on I/O wins: its result is withheld.
      this.keys.assertUsable(f.record);
      return result;
    });
  }

  private async withFile<T>(bucket: string, key: string, customerKey: Uint8Array | undefined, fn: (f: OpenFile) => Promise<T>): Promise<T> {
    const { f, result } = await this.acquireLocked(bucket, key, customerKey, fn);
    await this.releaseFile(f);
    return result;
  }

  /**
   * acquire, then `fn` under the file's lock. A put or rename may replace the path between the
   * two: the file is then detached, and its metadata (read by path) is another object's, so the
   * path is looked up again. The caller releases the file.
   */
  private async acquireLocked<T>(bucket: string, key: string, customerKey: Uint8Array | undefined, fn: (f: OpenFile) => Promise<T>): Promise<{ f: OpenFile; result: T }> {
    for (let attempt = 0; ; attempt++) {
      const f = await this.acquire(bucket, key, customerKey);
      let out: { result: T } | null;
      try {
        out = await f.mutex.run(async () => {
          if (!f.attached) return null;
          await this.ensureKey(f, customerKey);
          const result = await fn(f);
          this.keys.assertUsable(f.record);
          return { result };
        });
      } catch (err) {
        await this.releaseFile(f);
        throw err;
      }
      if (out) return { f, result: out.result };
      await this.releaseFile(f);
      if (attempt >= 8) throw new MountdError(ErrorCode.Busy, `${bucket}/${key}: replaced again and again while being opened; retry`);
    }
  }

  /**
   * Replaces or removes the file at `p` (by `swap`) and detaches the open file that was there, under that
   * file's lock: nothing holding it (a flush removing the ETag, a metadata update) may write
   * its metadata by path onto the file that replaced it.
   */
  private async replaceAt(p: string, swap: () => Promise<void>): Promise<void> {
    const old = this.files.get(p);
    const run = async () => {
      await swap();
      this.detach(p);
    };
    if (old) await old.mutex.run(run);
    else await run();
  }

  /** Checks the key lock; re-unseals a key dropped by an earlier disable once the key is usable again. */
  private async ensureKey(f: OpenFile, customerKey: Uint8Array | undefined): Promise<void> {
    this.keys.assertUsable(f.record);
    if (!f.hasKey) f.setKey(await this.keys.unseal(f.record, f.bucket, f.key, customerKey));
  }

  /** Flushes buffered writes; the first change makes the stored ETag stale, so it is removed. */
  private async commit(f: OpenFile, sync: boolean): Promise<void> {
    if (sync) await f.sync();
    else await f.flush();
    // contentChanged stays set until the ETag is dealt with, so that flushes forced inside
    // write() by the dirty budget count too. A detached file's path names another object now,
    // whose metadata this file's key cannot open and must not touch.
    if (f.contentChanged && f.attached) {
      if (f.mayHaveEtag) {
        const meta = await this.readMeta(f);
        if (meta.etag !== undefined) {
          delete meta.etag;
          await this.writeMeta(f, meta);
        }
        f.mayHaveEtag = false;
      }
      f.contentChanged = false;
    }
  }

  /** Takes a reference on the object's shared open state, opening and unsealing it if needed. */
  private async acquire(bucket: string, key: string, customerKey: Uint8Array | undefined): Promise<OpenFile> {
    this.checkOpen();
    const p = this.store.objectPath(bucket, key);
    return this.namespace.read(async () => {
      for (;;) {
        const existing = this.files.get(p);
        if (existing) {
          // A file already open under a disabled key opens no further (as one that was not open).
          this.keys.assertUsable(existing.record);
          existing.refs++;
          if (existing.record.kind === KeyKind.Customer) {
            // Every SSE-C access must present the right key, even when the file is already open.
            try {
              (await this.keys.unseal(existing.record, bucket, key, customerKey)).fill(0);
            } catch (err) {
              await this.releaseFile(existing);
              throw err;
            }
          }
          return existing;
        }
        const pending = this.loading.get(p);
        if (pending) {
          await pending.catch(() => undefined);
          continue;
        }
        const load = this.load(p, bucket, key, customerKey);
        this.loading.set(p, load);
        try {
          const f = await load;
          const raced = this.files.get(p);
          if (raced) {
            // A create registered this path while the load ran: one shared state per file.
            await f.close();
            raced.refs++;
            return raced;
          }
          f.refs++;
          this.files.set(p, f);
          return f;
        } finally {
          this.loading.delete(p);
        }
      }
    });
  }

  private async load(p: string, bucket: string, key: string, customerKey: Uint8Array | undefined, attempt = 0): Promise<OpenFile> {
    let fh: FdFile;
    try {
      fh = FdFile.openNoAtime(p, fsConstants.O_RDWR | fsConstants.O_NOFOLLOW);
    } catch (err) {
      throw fromSystemError(err, `${bucket}/${key}`);
    }
    try {
      // fstat, the 32-byte header and lstat: direct system calls (md5sum or git status open
      // thousands of files; a thread-pool trip each would cost more than the calls).
      const st = fstatSync(fh.fd);
      if (!st.isFile()) throw new MountdError(ErrorCode.IsDirectory, `${bucket}/${key}: is a directory`);
      const hb = Buffer.alloc(HEADER_BYTES);
      readSync(fh.fd, hb, 0, HEADER_BYTES, 0);
      const header = decodeHeader(hb);
      const record = await this.readRecord(p, `${bucket}/${key}`).catch((err: unknown) => err as Error);
      // The record is read by path: a put or rename that replaced the file since the open gave
      // the new file's record (or none), which does not open this file's data. Same file, or again.
      const now = lstatSync(p, { throwIfNoEntry: false }) ?? null;
      // Inode numbers above 2^53 are rounded in a number: compared exactly then.
      const moved = !now || now.ino !== st.ino || now.dev !== st.dev || (!Number.isSafeInteger(st.ino) && !sameInode(fh.fd, p));
      if (moved) {
        await fh.close().catch(() => undefined);
        if (attempt >= 8) throw new MountdError(ErrorCode.Busy, `${bucket}/${key}: replaced while it was being opened; retry`);
        return this.load(p, bucket, key, customerKey, attempt + 1);
      }
      if (record instanceof Error) throw record;
      const size = plaintextSize(st.size);
      const oek = await this.keys.unseal(record, bucket, key, customerKey);
      return new OpenFile(p, bucket, key, fh, header, record, oek, size, this.budget, this.random, this.tailGuard);
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
  }

  /** The file id in a data file's header (hex), or undefined when it cannot be read. */
  private async fileIdAt(p: string): Promise<string | undefined> {
    return headerAt(p).then(
      (h) => h.fileId.toString('hex'),
      () => undefined,
    );
  }

  private async readRecord(p: string, what: string): Promise<KeyRecord> {
    const raw = await this.store.getXattr(p, KEY_RECORD_XATTR);
    if (!raw) throw new MountdError(ErrorCode.Integrity, `${what}: no key record`);
    return decodeRecord(raw);
  }

  private async releaseFile(f: OpenFile): Promise<void> {
    f.refs--;
    if (f.refs > 0) return;
    if (this.files.get(f.backingPath) === f) this.files.delete(f.backingPath);
    await f.mutex.run(async () => {
      if (f.refs > 0) return;
      if (f.attached && f.hasKey && f.isDirty) {
        try {
          await this.commit(f, false);
        } catch (err) {
          this.log.error(`flush of ${f.bucket}/${f.key} on close failed: ${(err as Error).message}`);
        }
      }
      await f.close();
    });
  }

  /** The path now names another file (replaced or unlinked): open handles keep the old one. */
  private detach(p: string): void {
    const f = this.files.get(p);
    if (f) {
      f.attached = false;
      this.files.delete(p);
    }
  }

  private metaAad(header: Uint8Array): Buffer {
    return Buffer.concat([Buffer.from('mountd object metadata v1\0', 'utf8'), header]);
  }

  /**
   * Seals an object's metadata. It shares the file's extended-attribute space with the key
   * record, and ext4 (4 KiB blocks, no ea_inode) holds all of a file's attributes in one block:
   * metadata that would not fit beside the record is refused here, before anything is written,
   * rather than failing in setxattr as ENOSPC (which would read as a full disk).
   */
  private sealMeta(oek: Buffer, header: Uint8Array, meta: ObjectMeta, record: Uint8Array): Buffer {
    const json = Buffer.from(JSON.stringify(meta), 'utf8');
    checkMetaFits(json.length, record.length);
    return sealMetadata(oek, this.random(12), json, this.metaAad(header));
  }

  private async readMeta(f: OpenFile): Promise<ObjectMeta> {
    const raw = await this.store.getXattr(f.backingPath, META_XATTR);
    if (!raw) return { user: {} };
    const plain = openMetadata(f.objectKey(), raw, this.metaAad(f.header.bytes));
    return JSON.parse(plain.toString('utf8')) as ObjectMeta;
  }

  private async writeMeta(f: OpenFile, meta: ObjectMeta): Promise<void> {
    if (meta.etag !== undefined) f.mayHaveEtag = true;
    await this.store.setXattr(f.backingPath, META_XATTR, this.sealMeta(f.objectKey(), f.header.bytes, meta, encodeRecord(f.record)));
  }

  private async info(f: OpenFile, customerKey: Uint8Array | undefined): Promise<ObjectInfo> {
    let st;
    try {
      st = statSync(f.backingPath, { throwIfNoEntry: false });
    } catch {
      st = undefined; // the open file answers for itself; only its mtime is missing then
    }
    return {
      bucket: f.bucket,
      key: f.key,
      size: f.size,
      mtimeMs: st?.mtimeMs ?? Date.now(),
      meta: await this.readMeta(f),
      encryption: this.describeRecord(f.record, f.header.fileId, customerKey),
    };
  }

  private async markerInfo(bucket: string, key: string): Promise<ObjectInfo> {
    let st;
    try {
      st = statSync(this.store.objectPath(bucket, key));
    } catch (err) {
      throw fromSystemError(err, `${bucket}/${key}`);
    }
    if (!st.isDirectory()) throw new MountdError(ErrorCode.NotFound, `${bucket}/${key}: not found`);
    return { bucket, key, size: 0, mtimeMs: st.mtimeMs, meta: { etag: EMPTY_MD5, user: {} }, encryption: { kind: 'default', algorithm: 'AES-256-GCM', formatVersion: FORMAT_VERSION, fileId: '' } };
  }

  private describeRecord(record: KeyRecord, fileId: Buffer, customerKey?: Uint8Array): EncryptionInfo {
    const kind = record.kind === KeyKind.Customer ? 'customer' : record.kind === KeyKind.Named ? 'named' : 'default';
    return {
      kind,
      keyName: record.kind === KeyKind.Customer ? undefined : record.keyName,
      customerKeyMd5: customerKey ? customerKeyMd5(customerKey) : undefined,
      algorithm: 'AES-256-GCM',
      formatVersion: FORMAT_VERSION,
      fileId: fileId.toString('hex'),
    };
  }

  /** Writes header + one final package (empty, or `content`), then links it into place atomically. */
  private async writeEmptyFile(
    target: string,
    oek: Buffer,
    record: KeyRecord,
    mode: number,
    meta: ObjectMeta,
    exclusive: boolean,
    content?: Buffer,
    keepOpen = false,
  ): Promise<{ fh: FdFile; header: FileHeader } | undefined> {
    const header = encodeHeader(this.random(16));
    const tmp = this.store.tempPath('create');
    let keep: FdFile | undefined;
    let born: { dev: number; ino: number; ctimeMs: number; birthtimeMs: number } | undefined;
    try {
      const fh = FdFile.open(tmp, 'wx+', 0o600);
      try {
        const plain = content ?? Buffer.alloc(0);
        const nonce = this.random(PACKAGE_NONCE);
        const sealed = gcmSeal(oek, nonce, plain, packageAad(header.bytes, 0, true));
        // A few dozen bytes and a mode: direct system calls, not trips through the thread pool
        // (this is on the path of every file a `tar x` or `cp -r` creates).
        const first = Buffer.concat([header.bytes, Buffer.from(nonce), sealed]);
        for (let at = 0; at < first.length; ) at += writeSync(fh.fd, first, at, first.length - at, at);
        fchmodSync(fh.fd, mode & 0o7777);
        born = fstatSync(fh.fd);
        // No fsync: like any new file, it is durable after fsync(2) of it (a mount fsync) and not before.
        if (keepOpen) keep = fh;
      } finally {
        if (!keep) await fh.close();
      }
      const recordBytes = encodeRecord(record);
      await this.store.setXattr(tmp, KEY_RECORD_XATTR, recordBytes);
      // A created file gets no ETag until S3 writes it: the mount changes it right away, and a
      // missing ETag spares the first flush a metadata rewrite.
      if (content) {
        const etag = createHash('md5').update(content).digest('hex');
        await this.store.setXattr(tmp, META_XATTR, this.sealMeta(oek, header.bytes, { ...meta, etag }, recordBytes));
      }
      if (content) await this.store.setXattr(tmp, SYMLINK_XATTR, Buffer.from('1'));
      await this.namespace.read(async () => {
        if (exclusive) {
          linkSync(tmp, target);
        } else {
          renameSync(tmp, target);
          this.detach(target);
        }
      });
      // The getattr that follows a create need not read the mark back (see isSymlink).
      if (born.birthtimeMs > 0 && Number.isSafeInteger(born.ino)) this.symlinkCache.set(`${born.dev}:${born.ino}:${born.birthtimeMs}`, { ctimeMs: born.ctimeMs, symlink: content !== undefined });
    } catch (err) {
      await keep?.close().catch(() => undefined);
      throw fromSystemError(err, target.slice(this.store.root.length + 1));
    } finally {
      try {
        unlinkSync(tmp);
      } catch {
        // renamed into place, or never created
      }
    }
    return keep ? { fh: keep, header } : undefined;
  }

  /** mkdir -p below the bucket; a file in the way is a NameConflict, not a corrupted tree. */
  private async makeParents(bucket: string, segments: string[]): Promise<void> {
    let p = this.store.bucketPath(bucket);
    for (let i = 0; i < segments.length; i++) {
      p = path.join(p, segments[i]!);
      try {
        mkdirSync(p, { mode: 0o755 });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'EEXIST') throw fromSystemError(err, p);
        const st = lstatSync(p);
        if (!st.isDirectory()) {
          throw new MountdError(ErrorCode.NameConflict, `${bucket}/${segments.slice(0, i + 1).join('/')} is an object, so it cannot also be a prefix`);
        }
      }
    }
  }

  /** Removes the empty directories above `p` in its bucket; returns their keys, deepest first. */
  private async pruneEmptyParents(bucket: string, p: string): Promise<string[]> {
    const bucketDir = this.store.bucketPath(bucket);
    const removed: string[] = [];
    let dir = path.dirname(p);
    while (dir.startsWith(bucketDir + path.sep)) {
      try {
        await fsp.rmdir(dir);
      } catch {
        break;
      }
      removed.push(dir.slice(bucketDir.length + 1).split(path.sep).join('/'));
      dir = path.dirname(dir);
    }
    return removed;
  }
}

async function* toIterable(body: AsyncIterable<Uint8Array> | Uint8Array): AsyncGenerator<Uint8Array> {
  if (body instanceof Uint8Array) {
    yield body;
    return;
  }
  yield* body;
}

function versionOf(st: import('node:fs').BigIntStats | undefined): ObjectVersion | null {
  if (!st || !st.isFile()) return null;
  return { ino: Number(st.ino), size: Number(st.size), mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs };
}

/**
 * Sealed metadata (version, nonce, JSON, tag: FORMAT.md) and the key record must fit the
 * attribute budget together; its size follows from the JSON's, with no sealing needed.
 */
function checkMetaFits(jsonBytes: number, recordBytes: number): void {
  const sealed = 1 + 12 + jsonBytes + 16;
  if (sealed + recordBytes > XATTR_BUDGET) {
    throw new MountdError(ErrorCode.MetadataTooLarge, `metadata of ${sealed} bytes (sealed) does not fit beside the ${recordBytes}-byte key record in ${XATTR_BUDGET} bytes`);
  }
}

/** The decoded header of a data file (read on its own, without loading the file). */
async function headerAt(p: string): Promise<ReturnType<typeof decodeHeader>> {
  const fh = await fsp.open(p, 'r');
  try {
    const buf = Buffer.alloc(HEADER_BYTES);
    await fh.read(buf, 0, HEADER_BYTES, 0);
    return decodeHeader(buf);
  } finally {
    await fh.close();
  }
}

/**
 * The regular files below a directory whose relative path ('/'-separated) starts with `prefix`,
 * one at a time: directories that cannot hold such a path are not entered, and nothing is
 * collected (a bucket of millions of files is walked in the memory of one directory listing per
 * level). A directory that goes meanwhile is skipped.
 */
async function* filesUnder(root: string, prefix: string): AsyncGenerator<string> {
  async function* walk(rel: string): AsyncGenerator<string> {
    let entries;
    try {
      entries = await fsp.readdir(rel === '' ? root : path.join(root, rel), { withFileTypes: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw err;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const d of entries) {
      const key = rel === '' ? d.name : `${rel}/${d.name}`;
      if (d.isDirectory()) {
        if (prefix.startsWith(`${key}/`) || `${key}/`.startsWith(prefix)) yield* walk(key);
      } else if (d.isFile() && key.startsWith(prefix)) {
        yield key;
      }
    }
  }
  yield* walk('');
}

/** Regular files below a directory, as relative paths, in a stable order. */
async function regularFilesBelow(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    for (const d of await fsp.readdir(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel === '' ? d.name : path.join(rel, d.name);
      if (d.isDirectory()) await walk(r);
      else if (d.isFile()) out.push(r);
    }
  };
  await walk('');
  return out.sort();
}
