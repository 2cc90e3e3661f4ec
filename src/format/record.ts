// The key record kept in the backing file's xattr: versioned, binary, length-prefixed fields.
import { ErrorCode, MountdError } from '../errors/index.js';

export const KEY_RECORD_XATTR = 'user.mountd.key';
export const META_XATTR = 'user.mountd.meta';
export const RECORD_VERSION = 1;
/** Algorithm 1: KEK = HMAC-SHA256 over length-prefixed parts (crypto/kdf.ts), OEK sealed with AES-256-GCM. */
export const RECORD_ALGORITHM_V1 = 1;

export const KeyKind = {
  /** The daemon's default key or a bucket default (S3: SSE-S3). */
  Default: 1,
  /** A key named by the client (S3: SSE-KMS). */
  Named: 2,
  /** A key the client supplies with every request and that is never stored (S3: SSE-C). */
  Customer: 3,
} as const;
export type KeyKind = (typeof KeyKind)[keyof typeof KeyKind];

export interface KeyRecord {
  version: number;
  algorithm: number;
  kind: KeyKind;
  /** External key name in the key server; empty for Customer. */
  keyName: string;
  /** The key server's ciphertext of the DEK; empty for Customer. */
  dekCiphertext: Buffer;
  /** The context the DEK is bound to (compact JSON); empty for Customer. */
  context: Buffer;
  /** 32 random bytes mixed into the KEK. */
  iv: Buffer;
  /** nonce || AES-256-GCM(KEK, OEK), authenticated with `sealAad` of this record. */
  sealedKey: Buffer;
}

const FIXED = 4;

function field(out: Buffer[], value: Uint8Array): void {
  if (value.length > 0xffff) throw new RangeError('key record field too long');
  const len = Buffer.alloc(2);
  len.writeUInt16BE(value.length);
  out.push(len, Buffer.from(value));
}

/** Every byte of the record before the sealed key: what the seal authenticates. */
export function sealAad(r: Omit<KeyRecord, 'sealedKey'>): Buffer {
  const out: Buffer[] = [Buffer.from([r.version, r.algorithm, r.kind, 0])];
  field(out, Buffer.from(r.keyName, 'utf8'));
  field(out, r.dekCiphertext);
  field(out, r.context);
  field(out, r.iv);
  return Buffer.concat(out);
}

export function encodeRecord(r: KeyRecord): Buffer {
  const out: Buffer[] = [sealAad(r)];
  field(out, r.sealedKey);
  return Buffer.concat(out);
}

export function decodeRecord(bytes: Uint8Array): KeyRecord {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const bad = (why: string) => new MountdError(ErrorCode.Integrity, `key record: ${why}`);
  if (b.length < FIXED) throw bad('truncated');
  const version = b[0]!;
  const algorithm = b[1]!;
  const kind = b[2]!;
  if (version !== RECORD_VERSION) throw new MountdError(ErrorCode.UnsupportedFormat, `key record: unknown version ${version}`);
  if (algorithm !== RECORD_ALGORITHM_V1) {
    throw new MountdError(ErrorCode.UnsupportedFormat, `key record: unknown algorithm ${algorithm}`);
  }
  if (kind !== KeyKind.Default && kind !== KeyKind.Named && kind !== KeyKind.Customer) throw bad(`unknown kind ${kind}`);
  if (b[3] !== 0) throw bad('reserved byte is not zero');
  let at = FIXED;
  const next = (): Buffer => {
    if (at + 2 > b.length) throw bad('truncated');
    const len = b.readUInt16BE(at);
    at += 2;
    if (at + len > b.length) throw bad('truncated');
    const v = Buffer.from(b.subarray(at, at + len));
    at += len;
    return v;
  };
  const keyName = next().toString('utf8');
  const dekCiphertext = next();
  const context = next();
  const iv = next();
  const sealedKey = next();
  if (at !== b.length) throw bad('trailing bytes');
  if (iv.length !== 32) throw bad('iv must be 32 bytes');
  if (kind === KeyKind.Customer ? keyName !== '' || dekCiphertext.length > 0 : keyName === '') {
    throw bad('key name does not match the kind');
  }
  return { version, algorithm, kind: kind as KeyKind, keyName, dekCiphertext, context, iv, sealedKey };
}

/**
 * The DEK context, as MinIO builds it: {"<bucket>":"<bucket>/<object>"}, compact JSON. The key
 * server binds the DEK ciphertext to these bytes, so a rename must re-bind it.
 */
export function dekContext(bucket: string, object: string): Buffer {
  return Buffer.from(JSON.stringify({ [bucket]: `${bucket}/${object}` }), 'utf8');
}
