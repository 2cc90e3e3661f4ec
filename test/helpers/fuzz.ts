// Seeded generators of bad input for the S3 listener and the kesd API, raw senders (plain TCP and TLS) that
// never hang, and the scans that show no request reached outside the data directory.
import { execFile } from 'node:child_process';
import { createHash, createHmac } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';

// ---- a small seeded PRNG (mulberry32) ----

export class Rng {
  private s: number;
  constructor(readonly seed: number) {
    this.s = seed >>> 0 || 1;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
  /** Printable ASCII (no space). */
  word(n: number): string {
    let s = '';
    for (let i = 0; i < n; i++) s += String.fromCharCode(33 + this.int(94));
    return s;
  }
}

/** One of a few byte-level mutations of `input`. */
export function mutate(rng: Rng, input: Buffer): Buffer<ArrayBuffer> {
  const b = Buffer.from(input);
  switch (rng.int(7)) {
    case 0: // flip bytes
      for (let i = 0, n = 1 + rng.int(4); i < n && b.length > 0; i++) {
        const at = rng.int(b.length);
        b[at] = (b[at] ?? 0) ^ (1 << rng.int(8));
      }
      return b;
    case 1: // truncate
      return b.subarray(0, rng.int(b.length + 1));
    case 2: // insert junk
    {
      const at = rng.int(b.length + 1);
      return Buffer.concat([b.subarray(0, at), rng.bytes(1 + rng.int(16)), b.subarray(at)]);
    }
    case 3: // duplicate a slice
    {
      const at = rng.int(b.length + 1);
      const len = rng.int(Math.min(64, b.length - at) + 1);
      return Buffer.concat([b.subarray(0, at + len), b.subarray(at, at + len), b.subarray(at + len)]);
    }
    case 4: // delete a slice
    {
      const at = rng.int(b.length + 1);
      return Buffer.concat([b.subarray(0, at), b.subarray(at + rng.int(16))]);
    }
    case 5: // replace with a special string
    {
      const at = rng.int(b.length + 1);
      const special = rng.pick(['\0', '%00', '..', '%2e%2e', '%2F', '\r\n', '"', "'", '<', '&', '\\', '%', '%%', '\u202e', '\uffff', 'A'.repeat(300)]);
      return Buffer.concat([b.subarray(0, at), Buffer.from(special), b.subarray(at + rng.int(4))]);
    }
    default: // repeat
      return Buffer.concat([b, b]);
  }
}

/** A distinctive name part: any file carrying it outside where it belongs means a request escaped. */
export const ESCAPE_MARK = 'fuzzesc';

// ---- raw senders ----

export interface RawAnswer {
  /** HTTP status, or 0 when the connection closed without a status line. */
  status: number;
  /** The response's first line and headers (latin1). */
  head: string;
  body: Buffer;
  /** Set when nothing came back within the time limit. */
  hung?: boolean;
  /** Connection-level error (reset, TLS alert). */
  error?: string;
  ms: number;
}

/**
 * Writes `data` on a fresh connection (TCP, or TLS with `tlsOptions`) and reads one response:
 * until its Content-Length is in, or the connection closes, or `timeoutMs` (then `hung`).
 * `endWrite` half-closes after writing (for deliberately truncated requests).
 */
export function exchange(port: number, data: Buffer, opts: { timeoutMs?: number; endWrite?: boolean; tlsOptions?: tls.ConnectionOptions; headRequest?: boolean } = {}): Promise<RawAnswer> {
  const started = Date.now();
  return new Promise((resolve) => {
    const sock: net.Socket = opts.tlsOptions ? tls.connect({ host: '127.0.0.1', port, ...opts.tlsOptions }) : net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let settled = false;
    let error: string | undefined;
    const finish = (hung = false) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      const all = Buffer.concat(chunks);
      const end = all.indexOf('\r\n\r\n');
      const head = (end < 0 ? all : all.subarray(0, end)).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      resolve({ status: m ? Number(m[1]) : 0, head, body: end < 0 ? Buffer.alloc(0) : all.subarray(end + 4), hung: hung || undefined, error, ms: Date.now() - started });
    };
    const timer = setTimeout(() => finish(true), opts.timeoutMs ?? 10_000);
    const complete = () => {
      const all = Buffer.concat(chunks);
      const end = all.indexOf('\r\n\r\n');
      if (end < 0) return false;
      const head = all.subarray(0, end).toString('latin1');
      if (/^HTTP\/1\.[01] 100 /.test(head)) {
        chunks.splice(0, chunks.length, all.subarray(end + 4));
        return false;
      }
      if (opts.headRequest || /^HTTP\/1\.[01] (204|304)/.test(head)) return true;
      const len = /\r\ncontent-length: *(\d+)/i.exec(head);
      if (!len) return false;
      return all.length - end - 4 >= Number(len[1]);
    };
    sock.on('data', (c: Buffer) => {
      chunks.push(c);
      if (complete()) finish();
    });
    sock.on('error', (err: Error) => {
      error = err.message;
      finish();
    });
    sock.on('close', () => finish());
    const write = () =>
      sock.write(data, () => {
        if (opts.endWrite) sock.end();
      });
    if (opts.tlsOptions) sock.once('secureConnect', write);
    else write();
  });
}

