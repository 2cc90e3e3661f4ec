// kesd's HTTPS server: mTLS identities, policies, body limits, per-route timeouts, audit log,
// metrics, and KES error bodies around the route table.

import { createServer } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus } from 'node:os';
import type { TLSSocket } from 'node:tls';
import type { KeyServer } from '../KeyServer.js';
import type { Keystore } from '../keystore.js';
import { identityOfCertificate } from '../identity.js';
import type { PolicySet } from '../policy.js';
import type { AuditSink } from './audit.js';
import { HttpError, KesMessage, errorBody, toHttpError } from './errors.js';
import { MAX_BODY, ROUTES, describeRoutes, matchRoute } from './routes.js';
import type { HttpMethod, Reply, Route, RouteDeps } from './routes.js';

export interface RouteOverride {
  /** Replaces the route's timeout. */
  timeoutMs?: number;
  /** Serve without authentication. Only for /v1/ready, /v1/status, /v1/metrics and /v1/api. */
  skipAuth?: boolean;
}

export type KesLogLevel = 'info' | 'warn' | 'error';

export interface KesServerOptions {
  keys: KeyServer;
  /** The keystore behind `keys`: probed by /v1/status and /v1/ready, listed by /v1/key/list. */
  keystore: Keystore;
  policies: PolicySet;
  tls: {
    key: string | Buffer;
    cert: string | Buffer;
    /** When set, client certificates must also chain to one of these CAs. */
    clientCa?: string | Buffer;
  };
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 7373; 0 picks a free port. */
  port?: number;
  audit?: AuditSink;
  log?: (level: KesLogLevel, message: string) => void;
  /** Per-route overrides keyed by the route's path in the table, e.g. "/v1/key/generate/". */
  api?: Readonly<Record<string, RouteOverride>>;
  version?: string;
  commit?: string;
  /** The route table (tests only); default ROUTES. */
  routes?: readonly Route[];
}

export interface KesServer {
  readonly host: string;
  readonly port: number;
  /** https://HOST:PORT */
  readonly url: string;
  /** The effective route table, overrides applied. */
  readonly routes: readonly Route[];
  /** Stops accepting connections; open requests get `graceMs` (default 2000) to finish. */
  close(graceMs?: number): Promise<void>;
}

const SKIPPABLE = new Set(['/v1/ready', '/v1/status', '/v1/metrics', '/v1/api']);
/** Bodies sent to routes that read none are drained up to this size, and refused above it. */
const MAX_IGNORED_BODY = MAX_BODY;
/** A refused body up to this size is read and discarded rather than cut off mid-send. */
const MAX_DRAIN = 8 * MAX_BODY;
const BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 3, 5, 10];

export function applyOverrides(routes: readonly Route[], api: Readonly<Record<string, RouteOverride>> = {}): Route[] {
  const known = new Set(routes.map((r) => r.path));
  for (const [path, o] of Object.entries(api)) {
    if (!known.has(path)) throw new Error(`api: no route ${JSON.stringify(path)}`);
    if (o.skipAuth && !SKIPPABLE.has(path)) throw new Error(`api: ${path} always requires authentication`);
    if (o.timeoutMs !== undefined && (!Number.isFinite(o.timeoutMs) || o.timeoutMs <= 0)) {
      throw new Error(`api: ${path}: timeout must be positive`);
    }
  }
  return routes.map((r) => {
    const o = api[r.path];
    if (!o) return r;
    return Object.freeze({
      ...r,
      timeoutMs: o.timeoutMs ?? r.timeoutMs,
      auth: o.skipAuth ? ('none' as const) : r.auth,
    });
  });
}

class Metrics {
  success = 0;
  error = 0;
  failure = 0;
  active = 0;
  auditEvents = 0;
  errorEvents = 0;
  readonly buckets = new Array<number>(BUCKETS.length).fill(0);
  sum = 0;
  count = 0;

  constructor(readonly startedAt: Date) {}

  observe(status: number, seconds: number): void {
    if (status >= 500) this.failure++;
    else if (status >= 400) this.error++;
    else this.success++;
    this.sum += seconds;
    this.count++;
    BUCKETS.forEach((le, i) => {
      if (seconds <= le) this.buckets[i]!++;
    });
  }

