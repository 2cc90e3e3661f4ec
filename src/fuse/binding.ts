// The part of fuse-native (CommonJS, untyped) the mount uses, loaded lazily so a machine without libfuse can still run the daemon.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Attributes as fuse-native serialises them (times in ms since the epoch). */
export interface FuseStat {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  ino?: number;
  blksize?: number;
  blocks?: number;
  atime: number;
  mtime: number;
  ctime: number;
}

export interface FuseStatfs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  fsid: number;
  flag: number;
  namemax: number;
}

type Done = (err: number) => void;
type Reply<T> = (err: number, value?: T) => void;

/**
 * The callback conventions of fuse-native 2.2: `cb(0, value)` or `cb(-errno)`; read and write
 * answer `cb(bytes)`; getxattr answers `cb(0, buffer)` (or `cb(0, null)` for ENODATA).
 */
export interface FuseOperations {
  getattr(path: string, cb: Reply<FuseStat>): void;
  readdir(path: string, cb: (err: number, names?: string[]) => void): void;
  statfs(path: string, cb: Reply<FuseStatfs>): void;
  mkdir(path: string, mode: number, cb: Done): void;
  rmdir(path: string, cb: Done): void;
  create(path: string, mode: number, cb: Reply<number>): void;
  open(path: string, flags: number, cb: Reply<number>): void;
  read(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytes: number) => void): void;
  write(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytes: number) => void): void;
  flush(path: string, fd: number, cb: Done): void;
  fsync(path: string, datasync: number, fd: number, cb: Done): void;
  release(path: string, fd: number, cb: Done): void;
  truncate(path: string, size: number, cb: Done): void;
  ftruncate(path: string, fd: number, size: number, cb: Done): void;
  unlink(path: string, cb: Done): void;
  rename(src: string, dest: string, cb: Done): void;
  link(src: string, dest: string, cb: Done): void;
  symlink(target: string, path: string, cb: Done): void;
  readlink(path: string, cb: Reply<string>): void;
  chmod(path: string, mode: number, cb: Done): void;
  chown(path: string, uid: number, gid: number, cb: Done): void;
  utimens(path: string, atime: number, mtime: number, cb: Done): void;
  setxattr(path: string, name: string, value: Buffer, position: number, flags: number, cb: Done): void;
  getxattr(path: string, name: string, position: number, cb: (err: number, value?: Buffer | null) => void): void;
  listxattr(path: string, cb: (err: number, names?: string[]) => void): void;
  removexattr(path: string, name: string, cb: Done): void;
  /** fallocate(2) through a handle. Our low-level binding only: fuse-native has no such operation. */
  fallocate(path: string, fd: number, mode: number, offset: number, length: number, cb: Done): void;
}

export interface FuseOptions {
  /** Appended verbatim to the -o string: extra libfuse options ride on it after a comma. */
  fsname?: string;
  subtype?: string;
  force?: boolean;
  mkdir?: boolean;
  debug?: boolean;
  /** Milliseconds before fuse-native answers ETIMEDOUT itself; per operation name, with `default`. */
  timeout?: number | false | Record<string, number | false>;
}

export interface FuseInstance {
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
}

export interface FuseClass {
  new (mountPoint: string, ops: Partial<FuseOperations>, opts: FuseOptions): FuseInstance;
  unmount(mountPoint: string, cb: (err: Error | null) => void): void;
}

let loaded: FuseClass | undefined;
let patched = false;
let primeExport: ((ints: Uint32Array | null, path?: string, op?: number) => void) | null = null;
let opCodes: Record<string, number> = {};

/** native/: fuse-native's C glue with our fixes, built by native/build.sh (scripts/setup). */
const NATIVE_DIR = fileURLToPath(new URL('../../native/', import.meta.url));

