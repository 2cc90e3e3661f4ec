// Test fixture for real mounts: a mountd per test file in its own temp dir, tools run as child processes, no mount left behind.
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { ROOT, removeDir, startDaemon, type Daemon, type DaemonOptions } from './daemon.js';
import { tempDir } from './engine.js';

export const HAS_FUSE = existsSync('/dev/fuse');

/** Said loudly once per test file when the machine cannot mount. */
export function fuseMissingBanner(file: string): string {
  const banner = [
    '################################################################',
    `## /dev/fuse is missing: the MOUNT TESTS in ${file} DID NOT RUN`,
    '## (a container needs --device /dev/fuse --cap-add SYS_ADMIN)',
    '################################################################',
  ].join('\n');
  console.error(banner);
  return banner;
}

/**
 * Where /dev/fuse is missing, says so loudly: the banner on stderr, and a test of the file that
 * passes with the banner in its log, so that the report shows what did not run.
 */
export function reportMissingFuse(test: (title: string, fn: (t: { log(...values: unknown[]): void; pass(): void }) => void) => void, file: string, what: string): void {
  if (HAS_FUSE) return;
  const banner = fuseMissingBanner(file);
  test(`FUSE is missing: ${what} did not run`, (t) => {
    t.log(banner);
    t.pass();
  });
}

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

/**
 * Runs a tool as a child process (never inside this process: a FUSE request answered by the
 * process that made it would deadlock), with a time limit. Does not throw on a non-zero exit.
 */
export async function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number; env?: Record<string, string>; input?: string } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { cwd: opts.cwd, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, ...opts.env }, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err && typeof (err as { code?: unknown }).code !== 'number') {
          if ((err as { killed?: boolean }).killed) return reject(new Error(`${cmd} ${args.join(' ')}: timed out\n${stderr}`));
          return reject(err);
        }
        resolve({ stdout, stderr, code: err ? ((err as { code?: number }).code ?? 1) : 0 });
      },
    );
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    else child.stdin!.end();
  });
}

