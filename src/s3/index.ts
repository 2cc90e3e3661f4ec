// The S3 listener: node:http server, addressing, SigV4, routing through the route table, error documents.
import { randomBytes } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Engine, Logger } from '../engine/index.js';
import type { S3Context, ServerConfig } from './context.js';
import { S3Error, engineToS3, internalError, s3err } from './errors.js';
import { matchRoute, type Target } from './routes.js';
import { SigV4Verifier, decodeComponent, parseQuery } from './sigv4.js';
import { buildXml, xmlSafe } from './xml.js';

export interface S3Options {
  host: string;
  port: number;
  credentials: { accessKeyId: string; secretAccessKey: string };
  region: string;
  log: Logger;
  /** Accept SSE-C over plain HTTP on a non-loopback address. */
  allowInsecureSsec?: boolean;
  /** Create SSE-KMS keys that do not exist yet instead of answering kms:KeyNotFound (default false). */
  autoCreateKeys?: boolean;
  /** Domains for virtual-host-style addressing: Host "BUCKET.DOMAIN" (default ["localhost"]). */
  domains?: string[];
  /** Largest request head Node accepts (bytes; default 8 KiB, as S3 allows): larger gets 431. */
  maxHeaderSize?: number;
  /** Clock for signature dates (tests). */
  now?: () => number;
}

