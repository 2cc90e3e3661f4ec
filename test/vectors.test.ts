// Known-answer vectors that freeze format version 1: every vector recomputed with src/ and with @noble, independently.
import test from 'ava';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gcm } from '@noble/ciphers/aes.js';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import {
  CUSTOMER_SECRET_LABEL,
  Domain,
  KEK_LABEL,
  SEAL_ALGORITHM,
  customerSecret,
  deriveKek,
  gcmOpen,
  gcmSeal,
  metadataKey,
  openMetadata,
  sealMetadata,
  sealObjectKey,
  unsealObjectKey,
} from '../src/crypto/index.js';
import {
  HEADER_BYTES,
  PACKAGE_CIPHERTEXT,
  PACKAGE_PLAINTEXT,
  backingSize,
  decodeHeader,
  decodeRecord,
  encodeHeader,
  encodeRecord,
  packageAad,
  packageCount,
  plaintextSize,
  sealAad,
  type KeyKind,
  type KeyRecord,
} from '../src/format/index.js';

const load = <T>(name: string): T => JSON.parse(readFileSync(new URL(`./vectors/${name}`, import.meta.url), 'utf8')) as T;
const h = (s: string) => Buffer.from(s, 'hex');
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const enc = new TextEncoder();

interface RecordFields {
  version: number;
  algorithm: number;
  kind: number;
  keyName: string;
  dekCiphertext: string;
  context: string;
  iv: string;
}
const toRecordBase = (r: RecordFields): Omit<KeyRecord, 'sealedKey'> => ({
  version: r.version,
  algorithm: r.algorithm,
  kind: r.kind as KeyKind,
  keyName: r.keyName,
  dekCiphertext: h(r.dekCiphertext),
  context: Buffer.from(r.context, 'utf8'),
  iv: h(r.iv),
});

/** The KEK derivation written from FORMAT.md with @noble/hashes, not from src/. */
function nobleKek(secret: Uint8Array, iv: Uint8Array, domain: string, path: string): Uint8Array {
  const parts = [enc.encode('mountd key encryption key derivation v1'), iv, enc.encode(domain), enc.encode('AES-256-GCM sealed object key, HMAC-SHA256 derived key'), enc.encode(path)];
  const chunks: Uint8Array[] = [];
  for (const p of parts) {
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, p.length);
    chunks.push(len, p);
  }
  return hmac(sha256, secret, Buffer.concat(chunks));
}

for (const file of ['kek.json', 'seal.json', 'record.json', 'packages.json', 'metadata.json', 'sizes.json']) {
  test(`${file} says it must never change and where it came from`, (t) => {
    const doc = load<{ comment: string; provenance: string }>(file);
    t.regex(doc.comment, /must never change/);
    t.regex(doc.provenance, /make-vectors\.mjs/);
  });
}

interface KekDoc {
  label: string;
  sealAlgorithm: string;
  domains: { keyServer: string; customer: string };
  cases: Array<{ name: string; secret: string; iv: string; domain: string; path: string; message: string; kek: string }>;
  customerSecret: { label: string; cases: Array<{ customerKey: string; secret: string }> };
}

test('KEK derivation: the label strings in the code are the frozen ones', (t) => {
  const doc = load<KekDoc>('kek.json');
  t.is(KEK_LABEL, doc.label);
  t.is(SEAL_ALGORITHM, doc.sealAlgorithm);
  t.is(Domain.KeyServer as string, doc.domains.keyServer);
  t.is(Domain.Customer as string, doc.domains.customer);
  t.is(CUSTOMER_SECRET_LABEL, doc.customerSecret.label);
});

test('KEK derivation: src/crypto and @noble give the frozen KEK', (t) => {
  const doc = load<KekDoc>('kek.json');
  t.is(doc.cases.length, 4);
  const keks = new Set<string>();
  for (const c of doc.cases) {
    t.is(hex(deriveKek(h(c.secret), h(c.iv), c.domain, c.path)), c.kek, `src: ${c.name}`);
    t.is(hex(nobleKek(h(c.secret), h(c.iv), c.domain, c.path)), c.kek, `noble: ${c.name}`);
    t.is(hex(hmac(sha256, h(c.secret), h(c.message))), c.kek, `message: ${c.name}`);
    keks.add(c.kek);
  }
  t.is(keks.size, doc.cases.length, 'a path that differs by one byte gives another KEK');
});

