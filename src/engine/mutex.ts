// Async locks: a per-object mutex and a namespace read/write lock that renames take exclusively.

export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  async run<T>(fn: () => Promise<T>): Promise<T> {
    let release!: () => void;
    const next = new Promise<void>((r) => (release = r));
    const prev = this.tail;
    this.tail = prev.then(() => next);
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

/** Many readers or one writer; writers wait for readers in flight and block new ones. */
export class RwLock {
  private readers = 0;
  private writer = false;
  private queue: Array<{ write: boolean; wake: () => void }> = [];

  async read<T>(fn: () => Promise<T>): Promise<T> {
    if (this.writer || this.queue.some((q) => q.write)) {
      await new Promise<void>((wake) => this.queue.push({ write: false, wake }));
    } else {
      this.readers++;
    }
    try {
      return await fn();
    } finally {
      this.readers--;
      this.pump();
    }
  }

  async write<T>(fn: () => Promise<T>): Promise<T> {
    if (this.writer || this.readers > 0 || this.queue.length > 0) {
      await new Promise<void>((wake) => this.queue.push({ write: true, wake }));
    } else {
      this.writer = true;
    }
    try {
      return await fn();
    } finally {
      this.writer = false;
      this.pump();
    }
  }

  private pump(): void {
    if (this.writer) return;
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      if (head.write) {
        if (this.readers > 0) return;
        this.queue.shift();
        this.writer = true;
        head.wake();
        return;
      }
      this.queue.shift();
      this.readers++;
      head.wake();
    }
  }
}
