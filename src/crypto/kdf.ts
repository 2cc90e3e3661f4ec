// Key Encryption Key derivation: HMAC-SHA256 keyed by a DEK over length-prefixed, labelled parts.
import { createHmac } from 'node:crypto';

/**
 * Never change these strings or the encoding below: they are part of the on-disk format
 * (FORMAT.md, "Key Encryption Key"), frozen by test/vectors/kek.json.
 */
export const KEK_LABEL = 'mountd key encryption key derivation v1';

/** Domains separate keys derived for different purposes from the same secret. */
export const Domain = {
  /** Objects sealed under a key server's DEK (the default key, or a named key: SSE-S3/SSE-KMS). */
  KeyServer: 'mountd object key sealed with a key server data key',
  /** Objects sealed under a key the S3 client supplies with each request (SSE-C). */
  Customer: 'mountd object key sealed with a customer-provided key',
} as const;
export type Domain = (typeof Domain)[keyof typeof Domain];

export const SEAL_ALGORITHM = 'AES-256-GCM sealed object key, HMAC-SHA256 derived key';

function u32be(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** u32 big-endian length || bytes, for each part: no two part lists encode alike. */
export function lengthPrefixed(parts: readonly Uint8Array[]): Buffer {
  const chunks: Buffer[] = [];
  for (const p of parts) chunks.push(u32be(p.length), Buffer.from(p.buffer, p.byteOffset, p.length));
  return Buffer.concat(chunks);
}

/**
 * KEK = HMAC-SHA256(secret, lp(label) || lp(iv) || lp(domain) || lp(sealAlgorithm) || lp(path)).
 * `path` is the canonical "bucket/object"; binding it means a backing file copied or moved by
 * anyone but the engine no longer unseals.
 */
export function deriveKek(secret: Uint8Array, iv: Uint8Array, domain: string, path: string): Buffer {
  if (secret.length !== 32) throw new TypeError('deriveKek: secret must be 32 bytes');
  if (iv.length !== 32) throw new TypeError('deriveKek: iv must be 32 bytes');
  const enc = new TextEncoder();
  const message = lengthPrefixed([
    enc.encode(KEK_LABEL),
    iv,
    enc.encode(domain),
    enc.encode(SEAL_ALGORITHM),
    enc.encode(path),
  ]);
  return createHmac('sha256', secret).update(message).digest();
}

/**
 * The secret an SSE-C object's KEK derives from: HMAC-SHA256(customer key, label), so that the
 * customer's key is never used directly as the KEK derivation key.
 */
export const CUSTOMER_SECRET_LABEL = 'mountd customer key secret v1';
export function customerSecret(customerKey: Uint8Array): Buffer {
  if (customerKey.length !== 32) throw new TypeError('customer key must be 32 bytes');
  return createHmac('sha256', customerKey).update(CUSTOMER_SECRET_LABEL).digest();
}

/** Object metadata (ETag, content type, user metadata) is encrypted under a subkey of the OEK. */
export const METADATA_KEY_LABEL = 'mountd object metadata key v1';
export function metadataKey(oek: Uint8Array): Buffer {
  return createHmac('sha256', oek).update(METADATA_KEY_LABEL).digest();
}
