// Produces the known-answer vectors in this folder from the prose of FORMAT.md with node:crypto alone (no src/ import).
//
// The vectors must never change: they freeze the on-disk format. This script therefore only
// creates a vector file that does not exist yet, and for one that does, checks that it would
// produce exactly the same content (exit 1 otherwise). test/vectors.test.ts recomputes every
// vector with the code under src/ and with @noble/ciphers + @noble/hashes.
//
//   node test/vectors/make-vectors.mjs
import { createCipheriv, createHash, createHmac } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const NEVER_CHANGE = 'These vectors must never change: they freeze on-disk format version 1 (FORMAT.md). A new format gets new files; these stay.';
const PROVENANCE =
  'Computed by test/vectors/make-vectors.mjs from the prose of FORMAT.md with node:crypto only (createHmac sha256, createCipheriv aes-256-gcm), without importing src/; cross-checked against src/ and against @noble/ciphers gcm + @noble/hashes hmac(sha256) in test/vectors.test.ts.';

/** n bytes counting up from `start` (mod 256). */
const seq = (start, n) => Buffer.from(Array.from({ length: n }, (_, i) => (start + i) & 0xff));
const hex = (b) => Buffer.from(b).toString('hex');
const u32 = (n) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const lp = (parts) => Buffer.concat(parts.flatMap((p) => [u32(p.length), Buffer.from(p)]));
const lp16 = (p) => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(p.length);
  return Buffer.concat([b, Buffer.from(p)]);
};
const hmac = (key, msg) => createHmac('sha256', key).update(msg).digest();
const gcm = (key, nonce, plaintext, aad) => {
  const c = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 });
  c.setAAD(aad);
  return Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
};

const KEK_LABEL = 'mountd key encryption key derivation v1';
const SEAL_ALGORITHM = 'AES-256-GCM sealed object key, HMAC-SHA256 derived key';
const DOMAIN_KEY_SERVER = 'mountd object key sealed with a key server data key';
const DOMAIN_CUSTOMER = 'mountd object key sealed with a customer-provided key';
const CUSTOMER_SECRET_LABEL = 'mountd customer key secret v1';
const METADATA_KEY_LABEL = 'mountd object metadata key v1';
const METADATA_AAD_LABEL = 'mountd object metadata v1\0';

const kek = (secret, iv, domain, path) =>
  hmac(secret, lp([Buffer.from(KEK_LABEL), iv, Buffer.from(domain), Buffer.from(SEAL_ALGORITHM), Buffer.from(path, 'utf8')]));

const sealAad = (r) =>
  Buffer.concat([Buffer.from([r.version, r.algorithm, r.kind, 0]), lp16(Buffer.from(r.keyName, 'utf8')), lp16(r.dekCiphertext), lp16(r.context), lp16(r.iv)]);

const header = (fileId) => {
  const h = Buffer.alloc(32);
  h.write('mntd', 0, 'latin1');
  h[4] = 1;
  h[5] = 1;
  fileId.copy(h, 8);
  return h;
};

const packageAad = (hdr, index, final) => {
  const a = Buffer.alloc(41);
  hdr.copy(a, 0);
  a.writeBigUInt64BE(BigInt(index), 32);
  a[40] = final ? 1 : 0;
  return a;
};

// ---- KEK derivation ----
const kekCases = [
  { name: 'key server domain, flat key', secret: seq(0x00, 32), iv: seq(0x20, 32), domain: DOMAIN_KEY_SERVER, path: 'bucket/object' },
  { name: 'customer domain, non-ASCII nested key', secret: seq(0x40, 32), iv: seq(0x60, 32), domain: DOMAIN_CUSTOMER, path: 'photos/2024/ünïcødé 🐈.jpg' },
  { name: 'all-ones secret, zero iv, deep key', secret: Buffer.alloc(32, 0xff), iv: Buffer.alloc(32, 0), domain: DOMAIN_KEY_SERVER, path: 'b0/a/b/c/d' },
  // Same bytes as the first case once concatenated without lengths: the length prefixes must separate them.
  { name: 'path moved across the boundary', secret: seq(0x00, 32), iv: seq(0x20, 32), domain: DOMAIN_KEY_SERVER, path: 'bucket/objec' },
];
const kekJson = {
  comment: NEVER_CHANGE,
  provenance: PROVENANCE,
  encoding: 'KEK = HMAC-SHA256(secret, lp(label) || lp(iv) || lp(domain) || lp(sealAlgorithm) || lp(UTF-8 path)), lp(x) = u32be(len(x)) || x',
  label: KEK_LABEL,
  sealAlgorithm: SEAL_ALGORITHM,
  domains: { keyServer: DOMAIN_KEY_SERVER, customer: DOMAIN_CUSTOMER },
  cases: kekCases.map((c) => ({
    name: c.name,
    secret: hex(c.secret),
    iv: hex(c.iv),
    domain: c.domain,
    path: c.path,
    message: hex(lp([Buffer.from(KEK_LABEL), c.iv, Buffer.from(c.domain), Buffer.from(SEAL_ALGORITHM), Buffer.from(c.path, 'utf8')])),
    kek: hex(kek(c.secret, c.iv, c.domain, c.path)),
  })),
  customerSecret: {
    encoding: 'C = HMAC-SHA256(customer key, "mountd customer key secret v1")',
    label: CUSTOMER_SECRET_LABEL,
    cases: [seq(0x80, 32), Buffer.alloc(32, 0x09)].map((k) => ({ customerKey: hex(k), secret: hex(hmac(k, Buffer.from(CUSTOMER_SECRET_LABEL))) })),
  },
};

