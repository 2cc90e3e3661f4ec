// Object operations: Put, Get, Head, Delete, DeleteObjects, Copy, and object tagging.
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { EncryptionSpec, ObjectInfo, PutOptions } from '../../engine/index.js';
import { ErrorCode, MountdError } from '../../errors/index.js';
import { readSmallBody, requestBody, type VerifiedChecksum } from '../body.js';
import { call, header, httpDate, isoDate, longRunning, send, sendXml, type S3Context } from '../context.js';
import { S3Error, engineToS3, internalError, s3err } from '../errors.js';
import { checkConditions, etagMatches, isHeaderValue, metadataHeaders, objectEtag, parseRange, parseTaggingHeader, storedHeaders, storedResponseHeaders, userMetadata, validateTags } from '../objectmeta.js';
import { customerKeyFrom, readKey, sseResponseHeaders, writeSpec } from '../sse.js';
import { decodeComponent } from '../sigv4.js';
import { children, child, parseXml, text } from '../xml.js';
import { refuseAclGrants } from './acl.js';

/** AWS's limit for one PUT (and one part). */
export const MAX_PUT_BYTES = 5 * 1024 ** 3;

const obj = (ctx: S3Context) => ({ resource: 'object' as const, key: ctx.key });
const bucketOnly = { resource: 'bucket' as const };

export async function headBucketOf(ctx: S3Context, bucket = ctx.bucket): Promise<void> {
  await call(bucketOnly, () => ctx.engine.headBucket(bucket));
}

/** The key must fit S3's limit before the engine sees it (KeyTooLongError rather than a generic 400). */
function checkKeyLength(key: string): void {
  if (Buffer.byteLength(key, 'utf8') > 1024) throw s3err.keyTooLong();
}

/** The ETag a write returns: the stored MD5, or for SSE-C the opaque ETag HEAD will also show. */
async function writtenEtag(ctx: S3Context, bucket: string, key: string, etag: string, spec: EncryptionSpec | undefined): Promise<string> {
  if (spec?.kind !== 'customer') return `"${etag}"`;
  const info = await call(obj(ctx), () => ctx.engine.headObject(bucket, key, { customerKey: spec.customerKey }));
  return objectEtag(info);
}

function checksumHeaders(v: VerifiedChecksum): Record<string, string> {
  return v.algorithm && v.value ? { [`x-amz-checksum-${v.algorithm}`]: v.value } : {};
}

export async function putObject(ctx: S3Context, bodyLimit: number): Promise<void> {
  checkKeyLength(ctx.key);
  refuseAclGrants(ctx.req.headers);
  await headBucketOf(ctx);
  const spec = await call(obj(ctx), () => writeSpec(ctx.req.headers, ctx.engine, ctx.bucket, ctx.config.sse));
  const user = userMetadata(ctx.req.headers);
  const headers = storedHeaders(ctx.req.headers);
  const tags = parseTaggingHeader(header(ctx, 'x-amz-tagging'));
  const cond = await writeCondition(ctx);
  const verified: VerifiedChecksum = {};
  const body = requestBody(ctx, bodyLimit, s3err.tooLarge, verified);
  const result = await call(obj(ctx), () => conditional(cond, () => ctx.engine.putObject(ctx.bucket, ctx.key, body, { encryption: spec, contentType: header(ctx, 'content-type'), headers, user, tags, expect: cond?.expect })));
  const etag = await writtenEtag(ctx, ctx.bucket, ctx.key, result.etag, spec);
  send(ctx, 200, { ETag: etag, ...sseResponseHeaders(result.encryption), ...checksumHeaders(verified) });
}

/**
 * A conditional write (PutObject, CopyObject, CompleteMultipartUpload), as AWS has them since
 * 2024: `If-None-Match: *` needs no object at the key, `If-Match: ETAG` (or `*`) needs the current
 * object to have that ETag. Checked here, before any body is read (412 at once), and again by
 * the engine at the moment of the swap, atomically: two writers racing with `If-None-Match: *`
 * cannot both win. Returns what the engine is to check, and the header it comes from.
 */
