// A backing file opened with a direct system call, with the subset of fs/promises' FileHandle
// the engine uses. fsp.open and FileHandle.close each take a trip through libuv's thread pool:
// under a `tar x` on the mount that trip, not the system call, was most of a create (1.5 ms of
// 1.9 ms measured on the 2-core benchmark machine). Opens and closes are quick metadata calls,
// so they are made directly; writes and fsync still go through the thread pool, and so do reads
// of what the page cache does not hold (see preadNoWait below).
import { closeSync, constants as fsConstants, fdatasync, fsync, ftruncate, openSync, read, write, writev } from 'node:fs';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';

interface NativeIo {
  preadNoWait(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): number;
}

/**
 * native/io.c: preadv2 with RWF_NOWAIT, a read of what the page cache holds, on the main thread.
 * A read through the thread pool cost the main thread 100-200 us of wake-ups on the benchmark
 * machine, the copy itself 1-10 us; what is not cached still goes to the pool, so the event loop
 * never waits for the disk. Built by scripts/setup; without it (or with MOUNTD_NATIVE_IO=0) every
 * read goes through the pool.
 */
let nativeIo: NativeIo | null = (() => {
  if (process.env.MOUNTD_NATIVE_IO === '0') return null;
  try {
    return createRequire(import.meta.url)('../../native/build/io.node') as NativeIo;
  } catch {
    return null;
  }
})();

/** Reads up to this many bytes at once on the main thread (a copy of ~0.3 ms at most). */
const NOWAIT_READ_MAX = 4 * 1024 * 1024;
const EOPNOTSUPP = osConstants.errno.EOPNOTSUPP;

/** Whether reads try the page cache on the main thread first (for status and tests). */
export function nativeReadsEnabled(): boolean {
  return nativeIo !== null;
}

/** Linux's O_NOATIME (Node's fs.constants has it on Linux). */
const O_NOATIME = fsConstants.O_NOATIME ?? 0o1000000;

/** What OpenFile, writeAll and writeFully need of an open backing file (FileHandle has it too). */
export interface BackingHandle {
  readonly fd: number;
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  write(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }>;
  writev(buffers: Buffer[], position: number): Promise<{ bytesWritten: number }>;
  sync(): Promise<void>;
  datasync(): Promise<void>;
  truncate(length: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts the disk writes of a file being written in bulk while more of it is still being
 * encrypted: without it the page cache holds the whole file until the final fsync, which then
 * waits for all of it (the kernel starts writing back only past a share of memory, here gigabytes).
 * At most one background fdatasync runs; its error is kept and thrown by the next check, since
 * the kernel reports a write-back error to each open file once.
 */
export class Writeback {
  private since = 0;
  private inflight: Promise<void> | null = null;
  private error: unknown = null;

  constructor(
    private readonly fh: Pick<BackingHandle, 'datasync'>,
    private readonly every = 32 * 1024 * 1024,
  ) {}

  /** Counts bytes just written; past `every` bytes, starts an fdatasync unless one is running. */
  wrote(bytes: number): void {
    this.since += bytes;
    if (this.since < this.every || this.inflight) return;
    this.since = 0;
    this.inflight = this.fh
      .datasync()
      .catch((err: unknown) => {
        this.error ??= err;
      })
      .finally(() => {
        this.inflight = null;
      });
  }

  /** Throws (once) the error a background fdatasync met, without waiting. */
  check(): void {
    if (this.error === null) return;
    const err = this.error;
    this.error = null;
    throw err;
  }

  /** Waits for the fdatasync in flight, then check(). */
  async settle(): Promise<void> {
    await this.inflight;
    this.check();
  }
}

export class FdFile implements BackingHandle {
  private closed = false;

  private constructor(readonly fd: number) {}

  /** openSync: throws the system error (ENOENT, EEXIST, ELOOP...) as fs does. */
  static open(path: string, flags: number | string, mode?: number): FdFile {
    return new FdFile(openSync(path, flags, mode));
  }

  /**
   * An existing file, opened so that reading it does not move its access time (O_NOATIME): the
   * backing file's atime is the object's, and only a utime through the mount may change it.
   * O_NOATIME needs the file's owner or CAP_FOWNER; without either, a plain open.
   */
  static openNoAtime(path: string, flags: number): FdFile {
    try {
      return new FdFile(openSync(path, flags | O_NOATIME));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
      return new FdFile(openSync(path, flags));
    }
  }

  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }> {
    let got = 0;
    if (nativeIo && length > 0 && length <= NOWAIT_READ_MAX) {
      let n: number;
      try {
        n = nativeIo.preadNoWait(this.fd, buffer, offset, length, position);
      } catch (err) {
        return Promise.reject(err); // bad arguments reject, as fs.read's do
      }
      if (n === length || n === 0) return Promise.resolve({ bytesRead: n }); // 0: at the end
      if (n > 0) got = n; // the rest is not cached, or is past the end: the pool reads on from there
      else if (n === -EOPNOTSUPP) nativeIo = null; // a backing file system without RWF_NOWAIT
      // Any other error (-EAGAIN: nothing of it is cached) is the pool read's to meet and report.
    }
    return new Promise((resolve, reject) =>
      read(this.fd, buffer, offset + got, length - got, position + got, (err, bytesRead) => (err ? reject(err) : resolve({ bytesRead: got + bytesRead }))),
    );
  }

  write(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }> {
    return new Promise((resolve, reject) => write(this.fd, buffer, offset, length, position, (err, bytesWritten) => (err ? reject(err) : resolve({ bytesWritten }))));
  }

  writev(buffers: Buffer[], position: number): Promise<{ bytesWritten: number }> {
    return new Promise((resolve, reject) => writev(this.fd, buffers, position, (err, bytesWritten) => (err ? reject(err) : resolve({ bytesWritten }))));
  }

  sync(): Promise<void> {
    return new Promise((resolve, reject) => fsync(this.fd, (err) => (err ? reject(err) : resolve())));
  }

  datasync(): Promise<void> {
    return new Promise((resolve, reject) => fdatasync(this.fd, (err) => (err ? reject(err) : resolve())));
  }

  truncate(length: number): Promise<void> {
    return new Promise((resolve, reject) => ftruncate(this.fd, length, (err) => (err ? reject(err) : resolve())));
  }

  /** Closes once; later calls do nothing (FileHandle's close is idempotent too). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}
