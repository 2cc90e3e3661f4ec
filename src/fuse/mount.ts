// Mounting and unmounting: options, the clean-up of a mount a crashed daemon left, and a flushing unmount.
import { execFile } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type { Engine, Logger } from '../engine/index.js';
import { ErrorCode, MountdError } from '../errors/index.js';
import { isPatchedBinding, loadFuse, type FuseInstance } from './binding.js';
import { LOW_LEVEL_NATIVE_PATH, LowLevelMount, cacheReadsFromEnv, loadLowLevel, spinMicrosFromEnv } from './lowlevel.js';
import { makeOperations, toFuseStat } from './operations.js';
import { OpenHandleTable } from './OpenHandleTable.js';
import { isAtOrBelow } from './paths.js';

const run = promisify(execFile);

export interface MountOptions {
  mountPoint: string;
  log: Logger;
  /**
   * Default true: writes, and reads through descriptors that may write, reach the daemon (no
   * kernel page cache); read-only opens on the low-level binding may still be cached
   * (MOUNTD_FUSE_CACHE_READS), and a key lock drops those pages before it returns. false caches
   * everything, for measuring what direct I/O costs.
   */
  directIo?: boolean;
  /** The kernel ended the mount by itself (an unmount from outside); low-level binding only. */
  onUnmounted?: () => void;
}

export interface MountHandle {
  mountPoint: string;
  /** Which binding serves the mount (MOUNTD_FUSE_BINDING). */
  binding: FuseBindingName;
  /** Nodes the kernel holds (looked up and not yet forgotten); null for fuse-native, which does not say. */
  nodes(): number | null;
  /** Flushes open files and unmounts. */
  unmount(): Promise<void>;
}

/** Largest write the kernel sends in one request (two 64 KiB packages). */
export const MAX_WRITE = 128 * 1024;

