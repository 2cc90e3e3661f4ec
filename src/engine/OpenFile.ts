// One open backing file: its unsealed key, buffered plaintext packages, and package-level read/write/flush.
import { fstatSync, writevSync } from 'node:fs';
import { gcmOpenInto, gcmSealInto, type RandomSource } from '../crypto/index.js';
import { ErrorCode, MountdError, fromSystemError } from '../errors/index.js';
import {
  PACKAGE_CIPHERTEXT,
  PACKAGE_NONCE,
  PACKAGE_OVERHEAD,
  PACKAGE_PLAINTEXT,
  backingSize,
  packageAad,
  packageCount,
  packageOffset,
  packagePlaintextLength,
  type FileHeader,
  type KeyRecord,
} from '../format/index.js';
import { Mutex } from './mutex.js';
import { BufferPool } from './BufferPool.js';
import { Writeback, type BackingHandle } from './FdFile.js';

/**
 * Where a flush keeps the committed bytes of the last package before rewriting it in place (an
 * append, a write into the tail): a crash half way through the rewrite would otherwise leave that
 * package unreadable, committed bytes included. The engine puts them back at its next start.
 */
export interface TailGuard {
  save(fileId: Buffer, backingPath: string, oldBacking: number, at: number, bytes: Buffer): Promise<void>;
  drop(fileId: Buffer): Promise<void>;
}

/** Shared accounting of buffered plaintext across all open files. */
export interface DirtyBudget {
  dirtyBytes: number;
  readonly maxPerFile: number;
  readonly maxTotal: number;
}

/** How many decrypted packages each open file keeps for re-reads and read-modify-write. */
const CLEAN_CACHE_PACKAGES = 24;
/** Packages read and decrypted ahead for a sequential reader (1 MiB); below CLEAN_CACHE_PACKAGES. */
const READAHEAD_PACKAGES = 16;
/** Contiguous dirty packages written with one system call. */
const WRITE_BATCH_PACKAGES = 32;
/** Plaintext of a package past the end or a truncation: never written to. */
const ZERO_PACKAGE = Buffer.alloc(PACKAGE_PLAINTEXT);

/**
 * Plaintext packages (dirty and clean caches of every open file) and batches of sealed packages
 * (a flush's runs, a sequential reader's preads, a PUT's writes), reused instead of allocated.
 * Caps: 512 packages (a file's whole dirty budget of 16 MiB, twice) and 8 batches of 2 MiB.
 */
export const packagePool = new BufferPool(PACKAGE_PLAINTEXT, 512);
export const batchPool = new BufferPool(WRITE_BATCH_PACKAGES * PACKAGE_CIPHERTEXT, 8, false);

/** Gives a batch (or a view of the start of one) back to its pool; other buffers are left to the collector. */
function giveBatch(buf: Buffer): void {
  if (buf.byteOffset === 0 && buf.buffer.byteLength === batchPool.size) batchPool.give(Buffer.from(buf.buffer, 0, batchPool.size));
}

export class OpenFile {
  readonly mutex = new Mutex();
  /** Handles (and in-flight engine operations) holding this file. */
  refs = 0;
  /** False once a put, delete or rename-over replaced the path: the file lives on for its handles only. */
  attached = true;
  /** Set when a flush changed the content (the stored ETag is stale); the engine clears it once it removed the ETag. */
  contentChanged = false;
  /** False once the engine knows the stored metadata holds no ETag, so a flush need not read it. */
  mayHaveEtag = true;
  private oek: Buffer | null;
  private diskSize: number;
  private logicalSize: number;
  /** Bytes at or past this offset read as zeros until the next flush (set by truncate). */
  private zeroFrom: number;
  private readonly dirty = new Map<number, Buffer>();
  private readonly clean = new Map<number, Buffer>();
  /** The last package read from disk, to recognise a sequential reader. */
  private lastRead = -2;
  /**
   * The ciphertext of the next read-ahead batch, read in the background while the reader
   * consumes this one (disk reads overlap decryption and the FUSE round trips). Dropped by any
   * write, truncate or flush: it would be stale.
   */
  private ahead: { index: number; count: number; data: Promise<{ buf: Buffer; got: number } | null> } | null = null;
  /** Background fdatasync of what flushes wrote (a streaming write's final fsync waits for less). */
  private readonly writeback: Writeback;

