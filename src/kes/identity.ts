// Identities of KES clients: hex SHA-256 of a certificate's SubjectPublicKeyInfo, `kes:v1:` API
// keys (Ed25519 seeds) and the self-signed certificates that carry them over mTLS.
//
// Node can parse X.509 but not create it, so this file holds a small DER writer and a minimal
// X.509 v3 certificate builder (Ed25519 or ECDSA P-256 with SHA-256). Certificates it makes are
// checked in the tests by Node's TLS stack, by X509Certificate and by `openssl x509`.

import {
  X509Certificate,
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign,
} from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { ErrorCode, MountdError } from '../errors/index.js';

export const API_KEY_PREFIX = 'kes:v1:';
const API_KEY_TYPE_ED25519 = 0x00;
const ED25519_SEED_LENGTH = 32;
/** PKCS#8 wrapping of a raw Ed25519 seed (RFC 8410): the 32 seed bytes follow this prefix. */
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

const IDENTITY_RE = /^[0-9a-f]{64}$/;

/** A KES identity is 64 lowercase hex characters: SHA-256 of the client's public key info. */
export function isIdentity(value: unknown): value is string {
  return typeof value === 'string' && IDENTITY_RE.test(value);
}

/** hex(SHA-256(DER SubjectPublicKeyInfo)) of a public (or private) key. */
export function identityOfPublicKey(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const spki = pub.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('hex');
}

/**
 * The identity of a certificate (DER bytes, PEM text or a parsed X509Certificate). The
 * SubjectPublicKeyInfo is hashed exactly as it appears in the certificate, as KES does,
 * never a re-encoding of it.
 */
export function identityOfCertificate(cert: X509Certificate | Uint8Array | string): string {
  let der: Uint8Array;
  if (cert instanceof X509Certificate) der = cert.raw;
  else if (typeof cert === 'string') der = new X509Certificate(cert).raw;
  else der = cert;
  return createHash('sha256').update(spkiOfCertificate(der)).digest('hex');
}

// ------------------------------------------------------------------ API keys

export interface ApiKey {
  /** The `kes:v1:...` text. Secret. */
  readonly text: string;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly identity: string;
}

/** A new random API key. */
export function generateApiKey(): ApiKey {
  const seed = randomBytes(ED25519_SEED_LENGTH);
  try {
    return apiKeyFromSeed(seed);
  } finally {
    seed.fill(0);
  }
}

/**
 * Parses `kes:v1:` + base64(0x00 || 32-byte Ed25519 seed). Messages never echo the input,
 * which may be a real key with a typo.
 */
export function parseApiKey(text: string): ApiKey {
  const bad = (why: string) => new MountdError(ErrorCode.InvalidArgument, `invalid API key: ${why}`);
  if (typeof text !== 'string') throw bad('not a string');
  const trimmed = text.trim();
  if (!trimmed.startsWith(API_KEY_PREFIX)) throw bad(`missing '${API_KEY_PREFIX}' prefix`);
  const b64 = trimmed.slice(API_KEY_PREFIX.length);
  if (!isStrictBase64(b64)) throw bad('not base64');
  const raw = Buffer.from(b64, 'base64');
  try {
    if (raw.length !== 1 + ED25519_SEED_LENGTH) throw bad('wrong length');
    if (raw[0] !== API_KEY_TYPE_ED25519) throw bad('unsupported key type');
    return apiKeyFromSeed(raw.subarray(1));
  } finally {
    raw.fill(0);
  }
}

function apiKeyFromSeed(seed: Uint8Array): ApiKey {
  const pkcs8 = Buffer.concat([PKCS8_ED25519_PREFIX, seed]);
  const body = Buffer.concat([Buffer.from([API_KEY_TYPE_ED25519]), seed]);
  try {
    const privateKey = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
    const publicKey = createPublicKey(privateKey);
    return { text: API_KEY_PREFIX + body.toString('base64'), privateKey, publicKey, identity: identityOfPublicKey(publicKey) };
  } finally {
    pkcs8.fill(0);
    body.fill(0);
  }
}

/** Standard base64 with padding, as Go's encoding/base64.StdEncoding accepts it. */
export function isStrictBase64(s: string): boolean {
  return s.length % 4 === 0 && /^[A-Za-z0-9+/]*={0,2}$/.test(s);
}

export interface ClientCredentials {
  /** PEM certificate. */
  cert: string;
  /** PEM PKCS#8 private key. Secret. */
  key: string;
  identity: string;
  notAfter: Date;
}

