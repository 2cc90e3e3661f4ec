// The FUSE operations table: each kernel request on the mount becomes one engine call.
import { constants as fsConstants } from 'node:fs';
import * as fsp from 'node:fs/promises';
import type { Engine, Logger, Stat } from '../engine/index.js';
import { ErrorCode, isMountdError } from '../errors/index.js';
import { canPrimeAttributes, isPatchedBinding, primeAttributes, type PrimedOp, UTIME_NOW_MS, UTIME_OMIT_MS, type FuseOperations, type FuseStat, type FuseStatfs } from './binding.js';
import { errno, toErrno } from './errno.js';
import type { OpenHandleTable } from './OpenHandleTable.js';
import { engineKey, isAtOrBelow, isHiddenName, parseMountPath, type MountPath } from './paths.js';

/** What the kernel may ask of the mount. Pinned by a test: adding or dropping one is deliberate. */
export const FUSE_OPERATION_NAMES = [
  'getattr',
  'readdir',
  'statfs',
  'mkdir',
  'rmdir',
  'create',
  'open',
  'read',
  'write',
  'flush',
  'fsync',
  'release',
  'truncate',
  'ftruncate',
  'unlink',
  'rename',
  'link',
  'symlink',
  'readlink',
  'chmod',
  'chown',
  'utimens',
  'setxattr',
  'getxattr',
  'listxattr',
  'removexattr',
  // Low-level binding only (fuse-native ignores it; the kernel then answers EOPNOTSUPP).
  'fallocate',
] as const satisfies ReadonlyArray<keyof FuseOperations>;

const { S_IFDIR, S_IFREG, S_IFLNK, O_TRUNC, O_APPEND } = fsConstants;
/** fallocate(2) modes (linux/falloc.h). */
const FALLOC_KEEP_SIZE = 0x01;
const FALLOC_PUNCH_HOLE = 0x02;
const FALLOC_ZERO_RANGE = 0x10;
/** Zeros written by PUNCH_HOLE and ZERO_RANGE, a package-aligned 1 MiB at a time. */
const ZEROS = Buffer.alloc(1024 * 1024);
const XATTR_CREATE = 1;
const XATTR_REPLACE = 2;
const USER_XATTR = 'user.';
/** What fuse-native turns UTIME_NOW and UTIME_OMIT into: tv_sec 0, tv_nsec 2^30-1 or -2, as milliseconds. */
const UTIME_SPECIAL_MS = Math.floor(((1 << 30) - 2) / 1e6);
/** st_blksize: two 64 KiB packages, the size of one big write. */
const BLKSIZE = 128 * 1024;
/** The engine's limits on a path segment and on a whole object key (S3's 1024 bytes). */
const MAX_NAME_BYTES = 255;
const MAX_KEY_BYTES = 1024;

class Refusal extends Error {
  constructor(readonly errno: number) {
    super(`errno ${errno}`);
  }
}
const refuse = (name: Parameters<typeof errno>[0]) => new Refusal(errno(name));
/** The answer to a lookup of a missing name, made once: its stack is never read. */
const NO_ENTRY = refuse('ENOENT');

export function toFuseStat(st: Stat): FuseStat {
  const type = st.type === 'directory' ? S_IFDIR : st.type === 'symlink' ? S_IFLNK : S_IFREG;
  return {
    mode: type | (st.mode & 0o7777),
    uid: st.uid,
    gid: st.gid,
    size: st.size,
    // Files are never hard-linked on the mount; tar and du take nlink > 1 as a hard link.
    nlink: st.type === 'directory' ? st.nlink : 1,
    ino: st.ino,
    blksize: BLKSIZE,
    // Plaintext bytes in 512-byte units rounded up to 4 KiB: what du should add up.
    blocks: Math.ceil(st.size / 4096) * 8,
    atime: st.atimeMs,
    mtime: st.mtimeMs,
    ctime: st.ctimeMs,
  };
}

export interface OperationsContext {
  engine: Engine;
  handles: OpenHandleTable;
  log: Logger;
  /**
   * Served through native/fuse-ll.c (src/fuse/lowlevel.ts): times arrive exact, with UTIME_NOW_MS
   * and UTIME_OMIT_MS, and no answer carries primed attributes (a low-level answer has its own).
   */
  lowLevel?: boolean;
}