  constructor(
    public backingPath: string,
    public bucket: string,
    public key: string,
    private readonly fh: BackingHandle,
    readonly header: FileHeader,
    public record: KeyRecord,
    oek: Buffer,
    size: number,
    private readonly budget: DirtyBudget,
    private readonly random: RandomSource,
    private readonly tail?: TailGuard,
  ) {
    this.oek = oek;
    this.diskSize = size;
    this.logicalSize = size;
    this.zeroFrom = size;
    this.writeback = new Writeback(fh);
  }

  /** The backing file's own attributes (fstat of the descriptor this file holds). */
  backingStat(): { mode: number; uid: number; gid: number; ino: number; atimeMs: number; mtimeMs: number; ctimeMs: number } {
    return fstatSync(this.fh.fd);
  }

  get size(): number {
    return this.logicalSize;
  }

  get hasKey(): boolean {
    return this.oek !== null;
  }

  get dirtyBytes(): number {
    return this.dirty.size * PACKAGE_PLAINTEXT;
  }

  get isDirty(): boolean {
    return this.dirty.size > 0 || this.logicalSize !== this.diskSize;
  }

  /** Installs a freshly unsealed key (after a lock was lifted). */
  setKey(oek: Buffer): void {
    this.oek?.fill(0);
    this.oek = oek;
  }

  /** Forgets the key and every decrypted package: what a disabled key demands. Dirty data must be flushed first. */
  dropKey(): void {
    this.oek?.fill(0);
    this.oek = null;
    for (const b of this.clean.values()) packagePool.give(b);
    this.clean.clear();
  }

  /** The unsealed OEK, for sealing this file's metadata; throws KeyDisabled when dropped. */
  objectKey(): Buffer {
    return this.requireKey();
  }

  private requireKey(): Buffer {
    if (!this.oek) throw new MountdError(ErrorCode.KeyDisabled, `key ${this.record.keyName || '(customer)'} is not available`);
    return this.oek;
  }

  /** Authenticates package `index` as stored (unless a write buffered it): `mountctl verify` of an empty file. */
  async authenticatePackage(index: number): Promise<void> {
    if (this.dirty.has(index) || index >= packageCount(this.diskSize)) return;
    const oek = this.requireKey();
    const plainLength = packagePlaintextLength(this.diskSize, index);
    const sealed = Buffer.alloc(plainLength + PACKAGE_OVERHEAD);
    const got = (await this.fh.read(sealed, 0, sealed.length, packageOffset(index))).bytesRead;
    if (got !== sealed.length) throw new MountdError(ErrorCode.Integrity, `${this.bucket}/${this.key}: package ${index} is truncated`);
    this.openPackage(oek, index, index === packageCount(this.diskSize) - 1, sealed, Buffer.alloc(plainLength));
  }