export interface S3Server {
  /** "host:port" actually bound (port 0 picks a free one). */
  address: string;
  close(): Promise<void>;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** Bucket and key from a virtual host ("BUCKET.DOMAIN") or the path ("/BUCKET/KEY"). */
export function addressOf(hostHeader: string | undefined, rawPath: string, domains: readonly string[]): { bucket: string; key: string } {
  const host = (hostHeader ?? '').toLowerCase().replace(/:\d+$/, '');
  const path = decodeComponent(rawPath, false);
  for (const d of domains) {
    if (host.endsWith(`.${d}`) && host.length > d.length + 1) return { bucket: host.slice(0, -(d.length + 1)), key: path.slice(1) };
  }
  const rest = path.slice(1);
  const slash = rest.indexOf('/');
  return slash < 0 ? { bucket: rest, key: '' } : { bucket: rest.slice(0, slash), key: rest.slice(slash + 1) };
}

const MAX_DRAIN_BYTES = 1024 * 1024;

/** Reads and discards the rest of a request body; false if it is too large, too slow or broken. */
function drain(req: http.IncomingMessage, limit: number, timeoutMs: number): Promise<boolean> {
  if (req.complete) return Promise.resolve(true);
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (!(declared <= limit)) return Promise.resolve(false);
  return new Promise((resolve) => {
    let n = 0;
    const done = (ok: boolean) => {
      clearTimeout(timer);
      req.off('data', onData).off('end', onEnd).off('error', onFail).off('close', onFail);
      resolve(ok);
    };
    const onData = (c: Buffer) => {
      n += c.length;
      if (n > limit) done(false);
    };
    const onEnd = () => done(true);
    const onFail = () => done(req.complete);
    const timer = setTimeout(() => done(false), timeoutMs);
    req.on('data', onData).on('end', onEnd).on('error', onFail).on('close', onFail);
    req.resume();
  });
}

function hasPendingBody(req: http.IncomingMessage): boolean {
  const len = req.headers['content-length'];
  return (len !== undefined && len !== '0') || req.headers['transfer-encoding'] !== undefined;
}

export async function startS3Server(engine: Engine, opts: S3Options): Promise<S3Server> {
  const verifier = new SigV4Verifier(opts.credentials, opts.region, opts.now);
  const domains = opts.domains ?? ['localhost'];
  const config: ServerConfig = {
    region: opts.region,
    log: opts.log,
    sse: { ssecAllowed: isLoopback(opts.host) || opts.allowInsecureSsec === true, autoCreateKeys: opts.autoCreateKeys === true },
    owner: { ID: 'mountd', DisplayName: 'mountd' },
  };

  async function handle(req: http.IncomingMessage, res: http.ServerResponse, expectContinue: boolean): Promise<void> {
    const id = randomBytes(8).toString('hex').toUpperCase();
    res.setHeader('x-amz-request-id', id);
    res.setHeader('Server', 'mountd');
    let continueSent = !expectContinue;
    const partial: Partial<S3Context> & Pick<S3Context, 'req' | 'res' | 'bodyDone' | 'sendContinue'> = {
      req,
      res,
      id,
      bucket: '',
      key: '',
      bodyDone: false,
      sendContinue() {
        if (!continueSent) {
          continueSent = true;
          res.writeContinue();
        }
      },
    };
    let ctx: S3Context | undefined;
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const rawPath = q < 0 ? rawUrl : rawUrl.slice(0, q);
    try {
      if (!rawPath.startsWith('/')) throw new S3Error('InvalidURI', 400, 'Couldn\'t parse the specified URI.');
      const rawQuery = q < 0 ? '' : rawUrl.slice(q + 1);
      const pairs = parseQuery(rawQuery);
      const { bucket, key } = addressOf(req.headers.host, rawPath, domains);
      partial.bucket = bucket;
      partial.key = key;
      const auth = verifier.verify(req, { rawPath, rawQuery }, pairs);
      const query = new Map<string, string>();
      for (const [n, v] of pairs) if (!query.has(n)) query.set(n, v);
      const target: Target = bucket === '' ? 'service' : key === '' ? 'bucket' : 'object';
      const route = matchRoute(req.method ?? '', target, query, req.headers['x-amz-copy-source'] !== undefined);
      // Versioning is off: an object's one version is "null"; any other id names nothing, and
      // must not read, overwrite the tags of, or delete the current object.
      const versionId = query.get('versionId');
      if (target === 'object' && versionId !== undefined && versionId !== 'null') throw s3err.invalidArgument('Invalid version id specified', 'versionId', versionId);
      ctx = { req, res, id, auth, engine, config, bucket, key, query, bodyDone: false, sendContinue: partial.sendContinue };
      await route.handler(ctx, route.bodyLimit);
    } catch (err) {
      await sendError(req, res, id, rawPath, ctx ?? partial, err, !continueSent);
    }
  }

  async function sendError(req: http.IncomingMessage, res: http.ServerResponse, id: string, rawPath: string, ctx: Partial<S3Context>, err: unknown, awaitingContinue: boolean): Promise<void> {
    let s3 = engineToS3(err, { resource: ctx.key ? 'object' : 'bucket', key: ctx.key });
    if (!s3) {
      opts.log.error(`S3 request ${id} ${req.method} ${rawPath}: ${(err as Error)?.stack ?? String(err)}`);
      s3 = internalError();
    } else if (s3.status >= 500) {
      const cause = err instanceof Error && err !== s3 ? `: ${err.message}` : '';
      opts.log.warn(`S3 request ${id} ${req.method} ${rawPath}: ${s3.code}${cause}`);
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    // A body we did not read: a small one is read and dropped so that the connection stays
    // usable; a large one (or one the client holds back for a 100 Continue) closes it.
    if (!ctx.bodyDone && hasPendingBody(req) && (awaitingContinue || !(await drain(req, MAX_DRAIN_BYTES, 5000)))) {
      res.setHeader('Connection', 'close');
    }
    if (res.headersSent || res.destroyed) return;
    // A response that failed half-way (writeHead throws on the first value HTTP cannot carry,
    // after setting the ones before it) must not lend the object's headers to the error:
    // Cache-Control/Expires would make the error cacheable, Content-Encoding would label the XML gzip.
    for (const name of res.getHeaderNames()) if (name !== 'x-amz-request-id' && name !== 'server' && name !== 'connection') res.removeHeader(name);
    res.statusCode = s3.status;
    if (s3.status === 416 && s3.fields.ActualObjectSize !== undefined) res.setHeader('Content-Range', `bytes */${s3.fields.ActualObjectSize}`);
    if (req.method === 'HEAD') {
      res.setHeader('Content-Length', 0);
      res.end();
      return;
    }
    const fields: Record<string, string | undefined> = {
      Code: s3.code,
      Message: s3.message,
      ...s3.fields,
      BucketName: ctx.bucket || undefined,
      Key: ctx.key || undefined,
      Resource: rawPath,
      RequestId: id,
      HostId: id,
    };
    // Messages and fields echo what the client sent (a key, an argument): keep the document well-formed.
    for (const [n, v] of Object.entries(fields)) if (v !== undefined) fields[n] = xmlSafe(v);
    const body = buildXml('Error', fields, false);
    res.setHeader('Content-Type', 'application/xml');
    res.setHeader('Content-Length', Buffer.byteLength(body));
    res.end(body);
  }

  // An idle kept-alive connection is closed after 65 s, not Node's 5 s: SDK clients keep theirs
  // with no timeout of their own, and one that sends on a connection just as the server closes
  // it gets "socket hang up" (seen once in the benchmark, whose 16 connections idled for ~6 s
  // while one client streamed 1 GiB). 65 s outlasts the usual pauses of a client, as load
  // balancers' 60 s idle timeouts do.
  const server = http.createServer(
    { maxHeaderSize: opts.maxHeaderSize ?? 8 * 1024, requestTimeout: 0, headersTimeout: 30_000, keepAliveTimeout: 65_000 },
    (req, res) => void handle(req, res, false),
  );
  // Expect: 100-continue: authenticate and route first; the body is asked for only when a handler reads it.
  server.on('checkContinue', (req, res) => void handle(req, res, true));
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (!socket.writable || (err.code === 'ECONNRESET' && !socket.bytesWritten)) {
      socket.destroy();
      return;
    }
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  });
  // A client that stops sending mid-request is dropped after two idle minutes.
  server.setTimeout(120_000);

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  return {
    address: `${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), 2000).unref();
      });
    },
  };
}
