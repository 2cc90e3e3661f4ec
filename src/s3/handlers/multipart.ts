// Multipart uploads: create, upload part (and part copy), list parts and uploads, complete, abort.
import { createHash } from 'node:crypto';
import type { UploadInfo } from '../../engine/index.js';
import { readSmallBody, requestBody, type VerifiedChecksum } from '../body.js';
import { call, header, isoDate, longRunning, send, sendXml, type S3Context } from '../context.js';
import { s3err } from '../errors.js';
import { checkConditions, objectEtag, parseTaggingHeader, storedHeaders, userMetadata } from '../objectmeta.js';
import { customerKeyFrom, sseResponseHeaders, writeSpec } from '../sse.js';
import { children, parseXml, text } from '../xml.js';
import { conditional, headBucketOf, parseCopySource, writeCondition } from './objects.js';
import { refuseAclGrants } from './acl.js';

/** AWS's minimum size of every part but the last. */
export const MIN_PART_BYTES = 5 * 1024 * 1024;

const upload = (ctx: S3Context) => ({ resource: 'upload' as const, key: ctx.key });
const obj = (ctx: S3Context) => ({ resource: 'object' as const, key: ctx.key });

function uploadId(ctx: S3Context): string {
  const id = ctx.query.get('uploadId');
  if (!id) throw s3err.noSuchUpload();
  return id;
}

function partNumber(ctx: S3Context): number {
  const v = ctx.query.get('partNumber') ?? '';
  const n = /^\d{1,5}$/.test(v) ? Number(v) : NaN;
  if (!(n >= 1 && n <= 10000)) throw s3err.invalidArgument('Part number must be an integer between 1 and 10000, inclusive', 'partNumber', v);
  return n;
}

function uploadSse(u: UploadInfo, customerKey: Uint8Array | undefined): Record<string, string> {
  return sseResponseHeaders({ kind: u.kind, keyName: u.keyName, customerKeyMd5: customerKey ? createHash('md5').update(customerKey).digest('base64') : undefined });
}

export async function createMultipartUpload(ctx: S3Context): Promise<void> {
  refuseAclGrants(ctx.req.headers);
  await headBucketOf(ctx);
  const spec = await call(obj(ctx), () => writeSpec(ctx.req.headers, ctx.engine, ctx.bucket, ctx.config.sse));
  const user = userMetadata(ctx.req.headers);
  const tags = parseTaggingHeader(header(ctx, 'x-amz-tagging'));
  const r = await call(obj(ctx), () => ctx.engine.createUpload(ctx.bucket, ctx.key, { encryption: spec, contentType: header(ctx, 'content-type'), headers: storedHeaders(ctx.req.headers), user, tags }));
  sendXml(ctx, 200, 'InitiateMultipartUploadResult', { Bucket: ctx.bucket, Key: ctx.key, UploadId: r.uploadId }, sseResponseHeaders(r.encryption));
}

export async function uploadPart(ctx: S3Context, bodyLimit: number): Promise<void> {
  const id = uploadId(ctx);
  const n = partNumber(ctx);
  const customerKey = customerKeyFrom(ctx.req.headers, ctx.config.sse);
  await headBucketOf(ctx);
  const u = await call(upload(ctx), () => ctx.engine.getUpload(ctx.bucket, ctx.key, id));
  const verified: VerifiedChecksum = {};
  const body = requestBody(ctx, bodyLimit, s3err.tooLarge, verified);
  const r = await call(upload(ctx), () => ctx.engine.putUploadPart(ctx.bucket, ctx.key, id, n, body, { customerKey }));
  const sum = verified.algorithm && verified.value ? { [`x-amz-checksum-${verified.algorithm}`]: verified.value } : {};
  send(ctx, 200, { ETag: `"${r.etag}"`, ...uploadSse(u, customerKey), ...sum });
}

/** x-amz-copy-source-range: "bytes=first-last", inside the source. */
function copyRange(value: string | undefined, size: number): { start: number; end: number } | undefined {
  if (value === undefined) return undefined;
  const m = /^bytes=(\d+)-(\d+)$/.exec(value.trim());
  if (!m) throw s3err.invalidArgument('The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy', 'x-amz-copy-source-range', value);
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end < start || end >= size) throw s3err.invalidRange(size);
  return { start, end };
}