  /** Reads into `into` when given (its length bounds the read), else into a new buffer; returns the bytes read. */
  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    if (into) length = Math.min(length, into.length);
    if (offset >= this.logicalSize || length <= 0) return Buffer.alloc(0);
    const end = Math.min(this.logicalSize, offset + length);
    const out = into ? into.subarray(0, end - offset) : Buffer.allocUnsafe(end - offset);
    let at = offset;
    while (at < end) {
      const index = Math.floor(at / PACKAGE_PLAINTEXT);
      const within = at - index * PACKAGE_PLAINTEXT;
      const n = Math.min(PACKAGE_PLAINTEXT - within, end - at);
      const pkg = await this.plaintextPackage(index);
      pkg.copy(out, at - offset, within, within + n);
      at += n;
    }
    return out;
  }

  async write(offset: number, data: Uint8Array): Promise<number> {
    this.ahead = null;
    this.requireKey();
    const end = offset + data.length;
    if (!Number.isSafeInteger(end) || offset < 0) throw new MountdError(ErrorCode.InvalidArgument, 'write past the largest file size');
    // pwrite(2) of zero bytes changes nothing, not even the size.
    if (data.length === 0) return 0;
    let at = offset;
    while (at < end) {
      const index = Math.floor(at / PACKAGE_PLAINTEXT);
      const start = index * PACKAGE_PLAINTEXT;
      const within = at - start;
      const n = Math.min(PACKAGE_PLAINTEXT - within, end - at);
      let pkg = this.dirty.get(index);
      if (!pkg) {
        // A write that covers all the package's existing bytes need not decrypt them first.
        const existing = Math.max(0, Math.min(PACKAGE_PLAINTEXT, Math.min(this.logicalSize, this.zeroFrom) - start));
        const covers = within === 0 && n >= existing;
        // A whole-package write overwrites every byte: no need to zero the buffer first.
        if (covers) {
          pkg = packagePool.take();
          if (n !== PACKAGE_PLAINTEXT) pkg.fill(0);
        } else pkg = await this.ownCopy(index);
        this.markDirty(index, pkg);
      }
      pkg.set(data.subarray(at - offset, at - offset + n), within);
      at += n;
    }
    if (end > this.logicalSize) this.logicalSize = end;
    if (this.dirtyBytes >= this.budget.maxPerFile || this.budget.dirtyBytes >= this.budget.maxTotal) await this.flush();
    return data.length;
  }

  async truncate(size: number): Promise<void> {
    this.ahead = null;
    this.requireKey();
    if (!Number.isSafeInteger(size) || size < 0) throw new MountdError(ErrorCode.InvalidArgument, 'bad size');
    if (size < this.logicalSize) {
      const index = Math.floor(size / PACKAGE_PLAINTEXT);
      const within = size - index * PACKAGE_PLAINTEXT;
      for (const i of [...this.dirty.keys()]) if (i > index || (i === index && within === 0 && i > 0)) this.undirty(i);
      if (within > 0 || index === 0) {
        let pkg = this.dirty.get(index);
        if (!pkg) {
          pkg = await this.ownCopy(index);
          this.markDirty(index, pkg);
        }
        pkg.fill(0, within);
      }
      // After the read above: a sequential read-ahead there may have cached packages past the cut.
      for (const i of [...this.clean.keys()]) if (i >= index) this.forget(i);
      this.zeroFrom = Math.min(this.zeroFrom, size);
    }
    this.logicalSize = size;
  }

  /** Encrypts every buffered package and writes it, then trims the backing file; no-op when clean. */
  async flush(): Promise<boolean> {
    this.reportWritebackError();
    if (!this.isDirty) return false;
    this.ahead = null;
    const oek = this.requireKey();
    const size = this.logicalSize;
    const newCount = packageCount(size);
    const oldCount = packageCount(this.diskSize);
    const write = new Set<number>(this.dirty.keys());
    // The final-package flag moves when the package count changes; the new last package always carries it.
    write.add(newCount - 1);
    if (oldCount !== newCount && oldCount - 1 < newCount) write.add(oldCount - 1);
    // Packages past the old end, or past a truncation point on disk, are rewritten (as zeros if not dirty).
    const firstStale = this.zeroFrom < this.diskSize ? Math.floor(this.zeroFrom / PACKAGE_PLAINTEXT) : oldCount;
    for (let i = Math.min(firstStale, oldCount); i < newCount; i++) write.add(i);
    const indices = [...write].filter((i) => i < newCount).sort((a, b) => a - b);
    // The plaintext of each package to write: dirty ones as they are, the others (a moved final
    // flag, zeros past a truncation) copied, so that no cache eviction can recycle them meanwhile.
    const plain = new Map<number, Buffer>();
    const copies: Buffer[] = [];
    try {
      for (const i of indices) {
        let pkg = this.dirty.get(i);
        if (!pkg && (i * PACKAGE_PLAINTEXT >= this.zeroFrom || i >= oldCount)) {
          // Zeros past the old end or a truncation (a truncate up, a growing fallocate): one
          // shared buffer, not a copy each (a 5 GiB growth held 5 GiB of copies).
          plain.set(i, ZERO_PACKAGE.subarray(0, packagePlaintextLength(size, i)));
          continue;
        }
        if (!pkg) {
          pkg = await this.ownCopy(i);
          copies.push(pkg);
        }
        plain.set(i, pkg.subarray(0, packagePlaintextLength(size, i)));
      }
    } catch (err) {
      for (const c of copies) packagePool.give(c);
      throw err;
    }
    try {
      await this.writePackages(oek, indices, plain, size, newCount);
    } finally {
      for (const c of copies) packagePool.give(c);
    }
    for (const i of [...this.dirty.keys()]) {
      const pkg = this.dirty.get(i)!;
      this.dirty.delete(i);
      this.budget.dirtyBytes -= PACKAGE_PLAINTEXT;
      if (i < newCount) this.remember(i, pkg);
      else packagePool.give(pkg);
    }
    this.diskSize = size;
    this.zeroFrom = size;
    this.contentChanged = true;
    return true;
  }

  /** Seals `indices` (with their plaintexts in `plain`) and writes them, keeping the old last package safe (see below). */
  private async writePackages(oek: Buffer, indices: number[], plain: Map<number, Buffer>, size: number, newCount: number): Promise<void> {
    const oldCount = packageCount(this.diskSize);
    // A flush that rewrites the old last package in place (an append moves its final flag; a
    // write into it changes it) can fail half way (ENOSPC) or be cut by a crash: that package
    // holds committed bytes. They are kept, in memory to put the file back after an error, and
    // through the tail guard for a crash, so that neither damages what an earlier flush committed.
    const oldBacking = backingSize(this.diskSize);
    let saved: { at: number; bytes: Buffer } | null = null;
    try {
      // An empty file's first flush is guarded too when it is long (a truncate up, a growing
      // fallocate, a large first write): a crash in it left a damaged file, not an empty one.
      if ((this.diskSize > 0 || indices.length > WRITE_BATCH_PACKAGES) && indices.includes(oldCount - 1)) {
        const at = packageOffset(oldCount - 1);
        const bytes = Buffer.allocUnsafe(oldBacking - at);
        const { bytesRead } = await this.fh.read(bytes, 0, bytes.length, at);
        if (bytesRead === bytes.length) saved = { at, bytes };
      }
      if (saved && this.tail) await this.tail.save(this.header.fileId, this.backingPath, oldBacking, saved.at, saved.bytes);
    } catch (err) {
      throw fromSystemError(err, `${this.bucket}/${this.key}`);
    }
    const batch = batchPool.take();
    try {
      // Contiguous packages are sealed into one batch buffer and go out in one system call.
      let runStart = -1;
      let runCount = 0;
      let runBytes = 0;
      const writeRun = async () => {
        if (runCount === 0) return;
        await writeAll(this.fh, [batch.subarray(0, runBytes)], packageOffset(runStart));
        this.writeback.wrote(runBytes);
        runCount = 0;
        runBytes = 0;
      };
      for (const i of indices) {
        if (runCount > 0 && (i !== runStart + runCount || runCount >= WRITE_BATCH_PACKAGES)) await writeRun();
        if (runCount === 0) runStart = i;
        runBytes += this.sealPackage(oek, i, i === newCount - 1, plain.get(i)!, batch.subarray(runBytes));
        runCount++;
      }
      await writeRun();
      const want = backingSize(size);
      if (fstatSync(this.fh.fd).size > want) await this.fh.truncate(want);
    } catch (err) {
      if (!saved && this.diskSize === 0) {
        // An empty file has no committed bytes to keep, but it must stay an empty file: cut
        // back to its one empty package, sealed again (the old one may be overwritten).
        const empty = Buffer.alloc(PACKAGE_OVERHEAD);
        this.sealPackage(oek, 0, true, Buffer.alloc(0), empty);
        await this.fh
          .truncate(oldBacking)
          .then(() => writeFully(this.fh, empty, packageOffset(0)))
          .catch(() => undefined);
      }
      if (saved) {
        // Shrinking and rewriting bytes in place need no new space.
        const back = saved;
        const restored = await this.fh
          .truncate(oldBacking)
          .then(() => writeFully(this.fh, back.bytes, back.at))
          .then(() => true)
          .catch(() => false);
        // Put back: the copy can go. Not put back: it stays for the next start to do it.
        if (restored) await this.tail?.drop(this.header.fileId).catch(() => undefined);
      }
      throw fromSystemError(err, `${this.bucket}/${this.key}`);
    } finally {
      batchPool.give(batch);
    }
    if (saved && this.tail) {
      try {
        await this.tail.drop(this.header.fileId);
      } catch (err) {
        throw fromSystemError(err, `${this.bucket}/${this.key}`);
      }
    }
  }

  async sync(): Promise<void> {
    await this.flush();
    await this.syncDisk();
  }

  /** fsync of the backing file alone (what earlier flushes wrote); needs no key. */
  async syncDisk(): Promise<void> {
    try {
      await this.writeback.settle();
      await this.fh.sync();
    } catch (err) {
      throw fromSystemError(err, `${this.bucket}/${this.key}`);
    }
  }

  /** Drops buffered data without writing it (the file was deleted or replaced and has no handles). */
  async close(): Promise<void> {
    for (const i of [...this.dirty.keys()]) this.undirty(i);
    this.dropKey();
    await this.writeback.settle().catch(() => undefined);
    await this.fh.close().catch(() => undefined);
  }

  /** A background fdatasync's error, as the flush's own (close(2) and fsync(2) must report it). */
  private reportWritebackError(): void {
    try {
      this.writeback.check();
    } catch (err) {
      throw fromSystemError(err, `${this.bucket}/${this.key}`);
    }
  }

  private markDirty(index: number, pkg: Buffer): void {
    this.dirty.set(index, pkg);
    this.forget(index);
    this.budget.dirtyBytes += PACKAGE_PLAINTEXT;
  }

  /** Drops a buffered package without writing it; its buffer goes back to the pool, zeroed. */
  private undirty(index: number): void {
    const pkg = this.dirty.get(index);
    if (pkg) {
      this.dirty.delete(index);
      this.budget.dirtyBytes -= PACKAGE_PLAINTEXT;
      packagePool.give(pkg);
    }
  }

  /** Drops a decrypted package from the clean cache; its buffer goes back to the pool, zeroed. */
  private forget(index: number): void {
    const pkg = this.clean.get(index);
    if (pkg) {
      this.clean.delete(index);
      packagePool.give(pkg);
    }
  }

  private remember(index: number, pkg: Buffer): void {
    const old = this.clean.get(index);
    if (old && old !== pkg) packagePool.give(old);
    this.clean.delete(index);
    this.clean.set(index, pkg);
    if (this.clean.size > CLEAN_CACHE_PACKAGES) this.forget(this.clean.keys().next().value as number);
  }

  /** A pooled copy of package `index` as the file is now: the caller owns it (the caches may recycle theirs). */
  private async ownCopy(index: number): Promise<Buffer> {
    const src = await this.plaintextPackage(index);
    const pkg = packagePool.take();
    src.copy(pkg);
    return pkg;
  }

  /** The plaintext of package `index` as the file logically is now (may be shorter than 64 KiB). */
  private async plaintextPackage(index: number): Promise<Buffer> {
    const dirty = this.dirty.get(index);
    if (dirty) return dirty;
    const oek = this.requireKey();
    const start = index * PACKAGE_PLAINTEXT;
    if (start >= this.zeroFrom || index >= packageCount(this.diskSize)) return Buffer.alloc(PACKAGE_PLAINTEXT);
    const cached = this.clean.get(index);
    if (cached) return cached;
    const diskCount = packageCount(this.diskSize);
    // A sequential reader gets the next packages read and decrypted with this one: one pread
    // instead of one per 64 KiB, which is what a direct_io mount's 128 KiB reads need.
    const sequential = index === this.lastRead + 1;
    this.lastRead = index;
    let count = 1;
    if (sequential) {
      while (
        count < READAHEAD_PACKAGES &&
        index + count < diskCount &&
        (index + count) * PACKAGE_PLAINTEXT < this.zeroFrom &&
        !this.dirty.has(index + count) &&
        !this.clean.has(index + count)
      ) {
        count++;
      }
    }
    const first = packageOffset(index);
    let buf: Buffer | undefined;
    let got = 0;
    const ahead = this.ahead;
    this.ahead = null;
    if (sequential && ahead && ahead.index === index) {
      const r = await ahead.data;
      if (r) {
        count = ahead.count;
        buf = r.buf;
        got = r.got;
      }
    }
    const last = index + count - 1;
    // The next miss of a sequential reader is the package after this batch.
    this.lastRead = last;
    const length = packageOffset(last) + packagePlaintextLength(this.diskSize, last) + PACKAGE_OVERHEAD - first;
    if (buf && (got !== length || buf.length !== length)) {
      giveBatch(buf);
      buf = undefined;
    }
    if (!buf) {
      buf = length <= batchPool.size ? batchPool.take().subarray(0, length) : Buffer.allocUnsafe(length);
      try {
        got = (await this.fh.read(buf, 0, buf.length, first)).bytesRead;
      } catch (err) {
        giveBatch(buf);
        throw fromSystemError(err, `${this.bucket}/${this.key}`);
      }
    }
    if (sequential) this.readAhead(last + 1, diskCount);
    try {
      if (got !== buf.length) {
        throw new MountdError(ErrorCode.Integrity, `${this.bucket}/${this.key}: package ${index + Math.floor(got / PACKAGE_CIPHERTEXT)} is truncated`);
      }
      let result: Buffer | undefined;
      for (let i = index; i <= last; i++) {
        // A write may have buffered one of these while the read was in flight: the buffered one wins.
        if (i !== index && this.dirty.has(i)) continue;
        const at = packageOffset(i) - first;
        const plainLength = packagePlaintextLength(this.diskSize, i);
        const sealed = buf.subarray(at, at + plainLength + PACKAGE_OVERHEAD);
        const full = packagePool.take();
        try {
          this.openPackage(oek, i, i === diskCount - 1, sealed, full.subarray(0, plainLength));
        } catch (err) {
          packagePool.give(full);
          throw err;
        }
        // Past the plaintext, and past the truncation point within this package, bytes read as zeros.
        const start = i * PACKAGE_PLAINTEXT;
        full.fill(0, Math.max(0, Math.min(plainLength, this.zeroFrom - start)));
        this.remember(i, full);
        if (i === index) result = full;
      }
      return result!;
    } finally {
      giveBatch(buf);
    }
  }

  /** Starts reading the ciphertext of the batch at `index` in the background (see `ahead`). */
  private readAhead(index: number, diskCount: number): void {
    let count = 0;
    while (count < READAHEAD_PACKAGES && index + count < diskCount && (index + count) * PACKAGE_PLAINTEXT < this.zeroFrom && !this.dirty.has(index + count)) count++;
    if (count === 0) return;
    const first = packageOffset(index);
    const last = index + count - 1;
    const length = packageOffset(last) + packagePlaintextLength(this.diskSize, last) + PACKAGE_OVERHEAD - first;
    const buf = length <= batchPool.size ? batchPool.take().subarray(0, length) : Buffer.allocUnsafe(length);
    const data = this.fh.read(buf, 0, buf.length, first).then(
      (r) => ({ buf, got: r.bytesRead }),
      () => {
        giveBatch(buf);
        return null; // read again, in the reader's own request, which reports the error
      },
    );
    this.ahead = { index, count, data };
  }

  /** Seals one package into the start of `out` (nonce, ciphertext, tag); returns its length. */
  private sealPackage(oek: Buffer, index: number, final: boolean, plaintext: Uint8Array, out: Buffer): number {
    return sealPackageInto(oek, this.random, this.header.bytes, index, final, plaintext, out);
  }

  /** Opens one sealed package (nonce, ciphertext, tag) into `out` (its plaintext length). */
  private openPackage(oek: Buffer, index: number, final: boolean, sealed: Buffer, out: Buffer): void {
    gcmOpenInto(
      oek,
      sealed.subarray(0, PACKAGE_NONCE),
      sealed.subarray(PACKAGE_NONCE),
      packageAad(this.header.bytes, index, final),
      out,
      `${this.bucket}/${this.key} package ${index}`,
    );
  }
}

