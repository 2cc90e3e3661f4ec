// fsx-style random operations on a real mount, and the self-checking block pattern of the two-doors test.
//
// The file system exerciser runs in ONE long-lived Python child per file: the seeded generator,
// the in-memory model and the checks all live in it, so an operation costs one system call on
// the mount and no process spawn or pipe round trip. The test process never touches the mount
// itself (a hung mount would hang libuv's thread pool). Same seed, same operation stream.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { eachLine } from './mount.js';
import { errorCode, s3request } from './s3.js';

export interface FsxOptions {
  /** Directory on the mount (a bucket or below) where the file lives. */
  dir: string;
  /** Base name of the file (renames add a counter). */
  name: string;
  seed: number;
  ops: number;
  /** Largest file size the stream grows the file to (default 1 MiB). */
  maxSize?: number;
  /** Whole-file checks (a fresh descriptor reads everything) every N operations (default 500). */
  verifyEvery?: number;
  /** A progress callback about every `progressEvery` operations (default 2000). */
  onProgress?: (done: number) => void;
  progressEvery?: number;
  /** Kill the child after this long (default 10 minutes). */
  timeoutMs?: number;
  /** Relative weights by operation name (write, append, truncate, read, mmap, rename, fsync, reopen, stat, fullread). */
  weights?: Record<string, number>;
  /** Appends every operation (one line each) to this file: the whole history of a failure. */
  traceFile?: string;
}

export interface FsxResult {
  ok: boolean;
  seed: number;
  ops: number;
  /** Operations by name. */
  counts: Record<string, number>;
  bytesWritten: number;
  bytesRead: number;
  /** Reads (pread, mmap, whole file, stat) checked against the model. */
  checks: number;
  seconds: number;
  /** Final path and size. */
  path?: string;
  size?: number;
  /** On failure: what differed, at which operation, and the operations before it. */
  failure?: { op: number; what: string; detail: string; recent: string[] };
  stderr?: string;
}

