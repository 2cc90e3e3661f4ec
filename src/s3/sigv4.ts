// AWS Signature Version 4 verification: Authorization header and presigned URLs, with constant-time compares.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { S3Error, s3err } from './errors.js';

export const ALGORITHM = 'AWS4-HMAC-SHA256';
export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';
export const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';
export const STREAMING_SIGNED = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD';
export const STREAMING_SIGNED_TRAILER = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER';
export const STREAMING_UNSIGNED_TRAILER = 'STREAMING-UNSIGNED-PAYLOAD-TRAILER';
/** AWS's allowed clock difference between client and server. */
export const MAX_SKEW_MS = 15 * 60 * 1000;
const MAX_PRESIGN_EXPIRES = 7 * 24 * 3600;

export interface Credentials {
  accessKeyId: string;
  secretAccessKey: string;
}

/** What a verified request carries on to its body: the payload mode and, for signed chunks, the chain's seed. */
export interface AuthResult {
  accessKeyId: string;
  presigned: boolean;
  /** A hex SHA-256, UNSIGNED-PAYLOAD, or one of the STREAMING-* modes. */
  payloadHash: string;
  amzDate: string;
  scope: string;
  signingKey: Buffer;
  /** Hex signature of the request: the first link of a signed chunk chain. */
  signature: string;
}

export interface ParsedUrl {
  /** The path exactly as sent (percent-encoded). */
  rawPath: string;
  /** The query string exactly as sent, without "?". */
  rawQuery: string;
}

/** Percent-encodes as SigV4 does: everything but A-Z a-z 0-9 - _ . ~ (and "/" when asked). */
export function awsEncode(s: string, keepSlash: boolean): string {
  const out = encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return keepSlash ? out.replace(/%2F/g, '/') : out;
}

/** Decodes a percent-encoded component; malformed escapes or UTF-8 are a 400. */
export function decodeComponent(s: string, plusIsSpace: boolean): string {
  try {
    return decodeURIComponent(plusIsSpace ? s.replace(/\+/g, ' ') : s);
  } catch {
    throw new S3Error('InvalidURI', 400, 'Couldn\'t parse the specified URI.');
  }
}

/** Query pairs as sent, decoded (form rules: "+" is a space), in order. */
export function parseQuery(rawQuery: string): Array<[string, string]> {
  if (rawQuery === '') return [];
  return rawQuery
    .split('&')
    .filter((p) => p !== '')
    .map((pair) => {
      const eq = pair.indexOf('=');
      const name = eq < 0 ? pair : pair.slice(0, eq);
      const value = eq < 0 ? '' : pair.slice(eq + 1);
      return [decodeComponent(name, true), decodeComponent(value, true)] as [string, string];
    });
}

function canonicalQuery(pairs: Array<[string, string]>, omitSignature: boolean): string {
  return pairs
    .filter(([n]) => !(omitSignature && n === 'X-Amz-Signature'))
    .map(([n, v]) => [awsEncode(n, false), awsEncode(v, false)] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([n, v]) => `${n}=${v}`)
    .join('&');
}

/** Header values by lowercase name, from the raw headers (repeated headers joined with ","). */
function headerValues(req: IncomingMessage): Map<string, string> {
  const m = new Map<string, string>();
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    const value = raw[i + 1]!.trim().replace(/\s+/g, ' ');
    const prev = m.get(name);
    m.set(name, prev === undefined ? value : `${prev},${value}`);
  }
  return m;
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export function hmac(key: Uint8Array | string, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

/** A 64-hex-digit signature from the client against ours, in constant time. */
export function signatureEquals(expected: Buffer, given: string): boolean {
  if (!/^[0-9a-f]{64}$/.test(given)) return false;
  return timingSafeEqual(expected, Buffer.from(given, 'hex'));
}

/** Parses "YYYYMMDDTHHMMSSZ". */
export function parseAmzDate(s: string | undefined): number | null {
  const m = s ? /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s) : null;
  if (!m) return null;
  const t = Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!);
  const d = new Date(t);
  // Reject dates Date.UTC silently normalised (month 13, day 32, ...).
  if (d.getUTCMonth() !== +m[2]! - 1 || d.getUTCDate() !== +m[3]! || +m[4]! > 23 || +m[5]! > 59 || +m[6]! > 59) return null;
  return t;
}

export class SigV4Verifier {
  /** Derived signing keys by "date/region": one HMAC chain per day instead of per request. */
  private readonly keyCache = new Map<string, Buffer>();

  constructor(
    private readonly creds: Credentials,
    private readonly region: string,
    private readonly now: () => number = Date.now,
  ) {}

