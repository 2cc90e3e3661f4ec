// Test fixture: runs a real mountd process (through tsx) over a temp data directory and stops it.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from './engine.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface DaemonOptions {
  /** Reuse a data directory (restart tests); default: a fresh temp dir. */
  dataDir?: string;
  /** Mount point, or true for a fresh temp dir; omit for no mount. */
  mount?: string | boolean;
  /** S3 port, or true for a free port; omit for no S3 listener. */
  s3?: number | boolean;
  env?: Record<string, string>;
  args?: string[];
  /** Milliseconds to wait for "ready" (default 30 s). */
  timeoutMs?: number;
}

export interface Daemon {
  proc: ChildProcess;
  dataDir: string;
  mountPoint?: string;
  s3Port?: number;
  /** Everything the daemon wrote to stderr so far. */
  log(): string;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL (a crash) and wait for exit. */
  kill(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export async function startDaemon(opts: DaemonOptions = {}): Promise<Daemon> {
  const dataDir = opts.dataDir ?? (await tempDir('mountd-data'));
  const args = [path.join(ROOT, 'src/cli/mountd.ts'), '--data', dataDir];
  let mountPoint: string | undefined;
  if (opts.mount) {
    mountPoint = typeof opts.mount === 'string' ? opts.mount : await tempDir('mountd-mnt');
    args.push('--mount', mountPoint);
  }
  let s3Port: number | undefined;
  if (opts.s3) {
    s3Port = typeof opts.s3 === 'number' ? opts.s3 : await freePort();
    args.push('--s3', `127.0.0.1:${s3Port}`);
  } else {
    args.push('--s3', 'off');
  }
  args.push(...(opts.args ?? []));
  const proc = spawn(process.execPath, ['--import', 'tsx', ...args], {
    cwd: ROOT,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  proc.stdout!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`mountd did not become ready:\n${stderr}`)), opts.timeoutMs ?? 30_000);
    const check = () => {
      if (/ ready\n/.test(stderr)) {
        clearTimeout(timer);
        resolve();
      }
    };
    proc.stderr!.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`mountd exited with ${code} before ready:\n${stderr}`));
    });
  });
  return {
    proc,
    dataDir,
    mountPoint,
    s3Port,
    log: () => stderr,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill('SIGTERM');
      return exited;
    },
    async kill() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

/** Removes a temp directory a test made (never a live mount point: unmount first). */
export async function removeDir(dir: string | undefined): Promise<void> {
  if (dir) await fsp.rm(dir, { recursive: true, force: true });
}