/** Serialises a request: `headers` in order, exactly as given (no validation: that is the point). */
export function rawRequest(method: string, target: string, headers: Array<[string, string]>, body: Buffer = Buffer.alloc(0)): Buffer {
  const head = [`${method} ${target} HTTP/1.1`, ...headers.map(([k, v]) => `${k}: ${v}`), '', ''].join('\r\n');
  return Buffer.concat([Buffer.from(head, 'latin1'), body]);
}

// ---- SigV4, written out here so that a fuzzer can sign exactly the bytes it sends ----

const sha256 = (d: Buffer | string) => createHash('sha256').update(d).digest('hex');
const hmac = (k: Buffer | string, d: string) => createHmac('sha256', k).update(d).digest();

export interface SignInput {
  method: string;
  /** The path exactly as it goes on the wire (already percent-encoded or not). */
  path: string;
  /** Query pairs exactly as they go on the wire (already encoded). */
  query: Array<[string, string]>;
  headers: Array<[string, string]>;
  payloadHash: string;
  accessKey: string;
  secretKey: string;
  region: string;
  amzDate: string;
}

/**
 * Authorization header over the request as sent (the canonical URI is the wire path as it is,
 * as S3 does). A server that canonicalises the same bytes accepts it; either way the answer
 * must be a clean 4xx at worst.
 */
export function sigv4Authorization(s: SignInput): string {
  const date = s.amzDate.slice(0, 8);
  const scope = `${date}/${s.region}/s3/aws4_request`;
  const hs = [...s.headers].map(([k, v]) => [k.toLowerCase(), v.trim().replace(/\s+/g, ' ')] as const).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const signedHeaders = hs.map(([k]) => k).join(';');
  const canonicalQuery = [...s.query].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : 1)).map(([k, v]) => `${k}=${v}`).join('&');
  const canonical = [s.method, s.path, canonicalQuery, ...hs.map(([k, v]) => `${k}:${v}`), '', signedHeaders, s.payloadHash].join('\n');
  const sts = ['AWS4-HMAC-SHA256', s.amzDate, scope, sha256(canonical)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${s.secretKey}`, date), s.region), 's3'), 'aws4_request');
  return `AWS4-HMAC-SHA256 Credential=${s.accessKey}/${scope}, SignedHeaders=${signedHeaders}, Signature=${createHmac('sha256', key).update(sts).digest('hex')}`;
}

export function amzDate(d = new Date()): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}

// ---- scans: nothing outside the data directory, nothing unexpected inside it ----

function find(args: string[]): Promise<string[]> {
  return new Promise((resolve) => {
    execFile('find', args, { maxBuffer: 64 * 1024 * 1024, timeout: 60_000 }, (_err, stdout) => resolve(String(stdout).split('\n').filter(Boolean)));
  });
}

/**
 * Files and directories carrying ESCAPE_MARK anywhere a request could have reached by climbing
 * out of the data directory: the OS temp dir, the project and / to depth 3 (one file system,
 * so that no FUSE mount is walked). Entries below `allowedUnder` (the buckets) are not counted.
 */
export async function escapedFiles(roots: string[], allowedUnder: string[], since?: Date, mark = ESCAPE_MARK): Promise<string[]> {
  const out = new Set<string>();
  // Only what changed since the run began: marks an earlier run left on this machine are not this run's.
  const newer = since ? ['-newerct', `@${Math.floor(since.getTime() / 1000) - 1}`] : [];
  for (const r of roots) {
    const depth = r === '/' ? ['-maxdepth', '3'] : [];
    for (const p of await find([r, '-xdev', ...depth, '-name', `*${mark}*`, ...newer])) out.add(p);
  }
  return [...out].filter((p) => !allowedUnder.some((a) => p.startsWith(a + path.sep))).sort();
}

/** Every file and directory below `dir`, relative (a snapshot to compare). */
export async function snapshot(dir: string): Promise<Set<string>> {
  return new Set((await find([dir, '-mindepth', '1'])).map((p) => path.relative(dir, p)));
}

/** Entries of `after` that `before` did not have. */
export function added(before: Set<string>, after: Set<string>): string[] {
  return [...after].filter((p) => !before.has(p)).sort();
}

export async function isDir(p: string): Promise<boolean> {
  return (await fsp.stat(p).catch(() => null))?.isDirectory() ?? false;
}

/** The seed CI uses when none is given: a landing must not depend on the luck of the clock. */
export const CI_SEED = 20261122;

/**
 * A seed from the variable `name` (or SOAK_SEED); else the fixed CI_SEED under CI=true; else the
 * clock, so that runs on a developer's machine and in scripts/soak keep finding new cases. The
 * tests print it: `NAME=seed` reproduces a run.
 */
export function seedFrom(name: string): number {
  const v = process.env[name] ?? process.env.SOAK_SEED;
  if (v !== undefined && /^\d+$/.test(v)) return Number(v);
  if (process.env.CI === 'true' || process.env.CI === '1') return CI_SEED;
  return Math.floor(Date.now() % 2 ** 31);
}

/** The fuzzers' seed: FUZZ_SEED. */
export function fuzzSeed(): number {
  return seedFrom('FUZZ_SEED');
}
