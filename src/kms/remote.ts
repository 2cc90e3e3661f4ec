// A remote KES-compatible key server (kesd or KES) as the daemon's key service: KesClient
// behind the DEK cache. Opening it does not contact the server, so a daemon can start while
// the key server is down and recover when it comes back.

import { readFile } from 'node:fs/promises';
import { ErrorCode, MountdError } from '../errors/index.js';
import { CachingKeyService } from './CachingKeyService.js';
import { KesClient } from './KesClient.js';

export interface RemoteKeyServiceOptions {
  /** https://HOST:PORT */
  endpoint: string;
  /** A `kes:v1:` API key; or certFile and keyFile. */
  apiKey?: string;
  /** PEM client certificate and private key for mTLS. */
  certFile?: string;
  keyFile?: string;
  /** PEM CA bundle, or the server's self-signed certificate; default: the system's root CAs. */
  caFile?: string;
  /** DEK cache TTL (default 5 minutes) and size (default 10000). */
  cacheTtlMs?: number;
  cacheMax?: number;
  /** Defaults 10 s each. */
  connectTimeoutMs?: number;
  requestTimeoutMs?: number;
  /** Extra attempts for idempotent calls while the key server is unavailable (default 2). */
  retries?: number;
}

export interface OpenedRemoteKeyService extends CachingKeyService {
  /** The client under the cache (identity, close()). */
  readonly client: KesClient;
}

/** Reads the credential files and builds CachingKeyService(KesClient). Never contacts the server. */
export async function openRemoteKeyService(opts: RemoteKeyServiceOptions): Promise<OpenedRemoteKeyService> {
  const hasCert = opts.certFile !== undefined || opts.keyFile !== undefined;
  if (opts.apiKey !== undefined && hasCert) {
    throw new MountdError(ErrorCode.InvalidArgument, 'remote key server: give an API key or a client certificate and key, not both');
  }
  if (opts.apiKey === undefined && (opts.certFile === undefined || opts.keyFile === undefined)) {
    throw new MountdError(ErrorCode.InvalidArgument, 'remote key server: needs an API key, or both a client certificate file and a key file');
  }
  const read = async (what: string, file: string | undefined) => {
    if (file === undefined) return undefined;
    try {
      return await readFile(file);
    } catch (err) {
      throw new MountdError(ErrorCode.InvalidArgument, `remote key server: cannot read the ${what} file ${file}`, { cause: err });
    }
  };
  const cert = await read('client certificate', opts.certFile);
  const key = await read('client key', opts.keyFile);
  const ca = await read('CA', opts.caFile);
  const client = new KesClient({
    endpoint: opts.endpoint,
    ...(opts.apiKey !== undefined ? { apiKey: opts.apiKey } : { cert: cert!, key: key! }),
    ...(ca !== undefined ? { ca } : {}),
    connectTimeoutMs: opts.connectTimeoutMs,
    requestTimeoutMs: opts.requestTimeoutMs,
    retries: opts.retries,
  });
  const service = new CachingKeyService(client, { ttl: opts.cacheTtlMs, max: opts.cacheMax });
  return Object.assign(service, { client });
}

/**
 * Options from MinIO's environment names: MINIO_KMS_KES_ENDPOINT (the first of a comma
 * separated list), MINIO_KMS_KES_API_KEY, MINIO_KMS_KES_CERT_FILE, MINIO_KMS_KES_KEY_FILE,
 * MINIO_KMS_KES_CAPATH. Undefined when no endpoint is set. (MINIO_KMS_KES_KEY_NAME, the
 * default key, is the daemon's business, not the client's.)
 */
export function remoteOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): RemoteKeyServiceOptions | undefined {
  const endpoint = env.MINIO_KMS_KES_ENDPOINT?.split(',')[0]?.trim();
  if (!endpoint) return undefined;
  const opt = (v: string | undefined) => (v !== undefined && v.trim() !== '' ? v.trim() : undefined);
  const out: RemoteKeyServiceOptions = { endpoint };
  const apiKey = opt(env.MINIO_KMS_KES_API_KEY);
  const certFile = opt(env.MINIO_KMS_KES_CERT_FILE);
  const keyFile = opt(env.MINIO_KMS_KES_KEY_FILE);
  const caFile = opt(env.MINIO_KMS_KES_CAPATH);
  if (apiKey !== undefined) out.apiKey = apiKey;
  if (certFile !== undefined) out.certFile = certFile;
  if (keyFile !== undefined) out.keyFile = keyFile;
  if (caFile !== undefined) out.caFile = caFile;
  return out;
}
