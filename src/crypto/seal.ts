// Seals and unseals a 32-byte Object Encryption Key under a derived KEK; the sealed form may be stored anywhere.
import { ErrorCode, MountdError } from '../errors/index.js';
import { NONCE_BYTES, gcmOpen, gcmSeal } from './aead.js';
import { deriveKek, metadataKey } from './kdf.js';

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

export const METADATA_VERSION = 1;

/** version(1) || nonce(12) || AES-256-GCM(metadataKey(oek), nonce, plaintext, aad). */
export function sealMetadata(oek: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Buffer {
  const key = metadataKey(oek);
  try {
    return Buffer.concat([Buffer.from([METADATA_VERSION]), Buffer.from(nonce), gcmSeal(key, nonce, plaintext, aad)]);
  } finally {
    key.fill(0);
  }
}

export function openMetadata(oek: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Buffer {
  if (sealed.length < 1 + NONCE_BYTES + 16 || sealed[0] !== METADATA_VERSION) {
    throw new MountdError(ErrorCode.Integrity, 'object metadata: unknown version or truncated');
  }
  const key = metadataKey(oek);
  try {
    return gcmOpen(key, sealed.subarray(1, 1 + NONCE_BYTES), sealed.subarray(1 + NONCE_BYTES), aad, 'object metadata');
  } finally {
    key.fill(0);
  }
}
