// Request bodies as verified streams: length, x-amz-content-sha256, Content-MD5, flexible checksums, aws-chunked framing.
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { createChecksum, isChecksumAlgorithm, type ChecksumAlgorithm } from './checksums.js';
import { decodeAwsChunked } from './chunked.js';
import { S3Error, s3err } from './errors.js';
import { STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER, UNSIGNED_PAYLOAD, type AuthResult } from './sigv4.js';

export interface BodyRequest {
  req: IncomingMessage;
  auth: AuthResult;
  /** Sends "100 Continue" if the client waits for it (call right before reading). */
  sendContinue(): void;
  /** Set once the whole body has been read and checked. */
  bodyDone: boolean;
}

/** The checksum a body was verified against, for echoing in the response. */
export interface VerifiedChecksum {
  algorithm?: ChecksumAlgorithm;
  value?: string;
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

/** The payload length the request declares (decoded length for aws-chunked); undefined if none. */
export function declaredLength(req: IncomingMessage, auth: AuthResult): number | undefined {
  const raw = isChunked(req, auth) ? header(req, 'x-amz-decoded-content-length') : header(req, 'content-length');
  if (raw === undefined) return undefined;
  if (!/^\d{1,16}$/.test(raw)) throw s3err.invalidArgument('Content length is not a number', 'Content-Length', raw);
  return Number(raw);
}

function isChunked(req: IncomingMessage, auth: AuthResult): boolean {
  return auth.payloadHash.startsWith('STREAMING-') || /(^|,)\s*aws-chunked\s*(,|$)/i.test(header(req, 'content-encoding') ?? '');
}

/**
 * The request payload as a stream that throws an S3Error (before its end) when the body is
 * short, long, malformed or fails any digest it declares. `limit` bounds the payload size.
 */
export function requestBody(r: BodyRequest, limit: number, tooLarge: () => S3Error = s3err.tooLarge, verified: VerifiedChecksum = {}): AsyncGenerator<Buffer> {
  const { req, auth } = r;
  const chunked = isChunked(req, auth);
  const length = declaredLength(req, auth);
  if (length === undefined) {
    if (chunked) throw new S3Error('MissingContentLength', 411, 'aws-chunked bodies need the x-amz-decoded-content-length header.');
    if (header(req, 'transfer-encoding') !== undefined) throw s3err.missingLength();
  }
  const expected = length ?? 0;
  if (expected > limit) throw tooLarge();

  const payloadHash = auth.payloadHash;
  if (chunked && ![STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER].includes(payloadHash)) {
    throw s3err.invalidArgument('aws-chunked bodies need x-amz-content-sha256 STREAMING-AWS4-HMAC-SHA256-PAYLOAD or STREAMING-UNSIGNED-PAYLOAD-TRAILER', 'x-amz-content-sha256', payloadHash);
  }
  const sha256 = /^[0-9a-f]{64}$/.test(payloadHash) ? createHash('sha256') : null;
  if (!chunked && !sha256 && payloadHash !== UNSIGNED_PAYLOAD) throw s3err.invalidArgument('a STREAMING-* payload needs Content-Encoding: aws-chunked', 'x-amz-content-sha256', payloadHash);

  const md5Header = header(req, 'content-md5');
  if (md5Header !== undefined && !/^[A-Za-z0-9+/]{22}==$/.test(md5Header)) throw s3err.invalidDigest();
  const md5 = md5Header !== undefined ? createHash('md5') : null;

  // At most one flexible checksum, in a header or (aws-chunked) declared for the trailer.
  const checksumHeaders = Object.keys(req.headers).filter((n) => n.startsWith('x-amz-checksum-') && n !== 'x-amz-checksum-type' && n !== 'x-amz-checksum-algorithm');
  const trailerNames = (header(req, 'x-amz-trailer') ?? '').split(',').map((s) => s.trim().toLowerCase()).filter((s) => s !== '');
  const trailing = payloadHash === STREAMING_UNSIGNED_TRAILER || payloadHash === STREAMING_SIGNED_TRAILER;
  if (trailing && trailerNames.length === 0) throw s3err.invalidRequest('x-amz-trailer is required with a STREAMING-*-TRAILER payload');
  const names = [...checksumHeaders, ...trailerNames];
  if (names.length > 1) throw s3err.invalidRequest('Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.');
  let algorithm: ChecksumAlgorithm | undefined;
  if (names.length === 1) {
    const alg = names[0]!.slice('x-amz-checksum-'.length);
    if (!names[0]!.startsWith('x-amz-checksum-') || !isChecksumAlgorithm(alg)) throw s3err.invalidRequest(`Unsupported checksum ${names[0]}.`);
    algorithm = alg;
  }
  const checksum = algorithm ? createChecksum(algorithm) : null;
  const trailers = new Map<string, string>();

  async function* source(): AsyncGenerator<Buffer> {
    try {
      // destroyOnReturn false: a body refused halfway must not take the connection down with it,
      // so that the error document still reaches the client.
      for await (const chunk of req.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) yield chunk;
    } catch {
      throw s3err.incompleteBody();
    }
  }

  async function* verify(): AsyncGenerator<Buffer> {
    r.sendContinue();
    const payload = chunked
      ? decodeAwsChunked(source(), {
          signed: payloadHash !== STREAMING_UNSIGNED_TRAILER,
          trailer: trailing,
          decodedLength: expected,
          signing: { key: auth.signingKey, amzDate: auth.amzDate, scope: auth.scope, seed: auth.signature },
          trailers,
        })
      : source();
    let n = 0;
    for await (const chunk of payload) {
      n += chunk.length;
      if (n > expected) throw s3err.incompleteBody();
      sha256?.update(chunk);
      md5?.update(chunk);
      checksum?.update(chunk);
      yield chunk;
    }
    if (n !== expected) throw s3err.incompleteBody();
    if (sha256 && sha256.digest('hex') !== payloadHash) throw s3err.sha256Mismatch();
    if (md5 && md5.digest('base64') !== md5Header) throw s3err.badDigest();
    if (checksum && algorithm) {
      const name = `x-amz-checksum-${algorithm}`;
      const given = trailerNames.length > 0 ? trailers.get(name) : header(req, name);
      if (given === undefined) throw s3err.invalidRequest(`The trailing ${name} header is missing.`);
      const value = checksum.digest();
      if (value !== given) throw new S3Error('BadDigest', 400, `The ${algorithm.toUpperCase()} you specified did not match the calculated checksum.`);
      verified.algorithm = algorithm;
      verified.value = value;
    }
    r.bodyDone = true;
  }
  return verify();
}

/** Reads a small body (XML documents) into memory, verified like any other. */
export async function readSmallBody(r: BodyRequest, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of requestBody(r, limit, s3err.maxMessage)) chunks.push(c);
  return Buffer.concat(chunks);
}
