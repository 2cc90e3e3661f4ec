// Bucket operations: list, create, head, delete, location, versioning (always off), default encryption, and the settings this server never has.
import type { BucketEncryption } from '../../engine/index.js';
import { readSmallBody } from '../body.js';
import { call, isoDate, send, sendXml, type S3Context } from '../context.js';
import { S3Error, s3err } from '../errors.js';
import { ensureKey, kmsKeyName } from '../sse.js';
import { child, children, parseXml, text, type XmlNode } from '../xml.js';
import { refuseAclGrants } from './acl.js';

const bucketCtx = { resource: 'bucket' as const };

export async function listBuckets(ctx: S3Context): Promise<void> {
  const buckets = await ctx.engine.listBuckets();
  sendXml(ctx, 200, 'ListAllMyBucketsResult', {
    Owner: ctx.config.owner,
    Buckets: { Bucket: buckets.map((b) => ({ Name: b.name, CreationDate: isoDate(b.createdMs) })) },
  });
}

export async function createBucket(ctx: S3Context, bodyLimit: number): Promise<void> {
  // AWS's code for CreateBucket with a wider ACL under the default BucketOwnerEnforced.
  refuseAclGrants(ctx.req.headers, s3err.bucketAclWithOwnership);
  // Buckets here are always BucketOwnerEnforced (GetBucketOwnershipControls says so): asking for
  // another ownership is refused, not ignored.
  const ownership = ctx.req.headers['x-amz-object-ownership'];
  if (ownership !== undefined && ownership !== 'BucketOwnerEnforced') {
    throw s3err.notImplemented(`x-amz-object-ownership ${String(ownership)} is not supported: buckets here are BucketOwnerEnforced (ACLs are the owner's alone).`);
  }
  const body = await readSmallBody(ctx, bodyLimit);
  if (body.length > 0) {
    const doc = parseXml(body, 'CreateBucketConfiguration');
    const location = text(doc, 'LocationConstraint');
    if (location !== undefined && location !== '' && location !== ctx.config.region && !(ctx.config.region === 'us-east-1' && location === 'US')) {
      throw s3err.illegalLocation();
    }
  }
  await call(bucketCtx, () => ctx.engine.createBucket(ctx.bucket));
  // Here, not in the engine, as for deleteBucket below.
  await ctx.engine.announce([{ bucket: ctx.bucket, key: '', gone: false }]);
  send(ctx, 200, { Location: `/${ctx.bucket}` });
}

export async function headBucket(ctx: S3Context): Promise<void> {
  await call(bucketCtx, () => ctx.engine.headBucket(ctx.bucket));
  send(ctx, 200, { 'x-amz-bucket-region': ctx.config.region });
}

export async function deleteBucket(ctx: S3Context): Promise<void> {
  await call(bucketCtx, () => ctx.engine.deleteBucket(ctx.bucket));
  // Here, not in the engine: the mount's rmdir of a bucket calls deleteBucket too, and the kernel
  // holds the directory's lock then.
  await ctx.engine.announce([{ bucket: ctx.bucket, key: '', gone: true }]);
  // Unfinished uploads die with their bucket (AWS drops them too).
  for (const u of await ctx.engine.listUploads(ctx.bucket).catch(() => [])) {
    await ctx.engine.abortUpload(u.bucket, u.key, u.uploadId).catch(() => undefined);
  }
  send(ctx, 204);
}

export async function getBucketLocation(ctx: S3Context): Promise<void> {
  await call(bucketCtx, () => ctx.engine.headBucket(ctx.bucket));
  // us-east-1 is the empty LocationConstraint, as AWS answers.
  sendXml(ctx, 200, 'LocationConstraint', ctx.config.region === 'us-east-1' ? {} : { '#text': ctx.config.region });
}

export async function getBucketVersioning(ctx: S3Context): Promise<void> {
  await call(bucketCtx, () => ctx.engine.headBucket(ctx.bucket));
  sendXml(ctx, 200, 'VersioningConfiguration', {});
}

export async function getBucketEncryption(ctx: S3Context): Promise<void> {
  const cfg = await call(bucketCtx, () => ctx.engine.getBucketEncryption(ctx.bucket));
  if (!cfg) throw s3err.noSuchEncryption();
  sendXml(ctx, 200, 'ServerSideEncryptionConfiguration', {
    Rule: {
      ApplyServerSideEncryptionByDefault: { SSEAlgorithm: cfg.algorithm, KMSMasterKeyID: cfg.keyId },
      BucketKeyEnabled: false,
    },
  });
}