const FSX_PY = String.raw`
import json, mmap, os, random, sys, time

cfg = json.loads(sys.stdin.readline())
rng = random.Random(cfg['seed'])
PKG = 65536
MAX = cfg.get('maxSize', 1 << 20)
directory = cfg['dir']
base = cfg['name']
verify_every = cfg.get('verifyEvery', 500)
progress_every = cfg.get('progressEvery', 2000)
os.makedirs(os.path.join(directory, 'sub'), exist_ok=True)

path = os.path.join(directory, base)
model = bytearray()
recent = []
counts = {}
stats = {'bytesWritten': 0, 'bytesRead': 0, 'checks': 0}
renames = 0
op_index = 0
started = time.time()

def out(obj):
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()

def fail(what, detail):
    out({'fail': {'op': op_index, 'what': what, 'detail': detail, 'recent': recent[-40:]}, 'counts': counts, **stats, 'seconds': time.time() - started, 'path': path, 'size': len(model)})
    sys.exit(1)

trace = open(cfg['traceFile'], 'a') if cfg.get('traceFile') else None
trace_data = bool(cfg.get('traceData'))

def note(s):
    if trace:
        trace.write('%d %s\n' % (op_index, s))
        trace.flush()
    recent.append('%d %s' % (op_index, s))
    if len(recent) > 200:
        del recent[:100]

def compare(what, got, off, want):
    stats['checks'] += 1
    stats['bytesRead'] += len(got)
    if got == want:
        return
    n = min(len(got), len(want))
    first = next((i for i in range(n) if got[i] != want[i]), n)
    fail(what, 'at file offset %d: got %d bytes, expected %d; first difference at +%d (absolute %d, package %d): got %s expected %s; model size %d' % (
        off, len(got), len(want), first, off + first, (off + first) // PKG,
        got[first:first + 16].hex(), want[first:first + 16].hex(), len(model)))

rw = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
ap = None

def append_fd():
    global ap
    if ap is None:
        ap = os.open(path, os.O_WRONLY | os.O_APPEND)
    return ap

def pick_offset(limit):
    r = rng.random()
    if r < 0.4:
        return rng.randrange(0, max(1, limit))
    if r < 0.8:
        k = rng.randrange(0, max(1, limit) // PKG + 2)
        return max(0, k * PKG + rng.randrange(-64, 65))
    return max(0, len(model) + rng.randrange(-4096, 4097))

def pick_length():
    r = rng.random()
    if r < 0.25:
        return rng.randrange(1, 17)
    if r < 0.55:
        return rng.randrange(1, 4097)
    if r < 0.9:
        return rng.randrange(1, 131073)
    return PKG

def grow_model(to):
    if to > len(model):
        model.extend(b'\0' * (to - len(model)))

def op_write():
    off = min(pick_offset(len(model) + PKG), MAX - 1)
    n = min(pick_length(), MAX - off)
    data = rng.randbytes(n)
    note('pwrite off=%d len=%d' % (off, n) + (' data=' + data.hex() if trace_data else ''))
    got = os.pwrite(rw, data, off)
    if got != n:
        fail('pwrite', 'short write %d of %d' % (got, n))
    grow_model(off + n)
    model[off:off + n] = data
    stats['bytesWritten'] += n

def op_append():
    n = min(pick_length(), MAX - len(model))
    if n <= 0:
        return op_truncate()
    data = rng.randbytes(n)
    note('append len=%d at=%d' % (n, len(model)) + (' data=' + data.hex() if trace_data else ''))
    got = os.write(append_fd(), data)
    if got != n:
        fail('append', 'short write %d of %d' % (got, n))
    model.extend(data)
    stats['bytesWritten'] += n

def op_truncate():
    r = rng.random()
    if r < 0.5 and len(model) > 0:
        size = rng.randrange(0, len(model))
        if rng.random() < 0.5:
            size = max(0, min(len(model) - 1, (size // PKG) * PKG + rng.randrange(-2, 3)))
    elif r < 0.6:
        size = 0
    else:
        size = min(MAX, len(model) + rng.randrange(0, 200000))
    how = 'ftruncate' if rng.random() < 0.7 else 'truncate(path)'
    note('%s %d -> %d' % (how, len(model), size))
    if how == 'ftruncate':
        os.ftruncate(rw, size)
    else:
        os.truncate(path, size)
    if size < len(model):
        del model[size:]
    else:
        grow_model(size)

def op_read():
    off = pick_offset(len(model) + 100)
    n = pick_length()
    note('pread off=%d len=%d' % (off, n))
    compare('pread', os.pread(rw, n, off), off, bytes(model[off:off + n]))

def op_mmap():
    if len(model) == 0:
        return op_stat()
    note('mmap ACCESS_COPY len=%d' % len(model))
    fd = os.open(path, os.O_RDONLY)
    try:
        m = mmap.mmap(fd, len(model), access=mmap.ACCESS_COPY)
        try:
            off = rng.randrange(0, len(model))
            n = min(len(model) - off, pick_length())
            compare('mmap slice', m[off:off + n], off, bytes(model[off:off + n]))
            if rng.random() < 0.3:
                compare('mmap whole', m[:], 0, bytes(model))
        finally:
            m.close()
    finally:
        os.close(fd)

def op_rename():
    global path, renames
    renames += 1
    sub = rng.random() < 0.5
    new = os.path.join(directory, 'sub' if sub else '', '%s.%d' % (base, renames))
    note('rename %s -> %s' % (os.path.relpath(path, directory), os.path.relpath(new, directory)))
    os.rename(path, new)
    path = new

def op_fsync():
    note('fsync')
    os.fsync(rw)

def op_reopen():
    global rw, ap
    note('close+reopen')
    os.close(rw)
    if ap is not None:
        os.close(ap)
        ap = None
    rw = os.open(path, os.O_RDWR)

def op_stat():
    note('stat')
    stats['checks'] += 1
    a = os.stat(path).st_size
    b = os.fstat(rw).st_size
    if a != len(model) or b != len(model):
        fail('stat', 'stat size %d, fstat size %d, model %d' % (a, b, len(model)))

def op_fullread():
    note('whole-file read through a fresh descriptor')
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            c = os.read(fd, 1 << 20)
            if not c:
                break
            chunks.append(c)
    finally:
        os.close(fd)
    compare('whole file', b''.join(chunks), 0, bytes(model))

OPS = [(op_write, 'write', 25), (op_append, 'append', 8), (op_truncate, 'truncate', 7), (op_read, 'read', 25),
       (op_mmap, 'mmap', 4), (op_rename, 'rename', 3), (op_fsync, 'fsync', 4), (op_reopen, 'reopen', 4),
       (op_stat, 'stat', 5), (op_fullread, 'fullread', 3)]
weights = cfg.get('weights') or {}
table = []
for fn, name, w in OPS:
    table += [(fn, name)] * weights.get(name, w)

for op_index in range(cfg['ops']):
    fn, name = table[rng.randrange(len(table))]
    counts[name] = counts.get(name, 0) + 1
    try:
        fn()
        if verify_every and op_index % verify_every == verify_every - 1:
            op_fullread()
    except OSError as e:
        fail(name, 'OSError errno %s: %s' % (e.errno, e.strerror))
    if progress_every and op_index % progress_every == progress_every - 1:
        out({'progress': op_index + 1})

op_index = cfg['ops']
try:
    op_fullread()
    os.close(rw)
    if ap is not None:
        os.close(ap)
    # After the last close the file is committed: a fresh open must see exactly the model.
    op_fullread()
except OSError as e:
    fail('final', 'OSError errno %s: %s' % (e.errno, e.strerror))
out({'done': True, 'counts': counts, **stats, 'seconds': time.time() - started, 'path': path, 'size': len(model)})
`;

