// Test fixture: a real kesd child process (node --import tsx src/cli/kesd.ts) on a free
// 127.0.0.1 port with a temp config written by initKesd, plus a raw HTTPS request helper.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initKesd } from '../../src/kes/config.js';
import { certificateForApiKey } from '../../src/kes/identity.js';
import { freePort } from './daemon.js';
import { tempDir } from './engine.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const KESD = path.join(ROOT, 'src/cli/kesd.ts');

export interface KesdOptions {
  keystore?: 'fs' | 'mem';
  /** Policies added to the generated config (the example "mountd" policy stays). */
  policies?: Record<string, { allow?: string[]; deny?: string[]; identities?: string[] }>;
  /** The config's "api" section. */
  api?: Record<string, { timeout?: string; skip_auth?: boolean }>;
  /** Audit log target (default: a file in the config directory). */
  audit?: 'file' | 'stderr' | 'off';
  /** Milliseconds to wait for readiness (default 20 s). */
  timeoutMs?: number;
}

export interface Kesd {
  dir: string;
  configFile: string;
  port: number;
  /** https://127.0.0.1:PORT */
  endpoint: string;
  adminApiKey: string;
  adminIdentity: string;
  /** The server's self-signed certificate: the CA clients trust. */
  caPem: string;
  certFile: string;
  auditFile: string;
  proc(): ChildProcess | undefined;
  /** Everything every kesd run wrote to stderr and stdout so far. */
  log(): string;
  running(): boolean;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait for exit. */
  kill(): Promise<void>;
  /** Starts again on the same port and directory, and waits until ready. */
  start(): Promise<void>;
  restart(): Promise<void>;
  /** Kills the process and removes the directory. */
  cleanup(): Promise<void>;
}

export { freePort } from './daemon.js';
export { tempDir } from './engine.js';

export async function startKesd(opts: KesdOptions = {}): Promise<Kesd> {
  const dir = await tempDir('kesd-test');
  const port = await freePort();
  const init = await initKesd(path.join(dir, 'kesd'), { address: `127.0.0.1:${port}`, keystore: opts.keystore ?? 'fs' });
  const doc = JSON.parse(await fsp.readFile(init.configFile, 'utf8')) as Record<string, any>;
  Object.assign(doc.policy, opts.policies ?? {});
  if (opts.api) doc.api = opts.api;
  if (opts.audit === 'stderr' || opts.audit === 'off') doc.log.audit = opts.audit;
  await fsp.writeFile(init.configFile, `${JSON.stringify(doc, null, 2)}\n`);
  const caPem = await fsp.readFile(init.certFile, 'utf8');

  let proc: ChildProcess | undefined;
  let exited: Promise<number | null> = Promise.resolve(null);
  let output = '';

  const start = async () => {
    if (proc && proc.exitCode === null && proc.signalCode === null) throw new Error('kesd is already running');
    const child = spawn(process.execPath, ['--import', 'tsx', KESD, '--config', init.configFile], {
      cwd: ROOT,
      env: { ...process.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc = child;
    let mine = '';
    const collect = (d: Buffer) => {
      mine += d.toString();
      output += d.toString();
    };
    child.stderr!.on('data', collect);
    child.stdout!.on('data', collect);
    exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`kesd did not become ready:\n${mine}`)), opts.timeoutMs ?? 20_000);
      const check = () => {
        if (/ kesd info ready\n/.test(mine)) {
          clearTimeout(timer);
          child.stderr!.off('data', check);
          resolve();
        }
      };
      child.stderr!.on('data', check);
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`kesd exited with ${code} before ready:\n${mine}`));
      });
    });
    // Ready means listening; prove it answers an authenticated request too.
    const res = await kesRequest({ endpoint: `https://127.0.0.1:${port}`, ca: caPem, apiKey: init.adminApiKey }, 'GET', '/v1/ready');
    if (res.status !== 200) throw new Error(`kesd /v1/ready answered ${res.status}: ${res.text()}`);
  };

  const running = () => proc !== undefined && proc.exitCode === null && proc.signalCode === null;
  const kesd: Kesd = {
    dir,
    configFile: init.configFile,
    port,
    endpoint: `https://127.0.0.1:${port}`,
    adminApiKey: init.adminApiKey,
    adminIdentity: init.adminIdentity,
    caPem,
    certFile: init.certFile,
    auditFile: init.auditFile,
    proc: () => proc,
    log: () => output,
    running,
    async stop() {
      if (!running()) return proc?.exitCode ?? null;
      proc!.kill('SIGTERM');
      return exited;
    },
    async kill() {
      if (!running()) return;
      proc!.kill('SIGKILL');
      await exited;
    },
    start,
    async restart() {
      await kesd.stop();
      await start();
    },
    async cleanup() {
      await kesd.kill();
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
  try {
    await start();
  } catch (err) {
    await kesd.cleanup();
    throw err;
  }
  return kesd;
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text(): string;
  json(): any;
}

export interface Credentials {
  endpoint: string;
  ca: string;
  /** A kes:v1: API key, or a PEM certificate and key; neither: no client certificate. */
  apiKey?: string;
  cert?: string;
  key?: string;
}

/**
 * One HTTPS request on a fresh connection (no pooling, so every request does its own
 * handshake with exactly the credentials given). `body` may be an object (sent as JSON),
 * a Buffer or a string.
 */
export function kesRequest(
  creds: Credentials,
  method: string,
  requestPath: string,
  body?: unknown,
  options: { chunked?: boolean; headers?: Record<string, string> } = {},
): Promise<RawResponse> {
  const url = new URL(creds.endpoint);
  let cert = creds.cert;
  let key = creds.key;
  if (creds.apiKey) ({ cert, key } = certificateForApiKey(creds.apiKey));
  const payload =
    body === undefined ? undefined : Buffer.isBuffer(body) ? body : typeof body === 'string' ? Buffer.from(body) : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { ...options.headers };
    if (payload && !options.chunked) headers['Content-Length'] = payload.length;
    if (payload) headers['Content-Type'] = 'application/json';
    const req = httpsRequest(
      {
        hostname: url.hostname,
        port: url.port,
        method,
        path: requestPath,
        ca: creds.ca,
        ...(cert && key ? { cert, key } : {}),
        agent: false,
        headers,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const buf = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: buf,
            text: () => buf.toString('utf8'),
            json: () => JSON.parse(buf.toString('utf8')),
          });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (payload && options.chunked) {
      // Several writes without a Content-Length: Node sends Transfer-Encoding: chunked.
      const step = 64 * 1024;
      for (let off = 0; off < payload.length; off += step) req.write(payload.subarray(off, off + step));
      req.end();
    } else {
      req.end(payload);
    }
  });
}
