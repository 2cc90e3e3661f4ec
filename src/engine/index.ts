// The storage engine: the one API the mount and the S3 listener use.
export * from './Engine.js';
export { customerKeyMd5, objectPath } from './ObjectKeys.js';