test('customer secret: src/crypto and @noble give the frozen secret', (t) => {
  const doc = load<KekDoc>('kek.json');
  for (const c of doc.customerSecret.cases) {
    t.is(hex(customerSecret(h(c.customerKey))), c.secret);
    t.is(hex(hmac(sha256, h(c.customerKey), enc.encode(doc.customerSecret.label))), c.secret);
  }
});

interface SealDoc {
  cases: Array<{ name: string; record: RecordFields; secret: string; customerKey?: string; domain: string; path: string; nonce: string; oek: string; sealAad: string; kek: string; sealedKey: string }>;
}

test('OEK seal: sealAad, KEK and sealed key from src/ and @noble match the vectors; src unseals them', (t) => {
  const doc = load<SealDoc>('seal.json');
  t.is(doc.cases.length, 3);
  for (const c of doc.cases) {
    const base = toRecordBase(c.record);
    const aad = sealAad(base);
    t.is(hex(aad), c.sealAad, c.name);
    if (c.customerKey) t.is(hex(customerSecret(h(c.customerKey))), c.secret, c.name);
    const params = { secret: h(c.secret), iv: h(c.record.iv), domain: c.domain, path: c.path, aad };
    t.is(hex(sealObjectKey(h(c.oek), h(c.nonce), params)), c.sealedKey, `src seal: ${c.name}`);
    const kek = nobleKek(h(c.secret), h(c.record.iv), c.domain, c.path);
    t.is(hex(kek), c.kek, c.name);
    const nobleSealed = Buffer.concat([h(c.nonce), gcm(kek, h(c.nonce), aad).encrypt(h(c.oek))]);
    t.is(hex(nobleSealed), c.sealedKey, `noble seal: ${c.name}`);
    t.is(hex(unsealObjectKey(h(c.sealedKey), params)), c.oek, `src unseal: ${c.name}`);
    const sealed = h(c.sealedKey);
    t.is(hex(gcm(kek, sealed.subarray(0, 12), aad).decrypt(sealed.subarray(12))), c.oek, `noble unseal: ${c.name}`);
    // The same seal does not open for another path or domain.
    t.throws(() => unsealObjectKey(sealed, { ...params, path: `${c.path}x` }), { message: /integrity/ });
    t.throws(() => unsealObjectKey(sealed, { ...params, domain: c.domain === Domain.KeyServer ? Domain.Customer : Domain.KeyServer }), { message: /integrity/ });
  }
});

interface RecordDoc {
  cases: Array<{ name: string; record: RecordFields & { sealedKey: string }; bytes: string }>;
}

test('key record encoding: fields encode to the frozen bytes and decode back', (t) => {
  const doc = load<RecordDoc>('record.json');
  t.is(doc.cases.length, 3);
  t.deepEqual(
    doc.cases.map((c) => c.record.kind),
    [1, 2, 3],
  );
  for (const c of doc.cases) {
    const rec: KeyRecord = { ...toRecordBase(c.record), sealedKey: h(c.record.sealedKey) };
    t.is(hex(encodeRecord(rec)), c.bytes, c.name);
    const back = decodeRecord(h(c.bytes));
    t.deepEqual({ ...back, dekCiphertext: hex(back.dekCiphertext), context: back.context.toString('utf8'), iv: hex(back.iv), sealedKey: hex(back.sealedKey) }, c.record, c.name);
  }
});

interface PackagesDoc {
  oek: string;
  fileId: string;
  header: string;
  cases: Array<{
    name: string;
    index: number;
    final: boolean;
    nonce: string;
    aad: string;
    plaintext?: string;
    stored?: string;
    plaintextFill?: number;
    plaintextLength?: number;
    storedSha256?: string;
    storedLength?: number;
  }>;
}

