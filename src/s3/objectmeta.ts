// Object headers both ways: ETags, user metadata, tags, conditional requests and byte ranges.
import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { ObjectInfo } from '../engine/index.js';
import { s3err } from './errors.js';
import { decodeComponent } from './sigv4.js';

/** AWS's limit on user metadata: names and values together. */
export const MAX_USER_METADATA_BYTES = 2048;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * An ETag that cannot be mistaken for an MD5 (40 hex digits) for objects whose MD5 is unknown
 * (changed through the mount) and for SSE-C objects (whose ETag AWS also keeps opaque). It
 * changes whenever the file is replaced (new file id) or its content changes (size, mtime).
 */
export function opaqueEtag(kind: string, fileId: string, size: number, mtimeMs: number): string {
  const parts = kind === 'customer' ? [fileId, String(size)] : [fileId, String(size), String(Math.floor(mtimeMs))];
  return createHash('sha256').update(`mountd opaque etag v1\0${parts.join('\0')}`).digest('hex').slice(0, 40);
}

/** The quoted ETag of an object, the same for HEAD, GET, PUT responses and listings. */
export function objectEtag(info: Pick<ObjectInfo, 'meta' | 'size' | 'mtimeMs' | 'encryption'>): string {
  if (info.encryption.kind !== 'customer' && info.meta.etag) return `"${info.meta.etag}"`;
  return `"${opaqueEtag(info.encryption.kind, info.encryption.fileId, info.size, info.mtimeMs)}"`;
}

/** x-amz-meta-* request headers as user metadata (lowercase names), bounded as AWS bounds them. */
export function userMetadata(headers: IncomingHttpHeaders): Record<string, string> {
  const user: Record<string, string> = {};
  let bytes = 0;
  for (const [name, value] of Object.entries(headers)) {
    if (!name.startsWith('x-amz-meta-') || value === undefined) continue;
    const n = name.slice('x-amz-meta-'.length);
    const v = Array.isArray(value) ? value.join(',') : value;
    if (n === '') throw s3err.invalidArgument('User metadata names may not be empty', name, v);
    bytes += Buffer.byteLength(n, 'utf8') + Buffer.byteLength(v, 'utf8');
    user[n] = v;
  }
  if (bytes > MAX_USER_METADATA_BYTES) throw s3err.metadataTooLarge();
  return user;
}

/** Headers S3 stores with an object besides Content-Type, in the spelling GET and HEAD answer with. */
const STORED_HEADERS = ['Cache-Control', 'Content-Disposition', 'Content-Encoding', 'Content-Language', 'Expires'];

/**
 * The stored headers of a PUT, a CreateMultipartUpload or a copy that replaces metadata.
 * aws-chunked is the request's transfer framing, not the object's encoding: it is left out, as
 * AWS leaves it out. Like AWS, they do not count toward user metadata's 2 KB; the request's
 * header limit bounds them, and the engine refuses metadata that would not fit its attributes.
 */
export function storedHeaders(headers: IncomingHttpHeaders): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  for (const name of STORED_HEADERS) {
    const raw = headers[name.toLowerCase()];
    if (raw === undefined) continue;
    let v = Array.isArray(raw) ? raw.join(',') : raw;
    if (name === 'Content-Encoding') {
      // Only a value that carries the framing is rewritten; any other is stored as sent.
      const codings = v.split(',').map((e) => e.trim());
      if (codings.some((e) => e.toLowerCase() === 'aws-chunked')) v = codings.filter((e) => e !== '' && e.toLowerCase() !== 'aws-chunked').join(',');
    }
    if (v === '') continue;
    out[name] = v;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/** Stored headers as response headers: only the names this version stores, with values HTTP can carry. */
export function storedResponseHeaders(stored: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of STORED_HEADERS) {
    const v = stored?.[name];
    if (v !== undefined && HEADER_VALUE.test(v)) out[name] = v;
  }
  return out;
}

/** Whether Node can send `v` as a header value. */
export function isHeaderValue(v: string): boolean {
  return HEADER_VALUE.test(v);
}