  signingKey(date: string, region: string): Buffer {
    const id = `${date}/${region}`;
    let k = this.keyCache.get(id);
    if (!k) {
      k = hmac(hmac(hmac(hmac(`AWS4${this.creds.secretAccessKey}`, date), region), 's3'), 'aws4_request');
      if (this.keyCache.size > 16) this.keyCache.clear();
      this.keyCache.set(id, k);
    }
    return k;
  }

  /** Verifies a request's signature (header or presigned); throws an S3Error saying why not. */
  verify(req: IncomingMessage, url: ParsedUrl, query: Array<[string, string]>): AuthResult {
    const headers = headerValues(req);
    const auth = headers.get('authorization');
    const presigned = query.some(([n]) => n === 'X-Amz-Algorithm' || n === 'X-Amz-Signature' || n === 'X-Amz-Credential');
    if (auth !== undefined && presigned) throw s3err.invalidArgument('Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified', 'Authorization', auth);
    if (auth === undefined && !presigned) {
      if (query.some(([n]) => n === 'Signature' || n === 'AWSAccessKeyId')) throw s3err.invalidRequest('The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.');
      throw s3err.accessDenied('Anonymous access is not allowed: sign requests with AWS Signature Version 4.');
    }
    return presigned ? this.verifyPresigned(req, url, query, headers) : this.verifyHeader(req, url, query, headers, auth!);
  }

  private verifyHeader(req: IncomingMessage, url: ParsedUrl, query: Array<[string, string]>, headers: Map<string, string>, auth: string): AuthResult {
    if (!auth.startsWith(`${ALGORITHM} `)) {
      throw s3err.invalidRequest('The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.');
    }
    const fields = new Map<string, string>();
    for (const part of auth.slice(ALGORITHM.length + 1).split(',')) {
      const p = part.trim();
      const eq = p.indexOf('=');
      if (eq <= 0) throw s3err.authMalformed('The authorization header is malformed.');
      fields.set(p.slice(0, eq), p.slice(eq + 1));
    }
    const credential = fields.get('Credential');
    const signedHeaders = fields.get('SignedHeaders');
    const signature = fields.get('Signature');
    if (!credential || !signedHeaders || !signature) throw s3err.authMalformed('The authorization header is malformed; it must contain Credential, SignedHeaders and Signature.');
    const amzDateRaw = headers.get('x-amz-date') ?? headers.get('date');
    const t = parseAmzDate(amzDateRaw);
    if (t === null) throw s3err.accessDenied('AWS authentication requires a valid Date or x-amz-date header');
    const amzDate = amzDateRaw!;
    const scope = this.checkCredential(credential, amzDate, (m) => s3err.authMalformed(m));
    if (Math.abs(this.now() - t) > MAX_SKEW_MS) throw s3err.skewed();
    const payloadHash = headers.get('x-amz-content-sha256');
    if (payloadHash === undefined) throw s3err.invalidRequest('Missing required header for this request: x-amz-content-sha256');
    if (!/^[0-9a-f]{64}$/.test(payloadHash) && ![UNSIGNED_PAYLOAD, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER].includes(payloadHash)) {
      if (payloadHash.startsWith('STREAMING-')) throw s3err.notImplemented(`x-amz-content-sha256 ${payloadHash} is not supported`);
      throw s3err.invalidArgument('x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-... or a hex SHA-256', 'x-amz-content-sha256', payloadHash);
    }
    const signed = this.signedHeaderList(signedHeaders, headers, (m) => s3err.authMalformed(m));
    const key = this.signingKey(amzDate.slice(0, 8), this.region);
    const sig = this.matchSignature(req, url, canonicalQuery(query, false), signed, headers, payloadHash, amzDate, scope, key, signature);
    return { accessKeyId: this.creds.accessKeyId, presigned: false, payloadHash, amzDate, scope, signingKey: key, signature: sig };
  }

