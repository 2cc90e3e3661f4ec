// The mount over native/fuse-ll.c: libfuse's low-level (inode) API on Node's event loop.
//
// The kernel names files by node number; this module keeps the table of nodes it handed out
// (parent, name, lookup count, open count) and turns each request into the path-based
// operations of operations.ts, the same ones the fuse-native binding calls. Paths are computed
// from the parent chain, so a directory rename moves its whole subtree at once. What libfuse's
// high-level layer did on top of that is done here: a file unlinked (or renamed over) while open
// is renamed to a hidden name and removed after its last release; a node whose name was taken by
// a rename or removed answers ESTALE to open and getattr, which makes the kernel look the name up
// again (open(2) then opens whatever the name holds now, instead of failing with ENOENT).
import { constants as fsConstants, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { availableParallelism, constants as osConstants } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../engine/index.js';
import { UTIME_NOW_MS, UTIME_OMIT_MS, type FuseOperations, type FuseStat } from './binding.js';
import { ErrorCode, MountdError } from '../errors/index.js';

const E = osConstants.errno;

interface NativeSession {
  session: unknown;
  /** The session's receive buffer: a write's data is at an offset in it, valid during dispatch only. */
  recv: Buffer;
}

type Dispatch = (op: number, req: number, ino: number, a?: unknown, b?: unknown, c?: unknown, d?: unknown) => void;

interface LowLevelNative {
  mount(mountPoint: string, options: string, dispatch: Dispatch, spinMicros: number): NativeSession;
  unmount(session: unknown): void;
  setScratch(a: Float64Array): void;
  replyErr(req: number, errno: number): void;
  replyEntry(req: number, entryTimeout: number, attrTimeout: number): void;
  replyCreate(req: number, entryTimeout: number, attrTimeout: number, fh: number, directIo: number): void;
  replyAttr(req: number, attrTimeout: number): void;
  /** openFlags: FOPEN_DIRECT_IO | FOPEN_NOFLUSH; -ENOENT if the open was interrupted (the handle is not the kernel's). */
  replyOpen(req: number, fh: number, openFlags: number): number;
  replyBuf(req: number, buf: Buffer, length: number): void;
  replyWrite(req: number, count: number): void;
  replyXattr(req: number, size: number): void;
  replyReadlink(req: number, target: string): void;
  replyStatfs(req: number): void;
  /**
   * Drops the kernel's cached pages and attributes of the nodes (attributes only with
   * `attrsOnly`), then the names (parentIds[i], names[i]) from its directory cache, on a thread;
   * false if the session ended.
   */
  invalidate(session: unknown, nodeIds: number[], done: (failed: number, errno: number) => void, parentIds?: number[], names?: string[], attrsOnly?: boolean): boolean;
  ops: Record<string, number>;
  scratchLength: number;
}

const NATIVE_PATH = fileURLToPath(new URL('../../native/build/fuse-ll.node', import.meta.url));
let native: LowLevelNative | undefined;
const scratch = new Float64Array(16);

/** The low-level binding when native/build/fuse-ll.node exists, else null (native/build.sh builds it). */
export function loadLowLevel(): LowLevelNative | null {
  if (native) return native;
  if (!existsSync(NATIVE_PATH)) return null;
  const n = createRequire(import.meta.url)(NATIVE_PATH) as LowLevelNative;
  n.setScratch(scratch);
  native = n;
  return n;
}

export const LOW_LEVEL_NATIVE_PATH = path.relative(process.cwd(), NATIVE_PATH);

/**
 * The wait for a next request (LowLevelMountOptions.spinMicros). On the benchmark machine it cut
 * a tar x of 3,000 files from 5.1 to 4.0 s and md5sum -c from 1.9 to 1.45 s (30 us: 4.2 and
 * 1.5 s; 300 us: 3.9 and 1.45 s); an idle mount spends nothing, a busy one at most this much CPU
 * per pause of its caller.
 */
export const DEFAULT_SPIN_MICROS = 100;
/** The session spends at most 2 ms per wake-up waiting (native/fuse-ll.c, SPIN_BUDGET_NS). */
const MAX_SPIN_MICROS = 2000;

/**
 * MOUNTD_FUSE_SPIN_US: an integer number of microseconds, 0 to 2000; unset gives the default,
 * or 0 on a machine with one CPU, where the wait would keep the caller itself from running.
 */
export function spinMicrosFromEnv(value = process.env.MOUNTD_FUSE_SPIN_US, cpus = availableParallelism()): number {
  if (value === undefined || value === '') return cpus > 1 ? DEFAULT_SPIN_MICROS : 0;
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || n > MAX_SPIN_MICROS) {
    throw new MountdError(ErrorCode.InvalidArgument, `MOUNTD_FUSE_SPIN_US must be a whole number of microseconds from 0 to ${MAX_SPIN_MICROS}, not ${JSON.stringify(value)}`);
  }
  return n;
}

/**
 * How long the kernel may keep a name and its attributes without asking again. What S3 changes
 * is dropped from the kernel's caches before the S3 request is answered (changed()), and what a
 * flush changes after the kernel last asked, before the flush is answered; 5 s instead of
 * libfuse's 1 s spared md5sum -c over a fresh tree a fifth of its time (0.79-0.91 -> 0.64-0.70 s).
 */
const ENTRY_TIMEOUT = 5;
const ATTR_TIMEOUT = 5;
const ROOT_ID = 1;
/** st_ino of a node whose backing inode number cannot be given exactly: 2^52 + its node id. */
const NODE_INO_BASE = 2 ** 52;
/** d_ino for a listed name the kernel has not looked up (libfuse's FUSE_UNKNOWN_INO). */
const UNKNOWN_INO = 0xffffffff;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
// FUSE_SET_ATTR_* (fuse_lowlevel.h).
const SET_MODE = 1 << 0;
const SET_UID = 1 << 1;
const SET_GID = 1 << 2;
const SET_SIZE = 1 << 3;
const SET_ATIME = 1 << 4;
const SET_MTIME = 1 << 5;
const SET_ATIME_NOW = 1 << 7;
const SET_MTIME_NOW = 1 << 8;
const IO_BUFFER = 128 * 1024;
/** How long a name replaced under cached readers reads uncached (see detachReplaced). */
const NO_CACHE_AFTER_REPLACE_MS = 2000;
const O_ACCMODE = 3;
/** struct fuse_open_out's open_flags (linux/fuse.h). */
const FOPEN_DIRECT_IO = 1;
const FOPEN_NOFLUSH = 1 << 5;
const O_TRUNC = fsConstants.O_TRUNC;
/** Bits of `fhKinds`: the handle reads through the kernel's page cache; it may write. */
const FH_CACHED = 1;
const FH_WRITER = 2;

