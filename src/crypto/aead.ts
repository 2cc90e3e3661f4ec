// AES-256-GCM through node:crypto (OpenSSL, AES-NI): the bulk cipher for packages and key seals.
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { ErrorCode, MountdError } from '../errors/index.js';

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