/** A self-signed client certificate for an API key (CN = identity, clientAuth), as KES clients make. */
export function certificateForApiKey(apiKey: ApiKey | string, options: { days?: number; now?: Date } = {}): ClientCredentials {
  const key = typeof apiKey === 'string' ? parseApiKey(apiKey) : apiKey;
  const cert = createSelfSignedCertificate({
    privateKey: key.privateKey,
    commonName: key.identity,
    usage: 'client',
    days: options.days ?? 90,
    now: options.now,
  });
  return {
    cert: cert.pem,
    key: key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    identity: key.identity,
    notAfter: cert.notAfter,
  };
}

// ------------------------------------------------------------------ certificates

export interface SelfSignedOptions {
  /** Ed25519 or EC P-256 private key. */
  privateKey: KeyObject;
  commonName: string;
  usage: 'client' | 'server' | 'both';
  /** subjectAltName entries. */
  dnsNames?: readonly string[];
  ipAddresses?: readonly string[];
  /** Validity in days from `now` (default 365). */
  days?: number;
  now?: Date;
}

export interface Certificate {
  der: Buffer;
  pem: string;
  notBefore: Date;
  notAfter: Date;
}

/** A new key pair for a server or client certificate: EC P-256, which every TLS stack accepts. */
export function generateCertificateKey(): KeyObject {
  return generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
}

/** Builds and signs a minimal self-signed X.509 v3 certificate. */
export function createSelfSignedCertificate(opts: SelfSignedOptions): Certificate {
  const now = opts.now ?? new Date();
  const days = opts.days ?? 365;
  if (!Number.isFinite(days) || days <= 0) throw new MountdError(ErrorCode.InvalidArgument, 'certificate validity must be a positive number of days');
  // A little slack before `now`, so a peer whose clock runs slightly behind accepts it.
  const notBefore = new Date(Math.floor(now.getTime() / 1000) * 1000 - 5 * 60 * 1000);
  const notAfter = new Date(Math.floor(now.getTime() / 1000) * 1000 + days * 86_400_000);

  const keyType = opts.privateKey.asymmetricKeyType;
  let sigAlg: Buffer;
  let signTbs: (tbs: Buffer) => Buffer;
  if (keyType === 'ed25519') {
    sigAlg = seq(oid(OID.ed25519));
    signTbs = (tbs) => sign(null, tbs, opts.privateKey);
  } else if (keyType === 'ec' && opts.privateKey.asymmetricKeyDetails?.namedCurve === 'prime256v1') {
    sigAlg = seq(oid(OID.ecdsaWithSha256));
    signTbs = (tbs) => sign('sha256', tbs, { key: opts.privateKey, dsaEncoding: 'der' });
  } else {
    throw new MountdError(ErrorCode.InvalidArgument, `certificate keys must be Ed25519 or EC P-256, not ${keyType}`);
  }

  const spki = createPublicKey(opts.privateKey).export({ type: 'spki', format: 'der' });
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01; // positive, 16 octets
  const name = seq(set(seq(oid(OID.commonName), utf8(opts.commonName))));

  const usages = opts.usage === 'both' ? [OID.serverAuth, OID.clientAuth] : [opts.usage === 'server' ? OID.serverAuth : OID.clientAuth];
  const extensions: Buffer[] = [
    extension(OID.basicConstraints, true, seq()),
    // digitalSignature only: (EC)DHE key exchange never uses keyEncipherment.
    extension(OID.keyUsage, true, tlv(0x03, Buffer.from([0x07, 0x80]))),
    extension(OID.extKeyUsage, false, seq(...usages.map(oid))),
    extension(OID.subjectKeyIdentifier, false, tlv(0x04, createHash('sha1').update(spkiKeyBits(spki)).digest())),
  ];
  const altNames: Buffer[] = [];
  for (const dns of opts.dnsNames ?? []) {
    if (!/^[A-Za-z0-9*.-]{1,253}$/.test(dns)) throw new MountdError(ErrorCode.InvalidArgument, `invalid DNS name ${JSON.stringify(dns)}`);
    altNames.push(tlv(0x82, Buffer.from(dns, 'ascii')));
  }
  for (const ip of opts.ipAddresses ?? []) altNames.push(tlv(0x87, ipBytes(ip)));
  if (altNames.length > 0) extensions.push(extension(OID.subjectAltName, false, seq(...altNames)));

  const tbs = seq(
    tlv(0xa0, integer(Buffer.from([2]))), // v3
    integer(serial),
    sigAlg,
    name,
    seq(time(notBefore), time(notAfter)),
    name,
    spki,
    tlv(0xa3, seq(...extensions)),
  );
  const signature = signTbs(tbs);
  const der = seq(tbs, sigAlg, bitString(signature));
  return { der, pem: toPem('CERTIFICATE', der), notBefore, notAfter };
}

export function toPem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

// ------------------------------------------------------------------ DER writer