/**
 * fuse-native's JavaScript over our build of its C glue when native/build/Release/fuse.node
 * exists (node-gyp-build loads from FUSE_NATIVE_PREBUILD first), else over its prebuilt binary.
 * Throws when libfuse.so.2 or both binaries are missing.
 */
export function loadFuse(): FuseClass {
  if (!loaded) {
    const require = createRequire(import.meta.url);
    const ours = path.join(NATIVE_DIR, 'build', 'Release', 'fuse.node');
    if (existsSync(ours) && process.env.FUSE_NATIVE_PREBUILD === undefined) process.env.FUSE_NATIVE_PREBUILD = NATIVE_DIR;
    loaded = require('fuse-native') as FuseClass;
    const chosen = process.env.FUSE_NATIVE_PREBUILD;
    const native =
      chosen !== undefined && path.resolve(chosen) === path.resolve(NATIVE_DIR) && existsSync(ours)
        ? (require(ours) as Record<string, unknown> & { mountd_patched?: number; mountd_prime_stat?: (ints: Uint32Array | null, path?: string, op?: number) => void })
        : null;
    patched = native?.mountd_patched === 1;
    primeExport = patched ? (native?.mountd_prime_stat ?? null) : null;
    opCodes = {};
    for (const op of PRIMED_OPS) if (typeof native?.[`op_${op}`] === 'number') opCodes[op] = native[`op_${op}`] as number;
    if (Object.keys(opCodes).length !== PRIMED_OPS.length) primeExport = null;
    // MOUNTD_FUSE_PRIME=0: every getattr goes to JavaScript (to rule the shortcut out).
    if (process.env.MOUNTD_FUSE_PRIME === '0') primeExport = null;
  }
  return loaded;
}

/**
 * True when the loaded binding is ours (native/): utimens gets both times, and UTIME_NOW and
 * UTIME_OMIT arrive as UTIME_NOW_MS and UTIME_OMIT_MS. The prebuilt one passes the access time
 * twice and both specials as 1073 ms.
 */
export function isPatchedBinding(): boolean {
  return patched;
}

/** The operations whose answers can carry attributes (libfuse follows each with a getattr). */
export const PRIMED_OPS = ['create', 'chmod', 'chown', 'utimens', 'truncate', 'ftruncate'] as const;
export type PrimedOp = (typeof PRIMED_OPS)[number];

/**
 * Hands our C glue the attributes that go with the successful answer about to be given to `op`
 * on `path`: libfuse asks getattr for them next, and the C glue then answers that getattr itself
 * instead of a second trip to JavaScript (see native/fuse-native.c, change 7). Call it right
 * before the callback; with `st` null it forgets attributes given earlier and not yet taken. A
 * no-op with the published binary.
 */
export function primeAttributes(op: PrimedOp, path: string, st: FuseStat | null): void {
  if (!primeExport) return;
  if (!st) {
    primeExport(null);
    return;
  }
  // fuse-native's layout (getStatArray): mode, uid, gid, size (2 words), dev, nlink, ino, rdev,
  // blksize, blocks (2 words), atime, mtime, ctime (2 words each, milliseconds).
  const ints = new Uint32Array(18);
  const two = (at: number, n: number) => {
    ints[at] = n % 4294967296;
    ints[at + 1] = Math.floor(n / 4294967296);
  };
  ints[0] = st.mode;
  ints[1] = st.uid;
  ints[2] = st.gid;
  two(3, st.size);
  ints[6] = st.nlink;
  ints[7] = st.ino ?? 0;
  ints[9] = st.blksize ?? 0;
  two(10, st.blocks ?? 0);
  two(12, st.atime);
  two(14, st.mtime);
  two(16, st.ctime);
  primeExport(ints, path, opCodes[op]);
}

/** True when answers can carry attributes (primeAttributes does something). */
export function canPrimeAttributes(): boolean {
  return primeExport !== null;
}

export const UTIME_NOW_MS = 2 ** 52;
export const UTIME_OMIT_MS = 2 ** 52 + 1;