/** Whether this machine can mount: /dev/fuse present and fuse-native loadable. */
export function fuseAvailability(): { ok: boolean; reason?: string } {
  try {
    accessSync('/dev/fuse', fsConstants.R_OK | fsConstants.W_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { ok: false, reason: code === 'ENOENT' ? '/dev/fuse is missing (a container needs --device /dev/fuse)' : `/dev/fuse is not usable (${code})` };
  }
  try {
    loadFuse();
  } catch (err) {
    return { ok: false, reason: `fuse-native cannot load (install Debian's libfuse2 and fuse): ${(err as Error).message}` };
  }
  return { ok: true };
}

/** libfuse options; fuse-native appends `fsname` verbatim to its -o string, so the rest rides after it. */
export function mountOptionString(directIo: boolean): string {
  const opts = ['mountd', 'big_writes', `max_write=${MAX_WRITE}`];
  if (directIo) opts.push('direct_io');
  return opts.join(',');
}

/** libfuse -o options of the low-level session (direct_io is given per open there). */
export function lowLevelOptionString(debug: boolean): string {
  const opts = ['fsname=mountd', 'subtype=mountd', 'big_writes', `max_write=${MAX_WRITE}`];
  if (debug) opts.push('debug');
  return opts.join(',');
}

export type FuseBindingName = 'lowlevel' | 'fuse-native';

/**
 * The binding that serves the mount: MOUNTD_FUSE_BINDING=lowlevel (the default when
 * native/build/fuse-ll.node is built) or fuse-native (libfuse's high-level API on its threads).
 */
export function chosenBinding(): { kind: 'lowlevel'; native: NonNullable<ReturnType<typeof loadLowLevel>> } | { kind: 'fuse-native' } {
  const want = process.env.MOUNTD_FUSE_BINDING ?? '';
  if (want !== '' && want !== 'lowlevel' && want !== 'fuse-native') {
    throw new MountdError(ErrorCode.InvalidArgument, `MOUNTD_FUSE_BINDING must be lowlevel or fuse-native, not ${JSON.stringify(want)}`);
  }
  if (want === 'fuse-native') return { kind: 'fuse-native' };
  const native = loadLowLevel();
  if (native) return { kind: 'lowlevel', native };
  if (want === 'lowlevel') throw new MountdError(ErrorCode.InvalidArgument, `MOUNTD_FUSE_BINDING=lowlevel, but ${LOW_LEVEL_NATIVE_PATH} is not built (run native/build.sh)`);
  return { kind: 'fuse-native' };
}

export async function mountFilesystem(engine: Engine, opts: MountOptions): Promise<MountHandle> {
  const { log } = opts;
  const mountPoint = path.resolve(opts.mountPoint);
  const root = engine.store.root;
  // The daemon would serve requests on its own backing files through its own mount: a deadlock.
  if (isAtOrBelow(mountPoint, root) || isAtOrBelow(root, mountPoint)) {
    throw new MountdError(ErrorCode.InvalidArgument, `the mount point ${mountPoint} and the data directory ${root} must not contain each other`);
  }
  const binding = chosenBinding();
  const spinMicros = spinMicrosFromEnv();
  const cacheReads = cacheReadsFromEnv();
  await clearStaleMount(mountPoint, log);
  await fsp.mkdir(mountPoint, { recursive: true });

  const handles = new OpenHandleTable(binding.kind === 'lowlevel');
  let detach: () => Promise<Error | null>;
  let nodes: () => number | null = () => null;
  /** The kernel ended the session itself (an unmount from outside, or an abort). */
  let endedByKernel = false;
  /** major:minor of the mount made here, so that only it is removed as dead. */
  let mountedDev: string | null = null;
  /**
   * After an abort (fusectl's abort, umount -f of a busy mount) the session is gone but the mount
   * stays, dead ("Transport endpoint is not connected"): it goes, as the next start would remove it.
   */
  let deadMountRemoval: Promise<void> | undefined;
  const removeDeadMount = async (): Promise<void> => {
    if (!mountedDev || (await fuseMountInfoAt(mountPoint))?.dev !== mountedDev) return;
    await run('fusermount', ['-uz', mountPoint], { timeout: 10_000 }).then(
      () => log.warn(`mount: removed the dead mount the end of the session left at ${mountPoint}`),
      (e: Error) => log.warn(`mount: removing the dead mount at ${mountPoint}: ${e.message}`),
    );
  };
  if (binding.kind === 'fuse-native' && process.env.MOUNTD_FUSE_BINDING !== 'fuse-native') {
    log.warn(`mount: ${LOW_LEVEL_NATIVE_PATH} is not built, so fuse-native serves the mount: no page cache for reads, and a key lock cannot drop pages mapped before it (run native/build.sh; scripts/setup does)`);
  }
  if (binding.kind === 'lowlevel') {
    const ll = new LowLevelMount(binding.native, makeOperations({ engine, handles, log, lowLevel: true }), {
      mountPoint,
      options: lowLevelOptionString(process.env.MOUNTD_FUSE_DEBUG === '1'),
      directIo: opts.directIo ?? true,
      cacheReads,
      spinMicros,
      log,
      statHandle: (fh) => {
        try {
          return toFuseStat(engine.handleStat(fh));
        } catch {
          return null;
        }
      },
      moveHandle: (fh, p) => {
        const h = handles.get(fh);
        if (h) h.path = p;
      },
      dropHidden: (p) => handles.forgetHidden(p),
      onUnmounted: () => {
        endedByKernel = true;
        log.error(`mount: ${mountPoint} was unmounted from outside (restart mountd to mount again)`);
        // First the cached pages go (the session's end started that), then the dead mount.
        deadMountRemoval ??= ll.drain().then(removeDeadMount);
        opts.onUnmounted?.();
      },
    });
    try {
      ll.mount();
    } catch (err) {
      throw new MountdError(ErrorCode.Internal, `FUSE mount at ${mountPoint} failed: ${(err as Error).message}`, { cause: err });
    }
    nodes = () => ll.nodeCount;
    mountedDev = (await fuseMountInfoAt(mountPoint))?.dev ?? null;
    // A key that locks takes the kernel's cached pages of every file opened through the mount
    // with it (read-only opens that read through the page cache, MAP_PRIVATE mappings).
    const offKeyLock = engine.onKeyLock(() => ll.invalidateOpened());
    // What S3 changes, the kernel forgets at once: no stat or open at the mount sees an old size or
    // a removed name after the S3 request was answered.
    const offChange = engine.onChange((changes) => ll.changed(changes));
    detach = async () => {
      offKeyLock();
      offChange();
      await ll.close();
      return null;
    };
  } else {
    const Fuse = loadFuse();
    if (!isPatchedBinding()) {
      log.warn('mount: native/build/Release/fuse.node is missing, so fuse-native\'s prebuilt binding serves the mount: times set through it take the access time as the modification time (cp -a, tar, rsync); run native/build.sh (scripts/setup does)');
    }
    const fuse: FuseInstance = new Fuse(mountPoint, makeOperations({ engine, handles, log }), {
      fsname: mountOptionString(opts.directIo ?? true),
      subtype: 'mountd',
      force: false,
      mkdir: false,
      // libfuse's own trace of every request on stderr, for diagnosing a tool that misbehaves.
      debug: process.env.MOUNTD_FUSE_DEBUG === '1',
      // fuse-native answers ETIMEDOUT after this; a rename re-seals every file below it. Never
      // for requests whose buffer is libfuse's memory (read, write, getxattr, listxattr): after a
      // timeout libfuse frees it, and the late answer would copy into (or out of) freed memory.
      timeout: { default: 60_000, rename: 600_000, read: false, write: false, getxattr: false, listxattr: false },
    });
    await new Promise<void>((resolve, reject) =>
      fuse.mount((err) => (err ? reject(new MountdError(ErrorCode.Internal, `FUSE mount at ${mountPoint} failed: ${err.message} (libfuse says why on stderr)`, { cause: err })) : resolve())),
    );
    // fuse-native cannot have the kernel drop its pages: a MAP_PRIVATE mapping made before a key
    // lock keeps what it read. The lock says so instead of reporting a clean success.
    const offKeyLock = engine.onKeyLock(async () => {
      throw new Error('the fuse-native binding cannot drop pages the kernel cached (MAP_PRIVATE mappings made before the lock keep what they read); serve the mount through the low-level binding (native/build.sh)');
    });
    detach = () => {
      offKeyLock();
      return new Promise<Error | null>((resolve) => fuse.unmount(resolve));
    };
  }
  log.info(`mount: ${mountPoint} served through ${binding.kind === 'lowlevel' ? 'the low-level binding (native/fuse-ll.c)' : 'fuse-native'}`);

  let unmounting: Promise<void> | undefined;
  const unmount = async (): Promise<void> => {
    // Buffered writes reach the disk before the mount goes away (the engine flushes again on close).
    for (const h of handles.all()) {
      await engine.flush(h.fh).catch((err: Error) => log.warn(`unmount: flush of ${h.path} failed: ${err.message}`));
    }
    // Unlinks of open files still waiting for a rename that did not come.
    for (const [p, u] of [...handles.pendingUnlinks]) {
      clearTimeout(u.timer);
      await (u.done ?? engine.unlink(u.bucket, u.key, { ifIno: u.ino })).catch((err: Error) => log.warn(`unmount: unlink of ${p} failed: ${err.message}`));
      handles.pendingUnlinks.delete(p);
    }
    const err = await detach();
    if (endedByKernel) await deadMountRemoval;
    if (err) {
      log.warn(`unmount of ${mountPoint}: ${err.message}; trying a lazy umount`);
      await run('umount', ['-l', mountPoint], { timeout: 10_000 }).catch((e: Error) => {
        throw new MountdError(ErrorCode.Busy, `could not unmount ${mountPoint}: ${e.message}`);
      });
    }
    log.info(`unmounted ${mountPoint}${handles.size > 0 ? ` (${handles.size} file(s) were still open)` : ''}`);
  };
  return { mountPoint, binding: binding.kind, nodes, unmount: () => (unmounting ??= unmount()) };
}

/**
 * The FUSE mount at exactly `mountPoint`, from /proc/self/mountinfo (octal escapes decoded): its
 * type and its device (major:minor); the last one listed if several are stacked there.
 */
async function fuseMountInfoAt(mountPoint: string): Promise<{ fstype: string; dev: string } | null> {
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
  let found: { fstype: string; dev: string } | null = null;
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const fstype = right.split(' ')[0] ?? '';
    const f = left.split(' ');
    if ((fstype === 'fuse' || fstype.startsWith('fuse.')) && unescape(f[4] ?? '') === mountPoint) found = { fstype, dev: f[2] ?? '' };
  }
  return found;
}

