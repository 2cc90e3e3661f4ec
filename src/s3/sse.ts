// Server-side encryption headers: SSE-S3, SSE-KMS and SSE-C requests to engine EncryptionSpecs, and the headers responses echo.
import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { EncryptionInfo, EncryptionSpec, Engine } from '../engine/index.js';
import { ErrorCode, isMountdError } from '../errors/index.js';
import { s3err } from './errors.js';

const H = {
  sse: 'x-amz-server-side-encryption',
  kmsKeyId: 'x-amz-server-side-encryption-aws-kms-key-id',
  context: 'x-amz-server-side-encryption-context',
  cAlg: 'x-amz-server-side-encryption-customer-algorithm',
  cKey: 'x-amz-server-side-encryption-customer-key',
  cMd5: 'x-amz-server-side-encryption-customer-key-md5',
} as const;

export interface SsePolicy {
  /** SSE-C is allowed (the listener is on loopback, or the operator said so). */
  ssecAllowed: boolean;
  /** Create named keys that do not exist yet, instead of failing with kms:KeyNotFound. */
  autoCreateKeys: boolean;
}

function one(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** "arn:aws:kms:REGION:ACCOUNT:key/NAME" (or alias/NAME) names the key NAME. */
export function kmsKeyName(id: string): string {
  const m = /^arn:aws:kms:[^:]*:[^:]*:(?:key|alias)\/(.+)$/.exec(id);
  return m ? m[1]! : id;
}

/**
 * The customer key from SSE-C headers (prefix "x-amz-server-side-encryption-customer-" or
 * "x-amz-copy-source-server-side-encryption-customer-"), checked against its MD5; undefined
 * when none of the three headers is present.
 */
export function customerKeyFrom(headers: IncomingHttpHeaders, policy: SsePolicy, copySource = false): Uint8Array | undefined {
  const p = copySource ? 'x-amz-copy-source-server-side-encryption-customer-' : 'x-amz-server-side-encryption-customer-';
  const alg = one(headers, `${p}algorithm`);
  const key = one(headers, `${p}key`);
  const md5 = one(headers, `${p}key-md5`);
  if (alg === undefined && key === undefined && md5 === undefined) return undefined;
  if (!policy.ssecAllowed) throw s3err.ssecInsecure();
  if (alg === undefined) throw s3err.invalidArgument('Requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm.', `${p}algorithm`, '');
  if (alg !== 'AES256') throw s3err.invalidArgument('The encryption algorithm specified is not valid.', `${p}algorithm`, alg);
  if (key === undefined) throw s3err.invalidArgument('Requests specifying Server Side Encryption with Customer provided keys must provide an appropriate secret key.', `${p}key`, '');
  if (md5 === undefined) throw s3err.invalidArgument('Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated MD5 of the secret key.', `${p}key-MD5`, '');
  const raw = /^[A-Za-z0-9+/]*={0,2}$/.test(key) ? Buffer.from(key, 'base64') : Buffer.alloc(0);
  if (raw.length !== 32) throw s3err.invalidArgument('The secret key was invalid for the specified algorithm.', `${p}key`, '');
  if (createHash('md5').update(raw).digest('base64') !== md5) throw s3err.invalidArgument('The calculated MD5 hash of the key did not match the hash that was provided.', `${p}key-MD5`, '');
  return new Uint8Array(raw);
}

/** Reads (GET, HEAD): only SSE-C headers make sense; x-amz-server-side-encryption is refused as AWS does. */
export function readKey(headers: IncomingHttpHeaders, policy: SsePolicy): Uint8Array | undefined {
  if (one(headers, H.sse) !== undefined || one(headers, H.kmsKeyId) !== undefined) {
    throw s3err.invalidArgument('x-amz-server-side-encryption header is not supported for this operation.', H.sse, one(headers, H.sse) ?? '');
  }
  return customerKeyFrom(headers, policy);
}

/**
 * The key a new object is written with. No SSE header: undefined (the engine applies the
 * bucket default, else the daemon default). AES256: the daemon default. aws:kms: the named key
 * (the bucket's KMS key or the daemon default when no id is given), which must exist unless the
 * operator allows keys to be created on demand.
 */
export async function writeSpec(headers: IncomingHttpHeaders, engine: Engine, bucket: string, policy: SsePolicy): Promise<EncryptionSpec | undefined> {
  const sse = one(headers, H.sse);
  const keyId = one(headers, H.kmsKeyId);
  const customerKey = customerKeyFrom(headers, policy);
  if (customerKey) {
    if (sse !== undefined || keyId !== undefined) throw s3err.invalidArgument('Server Side Encryption with Customer provided key is incompatible with the encryption method specified', H.sse, sse ?? '');
    return { kind: 'customer', customerKey };
  }
  if (one(headers, H.context) !== undefined) throw s3err.notImplemented('x-amz-server-side-encryption-context is not supported: objects are bound to their bucket and key instead.');
  if (sse === undefined) {
    if (keyId !== undefined) throw s3err.invalidArgument('Server Side Encryption with AWS KMS managed key requires HTTP header x-amz-server-side-encryption : aws:kms', H.sse, '');
    return undefined;
  }
  if (sse === 'AES256') {
    if (keyId !== undefined) throw s3err.invalidArgument('x-amz-server-side-encryption-aws-kms-key-id is only valid with aws:kms', H.kmsKeyId, keyId);
    return { kind: 'default' };
  }
  if (sse !== 'aws:kms') throw s3err.invalidArgument('The encryption method specified is not supported', H.sse, sse);
  let name = keyId === undefined || keyId === '' ? undefined : kmsKeyName(keyId);
  if (name === undefined) {
    const cfg = await engine.getBucketEncryption(bucket).catch(() => null);
    name = cfg?.algorithm === 'aws:kms' && cfg.keyId ? cfg.keyId : engine.keys.defaultKeyName;
  }
  await ensureKey(engine, name, policy);
  return { kind: 'named', keyName: name };
}

/** A named key must exist, or be created when the operator allows it. */
export async function ensureKey(engine: Engine, name: string, policy: SsePolicy): Promise<void> {
  try {
    await engine.keyService.describeKey(name);
  } catch (err) {
    if (!isMountdError(err, ErrorCode.KeyNotFound)) throw err;
    if (!policy.autoCreateKeys) throw s3err.kmsNotFound(name);
    try {
      await engine.createKey(name);
    } catch (e) {
      if (!isMountdError(e, ErrorCode.KeyExists)) throw e;
    }
  }
}

/** The SSE headers a response carries for an object encrypted as `info` says. */
export function sseResponseHeaders(info: Pick<EncryptionInfo, 'kind' | 'keyName' | 'customerKeyMd5'>): Record<string, string> {
  switch (info.kind) {
    case 'customer':
      return { [H.cAlg]: 'AES256', ...(info.customerKeyMd5 ? { [H.cMd5]: info.customerKeyMd5 } : {}) };
    case 'named':
      return { [H.sse]: 'aws:kms', ...(info.keyName ? { [H.kmsKeyId]: info.keyName } : {}) };
    default:
      return { [H.sse]: 'AES256' };
  }
}