/** Seals one package into the start of `out` (nonce, ciphertext, tag); returns its length. */
export function sealPackageInto(oek: Buffer, random: RandomSource, header: Uint8Array, index: number, final: boolean, plaintext: Uint8Array, out: Buffer): number {
  const nonce = random(PACKAGE_NONCE);
  out.set(nonce, 0);
  const end = PACKAGE_OVERHEAD + plaintext.length;
  gcmSealInto(oek, out.subarray(0, PACKAGE_NONCE), plaintext, packageAad(header, index, final), out.subarray(PACKAGE_NONCE, end));
  return end;
}

/** writev until every byte of `bufs` is written at `position`. */
/** Writes up to this size go out with a direct system call: a thread-pool trip costs more. */
const SYNC_WRITE_BYTES = 256 * 1024;

export async function writeAll(fh: BackingHandle, bufs: Buffer[], position: number): Promise<void> {
  const total = bufs.reduce((n, b) => n + b.length, 0);
  const bytesWritten = total <= SYNC_WRITE_BYTES ? writevSync(fh.fd, bufs, position) : (await fh.writev(bufs, position)).bytesWritten;
  if (bytesWritten < total) await writeFully(fh, Buffer.concat(bufs).subarray(bytesWritten), position + bytesWritten);
}

export async function writeFully(fh: BackingHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    if (bytesWritten <= 0) throw new MountdError(ErrorCode.Internal, 'short write');
    done += bytesWritten;
  }
}

export { PACKAGE_CIPHERTEXT };
