// S3 errors: the one place engine and key server error codes become S3 codes and HTTP statuses.
import { ErrorCode, isMountdError } from '../errors/index.js';

/** An error the client sees as an S3 error document. `fields` become extra XML elements. */
export class S3Error extends Error {
  constructor(
    readonly code: string,
    readonly status: number,
    message: string,
    readonly fields: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'S3Error';
  }
}

/** Constructors for the S3 errors the listener raises itself, with AWS's codes, statuses and wording. */
export const s3err = {
  accessDenied: (msg = 'Access Denied.') => new S3Error('AccessDenied', 403, msg),
  signatureMismatch: () =>
    new S3Error('SignatureDoesNotMatch', 403, 'The request signature we calculated does not match the signature you provided. Check your key and signing method.'),
  invalidAccessKey: () => new S3Error('InvalidAccessKeyId', 403, 'The AWS Access Key Id you provided does not exist in our records.'),
  authMalformed: (msg: string) => new S3Error('AuthorizationHeaderMalformed', 400, msg),
  authQueryMalformed: (msg: string) => new S3Error('AuthorizationQueryParametersError', 400, msg),
  skewed: () => new S3Error('RequestTimeTooSkewed', 403, 'The difference between the request time and the server\'s time is too large.'),
  expired: () => new S3Error('AccessDenied', 403, 'Request has expired'),
  sha256Mismatch: () => new S3Error('XAmzContentSHA256Mismatch', 400, 'The provided \'x-amz-content-sha256\' header does not match what was computed.'),
  badDigest: (what = 'Content-MD5') => new S3Error('BadDigest', 400, `The ${what} you specified did not match what we received.`),
  invalidDigest: (what = 'Content-MD5') => new S3Error('InvalidDigest', 400, `The ${what} you specified is not valid.`),
  incompleteBody: () => new S3Error('IncompleteBody', 400, 'You did not provide the number of bytes specified by the Content-Length HTTP header.'),
  missingLength: () => new S3Error('MissingContentLength', 411, 'You must provide the Content-Length HTTP header.'),
  tooLarge: () => new S3Error('EntityTooLarge', 400, 'Your proposed upload exceeds the maximum allowed object size.'),
  tooSmall: () => new S3Error('EntityTooSmall', 400, 'Your proposed upload is smaller than the minimum allowed object size.'),
  maxMessage: () => new S3Error('MaxMessageLengthExceeded', 400, 'Your request was too big.'),
  malformedXml: () => new S3Error('MalformedXML', 400, 'The XML you provided was not well-formed or did not validate against our published schema.'),
  invalidArgument: (msg: string, name?: string, value?: string) =>
    new S3Error('InvalidArgument', 400, msg, name !== undefined ? { ArgumentName: name, ArgumentValue: value ?? '' } : {}),
  invalidRequest: (msg: string) => new S3Error('InvalidRequest', 400, msg),
  invalidRange: (size: number) => new S3Error('InvalidRange', 416, 'The requested range is not satisfiable', { ActualObjectSize: String(size) }),
  preconditionFailed: (condition: string) => new S3Error('PreconditionFailed', 412, 'At least one of the pre-conditions you specified did not hold', { Condition: condition }),
  noSuchVersion: () => new S3Error('NoSuchVersion', 404, 'The specified version does not exist.'),
  aclNotSupported: () => new S3Error('AccessControlListNotSupported', 400, 'The bucket does not allow ACLs'),
  bucketAclWithOwnership: () => new S3Error('InvalidBucketAclWithObjectOwnership', 400, "Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced setting"),
  notImplemented: (what = 'A header you provided implies functionality that is not implemented') => new S3Error('NotImplemented', 501, what),
  methodNotAllowed: () => new S3Error('MethodNotAllowed', 405, 'The specified method is not allowed against this resource.'),
  noSuchBucket: () => new S3Error('NoSuchBucket', 404, 'The specified bucket does not exist'),
  noSuchKey: () => new S3Error('NoSuchKey', 404, 'The specified key does not exist.'),
  noSuchUpload: () => new S3Error('NoSuchUpload', 404, 'The specified multipart upload does not exist. The upload ID might be invalid, or the multipart upload might have been aborted or completed.'),
  noSuchEncryption: () => new S3Error('ServerSideEncryptionConfigurationNotFoundError', 404, 'The server side encryption configuration was not found'),
  invalidPart: (msg = 'One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part\'s entity tag.') => new S3Error('InvalidPart', 400, msg),
  invalidPartOrder: () => new S3Error('InvalidPartOrder', 400, 'The list of parts was not in ascending order. Parts must be ordered by part number.'),
  invalidBucketName: () => new S3Error('InvalidBucketName', 400, 'The specified bucket is not valid.'),
  keyTooLong: () => new S3Error('KeyTooLongError', 400, 'Your key is too long'),
  metadataTooLarge: () => new S3Error('MetadataTooLarge', 400, 'Your metadata headers exceed the maximum allowed metadata size.'),
  invalidTag: (msg: string) => new S3Error('InvalidTag', 400, msg),
  illegalLocation: () => new S3Error('IllegalLocationConstraintException', 400, 'The specified location-constraint is not valid for this server\'s region.'),
  kmsNotFound: (key: string) => new S3Error('kms:KeyNotFound', 404, `The key server has no key named ${JSON.stringify(key)}.`),
  ssecInsecure: () => new S3Error('InvalidRequest', 400, 'Requests specifying Server Side Encryption with Customer provided keys must be made over a secure connection.'),
};

