// The one place where engine error codes become errno values for the kernel.
import { constants } from 'node:os';
import type { Logger } from '../engine/index.js';
import { ErrorCode, isMountdError } from '../errors/index.js';

const E = constants.errno;

/**
 * ENOKEY ("Required key not available", what Linux fscrypt answers without its key) is Linux
 * errno 126 (asm-generic/errno.h). Node's os.constants.errno does not list it, so this is the
 * one number written here; FUSE through fuse-native exists on Linux only.
 */
export const ENOKEY = 126;

type ErrnoName = keyof typeof E;

/** Every engine code has an answer; a new code fails to compile until it gets one. */
const BY_CODE: Record<ErrorCode, ErrnoName | 'ENOKEY'> = {
  [ErrorCode.NotFound]: 'ENOENT',
  [ErrorCode.Exists]: 'EEXIST',
  [ErrorCode.NotEmpty]: 'ENOTEMPTY',
  [ErrorCode.NotDirectory]: 'ENOTDIR',
  [ErrorCode.IsDirectory]: 'EISDIR',
  // "a/b is an object, so it cannot also be a prefix": a path component is not a directory.
  [ErrorCode.NameConflict]: 'ENOTDIR',
  [ErrorCode.InvalidName]: 'EINVAL',
  [ErrorCode.InvalidArgument]: 'EINVAL',
  [ErrorCode.Integrity]: 'EIO',
  [ErrorCode.UnsupportedFormat]: 'EIO',
  // Conditional writes are S3's; an O_EXCL create that found a file is the nearest at the mount.
  [ErrorCode.PreconditionFailed]: 'EEXIST',
  // What setxattr(2) answers for a value too large for the file system.
  [ErrorCode.MetadataTooLarge]: 'E2BIG',
  [ErrorCode.BadHandle]: 'EBADF',
  [ErrorCode.NoSpace]: 'ENOSPC',
  [ErrorCode.Busy]: 'EBUSY',
  [ErrorCode.NotSupported]: 'ENOTSUP',
  [ErrorCode.PermissionDenied]: 'EACCES',
  [ErrorCode.CustomerKeyRequired]: 'ENOKEY',
  [ErrorCode.CustomerKeyMismatch]: 'ENOKEY',
  [ErrorCode.Internal]: 'EIO',
  [ErrorCode.KeyNotFound]: 'ENOKEY',
  [ErrorCode.KeyExists]: 'EEXIST',
  [ErrorCode.KeyDisabled]: 'ENOKEY',
  [ErrorCode.NotAuthentic]: 'EIO',
  // A transient outage: EIO with the reason in the log (EAGAIN makes some readers spin).
  [ErrorCode.KeyServerUnavailable]: 'EIO',
  [ErrorCode.KeyAccessDenied]: 'EACCES',
  [ErrorCode.InvalidKeyName]: 'EINVAL',
};

/** Codes whose detail the caller never sees: the log is where an operator finds it. */
const LOGGED_AS_ERROR = new Set<ErrorCode>([
  ErrorCode.Integrity,
  ErrorCode.UnsupportedFormat,
  ErrorCode.Internal,
  ErrorCode.NotAuthentic,
  ErrorCode.KeyServerUnavailable,
]);

function errnoOf(name: ErrnoName | 'ENOKEY'): number {
  return name === 'ENOKEY' ? ENOKEY : E[name];
}

/** A negative errno for any error thrown below the FUSE edge (what fuse-native callbacks take). */
export function toErrno(err: unknown, op: string, path: string, log: Logger): number {
  if (isMountdError(err)) {
    const name = BY_CODE[err.code];
    if (LOGGED_AS_ERROR.has(err.code)) {
      const cause = err.cause instanceof Error ? ` (${err.cause.message})` : '';
      log.error(`${op} ${path}: ${err.code}: ${err.message}${cause} -> ${name}`);
    } else if (name === 'ENOKEY') {
      log.info(`${op} ${path}: ${err.message} -> ENOKEY`);
    }
    return -errnoOf(name);
  }
  // A system error that escaped the engine's conversion keeps its own errno.
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string' && code in E) {
    const n = E[code as ErrnoName];
    if (code !== 'ENOENT') log.warn(`${op} ${path}: ${code}`);
    return -n;
  }
  log.error(`${op} ${path}: unexpected error -> EIO: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  return -E.EIO;
}

/** Negative errno by name, for answers the FUSE layer gives itself. */
export function errno(name: ErrnoName | 'ENOKEY'): number {
  return -errnoOf(name);
}