export async function putBucketEncryption(ctx: S3Context, bodyLimit: number): Promise<void> {
  await call(bucketCtx, () => ctx.engine.headBucket(ctx.bucket));
  const doc = parseXml(await readSmallBody(ctx, bodyLimit), 'ServerSideEncryptionConfiguration');
  const rules = children(doc, 'Rule');
  if (rules.length !== 1) throw s3err.malformedXml();
  const apply = child(rules[0]!, 'ApplyServerSideEncryptionByDefault');
  if (!apply) throw s3err.malformedXml();
  const algorithm = text(apply, 'SSEAlgorithm');
  const keyId = text(apply, 'KMSMasterKeyID');
  let cfg: BucketEncryption;
  if (algorithm === 'AES256') {
    if (keyId !== undefined) throw s3err.invalidArgument('KMSMasterKeyID is only valid with SSEAlgorithm aws:kms', 'KMSMasterKeyID', keyId);
    cfg = { algorithm: 'AES256' };
  } else if (algorithm === 'aws:kms') {
    const name = keyId ? kmsKeyName(keyId) : ctx.engine.keys.defaultKeyName;
    await call({ resource: 'object' }, () => ensureKey(ctx.engine, name, ctx.config.sse));
    cfg = { algorithm: 'aws:kms', keyId: name };
  } else {
    throw s3err.malformedXml();
  }
  await call(bucketCtx, () => ctx.engine.setBucketEncryption(ctx.bucket, cfg));
  await ctx.engine.announce([{ bucket: ctx.bucket, key: '', gone: false, meta: true }]);
  send(ctx, 200);
}

export async function deleteBucketEncryption(ctx: S3Context): Promise<void> {
  await call(bucketCtx, () => ctx.engine.setBucketEncryption(ctx.bucket, null));
  await ctx.engine.announce([{ bucket: ctx.bucket, key: '', gone: false, meta: true }]);
  send(ctx, 204);
}

/**
 * Reads of bucket settings this server never has (policies, CORS, lifecycle, website, ...): the
 * answer AWS gives for a bucket without one, so that tools which read every setting of a bucket
 * (s3cmd info, Terraform, desktop clients) work. Setting one stays NotImplemented.
 */
function absent(code: string, message: string) {
  return async (ctx: S3Context): Promise<void> => {
    await call(bucketCtx, () => ctx.engine.headBucket(ctx.bucket));
    throw new S3Error(code, 404, message);
  };
}

/** Reads of bucket settings whose value here is fixed. */
function fixed(root: string, node: XmlNode) {
  return async (ctx: S3Context): Promise<void> => {
    await call(bucketCtx, () => ctx.engine.headBucket(ctx.bucket));
    sendXml(ctx, 200, root, node);
  };
}

export const getBucketPolicy = absent('NoSuchBucketPolicy', 'The bucket policy does not exist');
export const getBucketCors = absent('NoSuchCORSConfiguration', 'The CORS configuration does not exist');
export const getBucketLifecycle = absent('NoSuchLifecycleConfiguration', 'The lifecycle configuration does not exist');
export const getBucketTagging = absent('NoSuchTagSet', 'The TagSet does not exist');
export const getBucketWebsite = absent('NoSuchWebsiteConfiguration', 'The specified bucket does not have a website configuration');
export const getBucketReplication = absent('ReplicationConfigurationNotFoundError', 'The replication configuration was not found');
export const getObjectLockConfiguration = absent('ObjectLockConfigurationNotFoundError', 'Object Lock configuration does not exist for this bucket');
/** Deletes of settings this server never has: nothing to delete, 204, as AWS answers for a bucket without one. */
async function nothingToDelete(ctx: S3Context): Promise<void> {
  await call(bucketCtx, () => ctx.engine.headBucket(ctx.bucket));
  send(ctx, 204);
}
export const deleteBucketPolicy = nothingToDelete;
export const deleteBucketCors = nothingToDelete;
export const deleteBucketLifecycle = nothingToDelete;
export const deleteBucketTagging = nothingToDelete;
export const deleteBucketWebsite = nothingToDelete;

export const getBucketLogging = fixed('BucketLoggingStatus', {});
export const getBucketNotification = fixed('NotificationConfiguration', {});
export const getBucketRequestPayment = fixed('RequestPaymentConfiguration', { Payer: 'BucketOwner' });
export const getBucketAccelerate = fixed('AccelerateConfiguration', {});
/** ACLs are the owner's alone (see acl.ts), as with AWS's BucketOwnerEnforced. */
export const getBucketOwnershipControls = fixed('OwnershipControls', { Rule: { ObjectOwnership: 'BucketOwnerEnforced' } });
/** Nothing can be made public here, which is what four blocks say. */
export const getPublicAccessBlock = fixed('PublicAccessBlockConfiguration', { BlockPublicAcls: true, IgnorePublicAcls: true, BlockPublicPolicy: true, RestrictPublicBuckets: true });