/**
 * MOUNTD_FUSE_CACHE_READS: "1" (default) lets read-only opens use the kernel's page cache (see
 * LowLevelMountOptions.cacheReads), "0" sends every read to the daemon.
 */
export function cacheReadsFromEnv(value = process.env.MOUNTD_FUSE_CACHE_READS): boolean {
  if (value === undefined || value === '' || value === '1') return true;
  if (value === '0') return false;
  throw new MountdError(ErrorCode.InvalidArgument, `MOUNTD_FUSE_CACHE_READS must be 0 or 1, not ${JSON.stringify(value)}`);
}

class Node {
  nlookup = 0;
  /** Opens answered or under way (what decides whether an unlink or a rename hides the file). */
  open = 0;
  /** Opens answered: handles a new open of a hidden file can share. */
  handles = 0;
  /** Renamed to a hidden name because it was unlinked or replaced while open. */
  hidden = false;
  /** Its name was removed or taken by another file: the kernel must look the name up again. */
  stale = false;
  kids: Map<string, Node> | undefined;
  /** st_ino as last answered (the backing file's inode number), for readdir's d_ino. */
  ino: number | undefined;
  /** The size the kernel was last told (it reads through its page cache up to that size only). */
  size = -1;
  /** Open handles that read through the page cache, and handles that may write. */
  cached = 0;
  writers = 0;
  /** Written through the mount since its last flush or fsync (which moves its times). */
  wroteSinceCommit = false;
  /** The kernel was given its attributes after the last write (and may keep them ATTR_TIMEOUT). */
  attrsSinceWrite = false;
  /** Its open file handles (answered), for the attributes of a stale node. */
  readonly fhs = new Set<number>();
  /** The backing inode number of the first file the kernel was told about under this node. */
  fileIno: number | undefined;
  /**
   * The node has shown more than one file (an S3 PUT replaced its name): handles opened before
   * read the old one, and the kernel's size may be either's. Its reads are never cached again.
   */
  mixed = false;
  /**
   * Opened since the kernel looked it up: it may hold pages of the file (a cached read, or a
   * MAP_PRIVATE mapping, which the kernel serves from its page cache even under direct_io).
   */
  opened = false;
  /** The file type (S_IFMT bits) the kernel was last told. */
  type = 0;
  constructor(
    readonly id: number,
    public parent: Node | null,
    public name: string,
  ) {}
}

interface DirHandle {
  node: Node;
  /** The listing packed as struct fuse_dirent records, and where each record ends. */
  packed: Buffer | null;
  ends: number[];
}

export interface LowLevelMountOptions {
  mountPoint: string;
  /** libfuse's -o options (fsname, subtype, big_writes, max_write, debug). */
  options: string;
  directIo: boolean;
  log: Logger;
  /**
   * How long, in microseconds, the session waits for a next request after answering all it was
   * given, before the event loop sleeps (native/fuse-ll.c, on_readable); 0 never waits.
   * Default: DEFAULT_SPIN_MICROS, or 0 on one CPU (spinMicrosFromEnv).
   */
  spinMicros?: number;
  /** Called when the kernel ends the session by itself (an unmount from outside). */
  onUnmounted?: () => void;
  /**
   * The attributes of an open file by its handle (fstat), for a node whose name is gone or is
   * another file's now; null if the handle is unknown. Without it, such a getattr answers ESTALE.
   */
  statHandle?: (fh: number) => FuseStat | null;
  /**
   * Tells the operations' handle table where a handle's file is now: an open that was under way
   * while a rename hid or moved its node was recorded under the name it started with.
   */
  moveHandle?: (fh: number, path: string) => void;
  /** The last descriptor of a hidden file is gone: its hidden name may be forgotten. */
  dropHidden?: (path: string) => void;
  /**
   * With directIo, whether read-only opens may still read through the kernel's page cache (one
   * READ per readahead window instead of one per read call, and MAP_SHARED mappings), under the
   * conditions of mayCache; a write through another handle drops the cached pages before it is
   * answered, invalidateOpened() drops them all (the key lock), and so does close(). Default true.
   */
  cacheReads?: boolean;
}

export class LowLevelMount {
  private readonly n: LowLevelNative;
  private readonly ops: FuseOperations;
  private readonly nodes = new Map<number, Node>();
  private readonly root = new Node(ROOT_ID, null, '');
  private nextId = ROOT_ID + 1;
  private readonly dirs = new Map<number, DirHandle>();
  /** Operation codes whose first argument is a name in the node's directory (see gated). */
  private readonly namedOps: Set<number>;
  private nextDir = 1;
  private readonly pool: Buffer[] = [];
  private session: NativeSession | null = null;
  /**
   * Paths in the middle of a rename over an open file (hide the target, then rename onto its
   * name: two steps, as in libfuse, which holds its path locks across both). Requests on them
   * wait here until both are done, so that none sees the name missing in between.
   */
  private readonly gated = new Map<string, Array<() => void>>();
  private closed = false;
  /** The native session is freed (after unmount, or after the kernel ended it). */
  private released = false;
  private readonly direct: number;
  private readonly cacheReads: boolean;
  /** FH_CACHED | FH_WRITER of each open file handle. */
  private readonly fhKinds = new Map<number, number>();
  /** Invalidations under way (unmount waits for them: see drain). */
  private readonly invalidating = new Set<Promise<void>>();
  /** close() has begun: reads through cached handles fail (see close). */
  private stopping = false;
  /** Names ("parent id/name") whose node was replaced under cached readers, and when. */
  private readonly replacedNames = new Map<string, number>();
  private readonly handlers: Array<((req: number, node: Node, a: never, b: never, c: never, d: never) => void) | undefined> = [];

  constructor(
    n: LowLevelNative,
    ops: FuseOperations,
    private readonly opts: LowLevelMountOptions,
  ) {
    this.n = n;
    this.ops = ops;
    this.direct = opts.directIo ? 1 : 0;
    this.cacheReads = opts.cacheReads ?? true;
    this.root.nlookup = 1;
    this.nodes.set(ROOT_ID, this.root);
    this.installHandlers();
    this.namedOps = new Set([n.ops.lookup, n.ops.mknod, n.ops.mkdir, n.ops.unlink, n.ops.rmdir, n.ops.symlink, n.ops.rename, n.ops.create].filter((x): x is number => x !== undefined));
  }