export async function uploadPartCopy(ctx: S3Context): Promise<void> {
  const id = uploadId(ctx);
  const n = partNumber(ctx);
  const src = parseCopySource(header(ctx, 'x-amz-copy-source'));
  const customerKey = customerKeyFrom(ctx.req.headers, ctx.config.sse);
  const sourceKey = customerKeyFrom(ctx.req.headers, ctx.config.sse, true);
  await headBucketOf(ctx);
  await headBucketOf(ctx, src.bucket);
  const u = await call(upload(ctx), () => ctx.engine.getUpload(ctx.bucket, ctx.key, id));
  const info = await call({ resource: 'object', key: src.key }, () => ctx.engine.headObject(src.bucket, src.key, { customerKey: sourceKey }));
  if (checkConditions(ctx.req.headers, objectEtag(info), info.mtimeMs, 'x-amz-copy-source-') !== 200) throw s3err.preconditionFailed('x-amz-copy-source-If-*');
  const range = copyRange(header(ctx, 'x-amz-copy-source-range'), info.size);
  await longRunning(ctx, uploadSse(u, customerKey), async () => {
    const got = await call({ resource: 'object', key: src.key }, () => ctx.engine.getObject(src.bucket, src.key, { customerKey: sourceKey, range }));
    const r = await call(upload(ctx), () => ctx.engine.putUploadPart(ctx.bucket, ctx.key, id, n, got.body, { customerKey })).finally(() => got.body.destroy());
    return { root: 'CopyPartResult', node: { LastModified: isoDate(Date.now()), ETag: `"${r.etag}"` } };
  });
}

export async function listParts(ctx: S3Context): Promise<void> {
  const id = uploadId(ctx);
  const customerKey = customerKeyFrom(ctx.req.headers, ctx.config.sse);
  await headBucketOf(ctx);
  const maxRaw = ctx.query.get('max-parts') ?? '1000';
  const markerRaw = ctx.query.get('part-number-marker') ?? '0';
  if (!/^\d{1,9}$/.test(maxRaw)) throw s3err.invalidArgument('Provided max-parts not an integer or within integer range', 'max-parts', maxRaw);
  if (!/^\d{1,9}$/.test(markerRaw)) throw s3err.invalidArgument('Provided part-number-marker not an integer or within integer range', 'part-number-marker', markerRaw);
  const max = Math.min(Number(maxRaw), 1000);
  const marker = Number(markerRaw);
  const parts = (await call(upload(ctx), () => ctx.engine.listUploadParts(ctx.bucket, ctx.key, id, { customerKey }))).filter((p) => p.partNumber > marker);
  const page = parts.slice(0, max);
  const truncated = parts.length > page.length;
  sendXml(ctx, 200, 'ListPartsResult', {
    Bucket: ctx.bucket,
    Key: ctx.key,
    UploadId: id,
    Initiator: ctx.config.owner,
    Owner: ctx.config.owner,
    StorageClass: 'STANDARD',
    PartNumberMarker: marker,
    NextPartNumberMarker: page.length > 0 ? page[page.length - 1]!.partNumber : marker,
    MaxParts: max,
    IsTruncated: truncated,
    Part: page.map((p) => ({ PartNumber: p.partNumber, LastModified: isoDate(p.mtimeMs), ETag: `"${p.etag}"`, Size: p.size })),
  });
}

