// The FUSE mount: buckets as directories at the root, objects as files below them.
export { fuseAvailability, mountFilesystem, mountOptionString, clearStaleMount, MAX_WRITE, type MountHandle, type MountOptions } from './mount.js';
export { FUSE_OPERATION_NAMES } from './operations.js';
export { ENOKEY, toErrno } from './errno.js';
export { parseMountPath, type MountPath } from './paths.js';
