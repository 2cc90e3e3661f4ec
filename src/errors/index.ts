// One error hierarchy with stable codes; fuse/ maps codes to errno, s3/ to S3 error codes.

/** Stable, greppable codes. Callers branch on `code`, never on message text. */
export const ErrorCode = {
  NotFound: 'ENGINE_NOT_FOUND',
  Exists: 'ENGINE_EXISTS',
  NotEmpty: 'ENGINE_NOT_EMPTY',
  NotDirectory: 'ENGINE_NOT_DIRECTORY',
  IsDirectory: 'ENGINE_IS_DIRECTORY',
  /** A key would need a file and a directory of the same name. */
  NameConflict: 'ENGINE_NAME_CONFLICT',
  InvalidName: 'ENGINE_INVALID_NAME',
  InvalidArgument: 'ENGINE_INVALID_ARGUMENT',
  /** Ciphertext, header or key record failed authentication: never returned as plaintext. */
  Integrity: 'ENGINE_INTEGRITY',
  UnsupportedFormat: 'ENGINE_UNSUPPORTED_FORMAT',
  /** A conditional write whose condition did not hold when the object was to be replaced. */
  PreconditionFailed: 'ENGINE_PRECONDITION_FAILED',
  /** An object's metadata (user metadata, tags, stored headers) does not fit its extended attributes. */
  MetadataTooLarge: 'ENGINE_METADATA_TOO_LARGE',
  BadHandle: 'ENGINE_BAD_HANDLE',
  NoSpace: 'ENGINE_NO_SPACE',
  Busy: 'ENGINE_BUSY',
  NotSupported: 'ENGINE_NOT_SUPPORTED',
  PermissionDenied: 'ENGINE_PERMISSION_DENIED',
  /** An SSE-C object was accessed without its customer key, or with the wrong one. */
  CustomerKeyRequired: 'ENGINE_CUSTOMER_KEY_REQUIRED',
  CustomerKeyMismatch: 'ENGINE_CUSTOMER_KEY_MISMATCH',
  Internal: 'ENGINE_INTERNAL',

  KeyNotFound: 'KMS_KEY_NOT_FOUND',
  KeyExists: 'KMS_KEY_EXISTS',
  KeyDisabled: 'KMS_KEY_DISABLED',
  /** The key server could not authenticate a ciphertext (wrong key, context or tampering). */
  NotAuthentic: 'KMS_NOT_AUTHENTIC',
  KeyServerUnavailable: 'KMS_UNAVAILABLE',
  KeyAccessDenied: 'KMS_ACCESS_DENIED',
  InvalidKeyName: 'KMS_INVALID_KEY_NAME',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export class MountdError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'MountdError';
  }
}

export function isMountdError(err: unknown, code?: ErrorCode): err is MountdError {
  return err instanceof MountdError && (code === undefined || err.code === code);
}

export const notFound = (what: string) => new MountdError(ErrorCode.NotFound, `${what}: not found`);
export const integrity = (what: string, cause?: unknown) =>
  new MountdError(ErrorCode.Integrity, `${what}: integrity check failed`, { cause });
export const invalidName = (what: string) => new MountdError(ErrorCode.InvalidName, what);
export const invalidArgument = (what: string) => new MountdError(ErrorCode.InvalidArgument, what);

/**
 * Converts a Node system error from the backing store into our hierarchy; anything unknown
 * becomes Internal with the original kept as `cause` for the log.
 */
export function fromSystemError(err: unknown, what: string): MountdError {
  if (err instanceof MountdError) return err;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT':
      return new MountdError(ErrorCode.NotFound, `${what}: not found`, { cause: err });
    case 'EEXIST':
      return new MountdError(ErrorCode.Exists, `${what}: already exists`, { cause: err });
    case 'ENOTEMPTY':
      return new MountdError(ErrorCode.NotEmpty, `${what}: not empty`, { cause: err });
    case 'ENOTDIR':
      return new MountdError(ErrorCode.NotDirectory, `${what}: not a directory`, { cause: err });
    case 'EISDIR':
      return new MountdError(ErrorCode.IsDirectory, `${what}: is a directory`, { cause: err });
    case 'ENOSPC':
    case 'EDQUOT':
      return new MountdError(ErrorCode.NoSpace, `${what}: no space left on the backing store`, {
        cause: err,
      });
    case 'EACCES':
    case 'EPERM':
      return new MountdError(ErrorCode.PermissionDenied, `${what}: permission denied`, { cause: err });
    case 'EBUSY':
      return new MountdError(ErrorCode.Busy, `${what}: busy`, { cause: err });
    case 'ENOTSUP':
    case 'EOPNOTSUPP':
      return new MountdError(ErrorCode.NotSupported, `${what}: not supported`, { cause: err });
    default:
      return new MountdError(ErrorCode.Internal, `${what}: internal error`, { cause: err });
  }
}
