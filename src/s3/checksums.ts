// The flexible checksums S3 clients send (x-amz-checksum-*): CRC32, CRC32C, CRC64NVME, SHA-1, SHA-256.
import { createHash, type Hash } from 'node:crypto';
import * as zlib from 'node:zlib';

export const CHECKSUM_ALGORITHMS = ['crc32', 'crc32c', 'crc64nvme', 'sha1', 'sha256'] as const;
export type ChecksumAlgorithm = (typeof CHECKSUM_ALGORITHMS)[number];

export interface Checksummer {
  update(data: Uint8Array): void;
  /** Base64 of the big-endian digest, as the x-amz-checksum-* headers carry it. */
  digest(): string;
}

export function isChecksumAlgorithm(s: string): s is ChecksumAlgorithm {
  return (CHECKSUM_ALGORITHMS as readonly string[]).includes(s);
}

export function createChecksum(algorithm: ChecksumAlgorithm): Checksummer {
  switch (algorithm) {
    case 'crc32': {
      let crc = 0;
      return { update: (d) => void (crc = zlib.crc32(d, crc)), digest: () => u32(crc) };
    }
    case 'crc32c': {
      let crc = 0xffffffff;
      return {
        update(d) {
          const t = crc32cTable();
          for (let i = 0; i < d.length; i++) crc = t[(crc ^ d[i]!) & 0xff]! ^ (crc >>> 8);
        },
        digest: () => u32((crc ^ 0xffffffff) >>> 0),
      };
    }
    case 'crc64nvme': {
      // 64-bit reflected CRC kept as two 32-bit halves: BigInt per byte would be far too slow.
      let lo = 0xffffffff;
      let hi = 0xffffffff;
      return {
        update(d) {
          const [tlo, thi] = crc64Tables();
          for (let i = 0; i < d.length; i++) {
            const idx = (lo ^ d[i]!) & 0xff;
            lo = ((lo >>> 8) | (hi << 24)) ^ tlo[idx]!;
            hi = (hi >>> 8) ^ thi[idx]!;
          }
        },
        digest() {
          const b = Buffer.alloc(8);
          b.writeUInt32BE((hi ^ 0xffffffff) >>> 0, 0);
          b.writeUInt32BE((lo ^ 0xffffffff) >>> 0, 4);
          return b.toString('base64');
        },
      };
    }
    case 'sha1':
    case 'sha256': {
      const h: Hash = createHash(algorithm);
      return { update: (d) => void h.update(d), digest: () => h.digest('base64') };
    }
  }
}

function u32(n: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b.toString('base64');
}

let crc32c: Uint32Array | undefined;
function crc32cTable(): Uint32Array {
  if (!crc32c) {
    crc32c = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
      crc32c[n] = c >>> 0;
    }
  }
  return crc32c;
}

let crc64: [Uint32Array, Uint32Array] | undefined;
function crc64Tables(): [Uint32Array, Uint32Array] {
  if (!crc64) {
    const poly = 0x9a6c9329ac4bc9b5n;
    const lo = new Uint32Array(256);
    const hi = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = BigInt(n);
      for (let k = 0; k < 8; k++) c = c & 1n ? poly ^ (c >> 1n) : c >> 1n;
      lo[n] = Number(c & 0xffffffffn);
      hi[n] = Number(c >> 32n);
    }
    crc64 = [lo, hi];
  }
  return crc64;
}
