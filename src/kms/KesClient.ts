// KeyService over the KES HTTP API v1: HTTPS with mTLS (a client certificate, or a `kes:v1:`
// API key turned into a self-signed one), timeouts, bounded retries, MountdError codes.

import { Agent, request } from 'node:https';
import type { ClientRequest, IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { ErrorCode, MountdError } from '../errors/index.js';
import { KEY_DISABLED_STATUS } from '../kes/http/errors.js';
import { certificateForApiKey, identityOfCertificate, isStrictBase64, parseApiKey } from '../kes/identity.js';
import { validateKeyName } from '../kes/names.js';
import type { GeneratedKey, KeyInfo, KeyService, KeyServiceStatus } from './KeyService.js';

export interface KesClientOptions {
  /** https://HOST:PORT of a kesd or KES server. */
  endpoint: string;
  /** A `kes:v1:` API key. Either this or `cert` and `key`. */
  apiKey?: string;
  /** PEM client certificate and its private key, for mTLS with a certificate. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** PEM CA certificate(s), or the server's self-signed certificate; default: Node's root CAs. */
  ca?: string | Buffer;
  /** TLS server name to verify, when it differs from the endpoint's host. */
  servername?: string;
  /** TCP connect plus TLS handshake (default 10 s). */
  connectTimeoutMs?: number;
  /** A whole request, connection included (default 10 s). */
  requestTimeoutMs?: number;
  /** Extra attempts for idempotent calls when the key server is unavailable (default 2). */
  retries?: number;
  /** First retry delay, doubled per attempt, with jitter, at most 2 s (default 100 ms). */
  retryDelayMs?: number;
  /** Connections kept per client (default 16). */
  maxSockets?: number;
}

const DEFAULT_TIMEOUT_MS = 10_000;
const MAX_RETRY_DELAY_MS = 2_000;
/** Our responses are small JSON; anything larger than this is not a KES answer. */
const MAX_RESPONSE_BYTES = 4 << 20;
const LIST_DESCRIBE_CONCURRENCY = 8;
/** API-key certificates are valid for 90 days; a client older than 30 makes a new one. */
const API_KEY_CERT_DAYS = 90;
const API_KEY_CERT_REFRESH_MS = 30 * 86_400_000;

/** TLS verification failures: a configuration problem that retrying cannot fix. */
const TLS_VERIFY_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
]);

interface Response {
  status: number;
  body: Buffer;
}

/** Errors worth another attempt: the server was not reached, timed out, or failed (5xx). */
const retryable = new WeakSet<MountdError>();
/** Sockets whose TLS handshake completed (pooled ones come back through the agent). */
const secured = new WeakSet<TLSSocket>();

export class KesClient implements KeyService {
  readonly endpoint: string;
  /** Our identity as the server computes it. */
  readonly identity: string;
  readonly #url: URL;
  readonly #opts: Required<Pick<KesClientOptions, 'connectTimeoutMs' | 'requestTimeoutMs' | 'retries' | 'retryDelayMs' | 'maxSockets'>>;
  readonly #ca: string | Buffer | undefined;
  readonly #servername: string | undefined;
  readonly #apiKey: string | undefined;
  readonly #staticCredentials: { cert: string | Buffer; key: string | Buffer } | undefined;
  #agent: Agent | undefined;
  #agentCreatedAt = 0;
  #reachable = false;
  #lastError: string | undefined;
  #closed = false;