  mount(): void {
    const spin = this.opts.spinMicros ?? spinMicrosFromEnv('');
    this.session = this.n.mount(this.opts.mountPoint, this.opts.options, (op, req, ino, a, b, c, d) => this.dispatch(op, req, ino, a, b, c, d), spin);
  }

  /**
   * Drops the kernel's cached pages (and attributes) of every file opened since the kernel looked
   * it up: afterwards every read of them, through a descriptor or a mapping, reaches the daemon.
   * Rejects if the kernel refused some (other than for nodes it no longer holds).
   */
  invalidateOpened(): Promise<void> {
    const ids: number[] = [];
    for (const node of this.nodes.values()) if (node.opened) ids.push(node.id);
    return this.invalidate(ids);
  }

  private invalidate(ids: number[], parents: number[] = [], names: string[] = [], attrsOnly = false): Promise<void> {
    if ((ids.length === 0 && names.length === 0) || this.released || !this.session) return Promise.resolve();
    const p = new Promise<void>((resolve, reject) => {
      const started = this.n.invalidate(
        this.session!.session,
        ids,
        (failed, errno) => {
          if (failed === 0) return resolve();
          reject(new MountdError(ErrorCode.Internal, `the kernel refused to drop what it cached of ${failed} of ${ids.length + names.length} file(s) or name(s) (errno ${errno})`));
        },
        parents,
        names,
        attrsOnly,
      );
      if (!started) resolve();
    });
    const tracked = p.finally(() => this.invalidating.delete(tracked)).catch(() => undefined);
    this.invalidating.add(tracked);
    return p;
  }

  /**
   * Names changed through S3 (the engine's onChange): the kernel drops the attributes and pages
   * it holds of each name's node and of its directory (its time changed). A removed name is
   * forgotten, by the kernel and by the node table. A replaced one keeps its node unless
   * descriptors read the old file through the page cache: then the name is forgotten too (a new
   * node for the new file, as after a rename over it) and not cached for a while (see
   * detachReplaced). With no descriptor open, the node starts afresh with the new file. Names
   * the kernel never looked up cost nothing, but the deepest directory it knows on their path
   * is refreshed (the change may have made directories in it). A `meta` change (tags, content
   * type, a bucket's default encryption) drops the node's attributes only: its data is the same.
   */
  changed(changes: Array<{ bucket: string; key: string; gone: boolean; meta?: boolean }>): Promise<void> {
    if (this.closed) return Promise.resolve();
    const ids = new Set<number>();
    const metaIds = new Set<number>();
    const parents: number[] = [];
    const names: string[] = [];
    for (const c of changes) {
      const segments = [c.bucket, ...c.key.split('/').filter((x) => x !== '')];
      let parent: Node = this.root;
      let i = 0;
      for (; i < segments.length - 1; i++) {
        const next = this.child(parent, segments[i]!);
        if (!next) break;
        parent = next;
      }
      // Directories the change made below the deepest one the kernel knows: that one's link
      // count and times moved.
      if (i < segments.length - 1) {
        ids.add(parent.id);
        continue;
      }
      const name = segments[segments.length - 1]!;
      const node = this.child(parent, name);
      if (c.meta) {
        // Metadata rewritten in place: only the ctime moved.
        if (node) metaIds.add(node.id);
        continue;
      }
      ids.add(parent.id);
      if (!node) continue;
      ids.add(node.id);
      // A file put over a name the kernel holds as another type (a symlink): the kernel cannot
      // change an inode's type, and would call the node bad (EIO) or go on following it as a link.
      const retyped = !c.gone && c.key !== '' && !c.key.endsWith('/') && node.type !== 0 && node.type !== S_IFREG;
      if (c.gone || retyped || node.cached > 0) {
        parents.push(parent.id);
        names.push(name);
        if (c.gone || retyped) this.detach(node);
        else this.detachReplaced(node);
      } else if (node.fhs.size === 0) {
        // Its pages and attributes go with this invalidation: nothing of the old file is left.
        node.fileIno = undefined;
        node.mixed = false;
        node.size = -1;
      }
    }
    for (const id of ids) metaIds.delete(id);
    if (metaIds.size === 0) return this.invalidate([...ids], parents, names);
    return Promise.all([this.invalidate([...ids], parents, names), this.invalidate([...metaIds], [], [], true)]).then(() => undefined);
  }

  /**
   * Waits for invalidations under way. Before unmounting: a notification blocked on a page whose
   * READ is in flight holds the kernel's lock that unmounting takes, and needs this loop to answer.
   */
  async drain(): Promise<void> {
    while (this.invalidating.size > 0) await Promise.all([...this.invalidating]);
  }

  /**
   * Unmounts after dropping every page the kernel cached: once the session ends, descriptors and
   * mappings of the old mount would go on reading those pages, and no key lock of a later daemon
   * could reach them. Reads through cached handles fail from now on, so that none brings pages
   * back in between.
   */
  async close(): Promise<void> {
    this.stopping = true;
    // After the kernel ended the session, the unmounted handler has done this already.
    if (!this.closed) await this.invalidateOpened().catch((err: Error) => this.opts.log.error(`mount: ${err.message}`));
    await this.drain();
    this.unmount();
  }

  unmount(): void {
    this.closed = true;
    if (this.released || !this.session) return;
    this.released = true;
    this.n.unmount(this.session.session);
  }

  /** Nodes the kernel holds (for tests and status). */
  get nodeCount(): number {
    return this.nodes.size;
  }

  // ---- the node table ---------------------------------------------------------------------

  private pathOf(node: Node): string {
    if (node === this.root) return '/';
    const parts: string[] = [];
    for (let x: Node | null = node; x && x !== this.root; x = x.parent) parts.push(x.name);
    return '/' + parts.reverse().join('/');
  }

  private childPath(parent: Node, name: string): string {
    return parent === this.root ? `/${name}` : `${this.pathOf(parent)}/${name}`;
  }

  private child(parent: Node, name: string): Node | undefined {
    return parent.kids?.get(name);
  }