export async function listMultipartUploads(ctx: S3Context): Promise<void> {
  const prefix = ctx.query.get('prefix') ?? '';
  const delimiter = ctx.query.get('delimiter') ?? '';
  const keyMarker = ctx.query.get('key-marker') ?? '';
  const idMarker = ctx.query.get('upload-id-marker') ?? '';
  const maxRaw = ctx.query.get('max-uploads') ?? '1000';
  if (!/^\d{1,9}$/.test(maxRaw)) throw s3err.invalidArgument('Provided max-uploads not an integer or within integer range', 'max-uploads', maxRaw);
  const max = Math.min(Number(maxRaw), 1000);
  const all = await call({ resource: 'bucket' }, () => ctx.engine.listUploads(ctx.bucket));
  // Past the markers: keys after key-marker, or with upload-id-marker, later uploads of key-marker too.
  let items = all.filter((u) => u.key.startsWith(prefix));
  if (keyMarker !== '') {
    const at = idMarker !== '' ? items.findIndex((u) => u.key === keyMarker && u.uploadId === idMarker) : -1;
    items = at >= 0 ? items.slice(at + 1) : items.filter((u) => u.key > keyMarker);
  }
  const uploads: UploadInfo[] = [];
  const prefixes: string[] = [];
  let truncated = false;
  let last: { key: string; id: string } | undefined;
  for (const u of items) {
    const d = delimiter ? u.key.indexOf(delimiter, prefix.length) : -1;
    const cp = d >= 0 ? u.key.slice(0, d + delimiter.length) : undefined;
    if (cp !== undefined && prefixes[prefixes.length - 1] === cp) continue;
    if (uploads.length + prefixes.length >= max) {
      truncated = true;
      break;
    }
    if (cp !== undefined) prefixes.push(cp);
    else uploads.push(u);
    last = { key: cp ?? u.key, id: cp ? '' : u.uploadId };
  }
  sendXml(ctx, 200, 'ListMultipartUploadsResult', {
    Bucket: ctx.bucket,
    KeyMarker: keyMarker,
    UploadIdMarker: idMarker,
    NextKeyMarker: truncated && last ? last.key : undefined,
    NextUploadIdMarker: truncated && last ? last.id : undefined,
    Prefix: prefix,
    Delimiter: delimiter || undefined,
    MaxUploads: max,
    IsTruncated: truncated,
    Upload: uploads.map((u) => ({ Key: u.key, UploadId: u.uploadId, Initiator: ctx.config.owner, Owner: ctx.config.owner, StorageClass: 'STANDARD', Initiated: isoDate(u.initiatedMs) })),
    CommonPrefixes: prefixes.map((p) => ({ Prefix: p })),
  });
}

const bareEtag = (s: string) => s.trim().replace(/^"|"$/g, '');

export async function completeMultipartUpload(ctx: S3Context, bodyLimit: number): Promise<void> {
  const id = uploadId(ctx);
  const customerKey = customerKeyFrom(ctx.req.headers, ctx.config.sse);
  await headBucketOf(ctx);
  const u = await call(upload(ctx), () => ctx.engine.getUpload(ctx.bucket, ctx.key, id));
  const doc = parseXml(await readSmallBody(ctx, bodyLimit), 'CompleteMultipartUpload');
  const listed = children(doc, 'Part').map((p) => {
    const n = text(p, 'PartNumber');
    const etag = text(p, 'ETag');
    if (n === undefined || etag === undefined || !/^\d{1,5}$/.test(n.trim())) throw s3err.malformedXml();
    return { partNumber: Number(n.trim()), etag: bareEtag(etag) };
  });
  if (listed.length === 0) throw s3err.malformedXml();
  for (let i = 1; i < listed.length; i++) if (listed[i]!.partNumber <= listed[i - 1]!.partNumber) throw s3err.invalidPartOrder();
  const stored = new Map((await call(upload(ctx), () => ctx.engine.listUploadParts(ctx.bucket, ctx.key, id, { customerKey }))).map((p) => [p.partNumber, p]));
  listed.forEach((p, i) => {
    const s = stored.get(p.partNumber);
    if (!s || s.etag !== p.etag) throw s3err.invalidPart();
    if (i < listed.length - 1 && s.size < MIN_PART_BYTES) throw s3err.tooSmall();
  });
  // The multipart ETag: MD5 of the concatenated binary part MD5s, then "-N".
  const md5 = createHash('md5');
  for (const p of listed) md5.update(Buffer.from(p.etag, 'hex'));
  const etag = `${md5.digest('hex')}-${listed.length}`;
  // A failed condition found now is a plain 412; one found at the swap goes in the 200's body.
  const cond = await writeCondition(ctx);
  await longRunning(ctx, uploadSse(u, customerKey), async () => {
    const r = await call(upload(ctx), () => conditional(cond, () => ctx.engine.completeUpload(ctx.bucket, ctx.key, id, listed, { customerKey, etag, expect: cond?.expect })));
    let quoted = `"${r.etag}"`;
    if (r.encryption.kind === 'customer') quoted = objectEtag(await call(obj(ctx), () => ctx.engine.headObject(ctx.bucket, ctx.key, { customerKey })));
    return {
      root: 'CompleteMultipartUploadResult',
      node: { Location: `/${ctx.bucket}/${ctx.key}`, Bucket: ctx.bucket, Key: ctx.key, ETag: quoted },
      headers: sseResponseHeaders(r.encryption),
    };
  });
}

export async function abortMultipartUpload(ctx: S3Context): Promise<void> {
  const id = uploadId(ctx);
  await headBucketOf(ctx);
  await call(upload(ctx), () => ctx.engine.abortUpload(ctx.bucket, ctx.key, id));
  send(ctx, 204);
}
