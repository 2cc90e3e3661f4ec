// The MD5 of an S3 PUT's body (its ETag), off the main thread once the body is large.
// native/crypto.c hashes the first 8 MiB inline and the rest on a thread of the hasher's own
// (MD5 runs at ~700 MB/s here and took a third of the main thread's time in a 1 GiB PUT);
// node:crypto's MD5 on the main thread when the addon is missing or MOUNTD_NATIVE_CRYPTO=0.
import { createHash, type Hash } from 'node:crypto';
import { nativeCryptoModule } from '../crypto/index.js';

interface NativeMd5 {
  md5New(): unknown;
  md5Update(h: unknown, bytes: Uint8Array): void;
  md5Digest(h: unknown): Promise<Buffer>;
  md5Abort(h: unknown): void;
}

const native: NativeMd5 | null = (() => {
  const m = nativeCryptoModule() as Partial<NativeMd5> | null;
  return typeof m?.md5New === 'function' ? (m as NativeMd5) : null;
})();

/** Which implementation hashes PUT bodies (for tests). */
export const md5Implementation: 'threaded' | 'node:crypto' = native ? 'threaded' : 'node:crypto';

export class Md5 {
  private readonly h: unknown;
  private readonly js: Hash | null;
  private ended = false;

  constructor() {
    this.h = native ? native.md5New() : null;
    this.js = native ? null : createHash('md5');
  }

  update(bytes: Uint8Array): void {
    if (this.js) this.js.update(bytes);
    else native!.md5Update(this.h, bytes);
  }

  /** The digest in hex, once every byte given is hashed. */
  async hex(): Promise<string> {
    this.ended = true;
    if (this.js) return this.js.digest('hex');
    return (await native!.md5Digest(this.h)).toString('hex');
  }

  /** Drops what is still queued (a failed PUT); does nothing after hex(). */
  abort(): void {
    if (this.ended) return;
    this.ended = true;
    if (!this.js) native!.md5Abort(this.h);
  }
}