  /** The node for `name` in `parent`, made if new; one more lookup the kernel will forget. */
  private remember(parent: Node, name: string): Node {
    let node = this.child(parent, name);
    if (!node) {
      node = new Node(this.nextId++, parent, name);
      (parent.kids ??= new Map()).set(name, node);
      this.nodes.set(node.id, node);
    }
    node.nlookup++;
    return node;
  }

  /** Takes the node off its name: the name is gone or another file's now. */
  private detach(node: Node): void {
    if (node.parent?.kids?.get(node.name) === node) node.parent.kids.delete(node.name);
    node.stale = true;
    this.dropIfUnused(node);
  }

  /**
   * Detaches a node whose name an S3 PUT replaced under its cached handles, and keeps the name
   * from caching reads for a while: the open that got ESTALE for it is retried once by the kernel
   * (LOOKUP_REVAL), and a node of the name cached and replaced again before that retry opens
   * would fail it with ESTALE for good.
   */
  private detachReplaced(node: Node): void {
    const now = Date.now();
    if (this.replacedNames.size > 1000) {
      for (const [k, at] of this.replacedNames) if (now - at >= NO_CACHE_AFTER_REPLACE_MS) this.replacedNames.delete(k);
    }
    if (node.parent) this.replacedNames.set(`${node.parent.id}/${node.name}`, now);
    this.detach(node);
  }

  private recentlyReplaced(node: Node): boolean {
    if (!node.parent || this.replacedNames.size === 0) return false;
    const key = `${node.parent.id}/${node.name}`;
    const at = this.replacedNames.get(key);
    if (at === undefined) return false;
    if (Date.now() - at < NO_CACHE_AFTER_REPLACE_MS) return true;
    this.replacedNames.delete(key);
    return false;
  }

  private move(node: Node, parent: Node, name: string): void {
    if (node.parent?.kids?.get(node.name) === node) node.parent.kids.delete(node.name);
    node.parent = parent;
    node.name = name;
    (parent.kids ??= new Map()).set(name, node);
  }

  /** The nodes the kernel holds below a directory's node. */
  private descendants(node: Node): number[] {
    const out: number[] = [];
    const walk = (n: Node) => {
      if (!n.kids) return;
      for (const k of n.kids.values()) {
        out.push(k.id);
        walk(k);
      }
    };
    walk(node);
    return out;
  }

  private dropIfUnused(node: Node): void {
    if (node === this.root || node.nlookup > 0 || node.open > 0) return;
    this.nodes.delete(node.id);
    if (node.parent?.kids?.get(node.name) === node) node.parent.kids.delete(node.name);
  }

  private hiddenName(): string {
    return `.fuse_hidden${randomBytes(8).toString('hex')}`;
  }

  /** Renames an open file out of the way (libfuse's hide_node); its handles keep working. */
  private hide(node: Node, done: (err: number) => void): void {
    const parent = node.parent!;
    const hidden = this.hiddenName();
    this.ops.rename(this.pathOf(node), this.childPath(parent, hidden), (err) => {
      if (err === 0) {
        this.move(node, parent, hidden);
        node.hidden = true;
      }
      done(err);
    });
  }

  /**
   * getattr of a node whose name is gone or taken: through an open handle, the open file's own
   * attributes (fstat of a descriptor opened while a rename replaced the name still works);
   * without one, ESTALE, and the kernel looks the name up again.
   */
  /** Answers with a node's attributes: by its path, or through the handle when the node is stale. */
  private attr(req: number, node: Node, fh: number): void {
    // Reached from a setattr's callback too, which may come after an unmount: no reply then.
    if (this.closed) return;
    if (node.stale) return this.staleAttr(req, node, fh);
    this.ops.getattr(this.pathOf(node), (err, st) => {
      if (this.closed) return;
      if (err !== 0 || !st) return this.err(req, err || -E.EIO);
      if (this.replacedUnderCache(node, st)) {
        this.detachReplaced(node);
        return this.staleAttr(req, node, fh);
      }
      this.fillAttr(node, st);
      this.n.replyAttr(req, ATTR_TIMEOUT);
    });
  }

  private staleAttr(req: number, node: Node, fh: number): void {
    // fstat(2) comes without its handle (the kernel passes one only from inside read and seek):
    // any handle of the node will do, they all hold the same file.
    if (fh < 0) fh = node.fhs.values().next().value ?? -1;
    const st = fh >= 0 ? (this.opts.statHandle?.(fh) ?? null) : null;
    if (!st) return this.n.replyErr(req, E.ESTALE);
    this.fillAttr(node, st);
    this.n.replyAttr(req, 0);
  }

  /**
   * Whether a read-only open may read through the page cache: no handle of the file may write
   * (their writes reach the daemon, not the cache), the node has only ever shown this one file
   * (one page cache must not hold pages of two, and after an S3 PUT the kernel's size may be the
   * other's), and the kernel's size of the file is the open file's (it reads cached files up to
   * the size it knows).
   */
  private mayCache(node: Node, st: FuseStat | null | undefined): boolean {
    if (!this.direct || !this.cacheReads || node.writers > 0 || node.stale || node.hidden || this.recentlyReplaced(node)) return false;
    if (!st || st.ino === undefined) return false;
    this.see(node, st.ino);
    return !node.mixed && st.size === node.size;
  }

  /**
   * The node's name shows another file now (an S3 PUT replaced it) while handles read the old one
   * through the page cache, bounded by the size the kernel holds for the node: the node must go
   * on describing the old file, so the name gets a node of its own, as a rename over it would.
   */
  private replacedUnderCache(node: Node, st: FuseStat): boolean {
    return node.cached > 0 && st.ino !== node.fileIno;
  }

  /** Notes which file the kernel has been told about under the node (see Node.mixed). */
  private see(node: Node, ino: number | undefined): void {
    if (ino === undefined || !Number.isSafeInteger(ino)) node.mixed = true;
    else if (node.fileIno === undefined) node.fileIno = ino;
    else if (node.fileIno !== ino) node.mixed = true;
  }

  /** An open the kernel did not take (interrupted): its handle is released here, as close(2) would. */
  private abandon(node: Node, fh: number): void {
    const p = this.forgetHandle(node, fh);
    this.ops.release(p, fh, () => this.dropIfUnused(node));
  }

