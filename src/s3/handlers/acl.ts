// ACLs as AWS has them by default since 2023 (Object Ownership "bucket owner enforced"): the
// owner has full control of every bucket and object, reading an ACL says so, and a request that
// would grant anything else is refused (AccessControlListNotSupported; on CreateBucket
// InvalidBucketAclWithObjectOwnership) rather than accepted and ignored (a user who asked for
// public-read must not believe they got it).
import type { IncomingHttpHeaders } from 'node:http';
import { MountdError, ErrorCode } from '../../errors/index.js';
import { readSmallBody } from '../body.js';
import { call, send, sendXml, type S3Context } from '../context.js';
import { s3err, type S3Error } from '../errors.js';
import { child, children, parseXml, text } from '../xml.js';

/** Canned ACLs that grant the owner full control and nobody anything. */
const OWNER_ONLY = new Set(['private', 'bucket-owner-full-control']);
const GRANT_HEADERS = ['x-amz-grant-read', 'x-amz-grant-write', 'x-amz-grant-read-acp', 'x-amz-grant-write-acp', 'x-amz-grant-full-control'];

/**
 * For every request that creates a bucket or an object: an x-amz-acl other than the owner-only
 * ones, or any x-amz-grant-* header, is `refusal` (400; AccessControlListNotSupported unless
 * the caller names AWS's code for its operation).
 */
export function refuseAclGrants(headers: IncomingHttpHeaders, refusal: () => S3Error = s3err.aclNotSupported): void {
  const canned = headers['x-amz-acl'];
  if (canned !== undefined && !OWNER_ONLY.has(String(canned).trim())) throw refusal();
  if (GRANT_HEADERS.some((h) => headers[h] !== undefined)) throw refusal();
}

function policy(ctx: S3Context) {
  const owner = ctx.config.owner;
  return {
    Owner: owner,
    AccessControlList: {
      Grant: [{ Grantee: { '@_xmlns:xsi': 'http://www.w3.org/2001/XMLSchema-instance', '@_xsi:type': 'CanonicalUser', ...owner }, Permission: 'FULL_CONTROL' }],
    },
  };
}

/** The object must exist as an object (a directory is not one), whatever its encryption: ACLs need no SSE-C key. */
async function objectExists(ctx: S3Context): Promise<void> {
  await call({ resource: 'bucket' }, () => ctx.engine.headBucket(ctx.bucket));
  await call({ resource: 'object', key: ctx.key }, async () => {
    if (ctx.key.endsWith('/')) {
      await ctx.engine.headObject(ctx.bucket, ctx.key);
      return;
    }
    const st = await ctx.engine.statOrNull(ctx.bucket, ctx.key);
    if (!st || st.type === 'directory') throw new MountdError(ErrorCode.NotFound, `${ctx.bucket}/${ctx.key}: not found`);
  });
}

export async function getBucketAcl(ctx: S3Context): Promise<void> {
  await call({ resource: 'bucket' }, () => ctx.engine.headBucket(ctx.bucket));
  sendXml(ctx, 200, 'AccessControlPolicy', policy(ctx));
}

export async function getObjectAcl(ctx: S3Context): Promise<void> {
  await objectExists(ctx);
  sendXml(ctx, 200, 'AccessControlPolicy', policy(ctx));
}

/**
 * PutBucketAcl and PutObjectAcl: an owner-only canned ACL, or a document whose only grant is
 * FULL_CONTROL to the owner, is accepted and changes nothing; anything else is refused.
 */
async function putAcl(ctx: S3Context, bodyLimit: number): Promise<void> {
  refuseAclGrants(ctx.req.headers);
  const body = await readSmallBody(ctx, bodyLimit);
  if (body.length > 0) {
    const doc = parseXml(body, 'AccessControlPolicy');
    const grants = children(child(doc, 'AccessControlList') ?? {}, 'Grant');
    const ownerOnly = grants.length > 0 && grants.every((g) => text(g, 'Permission') === 'FULL_CONTROL' && text(child(g, 'Grantee') ?? {}, 'ID') === ctx.config.owner.ID);
    if (!ownerOnly) throw s3err.aclNotSupported();
  } else if (ctx.req.headers['x-amz-acl'] === undefined) {
    throw s3err.invalidRequest('An ACL needs an x-amz-acl header or an AccessControlPolicy document.');
  }
  send(ctx, 200);
}

export async function putBucketAcl(ctx: S3Context, bodyLimit: number): Promise<void> {
  await call({ resource: 'bucket' }, () => ctx.engine.headBucket(ctx.bucket));
  await putAcl(ctx, bodyLimit);
}

export async function putObjectAcl(ctx: S3Context, bodyLimit: number): Promise<void> {
  await objectExists(ctx);
  await putAcl(ctx, bodyLimit);
}