const OID = {
  ed25519: '1.3.101.112',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  subjectKeyIdentifier: '2.5.29.14',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

function tlv(tag: number, ...contents: Uint8Array[]): Buffer {
  const body = Buffer.concat(contents);
  return Buffer.concat([Buffer.from([tag]), derLength(body.length), body]);
}

const seq = (...c: Uint8Array[]) => tlv(0x30, ...c);
const set = (...c: Uint8Array[]) => tlv(0x31, ...c);
const utf8 = (s: string) => tlv(0x0c, Buffer.from(s, 'utf8'));
const bitString = (b: Uint8Array) => tlv(0x03, Buffer.from([0]), b);

/** An unsigned big-endian integer in minimal two's complement form. */
function integer(unsigned: Uint8Array): Buffer {
  let i = 0;
  while (i < unsigned.length - 1 && unsigned[i] === 0) i++;
  let body = Buffer.from(unsigned.subarray(i));
  if (body.length === 0) body = Buffer.from([0]);
  if (body[0]! & 0x80) body = Buffer.concat([Buffer.from([0]), body]);
  return tlv(0x02, body);
}

function oid(dotted: string): Buffer {
  const arcs = dotted.split('.').map(Number);
  const out: number[] = [40 * arcs[0]! + arcs[1]!];
  for (const arc of arcs.slice(2)) {
    const chunk: number[] = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift(0x80 | (v & 0x7f));
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? seq(oid(id), tlv(0x01, Buffer.from([0xff])), tlv(0x04, value)) : seq(oid(id), tlv(0x04, value));
}

/** UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5). */
function time(d: Date): Buffer {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '');
  const year = d.getUTCFullYear();
  if (year < 2050) return tlv(0x17, Buffer.from(`${digits.slice(2)}Z`, 'ascii'));
  return tlv(0x18, Buffer.from(`${digits}Z`, 'ascii'));
}

function ipBytes(ip: string): Buffer {
  const v = isIP(ip);
  if (v === 4) return Buffer.from(ip.split('.').map(Number));
  if (v === 6) {
    const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, undefined];
    const parse = (s: string | undefined) => (s ? s.split(':').filter((p) => p !== '') : []);
    const h = parse(head);
    const t = parse(tail);
    if (h.some((p) => p.includes('.')) || t.some((p) => p.includes('.'))) {
      throw new MountdError(ErrorCode.InvalidArgument, `IPv4-mapped IPv6 addresses are not supported in certificates: ${ip}`);
    }
    const groups = tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t];
    const out = Buffer.alloc(16);
    groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
    return out;
  }
  throw new MountdError(ErrorCode.InvalidArgument, `invalid IP address ${JSON.stringify(ip)}`);
}

// ------------------------------------------------------------------ DER reader (just enough)

interface DerElement {
  tag: number;
  /** Offset of the tag byte. */
  start: number;
  /** Offset of the contents. */
  body: number;
  /** Offset just past the element. */
  end: number;
}

function readElement(buf: Uint8Array, offset: number): DerElement {
  const fail = () => new MountdError(ErrorCode.InvalidArgument, 'certificate: malformed DER');
  if (offset + 2 > buf.length) throw fail();
  const tag = buf[offset]!;
  let len = buf[offset + 1]!;
  let body = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || body + n > buf.length) throw fail();
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[body + i]!;
    body += n;
  }
  const end = body + len;
  if (end > buf.length) throw fail();
  return { tag, start: offset, body, end };
}

/** The raw SubjectPublicKeyInfo element of a DER certificate. */
export function spkiOfCertificate(der: Uint8Array): Uint8Array {
  const cert = readElement(der, 0);
  const tbs = readElement(der, cert.body);
  if (cert.tag !== 0x30 || tbs.tag !== 0x30) throw new MountdError(ErrorCode.InvalidArgument, 'certificate: malformed DER');
  let el = readElement(der, tbs.body);
  if (el.tag === 0xa0) el = readElement(der, el.end); // explicit version
  // serial, signature algorithm, issuer, validity, subject, then the key info.
  for (let i = 0; i < 5; i++) el = readElement(der, el.end);
  if (el.tag !== 0x30) throw new MountdError(ErrorCode.InvalidArgument, 'certificate: malformed DER');
  return der.subarray(el.start, el.end);
}

/** The bits of the subjectPublicKey BIT STRING, used for the key identifier (RFC 5280 4.2.1.2). */
function spkiKeyBits(spki: Uint8Array): Uint8Array {
  const outer = readElement(spki, 0);
  const alg = readElement(spki, outer.body);
  const bits = readElement(spki, alg.end);
  return spki.subarray(bits.body + 1, bits.end);
}
