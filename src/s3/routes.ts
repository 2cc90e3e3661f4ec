// The S3 API as data: which method, target and sub-resource reach which handler, with its body limit. Pinned by test/s3-routes.test.ts.
import type { S3Context } from './context.js';
import { s3err } from './errors.js';
import * as acl from './handlers/acl.js';
import * as buckets from './handlers/buckets.js';
import * as list from './handlers/list.js';
import * as mp from './handlers/multipart.js';
import * as objects from './handlers/objects.js';

export type Target = 'service' | 'bucket' | 'object';

export interface Route {
  /** The AWS operation name. */
  name: string;
  method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'DELETE';
  target: Target;
  /** Query parameters that select the operation: "name" must be present, "name=value" must equal. */
  query: string[];
  /** true: only with x-amz-copy-source; false: only without; absent: either. */
  copySource?: boolean;
  /** Largest request payload accepted, in bytes (0: none). Object data is streamed, never buffered. */
  bodyLimit: number;
  handler: (ctx: S3Context, bodyLimit: number) => Promise<void>;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const OBJECT = objects.MAX_PUT_BYTES;

/** First match wins. */
export const ROUTES: readonly Route[] = [
  { name: 'ListBuckets', method: 'GET', target: 'service', query: [], bodyLimit: 0, handler: buckets.listBuckets },

  { name: 'GetBucketLocation', method: 'GET', target: 'bucket', query: ['location'], bodyLimit: 0, handler: buckets.getBucketLocation },
  { name: 'GetBucketVersioning', method: 'GET', target: 'bucket', query: ['versioning'], bodyLimit: 0, handler: buckets.getBucketVersioning },
  { name: 'GetBucketAcl', method: 'GET', target: 'bucket', query: ['acl'], bodyLimit: 0, handler: acl.getBucketAcl },
  { name: 'PutBucketAcl', method: 'PUT', target: 'bucket', query: ['acl'], bodyLimit: 64 * KiB, handler: acl.putBucketAcl },
  { name: 'GetBucketEncryption', method: 'GET', target: 'bucket', query: ['encryption'], bodyLimit: 0, handler: buckets.getBucketEncryption },
  { name: 'PutBucketEncryption', method: 'PUT', target: 'bucket', query: ['encryption'], bodyLimit: 64 * KiB, handler: buckets.putBucketEncryption },
  { name: 'DeleteBucketEncryption', method: 'DELETE', target: 'bucket', query: ['encryption'], bodyLimit: 0, handler: buckets.deleteBucketEncryption },
  { name: 'GetBucketPolicy', method: 'GET', target: 'bucket', query: ['policy'], bodyLimit: 0, handler: buckets.getBucketPolicy },
  { name: 'GetBucketCors', method: 'GET', target: 'bucket', query: ['cors'], bodyLimit: 0, handler: buckets.getBucketCors },
  { name: 'GetBucketLifecycleConfiguration', method: 'GET', target: 'bucket', query: ['lifecycle'], bodyLimit: 0, handler: buckets.getBucketLifecycle },
  { name: 'GetBucketTagging', method: 'GET', target: 'bucket', query: ['tagging'], bodyLimit: 0, handler: buckets.getBucketTagging },
  { name: 'GetBucketWebsite', method: 'GET', target: 'bucket', query: ['website'], bodyLimit: 0, handler: buckets.getBucketWebsite },
  { name: 'GetBucketReplication', method: 'GET', target: 'bucket', query: ['replication'], bodyLimit: 0, handler: buckets.getBucketReplication },
  { name: 'GetObjectLockConfiguration', method: 'GET', target: 'bucket', query: ['object-lock'], bodyLimit: 0, handler: buckets.getObjectLockConfiguration },
  { name: 'GetBucketLogging', method: 'GET', target: 'bucket', query: ['logging'], bodyLimit: 0, handler: buckets.getBucketLogging },
  { name: 'GetBucketNotificationConfiguration', method: 'GET', target: 'bucket', query: ['notification'], bodyLimit: 0, handler: buckets.getBucketNotification },
  { name: 'GetBucketRequestPayment', method: 'GET', target: 'bucket', query: ['requestPayment'], bodyLimit: 0, handler: buckets.getBucketRequestPayment },
  { name: 'GetBucketAccelerateConfiguration', method: 'GET', target: 'bucket', query: ['accelerate'], bodyLimit: 0, handler: buckets.getBucketAccelerate },
  { name: 'GetBucketOwnershipControls', method: 'GET', target: 'bucket', query: ['ownershipControls'], bodyLimit: 0, handler: buckets.getBucketOwnershipControls },
  { name: 'GetPublicAccessBlock', method: 'GET', target: 'bucket', query: ['publicAccessBlock'], bodyLimit: 0, handler: buckets.getPublicAccessBlock },
  { name: 'DeleteBucketPolicy', method: 'DELETE', target: 'bucket', query: ['policy'], bodyLimit: 0, handler: buckets.deleteBucketPolicy },
  { name: 'DeleteBucketCors', method: 'DELETE', target: 'bucket', query: ['cors'], bodyLimit: 0, handler: buckets.deleteBucketCors },
  { name: 'DeleteBucketLifecycle', method: 'DELETE', target: 'bucket', query: ['lifecycle'], bodyLimit: 0, handler: buckets.deleteBucketLifecycle },
  { name: 'DeleteBucketTagging', method: 'DELETE', target: 'bucket', query: ['tagging'], bodyLimit: 0, handler: buckets.deleteBucketTagging },
  { name: 'DeleteBucketWebsite', method: 'DELETE', target: 'bucket', query: ['website'], bodyLimit: 0, handler: buckets.deleteBucketWebsite },
  { name: 'ListMultipartUploads', method: 'GET', target: 'bucket', query: ['uploads'], bodyLimit: 0, handler: mp.listMultipartUploads },
  { name: 'DeleteObjects', method: 'POST', target: 'bucket', query: ['delete'], bodyLimit: 4 * MiB, handler: objects.deleteObjects },
  { name: 'ListObjectVersions', method: 'GET', target: 'bucket', query: ['versions'], bodyLimit: 0, handler: list.listObjectVersions },
  { name: 'ListObjectsV2', method: 'GET', target: 'bucket', query: ['list-type=2'], bodyLimit: 0, handler: list.listObjectsV2 },
  { name: 'ListObjects', method: 'GET', target: 'bucket', query: [], bodyLimit: 0, handler: list.listObjectsV1 },
  { name: 'HeadBucket', method: 'HEAD', target: 'bucket', query: [], bodyLimit: 0, handler: buckets.headBucket },
  { name: 'CreateBucket', method: 'PUT', target: 'bucket', query: [], bodyLimit: 64 * KiB, handler: buckets.createBucket },
  { name: 'DeleteBucket', method: 'DELETE', target: 'bucket', query: [], bodyLimit: 0, handler: buckets.deleteBucket },

  { name: 'ListParts', method: 'GET', target: 'object', query: ['uploadId'], bodyLimit: 0, handler: mp.listParts },
  { name: 'GetObjectAcl', method: 'GET', target: 'object', query: ['acl'], bodyLimit: 0, handler: acl.getObjectAcl },
  { name: 'PutObjectAcl', method: 'PUT', target: 'object', query: ['acl'], bodyLimit: 64 * KiB, handler: acl.putObjectAcl },
  { name: 'GetObjectTagging', method: 'GET', target: 'object', query: ['tagging'], bodyLimit: 0, handler: objects.getObjectTagging },
  { name: 'PutObjectTagging', method: 'PUT', target: 'object', query: ['tagging'], bodyLimit: 64 * KiB, handler: objects.putObjectTagging },
  { name: 'DeleteObjectTagging', method: 'DELETE', target: 'object', query: ['tagging'], bodyLimit: 0, handler: objects.deleteObjectTagging },
  { name: 'GetObject', method: 'GET', target: 'object', query: [], bodyLimit: 0, handler: objects.getObject },
  { name: 'HeadObject', method: 'HEAD', target: 'object', query: [], bodyLimit: 0, handler: objects.getObject },
  { name: 'UploadPartCopy', method: 'PUT', target: 'object', query: ['partNumber', 'uploadId'], copySource: true, bodyLimit: 0, handler: mp.uploadPartCopy },
  { name: 'UploadPart', method: 'PUT', target: 'object', query: ['partNumber', 'uploadId'], copySource: false, bodyLimit: OBJECT, handler: mp.uploadPart },
  { name: 'CopyObject', method: 'PUT', target: 'object', query: [], copySource: true, bodyLimit: 0, handler: objects.copyObject },
  { name: 'PutObject', method: 'PUT', target: 'object', query: [], copySource: false, bodyLimit: OBJECT, handler: objects.putObject },
  { name: 'AbortMultipartUpload', method: 'DELETE', target: 'object', query: ['uploadId'], bodyLimit: 0, handler: mp.abortMultipartUpload },
  { name: 'DeleteObject', method: 'DELETE', target: 'object', query: [], bodyLimit: 0, handler: objects.deleteObject },
  { name: 'CreateMultipartUpload', method: 'POST', target: 'object', query: ['uploads'], bodyLimit: 0, handler: mp.createMultipartUpload },
  { name: 'CompleteMultipartUpload', method: 'POST', target: 'object', query: ['uploadId'], bodyLimit: 4 * MiB, handler: mp.completeMultipartUpload },
];

/**
 * Query parameters that name another S3 operation. A request carrying one that no route of
 * its method and target selects is NotImplemented, never silently served as something else
 * (GET ?acl must not return the object).
 */
export const SUB_RESOURCES: ReadonlySet<string> = new Set([
  'accelerate', 'acl', 'analytics', 'attributes', 'cors', 'delete', 'encryption', 'intelligent-tiering', 'inventory',
  'legal-hold', 'lifecycle', 'location', 'logging', 'metrics', 'notification', 'object-lock', 'ownershipControls',
  'policy', 'policyStatus', 'publicAccessBlock', 'replication', 'requestPayment', 'restore', 'retention', 'select',
  'tagging', 'torrent', 'uploadId', 'uploads', 'versioning', 'versions', 'website',
]);

export function matchRoute(method: string, target: Target, query: ReadonlyMap<string, string>, hasCopySource: boolean): Route {
  const subs = [...query.keys()].filter((k) => SUB_RESOURCES.has(k));
  const fits = (r: Route) =>
    r.target === target &&
    r.query.every((q) => {
      const eq = q.indexOf('=');
      return eq < 0 ? query.has(q) : query.get(q.slice(0, eq)) === q.slice(eq + 1);
    }) &&
    subs.every((s) => r.query.includes(s) || r.query.some((q) => q.startsWith(`${s}=`))) &&
    (r.copySource === undefined || r.copySource === hasCopySource);
  const route = ROUTES.find((r) => r.method === method && fits(r));
  if (route) return route;
  // PUT ?policy names an S3 operation this server lacks (NotImplemented), even though GET ?policy
  // has a route; a method no operation has on a plain resource is MethodNotAllowed.
  if (subs.length === 0 && ROUTES.some(fits)) throw s3err.methodNotAllowed();
  throw s3err.notImplemented();
}
