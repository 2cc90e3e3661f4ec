// Injectable randomness, so that tests can make the format's random fields deterministic.
import { randomBytes as nodeRandomBytes, randomFillSync } from 'node:crypto';

export type RandomSource = (length: number) => Uint8Array;

/** Requests up to this size are served from the pool; larger ones go to the CSPRNG directly. */
const POOLED_MAX = 64;
const POOL_SIZE = 4096;
let pool: Buffer = Buffer.alloc(0);
let at = 0;

/**
 * The system CSPRNG (OpenSSL's, through node:crypto), drawn 4 KiB at a time: every file the mount
 * creates takes about ten small random values (header id, key, nonces), and each call into
 * OpenSSL costs microseconds of its own (locking, a fork check). Bytes leave the pool once, as
 * a copy, and are wiped from it as they go, so no key or nonce stays behind in the pool.
 */
export const systemRandom: RandomSource = (length) => {
  if (length > POOLED_MAX) return nodeRandomBytes(length);
  if (at + length > pool.length) {
    pool = randomFillSync(Buffer.allocUnsafeSlow(POOL_SIZE));
    at = 0;
  }
  const out = Buffer.from(pool.subarray(at, at + length));
  pool.fill(0, at, at + length);
  at += length;
  return out;
};