/** User metadata as response headers; names or values HTTP cannot carry are counted in x-amz-missing-meta, as AWS does. */
export function metadataHeaders(user: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  let missing = 0;
  for (const [n, v] of Object.entries(user)) {
    if (TOKEN.test(n) && HEADER_VALUE.test(v)) out[`x-amz-meta-${n}`] = v;
    else missing++;
  }
  if (missing > 0) out['x-amz-missing-meta'] = String(missing);
  return out;
}

/** A tag set from x-amz-tagging ("k=v&k2=v2", form-encoded) or a Tagging document. */
export function validateTags(pairs: Array<[string, string]>): Record<string, string> {
  if (pairs.length > 10) throw s3err.invalidTag('Object tags cannot be greater than 10');
  const tags: Record<string, string> = {};
  for (const [k, v] of pairs) {
    if (k.length === 0 || k.length > 128) throw s3err.invalidTag('The TagKey you have provided is invalid');
    if (v.length > 256) throw s3err.invalidTag('The TagValue you have provided is invalid');
    if (Object.hasOwn(tags, k)) throw s3err.invalidTag('Cannot provide multiple Tags with the same key');
    tags[k] = v;
  }
  return tags;
}

export function parseTaggingHeader(value: string | undefined): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  const pairs = value
    .split('&')
    .filter((p) => p !== '')
    .map((p) => {
      const eq = p.indexOf('=');
      return [decodeComponent(eq < 0 ? p : p.slice(0, eq), true), decodeComponent(eq < 0 ? '' : p.slice(eq + 1), true)] as [string, string];
    });
  return validateTags(pairs);
}

/** Whether an If-Match / If-None-Match value (a list, or "*") names this quoted ETag. */
export function etagMatches(value: string, etag: string): boolean {
  const list = etagList(value);
  return list.includes('*') || list.includes(etag.replace(/^"|"$/g, ''));
}

function etagList(v: string): string[] {
  return v.split(',').map((s) => s.trim().replace(/^W\//, '').replace(/^"|"$/g, ''));
}

function parseHttpDate(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : t;
}

/**
 * RFC 7232 as S3 applies it: If-Match / If-Unmodified-Since fail with 412, If-None-Match /
 * If-Modified-Since with 304 (GET, HEAD). `prefix` is "x-amz-copy-source-" for CopyObject,
 * where every failure is 412.
 */
export function checkConditions(headers: IncomingHttpHeaders, etag: string, mtimeMs: number, prefix = ''): 200 | 304 | 412 {
  const get = (n: string) => {
    const v = headers[`${prefix}${n}`];
    return Array.isArray(v) ? v[0] : v;
  };
  const bare = etag.replace(/^"|"$/g, '');
  const mtime = Math.floor(mtimeMs / 1000) * 1000;
  const ifMatch = get('if-match');
  const ifNoneMatch = get('if-none-match');
  const ifModified = parseHttpDate(get('if-modified-since'));
  const ifUnmodified = parseHttpDate(get('if-unmodified-since'));
  const notModified = prefix === '' ? 304 : 412;
  if (ifMatch !== undefined) {
    const list = etagList(ifMatch);
    if (!list.includes('*') && !list.includes(bare)) return 412;
  } else if (ifUnmodified !== undefined && mtime > ifUnmodified) return 412;
  if (ifNoneMatch !== undefined) {
    const list = etagList(ifNoneMatch);
    if (list.includes('*') || list.includes(bare)) return notModified;
  } else if (ifModified !== undefined && mtime <= ifModified) return notModified;
  return 200;
}

export type RangeResult = { start: number; end: number } | 'unsatisfiable' | null;

/** A single "bytes=" range against a size: null means "ignore, send everything" (absent, malformed or multiple ranges). */
export function parseRange(value: string | undefined, size: number): RangeResult {
  if (value === undefined) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(value.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  if (m[2] !== '' && Number(m[2]) < start) return null;
  if (start >= size) return 'unsatisfiable';
  const end = m[2] === '' ? size - 1 : Number(m[2]);
  return { start, end: Math.min(end, size - 1) };
}
