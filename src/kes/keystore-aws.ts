// The `aws` keystore: each external key is a secret in AWS Secrets Manager, encrypted there
// under an AWS KMS key the operator names, as KES's AWS backend does it.

import { DescribeKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import {
  CreateSecretCommand,
  DeleteSecretCommand,
  DescribeSecretCommand,
  GetSecretValueCommand,
  ListSecretsCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import type { Filter } from '@aws-sdk/client-secrets-manager';
import { ErrorCode, MountdError, integrity } from '../errors/index.js';
import { EK_LENGTH } from './keystore.js';
import type { KeyEntry, Keystore } from './keystore.js';
import { MAX_KEY_NAME_LENGTH, isValidKeyName, validateKeyName } from './names.js';

export interface AwsKeystoreCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface AwsKeystoreOptions {
  /**
   * Secrets Manager endpoint, e.g. `http://127.0.0.1:5000` for moto_server or a VPC endpoint.
   * Default: the public endpoint of `region`. Also used for KMS unless `kmsEndpoint` is set.
   */
  endpoint?: string;
  /** KMS endpoint when it differs from `endpoint` (on AWS itself they always differ). */
  kmsEndpoint?: string;
  region: string;
  /** Always explicit: the keystore never reads credentials from the environment or ~/.aws. */
  credentials: AwsKeystoreCredentials;
  /** The AWS KMS key (id, ARN or `alias/...`) under which Secrets Manager encrypts new secrets. */
  kmsKeyId: string;
  /** Secret name = prefix + key name (default ''; e.g. `mountd/`). */
  prefix?: string;
  /**
   * Deadline of each AWS request, its retries and backoff included (default 5000). Also the
   * per-attempt request timeout; connecting is bounded by min(timeoutMs, 2000) per attempt.
   * get, create and one page of list make one request each (plus, at most once per
   * kmsStateTtlMs, a DescribeKey alongside); update and delete make two in a row.
   */
  timeoutMs?: number;
  /** SDK attempts per AWS request, with the SDK's exponential backoff between them (default 3). */
  maxAttempts?: number;
  /** How long an answer of KMS DescribeKey is trusted (default 10000 ms). */
  kmsStateTtlMs?: number;
  /**
   * Check the KMS key's state with DescribeKey (cached for `kmsStateTtlMs`) before reading or
   * writing a key (default true). Needs kms:DescribeKey on the key.
   */
  checkKmsKeyState?: boolean;
  /** Page size of ListSecrets (1..100, default 100). */
  listPageSize?: number;
}

export interface AwsKeystoreStatus {
  kind: 'aws';
  /** Secrets Manager endpoint. */
  endpoint: string;
  kmsEndpoint: string;
  region: string;
  kmsKeyId: string;
  prefix: string;
  /**
   * Secrets Manager answered the last probe (or, without a probe, the last request) and KMS
   * answered too; an error answer from KMS (the key does not exist) shows in lastError instead.
   */
  reachable: boolean;
  /** KMS KeyState (Enabled, Disabled, PendingDeletion, ...) as last seen. */
  kmsKeyState?: string;
  /**
   * The most recent keystore failure (unreachable, timed out, KMS key unusable), kept after a
   * recovery so that the status can say what happened; `reachable` says whether it still holds.
   */
  lastError?: string;
  /** ISO 8601 time of lastError. */
  lastErrorAt?: string;
}

/** SecretString of one key. `key` is the EK, base64; Secrets Manager encrypts the whole string under KMS. */
interface SecretDocV1 {
  version: 1;
  name: string;
  algorithm: 'AES256';
  created_at: string;
  created_by: string;
  enabled: boolean;
  key: string;
}

const DEFAULT_TIMEOUT_MS = 5000;
const DEFAULT_MAX_ATTEMPTS = 3;
const DEFAULT_KMS_STATE_TTL_MS = 10_000;
const MAX_CONNECT_TIMEOUT_MS = 2000;
const MAX_SECRET_NAME_LENGTH = 512;
// Characters Secrets Manager allows in secret names.
const SECRET_NAME_CHARS = /^[A-Za-z0-9/_+=.@-]*$/;

type Op = 'create' | 'get' | 'update' | 'delete' | 'list' | 'kms' | 'probe';

/** Raised by our own deadline; never leaves this module. */
class Deadline extends Error {}

function invalid(message: string): MountdError {
  return new MountdError(ErrorCode.InvalidArgument, `aws keystore: ${message}`);
}

function checkEntry(entry: KeyEntry): void {
  validateKeyName(entry.name);
  if (!(entry.key instanceof Uint8Array) || entry.key.length !== EK_LENGTH) {
    throw new MountdError(ErrorCode.InvalidArgument, `key '${entry.name}': key material must be ${EK_LENGTH} bytes`);
  }
  if (entry.algorithm !== 'AES256') {
    throw new MountdError(ErrorCode.InvalidArgument, `key '${entry.name}': unsupported algorithm`);
  }
}

function endpointUrl(value: string, what: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalid(`${what} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalid(`${what} must be http:// or https://`);
  if (url.username || url.password) throw invalid(`${what} must not carry credentials`);
  return url.toString().replace(/\/$/, '');
}

function awsErrorName(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { name?: unknown; Code?: unknown; __type?: unknown };
  for (const v of [e.name, e.Code, e.__type]) if (typeof v === 'string' && v !== 'Error') return v;
  return undefined;
}

/** A one-line description of an SDK or network error: its name, message and attempts, nothing else. */
function describeAwsError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const name = awsErrorName(err);
  const code = (err as NodeJS.ErrnoException).code;
  const message = err.message.replace(/\s+/g, ' ').trim();
  let out = message;
  if (name && !message.startsWith(name)) out = message ? `${name}: ${message}` : name;
  // Node's AggregateError (every address of a host refused) has an empty message but a code.
  if (typeof code === 'string' && !out.includes(code)) out = out ? `${out} (${code})` : code;
  if (!out) out = 'unknown error';
  const attempts = (err as { $metadata?: { attempts?: number } }).$metadata?.attempts;
  if (typeof attempts === 'number' && attempts > 1) out += ` (after ${attempts} attempts)`;
  return out;
}

/**
 * The Description our secrets carry. list() reports only secrets that carry it, so unrelated
 * secrets of the account (or under a shared prefix) never show up as keys; it needs no
 * permission beyond CreateSecret.
 */
const ownerDescription = (name: string) => `mountd key server: external key '${name}'`;

const scheduledForDeletion = (err: unknown) =>
  awsErrorName(err) === 'InvalidRequestException' &&
  err instanceof Error &&
  /marked (for )?delet|scheduled for delet|marked deleted/i.test(err.message);

/**
 * Keystore over AWS Secrets Manager with AWS KMS. Same semantics as FsKeystore. Errors name the
 * key store ("aws keystore (Secrets Manager at ENDPOINT): ...") and never carry key material.
 */
export class AwsKeystore implements Keystore {
  readonly endpoint: string;
  readonly kmsEndpoint: string;
  readonly region: string;
  readonly kmsKeyId: string;
  readonly prefix: string;
  readonly timeoutMs: number;
  readonly #sm: SecretsManagerClient;
  readonly #kms: KMSClient;
  readonly #kmsStateTtlMs: number;
  readonly #checkKms: boolean;
  readonly #pageSize: number;
  #kmsState: { state: string; at: number } | undefined;
  #kmsInflight: Promise<string> | undefined;
  #reachable: boolean | undefined;
  #lastError: { message: string; at: Date } | undefined;
  /** Errors that AWS itself returned (as opposed to network failures and timeouts). */
  readonly #answered = new WeakSet<object>();
  /** "what: detail" of an Unavailable error, for rewording it under another operation. */
  readonly #details = new WeakMap<MountdError, string>();

  constructor(options: AwsKeystoreOptions) {
    if (typeof options !== 'object' || options === null) throw invalid('options are required');
    const { region, credentials, kmsKeyId } = options;
    if (typeof region !== 'string' || !/^[a-z0-9-]{1,64}$/.test(region)) throw invalid('region is required (e.g. us-east-1)');
    if (
      typeof credentials !== 'object' ||
      credentials === null ||
      typeof credentials.accessKeyId !== 'string' ||
      credentials.accessKeyId === '' ||
      typeof credentials.secretAccessKey !== 'string' ||
      credentials.secretAccessKey === '' ||
      (credentials.sessionToken !== undefined && typeof credentials.sessionToken !== 'string')
    ) {
      throw invalid('credentials need accessKeyId and secretAccessKey');
    }
    if (typeof kmsKeyId !== 'string' || kmsKeyId.trim() === '') throw invalid('kmsKeyId is required');
    const prefix = options.prefix ?? '';
    if (typeof prefix !== 'string' || !SECRET_NAME_CHARS.test(prefix)) {
      throw invalid('prefix may only contain letters, digits and / _ + = . @ -');
    }
    if (prefix.length + MAX_KEY_NAME_LENGTH > MAX_SECRET_NAME_LENGTH) {
      throw invalid(`prefix must be at most ${MAX_SECRET_NAME_LENGTH - MAX_KEY_NAME_LENGTH} characters`);
    }
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw invalid('timeoutMs must be a positive number');
    const maxAttempts = options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 10) {
      throw invalid('maxAttempts must be an integer from 1 to 10');
    }
    const ttl = options.kmsStateTtlMs ?? DEFAULT_KMS_STATE_TTL_MS;
    if (!Number.isFinite(ttl) || ttl < 0) throw invalid('kmsStateTtlMs must be a number >= 0');
    const pageSize = options.listPageSize ?? 100;
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 100) throw invalid('listPageSize must be 1..100');

    const smEndpoint = options.endpoint === undefined ? undefined : endpointUrl(options.endpoint, 'endpoint');
    const kmsEndpoint =
      options.kmsEndpoint === undefined ? smEndpoint : endpointUrl(options.kmsEndpoint, 'kmsEndpoint');
    this.endpoint = smEndpoint ?? `https://secretsmanager.${region}.amazonaws.com`;
    this.kmsEndpoint = kmsEndpoint ?? `https://kms.${region}.amazonaws.com`;
    this.region = region;
    this.kmsKeyId = kmsKeyId;
    this.prefix = prefix;
    this.timeoutMs = timeoutMs;
    this.#kmsStateTtlMs = ttl;
    this.#checkKms = options.checkKmsKeyState ?? true;
    this.#pageSize = pageSize;

    const common = {
      region,
      // A static identity: no provider chain, so nothing is read from the environment or ~/.aws.
      credentials: {
        accessKeyId: credentials.accessKeyId,
        secretAccessKey: credentials.secretAccessKey,
        ...(credentials.sessionToken ? { sessionToken: credentials.sessionToken } : {}),
      },
      maxAttempts,
      retryMode: 'standard',
      requestHandler: {
        connectionTimeout: Math.min(timeoutMs, MAX_CONNECT_TIMEOUT_MS),
        requestTimeout: timeoutMs,
        throwOnRequestTimeout: true,
        socketTimeout: timeoutMs,
      },
    };
    // With an explicit endpoint, FIPS/dual-stack settings from the environment would only make
    // the SDK refuse it; they are pinned off so the endpoint given is the one used.
    const pinned = { useFipsEndpoint: false, useDualstackEndpoint: false };
    this.#sm = new SecretsManagerClient({ ...common, ...(smEndpoint ? { endpoint: smEndpoint, ...pinned } : {}) });
    this.#kms = new KMSClient({ ...common, ...(kmsEndpoint ? { endpoint: kmsEndpoint, ...pinned } : {}) });
  }

  /** Secret name of a key. */
  secretName(name: string): string {
    return this.prefix + name;
  }

  async create(entry: KeyEntry): Promise<void> {
    checkEntry(entry);
    await this.#requireUsableKmsKey('create', entry.name);
    await this.#call('create', entry.name, (abortSignal) =>
      this.#sm.send(
        new CreateSecretCommand({
          Name: this.secretName(entry.name),
          Description: ownerDescription(entry.name),
          KmsKeyId: this.kmsKeyId,
          SecretString: serialize(entry),
        }),
        { abortSignal },
      ),
    );
  }

  async get(name: string): Promise<KeyEntry> {
    validateKeyName(name);
    // Both at once: a stale KMS state costs no extra round trip.
    const [secret, kms] = await Promise.allSettled([
      this.#call('get', name, (abortSignal) =>
        this.#sm.send(new GetSecretValueCommand({ SecretId: this.secretName(name) }), { abortSignal }),
      ),
      this.#requireUsableKmsKey('get', name),
    ]);
    if (secret.status === 'rejected') {
      const err = secret.reason as unknown;
      // A missing key is a missing key, whatever KMS says; anything else yields to a KMS verdict.
      if (err instanceof MountdError && err.code === ErrorCode.KeyNotFound) throw err;
      if (kms.status === 'rejected') throw kms.reason;
      throw err;
    }
    if (kms.status === 'rejected') throw kms.reason;
    return this.#parse(name, secret.value.SecretString);
  }

  async update(entry: KeyEntry): Promise<void> {
    checkEntry(entry);
    // Proves the key exists, is one of ours and is readable before it is replaced, as FsKeystore does.
    (await this.get(entry.name)).key.fill(0);
    await this.#call('update', entry.name, (abortSignal) =>
      this.#sm.send(new PutSecretValueCommand({ SecretId: this.secretName(entry.name), SecretString: serialize(entry) }), {
        abortSignal,
      }),
    );
  }

  async delete(name: string): Promise<void> {
    validateKeyName(name);
    const secretId = this.secretName(name);
    // A forced DeleteSecret of a missing secret succeeds, so look first.
    const described = await this.#call('delete', name, (abortSignal) =>
      this.#sm.send(new DescribeSecretCommand({ SecretId: secretId }), { abortSignal }),
    );
    if (described.DeletedDate) throw this.#keyNotFound(name);
    await this.#call('delete', name, (abortSignal) =>
      this.#sm.send(new DeleteSecretCommand({ SecretId: secretId, ForceDeleteWithoutRecovery: true }), { abortSignal }),
    );
  }

  async list(prefix = ''): Promise<string[]> {
    if (typeof prefix !== 'string') throw new MountdError(ErrorCode.InvalidArgument, 'list prefix must be a string');
    const full = this.prefix + prefix;
    // The name filter is a prefix match (case-insensitive on AWS), so results are re-checked below.
    const filters: Filter[] | undefined = full === '' ? undefined : [{ Key: 'name', Values: [full] }];
    const names = new Set<string>();
    let nextToken: string | undefined;
    let pages = 0;
    do {
      const page = await this.#call('list', undefined, (abortSignal) =>
        this.#sm.send(
          new ListSecretsCommand({ Filters: filters, MaxResults: this.#pageSize, NextToken: nextToken }),
          { abortSignal },
        ),
      );
      for (const s of page.SecretList ?? []) {
        const secretName = s.Name;
        if (typeof secretName !== 'string' || !secretName.startsWith(full) || s.DeletedDate) continue;
        const name = secretName.slice(this.prefix.length);
        if (isValidKeyName(name) && s.Description === ownerDescription(name)) names.add(name);
      }
      nextToken = page.NextToken || undefined;
      // A service that keeps answering with a token must not keep us here forever.
      if (++pages > 100_000) throw this.#unavailable('list keys', 'ListSecrets pagination does not end');
    } while (nextToken);
    // Code-unit order, as the other keystores sort.
    return [...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /**
   * Probes Secrets Manager (ListSecrets, one result) and KMS (DescribeKey) unless `probe` is
   * false, then reports what it saw. Never throws.
   */
  async status(options: { probe?: boolean } = {}): Promise<AwsKeystoreStatus> {
    if (options.probe ?? true) {
      const full = this.prefix;
      const [sm, kms] = await Promise.allSettled([
        this.#call('probe', undefined, (abortSignal) =>
          this.#sm.send(
            new ListSecretsCommand({ MaxResults: 1, Filters: full === '' ? undefined : [{ Key: 'name', Values: [full] }] }),
            { abortSignal },
          ),
        ),
        this.#checkKms ? this.#kmsKeyState(true) : Promise.resolve(undefined),
      ]);
      // Reachable: both services answered. A KMS error answer (say, the key does not exist) is
      // reported through kmsKeyState and lastError, not as an unreachable key store.
      this.#reachable =
        sm.status === 'fulfilled' && (kms.status === 'fulfilled' || this.#answered.has(kms.reason as object));
      if (kms.status === 'fulfilled' && kms.value !== undefined && kms.value !== 'Enabled') {
        this.#recordFailure(this.#kmsUnusableMessage(kms.value));
      }
    }
    const out: AwsKeystoreStatus = {
      kind: 'aws',
      endpoint: this.endpoint,
      kmsEndpoint: this.kmsEndpoint,
      region: this.region,
      kmsKeyId: this.kmsKeyId,
      prefix: this.prefix,
      reachable: this.#reachable ?? false,
    };
    if (this.#kmsState) out.kmsKeyState = this.#kmsState.state;
    if (this.#lastError) {
      out.lastError = this.#lastError.message;
      out.lastErrorAt = this.#lastError.at.toISOString();
    }
    return out;
  }

  /** Closes the SDK clients' sockets. The keystore is unusable afterwards. */
  close(): void {
    this.#sm.destroy();
    this.#kms.destroy();
  }

  // ------------------------------------------------------------------ internals

  get #label(): string {
    return `aws keystore (Secrets Manager at ${this.endpoint})`;
  }

  #keyNotFound(name: string): MountdError {
    return new MountdError(ErrorCode.KeyNotFound, `key '${name}' does not exist`);
  }

  #unavailable(what: string, detail: string, cause?: unknown): MountdError {
    const message = `${this.#label}: cannot ${what}: ${detail}`;
    this.#recordFailure(message);
    const err = new MountdError(ErrorCode.KeyServerUnavailable, message, cause === undefined ? undefined : { cause });
    this.#details.set(err, `cannot ${what}: ${detail}`);
    return err;
  }

  #recordFailure(message: string): void {
    this.#lastError = { message, at: new Date() };
  }

  #kmsUnusableMessage(state: string): string {
    return state === 'Disabled'
      ? `the AWS KMS key '${this.kmsKeyId}' is disabled (KeyState Disabled)`
      : `the AWS KMS key '${this.kmsKeyId}' is not enabled (KeyState ${state})`;
  }

  #kmsUnusable(op: Op, name: string | undefined, state: string): MountdError {
    const what = name === undefined ? op : `key '${name}' is unusable`;
    const message = `${this.#label}: ${what}: ${this.#kmsUnusableMessage(state)}`;
    this.#recordFailure(message);
    return new MountdError(ErrorCode.KeyDisabled, message);
  }

  /** The KMS key's KeyState, from a cache younger than the TTL or from DescribeKey. */
  #kmsKeyState(force = false): Promise<string> {
    const cached = this.#kmsState;
    if (!force && cached && Date.now() - cached.at < this.#kmsStateTtlMs) return Promise.resolve(cached.state);
    if (!this.#kmsInflight) {
      const started = Date.now();
      this.#kmsInflight = this.#call('kms', undefined, (abortSignal) =>
        this.#kms.send(new DescribeKeyCommand({ KeyId: this.kmsKeyId }), { abortSignal }),
      )
        .then((out) => {
          const meta = out.KeyMetadata;
          const state = meta?.KeyState ?? (meta?.Enabled === true ? 'Enabled' : meta?.Enabled === false ? 'Disabled' : 'Unknown');
          // A key both reported enabled and in another state is not trusted as enabled.
          const effective = state === 'Enabled' && meta?.Enabled === false ? 'Disabled' : state;
          // Dated from the request's start, so the TTL never stretches by the round trip.
          this.#kmsState = { state: effective, at: started };
          return effective;
        })
        .finally(() => {
          this.#kmsInflight = undefined;
        });
    }
    return this.#kmsInflight;
  }

  async #requireUsableKmsKey(op: Op, name: string, force = false): Promise<void> {
    if (!this.#checkKms) return;
    let state: string;
    try {
      state = await this.#kmsKeyState(force);
    } catch (err) {
      // The DescribeKey failure is shared by every caller waiting on it; say which operation it stopped.
      const detail = err instanceof MountdError ? this.#details.get(err) : undefined;
      if (detail === undefined || !(err instanceof MountdError)) throw err;
      const wrapped = new MountdError(err.code, `${this.#label}: cannot ${this.#describeOp(op, name)}: ${detail}`, {
        cause: err.cause,
      });
      if (this.#answered.has(err)) this.#answered.add(wrapped);
      throw wrapped;
    }
    if (state !== 'Enabled') throw this.#kmsUnusable(op, name, state);
  }

  /** Runs one AWS request under the operation deadline and maps its failure. */
  async #call<T>(op: Op, name: string | undefined, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const ac = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new Deadline());
        ac.abort();
      }, this.timeoutMs);
    });
    try {
      const out = await Promise.race([run(ac.signal), deadline]);
      this.#reachable = true;
      return out;
    } catch (err) {
      throw await this.#map(op, name, err);
    } finally {
      clearTimeout(timer);
    }
  }

  async #map(op: Op, name: string | undefined, err: unknown): Promise<MountdError> {
    if (err instanceof MountdError) return err;
    const fault = (err as { $fault?: unknown } | undefined)?.$fault;
    const mapped = await this.#mapError(op, name, err);
    if (fault === 'client' || fault === 'server') this.#answered.add(mapped);
    return mapped;
  }

  async #mapError(op: Op, name: string | undefined, err: unknown): Promise<MountdError> {
    const what = this.#describeOp(op, name);
    if (err instanceof Deadline || (err instanceof Error && err.name === 'AbortError')) {
      this.#reachable = false;
      return this.#unavailable(what, `timed out after ${this.timeoutMs} ms`);
    }
    const awsName = awsErrorName(err);
    const fault = (err as { $fault?: unknown } | undefined)?.$fault;
    // A service answer (an AWS error with a fault) means AWS was reached; a network error does not.
    this.#reachable = fault === 'client' || fault === 'server';

    if (name !== undefined) {
      if (awsName === 'ResourceNotFoundException') return this.#keyNotFound(name);
      if (awsName === 'ResourceExistsException') {
        return new MountdError(ErrorCode.KeyExists, `key '${name}' already exists`);
      }
      if (scheduledForDeletion(err)) {
        return op === 'create'
          ? new MountdError(ErrorCode.KeyExists, `key '${name}' already exists (its secret is scheduled for deletion)`)
          : this.#keyNotFound(name);
      }
      // Secrets Manager could not use the KMS key: say whether the key is disabled.
      if (awsName === 'DecryptionFailure' || awsName === 'EncryptionFailure') {
        try {
          await this.#requireUsableKmsKey(op, name, true);
        } catch (kmsErr) {
          if (kmsErr instanceof MountdError && kmsErr.code === ErrorCode.KeyDisabled) return kmsErr;
        }
      }
    }
    if (op === 'kms') {
      if (awsName === 'NotFoundException') {
        // The key we knew is gone: do not keep reporting its last state.
        this.#kmsState = undefined;
        return this.#unavailable(what, `it does not exist (${describeAwsError(err)})`, sanitize(err));
      }
      if (awsName === 'DisabledException' || awsName === 'KMSInvalidStateException') {
        return this.#kmsUnusable(op, name, 'Disabled');
      }
    }
    return this.#unavailable(what, describeAwsError(err), sanitize(err));
  }

  #describeOp(op: Op, name: string | undefined): string {
    switch (op) {
      case 'create':
        return `create key '${name}'`;
      case 'get':
        return `read key '${name}'`;
      case 'update':
        return `update key '${name}'`;
      case 'delete':
        return `delete key '${name}'`;
      case 'list':
        return 'list keys';
      case 'kms':
        return this.kmsEndpoint === this.endpoint
          ? `describe the AWS KMS key '${this.kmsKeyId}'`
          : `describe the AWS KMS key '${this.kmsKeyId}' at ${this.kmsEndpoint}`;
      case 'probe':
        return 'reach Secrets Manager';
    }
  }

  #parse(name: string, secretString: string | undefined): KeyEntry {
    const where = `${this.#label}: secret '${this.secretName(name)}'`;
    if (typeof secretString !== 'string') throw integrity(`${where} (no SecretString)`);
    let doc: Partial<SecretDocV1>;
    try {
      doc = JSON.parse(secretString) as Partial<SecretDocV1>;
    } catch {
      // JSON.parse's message quotes the input, which holds key material: no cause here.
      throw integrity(`${where} (not JSON)`);
    }
    if (typeof doc !== 'object' || doc === null) throw integrity(where);
    if (doc.version !== 1) {
      throw new MountdError(ErrorCode.UnsupportedFormat, `${where}: unsupported version`);
    }
    if (
      doc.name !== name ||
      doc.algorithm !== 'AES256' ||
      typeof doc.created_at !== 'string' ||
      typeof doc.created_by !== 'string' ||
      typeof doc.enabled !== 'boolean' ||
      typeof doc.key !== 'string' ||
      !/^[A-Za-z0-9+/]*={0,2}$/.test(doc.key)
    ) {
      throw integrity(where);
    }
    const raw = Buffer.from(doc.key, 'base64');
    if (raw.length !== EK_LENGTH) {
      raw.fill(0);
      throw integrity(where);
    }
    const key = new Uint8Array(raw);
    raw.fill(0);
    return {
      name,
      key,
      algorithm: 'AES256',
      createdAt: doc.created_at,
      createdBy: doc.created_by,
      enabled: doc.enabled,
    };
  }
}

/** The SecretString of an entry. (A JS string cannot be wiped; the Buffer copy of the key is.) */
function serialize(entry: KeyEntry): string {
  const raw = Buffer.from(entry.key);
  try {
    const doc: SecretDocV1 = {
      version: 1,
      name: entry.name,
      algorithm: entry.algorithm,
      created_at: entry.createdAt,
      created_by: entry.createdBy,
      enabled: entry.enabled,
      key: raw.toString('base64'),
    };
    return JSON.stringify(doc);
  } finally {
    raw.fill(0);
  }
}

/** Keeps an SDK error's name and message for the log, and none of its request or response. */
function sanitize(err: unknown): Error {
  const out = new Error(describeAwsError(err));
  out.name = awsErrorName(err) ?? (err instanceof Error ? err.name : 'Error');
  return out;
}
