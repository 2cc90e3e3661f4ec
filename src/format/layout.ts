// The data file's byte layout: a 32-byte header, then AES-256-GCM packages of 64 KiB plaintext.
import { ErrorCode, MountdError } from '../errors/index.js';

export const MAGIC = Buffer.from('mntd', 'latin1');
export const FORMAT_VERSION = 1;
/** Content algorithm 1: AES-256-GCM, 64 KiB packages, a fresh random 96-bit nonce per package write. */
export const CONTENT_ALGORITHM_AES256GCM = 1;
export const HEADER_BYTES = 32;
export const FILE_ID_BYTES = 16;
export const PACKAGE_PLAINTEXT = 64 * 1024;
export const PACKAGE_NONCE = 12;
export const PACKAGE_TAG = 16;
export const PACKAGE_OVERHEAD = PACKAGE_NONCE + PACKAGE_TAG;
export const PACKAGE_CIPHERTEXT = PACKAGE_PLAINTEXT + PACKAGE_OVERHEAD;

export interface FileHeader {
  version: number;
  algorithm: number;
  fileId: Buffer;
  /** The exact 32 bytes, authenticated as part of every package's associated data. */
  bytes: Buffer;
}

export function encodeHeader(fileId: Uint8Array): FileHeader {
  if (fileId.length !== FILE_ID_BYTES) throw new TypeError('file id must be 16 bytes');
  const bytes = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(bytes, 0);
  bytes[4] = FORMAT_VERSION;
  bytes[5] = CONTENT_ALGORITHM_AES256GCM;
  bytes.set(fileId, 8);
  return { version: FORMAT_VERSION, algorithm: CONTENT_ALGORITHM_AES256GCM, fileId: Buffer.from(fileId), bytes };
}

export function decodeHeader(bytes: Uint8Array): FileHeader {
  if (bytes.length < HEADER_BYTES) throw new MountdError(ErrorCode.Integrity, 'data file: header truncated');
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  if (!b.subarray(0, 4).equals(MAGIC)) throw new MountdError(ErrorCode.Integrity, 'data file: bad magic');
  if (b[4] !== FORMAT_VERSION) {
    throw new MountdError(ErrorCode.UnsupportedFormat, `data file: unknown format version ${b[4]}`);
  }
  if (b[5] !== CONTENT_ALGORITHM_AES256GCM) {
    throw new MountdError(ErrorCode.UnsupportedFormat, `data file: unknown content algorithm ${b[5]}`);
  }
  if (b[6] !== 0 || b[7] !== 0 || b.subarray(24, 32).some((x) => x !== 0)) {
    throw new MountdError(ErrorCode.Integrity, 'data file: reserved header bytes are not zero');
  }
  return { version: FORMAT_VERSION, algorithm: CONTENT_ALGORITHM_AES256GCM, fileId: Buffer.from(b.subarray(8, 24)), bytes: Buffer.from(b) };
}

/** header || u64be(index) || u8(final): binds a package to its file, position and whether it ends the file. */
export function packageAad(header: Uint8Array, index: number, final: boolean): Buffer {
  const aad = Buffer.alloc(HEADER_BYTES + 9);
  aad.set(header.subarray(0, HEADER_BYTES), 0);
  aad.writeBigUInt64BE(BigInt(index), HEADER_BYTES);
  aad[HEADER_BYTES + 8] = final ? 1 : 0;
  return aad;
}

/** A file always has at least one package (an empty file has one empty final package). */
export function packageCount(plaintextSize: number): number {
  return Math.max(1, Math.ceil(plaintextSize / PACKAGE_PLAINTEXT));
}

/** Plaintext bytes held by package `index` of a file of `plaintextSize` bytes. */
export function packagePlaintextLength(plaintextSize: number, index: number): number {
  const count = packageCount(plaintextSize);
  if (index < count - 1) return PACKAGE_PLAINTEXT;
  if (index === count - 1) return plaintextSize - index * PACKAGE_PLAINTEXT;
  return 0;
}

export function packageOffset(index: number): number {
  return HEADER_BYTES + index * PACKAGE_CIPHERTEXT;
}

export function backingSize(plaintextSize: number): number {
  if (!Number.isSafeInteger(plaintextSize) || plaintextSize < 0) throw new RangeError('bad plaintext size');
  const count = packageCount(plaintextSize);
  const last = plaintextSize - (count - 1) * PACKAGE_PLAINTEXT;
  return packageOffset(count - 1) + last + PACKAGE_OVERHEAD;
}

/**
 * Inverse of backingSize. Sizes no plaintext size maps to (a torn or truncated file) are an
 * Integrity error, so that `stat` never reports a size the data cannot back.
 */
export function plaintextSize(backing: number): number {
  const body = backing - HEADER_BYTES;
  if (body < PACKAGE_OVERHEAD) throw new MountdError(ErrorCode.Integrity, `data file: size ${backing} is too small`);
  const count = Math.max(1, Math.ceil(body / PACKAGE_CIPHERTEXT));
  const lastCipher = body - (count - 1) * PACKAGE_CIPHERTEXT;
  const last = lastCipher - PACKAGE_OVERHEAD;
  if (last < (count === 1 ? 0 : 1)) {
    throw new MountdError(ErrorCode.Integrity, `data file: size ${backing} does not end on a package`);
  }
  return (count - 1) * PACKAGE_PLAINTEXT + last;
}