// ---- key records and OEK seals ----
const recordDefault = {
  version: 1,
  algorithm: 1,
  kind: 1,
  keyName: 'default-key',
  dekCiphertext: seq(0xa0, 76),
  context: Buffer.from('{"bucket":"bucket/object"}'),
  iv: seq(0x20, 32),
};
const recordNamed = {
  version: 1,
  algorithm: 1,
  kind: 2,
  keyName: 'tenant-a',
  dekCiphertext: seq(0x33, 76),
  context: Buffer.from('{"photos":"photos/2024/ünïcødé 🐈.jpg"}'),
  iv: seq(0x60, 32),
};
const customerKey = seq(0x80, 32);
const recordCustomer = { version: 1, algorithm: 1, kind: 3, keyName: '', dekCiphertext: Buffer.alloc(0), context: Buffer.alloc(0), iv: seq(0xe0, 32) };

const sealCases = [
  { name: 'default key', record: recordDefault, secret: seq(0x00, 32), domain: DOMAIN_KEY_SERVER, path: 'bucket/object', nonce: seq(0xc0, 12), oek: seq(0xd0, 32) },
  { name: 'named key, non-ASCII key', record: recordNamed, secret: seq(0x40, 32), domain: DOMAIN_KEY_SERVER, path: 'photos/2024/ünïcødé 🐈.jpg', nonce: seq(0xcc, 12), oek: Buffer.alloc(32, 0x5a) },
  {
    name: 'customer key (SSE-C)',
    record: recordCustomer,
    customerKey,
    secret: hmac(customerKey, Buffer.from(CUSTOMER_SECRET_LABEL)),
    domain: DOMAIN_CUSTOMER,
    path: 'bucket/ssec/object',
    nonce: seq(0x01, 12),
    oek: seq(0x90, 32),
  },
];
const recordJson = (r) => ({
  version: r.version,
  algorithm: r.algorithm,
  kind: r.kind,
  keyName: r.keyName,
  dekCiphertext: hex(r.dekCiphertext),
  context: r.context.toString('utf8'),
  iv: hex(r.iv),
});
const sealJson = {
  comment: NEVER_CHANGE,
  provenance: PROVENANCE,
  encoding:
    'sealedKey = nonce(12) || AES-256-GCM(KEK, nonce, OEK, AAD = sealAad(record)); sealAad = version || algorithm || kind || 0 || lp16(keyName) || lp16(dekCiphertext) || lp16(context) || lp16(iv); KEK as in kek.json with the path "BUCKET/KEY"',
  cases: sealCases.map((c) => {
    const aad = sealAad(c.record);
    const k = kek(c.secret, c.record.iv, c.domain, c.path);
    const sealed = Buffer.concat([c.nonce, gcm(k, c.nonce, c.oek, aad)]);
    return {
      name: c.name,
      record: recordJson(c.record),
      ...(c.customerKey ? { customerKey: hex(c.customerKey) } : {}),
      secret: hex(c.secret),
      domain: c.domain,
      path: c.path,
      nonce: hex(c.nonce),
      oek: hex(c.oek),
      sealAad: hex(aad),
      kek: hex(k),
      sealedKey: hex(sealed),
    };
  }),
};
const recordFileJson = {
  comment: NEVER_CHANGE,
  provenance: PROVENANCE,
  encoding:
    'record (xattr user.mountd.key) = u8 version || u8 algorithm || u8 kind || u8 0 || lp16(UTF-8 keyName) || lp16(dekCiphertext) || lp16(context) || lp16(iv) || lp16(sealedKey), lp16(x) = u16be(len(x)) || x',
  cases: sealCases.map((c) => {
    const aad = sealAad(c.record);
    const sealed = Buffer.concat([c.nonce, gcm(kek(c.secret, c.record.iv, c.domain, c.path), c.nonce, c.oek, aad)]);
    return { name: c.name, record: { ...recordJson(c.record), sealedKey: hex(sealed) }, bytes: hex(Buffer.concat([aad, lp16(sealed)])) };
  }),
};