  private verifyPresigned(req: IncomingMessage, url: ParsedUrl, query: Array<[string, string]>, headers: Map<string, string>): AuthResult {
    const q = new Map(query);
    const bad = (m: string) => s3err.authQueryMalformed(m);
    if (q.get('X-Amz-Algorithm') !== ALGORITHM) throw bad('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"');
    const credential = q.get('X-Amz-Credential');
    const amzDate = q.get('X-Amz-Date');
    const expiresRaw = q.get('X-Amz-Expires');
    const signedHeaders = q.get('X-Amz-SignedHeaders');
    const signature = q.get('X-Amz-Signature');
    if (!credential || !amzDate || !expiresRaw || !signedHeaders || !signature) {
      throw bad('Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.');
    }
    if (q.has('X-Amz-Security-Token')) throw s3err.invalidRequest('Temporary credentials (X-Amz-Security-Token) are not supported.');
    const t = parseAmzDate(amzDate);
    if (t === null) throw bad('X-Amz-Date must be in the ISO8601 Long Format "yyyyMMdd\'T\'HHmmss\'Z\'"');
    if (!/^\d{1,6}$/.test(expiresRaw)) throw bad('X-Amz-Expires should be a number');
    const expires = Number(expiresRaw);
    if (expires < 1) throw bad('X-Amz-Expires must be non-negative');
    if (expires > MAX_PRESIGN_EXPIRES) throw bad('X-Amz-Expires must be less than a week (in seconds) that is 604800');
    const scope = this.checkCredential(credential, amzDate, bad);
    const now = this.now();
    if (t - now > MAX_SKEW_MS) throw s3err.accessDenied('Request is not valid yet');
    if (now > t + expires * 1000) throw s3err.expired();
    const payloadHash = headers.get('x-amz-content-sha256') ?? UNSIGNED_PAYLOAD;
    if (!/^[0-9a-f]{64}$/.test(payloadHash) && payloadHash !== UNSIGNED_PAYLOAD) throw s3err.invalidArgument('presigned requests need UNSIGNED-PAYLOAD or a hex SHA-256', 'x-amz-content-sha256', payloadHash);
    const signed = this.signedHeaderList(signedHeaders, headers, bad);
    const key = this.signingKey(amzDate.slice(0, 8), this.region);
    const sig = this.matchSignature(req, url, canonicalQuery(query, true), signed, headers, payloadHash, amzDate, scope, key, signature);
    return { accessKeyId: this.creds.accessKeyId, presigned: true, payloadHash, amzDate, scope, signingKey: key, signature: sig };
  }

  /** "AKID/date/region/s3/aws4_request": checks each part and returns the scope (without the key id). */
  private checkCredential(credential: string, amzDate: string, bad: (m: string) => S3Error): string {
    const parts = credential.split('/');
    if (parts.length !== 5) throw bad(`Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".`);
    const [akid, date, region, service, terminator] = parts as [string, string, string, string, string];
    if (akid !== this.creds.accessKeyId) throw s3err.invalidAccessKey();
    if (date !== amzDate.slice(0, 8)) throw bad(`Invalid credential date "${date}". This date is not the same as X-Amz-Date: "${amzDate.slice(0, 8)}".`);
    if (region !== this.region) {
      const e = bad(`The authorization header is malformed; the region '${region}' is wrong; expecting '${this.region}'`);
      e.fields.Region = this.region;
      throw e;
    }
    if (service !== 's3') throw bad(`The authorization header is malformed; incorrect service "${service}". This endpoint belongs to "s3".`);
    if (terminator !== 'aws4_request') throw bad(`The authorization header is malformed; incorrect terminal "${terminator}". This endpoint uses "aws4_request".`);
    return `${date}/${region}/s3/aws4_request`;
  }

  /** The signed header names, which must include host and every x-amz-* header the request carries. */
  private signedHeaderList(list: string, headers: Map<string, string>, bad: (m: string) => S3Error): string[] {
    const names = list.split(';');
    if (names.some((n) => n === '' || n !== n.toLowerCase())) throw bad('SignedHeaders must be lowercase names separated by ";"');
    if (!names.includes('host')) throw bad('The host header must be signed.');
    for (const n of names) if (!headers.has(n)) throw s3err.signatureMismatch();
    for (const n of headers.keys()) {
      if (n.startsWith('x-amz-') && !names.includes(n)) throw s3err.accessDenied(`There were headers present in the request which were not signed: ${n}`);
    }
    return names;
  }

  /**
   * Checks the signature over the canonical URI as SigV4 encodes the decoded path and, failing
   * that, over the path exactly as sent (clients that sign what they send). Both compares are
   * constant-time.
   */
  private matchSignature(
    req: IncomingMessage,
    url: ParsedUrl,
    cquery: string,
    signed: string[],
    headers: Map<string, string>,
    payloadHash: string,
    amzDate: string,
    scope: string,
    key: Buffer,
    given: string,
  ): string {
    const cheaders = signed.map((n) => `${n}:${headers.get(n) ?? ''}\n`).join('');
    const attempt = (curi: string): Buffer => {
      const creq = [req.method ?? '', curi, cquery, cheaders, signed.join(';'), payloadHash].join('\n');
      return hmac(key, [ALGORITHM, amzDate, scope, sha256Hex(creq)].join('\n'));
    };
    const encoded = awsEncode(decodeComponent(url.rawPath, false), true);
    const first = attempt(encoded);
    if (signatureEquals(first, given)) return given;
    if (encoded !== url.rawPath && signatureEquals(attempt(url.rawPath), given)) return given;
    throw s3err.signatureMismatch();
  }
}