  /**
   * The node's bookkeeping for a handle that goes (a release, or an open the kernel did not
   * take); returns the path to release it under. The last descriptor of a file unlinked while
   * open makes the node gone for new opens at once (they look the name up again); its hidden
   * name lived in the handle table only (operations.ts) and leaves with the handle.
   */
  private forgetHandle(node: Node, fh: number): string {
    const p = this.pathOf(node);
    this.untrack(node, fh);
    node.open = Math.max(0, node.open - 1);
    node.handles = Math.max(0, node.handles - 1);
    if (node.hidden && node.open === 0) {
      node.hidden = false;
      this.opts.dropHidden?.(p);
      this.detach(node);
    }
    return p;
  }

  private track(node: Node, fh: number, kind: number): void {
    this.fhKinds.set(fh, kind);
    node.fhs.add(fh);
    if (kind & FH_CACHED) node.cached++;
    if (kind & FH_WRITER) node.writers++;
  }

  private untrack(node: Node, fh: number): void {
    const kind = this.fhKinds.get(fh);
    node.fhs.delete(fh);
    if (kind === undefined) return;
    this.fhKinds.delete(fh);
    if (kind & FH_CACHED) node.cached = Math.max(0, node.cached - 1);
    if (kind & FH_WRITER) node.writers = Math.max(0, node.writers - 1);
  }

  // ---- replies ----------------------------------------------------------------------------

  private err(req: number, negErrno: number): void {
    if (!this.closed) this.n.replyErr(req, -negErrno);
  }

  private fillAttr(node: Node, st: FuseStat): void {
    // st_ino is the backing file's inode number: it stays the same when the kernel forgets the
    // node and looks the name up again (git, backup tools and find -inum compare it); the node
    // id in slot 12 is what the kernel knows the node by. A number above 2^53 (overlayfs with
    // xino, Lustre, NFS) has lost its low bits in a JavaScript number, and neighbours would
    // share it: such files are numbered by node, in a range of their own.
    node.ino = st.ino !== undefined && Number.isSafeInteger(st.ino) ? st.ino : undefined;
    this.see(node, st.ino);
    scratch[0] = node.ino ?? NODE_INO_BASE + node.id;
    scratch[1] = st.mode;
    node.type = st.mode & S_IFMT;
    scratch[2] = st.nlink;
    scratch[3] = st.uid;
    scratch[4] = st.gid;
    scratch[5] = st.size;
    node.size = st.size;
    node.attrsSinceWrite = true;
    scratch[6] = st.blocks ?? Math.ceil(st.size / 512);
    scratch[7] = st.blksize ?? 4096;
    scratch[8] = st.atime;
    scratch[9] = st.mtime;
    scratch[10] = st.ctime;
    scratch[11] = 0;
    scratch[12] = node.id;
  }

  /** Answers a request that made or found `name` in `parent` with its node and attributes. */
  private entry(req: number, parent: Node, name: string): void {
    this.ops.getattr(this.childPath(parent, name), (err, st) => {
      if (this.closed) return;
      if (err !== 0 || !st) return this.err(req, err || -E.EIO);
      const old = this.child(parent, name);
      if (old && this.replacedUnderCache(old, st)) this.detachReplaced(old);
      const node = this.remember(parent, name);
      this.fillAttr(node, st);
      this.n.replyEntry(req, ENTRY_TIMEOUT, ATTR_TIMEOUT);
    });
  }

  /**
   * The answer to a flush or fsync: buffered writes were encrypted and written just now, which
   * moved the file's times; attributes the kernel was given after those writes (an fstat between
   * write and close) are dropped first, or it would show the old times for ATTR_TIMEOUT.
   */
  private committed = (req: number, node: Node) => (err: number) => {
    if (err !== 0 || !node.wroteSinceCommit) return this.ok(req)(err);
    node.wroteSinceCommit = false;
    if (!node.attrsSinceWrite) return this.ok(req)(0);
    this.invalidate([node.id]).then(
      () => this.ok(req)(0),
      (e: Error) => {
        this.opts.log.warn(`mount: ${e.message}`);
        this.ok(req)(0);
      },
    );
  };

  private ok = (req: number) => (err: number) => {
    if (this.closed) return;
    if (err !== 0) this.err(req, err);
    else this.n.replyErr(req, 0);
  };

  private buffer(size: number): Buffer {
    if (size > IO_BUFFER) return Buffer.allocUnsafe(size);
    return this.pool.pop() ?? Buffer.allocUnsafe(IO_BUFFER);
  }

  private giveBack(buf: Buffer): void {
    if (buf.length === IO_BUFFER && this.pool.length < 64) this.pool.push(buf);
  }

  // ---- requests ---------------------------------------------------------------------------

  private dispatch(op: number, req: number, ino: number, a: unknown, b: unknown, c: unknown, d: unknown): void {
    if (op === this.n.ops.forget) return this.forget(ino, a as number);
    if (op === this.n.ops.unmounted) {
      this.closed = true;
      this.opts.log.warn(`mount: the kernel ended the FUSE session of ${this.opts.mountPoint} (unmounted from outside?)`);
      // An abort (fusectl's abort, umount -f of a busy mount) ends the session but not the
      // superblock: descriptors and mappings go on reading its cached pages with no daemon behind
      // them, out of any key lock's reach. The kernel still takes notifications for it (after a
      // real unmount each gets ENOENT): they go now, through a descriptor of their own
      // (invalidate dups it), before the session is freed.
      this.invalidateOpened().catch((err: Error) => this.opts.log.error(`mount: ${err.message}`));
      // The session, its /dev/fuse descriptor and its poll handle go too (not from inside the
      // read that reported the end).
      setImmediate(() => this.unmount());
      this.opts.onUnmounted?.();
      return;
    }
    if (this.closed) return;
    const node = this.nodes.get(ino);
    const handler = this.handlers[op];
    if (!handler) return this.n.replyErr(req, E.ENOSYS);
    if (!node) return this.n.replyErr(req, E.ESTALE);
    if (this.gated.size > 0) {
      const p = this.namedOps.has(op) && typeof a === 'string' ? this.childPath(node, a) : this.pathOf(node);
      const waiting = this.gated.get(p);
      if (waiting) {
        // What lives only for the dispatch call (the attributes of a setattr in the scratch, the
        // data of a write in the receive buffer) is kept now and put back for the replay, which
        // runs synchronously in a later turn, before any other request can overwrite them again.
        const attrs = op === this.n.ops.setattr ? scratch.slice() : null;
        const data = op === this.n.ops.write ? Buffer.from(this.session!.recv.subarray(a as number, (a as number) + (b as number))) : null;
        waiting.push(() => {
          if (attrs) scratch.set(attrs);
          if (data) data.copy(this.session!.recv, a as number);
          this.dispatch(op, req, ino, a, b, c, d);
        });
        return;
      }
    }
    try {
      handler(req, node, a as never, b as never, c as never, d as never);
    } catch (err) {
      // A bug below: the caller gets EIO instead of waiting for an answer that never comes.
      this.opts.log.error(`mount: ${Object.keys(this.n.ops).find((k) => this.n.ops[k] === op) ?? op} on node ${ino} threw: ${(err as Error).stack ?? String(err)}`);
      this.n.replyErr(req, E.EIO);
    }
  }

