// ListObjects (v1), ListObjectsV2 and ListObjectVersions over engine.list, with ETags from each object's sealed metadata.
import type { ListEntry, ListOptions, ListResult } from '../../engine/index.js';
import { call, isoDate, sendXml, type S3Context } from '../context.js';
import { s3err } from '../errors.js';
import { objectEtag, opaqueEtag } from '../objectmeta.js';
import type { XmlNode } from '../xml.js';

const EMPTY_MD5 = 'd41d8cd98f00b204e9800998ecf8427e';

/** encoding-type=url: what S3 percent-encodes in listings (keeping "/"). */
function encoder(ctx: S3Context): (s: string) => string {
  const t = ctx.query.get('encoding-type');
  if (t === undefined) return (s) => s;
  if (t !== 'url') throw s3err.invalidArgument('Invalid Encoding Method specified in Request', 'encoding-type', t);
  return (s) => encodeURIComponent(s).replace(/%2F/g, '/');
}

function maxKeys(ctx: S3Context, name = 'max-keys'): number {
  const v = ctx.query.get(name);
  if (v === undefined) return 1000;
  if (!/^\d{1,9}$/.test(v)) throw s3err.invalidArgument(`Provided ${name} not an integer or within integer range`, name, v);
  return Math.min(Number(v), 1000);
}

/** One page of a listing. max-keys=0 is an empty page that is not truncated, as AWS answers it. */
async function page(ctx: S3Context, opts: ListOptions & { maxKeys: number }): Promise<ListResult> {
  if (opts.maxKeys === 0) {
    await call({ resource: 'bucket' }, () => ctx.engine.headBucket(ctx.bucket));
    return { objects: [], commonPrefixes: [], isTruncated: false };
  }
  return call({ resource: 'bucket' }, () => ctx.engine.list(ctx.bucket, opts));
}

/**
 * The listing ETag of each entry: the one HEAD shows (the engine's DEK cache makes the unseal
 * cheap). A locked key or an SSE-C object falls back to the opaque ETag from the file header.
 */
async function etags(ctx: S3Context, entries: ListEntry[]): Promise<string[]> {
  const out = new Array<string>(entries.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < entries.length; i = next++) {
      const e = entries[i]!;
      if (e.isDirectoryMarker) {
        out[i] = `"${EMPTY_MD5}"`;
        continue;
      }
      try {
        out[i] = objectEtag(await ctx.engine.headObject(ctx.bucket, e.key));
      } catch {
        const enc = await ctx.engine.encryptionInfo(ctx.bucket, e.key).catch(() => null);
        out[i] = `"${opaqueEtag(enc?.kind ?? 'default', enc?.fileId ?? '', e.size, e.mtimeMs)}"`;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(8, entries.length) }, worker));
  return out;
}

async function contents(ctx: S3Context, entries: ListEntry[], enc: (s: string) => string, withOwner: boolean): Promise<XmlNode[]> {
  const tags = await etags(ctx, entries);
  return entries.map((e, i) => ({
    Key: enc(e.key),
    LastModified: isoDate(e.mtimeMs),
    ETag: tags[i]!,
    Size: e.size,
    ...(withOwner ? { Owner: ctx.config.owner } : {}),
    StorageClass: 'STANDARD',
  }));
}

export async function listObjectsV1(ctx: S3Context): Promise<void> {
  const enc = encoder(ctx);
  const prefix = ctx.query.get('prefix') ?? '';
  const delimiter = ctx.query.get('delimiter') ?? '';
  const marker = ctx.query.get('marker') ?? '';
  const max = maxKeys(ctx);
  const r = await page(ctx, { prefix, delimiter, startAfter: marker, maxKeys: max });
  sendXml(ctx, 200, 'ListBucketResult', {
    Name: ctx.bucket,
    Prefix: enc(prefix),
    Marker: enc(marker),
    NextMarker: r.isTruncated && r.nextStartAfter !== undefined ? enc(r.nextStartAfter) : undefined,
    MaxKeys: max,
    Delimiter: delimiter ? enc(delimiter) : undefined,
    IsTruncated: r.isTruncated,
    EncodingType: ctx.query.get('encoding-type'),
    Contents: await contents(ctx, r.objects, enc, true),
    CommonPrefixes: r.commonPrefixes.map((p) => ({ Prefix: enc(p) })),
  });
}