/** Runs one seeded operation stream against one file on the mount; resolves with its summary (never rejects on a model mismatch). */
export function runFsx(opts: FsxOptions): Promise<FsxResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('python3', ['-u', '-c', FSX_PY], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    let last: Record<string, unknown> | undefined;
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 600_000);
    eachLine(child.stdout, (line) => {
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        stderr += `(stdout) ${line}\n`;
        return;
      }
      if (typeof msg.progress === 'number') opts.onProgress?.(msg.progress);
      else last = msg;
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const m = (last ?? {}) as Record<string, any>;
      const result: FsxResult = {
        ok: code === 0 && m.done === true,
        seed: opts.seed,
        ops: opts.ops,
        counts: m.counts ?? {},
        bytesWritten: m.bytesWritten ?? 0,
        bytesRead: m.bytesRead ?? 0,
        checks: m.checks ?? 0,
        seconds: m.seconds ?? 0,
        path: m.path,
        size: m.size,
        failure: m.fail,
        stderr: stderr || undefined,
      };
      if (!result.ok && !result.failure) {
        result.failure = { op: -1, what: 'exit', detail: `python exited with ${code ?? signal}`, recent: [] };
      }
      resolve(result);
    });
    child.stdin.end(
      JSON.stringify({
        dir: opts.dir,
        name: opts.name,
        seed: opts.seed,
        ops: opts.ops,
        maxSize: opts.maxSize ?? 1 << 20,
        verifyEvery: opts.verifyEvery ?? 500,
        progressEvery: opts.progressEvery ?? 2000,
        weights: opts.weights,
        traceFile: opts.traceFile,
      }) + '\n',
    );
  });
}

/** A seed from the environment (FSX_SEED, SOAK_SEED) or the clock; tests print it. */
export { seedFrom } from './fuzz.js';

// ---- the self-checking pattern of the two-doors test ----

/** Size of one self-checking block. */
export const BLOCK = 4096;
const MAGIC = Buffer.from('VBLK');

/**
 * One block of version `version` of object `tag`: a 32-byte head (magic, tag hash, version,
 * index, block count) and then SHA-256(head) repeated: a reader can check every block on its own
 * and that all blocks of a read belong to one whole version.
 */
export function patternBlock(tag: string, version: number, index: number, count: number): Buffer {
  const head = Buffer.alloc(32);
  MAGIC.copy(head, 0);
  head.writeUInt32BE(createHash('sha256').update(tag).digest().readUInt32BE(0), 4);
  head.writeBigUInt64BE(BigInt(version), 8);
  head.writeUInt32BE(index, 16);
  head.writeUInt32BE(count, 20);
  const fill = createHash('sha256').update(head).digest();
  const b = Buffer.alloc(BLOCK);
  head.copy(b, 0);
  for (let at = 32; at < BLOCK; at += 32) fill.copy(b, at);
  return b;
}

export function patternBody(tag: string, version: number, blocks: number): Buffer {
  return Buffer.concat(Array.from({ length: blocks }, (_, i) => patternBlock(tag, version, i, blocks)));
}

/**
 * Checks that `body` is exactly one whole version of `tag`: every block valid, all of one
 * version, indices 0..n-1, and n blocks. Returns the version, or a description of what is wrong.
 */