/** Runs a shell command line; throws with its output when it fails. */
export async function sh(script: string, opts: { cwd?: string; timeoutMs?: number; env?: Record<string, string> } = {}): Promise<string> {
  const r = await run('sh', ['-c', script], opts);
  if (r.code !== 0) throw new Error(`sh -c ${JSON.stringify(script)} exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** mountctl as a user runs it (through tsx): its stdout, stderr and exit code. */
export async function mountctl(dataDir: string, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  // tsx by URL, so that mountctl can run from any directory (a relative FILE is resolved against it).
  return run(process.execPath, ['--import', import.meta.resolve('tsx'), path.join(ROOT, 'src/cli/mountctl.ts'), '--data', dataDir, ...args], { cwd: opts.cwd ?? ROOT, timeoutMs: opts.timeoutMs ?? 60_000 });
}

/** FUSE mounts (from /proc/mounts) at or below `dir`. */
export async function fuseMountsUnder(dir: string): Promise<string[]> {
  const text = await fsp.readFile('/proc/mounts', 'utf8');
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const [, mnt, type] = line.split(' ');
    if (!mnt || !type || !(type === 'fuse' || type.startsWith('fuse.'))) continue;
    const p = mnt.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
    if (p === dir || p.startsWith(dir + '/')) out.push(p);
  }
  return out;
}

export interface MountFixture {
  /** The test file's temp dir: data/ and mnt/ live in it. */
  root: string;
  dataDir: string;
  mnt: string;
  daemon: Daemon;
  /** Stops the daemon if it runs and starts a new one on the same data dir and mount point. */
  restart(opts?: Partial<DaemonOptions>): Promise<Daemon>;
  /**
   * Stops the daemon, then fails if any FUSE mount is left under the temp dir (after removing
   * it, so one failure does not leave the machine dirty), then removes the temp dir.
   */
  cleanup(): Promise<void>;
}

export async function startMount(tag: string, opts: Partial<DaemonOptions> = {}): Promise<MountFixture> {
  const root = await tempDir(`mountd-${tag}`);
  const dataDir = path.join(root, 'data');
  const mnt = path.join(root, 'mnt');
  const start = (more: Partial<DaemonOptions> = {}) => startDaemon({ dataDir, mount: mnt, ...opts, ...more });
  const fx: MountFixture = {
    root,
    dataDir,
    mnt,
    daemon: await start(),
    async restart(more = {}) {
      await fx.daemon.stop();
      fx.daemon = await start(more);
      return fx.daemon;
    },
    async cleanup() {
      const code = await fx.daemon.stop();
      const left = await fuseMountsUnder(root);
      for (const m of left) await run('fusermount', ['-uz', m]).catch(() => undefined);
      if (left.length === 0) await removeDir(root);
      if (left.length > 0) throw new Error(`FUSE mount(s) left behind under ${root}: ${left.join(', ')}\n--- daemon log ---\n${fx.daemon.log()}`);
      if (code !== 0 && code !== null) throw new Error(`mountd exited with ${code}\n--- daemon log ---\n${fx.daemon.log()}`);
    },
  };
  return fx;
}

/** Calls `fn` with each complete line (without its newline) a child writes to `stream`. */
export function eachLine(stream: NodeJS.ReadableStream, fn: (line: string) => void): void {
  let buffered = '';
  stream.setEncoding('utf8');
  stream.on('data', (d: string) => {
    buffered += d;
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      fn(line);
    }
  });
}

export interface FdHolder {
  /** Sends one command to the holder; the answer is "ok ..." or "err ERRNO message". */
  send(line: string): Promise<string>;
  close(): Promise<void>;
}

/**
 * A Python process that holds file descriptors on the mount for a test and answers one line
 * per command: "open PATH [FLAGS]" -> "ok FD", "pread FD LEN OFF" -> "ok HEX", "pwrite FD OFF
 * HEX", "fstat FD" -> "ok SIZE", "close FD", "mmap PATH LEN MODE" -> "ok HEX".
 */
export function startFdHolder(): FdHolder {
  const script = String.raw`
import mmap, os, sys
for line in sys.stdin:
    parts = line.split()
    try:
        cmd = parts[0]
        if cmd == 'open':
            flags = {'r': os.O_RDONLY, 'rw': os.O_RDWR, 'a': os.O_WRONLY | os.O_APPEND}[parts[2] if len(parts) > 2 else 'r']
            out = str(os.open(parts[1], flags))
        elif cmd == 'pread':
            out = os.pread(int(parts[1]), int(parts[2]), int(parts[3])).hex()
        elif cmd == 'pwrite':
            out = str(os.pwrite(int(parts[1]), bytes.fromhex(parts[3]), int(parts[2])))
        elif cmd == 'write':
            out = str(os.write(int(parts[1]), bytes.fromhex(parts[2])))
        elif cmd == 'fstat':
            out = str(os.fstat(int(parts[1])).st_size)
        elif cmd == 'fsync':
            os.fsync(int(parts[1])); out = ''
        elif cmd == 'close':
            os.close(int(parts[1])); out = ''
        elif cmd == 'mmap':
            fd = os.open(parts[1], os.O_RDONLY)
            try:
                mode = {'read': dict(access=mmap.ACCESS_READ), 'copy': dict(access=mmap.ACCESS_COPY), 'private': dict(flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)}[parts[3]]
                m = mmap.mmap(fd, int(parts[2]), **mode)
                out = m[:].hex()
                m.close()
            finally:
                os.close(fd)
        else:
            raise ValueError('unknown command ' + cmd)
        print('ok ' + out, flush=True)
    except OSError as e:
        print('err %d %s' % (e.errno, e.strerror), flush=True)
`;
  const child: ChildProcessWithoutNullStreams = spawn('python3', ['-u', '-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
  const waiting: Array<(line: string) => void> = [];
  eachLine(child.stdout, (line) => waiting.shift()?.(line));
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return {
    send(line) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`fd holder: no answer to ${line}\n${stderr}`)), 30_000);
        waiting.push((answer) => {
          clearTimeout(timer);
          resolve(answer);
        });
        child.stdin.write(line + '\n');
      });
    },
    async close() {
      child.stdin.end();
      if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
    },
  };
}

export async function sha256(file: string): Promise<string> {
  const r = await run('sha256sum', [file]);
  if (r.code !== 0) throw new Error(`sha256sum ${file}: ${r.stderr}`);
  return r.stdout.split(' ')[0]!;
}
