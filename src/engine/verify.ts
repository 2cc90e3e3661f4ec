// Verification of a whole store (or a bucket, or a prefix): every file's header, key record,
// metadata and every package of its data are authenticated, as a read would, and nothing is
// changed. Damage is reported per file; files whose key is locked are counted, not guessed at.
import { ErrorCode, MountdError } from '../errors/index.js';

export interface VerifyOptions {
  /** Only this bucket (default: every bucket). */
  bucket?: string;
  /** Only keys starting with this (needs `bucket`). */
  prefix?: string;
  /** Called about once a second and at the end. */
  onProgress?: (p: VerifyProgress) => void;
  /** Stops between files. */
  signal?: AbortSignal;
}

export interface VerifyProgress {
  /** Files whose header, key record, metadata and data all authenticated. */
  ok: number;
  /** Files that failed authentication or could not be read (listed in `damaged`). */
  failed: number;
  /** Files under a disabled, deleted or unreachable key: not checked (listed in `locked`, up to 100). */
  lockedCount: number;
  /** SSE-C objects: their data needs the customer's key, which is never stored. */
  customerKey: number;
  /** Deleted or renamed between the listing and the check. */
  gone: number;
  scanned: number;
  /** Plaintext bytes authenticated. */
  bytes: number;
  elapsedMs: number;
  done: boolean;
  /** "bucket/key: why", up to 100. */
  damaged: string[];
  /** "bucket/key: key NAME disabled", up to 100. */
  locked: string[];
}

/** What verification needs of the engine: its public reads and a listing of the backing files. */
export interface VerifyTarget {
  listBuckets(): Promise<Array<{ name: string }>>;
  headBucket(bucket: string): Promise<void>;
  /** Object keys of the regular backing files of a bucket that start with `prefix`, walked (not collected). */
  keysOf(bucket: string, prefix: string): AsyncIterable<string>;
  statOrNull(bucket: string, key: string): Promise<{ type: string } | null>;
  readlink(bucket: string, key: string): Promise<string>;
  /** Streams an object's plaintext; its metadata is opened on the way. */
  getObject(bucket: string, key: string): Promise<{ body: AsyncIterable<Buffer> & { destroy(): void } }>;
  /** Authenticates the one package of an empty file (a GET reads none). */
  checkEmpty(bucket: string, key: string): Promise<void>;
}

const LIST_MAX = 100;
const LOCKED: readonly string[] = [ErrorCode.KeyDisabled, ErrorCode.KeyNotFound, ErrorCode.KeyServerUnavailable, ErrorCode.KeyAccessDenied];

export async function verifyStore(target: VerifyTarget, opts: VerifyOptions = {}): Promise<VerifyProgress> {
  if (opts.prefix !== undefined && opts.bucket === undefined) throw new MountdError(ErrorCode.InvalidArgument, 'a prefix needs a bucket');
  const started = Date.now();
  const p: VerifyProgress = { ok: 0, failed: 0, lockedCount: 0, customerKey: 0, gone: 0, scanned: 0, bytes: 0, elapsedMs: 0, done: false, damaged: [], locked: [] };
  let lastReport = started;
  const report = (done: boolean) => {
    p.elapsedMs = Date.now() - started;
    p.done = done;
    opts.onProgress?.({ ...p, damaged: [...p.damaged], locked: [...p.locked] });
  };
  if (opts.bucket !== undefined) await target.headBucket(opts.bucket);
  const buckets = opts.bucket !== undefined ? [opts.bucket] : (await target.listBuckets()).map((b) => b.name);
  for (const bucket of buckets) {
    for await (const key of target.keysOf(bucket, opts.prefix ?? '')) {
      if (opts.signal?.aborted) {
        report(false);
        throw new MountdError(ErrorCode.Busy, `verification interrupted after ${p.scanned} files`);
      }
      p.scanned++;
      try {
        const st = await target.statOrNull(bucket, key);
        if (!st || st.type === 'directory') {
          p.gone++;
        } else {
          // Symlinks too: their target is the data, and their sealed metadata is opened on the way.
          const { body } = await target.getObject(bucket, key);
          let n = 0;
          try {
            for await (const chunk of body) {
              n += chunk.length;
              p.bytes += chunk.length;
              // A file of many GB: progress keeps the client's idle timeout from firing, and a
              // client that went away (ctrl-C) stops the walk here, not at the end of the file.
              if (opts.signal?.aborted) break;
              if (Date.now() - lastReport >= 1000) {
                lastReport = Date.now();
                report(false);
              }
            }
          } finally {
            body.destroy();
          }
          if (opts.signal?.aborted) {
            report(false);
            throw new MountdError(ErrorCode.Busy, `verification interrupted after ${p.scanned} files`);
          }
          if (n === 0) await target.checkEmpty(bucket, key);
          p.ok++;
        }
      } catch (err) {
        if (opts.signal?.aborted) throw err;
        const code = err instanceof MountdError ? err.code : undefined;
        const name = `${bucket}/${key}`;
        const message = (err as Error).message.startsWith(name) ? (err as Error).message : `${name}: ${(err as Error).message}`;
        if (code === ErrorCode.NotFound || (err as NodeJS.ErrnoException).code === 'ENOENT') p.gone++;
        else if (code === ErrorCode.CustomerKeyRequired) p.customerKey++;
        else if (code !== undefined && LOCKED.includes(code)) {
          p.lockedCount++;
          if (p.locked.length < LIST_MAX) p.locked.push(message);
        } else {
          p.failed++;
          if (p.damaged.length < LIST_MAX) p.damaged.push(message);
        }
      }
      if (Date.now() - lastReport >= 1000) {
        lastReport = Date.now();
        report(false);
      }
    }
  }
  report(true);
  return { ...p, elapsedMs: Date.now() - started, done: true };
}

/** A progress line for logs and mountctl. */
export function formatVerifyProgress(p: VerifyProgress): string {
  const mb = p.bytes / 1e6;
  const rate = mb / Math.max(p.elapsedMs / 1000, 0.001);
  const extra = [p.lockedCount > 0 ? `${p.lockedCount} locked (not checked)` : '', p.customerKey > 0 ? `${p.customerKey} SSE-C (data not checked)` : '', p.gone > 0 ? `${p.gone} gone meanwhile` : '']
    .filter((s) => s !== '')
    .join(', ');
  return `${p.done ? 'verified' : 'verifying'}: ${p.scanned} files, ${p.ok} ok, ${p.failed} damaged${extra ? `, ${extra}` : ''}; ${mb.toFixed(1)} MB in ${(p.elapsedMs / 1000).toFixed(1)} s (${rate.toFixed(1)} MB/s)`;
}
