// The daemon's control socket: a Unix socket only its owner can connect to, answering ROUTES.
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import type { Logger } from '../engine/index.js';
import { ErrorCode, MountdError, isMountdError } from '../errors/index.js';
import { ControlErrorCode, MAX_REQUEST_BYTES, PROTOCOL_VERSION, type ControlErrorBody, type ControlResponse } from './protocol.js';
import { findRoute, type Route } from './routes.js';
import type { DaemonContext } from './types.js';

export interface ControlServer {
  socketPath: string;
  close(): Promise<void>;
}

/** sun_path is 108 bytes on Linux, NUL included. */
const MAX_SOCKET_PATH = 107;
const IDLE_TIMEOUT_MS = 5 * 60_000;

class BadRequest extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Who may connect: Node cannot read SO_PEERCRED, so the guard is the file system. The socket
 * is created 0600 (under a umask, so there is no moment it is more open) in a directory that
 * is 0700 when the daemon creates it (DATA/.mountd by default); connecting to a Unix socket
 * needs write permission on it, so only its owner (and root) get in.
 */
export async function startControlServer(ctx: DaemonContext, socketPath: string, log: Logger): Promise<ControlServer> {
  const sock = path.resolve(socketPath);
  if (Buffer.byteLength(sock) > MAX_SOCKET_PATH) {
    throw new MountdError(ErrorCode.InvalidArgument, `control socket path is longer than ${MAX_SOCKET_PATH} bytes: ${sock}`);
  }
  await prepareDirectory(path.dirname(sock), log);
  await removeStaleSocket(sock);

  const connections = new Set<net.Socket>();
  const server = net.createServer((conn) => serve(conn, ctx, log, connections));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // The umask is process-wide: it is narrowed only around listen(), which binds synchronously.
    const oldMask = process.umask(0o177);
    try {
      server.listen(sock, () => {
        server.off('error', reject);
        resolve();
      });
    } finally {
      process.umask(oldMask);
    }
  });
  await fsp.chmod(sock, 0o600);
  server.on('error', (err) => log.error(`control socket: ${err.message}`));

  let closing: Promise<void> | undefined;
  return {
    socketPath: sock,
    close: () =>
      (closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          for (const c of connections) c.destroy();
        });
        await fsp.rm(sock, { force: true });
      })()),
  };
}