test('header and package encryption: src/ and @noble produce the frozen bytes and decrypt them', (t) => {
  const doc = load<PackagesDoc>('packages.json');
  const header = encodeHeader(h(doc.fileId));
  t.is(hex(header.bytes), doc.header);
  t.is(hex(decodeHeader(h(doc.header)).fileId), doc.fileId);
  const oek = h(doc.oek);
  t.is(doc.cases.length, 5);
  for (const c of doc.cases) {
    const aad = packageAad(header.bytes, c.index, c.final);
    t.is(hex(aad), c.aad, c.name);
    const plaintext = c.plaintext !== undefined ? h(c.plaintext) : Buffer.alloc(c.plaintextLength!, c.plaintextFill!);
    const srcStored = Buffer.concat([h(c.nonce), gcmSeal(oek, h(c.nonce), plaintext, aad)]);
    const nobleStored = Buffer.concat([h(c.nonce), gcm(oek, h(c.nonce), aad).encrypt(plaintext)]);
    if (c.stored !== undefined) {
      t.is(hex(srcStored), c.stored, `src: ${c.name}`);
      t.is(hex(nobleStored), c.stored, `noble: ${c.name}`);
    } else {
      t.is(srcStored.length, c.storedLength!);
      t.is(createHash('sha256').update(srcStored).digest('hex'), c.storedSha256!, `src: ${c.name}`);
      t.is(hex(sha256(nobleStored)), c.storedSha256!, `noble: ${c.name}`);
    }
    t.deepEqual(gcmOpen(oek, srcStored.subarray(0, 12), srcStored.subarray(12), aad), plaintext);
    // Position and the final flag are bound.
    t.throws(() => gcmOpen(oek, srcStored.subarray(0, 12), srcStored.subarray(12), packageAad(header.bytes, c.index + 1, c.final)));
    t.throws(() => gcmOpen(oek, srcStored.subarray(0, 12), srcStored.subarray(12), packageAad(header.bytes, c.index, !c.final)));
  }
});

interface MetadataDoc {
  cases: Array<{ name: string; oek: string; header: string; nonce: string; json: string; metadataKey: string; aad: string; sealed: string }>;
}

test('object metadata seal: src/ and @noble produce the frozen bytes', (t) => {
  const doc = load<MetadataDoc>('metadata.json');
  for (const c of doc.cases) {
    t.is(hex(metadataKey(h(c.oek))), c.metadataKey);
    t.is(hex(hmac(sha256, h(c.oek), enc.encode('mountd object metadata key v1'))), c.metadataKey);
    // The engine's metadata AAD (Engine.metaAad is private): the label and the header.
    const aad = Buffer.concat([Buffer.from('mountd object metadata v1\0', 'utf8'), h(c.header)]);
    t.is(hex(aad), c.aad);
    const plain = Buffer.from(c.json, 'utf8');
    t.is(hex(sealMetadata(h(c.oek), h(c.nonce), plain, aad)), c.sealed);
    const sealed = h(c.sealed);
    t.is(sealed[0], 1);
    t.is(Buffer.from(gcm(h(c.metadataKey), sealed.subarray(1, 13), aad).decrypt(sealed.subarray(13))).toString('utf8'), c.json);
    t.is(openMetadata(h(c.oek), sealed, aad).toString('utf8'), c.json);
  }
});

interface SizesDoc {
  packagePlaintext: number;
  packageCiphertext: number;
  headerBytes: number;
  table: Array<{ plaintext: number; packages: number; backing: number }>;
  invalidBacking: number[];
}

test('plaintextSize/backingSize table', (t) => {
  const doc = load<SizesDoc>('sizes.json');
  t.is(PACKAGE_PLAINTEXT, doc.packagePlaintext);
  t.is(PACKAGE_CIPHERTEXT, doc.packageCiphertext);
  t.is(HEADER_BYTES, doc.headerBytes);
  t.true(doc.table.length >= 10);
  for (const row of doc.table) {
    t.is(backingSize(row.plaintext), row.backing, `backing(${row.plaintext})`);
    t.is(plaintextSize(row.backing), row.plaintext, `plaintext(${row.backing})`);
    t.is(packageCount(row.plaintext), row.packages, `packages(${row.plaintext})`);
  }
  for (const b of doc.invalidBacking) {
    t.throws(() => plaintextSize(b), { code: 'ENGINE_INTEGRITY' }, `backing size ${b} is invalid`);
  }
});