  private forget(ino: number, count: number): void {
    const node = this.nodes.get(ino);
    if (!node || node === this.root) return;
    node.nlookup -= count;
    if (node.nlookup < 0) node.nlookup = 0;
    this.dropIfUnused(node);
  }

  private installHandlers(): void {
    const o = this.n.ops;
    const ops = this.ops;
    const on = <A = never, B = never, C = never, D = never>(code: number | undefined, fn: (req: number, node: Node, a: A, b: B, c: C, d: D) => void) => {
      if (code === undefined) throw new Error('fuse-ll: the native binding lacks an operation code');
      this.handlers[code] = fn as (req: number, node: Node, a: never, b: never, c: never, d: never) => void;
    };

    on<string>(o.lookup, (req, parent, name) => {
      if (parent.stale) return this.n.replyErr(req, E.ENOENT);
      this.entry(req, parent, name);
    });

    on<number>(o.getattr, (req, node, fh) => {
      this.attr(req, node, fh);
    });

    on<number, number, number, number>(o.fallocate, (req, node, mode, offset, length, fh) => {
      if (node.stale && fh < 0) return this.n.replyErr(req, E.ESTALE);
      ops.fallocate(this.pathOf(node), fh, mode, offset, length, (err) => {
        if (this.closed) return;
        if (err !== 0) return this.err(req, err);
        // As a write (see there): buffered until the flush, the kernel's size moves with it
        // (FALLOC_FL_KEEP_SIZE = 1 keeps it), and pages other readers cached go before the answer.
        if ((mode & 1) === 0 && node.size >= 0 && offset + length > node.size) node.size = offset + length;
        node.wroteSinceCommit = true;
        node.attrsSinceWrite = false;
        if (node.cached === 0) return this.n.replyErr(req, 0);
        this.invalidate([node.id]).then(
          () => {
            if (!this.closed) this.n.replyErr(req, 0);
          },
          (e: Error) => {
            this.opts.log.error(`mount: fallocate of ${this.pathOf(node)}: dropping cached pages: ${e.message}`);
            if (!this.closed) this.n.replyErr(req, E.EIO);
          },
        );
      });
    });

    on<number, number>(o.setattr, (req, node, toSet, fh) => {
      // The new values are in the scratch only until this call returns.
      const mode = scratch[1]!;
      const uid = scratch[3]!;
      const gid = scratch[4]!;
      const size = scratch[5]!;
      const atime = scratch[8]!;
      const mtime = scratch[9]!;
      // A stale node's name is another file's: only a size change through the handle applies.
      if (node.stale && (toSet !== SET_SIZE || fh < 0)) return this.n.replyErr(req, E.ESTALE);
      const p = this.pathOf(node);
      const steps: Array<(next: (err: number) => void) => void> = [];
      if (toSet & SET_MODE) steps.push((next) => ops.chmod(p, mode, next));
      if (toSet & (SET_UID | SET_GID)) steps.push((next) => ops.chown(p, toSet & SET_UID ? uid : 0xffffffff, toSet & SET_GID ? gid : 0xffffffff, next));
      if (toSet & SET_SIZE) {
        steps.push((next) =>
          fh >= 0
            ? ops.ftruncate(p, fh, size, (err) => {
                // Buffered like a write: the flush commits it and moves the file's times.
                if (err === 0) node.wroteSinceCommit = true;
                next(err);
              })
            : ops.truncate(p, size, next),
        );
      }
      if (toSet & (SET_ATIME | SET_MTIME | SET_ATIME_NOW | SET_MTIME_NOW)) {
        const at = toSet & SET_ATIME_NOW ? UTIME_NOW_MS : toSet & SET_ATIME ? atime : UTIME_OMIT_MS;
        const mt = toSet & SET_MTIME_NOW ? UTIME_NOW_MS : toSet & SET_MTIME ? mtime : UTIME_OMIT_MS;
        // utimens writes what open descriptors buffered first (operations.ts, flushOpen): the
        // flush at close then has nothing to write and moves no time.
        steps.push((next) =>
          ops.utimens(p, at, mt, (err) => {
            if (err === 0) node.wroteSinceCommit = false;
            next(err);
          }),
        );
      }
      const step = (i: number): void => {
        if (i < steps.length) {
          steps[i]!((err) => (err !== 0 ? this.err(req, err) : step(i + 1)));
          return;
        }
        this.attr(req, node, fh);
      };
      step(0);
    });

    on(o.readlink, (req, node) => {
      ops.readlink(this.pathOf(node), (err, target) => {
        if (this.closed) return;
        if (err !== 0 || target === undefined) return this.err(req, err || -E.EIO);
        this.n.replyReadlink(req, target);
      });
    });

    on<string, number>(o.mknod, (req, parent, name, mode) => {
      // Regular files only, as libfuse's high-level layer does without a mknod of the file system's own.
      if ((mode & S_IFMT) !== S_IFREG) return this.n.replyErr(req, E.ENOSYS);
      const p = this.childPath(parent, name);
      ops.create(p, mode, (err, fh) => {
        if (err !== 0 || fh === undefined) return this.err(req, err || -E.EIO);
        ops.release(p, fh, () => this.entry(req, parent, name));
      });
    });

    on<string, number>(o.mkdir, (req, parent, name, mode) => {
      ops.mkdir(this.childPath(parent, name), mode, (err) => (err !== 0 ? this.err(req, err) : this.entry(req, parent, name)));
    });

    on<string>(o.unlink, (req, parent, name) => {
      const node = this.child(parent, name);
      if (node && node.open > 0) return this.hide(node, this.ok(req));
      ops.unlink(this.childPath(parent, name), (err) => {
        if (err === 0 && node) this.detach(node);
        this.ok(req)(err);
      });
    });

    on<string>(o.rmdir, (req, parent, name) => {
      const node = this.child(parent, name);
      ops.rmdir(this.childPath(parent, name), (err) => {
        if (err === 0 && node) this.detach(node);
        this.ok(req)(err);
      });
    });

    on<string, string>(o.symlink, (req, parent, name, target) => {
      ops.symlink(target, this.childPath(parent, name), (err) => (err !== 0 ? this.err(req, err) : this.entry(req, parent, name)));
    });

    on<string, number, string>(o.rename, (req, parent, name, newParentId, newName) => {
      const newParent = this.nodes.get(newParentId);
      if (!newParent) return this.n.replyErr(req, E.ESTALE);
      const node = this.child(parent, name);
      const target = this.child(newParent, newName);
      const go = () => {
        ops.rename(this.childPath(parent, name), this.childPath(newParent, newName), (err) => {
          if (err === 0) {
            if (target && target !== node && !target.hidden) this.detach(target);
            if (node) this.move(node, newParent, newName);
            // A directory's move re-sealed the key of every file below it (an xattr write, a new
            // ctime): what the kernel holds of them goes before the answer.
            const below = node ? this.descendants(node) : [];
            if (below.length > 0) {
              this.invalidate(below, [], [], true)
                .catch((e: Error) => this.opts.log.warn(`mount: ${e.message}`))
                .then(() => this.ok(req)(0));
              return;
            }
          }
          this.ok(req)(err);
        });
      };
      // The file the rename replaces stays readable through its open descriptors.
      if (target && target !== node && target.open > 0) {
        const paths = [this.childPath(parent, name), this.childPath(newParent, newName)];
        for (const p of paths) if (!this.gated.has(p)) this.gated.set(p, []);
        const reply = this.ok(req);
        const ungate = () => {
          for (const p of paths) {
            const waiting = this.gated.get(p) ?? [];
            this.gated.delete(p);
            for (const w of waiting) w();
          }
        };
        this.hide(target, (err) => {
          if (err !== 0) {
            ungate();
            return this.err(req, err);
          }
          ops.rename(paths[0]!, paths[1]!, (err2) => {
            if (err2 === 0) {
              if (node) this.move(node, newParent, newName);
            }
            reply(err2);
            ungate();
          });
        });
        return;
      }
      go();
    });

    on<number, string>(o.link, (req, node, newParentId, newName) => {
      const newParent = this.nodes.get(newParentId);
      ops.link(this.pathOf(node), newParent ? this.childPath(newParent, newName) : newName, this.ok(req));
    });

    on<number>(o.open, (req, node, flags) => {
      // A hidden file with no open handle left to share (its last one is closing, or its opens
      // are still under way): the name is another file's now, so the kernel looks it up again.
      if (node.stale || (node.hidden && node.handles === 0)) return this.n.replyErr(req, E.ESTALE);
      node.open++;
      const started = this.pathOf(node);
      ops.open(started, flags, (err, fh) => {
        if (err !== 0 || fh === undefined) {
          node.open--;
          // Hidden by an unlink while this open was under way, and nothing else holds it.
          if (node.hidden && node.open === 0) {
            node.hidden = false;
            this.opts.dropHidden?.(this.pathOf(node));
            this.detach(node);
          }
          this.dropIfUnused(node);
          return this.err(req, err || -E.EIO);
        }
        if (this.closed) return;
        // The name holds another file now (an S3 PUT) while handles read the old one through this
        // node's page cache: a handle of the new file must not share those pages (a mapping of it
        // would mix both files). On ESTALE the kernel looks the name up again: a node of its own.
        const writer = (flags & O_ACCMODE) !== 0 || (flags & O_TRUNC) !== 0;
        // The open file's attributes, taken once: for the check below and for mayCache.
        const ost = node.cached > 0 || (!writer && this.direct && this.cacheReads) ? this.opts.statHandle?.(fh) : undefined;
        if (ost && node.cached > 0 && ost.ino !== node.fileIno) {
          node.open--;
          this.detachReplaced(node);
          ops.release(this.pathOf(node), fh, () => this.dropIfUnused(node));
          return this.n.replyErr(req, E.ESTALE);
        }
        node.handles++;
        node.opened = true;
        const now = this.pathOf(node);
        if (now !== started) this.opts.moveHandle?.(fh, now);
        const cached = !writer && this.mayCache(node, ost);
        this.track(node, fh, (cached ? FH_CACHED : 0) | (writer ? FH_WRITER : 0));
        // A descriptor that cannot write has nothing for a flush to commit: its close(2) sends no
        // FLUSH request (one round trip less per file read).
        const r = this.n.replyOpen(req, fh, (cached || !this.direct ? 0 : FOPEN_DIRECT_IO) | (writer ? 0 : FOPEN_NOFLUSH));
        if (r < 0) this.abandon(node, fh);
      });
    });

    on<string, number, number>(o.create, (req, parent, name, mode) => {
      const p = this.childPath(parent, name);
      ops.create(p, mode, (err, fh) => {
        if (err !== 0 || fh === undefined) return this.err(req, err || -E.EIO);
        const answer = (err2: number, st?: FuseStat | null) => {
          if (err2 !== 0 || !st || this.closed) {
            ops.release(p, fh, () => undefined);
            return this.err(req, err2 || -E.EIO);
          }
          const node = this.remember(parent, name);
          node.open++;
          node.handles++;
          node.opened = true;
          this.track(node, fh, FH_WRITER);
          this.fillAttr(node, st);
          this.n.replyCreate(req, ENTRY_TIMEOUT, ATTR_TIMEOUT, fh, this.direct);
        };
        // The new file's attributes are those of the handle just made (an fstat): a getattr of
        // the path would walk it, check for a symlink mark and cost a trip through promises.
        const st = this.opts.statHandle?.(fh);
        if (st) answer(0, st);
        else ops.getattr(p, answer);
      });
    });

    on<number, number, number>(o.read, (req, node, size, offset, fh) => {
      if (this.stopping && (this.fhKinds.get(fh) ?? 0) & FH_CACHED) return this.n.replyErr(req, E.EIO);
      const buf = this.buffer(size);
      ops.read(this.pathOf(node), fh, buf, size, offset, (n) => {
        // A short read into the page cache: the kernel takes the end of the data as the file's
        // size (fuse_short_read), and so does the node.
        if (n >= 0 && n < size && node.size > offset + n && (this.fhKinds.get(fh) ?? 0) & FH_CACHED) node.size = offset + n;
        if (!this.closed) {
          if (n < 0) this.n.replyErr(req, -n);
          else this.n.replyBuf(req, buf, Math.min(n, size));
        }
        this.giveBack(buf);
      });
    });

    on<number, number, number, number>(o.write, (req, node, at, size, offset, fh) => {
      // The data lives in the receive buffer until this call returns: copy it now.
      const buf = this.buffer(size);
      this.session!.recv.copy(buf, 0, at, at + size);
      ops.write(this.pathOf(node), fh, buf, size, offset, (n) => {
        this.giveBack(buf);
        if (this.closed) return;
        if (n < 0) return this.n.replyErr(req, -n);
        // The kernel extends its size of the file by what it was told was written (as it does).
        if (node.size >= 0 && offset + n > node.size) node.size = offset + n;
        node.wroteSinceCommit = true;
        node.attrsSinceWrite = false;
        // Readers of this file through the page cache would go on seeing the old bytes: their
        // pages go before the writer hears that its write is done.
        if (node.cached === 0) return this.n.replyWrite(req, n);
        // The session may have ended meanwhile (the kernel aborted it and unmount() freed it): no
        // reply then, as in every other callback.
        this.invalidate([node.id]).then(
          () => {
            if (!this.closed) this.n.replyWrite(req, n);
          },
          (err: Error) => {
            this.opts.log.error(`mount: ${err.message}`);
            if (!this.closed) this.n.replyErr(req, E.EIO);
          },
        );
      });
    });

    on<number>(o.flush, (req, node, fh) => ops.flush(this.pathOf(node), fh, this.committed(req, node)));

    on<number, number>(o.fsync, (req, node, datasync, fh) => ops.fsync(this.pathOf(node), datasync, fh, this.committed(req, node)));

    on<number>(o.release, (req, node, fh) => {
      const p = this.forgetHandle(node, fh);
      ops.release(p, fh, (err) => {
        this.dropIfUnused(node);
        this.ok(req)(err);
      });
    });

    on(o.opendir, (req, node) => {
      if (node.stale) return this.n.replyErr(req, E.ENOENT);
      const id = this.nextDir++;
      this.dirs.set(id, { node, packed: null, ends: [] });
      this.n.replyOpen(req, id, 0);
    });

    on<number, number, number>(o.readdir, (req, node, size, offset, fh) => {
      const dh = this.dirs.get(fh);
      if (!dh) return this.n.replyErr(req, E.EBADF);
      const serve = () => {
        const { packed, ends } = dh;
        if (!packed || offset >= ends.length) return this.n.replyBuf(req, Buffer.alloc(0), 0);
        const start = offset === 0 ? 0 : ends[offset - 1]!;
        let end = start;
        for (let i = offset; i < ends.length && ends[i]! - start <= size; i++) end = ends[i]!;
        this.n.replyBuf(req, packed.subarray(start, end), end - start);
      };
      if (dh.packed && offset !== 0) return serve();
      ops.readdir(this.pathOf(node), (err, names) => {
        if (this.closed) return;
        if (err !== 0 || !names) return this.err(req, err || -E.EIO);
        this.pack(dh, names);
        serve();
      });
    });

    on<number>(o.releasedir, (req, _node, fh) => {
      this.dirs.delete(fh);
      this.n.replyErr(req, 0);
    });

    on(o.statfs, (req) => {
      ops.statfs('/', (err, s) => {
        if (this.closed) return;
        if (err !== 0 || !s) return this.err(req, err || -E.EIO);
        const v = [s.bsize, s.frsize, s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.favail, s.fsid, s.flag, s.namemax];
        for (let i = 0; i < v.length; i++) scratch[i] = v[i]!;
        this.n.replyStatfs(req);
      });
    });

    on<string, Buffer, number>(o.setxattr, (req, node, name, value, flags) => {
      ops.setxattr(this.pathOf(node), name, value, 0, flags, this.ok(req));
    });

    on<string, number>(o.getxattr, (req, node, name, size) => {
      ops.getxattr(this.pathOf(node), name, 0, (err, value) => {
        if (this.closed) return;
        if (err !== 0) return this.err(req, err);
        if (!value) return this.n.replyErr(req, E.ENODATA);
        if (size === 0) return this.n.replyXattr(req, value.length);
        if (value.length > size) return this.n.replyErr(req, E.ERANGE);
        this.n.replyBuf(req, value, value.length);
      });
    });

    on<number>(o.listxattr, (req, node, size) => {
      ops.listxattr(this.pathOf(node), (err, names) => {
        if (this.closed) return;
        if (err !== 0 || !names) return this.err(req, err || -E.EIO);
        const buf = Buffer.from(names.map((x) => `${x}\0`).join(''), 'utf8');
        if (size === 0) return this.n.replyXattr(req, buf.length);
        if (buf.length > size) return this.n.replyErr(req, E.ERANGE);
        this.n.replyBuf(req, buf, buf.length);
      });
    });

    on<string>(o.removexattr, (req, node, name) => ops.removexattr(this.pathOf(node), name, this.ok(req)));
  }

  /** struct fuse_dirent records (ino, off, namelen, type, name, padding to 8 bytes) for a listing. */
  private pack(dh: DirHandle, names: string[]): void {
    const bytes = names.map((x) => Buffer.from(x, 'utf8'));
    let total = 0;
    for (const b of bytes) total += (24 + b.length + 7) & ~7;
    const out = Buffer.alloc(total);
    const ends: number[] = [];
    let at = 0;
    bytes.forEach((b, i) => {
      const name = names[i]!;
      const node = name === '.' ? dh.node : name === '..' ? (dh.node.parent ?? dh.node) : this.child(dh.node, name);
      const ino = node ? (node.ino ?? NODE_INO_BASE + node.id) : UNKNOWN_INO;
      out.writeBigUInt64LE(BigInt(ino), at);
      out.writeBigUInt64LE(BigInt(i + 1), at + 8);
      out.writeUInt32LE(b.length, at + 16);
      out.writeUInt32LE(name === '.' || name === '..' ? (S_IFDIR >> 12) : 0, at + 20);
      b.copy(out, at + 24);
      at += (24 + b.length + 7) & ~7;
      ends.push(at);
    });
    dh.packed = out;
    dh.ends = ends;
  }
}
