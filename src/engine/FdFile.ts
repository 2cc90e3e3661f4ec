// A backing file opened with a direct system call, with the subset of fs/promises' FileHandle
// the engine uses. fsp.open and FileHandle.close each take a trip through libuv's thread pool:
// under a `tar x` on the mount that trip, not the system call, was most of a create (1.5 ms of
// 1.9 ms measured on the 2-core benchmark machine). Opens and closes are quick metadata calls,
// so they are made directly; bulk reads, writes and fsync still go through the thread pool.
import { closeSync, fsync, ftruncate, openSync, read, write, writev } from 'node:fs';

/** What OpenFile, writeAll and writeFully need of an open backing file (FileHandle has it too). */
export interface BackingHandle {
  readonly fd: number;
  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  write(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }>;
  writev(buffers: Buffer[], position: number): Promise<{ bytesWritten: number }>;
  sync(): Promise<void>;
  truncate(length: number): Promise<void>;
  close(): Promise<void>;
}

export class FdFile implements BackingHandle {
  private closed = false;

  private constructor(readonly fd: number) {}

  /** openSync: throws the system error (ENOENT, EEXIST, ELOOP...) as fs does. */
  static open(path: string, flags: number | string, mode?: number): FdFile {
    return new FdFile(openSync(path, flags, mode));
  }

  read(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }> {
    return new Promise((resolve, reject) => read(this.fd, buffer, offset, length, position, (err, bytesRead) => (err ? reject(err) : resolve({ bytesRead }))));
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