export function makeOperations({ engine, handles, log, lowLevel = false }: OperationsContext): FuseOperations {
  const preciseTimes = lowLevel || isPatchedBinding();
  const primes = !lowLevel && canPrimeAttributes();
  /** Runs one request: the answer, or the mapped errno of whatever was thrown. */
  const run = <T>(op: string, path: string, fn: () => Promise<T>, reply: (v: T) => void, fail: (e: number) => void): void => {
    const go = () => fn().then(reply, (err: unknown) => fail(err instanceof Refusal ? err.errno : toErrno(err, op, path, log)));
    // A request on a name whose unlink is pending (or a listing of its directory) sees it gone.
    if (handles.pendingUnlinks.size > 0 && op !== 'rename') void settleFor(op, path).then(go);
    else void go();
  };

  /** Carries out the pending unlink of `p`, if any (see OpenHandleTable.pendingUnlinks). */
  const settle = (p: string): Promise<void> => {
    const pending = handles.pendingUnlinks.get(p);
    if (!pending) return Promise.resolve();
    clearTimeout(pending.timer);
    // Under way already (the timer, another request): every caller waits for the same unlink,
    // and the name stays pending until it is done.
    pending.done ??= engine
      .unlink(pending.bucket, pending.key, { ifIno: pending.ino })
      .catch((err: unknown) => {
        if (!isMountdError(err, ErrorCode.NotFound)) log.warn(`mount: unlink of ${p} (open when it was removed) failed: ${(err as Error).message}`);
      })
      .finally(() => {
        if (handles.pendingUnlinks.get(p) === pending) handles.pendingUnlinks.delete(p);
      });
    return pending.done;
  };
  const settleFor = async (op: string, p: string): Promise<void> => {
    if (op === 'readdir' || op === 'rmdir') {
      for (const q of [...handles.pendingUnlinks.keys()]) if (isAtOrBelow(q, p)) await settle(q);
    } else await settle(p);
  };
  /**
   * How long the unlink of a hidden file waits for the rename that may follow. The rename is
   * libfuse's very next request, but on a loaded machine that can take tens of milliseconds
   * (20 ms was seen to be too short in CI-like load).
   */
  const UNLINK_GRACE_MS = 500;
  const done = (op: string, path: string, cb: (e: number) => void, fn: () => Promise<void>) =>
    run(op, path, fn, () => cb(0), cb);
  /**
   * The attributes libfuse will ask for right after this answer (it follows every create and
   * setattr with a getattr of the path), or null. They go with the answer (primeAttributes):
   * computing them here costs less than that getattr's trip from libfuse's thread and back.
   */
  const attributesAfter = async (p: string): Promise<FuseStat | null> =>
    primes ? await statOf(p, parseMountPath(p)).catch(() => null) : null;
  /** `done` for a setattr (chmod, chown, utimens, truncate): the answer carries the new attributes. */
  const doneSetattr = (op: PrimedOp, path: string, cb: (e: number) => void, fn: () => Promise<void>) =>
    run(
      op,
      path,
      async () => {
        await fn();
        return attributesAfter(path);
      },
      (st) => {
        if (primes) primeAttributes(op, path, st);
        cb(0);
      },
      cb,
    );

  /** An object path, or `otherwise` for the root and bucket directories (no files live at the root). */
  const objectAt = (p: string, otherwise: Parameters<typeof errno>[0] = 'EPERM'): { bucket: string; key: string } => {
    const mp = parseMountPath(p);
    if (mp.kind === 'object') return { bucket: mp.bucket, key: mp.key };
    throw refuse(otherwise);
  };

  /** New names longer than an object key allows get the errno a file system gives, not EINVAL. */
  const checkNewName = (p: string) => {
    const segments = p.split('/').filter((x) => x !== '');
    if (segments.some((x) => Buffer.byteLength(x) > MAX_NAME_BYTES) || Buffer.byteLength(segments.slice(1).join('/')) > MAX_KEY_BYTES) {
      throw refuse('ENAMETOOLONG');
    }
  };

  /** A lookup of a name that cannot exist (".Trash", a bad key) is ENOENT, not EINVAL. */
  const lookup = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      if (isMountdError(err, ErrorCode.InvalidName)) throw refuse('ENOENT');
      throw err;
    }
  };

  const rootStat = async (): Promise<FuseStat> => {
    const st = await fsp.stat(engine.store.root);
    return { mode: S_IFDIR | 0o755, ino: st.ino, uid: st.uid, gid: st.gid, size: 4096, nlink: 2, blksize: BLKSIZE, blocks: 8, atime: st.atimeMs, mtime: st.mtimeMs, ctime: st.ctimeMs };
  };

  const statOf = async (p: string, mp: MountPath): Promise<FuseStat> => {
    if (mp.kind === 'root') return rootStat();
    const hidden = handles.hiddenStat(p);
    if (hidden) {
      const open = handles.at(p)[0];
      return toFuseStat({ ...hidden, size: open ? engine.handleSize(open.fh) : hidden.size });
    }
    const { bucket, key } = engineKey(mp)!;
    const st = await lookup(() => engine.statOrNull(bucket, key));
    if (!st) throw NO_ENTRY;
    return toFuseStat(st);
  };

  /** Buffered writes land before a time is set, so the flush on close does not move mtime again. */
  const flushOpen = async (p: string) => {
    for (const h of handles.at(p)) {
      await engine.flush(h.fh).catch((err: unknown) => {
        if (!isMountdError(err, ErrorCode.BadHandle)) throw err;
      });
    }
  };

  const xattrName = (name: string): string => {
    if (!name.startsWith(USER_XATTR) || name.length === USER_XATTR.length) throw refuse('ENOTSUP');
    return name.slice(USER_XATTR.length);
  };

  return {
    getattr(p, cb) {
      run('getattr', p, () => statOf(p, parseMountPath(p)), (st) => cb(0, st), cb);
    },

    readdir(p, cb) {
      run(
        'readdir',
        p,
        async () => {
          const mp = parseMountPath(p);
          if (mp.kind === 'root') return (await engine.listBuckets()).map((b) => b.name);
          const { bucket, key } = engineKey(mp)!;
          return (await lookup(() => engine.readdir(bucket, key))).map((e) => e.name);
        },
        (names) => cb(0, ['.', '..', ...names]),
        cb,
      );
    },

    statfs(p, cb) {
      run(
        'statfs',
        p,
        async (): Promise<FuseStatfs> => {
          const s = await fsp.statfs(engine.store.root);
          // fuse-native passes 32-bit counts: grow the block size until the counts fit.
          let bsize = s.bsize;
          let scale = 1;
          while (s.blocks / scale > 0xffffffff) {
            scale *= 2;
            bsize *= 2;
          }
          const files = Math.min(s.files, 0xffffffff);
          const ffree = Math.min(s.ffree, 0xffffffff);
          return {
            bsize,
            frsize: bsize,
            blocks: Math.floor(s.blocks / scale),
            bfree: Math.floor(s.bfree / scale),
            bavail: Math.floor(s.bavail / scale),
            files,
            ffree,
            favail: ffree,
            fsid: 0,
            flag: 0,
            namemax: 255,
          };
        },
        (s) => cb(0, s),
        cb,
      );
    },

    mkdir(p, mode, cb) {
      done('mkdir', p, cb, async () => {
        checkNewName(p);
        const mp = parseMountPath(p);
        if (mp.kind === 'root') throw refuse('EEXIST');
        if (mp.kind === 'bucket') {
          await engine.createBucket(mp.bucket);
          log.info(`mount: created bucket ${mp.bucket}`);
          return;
        }
        await engine.mkdir(mp.bucket, mp.key, mode & 0o7777);
      });
    },

    rmdir(p, cb) {
      done('rmdir', p, cb, async () => {
        const mp = parseMountPath(p);
        if (mp.kind === 'root') throw refuse('EBUSY');
        if (mp.kind === 'bucket') {
          await lookup(() => engine.deleteBucket(mp.bucket));
          log.info(`mount: deleted bucket ${mp.bucket}`);
          return;
        }
        await engine.rmdir(mp.bucket, mp.key);
      });
    },

    create(p, mode, cb) {
      run(
        'create',
        p,
        async () => {
          checkNewName(p);
          const { bucket, key } = objectAt(p);
          const fh = await engine.create(bucket, key, { mode: mode & 0o7777 });
          handles.add(fh, p, false);
          return { fh, st: await attributesAfter(p) };
        },
        ({ fh, st }) => {
          if (primes) primeAttributes('create', p, st);
          cb(0, fh);
        },
        cb,
      );
    },

    open(p, flags, cb) {
      run(
        'open',
        p,
        async () => {
          const twin = handles.hiddenStat(p) ? handles.at(p)[0] : undefined;
          if (twin) {
            // An open that raced with the rename or unlink that hid this file: it opens the
            // file that was there, as it would on a local disk.
            const fh = engine.dup(twin.fh);
            if ((flags & O_TRUNC) !== 0) await engine.ftruncate(fh, 0);
            handles.add(fh, p, (flags & O_APPEND) !== 0);
            return fh;
          }
          const { bucket, key } = objectAt(p, 'EISDIR');
          const fh = await engine.open(bucket, key, { truncate: (flags & O_TRUNC) !== 0 });
          handles.add(fh, p, (flags & O_APPEND) !== 0);
          return fh;
        },
        (fh) => cb(0, fh),
        cb,
      );
    },

    read(p, fd, buf, len, pos, cb) {
      run(
        'read',
        p,
        async () => {
          // Decrypted straight into libfuse's reply buffer.
          return (await engine.read(fd, pos, len, buf.subarray(0, len))).length;
        },
        cb,
        cb,
      );
    },

    write(p, fd, buf, len, pos, cb) {
      run(
        'write',
        p,
        async () => {
          // O_APPEND: the end as the engine knows it, which a write through S3 may have moved.
          const at = handles.get(fd)?.append ? engine.handleSize(fd) : pos;
          return engine.write(fd, at, buf.subarray(0, len));
        },
        cb,
        cb,
      );
    },

    flush(p, fd, cb) {
      done('flush', p, cb, () => engine.flush(fd));
    },

    fsync(p, _datasync, fd, cb) {
      done('fsync', p, cb, () => engine.fsync(fd));
    },

    release(p, fd, cb) {
      // The kernel does not wait for a release: close(2) has returned and the next request on
      // the path (utime after cp, say) may already be here. The handle leaves the table first.
      handles.remove(fd);
      done('release', p, cb, () => engine.release(fd));
    },

    truncate(p, size, cb) {
      doneSetattr('truncate', p, cb, async () => {
        const open = handles.hiddenStat(p) ? handles.at(p)[0] : undefined;
        if (open) return engine.ftruncate(open.fh, size);
        const mp = parseMountPath(p);
        if (mp.kind !== 'object') throw refuse('EISDIR');
        await engine.truncate(mp.bucket, mp.key, size);
      });
    },

    ftruncate(p, fd, size, cb) {
      doneSetattr('ftruncate', p, cb, () => engine.ftruncate(fd, size));
    },

    /**
     * fallocate(2). The format has no holes: every byte below the size is a sealed package on
     * disk, so space below the end is always allocated, and growing the file writes sealed
     * zeros (as a truncate up does). Mode 0 grows the file; KEEP_SIZE within the size has
     * nothing to do, beyond it there is no way to allocate without growing (EOPNOTSUPP);
     * PUNCH_HOLE and ZERO_RANGE write zeros over the range (reads give zeros; no space is freed).
     */
    fallocate(p, fd, mode, offset, length, cb) {
      done('fallocate', p, cb, async () => {
        if ((mode & ~(FALLOC_KEEP_SIZE | FALLOC_PUNCH_HOLE | FALLOC_ZERO_RANGE)) !== 0) throw refuse('EOPNOTSUPP');
        if (offset < 0 || length <= 0) throw refuse('EINVAL');
        const size = engine.handleSize(fd);
        const end = offset + length;
        // A growth is written now, not at the close: fallocate(2) is how a program learns that
        // the space is there (ENOSPC), and a close that fails after it said yes loses the file.
        const grow = async () => {
          if (!Number.isSafeInteger(end)) throw refuse('EFBIG');
          if (!(await engine.growthFits(size, end))) throw refuse('ENOSPC');
          await engine.ftruncate(fd, end);
          await engine.flush(fd);
        };
        if ((mode & (FALLOC_PUNCH_HOLE | FALLOC_ZERO_RANGE)) !== 0) {
          for (let at = offset, stop = Math.min(end, size); at < stop; ) at += await engine.write(fd, at, ZEROS.subarray(0, Math.min(ZEROS.length, stop - at)));
          if ((mode & FALLOC_KEEP_SIZE) === 0 && end > size) await grow();
          return;
        }
        if ((mode & FALLOC_KEEP_SIZE) !== 0) {
          if (end > size) throw refuse('EOPNOTSUPP');
          return;
        }
        if (end > size) await grow();
      });
    },

    unlink(p, cb) {
      done('unlink', p, cb, async () => {
        // libfuse removes the hidden name of an unlinked file after its last release.
        if (handles.forgetHidden(p)) return;
        const mp = parseMountPath(p);
        if (mp.kind !== 'object') throw refuse(mp.kind === 'root' ? 'EPERM' : 'EISDIR');
        await engine.unlink(mp.bucket, mp.key);
      });
    },

    rename(src, dest, cb) {
      done('rename', src, cb, async () => {
        const from = parseMountPath(src);
        const to = parseMountPath(dest);
        if (from.kind === 'root' || to.kind === 'root') throw refuse('EBUSY');
        // Pending unlinks of the source, or of open files below a directory that moves, are
        // carried out first: a name they remove must not reappear under the new path.
        for (const q of [...handles.pendingUnlinks.keys()]) if (isAtOrBelow(q, src)) await settle(q);
        // Whatever our handle table says: libfuse counts a file open until our answer to its
        // release, which may still be on its way.
        if (from.kind === 'object' && isHiddenName(dest)) {
          // libfuse hiding a file unlinked while open, or the target of a rename over an open
          // file: its open handles keep the data; the unlink in the store waits (see
          // OpenHandleTable.pendingUnlinks), so that a rename that follows replaces it atomically.
          const stat = await engine.stat(from.bucket, from.key);
          handles.hide(src, dest, stat);
          const timer = setTimeout(() => void settle(src), UNLINK_GRACE_MS);
          handles.pendingUnlinks.set(src, { bucket: from.bucket, key: from.key, ino: stat.ino, timer });
          return;
        }
        // A bucket is renamed by copying: EXDEV makes mv do that.
        if (from.kind !== 'object' || to.kind !== 'object') throw refuse('EXDEV');
        checkNewName(dest);
        const replacing = handles.pendingUnlinks.get(dest);
        // An unlink already under way finishes first (its inode check spares what replaces it).
        if (replacing?.done) await replacing.done;
        try {
          await engine.rename(from.bucket, from.key, to.bucket, to.key);
        } catch (err) {
          await settle(dest);
          throw err;
        }
        if (replacing && !replacing.done) {
          // The rename replaced the hidden file in one step: nothing left to unlink.
          clearTimeout(replacing.timer);
          handles.pendingUnlinks.delete(dest);
        }
        handles.renamed(src, dest);
      });
    },

    link(src, dest, cb) {
      log.warn(`mount: hard links are not supported (link ${src} -> ${dest}): EPERM`);
      cb(errno('EPERM'));
    },

    symlink(target, p, cb) {
      done('symlink', p, cb, async () => {
        checkNewName(p);
        const { bucket, key } = objectAt(p);
        await engine.symlink(bucket, key, target);
      });
    },

    readlink(p, cb) {
      run(
        'readlink',
        p,
        async () => {
          const { bucket, key } = objectAt(p, 'EINVAL');
          return lookup(() => engine.readlink(bucket, key));
        },
        (target) => cb(0, target),
        cb,
      );
    },

    chmod(p, mode, cb) {
      doneSetattr('chmod', p, cb, async () => {
        const hidden = handles.hiddenStat(p);
        if (hidden) {
          hidden.mode = mode & 0o7777;
          return;
        }
        const ek = engineKey(parseMountPath(p));
        if (!ek) throw refuse('EPERM');
        await engine.chmod(ek.bucket, ek.key, mode & 0o7777);
      });
    },

    chown(p, uid, gid, cb) {
      doneSetattr('chown', p, cb, async () => {
        if (handles.hiddenStat(p)) return;
        const ek = engineKey(parseMountPath(p));
        if (!ek) throw refuse('EPERM');
        // (uid_t)-1 means "leave as is"; it arrives as an unsigned 32-bit value.
        await engine.chown(ek.bucket, ek.key, uid === 0xffffffff ? -1 : uid, gid === 0xffffffff ? -1 : gid);
      });
    },

    utimens(p, atime, mtime, cb) {
      doneSetattr('utimens', p, cb, async () => {
        if (handles.hiddenStat(p)) return;
        const ek = engineKey(parseMountPath(p));
        if (!ek) throw refuse('EPERM');
        if (ek.key !== '') await flushOpen(p);
        if (!preciseTimes) {
          // fuse-native's prebuilt glue hands over the access time twice, and UTIME_NOW and
          // UTIME_OMIT as 1073 ms: the best this layer can do is one time for both, "now" for
          // the special values. Our build (native/) passes both, and the specials apart.
          const at = (t: number) => (t === UTIME_SPECIAL_MS ? Date.now() : t);
          await engine.utimens(ek.bucket, ek.key, at(atime), at(mtime));
          return;
        }
        let current: Stat | undefined;
        const pick = async (t: number, which: 'atimeMs' | 'mtimeMs') => {
          if (t === UTIME_NOW_MS) return Date.now();
          if (t !== UTIME_OMIT_MS) return t;
          current ??= await engine.stat(ek.bucket, ek.key);
          return current[which];
        };
        await engine.utimens(ek.bucket, ek.key, await pick(atime, 'atimeMs'), await pick(mtime, 'mtimeMs'));
      });
    },

    setxattr(p, name, value, _position, flags, cb) {
      done('setxattr', p, cb, async () => {
        const attr = xattrName(name);
        const mp = parseMountPath(p);
        if (mp.kind !== 'object') throw refuse('ENOTSUP');
        const text = value.toString('utf8');
        // S3 metadata is text: a value that does not survive UTF-8 is refused, not mangled.
        if (!Buffer.from(text, 'utf8').equals(value)) throw refuse('EINVAL');
        if (flags & (XATTR_CREATE | XATTR_REPLACE)) {
          const exists = attr in (await engine.getUserMeta(mp.bucket, mp.key));
          if (flags & XATTR_CREATE && exists) throw refuse('EEXIST');
          if (flags & XATTR_REPLACE && !exists) throw refuse('ENODATA');
        }
        await engine.setUserMeta(mp.bucket, mp.key, attr, text).catch((err: unknown) => {
          throw isMountdError(err, ErrorCode.IsDirectory) ? refuse('ENOTSUP') : err;
        });
      });
    },

    getxattr(p, name, _position, cb) {
      run(
        'getxattr',
        p,
        async () => {
          const attr = xattrName(name);
          const mp = parseMountPath(p);
          if (mp.kind !== 'object' || handles.hiddenStat(p)) return null;
          try {
            const user = await engine.getUserMeta(mp.bucket, mp.key);
            return attr in user ? Buffer.from(user[attr]!, 'utf8') : null;
          } catch (err) {
            if (isMountdError(err, ErrorCode.IsDirectory)) return null;
            throw err;
          }
        },
        (value) => cb(0, value),
        cb,
      );
    },

    listxattr(p, cb) {
      run(
        'listxattr',
        p,
        async () => {
          const mp = parseMountPath(p);
          if (mp.kind !== 'object' || handles.hiddenStat(p)) return [];
          try {
            return Object.keys(await engine.getUserMeta(mp.bucket, mp.key)).map((n) => USER_XATTR + n);
          } catch (err) {
            if (isMountdError(err, ErrorCode.IsDirectory)) return [];
            throw err;
          }
        },
        (names) => cb(0, names),
        cb,
      );
    },

    removexattr(p, name, cb) {
      done('removexattr', p, cb, async () => {
        const attr = xattrName(name);
        const mp = parseMountPath(p);
        if (mp.kind !== 'object') throw refuse('ENOTSUP');
        const user = await engine.getUserMeta(mp.bucket, mp.key).catch((err: unknown) => {
          throw isMountdError(err, ErrorCode.IsDirectory) ? refuse('ENOTSUP') : err;
        });
        if (!(attr in user)) throw refuse('ENODATA');
        await engine.setUserMeta(mp.bucket, mp.key, attr, null);
      });
    },
  };
}
