// The mount's view of open files: which engine handle (the kernel's fh) is open at which mount path.
import type { Stat } from '../engine/index.js';
import { isAtOrBelow } from './paths.js';

export interface OpenHandle {
  /** The engine handle, also the FUSE file handle the kernel passes back. */
  fh: number;
  /** Current mount path; follows renames, and becomes a .fuse_hidden name after an unlink. */
  path: string;
  /** Opened with O_APPEND: every write goes to the end of the file, whatever offset arrives. */
  append: boolean;
}

export class OpenHandleTable {
  private readonly handles = new Map<number, OpenHandle>();
  /** Files unlinked while open, by their hidden name: attributes as they were, for fstat. */
  private readonly hidden = new Map<string, Stat>();

  get size(): number {
    return this.handles.size;
  }

  add(fh: number, path: string, append: boolean): void {
    this.handles.set(fh, { fh, path, append });
  }

  get(fh: number): OpenHandle | undefined {
    return this.handles.get(fh);
  }

  /**
   * @param keepHidden hidden names stay until forgetHidden() (the low-level binding counts opens
   *   under way too, and says when the last one is gone); otherwise they go with their last handle.
   */
  constructor(private readonly keepHidden = false) {}

  /** Forgets a handle; the hidden name of an unlinked file goes with its last handle. */
  remove(fh: number): void {
    const h = this.handles.get(fh);
    if (!h) return;
    this.handles.delete(fh);
    if (!this.keepHidden && this.hidden.has(h.path) && this.at(h.path).length === 0) this.hidden.delete(h.path);
  }

  all(): OpenHandle[] {
    return [...this.handles.values()];
  }

  at(path: string): OpenHandle[] {
    return this.all().filter((h) => h.path === path);
  }

  /** Open handles, and hidden names of unlinked open files, follow a rename of a directory above them. */
  renamed(from: string, to: string): void {
    for (const h of this.handles.values()) {
      if (isAtOrBelow(h.path, from)) h.path = to + h.path.slice(from.length);
    }
    for (const [p, st] of [...this.hidden]) {
      if (!isAtOrBelow(p, from)) continue;
      this.hidden.delete(p);
      this.hidden.set(to + p.slice(from.length), st);
    }
  }

  /** The file at `path` was unlinked while open: its handles now live under `hiddenPath` only. */
  hide(path: string, hiddenPath: string, stat: Stat): void {
    for (const h of this.at(path)) h.path = hiddenPath;
    this.hidden.set(hiddenPath, stat);
  }

  hiddenStat(path: string): Stat | undefined {
    return this.hidden.get(path);
  }

  forgetHidden(path: string): boolean {
    return this.hidden.delete(path);
  }

  /**
   * Unlinks of open files not yet done in the store, by the file's (former) mount path. libfuse
   * hides the target of a rename over an open file, then renames the source onto it: two
   * requests. Done at once, the unlink would leave the name missing in between (an S3 GET
   * answers 404, a reader's open fails). So the unlink waits: a rename onto the name replaces
   * the file atomically and cancels it; any other request on the name, a listing of its
   * directory, a short timer or the unmount carries it out.
   */
  readonly pendingUnlinks = new Map<string, PendingUnlink>();
}

export interface PendingUnlink {
  bucket: string;
  key: string;
  /** The file that was hidden: one that replaced it since is not removed. */
  ino: number;
  timer: NodeJS.Timeout;
  /** Set once the unlink is under way. */
  done?: Promise<void>;
}
