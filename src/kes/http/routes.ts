// The KES HTTP API v1 as a table of data: method(s), path, body limit, timeout, who may call
// it, whether it is audited, and the handler. test/kesd.test.ts pins this table.

import { availableParallelism, type } from 'node:os';
import type { KeyServer } from '../KeyServer.js';
import type { Keystore } from '../keystore.js';
import { isStrictBase64 } from '../identity.js';
import { MAX_KEY_NAME_LENGTH, isValidKeyName } from '../names.js';
import { HttpError } from './errors.js';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';

/** What a handler sees of a request that passed routing, limits and authorization. */
export interface RouteContext {
  readonly method: HttpMethod;
  /** The request path without its query. */
  readonly path: string;
  /** The part of the path after the route's prefix: a key name, or a list prefix. */
  readonly resource: string;
  /** The caller's identity; undefined only on routes that need none. */
  readonly identity: string | undefined;
  /** The request body (empty when none). The server wipes it after the handler returns. */
  readonly body: Buffer;
  readonly deps: RouteDeps;
}

export interface ApiEntry {
  method: string;
  path: string;
  max_body: number;
  /** Seconds, as KES reports it. */
  timeout: number;
}

export interface RouteDeps {
  keys: KeyServer;
  keystore: Keystore;
  startedAt: Date;
  version: string;
  commit: string;
  apiList(): ApiEntry[];
  metricsText(): string;
}

export interface Reply {
  status: number;
  body?: Buffer;
  contentType?: string;
  /** The body holds key material or plaintext: the server wipes it once sent. */
  sensitive?: boolean;
}

export interface Route {
  /** The first method is the one /v1/api reports. */
  readonly methods: readonly HttpMethod[];
  /** An exact path, or (with `resource`) a prefix ending in '/' that a key name or list prefix follows. */
  readonly path: string;
  readonly resource: 'none' | 'key' | 'prefix';
  /** Largest request body accepted, in bytes; 0: the route reads no body. */
  readonly maxBody: number;
  readonly timeoutMs: number;
  /** 'policy': the caller's identity must be the admin, or its policy must allow the request path. */
  readonly auth: 'none' | 'policy';
  /** Every request is written to the audit log (refused requests to any route are, too). */
  readonly audit: boolean;
  readonly handler: (ctx: RouteContext) => Promise<Reply>;
}

/** 1 MiB, KES's limit for request bodies. */
export const MAX_BODY = 1 << 20;
const KEY_TIMEOUT_MS = 15_000;
const SYSTEM_TIMEOUT_MS = 10_000;

const EMPTY_OK: Reply = { status: 200 };

// ------------------------------------------------------------------ body helpers

function json(value: unknown, status = 200): Reply {
  return { status, body: Buffer.from(`${JSON.stringify(value)}\n`, 'utf8'), contentType: 'application/json' };
}