export function checkPattern(tag: string, body: Buffer): { version: number } | { error: string } {
  if (body.length === 0 || body.length % BLOCK !== 0) return { error: `size ${body.length} is not a positive multiple of ${BLOCK}` };
  const count = body.length / BLOCK;
  let version: number | undefined;
  for (let i = 0; i < count; i++) {
    const blk = body.subarray(i * BLOCK, (i + 1) * BLOCK);
    if (!blk.subarray(0, 4).equals(MAGIC)) return { error: `block ${i}: bad magic ${blk.subarray(0, 4).toString('hex')}` };
    const v = Number(blk.readBigUInt64BE(8));
    if (version === undefined) version = v;
    else if (v !== version) return { error: `block ${i} is of version ${v}, block 0 of version ${version}: a mix of versions` };
    if (!blk.equals(patternBlock(tag, v, i, count))) return { error: `block ${i} of version ${v}: does not check (index, count, tag or checksum)` };
  }
  return { version: version! };
}

/**
 * The same pattern and checks in Python, for the mount workers of the two-doors test (they
 * run as child processes: this process never touches the mount).
 */
export const PATTERN_PY = String.raw`
import hashlib, struct
BLOCK = 4096
def pattern_block(tag, version, index, count):
    head = b'VBLK' + hashlib.sha256(tag.encode()).digest()[:4] + struct.pack('>QII', version, index, count) + b'\0' * 8
    fill = hashlib.sha256(head).digest()
    return head + fill * ((BLOCK - 32) // 32)
def pattern_body(tag, version, blocks):
    return b''.join(pattern_block(tag, version, i, blocks) for i in range(blocks))
def check_pattern(tag, body):
    if len(body) == 0 or len(body) % BLOCK:
        return 'size %d is not a positive multiple of %d' % (len(body), BLOCK)
    count = len(body) // BLOCK
    version = None
    for i in range(count):
        blk = body[i * BLOCK:(i + 1) * BLOCK]
        if blk[:4] != b'VBLK':
            return 'block %d: bad magic' % i
        v = struct.unpack('>Q', blk[8:16])[0]
        if version is None:
            version = v
        elif v != version:
            return 'block %d is of version %d, block 0 of version %d: a mix' % (i, v, version)
        if blk != pattern_block(tag, v, i, count):
            return 'block %d of version %d does not check' % (i, v)
    return None
`;

// ---- one-shot Python helpers that read and write on the mount (child processes, never this one) ----

/** Runs a Python script with `input` as JSON on stdin; resolves with the JSON it prints last. */
export function runPython<T>(script: string, input: unknown, timeoutMs = 120_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn('python3', ['-u', '-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const lines = stdout.trim().split('\n');
      try {
        resolve(JSON.parse(lines[lines.length - 1]!) as T);
      } catch {
        reject(new Error(`python exited with ${code ?? signal}: ${stdout.slice(-2000)}\n${stderr.slice(-4000)}`));
      }
    });
    child.stdin.end(JSON.stringify(input) + '\n');
  });
}

const HASH_PY = String.raw`
import hashlib, json, os, sys
cfg = json.loads(sys.stdin.readline())
out = {}
for rel in cfg['paths']:
    try:
        h = hashlib.sha256()
        with open(os.path.join(cfg['root'], rel), 'rb', buffering=0) as f:
            while True:
                c = f.read(1 << 20)
                if not c:
                    break
                h.update(c)
        out[rel] = h.hexdigest()
    except OSError as e:
        out[rel] = 'errno %d' % e.errno
print(json.dumps(out))
`;

/** SHA-256 of each file (relative to `root`) read through the mount, or "errno N". */
export function hashOnMount(root: string, paths: string[], timeoutMs = 120_000): Promise<Record<string, string>> {
  return runPython(HASH_PY, { root, paths }, timeoutMs);
}

const COMPARE_PY = String.raw`
import json, os, sys
cfg = json.loads(sys.stdin.readline())
limit = cfg.get('limit')
res = {'readable': 0, 'mismatchAt': None, 'errno': None, 'size': None}
try:
    res['size'] = os.stat(cfg['file']).st_size
    with open(cfg['file'], 'rb', buffering=0) as f, open(cfg['source'], 'rb') as s:
        while limit is None or res['readable'] < limit:
            n = 65536 if limit is None else min(65536, limit - res['readable'])
            try:
                c = f.read(n)
            except OSError as e:
                res['errno'] = e.errno
                break
            if not c:
                break
            want = s.read(len(c))
            if c != want:
                res['mismatchAt'] = res['readable'] + next(i for i in range(len(c)) if i >= len(want) or c[i] != want[i])
                break
            res['readable'] += len(c)
except OSError as e:
    res['errno'] = e.errno
print(json.dumps(res))
`;

