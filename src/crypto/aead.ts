// AES-256-GCM through node:crypto (OpenSSL, AES-NI): the bulk cipher for packages and key seals.
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { createRequire } from 'node:module';
import { ErrorCode, MountdError } from '../errors/index.js';

interface NativeAead {
  sealInto(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, out: Uint8Array): void;
  openInto(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array, out: Uint8Array): boolean;
}

/**
 * native/crypto.c: the same OpenSSL AES-256-GCM, sealing into and opening into the caller's
 * buffers (node:crypto allocates a buffer per call, and the garbage collector's work on those
 * was a quarter of the streaming I/O time). Built by scripts/setup; node:crypto when missing or
 * when MOUNTD_NATIVE_CRYPTO=0.
 */
const nativeModule: object | null = (() => {
  if (process.env.MOUNTD_NATIVE_CRYPTO === '0') return null;
  try {
    return createRequire(import.meta.url)('../../native/build/crypto.node') as object;
  } catch {
    return null;
  }
})();
const native = nativeModule as NativeAead | null;

/**
 * The loaded native/crypto.c addon (null when missing or MOUNTD_NATIVE_CRYPTO=0), for the
 * engine's threaded MD5 (src/engine/Md5.ts), which lives in the same addon.
 */
export function nativeCryptoModule(): object | null {
  return nativeModule;
}

/** Which implementation the in-place functions use (for status and the benchmark). */
export const aeadImplementation: 'native' | 'node:crypto' = native ? 'native' : 'node:crypto';

export const KEY_BYTES = 32;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;

function assertBytes(name: string, value: Uint8Array, length?: number): void {
  if (!(value instanceof Uint8Array)) throw new TypeError(`${name}: expected bytes`);
  if (length !== undefined && value.length !== length) {
    throw new TypeError(`${name}: expected ${length} bytes, got ${value.length}`);
  }
}

/** Returns ciphertext || tag. */
export function gcmSeal(
  key: Uint8Array,
  nonce: Uint8Array,
  plaintext: Uint8Array,
  aad: Uint8Array,
): Buffer {
  assertBytes('key', key, KEY_BYTES);
  assertBytes('nonce', nonce, NONCE_BYTES);
  assertBytes('plaintext', plaintext);
  assertBytes('aad', aad);
  if (native) {
    const out = Buffer.allocUnsafe(plaintext.length + TAG_BYTES);
    native.sealInto(key, nonce, aad, plaintext, out);
    return out;
  }
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const body = cipher.update(plaintext);
  const rest = cipher.final();
  const tag = cipher.getAuthTag();
  return rest.length === 0 ? Buffer.concat([body, tag]) : Buffer.concat([body, rest, tag]);
}

/** Opens ciphertext || tag; any mismatch is an Integrity error, never partial plaintext. */
export function gcmOpen(
  key: Uint8Array,
  nonce: Uint8Array,
  sealed: Uint8Array,
  aad: Uint8Array,
  what = 'ciphertext',
): Buffer {
  assertBytes('key', key, KEY_BYTES);
  assertBytes('nonce', nonce, NONCE_BYTES);
  assertBytes('aad', aad);
  if (sealed.length < TAG_BYTES) throw new MountdError(ErrorCode.Integrity, `${what}: too short`);
  if (native) {
    const out = Buffer.allocUnsafe(sealed.length - TAG_BYTES);
    if (!native.openInto(key, nonce, aad, sealed, out)) throw new MountdError(ErrorCode.Integrity, `${what}: integrity check failed`);
    return out;
  }
  const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  const body = decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES));
  try {
    const rest = decipher.final();
    return rest.length === 0 ? body : Buffer.concat([body, rest]);
  } catch (err) {
    body.fill(0);
    throw new MountdError(ErrorCode.Integrity, `${what}: integrity check failed`, { cause: err });
  }
}

/**
 * Seals `plaintext` into `out` (ciphertext || tag, `plaintext.length + 16` bytes) without
 * allocating: the bulk path for packages.
 */
export function gcmSealInto(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array, out: Uint8Array): void {
  assertBytes('key', key, KEY_BYTES);
  assertBytes('nonce', nonce, NONCE_BYTES);
  assertBytes('plaintext', plaintext);
  assertBytes('aad', aad);
  assertBytes('out', out, plaintext.length + TAG_BYTES);
  if (native) return native.sealInto(key, nonce, aad, plaintext, out);
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  let at = 0;
  for (const part of [cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]) {
    out.set(part, at);
    at += part.length;
  }
}

/**
 * Opens ciphertext || tag into `out` (`sealed.length - 16` bytes) without allocating; any
 * mismatch is an Integrity error and leaves `out` zeroed, never partial plaintext.
 */
export function gcmOpenInto(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad: Uint8Array, out: Uint8Array, what = 'ciphertext'): void {
  assertBytes('key', key, KEY_BYTES);
  assertBytes('nonce', nonce, NONCE_BYTES);
  assertBytes('aad', aad);
  if (sealed.length < TAG_BYTES) throw new MountdError(ErrorCode.Integrity, `${what}: too short`);
  assertBytes('out', out, sealed.length - TAG_BYTES);
  if (native) {
    if (!native.openInto(key, nonce, aad, sealed, out)) throw new MountdError(ErrorCode.Integrity, `${what}: integrity check failed`);
    return;
  }
  const plain = gcmOpen(key, nonce, sealed, aad, what);
  out.set(plain);
  plain.fill(0);
}
