// Validation of bucket names and object keys: nothing a client sends may name a path outside its bucket.
import { ErrorCode, MountdError } from '../errors/index.js';

export const MAX_KEY_BYTES = 1024;
export const MAX_SEGMENT_BYTES = 255;

const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const IPV4_RE = /^\d{1,3}(\.\d{1,3}){3}$/;

/** S3 bucket naming rules; a valid name can never start with '.', so it cannot reach the daemon's own directory. */
export function validateBucketName(name: unknown): string {
  const bad = (why: string) => new MountdError(ErrorCode.InvalidName, `invalid bucket name: ${why}`);
  if (typeof name !== 'string') throw bad('not a string');
  if (!BUCKET_RE.test(name)) {
    throw bad('3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit');
  }
  if (name.includes('..')) throw bad('two adjacent dots');
  if (name.includes('.-') || name.includes('-.')) throw bad('a dot next to a hyphen');
  if (IPV4_RE.test(name)) throw bad('formatted as an IP address');
  if (name.startsWith('xn--') || name.startsWith('sthree-')) throw bad('reserved prefix');
  if (name.endsWith('-s3alias') || name.endsWith('--ol-s3')) throw bad('reserved suffix');
  return name;
}

export interface ParsedKey {
  key: string;
  /** Path segments; a directory marker ("a/b/") has segments ["a","b"]. */
  segments: string[];
  isDirectoryMarker: boolean;
}

/**
 * An object key: 1..1024 UTF-8 bytes, well-formed Unicode, no NUL, no empty, "." or ".."
 * segment (the key arrives already percent-decoded, exactly once, so "%2e%2e" is ".." here).
 * A single trailing "/" marks a directory.
 */
export function parseObjectKey(key: unknown): ParsedKey {
  const bad = (why: string) => new MountdError(ErrorCode.InvalidName, `invalid object key: ${why}`);
  if (typeof key !== 'string') throw bad('not a string');
  if (key.length === 0) throw bad('empty');
  if (!key.isWellFormed()) throw bad('not valid Unicode');
  if (Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) throw bad(`longer than ${MAX_KEY_BYTES} bytes`);
  if (key.includes('\0')) throw bad('contains NUL');
  const isDirectoryMarker = key.endsWith('/');
  const body = isDirectoryMarker ? key.slice(0, -1) : key;
  const segments = body.split('/');
  for (const s of segments) {
    if (s === '') throw bad('empty path segment');
    if (s === '.' || s === '..') throw bad('"." or ".." segment');
    if (Buffer.byteLength(s, 'utf8') > MAX_SEGMENT_BYTES) throw bad(`segment longer than ${MAX_SEGMENT_BYTES} bytes`);
  }
  return { key, segments, isDirectoryMarker };
}

/** A key prefix for listings: may be empty and may end anywhere, but may not contain NUL or bad Unicode. */
export function validatePrefix(prefix: unknown): string {
  if (prefix === undefined || prefix === null) return '';
  if (typeof prefix !== 'string') throw new MountdError(ErrorCode.InvalidArgument, 'prefix: not a string');
  if (!prefix.isWellFormed() || prefix.includes('\0')) throw new MountdError(ErrorCode.InvalidArgument, 'prefix: invalid');
  if (Buffer.byteLength(prefix, 'utf8') > MAX_KEY_BYTES) throw new MountdError(ErrorCode.InvalidArgument, 'prefix: too long');
  return prefix;
}