/** A JSON object from the body; an empty body reads as `{}` where every field is optional. */
function parseObject(ctx: RouteContext, emptyAllowed: boolean): Record<string, unknown> {
  if (ctx.body.length === 0) {
    if (emptyAllowed) return {};
    throw new HttpError(400, 'invalid request body: expected a JSON object');
  }
  let value: unknown;
  try {
    value = JSON.parse(ctx.body.toString('utf8'));
  } catch {
    throw new HttpError(400, 'invalid request body: not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new HttpError(400, 'invalid request body: expected a JSON object');
  }
  return value as Record<string, unknown>;
}

/** A base64 field as bytes; absent or null reads as empty unless required. */
function bytesField(obj: Record<string, unknown>, field: string, required: boolean): Buffer {
  const v = obj[field];
  if (v === undefined || v === null) {
    if (required) throw new HttpError(400, `invalid request body: missing field '${field}'`);
    return Buffer.alloc(0);
  }
  if (typeof v !== 'string' || !isStrictBase64(v)) {
    throw new HttpError(400, `invalid request body: field '${field}' must be standard base64`);
  }
  return Buffer.from(v, 'base64');
}

/** The key name from the path, refused with KES's status and message when invalid. */
function keyName(ctx: RouteContext): string {
  if (!isValidKeyName(ctx.resource)) {
    throw new HttpError(400, `key name ${quote(ctx.resource)} is empty, too long or contains invalid characters`);
  }
  return ctx.resource;
}

/**
 * `/v1/key/list/PREFIX`: KES lists names starting with PREFIX, and `*` alone means all. We
 * also accept a trailing `*` after a prefix (`/v1/key/list/my-*`), which KES would take literally.
 */
function listPrefix(ctx: RouteContext): string {
  const r = ctx.resource;
  const prefix = r.endsWith('*') ? r.slice(0, -1) : r;
  if (r === '' || prefix.length > MAX_KEY_NAME_LENGTH || !/^[A-Za-z0-9_-]*$/.test(prefix)) {
    throw new HttpError(400, `listing pattern ${quote(r)} is empty, too long or is invalid`);
  }
  return prefix;
}

/** Echoes a client-given name inside a message, bounded and with control characters escaped. */
function quote(s: string): string {
  return `'${JSON.stringify(s.slice(0, 100)).slice(1, -1)}'`;
}

/** Cipher names KES accepts for AES-256 keys; ChaCha20 keys are not supported by our keystores. */
const IMPORT_CIPHERS = new Set(['AES256', 'AES256-GCM_SHA256']);

async function probeKeystore(keystore: Keystore): Promise<{ latencyMs: number; ok: boolean }> {
  const t0 = performance.now();
  try {
    await keystore.list('');
    return { latencyMs: Math.round(performance.now() - t0), ok: true };
  } catch {
    return { latencyMs: Math.round(performance.now() - t0), ok: false };
  }
}

// ------------------------------------------------------------------ handlers

const handlers = {
  async version(ctx: RouteContext): Promise<Reply> {
    return json({ version: ctx.deps.version, commit: ctx.deps.commit });
  },

  async status(ctx: RouteContext): Promise<Reply> {
    const probe = await probeKeystore(ctx.deps.keystore);
    const mem = process.memoryUsage();
    const cpus = availableParallelism();
    return json({
      version: ctx.deps.version,
      os: type().toLowerCase(),
      arch: process.arch === 'x64' ? 'amd64' : process.arch,
      // Go's time.Duration: nanoseconds.
      uptime: Math.round((Date.now() - ctx.deps.startedAt.getTime()) * 1e6),
      num_cpu: cpus,
      num_cpu_used: cpus,
      mem_heap_used: mem.heapUsed,
      mem_stack_used: 0,
      keystore_latency: probe.latencyMs,
      ...(probe.ok ? {} : { keystore_unreachable: true }),
    });
  },

  async ready(ctx: RouteContext): Promise<Reply> {
    const probe = await probeKeystore(ctx.deps.keystore);
    if (!probe.ok) throw new HttpError(503, 'keystore is not reachable');
    return EMPTY_OK;
  },

  async metrics(ctx: RouteContext): Promise<Reply> {
    return { status: 200, body: Buffer.from(ctx.deps.metricsText(), 'utf8'), contentType: 'text/plain; version=0.0.4; charset=utf-8' };
  },

  async api(ctx: RouteContext): Promise<Reply> {
    return json(ctx.deps.apiList());
  },

  async create(ctx: RouteContext): Promise<Reply> {
    await ctx.deps.keys.createKey(keyName(ctx), ctx.identity ?? '');
    return EMPTY_OK;
  },

  async import(ctx: RouteContext): Promise<Reply> {
    const name = keyName(ctx);
    const body = parseObject(ctx, false);
    // KES has spelled these {key, cipher} and, in some releases, {bytes, algorithm}.
    const field = body.key === undefined && body.bytes !== undefined ? 'bytes' : 'key';
    // KES answers 406 for an unsupported algorithm or a wrong key size; we default to AES256.
    const cipher = body.cipher ?? body.algorithm ?? 'AES256';
    if (typeof cipher !== 'string' || !IMPORT_CIPHERS.has(cipher)) {
      throw new HttpError(406, `algorithm ${quote(String(cipher))} is not supported`);
    }
    const key = bytesField(body, field, true);
    try {
      if (key.length !== 32) throw new HttpError(406, `invalid key size for ${quote(cipher)}`);
      await ctx.deps.keys.importKey(name, key, ctx.identity ?? '');
    } finally {
      key.fill(0);
    }
    return EMPTY_OK;
  },

  async describe(ctx: RouteContext): Promise<Reply> {
    const d = await ctx.deps.keys.describeKey(keyName(ctx));
    return json({ name: d.name, algorithm: d.algorithm, created_at: d.createdAt, created_by: d.createdBy, enabled: d.enabled });
  },

  async list(ctx: RouteContext): Promise<Reply> {
    // Names only, straight from the keystore: no key is unsealed to list it.
    const names = await ctx.deps.keystore.list(listPrefix(ctx));
    return json({ names, continue_at: '' });
  },

  async delete(ctx: RouteContext): Promise<Reply> {
    await ctx.deps.keys.deleteKey(keyName(ctx));
    return EMPTY_OK;
  },

  async generate(ctx: RouteContext): Promise<Reply> {
    const name = keyName(ctx);
    const context = bytesField(parseObject(ctx, true), 'context', false);
    const dek = await ctx.deps.keys.generate(name, context);
    try {
      return sensitiveJson({ plaintext: b64(dek.plaintext), ciphertext: b64(dek.ciphertext) });
    } finally {
      dek.plaintext.fill(0);
    }
  },

  async encrypt(ctx: RouteContext): Promise<Reply> {
    const name = keyName(ctx);
    const body = parseObject(ctx, false);
    const plaintext = bytesField(body, 'plaintext', true);
    try {
      const context = bytesField(body, 'context', false);
      const ciphertext = await ctx.deps.keys.encrypt(name, plaintext, context);
      return json({ ciphertext: b64(ciphertext) });
    } finally {
      plaintext.fill(0);
    }
  },

  async decrypt(ctx: RouteContext): Promise<Reply> {
    const name = keyName(ctx);
    const body = parseObject(ctx, false);
    const ciphertext = bytesField(body, 'ciphertext', true);
    const context = bytesField(body, 'context', false);
    const plaintext = await ctx.deps.keys.decrypt(name, ciphertext, context);
    try {
      return sensitiveJson({ plaintext: b64(plaintext) });
    } finally {
      plaintext.fill(0);
    }
  },

  async disable(ctx: RouteContext): Promise<Reply> {
    await ctx.deps.keys.disableKey(keyName(ctx));
    return EMPTY_OK;
  },

  async enable(ctx: RouteContext): Promise<Reply> {
    await ctx.deps.keys.enableKey(keyName(ctx));
    return EMPTY_OK;
  },
};

function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

function sensitiveJson(value: unknown): Reply {
  return { ...json(value), sensitive: true };
}

const WRITE: readonly HttpMethod[] = ['POST', 'PUT'];

/** The API. Order matters only for readability: paths never overlap. */
export const ROUTES: readonly Route[] = Object.freeze([
  { methods: ['GET'], path: '/version', resource: 'none', maxBody: 0, timeoutMs: SYSTEM_TIMEOUT_MS, auth: 'none', audit: false, handler: handlers.version },
  { methods: ['GET'], path: '/v1/status', resource: 'none', maxBody: 0, timeoutMs: KEY_TIMEOUT_MS, auth: 'policy', audit: false, handler: handlers.status },
  { methods: ['GET'], path: '/v1/ready', resource: 'none', maxBody: 0, timeoutMs: KEY_TIMEOUT_MS, auth: 'policy', audit: false, handler: handlers.ready },
  { methods: ['GET'], path: '/v1/metrics', resource: 'none', maxBody: 0, timeoutMs: KEY_TIMEOUT_MS, auth: 'policy', audit: false, handler: handlers.metrics },
  { methods: ['GET'], path: '/v1/api', resource: 'none', maxBody: 0, timeoutMs: SYSTEM_TIMEOUT_MS, auth: 'policy', audit: false, handler: handlers.api },
  { methods: WRITE, path: '/v1/key/create/', resource: 'key', maxBody: 0, timeoutMs: KEY_TIMEOUT_MS, auth: 'policy', audit: true, handler: handlers.create },
  { methods: WRITE, path: '/v1/key/import/', resource: 'key', maxBody: MAX_BODY, timeoutMs: KEY_TIMEOUT_MS, auth: 'policy', audit: true, handler: handlers.import },
  { methods: ['GET'], path: '/v1/key/describe/', resource: 'key', maxBody: 0, timeoutMs: KEY_TIMEOUT_MS, auth: 'policy', audit: true, handler: handlers.describe },
  { methods: ['GET'], path: '/v1/key/list/', resource: 'prefix', maxBody: 0, timeoutMs: KEY_TIMEOUT_MS, auth: 'policy', audit: true, handler: handlers.list },
  { methods: ['DELETE'], path: '/v1/key/delete/', resource: 'key', maxBody: 0, timeoutMs: KEY_TIMEOUT_MS, auth: 'policy', audit: true, handler: handlers.delete },
  { methods: WRITE, path: '/v1/key/generate/', resource: 'key', maxBody: MAX_BODY, timeoutMs: KEY_TIMEOUT_MS, auth: 'policy', audit: true, handler: handlers.generate },
  { methods: WRITE, path: '/v1/key/encrypt/', resource: 'key', maxBody: MAX_BODY, timeoutMs: KEY_TIMEOUT_MS, auth: 'policy', audit: true, handler: handlers.encrypt },
  { methods: WRITE, path: '/v1/key/decrypt/', resource: 'key', maxBody: MAX_BODY, timeoutMs: KEY_TIMEOUT_MS, auth: 'policy', audit: true, handler: handlers.decrypt },
  // Our extension: KES has no disabled state.
  { methods: WRITE, path: '/v1/key/disable/', resource: 'key', maxBody: 0, timeoutMs: KEY_TIMEOUT_MS, auth: 'policy', audit: true, handler: handlers.disable },
  { methods: WRITE, path: '/v1/key/enable/', resource: 'key', maxBody: 0, timeoutMs: KEY_TIMEOUT_MS, auth: 'policy', audit: true, handler: handlers.enable },
] satisfies Route[]);

export interface RouteMatch {
  route: Route;
  resource: string;
}

/** The route serving `path`, whatever the method. */
export function matchRoute(routes: readonly Route[], path: string): RouteMatch | undefined {
  for (const route of routes) {
    if (route.resource === 'none') {
      if (path === route.path) return { route, resource: '' };
    } else if (path.startsWith(route.path)) {
      return { route, resource: path.slice(route.path.length) };
    }
  }
  return undefined;
}

/** The /v1/api description of a table. */
export function describeRoutes(routes: readonly Route[]): ApiEntry[] {
  return routes.map((r) => ({ method: r.methods[0]!, path: r.path, max_body: r.maxBody, timeout: Math.ceil(r.timeoutMs / 1000) }));
}

