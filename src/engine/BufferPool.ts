// Reusable fixed-size buffers for the bulk path (packages and batches of sealed packages).
// Streaming I/O allocated several 64 KiB buffers per package; V8 answered the external memory
// with a mark-compact collection every few dozen megabytes (a quarter of the time of a
// streaming write or read went to the collector). Plaintext buffers are zeroed when given back.

export class BufferPool {
  private readonly free: Buffer[] = [];

  constructor(
    readonly size: number,
    private readonly cap: number,
    /** False for pools of ciphertext only, which need no zeroing. */
    private readonly zero = true,
  ) {}

  /** A buffer of `size` bytes with unspecified content. */
  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  /** Zeroes `buf` (in a plaintext pool) and keeps it for reuse unless the pool is full or it is not one of its size. */
  give(buf: Buffer): void {
    if (this.zero) buf.fill(0);
    if (buf.length === this.size && buf.byteOffset === 0 && buf.buffer.byteLength === this.size && this.free.length < this.cap) this.free.push(buf);
  }

  /** Buffers waiting for reuse (for status and tests). */
  get idle(): number {
    return this.free.length;
  }
}
