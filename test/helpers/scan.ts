// Independent inspection of a data directory: @noble decryption of what the engine wrote, and a scan for leaked secrets.
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { gcm } from '@noble/ciphers/aes.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { getAttributeSync, listAttributesSync } from '@napi-rs/xattr';
import { Domain, customerSecret } from '../../src/crypto/index.js';
import { KEY_RECORD_XATTR, KeyKind, decodeRecord, sealAad, type KeyRecord } from '../../src/format/index.js';
import type { KeyService } from '../../src/kms/KeyService.js';

const enc = new TextEncoder();
const HEADER = 32;
const PKG_PLAIN = 65536;
const PKG_CIPHER = PKG_PLAIN + 28;

function u32be(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

/** KEK from FORMAT.md, written with @noble/hashes: HMAC-SHA256(secret, lp(label)||lp(iv)||lp(domain)||lp(alg)||lp(path)). */
export function nobleKek(secret: Uint8Array, iv: Uint8Array, domain: string, objectPath: string): Uint8Array {
  const parts = [enc.encode('mountd key encryption key derivation v1'), iv, enc.encode(domain), enc.encode('AES-256-GCM sealed object key, HMAC-SHA256 derived key'), enc.encode(objectPath)];
  return hmac(sha256, secret, Buffer.concat(parts.flatMap((p) => [u32be(p.length), p])));
}

/** Unseals the OEK of a record with @noble: sealed = nonce(12) || GCM(KEK, nonce, OEK, AAD = sealAad(record)). */
export function nobleUnsealOek(record: KeyRecord, secret: Uint8Array, domain: string, objectPath: string): Buffer {
  const kek = nobleKek(secret, record.iv, domain, objectPath);
  return Buffer.from(gcm(kek, record.sealedKey.subarray(0, 12), sealAad(record)).decrypt(record.sealedKey.subarray(12)));
}

/** Decrypts a whole data file with @noble: AAD_i = header(32) || u64be(i) || u8(final). */
export function nobleDecryptFile(file: Buffer, oek: Uint8Array): Buffer {
  const header = file.subarray(0, HEADER);
  const out: Buffer[] = [];
  const body = file.length - HEADER;
  const count = Math.max(1, Math.ceil(body / PKG_CIPHER));
  for (let i = 0; i < count; i++) {
    const pkg = file.subarray(HEADER + i * PKG_CIPHER, Math.min(file.length, HEADER + (i + 1) * PKG_CIPHER));
    const aad = new Uint8Array(HEADER + 9);
    aad.set(header, 0);
    new DataView(aad.buffer).setBigUint64(HEADER, BigInt(i));
    aad[HEADER + 8] = i === count - 1 ? 1 : 0;
    out.push(Buffer.from(gcm(oek, pkg.subarray(0, 12), aad).decrypt(pkg.subarray(12))));
  }
  return Buffer.concat(out);
}

export function readRecordSync(file: string): KeyRecord {
  const raw = getAttributeSync(file, KEY_RECORD_XATTR);
  if (!raw) throw new Error(`${file}: no key record`);
  return decodeRecord(raw);
}

export interface Secret {
  label: string;
  bytes: Uint8Array;
  /** Paths relative to the scanned root where this secret may legitimately appear. */
  allowedIn?: string[];
}

/**
 * Collects the plaintext DEK and OEK of every data file below `root` that the key service can
 * still open (call it before disabling or deleting keys, and accumulate). Customer-key files
 * are opened with `customerKeys` (tried in turn).
 */
export async function collectFileKeys(root: string, keys: KeyService, customerKeys: Uint8Array[] = []): Promise<Secret[]> {
  const out: Secret[] = [];
  for (const rel of await listFiles(root)) {
    const top = rel.split(path.sep)[0];
    if (top === '.mountd') continue;
    const abs = path.join(root, rel);
    let record: KeyRecord;
    try {
      record = readRecordSync(abs);
    } catch {
      continue;
    }
    const objectPath = rel.split(path.sep).join('/');
    if (record.kind === KeyKind.Customer) {
      for (const ck of customerKeys) {
        try {
          const oek = nobleUnsealOek(record, customerSecret(ck), Domain.Customer, objectPath);
          out.push({ label: `OEK of ${objectPath}`, bytes: oek });
        } catch {
          // another customer key
        }
      }
      continue;
    }
    let dek: Uint8Array;
    try {
      dek = await keys.decrypt(record.keyName, record.dekCiphertext, record.context);
    } catch {
      continue;
    }
    out.push({ label: `DEK of ${objectPath}`, bytes: Buffer.from(dek) });
    out.push({ label: `OEK of ${objectPath}`, bytes: nobleUnsealOek(record, dek, Domain.KeyServer, objectPath) });
  }
  return out;
}

/** The embedded key server's master key and every EK it holds (unsealed with @noble from .mountd/kes). */
export async function collectKeyServerSecrets(root: string): Promise<Secret[]> {
  const kes = path.join(root, '.mountd', 'kes');
  const master = Buffer.from((await fsp.readFile(path.join(kes, 'master.key'), 'utf8')).trim(), 'hex');
  if (master.length !== 32) throw new Error('master.key is not 64 hex characters');
  const out: Secret[] = [{ label: 'master key', bytes: master, allowedIn: [path.join('.mountd', 'kes', 'master.key')] }];
  for (const n of await fsp.readdir(path.join(kes, 'keys')).catch(() => [] as string[])) {
    if (!n.endsWith('.key')) continue;
    const doc = JSON.parse(await fsp.readFile(path.join(kes, 'keys', n), 'utf8')) as {
      version: number;
      name: string;
      algorithm: string;
      created_at: string;
      created_by: string;
      enabled: boolean;
      sealed: string;
    };
    const sealed = Buffer.from(doc.sealed, 'base64');
    // FORMAT.md: version 2 authenticates every field, version 1 only the name.
    const aad =
      doc.version === 1
        ? Buffer.from(`mountd kes keystore v1\0${doc.name}`, 'utf8')
        : Buffer.from(`mountd kes keystore v2\0${JSON.stringify([doc.name, doc.algorithm, doc.created_at, doc.created_by, doc.enabled])}`, 'utf8');
    out.push({ label: `EK ${doc.name}`, bytes: Buffer.from(gcm(master, sealed.subarray(0, 12), aad).decrypt(sealed.subarray(12))) });
  }
  return out;
}

/** Every encoding under which a secret could leak: raw, hex (both cases), base64 at each byte alignment, base64url. */
export function needles(secret: Uint8Array): Array<{ how: string; bytes: Buffer }> {
  const raw = Buffer.from(secret);
  const out = [
    { how: 'raw', bytes: raw },
    { how: 'hex', bytes: Buffer.from(raw.toString('hex'), 'latin1') },
    { how: 'HEX', bytes: Buffer.from(raw.toString('hex').toUpperCase(), 'latin1') },
  ];
  if (raw.length >= 12) {
    for (let k = 0; k < 3; k++) {
      // With k bytes before it, the characters fully determined by the secret alone.
      const b64 = Buffer.concat([Buffer.alloc(k), raw]).toString('base64').replace(/=+$/, '');
      const inner = b64.slice(k === 0 ? 0 : 4, b64.length - 4);
      out.push({ how: `base64@${k}`, bytes: Buffer.from(inner, 'latin1') });
      out.push({ how: `base64url@${k}`, bytes: Buffer.from(inner.replace(/\+/g, '-').replace(/\//g, '_'), 'latin1') });
    }
  }
  return out;
}

/** All regular files and directories below root, relative, sorted. */
async function listEntries(root: string): Promise<Array<{ rel: string; dir: boolean }>> {
  const out: Array<{ rel: string; dir: boolean }> = [];
  const walk = async (rel: string) => {
    for (const d of await fsp.readdir(path.join(root, rel), { withFileTypes: true })) {
      const r = rel === '' ? d.name : path.join(rel, d.name);
      if (d.isDirectory()) {
        out.push({ rel: r, dir: true });
        await walk(r);
      } else if (d.isFile()) out.push({ rel: r, dir: false });
    }
  };
  await walk('');
  return out.sort((a, b) => (a.rel < b.rel ? -1 : 1));
}

export async function listFiles(root: string): Promise<string[]> {
  return (await listEntries(root)).filter((e) => !e.dir).map((e) => e.rel);
}

/**
 * Scans every file's contents and every xattr value of every file and directory below
 * `root` (the root included) for each secret in each encoding. Returns what was found
 * where, so that a test can assert `[]` and print the findings otherwise.
 */
export async function scanForSecrets(root: string, secrets: Secret[]): Promise<string[]> {
  const findings: string[] = [];
  const prepared = secrets.map((s) => ({ ...s, needles: needles(s.bytes) }));
  const check = (where: string, rel: string, data: Buffer) => {
    for (const s of prepared) {
      if (s.allowedIn?.includes(rel)) continue;
      for (const n of s.needles) {
        if (n.bytes.length > 0 && data.includes(n.bytes)) findings.push(`${s.label} (${n.how}) in ${where}`);
      }
    }
  };
  const entries = [{ rel: '', dir: true }, ...(await listEntries(root))];
  for (const e of entries) {
    const abs = path.join(root, e.rel);
    if (!e.dir) check(e.rel, e.rel, await fsp.readFile(abs));
    for (const name of listAttributesSync(abs)) {
      const value = getAttributeSync(abs, name);
      if (value) check(`${e.rel || '.'} xattr ${name}`, e.rel, value);
    }
  }
  return findings;
}

/** Plaintext marker strings as secrets. */
export function markerSecret(marker: string): Secret {
  return { label: `marker ${JSON.stringify(marker)}`, bytes: Buffer.from(marker, 'utf8') };
}
