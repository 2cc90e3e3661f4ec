// Decoder for aws-chunked request bodies: signed chunks (a chained signature per chunk) and unsigned chunks with trailing headers.
import { createHash, type Hash } from 'node:crypto';
import { S3Error, s3err } from './errors.js';
import { ALGORITHM, EMPTY_SHA256, hmac, sha256Hex, signatureEquals } from './sigv4.js';

export interface ChunkedOptions {
  /** Each chunk carries ";chunk-signature=" chained from the request's seed signature. */
  signed: boolean;
  /** Trailing headers follow the last chunk (names declared in x-amz-trailer). */
  trailer: boolean;
  /** x-amz-decoded-content-length: the payload size the chunks must add up to. */
  decodedLength: number;
  /** For signed chunks: the request's signing key, date, scope and seed signature. */
  signing?: { key: Buffer; amzDate: string; scope: string; seed: string };
  /** Filled with the trailing headers (lowercase names) once the body has been read. */
  trailers: Map<string, string>;
}

const MAX_LINE = 4096;
const MAX_TRAILER_LINES = 16;

const malformed = (why: string) => new S3Error('IncompleteBody', 400, `The aws-chunked request body is malformed: ${why}.`);

/**
 * Yields the payload of an aws-chunked body as it arrives, verifying each chunk's signature at
 * its end and the trailer at the end of the body; throws an S3Error on any mismatch, so a
 * consumer that commits only after the last byte never commits a forged or truncated body.
 */
export async function* decodeAwsChunked(source: AsyncIterable<Buffer>, opts: ChunkedOptions): AsyncGenerator<Buffer> {
  const it = source[Symbol.asyncIterator]();
  let buf: Buffer = Buffer.alloc(0);
  let eof = false;
  const more = async (): Promise<boolean> => {
    if (eof) return false;
    const r = await it.next();
    if (r.done) {
      eof = true;
      return false;
    }
    buf = buf.length === 0 ? r.value : Buffer.concat([buf, r.value]);
    return true;
  };
  const readLine = async (): Promise<string> => {
    for (;;) {
      const i = buf.indexOf('\r\n');
      if (i >= 0) {
        const line = buf.subarray(0, i).toString('latin1');
        buf = buf.subarray(i + 2);
        return line;
      }
      if (buf.length > MAX_LINE) throw malformed('line too long');
      if (!(await more())) throw s3err.incompleteBody();
    }
  };
  let prev = opts.signing?.seed ?? '';
  const verifyChunk = (sig: string | undefined, hash: Hash | null) => {
    if (!opts.signed) return;
    const s = opts.signing!;
    const sts = [`${ALGORITHM}-PAYLOAD`, s.amzDate, s.scope, prev, EMPTY_SHA256, hash!.digest('hex')].join('\n');
    if (sig === undefined || !signatureEquals(hmac(s.key, sts), sig)) throw s3err.signatureMismatch();
    prev = sig;
  };

  let total = 0;
  for (;;) {
    const line = await readLine();
    const m = /^([0-9a-fA-F]{1,16})(?:;chunk-signature=([0-9a-f]{64}))?$/.exec(line);
    if (!m) throw malformed('bad chunk header');
    if (opts.signed && m[2] === undefined) throw malformed('chunk signature missing');
    const size = Number.parseInt(m[1]!, 16);
    if (!Number.isSafeInteger(size) || total + size > opts.decodedLength) throw malformed('chunks exceed x-amz-decoded-content-length');
    const hash = opts.signed ? createHash('sha256') : null;
    let left = size;
    while (left > 0) {
      if (buf.length === 0 && !(await more())) throw s3err.incompleteBody();
      const n = Math.min(left, buf.length);
      const piece = buf.subarray(0, n);
      buf = buf.subarray(n);
      hash?.update(piece);
      left -= n;
      total += n;
      yield piece;
    }
    if (size > 0) {
      while (buf.length < 2) if (!(await more())) throw s3err.incompleteBody();
      if (buf[0] !== 0x0d || buf[1] !== 0x0a) throw malformed('chunk not followed by CRLF');
      buf = buf.subarray(2);
    }
    verifyChunk(m[2], hash);
    if (size === 0) break;
  }
  if (total !== opts.decodedLength) throw s3err.incompleteBody();

  // After the last chunk: trailing headers (if declared), then an empty line.
  const lines: string[] = [];
  for (;;) {
    if (!opts.trailer && buf.length === 0 && !(await more())) break; // some clients end right after "0;...\r\n"
    const line = await readLine();
    if (line === '') break;
    if (!opts.trailer || lines.length >= MAX_TRAILER_LINES) throw malformed('unexpected trailing header');
    lines.push(line);
  }
  let trailerSig: string | undefined;
  const canonical: string[] = [];
  for (const l of lines) {
    const c = l.indexOf(':');
    if (c <= 0) throw malformed('bad trailing header');
    const name = l.slice(0, c).trim().toLowerCase();
    const value = l.slice(c + 1).trim();
    if (name === 'x-amz-trailer-signature') trailerSig = value;
    else {
      opts.trailers.set(name, value);
      canonical.push(`${name}:${value}\n`);
    }
  }
  if (opts.signed && opts.trailer) {
    const s = opts.signing!;
    const sts = [`${ALGORITHM}-TRAILER`, s.amzDate, s.scope, prev, sha256Hex(canonical.join(''))].join('\n');
    if (trailerSig === undefined || !signatureEquals(hmac(s.key, sts), trailerSig)) throw s3err.signatureMismatch();
  }
  while (!eof) await more();
  if (buf.length > 0) throw malformed('data after the final chunk');
}
