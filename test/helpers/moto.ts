// Runs a real moto_server (AWS Secrets Manager and KMS, among others) on a free loopback port.

import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';

/** Dummy credentials for moto, always passed explicitly, never taken from the environment. */
export const MOTO_CREDENTIALS = { accessKeyId: 'testing', secretAccessKey: 'testing', sessionToken: 'testing' } as const;
export const MOTO_REGION = 'us-east-1';

/** The moto_server executable on PATH (or $MOTO_SERVER), or undefined. */
export function findMotoServer(): string | undefined {
  const explicit = process.env.MOTO_SERVER;
  const candidates = explicit ? [explicit] : (process.env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, 'moto_server'));
  for (const c of candidates) {
    try {
      accessSync(c, fsConstants.X_OK);
      return c;
    } catch {
      // next
    }
  }
  return undefined;
}

export async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('no port'))));
    });
  });
}

export interface MotoServer {
  readonly bin: string;
  readonly port: number;
  /** http://127.0.0.1:PORT */
  readonly endpoint: string;
  readonly running: boolean;
  /** (Re)starts on the same port and waits until it answers. moto keeps state in memory only. */
  start(): Promise<void>;
  /** SIGTERM, then SIGKILL after 3 s; resolves once the process is gone. */
  stop(): Promise<void>;
  /** SIGSTOP: the port still accepts connections, nothing answers (a hung key store). */
  pause(): void;
  /** SIGCONT. */
  resume(): void;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    // Detached: the child leads its own process group, so this reaches it and nothing else.
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of live) {
      killGroup(child, 'SIGCONT');
      killGroup(child, 'SIGKILL');
    }
  });
}

async function waitUntilAnswering(endpoint: string, child: ChildProcess, timeoutMs: number, log: () => string): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`moto_server exited (${child.exitCode ?? child.signalCode}) before answering:\n${log()}`);
    }
    try {
      const res = await fetch(`${endpoint}/moto-api/`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      return;
    } catch {
      // not yet
    }
    if (Date.now() > until) throw new Error(`moto_server did not answer on ${endpoint} within ${timeoutMs} ms:\n${log()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function startMoto(options: { bin?: string; port?: number; startTimeoutMs?: number } = {}): Promise<MotoServer> {
  const bin = options.bin ?? findMotoServer();
  if (!bin) throw new Error('moto_server not found on PATH');
  const port = options.port ?? (await freeLoopbackPort());
  const endpoint = `http://127.0.0.1:${port}`;
  const startTimeoutMs = options.startTimeoutMs ?? 30_000;
  let child: ChildProcess | undefined;
  let output = '';
  installExitHook();

  const server: MotoServer = {
    bin,
    port,
    endpoint,
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    async start() {
      if (server.running) return;
      output = '';
      const env: NodeJS.ProcessEnv = { ...process.env };
      // moto itself needs no credentials; keep any real ones away from it.
      for (const k of Object.keys(env)) if (k.startsWith('AWS_')) delete env[k];
      const c = spawn(bin, ['-H', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env });
      child = c;
      live.add(c);
      c.once('exit', () => live.delete(c));
      const keep = (b: Buffer) => {
        output = (output + b.toString('utf8')).slice(-4000);
      };
      c.stdout?.on('data', keep);
      c.stderr?.on('data', keep);
      try {
        await waitUntilAnswering(endpoint, c, startTimeoutMs, () => output);
      } catch (err) {
        killGroup(c, 'SIGKILL');
        throw err;
      }
    },
    async stop() {
      const c = child;
      if (!c || c.exitCode !== null || c.signalCode !== null) return;
      const exited = new Promise<void>((r) => c.once('exit', () => r()));
      killGroup(c, 'SIGCONT');
      killGroup(c, 'SIGTERM');
      const timer = setTimeout(() => killGroup(c, 'SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    },
    pause() {
      if (child) killGroup(child, 'SIGSTOP');
    },
    resume() {
      if (child) killGroup(child, 'SIGCONT');
    },
  };
  await server.start();
  return server;
}