// ---- packages ----
const fileId = seq(0x10, 16);
const hdr = header(fileId);
const packageCases = [
  { name: 'empty file: one empty final package', index: 0, final: true, nonce: seq(0x70, 12), plaintext: Buffer.alloc(0) },
  { name: 'first package, not final', index: 0, final: false, nonce: seq(0x71, 12), plaintext: Buffer.from('mountd package vector 0') },
  { name: 'sixth package, final, 100 bytes', index: 5, final: true, nonce: seq(0x72, 12), plaintext: seq(0x00, 100) },
  { name: 'index past 2^32', index: 2 ** 32 + 1, final: false, nonce: seq(0x73, 12), plaintext: Buffer.from('x') },
  { name: 'full 64 KiB package', index: 1, final: false, nonce: seq(0x74, 12), plaintext: Buffer.alloc(65536, 0x61) },
];
const oek = seq(0xd0, 32);
const packagesJson = {
  comment: NEVER_CHANGE,
  provenance: PROVENANCE,
  encoding: 'header = "mntd" || 1 || 1 || 0 0 || fileId(16) || 0*8; package = nonce(12) || AES-256-GCM(OEK, nonce, plaintext, AAD = header || u64be(index) || u8(final))',
  oek: hex(oek),
  fileId: hex(fileId),
  header: hex(hdr),
  cases: packageCases.map((c) => {
    const aad = packageAad(hdr, c.index, c.final);
    const stored = Buffer.concat([c.nonce, gcm(oek, c.nonce, c.plaintext, aad)]);
    const big = c.plaintext.length > 1024;
    return {
      name: c.name,
      index: c.index,
      final: c.final,
      nonce: hex(c.nonce),
      // The 64 KiB case is stored as a fill byte and a hash to keep the file small.
      ...(big
        ? { plaintextFill: c.plaintext[0], plaintextLength: c.plaintext.length, storedSha256: createHash('sha256').update(stored).digest('hex'), storedLength: stored.length }
        : { plaintext: hex(c.plaintext), stored: hex(stored) }),
      aad: hex(aad),
    };
  }),
};

// ---- object metadata ----
const metaPlain = Buffer.from('{"etag":"5d41402abc4b2a76b9719d911017c592","contentType":"text/plain","user":{"color":"blue","ünï":"cødé"}}', 'utf8');
const metaNonce = seq(0xb0, 12);
const mk = hmac(oek, Buffer.from(METADATA_KEY_LABEL));
const metaAad = Buffer.concat([Buffer.from(METADATA_AAD_LABEL, 'utf8'), hdr]);
const metadataJson = {
  comment: NEVER_CHANGE,
  provenance: PROVENANCE,
  encoding: 'meta = 1 || nonce(12) || AES-256-GCM(MK, nonce, JSON, AAD = "mountd object metadata v1\\0" || header); MK = HMAC-SHA256(OEK, "mountd object metadata key v1")',
  cases: [
    {
      name: 'etag, content type, non-ASCII user metadata',
      oek: hex(oek),
      header: hex(hdr),
      nonce: hex(metaNonce),
      json: metaPlain.toString('utf8'),
      metadataKey: hex(mk),
      aad: hex(metaAad),
      sealed: hex(Buffer.concat([Buffer.from([1]), metaNonce, gcm(mk, metaNonce, metaPlain, metaAad)])),
    },
  ],
};

// ---- sizes ----
const P = 65536;
const backing = (size) => {
  const n = Math.max(1, Math.ceil(size / P));
  return 32 + (n - 1) * (P + 28) + (size - (n - 1) * P) + 28;
};
const sizes = [0, 1, 100, 65535, 65536, 65537, 131071, 131072, 131073, 196608, 10 * 1024 * 1024, 10 * 1024 * 1024 + 1, 2 ** 32, 2 ** 40 + 12345];
const invalidBacking = [0, 31, 32, 59, 32 + 65564 + 1, 32 + 65564 + 27, 32 + 65564 + 28, 32 + 2 * 65564 + 28];
const sizesJson = {
  comment: NEVER_CHANGE,
  provenance: 'Computed by test/vectors/make-vectors.mjs from the formula in FORMAT.md (backing(size) = 32 + (N-1)*65564 + (size-(N-1)*65536) + 28, N = max(1, ceil(size/65536))); checked against src/format in test/vectors.test.ts.',
  packagePlaintext: P,
  packageCiphertext: P + 28,
  headerBytes: 32,
  table: sizes.map((s) => ({ plaintext: s, packages: Math.max(1, Math.ceil(s / P)), backing: backing(s) })),
  invalidBacking,
};

const outputs = {
  'kek.json': kekJson,
  'seal.json': sealJson,
  'record.json': recordFileJson,
  'packages.json': packagesJson,
  'metadata.json': metadataJson,
  'sizes.json': sizesJson,
};

let mismatch = false;
for (const [name, doc] of Object.entries(outputs)) {
  const file = join(here, name);
  const text = `${JSON.stringify(doc, null, 2)}\n`;
  if (!existsSync(file)) {
    writeFileSync(file, text);
    console.log(`wrote ${name}`);
  } else if (readFileSync(file, 'utf8') !== text) {
    console.error(`${name}: differs from what this script computes; vectors must never change`);
    mismatch = true;
  } else {
    console.log(`${name}: unchanged`);
  }
}
process.exit(mismatch ? 1 : 0);
