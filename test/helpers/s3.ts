// Test fixtures for the S3 listener: an in-process server over a temp engine, requests signed by an independent SigV4 (@smithy/signature-v4), raw sockets and CLI runners.
import { execFile } from 'node:child_process';
import { createHash, createHmac } from 'node:crypto';
import * as http from 'node:http';
import * as net from 'node:net';
import { SignatureV4 } from '@smithy/signature-v4';
import { startS3Server, type S3Options, type S3Server } from '../../src/s3/index.js';
import { makeFixture, type Fixture } from './engine.js';

export const CREDS = { accessKeyId: 'mountdadmin', secretAccessKey: 'mountdadmin' };
export const REGION = 'us-east-1';

class NodeSha256 {
  private h;
  constructor(secret?: Uint8Array | string) {
    this.h = secret ? createHmac('sha256', secret) : createHash('sha256');
  }
  update(d: Uint8Array | string) {
    this.h.update(d);
  }
  async digest() {
    return new Uint8Array(this.h.digest());
  }
  reset() {}
}

export function signer(creds = CREDS, region = REGION): SignatureV4 {
  return new SignatureV4({ service: 's3', region, credentials: creds, sha256: NodeSha256 as never, uriEscapePath: false, applyChecksum: false });
}

export interface InProcess {
  fx: Fixture;
  server: S3Server;
  port: number;
  close(): Promise<void>;
}

export async function startInProcess(opts: Partial<S3Options> = {}): Promise<InProcess> {
  const fx = await makeFixture();
  const lines: string[] = [];
  const log = { info: (m: string) => lines.push(m), warn: (m: string) => lines.push(m), error: (m: string) => lines.push(m) };
  const server = await startS3Server(fx.engine, { host: '127.0.0.1', port: 0, credentials: CREDS, region: REGION, log, ...opts });
  const port = Number(server.address.split(':').pop());
  return {
    fx,
    server,
    port,
    async close() {
      await server.close();
      await fx.cleanup();
    },
  };
}

export interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  text: string;
}

export interface RequestSpec {
  method: string;
  /** Percent-encoded path, as it goes on the wire. */
  path: string;
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: Buffer | string;
  /** 'header' (default): Authorization header; 'presign': query; 'none': unsigned. */
  sign?: 'header' | 'presign' | 'none';
  /** x-amz-content-sha256 for header signing (default: the body's SHA-256). */
  payloadHash?: string;
  signingDate?: Date;
  creds?: typeof CREDS;
  /** Send only the headers and wait for "100 Continue" before the body. */
  expectContinue?: boolean;
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Builds and signs a request; returns what goes on the wire. */
export async function signRequest(port: number, spec: RequestSpec): Promise<{ path: string; headers: Record<string, string> }> {
  const body = spec.body === undefined ? Buffer.alloc(0) : Buffer.from(spec.body);
  const headers: Record<string, string> = { host: `127.0.0.1:${port}`, ...(spec.headers ?? {}) };
  const query = { ...(spec.query ?? {}) };
  const mode = spec.sign ?? 'header';
  const req = { method: spec.method, protocol: 'http:', hostname: '127.0.0.1', port, path: spec.path, query, headers };
  let outHeaders = headers;
  let outQuery: Record<string, string | string[] | null> = query;
  if (mode === 'header') {
    if (!Object.keys(headers).some((h) => h.toLowerCase() === 'x-amz-content-sha256')) headers['x-amz-content-sha256'] = spec.payloadHash ?? sha256(body);
    const signed = await signer(spec.creds).sign(req as never, { signingDate: spec.signingDate });
    outHeaders = (signed as unknown as { headers: Record<string, string> }).headers;
  } else if (mode === 'presign') {
    // As the AWS SDKs presign for S3: the payload is not signed.
    const signed = await signer(spec.creds).presign({ ...req, headers: { ...headers, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } } as never, { expiresIn: 300, signingDate: spec.signingDate });
    outQuery = signed.query as Record<string, string>;
  }
  const qs = Object.entries(outQuery)
    .map(([k, v]) => (v === null ? encodeURIComponent(k) : `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`))
    .join('&');
  return { path: qs ? `${spec.path}?${qs}` : spec.path, headers: outHeaders };
}

export async function s3request(port: number, spec: RequestSpec): Promise<Response> {
  const body = spec.body === undefined ? Buffer.alloc(0) : Buffer.from(spec.body);
  const { path, headers } = await signRequest(port, spec);
  return new Promise((resolve, reject) => {
    const extra: Record<string, string> = spec.expectContinue ? { expect: '100-continue' } : {};
    if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-length')) extra['content-length'] = String(body.length);
    const req = http.request({ host: '127.0.0.1', port, method: spec.method, path, headers: { ...headers, ...extra }, agent: false });
    let answered = false;
    req.on('response', (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const b = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: b, text: b.toString('utf8') });
      });
      res.on('error', reject);
    });
    // A server that refuses a large body answers and closes without reading the rest (as S3
    // does): the write of the rest may fail (EPIPE, ECONNRESET) just before the answer is read.
    // Give the answer a moment to arrive before calling it a failure.
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (answered) return;
      if (err.code === 'EPIPE' || err.code === 'ECONNRESET') setTimeout(() => reject(err), 1000);
      else reject(err);
    });
    if (spec.expectContinue) req.on('continue', () => req.end(body));
    else req.end(body);
  });
}

/** The <Code> of an S3 error document. */
export function errorCode(r: Response): string | undefined {
  return /<Code>([^<]*)<\/Code>/.exec(r.text)?.[1];
}

/** Writes raw bytes on a fresh connection and returns everything the server sent before closing (or `waitMs`). */
export async function rawExchange(port: number, data: Buffer | string, waitMs = 2000, endWrite = false): Promise<string> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const done = () => {
      clearTimeout(timer);
      sock.destroy();
      resolve(Buffer.concat(chunks).toString('latin1'));
    };
    const timer = setTimeout(done, waitMs);
    sock.on('data', (c) => chunks.push(c));
    sock.on('close', done);
    sock.on('error', done);
    sock.write(data, () => {
      if (endWrite) sock.end();
    });
  });
}

/** SigV4 chunk signatures, as the AWS docs define them (for hand-made aws-chunked bodies). */
export function chunkSignature(key: Buffer, amzDate: string, scope: string, prev: string, data: Buffer): string {
  const sts = ['AWS4-HMAC-SHA256-PAYLOAD', amzDate, scope, prev, sha256(''), sha256(data)].join('\n');
  return createHmac('sha256', key).update(sts).digest('hex');
}

export function signingKey(secret: string, date: string, region = REGION): Buffer {
  const h = (k: Buffer | string, d: string) => createHmac('sha256', k).update(d).digest();
  return h(h(h(h(`AWS4${secret}`, date), region), 's3'), 'aws4_request');
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: string[], opts: { env?: Record<string, string | undefined>; timeoutMs?: number; cwd?: string } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { ...process.env, ...opts.env } as NodeJS.ProcessEnv, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024, cwd: opts.cwd }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as NodeJS.ErrnoException).code === 'number' ? ((err as unknown as { code: number }).code) : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** Environment for the aws CLI against a local listener, isolated from any user configuration. */
export function awsEnv(extra: Record<string, string> = {}): Record<string, string | undefined> {
  return {
    AWS_ACCESS_KEY_ID: CREDS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey,
    AWS_DEFAULT_REGION: REGION,
    AWS_CONFIG_FILE: '/dev/null',
    AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_CA_BUNDLE: undefined,
    AWS_PAGER: '',
    ...extra,
  };
}