export interface PrefixCompare {
  /** Bytes read from the start that equal the source, before an error, a mismatch or the end. */
  readable: number;
  /** First offset where the file differs from the source (wrong plaintext), or null. */
  mismatchAt: number | null;
  /** errno of the read that failed (5 = EIO for a torn tail), or null. */
  errno: number | null;
  /** st_size of the file. */
  size: number | null;
}

/** Reads `file` (on the mount) from the start in 64 KiB reads, comparing with `source` (a local file), up to `limit` bytes. */
export function comparePrefix(file: string, source: string, limit?: number): Promise<PrefixCompare> {
  return runPython(COMPARE_PY, { file, source, limit: limit ?? null });
}

// ---- integrity walks through the S3 door ----

/** Every key of a bucket, through ListObjectsV2 pages. */
export async function listKeys(port: number, bucket: string, creds?: { accessKeyId: string; secretAccessKey: string }): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  for (;;) {
    const query: Record<string, string> = { 'list-type': '2', 'max-keys': '1000' };
    if (token) query['continuation-token'] = token;
    const r = await s3request(port, { method: 'GET', path: `/${bucket}`, query, creds });
    if (r.status !== 200) throw new Error(`list ${bucket}: ${r.status} ${r.text}`);
    for (const m of r.text.matchAll(/<Key>([^<]*)<\/Key>/g)) keys.push(m[1]!.replace(/&amp;/g, '&').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'"));
    token = /<NextContinuationToken>([^<]*)<\/NextContinuationToken>/.exec(r.text)?.[1];
    if (!/<IsTruncated>true<\/IsTruncated>/.test(r.text) || !token) return keys;
  }
}

export interface WalkResult {
  objects: number;
  bytes: number;
  /** key -> SHA-256 of the body of every object GET answered with 200 and a whole body. */
  hashes: Map<string, string>;
  /** key -> what went wrong (status and code, or a short body). */
  errors: Map<string, string>;
}