export async function listObjectsV2(ctx: S3Context): Promise<void> {
  const enc = encoder(ctx);
  const prefix = ctx.query.get('prefix') ?? '';
  const delimiter = ctx.query.get('delimiter') ?? '';
  const token = ctx.query.get('continuation-token');
  const startAfter = ctx.query.get('start-after');
  const max = maxKeys(ctx);
  let from = startAfter ?? '';
  if (token !== undefined) {
    const decoded = /^[A-Za-z0-9_-]+$/.test(token) ? Buffer.from(token, 'base64url').toString('utf8') : '';
    if (!decoded.startsWith('1:')) throw s3err.invalidArgument('The continuation token provided is incorrect', 'continuation-token', token);
    from = decoded.slice(2);
  }
  const r = await page(ctx, { prefix, delimiter, startAfter: from, maxKeys: max });
  const objects = await contents(ctx, r.objects, enc, ctx.query.get('fetch-owner') === 'true');
  sendXml(ctx, 200, 'ListBucketResult', {
    Name: ctx.bucket,
    Prefix: enc(prefix),
    Delimiter: delimiter ? enc(delimiter) : undefined,
    MaxKeys: max,
    KeyCount: r.objects.length + r.commonPrefixes.length,
    IsTruncated: r.isTruncated,
    EncodingType: ctx.query.get('encoding-type'),
    ContinuationToken: token,
    NextContinuationToken: r.isTruncated && r.nextStartAfter !== undefined ? Buffer.from(`1:${r.nextStartAfter}`, 'utf8').toString('base64url') : undefined,
    StartAfter: startAfter !== undefined ? enc(startAfter) : undefined,
    Contents: objects,
    CommonPrefixes: r.commonPrefixes.map((p) => ({ Prefix: enc(p) })),
  });
}

/**
 * ListObjectVersions with versioning off, as AWS answers for a bucket that never had it: each
 * object is its one version, "null", the latest; there are no delete markers.
 */
export async function listObjectVersions(ctx: S3Context): Promise<void> {
  const enc = encoder(ctx);
  const prefix = ctx.query.get('prefix') ?? '';
  const delimiter = ctx.query.get('delimiter') ?? '';
  const keyMarker = ctx.query.get('key-marker') ?? '';
  const versionMarker = ctx.query.get('version-id-marker');
  if (versionMarker !== undefined && versionMarker !== '' && versionMarker !== 'null') {
    throw s3err.invalidArgument('Invalid version id specified', 'version-id-marker', versionMarker);
  }
  if (versionMarker !== undefined && versionMarker !== '' && keyMarker === '') {
    throw s3err.invalidArgument('A version-id marker cannot be specified without a key marker.', 'version-id-marker', versionMarker);
  }
  const max = maxKeys(ctx);
  const r = await page(ctx, { prefix, delimiter, startAfter: keyMarker, maxKeys: max });
  const objects = await contents(ctx, r.objects, enc, true);
  const next = r.isTruncated && r.nextStartAfter !== undefined ? r.nextStartAfter : undefined;
  sendXml(ctx, 200, 'ListVersionsResult', {
    Name: ctx.bucket,
    Prefix: enc(prefix),
    KeyMarker: enc(keyMarker),
    VersionIdMarker: versionMarker ?? '',
    NextKeyMarker: next !== undefined ? enc(next) : undefined,
    NextVersionIdMarker: next !== undefined ? 'null' : undefined,
    MaxKeys: max,
    Delimiter: delimiter ? enc(delimiter) : undefined,
    IsTruncated: r.isTruncated,
    EncodingType: ctx.query.get('encoding-type'),
    Version: objects.map(({ Key, LastModified, ETag, Size, Owner, StorageClass }) => ({ Key, VersionId: 'null', IsLatest: true, LastModified, ETag, Size, Owner, StorageClass })),
    CommonPrefixes: r.commonPrefixes.map((p) => ({ Prefix: enc(p) })),
  });
}