  text(): string {
    const lines: string[] = [];
    const metric = (name: string, kind: string, help: string, value: number) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${kind}`, `${name} ${value}`);
    };
    metric('kes_http_request_success', 'counter', 'Number of requests that have been served successfully.', this.success);
    metric('kes_http_request_error', 'counter', 'Number of request that failed due to some error. (HTTP 4xx status code)', this.error);
    metric('kes_http_request_failure', 'counter', 'Number of request that failed due to some internal failure. (HTTP 5xx status code)', this.failure);
    metric('kes_http_request_active', 'gauge', 'Number of active requests that are not finished, yet.', this.active);
    lines.push(
      '# HELP kes_http_response_time Histogram of request response times spawning from start to end of sending the response.',
      '# TYPE kes_http_response_time histogram',
    );
    BUCKETS.forEach((le, i) => lines.push(`kes_http_response_time_bucket{le="${le}"} ${this.buckets[i]}`));
    lines.push(`kes_http_response_time_bucket{le="+Inf"} ${this.count}`);
    lines.push(`kes_http_response_time_sum ${this.sum}`, `kes_http_response_time_count ${this.count}`);
    metric('kes_log_audit_events', 'counter', 'Number of audit log events written to the audit log targets.', this.auditEvents);
    metric('kes_log_error_events', 'counter', 'Number of error log events written to the error log targets.', this.errorEvents);
    metric('kes_system_up_time', 'gauge', 'The time the server has been up and running in seconds.', Math.floor((Date.now() - this.startedAt.getTime()) / 1000));
    metric('kes_system_start_time', 'gauge', 'The point in time when the server has been started in Unix time (seconds).', Math.floor(this.startedAt.getTime() / 1000));
    metric('kes_system_num_cpu', 'gauge', 'The number of logical CPUs available on the system.', cpus().length);
    metric('kes_system_mem_heap_used', 'gauge', 'The number of bytes of heap memory in use.', process.memoryUsage().heapUsed);
    return `${lines.join('\n')}\n`;
  }
}

interface PeerInfo {
  identity: string | undefined;
  /** The certificate chains to the configured client CA (always false without one). */
  trusted: boolean;
}

export async function startKesServer(opts: KesServerOptions): Promise<KesServer> {
  const routes = applyOverrides(opts.routes ?? ROUTES, opts.api);
  const startedAt = new Date();
  const metrics = new Metrics(startedAt);
  const host = opts.host ?? '127.0.0.1';
  const requireTrustedCa = opts.tls.clientCa !== undefined;
  const log = (level: KesLogLevel, msg: string) => {
    if (level === 'error') metrics.errorEvents++;
    opts.log?.(level, msg);
  };
  const deps: RouteDeps = {
    keys: opts.keys,
    keystore: opts.keystore,
    startedAt,
    version: opts.version ?? '0.0.0',
    commit: opts.commit ?? '',
    apiList: () => describeRoutes(routes),
    metricsText: () => metrics.text(),
  };
  const peers = new WeakMap<TLSSocket, PeerInfo>();

  const peerOf = (socket: TLSSocket): PeerInfo => {
    let info = peers.get(socket);
    if (!info) {
      const cert = socket.getPeerX509Certificate();
      let identity: string | undefined;
      try {
        identity = cert ? identityOfCertificate(cert.raw) : undefined;
      } catch {
        identity = undefined;
      }
      info = { identity, trusted: requireTrustedCa && socket.authorized };
      peers.set(socket, info);
    }
    return info;
  };

  const server = createServer(
    {
      key: opts.tls.key,
      cert: opts.tls.cert,
      ...(opts.tls.clientCa !== undefined ? { ca: opts.tls.clientCa } : {}),
      // Ask every client for a certificate but decide ourselves, so that an unknown or
      // missing one gets a KES error body instead of a failed handshake.
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
    },
    (req, res) => {
      void serve(req, res);
    },
  );
  server.headersTimeout = 20_000;
  server.requestTimeout = 60_000;
  server.keepAliveTimeout = 5_000;
  server.on('tlsClientError', () => {
    // A client that fails the handshake never becomes a request; nothing to answer.
  });

  async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t0 = performance.now();
    const time = new Date().toISOString();
    metrics.active++;
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q >= 0 ? url.slice(0, q) : url;
    const method = (req.method ?? 'GET').toUpperCase();
    const socket = req.socket as TLSSocket;
    const peer = peerOf(socket);

    let done = false;
    let allowed = true;
    let route: Route | undefined;
    let resource: string | null = null;
    let timer: NodeJS.Timeout | undefined;
    let body: Buffer = Buffer.alloc(0);

    const finish = (status: number, reply: Reply | undefined, message: string | undefined, headers: Record<string, string> = {}) => {
      if (done) {
        reply?.body?.fill(0);
        return;
      }
      done = true;
      if (timer) clearTimeout(timer);
      const payload = reply?.body ?? (message !== undefined ? errorBody(message) : undefined);
      const contentType = reply?.contentType ?? (message !== undefined ? 'application/json' : undefined);
      const out: Record<string, string | number> = { ...headers, 'Content-Length': payload?.length ?? 0 };
      if (contentType) out['Content-Type'] = contentType;
      const wipe = () => {
        if (reply?.sensitive) payload?.fill(0);
      };
      res.once('close', wipe);
      try {
        res.writeHead(status, out);
        res.end(payload, wipe);
      } catch {
        wipe();
      }
      metrics.active--;
      const seconds = (performance.now() - t0) / 1000;
      metrics.observe(status, seconds);
      if (route && (route.audit || !allowed)) {
        metrics.auditEvents++;
        opts.audit?.write({
          time,
          identity: peer.identity ?? null,
          ip: socket.remoteAddress ?? null,
          method,
          route: route.path,
          key: resource,
          allowed,
          status,
          duration_ms: Math.round(seconds * 1000),
          ...(status >= 400 && message !== undefined ? { error: message } : {}),
        });
      }
    };

    const fail = (err: unknown) => {
      const mapped = toHttpError(err);
      if (mapped.status >= 500) log('error', `${method} ${path}: ${mapped.detail ?? mapped.message}`);
      const headers: Record<string, string> = { ...mapped.headers };
      if (mapped.status === 413) {
        // Let a client that is still sending finish, so that it reads our answer instead of a
        // reset connection; discard what it sends. A huge declared body is not worth that.
        const declared = Number(req.headers['content-length'] ?? 0);
        if (Number.isFinite(declared) && declared > MAX_DRAIN) headers.Connection = 'close';
        else req.resume();
      }
      if (mapped.status === 503) headers.Connection = 'close';
      finish(mapped.status, undefined, mapped.message, headers);
    };

    try {
      const match = matchRoute(routes, path);
      if (!match) throw new HttpError(404, KesMessage.NotFound);
      route = match.route;
      resource = route.resource === 'none' ? null : match.resource;
      if (!route.methods.includes(method as HttpMethod)) {
        throw new HttpError(405, `received method '${method}' expected '${route.methods.join("' or '")}'`, { Allow: route.methods.join(', ') });
      }
      const currentRoute = route;
      timer = setTimeout(() => fail(new HttpError(503, KesMessage.Timeout)), currentRoute.timeoutMs);

      const limit = currentRoute.maxBody > 0 ? currentRoute.maxBody : MAX_IGNORED_BODY;
      const declared = Number(req.headers['content-length'] ?? 0);
      if (Number.isFinite(declared) && declared > limit) throw new HttpError(413, KesMessage.BodyTooLarge);

      if (currentRoute.auth === 'policy') {
        if (peer.identity === undefined) {
          allowed = false;
          throw new HttpError(401, KesMessage.NoCertificate);
        }
        if (requireTrustedCa && !peer.trusted) {
          allowed = false;
          throw new HttpError(401, KesMessage.UntrustedCertificate);
        }
        if (!opts.policies.authorize(peer.identity, path).allowed) {
          allowed = false;
          throw new HttpError(403, KesMessage.NotAuthorized);
        }
      }

      body = await readBody(req, limit);
      if (currentRoute.maxBody === 0) {
        body.fill(0);
        body = Buffer.alloc(0);
      }
      if (done) return;
      const reply = await currentRoute.handler({ method: method as HttpMethod, path, resource: match.resource, identity: peer.identity, body, deps });
      finish(reply.status, reply, undefined);
    } catch (err) {
      fail(err);
    } finally {
      body.fill(0);
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 7373, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;

  return {
    host,
    port,
    url: `https://${urlHost}:${port}`,
    routes,
    close(graceMs = 2000) {
      return new Promise<void>((resolve) => {
        const force = setTimeout(() => server.closeAllConnections(), graceMs);
        force.unref();
        server.close(() => {
          clearTimeout(force);
          resolve();
        });
        server.closeIdleConnections();
      });
    },
  };
}

/** Reads a request body of at most `limit` bytes; 413 beyond. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const wipe = () => {
      for (const c of chunks) c.fill(0);
      chunks.length = 0;
    };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onAborted);
    };
    const onData = (chunk: Buffer) => {
      if (settled) return;
      size += chunk.length;
      if (size > limit) {
        settled = true;
        chunk.fill(0);
        wipe();
        cleanup();
        reject(new HttpError(413, KesMessage.BodyTooLarge));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      if (settled) return;
      settled = true;
      cleanup();
      const out = Buffer.concat(chunks);
      wipe();
      resolve(out);
    };
    const onError = () => {
      if (settled) return;
      settled = true;
      cleanup();
      wipe();
      // The client went away mid-body: nobody reads the answer, and it is not a server failure.
      reject(new HttpError(400, 'request body could not be read'));
    };
    const onAborted = () => onError();
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onAborted);
  });
}