async function prepareDirectory(dir: string, log: Logger): Promise<void> {
  const created = await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  if (created) return;
  const st = await fsp.stat(dir);
  // Anyone who can write the directory can swap the socket for their own (unless it is sticky, like /tmp).
  if ((st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0) {
    throw new MountdError(ErrorCode.PermissionDenied, `control socket directory ${dir} is writable by others (mode ${(st.mode & 0o7777).toString(8)}); use a 0700 directory`);
  }
  if ((st.mode & 0o077) !== 0) log.warn(`control socket directory ${dir} is mode ${(st.mode & 0o7777).toString(8)}; the socket itself is 0600`);
}

/** A socket file left by a daemon that died is removed; a live daemon's is not touched. */
async function removeStaleSocket(sock: string): Promise<void> {
  const st = await fsp.lstat(sock).catch(() => null);
  if (!st) return;
  if (!st.isSocket()) throw new MountdError(ErrorCode.Exists, `${sock} exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(sock);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) throw new MountdError(ErrorCode.Busy, `another daemon is answering on ${sock}`);
  await fsp.rm(sock, { force: true });
}

function serve(conn: net.Socket, ctx: DaemonContext, log: Logger, connections: Set<net.Socket>): void {
  connections.add(conn);
  conn.on('close', () => connections.delete(conn));
  conn.on('error', () => undefined);
  conn.setTimeout(IDLE_TIMEOUT_MS, () => conn.destroy());
  let buffered = '';
  // Requests on one connection are answered in order.
  let queue: Promise<void> = Promise.resolve();
  conn.setEncoding('utf8');
  conn.on('data', (chunk: string) => {
    buffered += chunk;
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line.trim() === '') continue;
      queue = queue.then(() => answer(conn, line, ctx, log));
    }
    if (Buffer.byteLength(buffered) > MAX_REQUEST_BYTES) {
      const body: ControlErrorBody = { code: ControlErrorCode.BadRequest, message: `request longer than ${MAX_REQUEST_BYTES} bytes` };
      conn.end(JSON.stringify({ v: PROTOCOL_VERSION, ok: false, error: body } satisfies ControlResponse) + '\n');
      buffered = '';
    }
  });
}

async function answer(conn: net.Socket, line: string, ctx: DaemonContext, log: Logger): Promise<void> {
  let id: number | string | undefined;
  let route: Route | undefined;
  let response: ControlResponse;
  try {
    const req = parseRequest(line, (given) => (id = given));
    route = req.route;
    const abort = new AbortController();
    const onClose = () => abort.abort();
    conn.once('close', onClose);
    const io = {
      signal: abort.signal,
      progress: (p: unknown) => {
        if (!conn.destroyed) conn.write(JSON.stringify({ v: PROTOCOL_VERSION, id, progress: p }) + '\n');
      },
    };
    let result: unknown;
    try {
      result = await withTimeout(route.handler(ctx, req.args, io), route.timeoutMs, route.command);
    } finally {
      conn.off('close', onClose);
    }
    response = { v: PROTOCOL_VERSION, id, ok: true, result };
    if (route.command !== 'status' && route.command !== 'key.list' && route.command !== 'stat') log.info(`control: ${route.command}${describeArgs(req.args)}`);
  } catch (err) {
    response = { v: PROTOCOL_VERSION, id, ok: false, error: errorBody(err, route?.command ?? 'request', log) };
  }
  if (conn.destroyed) return;
  const after = response.ok ? route?.after : undefined;
  conn.write(JSON.stringify(response) + '\n', () => after?.(ctx));
}

/** Validates a request line; `onId` learns the request's id first, so even a refusal carries it. */
function parseRequest(line: string, onId: (id: number | string | undefined) => void): { route: Route; args: Record<string, unknown> } {
  let req: unknown;
  try {
    req = JSON.parse(line);
  } catch {
    throw new BadRequest(ControlErrorCode.BadRequest, 'request is not JSON');
  }
  if (typeof req !== 'object' || req === null || Array.isArray(req)) throw new BadRequest(ControlErrorCode.BadRequest, 'request must be a JSON object');
  const { v, id, command, args = {} } = req as Record<string, unknown>;
  onId(typeof id === 'number' || typeof id === 'string' ? id : undefined);
  if (v !== undefined && v !== PROTOCOL_VERSION) throw new BadRequest(ControlErrorCode.BadRequest, `protocol version ${String(v)} is not ${PROTOCOL_VERSION}`);
  if (typeof command !== 'string') throw new BadRequest(ControlErrorCode.BadRequest, 'request has no command');
  const route = findRoute(command);
  if (!route) throw new BadRequest(ControlErrorCode.UnknownCommand, `unknown command ${JSON.stringify(command)}`);
  if (typeof args !== 'object' || args === null || Array.isArray(args)) throw new BadRequest(ControlErrorCode.BadRequest, 'args must be an object');
  const given = args as Record<string, unknown>;
  for (const k of Object.keys(given)) {
    if (!(k in route.args)) throw new BadRequest(ControlErrorCode.BadRequest, `${command}: unknown argument ${JSON.stringify(k)}`);
  }
  for (const [k, spec] of Object.entries(route.args)) {
    const value = given[k];
    if (value === undefined) {
      if (spec.required) throw new BadRequest(ControlErrorCode.BadRequest, `${command}: missing argument ${k}`);
    } else if (typeof value !== spec.type) {
      throw new BadRequest(ControlErrorCode.BadRequest, `${command}: argument ${k} must be a ${spec.type}`);
    }
  }
  return { route, args: given };
}

function errorBody(err: unknown, command: string, log: Logger): ControlErrorBody {
  if (err instanceof BadRequest) return { code: err.code, message: err.message };
  if (isMountdError(err)) {
    if (err.code === ErrorCode.Internal) log.error(`control: ${command}: ${err.message}${err.cause instanceof Error ? ` (${err.cause.message})` : ''}`);
    return { code: err.code, message: err.message };
  }
  // Unknown failures are logged in full; the client gets a generic message.
  log.error(`control: ${command}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  return { code: ErrorCode.Internal, message: `${command} failed; see the daemon's log` };
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new BadRequest(ControlErrorCode.Timeout, `${what} did not finish within ${ms / 1000} s (it may still complete)`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function describeArgs(args: Record<string, unknown>): string {
  const parts = Object.entries(args).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  return parts.length > 0 ? ` ${parts.join(' ')}` : '';
}