/**
 * A daemon killed with its mount up leaves a dead mount ("Transport endpoint is not
 * connected") that blocks a new one: remove it. A live mount there is another daemon's: refuse.
 */
export async function clearStaleMount(mountPoint: string, log: Logger): Promise<void> {
  const fstype = (await fuseMountInfoAt(mountPoint))?.fstype ?? null;
  if (!fstype) return;
  // Never stat a live mount of our own (this process serves none yet); a hung peer could block, hence the race.
  const probe = await Promise.race([
    fsp.stat(mountPoint).then(
      () => 'alive' as const,
      (err: NodeJS.ErrnoException) => (err.code === 'ENOTCONN' || err.code === 'ECONNABORTED' ? ('dead' as const) : ('alive' as const)),
    ),
    new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 5000).unref()),
  ]);
  if (probe !== 'dead') {
    throw new MountdError(ErrorCode.Busy, `${mountPoint} is already a ${fstype} mount served by a running process${probe === 'hung' ? ' (not answering)' : ''}; unmount it first`);
  }
  try {
    await run('fusermount', ['-uz', mountPoint], { timeout: 10_000 });
  } catch {
    await run('umount', ['-l', mountPoint], { timeout: 10_000 });
  }
  log.warn(`removed a stale ${fstype} mount at ${mountPoint} left by a daemon that did not exit cleanly`);
}