export async function writeCondition(ctx: S3Context): Promise<{ expect: PutOptions['expect']; header: string } | undefined> {
  const ifNoneMatch = header(ctx, 'if-none-match');
  const ifMatch = header(ctx, 'if-match');
  if (ifNoneMatch === undefined && ifMatch === undefined) return undefined;
  if (ifNoneMatch !== undefined) {
    if (ifNoneMatch.trim() !== '*') throw s3err.notImplemented('If-None-Match on a write takes only "*".');
    if (ctx.engine.objectVersion(ctx.bucket, ctx.key) !== null || (await markerExists(ctx))) throw s3err.preconditionFailed('If-None-Match');
    if (ifMatch !== undefined) throw s3err.noSuchKey(); // no object, so If-Match cannot hold
    return { expect: 'absent', header: 'If-None-Match' };
  }
  if (ctx.key.endsWith('/')) {
    // A directory marker: there or not, its ETag is always the empty MD5; writing it again changes nothing.
    if (!(await markerExists(ctx))) throw s3err.noSuchKey();
    if (!etagMatches(ifMatch!, '"d41d8cd98f00b204e9800998ecf8427e"')) throw s3err.preconditionFailed('If-Match');
    return undefined;
  }
  // The version first, then the ETag: a change in between makes the engine's check fail (412), never pass.
  const version = ctx.engine.objectVersion(ctx.bucket, ctx.key);
  if (version === null) throw s3err.noSuchKey();
  if (!etagMatches(ifMatch!, await currentEtag(ctx))) throw s3err.preconditionFailed('If-Match');
  return { expect: version, header: 'If-Match' };
}

/**
 * The ETag HEAD would show for the object at the key, without any customer key: an SSE-C
 * object's ETag is opaque (file id and size, nothing secret), and AWS compares it without one.
 */
async function currentEtag(ctx: S3Context): Promise<string> {
  try {
    return objectEtag(await ctx.engine.headObject(ctx.bucket, ctx.key));
  } catch (err) {
    if (!(err instanceof MountdError) || err.code !== ErrorCode.CustomerKeyRequired) throw engineToS3(err, obj(ctx)) ?? err;
  }
  const enc = await call(obj(ctx), () => ctx.engine.encryptionInfo(ctx.bucket, ctx.key));
  const st = await call(obj(ctx), () => ctx.engine.stat(ctx.bucket, ctx.key));
  return objectEtag({ meta: { user: {} }, size: st.size, mtimeMs: st.mtimeMs, encryption: enc });
}

/** Whether the key is a directory marker that exists (objectVersion sees files only). */
async function markerExists(ctx: S3Context): Promise<boolean> {
  if (!ctx.key.endsWith('/')) return false;
  return ctx.engine.headObject(ctx.bucket, ctx.key).then(
    () => true,
    (err) => {
      if (err instanceof MountdError && err.code === ErrorCode.NotFound) return false;
      throw err;
    },
  );
}

/** The engine's PreconditionFailed as the 412 of the header that made the condition. */
export async function conditional<T>(cond: { header: string } | undefined, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (cond && err instanceof MountdError && err.code === ErrorCode.PreconditionFailed) throw s3err.preconditionFailed(cond.header);
    throw err;
  }
}

/** Headers describing an object (GET and HEAD). */
function objectHeaders(info: ObjectInfo, etag: string): Record<string, string | number> {
  const h: Record<string, string | number> = {
    ETag: etag,
    'Last-Modified': httpDate(info.mtimeMs),
    'Content-Type': info.meta.contentType || 'binary/octet-stream',
    'Accept-Ranges': 'bytes',
    ...storedResponseHeaders(info.meta.headers),
    ...sseResponseHeaders(info.encryption),
    ...metadataHeaders(info.meta.user ?? {}),
  };
  const tagCount = Object.keys(info.meta.tags ?? {}).length;
  if (tagCount > 0) h['x-amz-tagging-count'] = tagCount;
  return h;
}

const OVERRIDES: Array<[string, string]> = [
  ['response-content-type', 'Content-Type'],
  ['response-content-language', 'Content-Language'],
  ['response-expires', 'Expires'],
  ['response-cache-control', 'Cache-Control'],
  ['response-content-disposition', 'Content-Disposition'],
  ['response-content-encoding', 'Content-Encoding'],
];