/** GETs every object of the buckets (`concurrency` at a time) and hashes it; failures are collected, not thrown. */
export async function walkS3(port: number, buckets: string[], concurrency = 16, creds?: { accessKeyId: string; secretAccessKey: string }): Promise<WalkResult> {
  const out: WalkResult = { objects: 0, bytes: 0, hashes: new Map(), errors: new Map() };
  const todo: Array<[string, string]> = [];
  for (const b of buckets) for (const k of await listKeys(port, b, creds)) todo.push([b, k]);
  const worker = async () => {
    for (let job = todo.shift(); job; job = todo.shift()) {
      const [b, k] = job;
      const name = `${b}/${k}`;
      try {
        const r = await s3request(port, { method: 'GET', path: `/${b}/${k.split('/').map(encodeURIComponent).join('/')}`, creds });
        out.objects++;
        if (r.status !== 200) out.errors.set(name, `${r.status} ${errorCode(r) ?? r.text.slice(0, 200)}`);
        else if (r.headers['content-length'] !== undefined && Number(r.headers['content-length']) !== r.body.length) out.errors.set(name, `truncated body: ${r.body.length} of ${r.headers['content-length']} bytes`);
        else {
          out.bytes += r.body.length;
          out.hashes.set(name, createHash('sha256').update(r.body).digest('hex'));
        }
      } catch (err) {
        out.objects++;
        out.errors.set(name, `request failed: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return out;
}

export const sha256hex = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

// ---- mount workers of the two-doors test ----

const DOORS_WORKER_PY = PATTERN_PY + String.raw`
import json, os, random, sys, time
cfg = json.loads(sys.stdin.readline())
rng = random.Random(cfg['seed'])
role = cfg['role']
d = cfg['dir']
deadline = time.time() + cfg['seconds']
wid = cfg['worker']
stats = {'role': role, 'worker': wid, 'ops': 0, 'bytes': 0, 'errors': [], 'errorCount': 0, 'versions': {}, 'openEnoent': 0}

def err(s):
    stats['errorCount'] += 1
    if len(stats['errors']) < 10:
        stats['errors'].append(s)

def blocks():
    r = rng.random()
    return rng.randrange(1, 17) if r < 0.6 else rng.randrange(17, 257) if r < 0.95 else rng.randrange(257, 600)

n = 0
while time.time() < deadline:
    n += 1
    version = wid * 1000000000 + n
    try:
        if role == 'rename-writer':
            key = rng.choice(cfg['keys'])
            body = pattern_body(key, version, blocks())
            tmp = os.path.join(d, '.tmp-%d-%d' % (wid, n))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            for at in range(0, len(body), 131072):
                os.write(fd, body[at:at + 131072])
            os.close(fd)
            held = None
            if cfg.get('holdTarget'):
                # Keep the target open across the rename, as a reader or an editor would.
                try:
                    held = os.open(os.path.join(d, key), os.O_RDONLY)
                except FileNotFoundError:
                    stats['openEnoent'] += 1
            os.rename(tmp, os.path.join(d, key))
            if held is not None:
                os.close(held)
            stats['bytes'] += len(body)
        elif role == 'reader':
            key = rng.choice(cfg['keys'])
            try:
                f = open(os.path.join(d, key), 'rb', buffering=0)
            except FileNotFoundError:
                # The name always exists (every writer renames over it): libfuse's hiding of an
                # open target makes a rename over it briefly visible as missing. Counted apart.
                stats['openEnoent'] += 1
                continue
            with f:
                chunks = []
                while True:
                    c = f.read(1 << 20)
                    if not c:
                        break
                    chunks.append(c)
            body = b''.join(chunks)
            problem = check_pattern(key, body)
            if problem:
                err('%s: %s' % (key, problem))
            stats['bytes'] += len(body)
        elif role == 'inplace-writer':
            key = cfg['keys'][n % len(cfg['keys'])]
            p = os.path.join(d, key)
            body = pattern_body(key, version, blocks())
            fd = os.open(p, os.O_RDWR)
            # Blocks in a random order, some in one write, then the size.
            order = list(range(0, len(body), 4096))
            rng.shuffle(order)
            for at in order:
                os.pwrite(fd, body[at:at + 4096 * rng.randrange(1, 4)], at)
            os.ftruncate(fd, len(body))
            if rng.random() < 0.3:
                os.fsync(fd)
            os.close(fd)
            with open(p, 'rb', buffering=0) as f:
                got = f.read()
            if got != body:
                err('%s: read after close: %s' % (key, check_pattern(key, got) or 'another whole version'))
            stats['bytes'] += len(body)
            stats['versions'][key] = version
            print(json.dumps({'closed': key, 'version': version}), flush=True)
            if sys.stdin.readline().strip() != 'go':
                break
        stats['ops'] += 1
    except OSError as e:
        err('%s op %d: errno %d %s' % (role, n, e.errno, e.strerror))
print(json.dumps({'done': stats}), flush=True)
`;

export interface DoorsWorkerStats {
  role: string;
  worker: number;
  ops: number;
  bytes: number;
  errors: string[];
  errorCount: number;
  versions: Record<string, number>;
  /** Reader opens that found the name missing while a rename over it was under way. */
  openEnoent: number;
}

/**
 * A mount worker of the two-doors test: 'rename-writer' (whole versions written to a temp name
 * and renamed over the key), 'reader' (whole reads, each checked to be one whole version) or
 * 'inplace-writer' (a new version written in place, closed, read back, then `onClosed` is
 * awaited before the next one, so that the other door can check it too).
 */
export function runDoorsWorker(
  opts: { role: 'rename-writer' | 'reader' | 'inplace-writer'; dir: string; keys: string[]; seconds: number; seed: number; worker: number; holdTarget?: boolean },
  onClosed?: (key: string, version: number) => Promise<void>,
): Promise<DoorsWorkerStats> {
  return new Promise((resolve, reject) => {
    const child = spawn('python3', ['-u', '-c', DOORS_WORKER_PY], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    let result: DoorsWorkerStats | undefined;
    const timer = setTimeout(() => child.kill('SIGKILL'), (opts.seconds + 120) * 1000);
    eachLine(child.stdout, (line) => {
      const msg = JSON.parse(line) as { done?: DoorsWorkerStats; closed?: string; version?: number };
      if (msg.done) result = msg.done;
      else if (msg.closed !== undefined) {
        void (onClosed ? onClosed(msg.closed, msg.version!) : Promise.resolve()).then(
          () => child.stdin.write('go\n'),
          () => child.stdin.write('stop\n'),
        );
      }
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (result) resolve(result);
      else reject(new Error(`doors worker ${opts.role} exited with ${code}: ${stderr}`));
    });
    child.stdin.write(JSON.stringify(opts) + '\n');
  });
}
