// Seals and unseals a 32-byte Object Encryption Key under a derived KEK; the sealed form may be stored anywhere.
import { ErrorCode, MountdError } from '../errors/index.js';
import { NONCE_BYTES, gcmOpen, gcmSeal } from './aead.js';
import { deriveKek } from './kdf.js';

export const SEALED_KEY_BYTES = NONCE_BYTES + 32 + 16;

export interface SealParams {
  /** The DEK (or, for SSE-C, a key derived from the customer's key). */
  secret: Uint8Array;
  /** 32 random bytes, stored beside the sealed key. */
  iv: Uint8Array;
  domain: string;
  /** Canonical "bucket/object". */
  path: string;
  /** Bytes of the key record that must not change without detection (see FORMAT.md). */
  aad: Uint8Array;
}

/** Returns nonce(12) || AES-256-GCM(KEK, nonce, oek, aad) (60 bytes). */
export function sealObjectKey(oek: Uint8Array, nonce: Uint8Array, p: SealParams): Buffer {
  if (oek.length !== 32) throw new TypeError('sealObjectKey: object key must be 32 bytes');
  const kek = deriveKek(p.secret, p.iv, p.domain, p.path);
  try {
    return Buffer.concat([Buffer.from(nonce), gcmSeal(kek, nonce, oek, p.aad)]);
  } finally {
    kek.fill(0);
  }
}

export function unsealObjectKey(sealed: Uint8Array, p: SealParams): Buffer {
  if (sealed.length !== SEALED_KEY_BYTES) {
    throw new MountdError(ErrorCode.Integrity, 'sealed object key: wrong length');
  }
  const kek = deriveKek(p.secret, p.iv, p.domain, p.path);
  try {
    return gcmOpen(kek, sealed.subarray(0, NONCE_BYTES), sealed.subarray(NONCE_BYTES), p.aad, 'sealed object key');
  } finally {
    kek.fill(0);
  }
}