  constructor(options: KesClientOptions) {
    let url: URL;
    try {
      url = new URL(options.endpoint);
    } catch {
      throw new MountdError(ErrorCode.InvalidArgument, `key server endpoint ${JSON.stringify(options.endpoint)} is not a URL`);
    }
    if (url.protocol !== 'https:') throw new MountdError(ErrorCode.InvalidArgument, `key server endpoint must be https://HOST:PORT, got ${options.endpoint}`);
    if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash || url.username) {
      throw new MountdError(ErrorCode.InvalidArgument, `key server endpoint must be https://HOST:PORT with no path, got ${options.endpoint}`);
    }
    this.#url = url;
    this.endpoint = url.origin;
    const hasCert = options.cert !== undefined || options.key !== undefined;
    if (options.apiKey !== undefined && hasCert) {
      throw new MountdError(ErrorCode.InvalidArgument, 'give the key server client either an API key or a client certificate and key, not both');
    }
    if (options.apiKey !== undefined) {
      this.#apiKey = options.apiKey;
      this.identity = parseApiKey(options.apiKey).identity; // validates it now, not at the first call
    } else if (options.cert !== undefined && options.key !== undefined) {
      this.#staticCredentials = { cert: options.cert, key: options.key };
      this.identity = identityOfCertificate(typeof options.cert === 'string' ? options.cert : options.cert.toString('utf8'));
    } else {
      throw new MountdError(ErrorCode.InvalidArgument, 'the key server client needs an API key, or a client certificate and its key');
    }
    this.#ca = options.ca;
    this.#servername = options.servername;
    this.#opts = {
      connectTimeoutMs: positive('connectTimeoutMs', options.connectTimeoutMs ?? DEFAULT_TIMEOUT_MS),
      requestTimeoutMs: positive('requestTimeoutMs', options.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS),
      retries: nonNegativeInt('retries', options.retries ?? 2),
      retryDelayMs: nonNegativeInt('retryDelayMs', options.retryDelayMs ?? 100),
      maxSockets: nonNegativeInt('maxSockets', options.maxSockets ?? 16) || 16,
    };
  }

  // ---------------------------------------------------------------- KeyService

  async createKey(name: string): Promise<void> {
    validateKeyName(name);
    // Not retried: a create that reached the server before the connection broke would
    // come back as "already exists" on the second attempt.
    await this.#call('create', name, 'POST', `/v1/key/create/${name}`, undefined, false);
  }

  /** KES import: stores caller-given 32-byte EK material under `name`. Not retried. */
  async importKey(name: string, key: Uint8Array): Promise<void> {
    validateKeyName(name);
    await this.#call('import', name, 'POST', `/v1/key/import/${name}`, { key: b64(key), cipher: 'AES256' }, false);
  }

  async deleteKey(name: string): Promise<void> {
    validateKeyName(name);
    await this.#call('delete', name, 'DELETE', `/v1/key/delete/${name}`, undefined, false);
  }

  async describeKey(name: string): Promise<KeyInfo> {
    validateKeyName(name);
    const res = await this.#call('describe', name, 'GET', `/v1/key/describe/${name}`, undefined, true);
    const doc = this.#json(res, 'describe');
    const str = (v: unknown) => (typeof v === 'string' ? v : '');
    return {
      name: typeof doc.name === 'string' && doc.name !== '' ? doc.name : name,
      algorithm: str(doc.algorithm) || 'AES256',
      createdAt: str(doc.created_at),
      createdBy: str(doc.created_by),
      // A real KES server has no disabled state and does not send the field.
      enabled: doc.enabled !== false,
    };
  }

  async listKeys(prefix = ''): Promise<KeyInfo[]> {
    if (prefix !== '' && !/^[A-Za-z0-9_-]{1,80}$/.test(prefix)) {
      throw new MountdError(ErrorCode.InvalidKeyName, `invalid key name prefix ${JSON.stringify(prefix.slice(0, 100))}`);
    }
    // As KES reads it: the resource is a literal prefix, and '*' alone lists every key.
    const res = await this.#call('list', null, 'GET', `/v1/key/list/${prefix === '' ? '*' : prefix}`, undefined, true);
    const doc = this.#json(res, 'list');
    if (!Array.isArray(doc.names) || doc.names.some((n) => typeof n !== 'string')) throw this.#malformed('list');
    const names = [...new Set(doc.names as string[])].filter((n) => n.startsWith(prefix)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const out: Array<KeyInfo | undefined> = new Array(names.length);
    let next = 0;
    const worker = async () => {
      while (next < names.length) {
        const i = next++;
        try {
          out[i] = await this.describeKey(names[i]!);
        } catch (err) {
          // Deleted between list and describe: it is simply no longer there.
          if (err instanceof MountdError && err.code === ErrorCode.KeyNotFound) continue;
          throw err;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(LIST_DESCRIBE_CONCURRENCY, names.length) }, worker));
    return out.filter((k): k is KeyInfo => k !== undefined);
  }

  async generate(name: string, context: Uint8Array): Promise<GeneratedKey> {
    validateKeyName(name);
    // Retrying is safe: a DEK whose answer was lost is simply never used.
    const res = await this.#call('generate', name, 'POST', `/v1/key/generate/${name}`, { context: b64(context) }, true);
    try {
      const doc = this.#json(res, 'generate');
      const ciphertext = this.#bytes(doc, 'ciphertext', 'generate');
      const plaintext = this.#bytes(doc, 'plaintext', 'generate');
      if (plaintext.length === 0 || ciphertext.length === 0) throw this.#malformed('generate');
      return { plaintext, ciphertext };
    } finally {
      res.body.fill(0);
    }
  }

  async encrypt(name: string, plaintext: Uint8Array, context: Uint8Array): Promise<Uint8Array> {
    validateKeyName(name);
    const res = await this.#call('encrypt', name, 'POST', `/v1/key/encrypt/${name}`, { plaintext: b64(plaintext), context: b64(context) }, true);
    return this.#bytes(this.#json(res, 'encrypt'), 'ciphertext', 'encrypt');
  }

  async decrypt(name: string, ciphertext: Uint8Array, context: Uint8Array): Promise<Uint8Array> {
    validateKeyName(name);
    const res = await this.#call('decrypt', name, 'POST', `/v1/key/decrypt/${name}`, { ciphertext: b64(ciphertext), context: b64(context) }, true);
    try {
      return this.#bytes(this.#json(res, 'decrypt'), 'plaintext', 'decrypt');
    } finally {
      res.body.fill(0);
    }
  }

  /** kesd's extension; a real KES server answers 404 (reported as NotSupported). Idempotent. */
  async disableKey(name: string): Promise<void> {
    validateKeyName(name);
    await this.#call('disable', name, 'POST', `/v1/key/disable/${name}`, undefined, true);
  }

  async enableKey(name: string): Promise<void> {
    validateKeyName(name);
    await this.#call('enable', name, 'POST', `/v1/key/enable/${name}`, undefined, true);
  }

  /** Probes GET /version (no retries); `lastError` is the last failure of any call or probe since a success. */
  async status(): Promise<KeyServiceStatus> {
    try {
      await this.#once('GET', '/version', undefined);
      this.#reachable = true;
      this.#lastError = undefined;
    } catch (err) {
      this.#reachable = false;
      this.#lastError = (err as Error).message;
    }
    return { kind: 'remote', endpoint: this.endpoint, reachable: this.#reachable, ...(this.#lastError !== undefined ? { lastError: this.#lastError } : {}) };
  }

  /** GET /version: {version, commit}. */
  async version(): Promise<{ version: string; commit: string }> {
    const res = await this.#call('version', null, 'GET', '/version', undefined, true);
    const doc = this.#json(res, 'version');
    return { version: String(doc.version ?? ''), commit: String(doc.commit ?? '') };
  }

  /** Closes pooled connections. Later calls fail with KeyServerUnavailable. */
  close(): void {
    this.#closed = true;
    this.#agent?.destroy();
    this.#agent = undefined;
  }

  // ---------------------------------------------------------------- transport

  async #call(op: string, name: string | null, method: string, path: string, body: Record<string, string> | undefined, idempotent: boolean): Promise<Response> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body), 'utf8');
    try {
      for (let attempt = 0; ; attempt++) {
        let res: Response;
        try {
          res = await this.#once(method, path, payload);
        } catch (err) {
          const e = err as MountdError;
          this.#reachable = false;
          this.#lastError = e.message;
          if (idempotent && retryable.has(e) && attempt < this.#opts.retries && !this.#closed) {
            await sleep(backoff(this.#opts.retryDelayMs, attempt));
            continue;
          }
          throw e;
        }
        this.#reachable = true;
        if (res.status >= 200 && res.status < 300) {
          this.#lastError = undefined;
          return res;
        }
        const e = this.#httpError(op, name, method, path, res);
        res.body.fill(0);
        if (e.code === ErrorCode.KeyServerUnavailable) this.#lastError = e.message;
        if (idempotent && retryable.has(e) && attempt < this.#opts.retries && !this.#closed) {
          await sleep(backoff(this.#opts.retryDelayMs, attempt));
          continue;
        }
        throw e;
      }
    } finally {
      payload?.fill(0);
    }
  }

  #agentNow(): Agent {
    const now = Date.now();
    if (this.#agent && this.#apiKey !== undefined && now - this.#agentCreatedAt > API_KEY_CERT_REFRESH_MS) {
      // Idle sockets go now; busy ones finish their request on the old agent.
      const old = this.#agent;
      this.#agent = undefined;
      setTimeout(() => old.destroy(), this.#opts.requestTimeoutMs + 1000).unref();
    }
    if (!this.#agent) {
      const creds = this.#apiKey !== undefined ? certificateForApiKey(this.#apiKey, { days: API_KEY_CERT_DAYS }) : this.#staticCredentials!;
      this.#agent = new Agent({
        keepAlive: true,
        maxSockets: this.#opts.maxSockets,
        maxFreeSockets: Math.min(4, this.#opts.maxSockets),
        cert: creds.cert,
        key: creds.key,
        ...(this.#ca !== undefined ? { ca: this.#ca } : {}),
        ...(this.#servername !== undefined ? { servername: this.#servername } : {}),
        minVersion: 'TLSv1.2',
      });
      this.#agentCreatedAt = now;
    }
    return this.#agent;
  }

  #once(method: string, path: string, payload: Buffer | undefined): Promise<Response> {
    if (this.#closed) return Promise.reject(unavailable(`key server client for ${this.endpoint} is closed`, false));
    const agent = this.#agentNow();
    return new Promise<Response>((resolve, reject) => {
      let settled = false;
      let connectTimer: NodeJS.Timeout | undefined;
      const chunks: Buffer[] = [];
      const settle = (err: MountdError | undefined, res?: Response) => {
        if (settled) return;
        settled = true;
        clearTimeout(requestTimer);
        if (connectTimer) clearTimeout(connectTimer);
        if (err) {
          for (const c of chunks) c.fill(0);
          reject(err);
        } else resolve(res!);
      };
      const req: ClientRequest = request(
        {
          protocol: 'https:',
          hostname: this.#url.hostname.replace(/^\[|\]$/g, ''),
          port: this.#url.port || 443,
          method,
          path,
          agent,
          headers: {
            Accept: 'application/json',
            ...(payload ? { 'Content-Type': 'application/json', 'Content-Length': payload.length } : { 'Content-Length': 0 }),
          },
        },
        (res: IncomingMessage) => {
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_RESPONSE_BYTES) {
              chunk.fill(0);
              req.destroy();
              settle(unavailable(`key server ${this.endpoint} sent an oversized response to ${method} ${path}`, false));
              return;
            }
            chunks.push(chunk);
          });
          res.on('end', () => {
            const body = Buffer.concat(chunks);
            for (const c of chunks) c.fill(0);
            settle(undefined, { status: res.statusCode ?? 0, body });
          });
          res.on('error', (err) => settle(this.#networkError(method, path, err)));
          res.on('aborted', () => settle(this.#networkError(method, path, new Error('response aborted'))));
        },
      );
      const requestTimer = setTimeout(() => {
        const err = unavailable(`key server ${this.endpoint}: ${method} ${path} timed out after ${this.#opts.requestTimeoutMs} ms`, true);
        settle(err);
        req.destroy();
      }, this.#opts.requestTimeoutMs);
      req.on('socket', (socket) => {
        const tls = socket as TLSSocket;
        // A pooled connection is already up; only a new one gets the connect deadline.
        if (secured.has(tls)) return;
        connectTimer = setTimeout(() => {
          settle(unavailable(`key server ${this.endpoint}: no TLS connection within ${this.#opts.connectTimeoutMs} ms`, true));
          req.destroy();
        }, this.#opts.connectTimeoutMs);
        tls.once('secureConnect', () => {
          secured.add(tls);
          if (connectTimer) clearTimeout(connectTimer);
        });
      });
      req.on('error', (err) => settle(this.#networkError(method, path, err)));
      req.end(payload);
    });
  }

  #networkError(method: string, path: string, err: Error): MountdError {
    const code = (err as NodeJS.ErrnoException).code;
    if (code && TLS_VERIFY_CODES.has(code)) {
      return unavailable(`key server ${this.endpoint}: cannot verify its TLS certificate (${code}: ${err.message}); check the CA file`, false, err);
    }
    return unavailable(`key server ${this.endpoint} unreachable: ${method} ${path}: ${code ? `${code} ` : ''}${err.message}`, true, err);
  }

  #httpError(op: string, name: string | null, method: string, path: string, res: Response): MountdError {
    const message = errorMessage(res.body);
    const status = res.status;
    const key = name === null ? '' : ` key '${name}'`;
    const what = `${op}${key}`;
    if (status === 401 || status === 403) {
      return new MountdError(
        ErrorCode.KeyAccessDenied,
        `key server ${this.endpoint} refused ${what} for identity ${this.identity.slice(0, 16)}…: ${message} (${status})`,
      );
    }
    if (status === 404) {
      if (/does not exist/i.test(message)) return new MountdError(ErrorCode.KeyNotFound, `key '${name ?? ''}' does not exist`);
      return new MountdError(ErrorCode.NotSupported, `key server ${this.endpoint} does not support ${method} ${path} (404 ${message})`);
    }
    if (status === KEY_DISABLED_STATUS && /disabled/i.test(message)) {
      return new MountdError(ErrorCode.KeyDisabled, `key '${name ?? ''}' is disabled`);
    }
    if (status === 400) {
      if (/already exists/i.test(message)) return new MountdError(ErrorCode.KeyExists, `key '${name ?? ''}' already exists`);
      if (/not authentic|decryption failed/i.test(message)) return new MountdError(ErrorCode.NotAuthentic, 'ciphertext is not authentic');
      if (/invalid key name|key name .* invalid characters/i.test(message)) {
        return new MountdError(ErrorCode.InvalidKeyName, `invalid key name ${JSON.stringify(name ?? '')}`);
      }
      return new MountdError(ErrorCode.InvalidArgument, `key server ${this.endpoint} rejected ${what}: ${message}`);
    }
    if (status === 405) return new MountdError(ErrorCode.NotSupported, `key server ${this.endpoint} does not support ${method} ${path}: ${message}`);
    if (status === 413 || status === 406) return new MountdError(ErrorCode.InvalidArgument, `key server ${this.endpoint} refused ${what}: ${message}`);
    const transient = status === 408 || status === 429 || status >= 500;
    return unavailable(`key server ${this.endpoint} failed ${what}: ${status} ${message}`, transient);
  }

  #json(res: Response, op: string): Record<string, unknown> {
    let doc: unknown;
    try {
      doc = JSON.parse(res.body.toString('utf8'));
    } catch {
      throw this.#malformed(op);
    }
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw this.#malformed(op);
    return doc as Record<string, unknown>;
  }

  /** A base64 field as a fresh Uint8Array; the decoding buffer is wiped. */
  #bytes(doc: Record<string, unknown>, field: string, op: string): Uint8Array {
    const v = doc[field];
    if (typeof v !== 'string' || !isStrictBase64(v)) throw this.#malformed(op);
    const buf = Buffer.from(v, 'base64');
    const out = new Uint8Array(buf);
    buf.fill(0);
    return out;
  }

  #malformed(op: string): MountdError {
    return unavailable(`key server ${this.endpoint} sent a malformed answer to ${op}`, false);
  }
}

function unavailable(message: string, transient: boolean, cause?: unknown): MountdError {
  const e = new MountdError(ErrorCode.KeyServerUnavailable, message, cause === undefined ? undefined : { cause });
  if (transient) retryable.add(e);
  return e;
}

/** KES error bodies are {"message": ...}; some KES releases read {"error": ...}; else plain text. */
function errorMessage(body: Buffer): string {
  const text = body.subarray(0, 2048).toString('utf8').trim();
  try {
    const doc = JSON.parse(text) as { message?: unknown; error?: unknown };
    if (typeof doc.message === 'string') return doc.message;
    if (typeof doc.error === 'string') return doc.error;
  } catch {
    // not JSON
  }
  return text.replace(/\s+/g, ' ').slice(0, 200) || '(no message)';
}

function b64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

function backoff(base: number, attempt: number): number {
  const d = Math.min(MAX_RETRY_DELAY_MS, base * 2 ** attempt);
  return Math.round(d * (0.5 + Math.random() / 2));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function positive(name: string, v: number): number {
  if (!Number.isFinite(v) || v <= 0) throw new MountdError(ErrorCode.InvalidArgument, `${name} must be a positive number of ms`);
  return v;
}

function nonNegativeInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0) throw new MountdError(ErrorCode.InvalidArgument, `${name} must be a non-negative integer`);
  return v;
}