/** GetObject and HeadObject: conditions, a single range, response-* overrides, then the plaintext stream. */
export async function getObject(ctx: S3Context): Promise<void> {
  checkKeyLength(ctx.key);
  const customerKey = readKey(ctx.req.headers, ctx.config.sse);
  await headBucketOf(ctx);
  const partNumber = ctx.query.get('partNumber');
  if (partNumber !== undefined && partNumber !== '1') {
    throw new S3Error('InvalidPartNumber', 416, 'The requested partnumber is not satisfiable');
  }
  const overrides: Record<string, string> = {};
  for (const [q, h] of OVERRIDES) {
    const v = ctx.query.get(q);
    if (v === undefined) continue;
    if (!isHeaderValue(v)) throw s3err.invalidArgument(`${q} must be a value an HTTP header can carry`, q);
    overrides[h] = v;
  }
  // Conditions, range and headers are decided from the metadata of the very file the body
  // streams from (the engine calls `plan` under that file's lock): a PUT racing with this GET
  // can never pair the headers of one version with the body of another.
  let reply: { status: number; headers: Record<string, string | number>; length: number } | null = null;
  const plan = (info: ObjectInfo): { start: number; end: number } | null | false => {
    const etag = objectEtag(info);
    const cond = checkConditions(ctx.req.headers, etag, info.mtimeMs);
    if (cond === 304) {
      reply = { status: 304, headers: { ETag: etag, 'Last-Modified': httpDate(info.mtimeMs) }, length: -1 };
      return false;
    }
    if (cond === 412) throw s3err.preconditionFailed(ctx.req.headers['if-match'] !== undefined ? 'If-Match' : 'If-Unmodified-Since');
    const range = partNumber !== undefined ? null : parseRange(header(ctx, 'range'), info.size);
    if (range === 'unsatisfiable') throw s3err.invalidRange(info.size);
    const headers: Record<string, string | number> = { ...objectHeaders(info, etag), ...overrides };
    const length = range ? range.end - range.start + 1 : info.size;
    if (range) headers['Content-Range'] = `bytes ${range.start}-${range.end}/${info.size}`;
    reply = { status: range ? 206 : 200, headers, length };
    return ctx.req.method === 'HEAD' ? false : range;
  };
  let body: Readable | null = null;
  if (ctx.req.method === 'HEAD') plan(await call(obj(ctx), () => ctx.engine.headObject(ctx.bucket, ctx.key, { customerKey })));
  else body = (await call(obj(ctx), () => ctx.engine.getObject(ctx.bucket, ctx.key, { customerKey, plan }))).body;
  const r = reply as { status: number; headers: Record<string, string | number>; length: number } | null;
  if (!r) throw internalError();
  if (r.status === 304 || !body) {
    body?.destroy();
    return send(ctx, r.status, r.status === 304 ? r.headers : { ...r.headers, 'Content-Length': r.length });
  }
  ctx.res.writeHead(r.status, { ...r.headers, 'Content-Length': r.length });
  try {
    await pipeline(body, ctx.res);
  } catch (err) {
    // Headers are gone: the client sees a short body. Log why (a key disabled mid-stream, damage).
    const s3 = engineToS3(err, obj(ctx));
    ctx.config.log.warn(`request ${ctx.id}: GET ${ctx.bucket}/${ctx.key} stopped mid-stream: ${s3 ? s3.code : (err as Error).message}`);
    ctx.res.destroy();
  }
}

export async function deleteObject(ctx: S3Context): Promise<void> {
  checkKeyLength(ctx.key);
  await headBucketOf(ctx);
  await call(obj(ctx), () => ctx.engine.deleteObject(ctx.bucket, ctx.key));
  send(ctx, 204);
}

export async function deleteObjects(ctx: S3Context, bodyLimit: number): Promise<void> {
  await headBucketOf(ctx);
  const doc = parseXml(await readSmallBody(ctx, bodyLimit), 'Delete');
  const quiet = text(doc, 'Quiet') === 'true';
  const objects = children(doc, 'Object');
  if (objects.length === 0 || objects.length > 1000) throw s3err.malformedXml();
  const keys = objects.map((o) => {
    const k = text(o, 'Key');
    if (k === undefined) throw s3err.malformedXml();
    return { key: k, versionId: text(o, 'VersionId') };
  });
  const deleted: Array<{ Key: string; VersionId?: string }> = [];
  const errors: Array<{ Key: string; VersionId?: string; Code: string; Message: string }> = [];
  for (const { key, versionId } of keys) {
    try {
      if (Buffer.byteLength(key, 'utf8') > 1024) throw s3err.keyTooLong();
      // Versioning is off: every object's one version is "null". Another id names nothing, and
      // must never delete the object.
      if (versionId !== undefined && versionId !== 'null') throw s3err.noSuchVersion();
      await ctx.engine.deleteObject(ctx.bucket, key);
      if (!quiet) deleted.push({ Key: key, VersionId: versionId });
    } catch (err) {
      const s3 = engineToS3(err, { resource: 'object', key });
      if (!s3) ctx.config.log.error(`request ${ctx.id}: delete ${ctx.bucket}/${key}: ${(err as Error).stack ?? String(err)}`);
      const e = s3 ?? internalError();
      errors.push({ Key: key, VersionId: versionId, Code: e.code, Message: e.message });
    }
  }
  sendXml(ctx, 200, 'DeleteResult', { Deleted: deleted, Error: errors });
}