/** Which S3 resource an engine NotFound refers to in the operation at hand. */
export type ResourceKind = 'bucket' | 'object' | 'upload';

export interface ErrorContext {
  resource: ResourceKind;
  /** The key as the client sent it (for KeyTooLongError). */
  key?: string;
}

/**
 * Maps an engine or key server error to an S3 error; anything else is returned as undefined
 * and becomes InternalError (its detail goes to the log only).
 */
export function engineToS3(err: unknown, ctx: ErrorContext): S3Error | undefined {
  // An S3Error raised while the engine consumed a request body comes back wrapped as its cause.
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    if (e instanceof S3Error) return e;
  }
  if (!isMountdError(err)) return undefined;
  switch (err.code) {
    case ErrorCode.NotFound:
    case ErrorCode.NotDirectory:
    case ErrorCode.IsDirectory:
      return ctx.resource === 'bucket' ? s3err.noSuchBucket() : ctx.resource === 'upload' ? s3err.noSuchUpload() : s3err.noSuchKey();
    case ErrorCode.Exists:
      return ctx.resource === 'bucket'
        ? new S3Error('BucketAlreadyOwnedByYou', 409, 'Your previous request to create the named bucket succeeded and you already own it.')
        : new S3Error('XMountdNameConflict', 409, 'An object or prefix of that name already exists.');
    case ErrorCode.NotEmpty:
      return new S3Error('BucketNotEmpty', 409, 'The bucket you tried to delete is not empty');
    case ErrorCode.NameConflict:
      return new S3Error('XMountdNameConflict', 409, 'The key would need a file and a directory of the same name: one of its prefixes is an object, or the key is a prefix of other objects.');
    case ErrorCode.InvalidName:
      if (ctx.resource === 'bucket') return s3err.invalidBucketName();
      if (ctx.key !== undefined && Buffer.byteLength(ctx.key, 'utf8') > 1024) return s3err.keyTooLong();
      return s3err.invalidArgument('Object key is not valid: it must be 1 to 1024 bytes of UTF-8 without NUL and without empty, "." or ".." segments.');
    case ErrorCode.InvalidArgument:
      return s3err.invalidArgument(err.message);
    case ErrorCode.Integrity:
      return new S3Error('XMountdObjectTampered', 500, 'The object failed its integrity check: its ciphertext or key record was damaged or tampered with.');
    case ErrorCode.PreconditionFailed:
      // The handler that made the condition names its header (see writeCondition); this is the fallback.
      return s3err.preconditionFailed('If-Match');
    case ErrorCode.MetadataTooLarge:
      return s3err.metadataTooLarge();
    case ErrorCode.UnsupportedFormat:
      return new S3Error('XMountdUnsupportedFormat', 500, 'The object is stored in a format this server does not read.');
    case ErrorCode.NoSpace:
      return new S3Error('XMountdStorageFull', 507, 'The backing store is full.');
    case ErrorCode.Busy:
      return new S3Error('ServiceUnavailable', 503, 'The server is busy or shutting down; retry later.');
    case ErrorCode.NotSupported:
      return s3err.notImplemented('The backing store does not support this operation.');
    case ErrorCode.CustomerKeyRequired:
      return s3err.invalidRequest('The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.');
    case ErrorCode.CustomerKeyMismatch:
      return s3err.accessDenied('The customer-provided encryption key does not match the key the object was stored with.');
    case ErrorCode.KeyNotFound:
      return new S3Error('kms:KeyNotFound', 404, 'The key server does not have the key this object or request names.');
    case ErrorCode.KeyDisabled:
      return new S3Error('KMS.DisabledException', 403, 'The key this object is encrypted with is disabled.');
    case ErrorCode.KeyServerUnavailable:
      return new S3Error('XMountdKeyServerUnavailable', 503, 'The key server cannot be reached; retry later.');
    case ErrorCode.KeyAccessDenied:
      return s3err.accessDenied('The key server refused access to the key.');
    case ErrorCode.NotAuthentic:
      return new S3Error('kms:DecryptionFailed', 500, 'The key server could not decrypt the object\'s data key.');
    case ErrorCode.InvalidKeyName:
      return s3err.invalidArgument('Key id is not valid: letters, digits, "-" and "_", at most 80 characters.', 'x-amz-server-side-encryption-aws-kms-key-id');
    default:
      return undefined;
  }
}

export const internalError = () => new S3Error('InternalError', 500, 'We encountered an internal error. Please try again.');