/** x-amz-copy-source: "/bucket/key" or "bucket/key", percent-encoded, optionally "?versionId=null". */
export function parseCopySource(value: string | undefined): { bucket: string; key: string } {
  if (value === undefined) throw s3err.invalidArgument('Copy Source must mention the source bucket and key: sourcebucket/sourcekey', 'x-amz-copy-source', '');
  let v = value;
  const q = v.indexOf('?');
  if (q >= 0) {
    const params = v.slice(q + 1);
    v = v.slice(0, q);
    // Versioning is off: the one version of an object is "null" (as on object requests).
    const m = /^versionId=(.*)$/.exec(params);
    if (!m) throw s3err.invalidArgument('Unsupported copy source parameter.', 'x-amz-copy-source', value);
    if (m[1] !== 'null') throw s3err.invalidArgument('Invalid version id specified', 'x-amz-copy-source', value);
  }
  const decoded = decodeComponent(v, false).replace(/^\//, '');
  const slash = decoded.indexOf('/');
  if (slash <= 0 || slash === decoded.length - 1) throw s3err.invalidArgument('Copy Source must mention the source bucket and key: sourcebucket/sourcekey', 'x-amz-copy-source', value);
  return { bucket: decoded.slice(0, slash), key: decoded.slice(slash + 1) };
}

function directive(ctx: S3Context, name: string): 'COPY' | 'REPLACE' {
  const v = header(ctx, name) ?? 'COPY';
  if (v !== 'COPY' && v !== 'REPLACE') throw s3err.invalidArgument(`Unknown ${name}`, name, v);
  return v;
}

/** Whether writing `spec` would keep the object's current encryption (a self-copy may then touch metadata only). */
function sameEncryption(info: ObjectInfo, spec: EncryptionSpec | undefined, sourceKey: Uint8Array | undefined): boolean {
  if (spec === undefined) return info.encryption.kind !== 'customer';
  if (spec.kind === 'default') return info.encryption.kind === 'default';
  if (spec.kind === 'named') return info.encryption.kind === 'named' && info.encryption.keyName === spec.keyName;
  return info.encryption.kind === 'customer' && sourceKey !== undefined && Buffer.from(sourceKey).equals(Buffer.from(spec.customerKey));
}

export async function copyObject(ctx: S3Context): Promise<void> {
  checkKeyLength(ctx.key);
  const src = parseCopySource(header(ctx, 'x-amz-copy-source'));
  checkKeyLength(src.key);
  const sourceKey = customerKeyFrom(ctx.req.headers, ctx.config.sse, true);
  refuseAclGrants(ctx.req.headers);
  await headBucketOf(ctx);
  await headBucketOf(ctx, src.bucket);
  const spec = await call(obj(ctx), () => writeSpec(ctx.req.headers, ctx.engine, ctx.bucket, ctx.config.sse));
  const metaDirective = directive(ctx, 'x-amz-metadata-directive');
  const tagDirective = directive(ctx, 'x-amz-tagging-directive');
  const info = await call({ resource: 'object', key: src.key }, () => ctx.engine.headObject(src.bucket, src.key, { customerKey: sourceKey }));
  const srcEtag = objectEtag(info);
  if (checkConditions(ctx.req.headers, srcEtag, info.mtimeMs, 'x-amz-copy-source-') !== 200) throw s3err.preconditionFailed('x-amz-copy-source-If-*');
  const contentType = metaDirective === 'REPLACE' ? header(ctx, 'content-type') : info.meta.contentType;
  const user = metaDirective === 'REPLACE' ? userMetadata(ctx.req.headers) : info.meta.user;
  const headers = metaDirective === 'REPLACE' ? storedHeaders(ctx.req.headers) : info.meta.headers;
  const tags = tagDirective === 'REPLACE' ? parseTaggingHeader(header(ctx, 'x-amz-tagging')) : info.meta.tags;
  // If-None-Match / If-Match name the destination, as on PutObject (AWS takes them on CopyObject too).
  const cond = await writeCondition(ctx);
  const self = src.bucket === ctx.bucket && src.key === ctx.key;
  const early = spec ? sseResponseHeaders(spec.kind === 'named' ? { kind: 'named', keyName: spec.keyName } : spec.kind === 'customer' ? { kind: 'customer' } : { kind: 'default' }) : {};

  if (self && sameEncryption(info, spec, sourceKey)) {
    if (metaDirective !== 'REPLACE' && tagDirective !== 'REPLACE') {
      throw s3err.invalidRequest('This copy request is illegal because it is trying to copy an object to itself without changing the object\'s metadata, storage class, website redirect location or encryption attributes.');
    }
    await call(obj(ctx), () => ctx.engine.updateMeta(ctx.bucket, ctx.key, (m) => ({ ...m, contentType, headers, user: user ?? {}, tags }), sourceKey));
    await metaChanged(ctx);
    const now = await call(obj(ctx), () => ctx.engine.headObject(ctx.bucket, ctx.key, { customerKey: sourceKey }));
    return sendXml(ctx, 200, 'CopyObjectResult', { LastModified: isoDate(now.mtimeMs), ETag: objectEtag(now) }, sseResponseHeaders(now.encryption));
  }

  await longRunning(ctx, early, async () => {
    const got = await call({ resource: 'object', key: src.key }, () => ctx.engine.getObject(src.bucket, src.key, { customerKey: sourceKey }));
    const result = await call(obj(ctx), () => conditional(cond, () => ctx.engine.putObject(ctx.bucket, ctx.key, got.body, { encryption: spec, contentType, headers, user, tags, expect: cond?.expect }))).finally(() => got.body.destroy());
    const etag = await writtenEtag(ctx, ctx.bucket, ctx.key, result.etag, spec);
    return { root: 'CopyObjectResult', node: { LastModified: isoDate(Date.now()), ETag: etag }, headers: sseResponseHeaders(result.encryption) };
  });
}

/** The mount's view of an object whose metadata S3 rewrote (its ctime moved). */
const metaChanged = (ctx: S3Context) => ctx.engine.announce([{ bucket: ctx.bucket, key: ctx.key, gone: false, meta: true }]);

export async function getObjectTagging(ctx: S3Context): Promise<void> {
  checkKeyLength(ctx.key);
  const customerKey = readKey(ctx.req.headers, ctx.config.sse);
  await headBucketOf(ctx);
  const info = await call(obj(ctx), () => ctx.engine.headObject(ctx.bucket, ctx.key, { customerKey }));
  const tags = Object.entries(info.meta.tags ?? {}).map(([Key, Value]) => ({ Key, Value }));
  sendXml(ctx, 200, 'Tagging', { TagSet: { Tag: tags } });
}

export async function putObjectTagging(ctx: S3Context, bodyLimit: number): Promise<void> {
  checkKeyLength(ctx.key);
  const customerKey = readKey(ctx.req.headers, ctx.config.sse);
  await headBucketOf(ctx);
  const doc = parseXml(await readSmallBody(ctx, bodyLimit), 'Tagging');
  const set = child(doc, 'TagSet') ?? {};
  const tags = validateTags(children(set, 'Tag').map((t) => [text(t, 'Key') ?? '', text(t, 'Value') ?? '']));
  await call(obj(ctx), () => ctx.engine.updateMeta(ctx.bucket, ctx.key, (m) => ({ ...m, tags }), customerKey));
  await metaChanged(ctx);
  send(ctx, 200);
}

export async function deleteObjectTagging(ctx: S3Context): Promise<void> {
  checkKeyLength(ctx.key);
  const customerKey = readKey(ctx.req.headers, ctx.config.sse);
  await headBucketOf(ctx);
  await call(obj(ctx), () => ctx.engine.updateMeta(ctx.bucket, ctx.key, (m) => ({ ...m, tags: undefined }), customerKey));
  await metaChanged(ctx);
  send(ctx, 204);
}
