// kesd's configuration: a JSON file (KES uses YAML; the fields follow KES's names), its
// parsing and validation, opening the keystore it names, and `kesd init`.

import { constants as fsConstants, readFileSync, statSync } from 'node:fs';
import { access, chmod, mkdir, open, readFile, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { ErrorCode, MountdError } from '../errors/index.js';
import { KeyServer } from './KeyServer.js';
import { FsKeystore, MemKeystore } from './keystore.js';
import type { Keystore } from './keystore.js';
import { AwsKeystore, type AwsKeystoreOptions } from './keystore-aws.js';
import { loadOrCreateMasterKey } from './master-key.js';
import { createSelfSignedCertificate, generateApiKey, generateCertificateKey, isIdentity } from './identity.js';
import { PolicySet } from './policy.js';
import type { PolicyDefinition } from './policy.js';

export const CONFIG_VERSION = 1;
export const DEFAULT_PORT = 7373;

export type KeystoreConfig =
  | { kind: 'fs'; path: string; masterKeyFile: string }
  | { kind: 'mem' }
  | { kind: 'aws'; options: AwsKeystoreOptions };
export type AuditConfig = { kind: 'off' } | { kind: 'stderr' } | { kind: 'file'; path: string };

export interface ApiRouteConfig {
  timeoutMs?: number;
  skipAuth?: boolean;
}

/** A validated configuration with every file path absolute. */
export interface KesdConfig {
  host: string;
  port: number;
  /** The admin identity, or undefined for none. */
  admin: string | undefined;
  tls: { keyFile: string; certFile: string; clientCaFile?: string };
  policies: Record<string, PolicyDefinition>;
  keystore: KeystoreConfig;
  audit: AuditConfig;
  errorLog: 'stderr' | 'off';
  api: Record<string, ApiRouteConfig>;
}

const bad = (file: string, msg: string) => new MountdError(ErrorCode.InvalidArgument, `${file}: ${msg}`);

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Unknown fields are errors: a typo in a security setting must not pass silently. */
function fields(file: string, where: string, v: unknown, allowed: readonly string[]): Obj {
  if (!isObj(v)) throw bad(file, `${where} must be an object`);
  for (const k of Object.keys(v)) {
    if (!allowed.includes(k)) throw bad(file, `${where}: unknown field ${JSON.stringify(k)} (known: ${allowed.join(', ')})`);
  }
  return v;
}

function str(file: string, where: string, v: unknown): string {
  if (typeof v !== 'string' || v === '') throw bad(file, `${where} must be a non-empty string`);
  return v;
}

function strList(file: string, where: string, v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw bad(file, `${where} must be a list of strings`);
  return v as string[];
}

/** "HOST:PORT" or "[IPv6]:PORT". */
export function parseAddress(text: string): { host: string; port: number } {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]]+):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new MountdError(ErrorCode.InvalidArgument, `address must be HOST:PORT, got ${JSON.stringify(text)}`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

/** "500ms", "15s", "2m". */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(text);
  if (!m) throw new MountdError(ErrorCode.InvalidArgument, `duration must look like 500ms, 15s or 2m, got ${JSON.stringify(text)}`);
  const n = Number(m[1]);
  const ms = m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : n * 60_000;
  if (!(ms > 0)) throw new MountdError(ErrorCode.InvalidArgument, `duration must be positive, got ${JSON.stringify(text)}`);
  return ms;
}

/** Validates a parsed config document; relative paths are resolved against `baseDir`. */
export function parseConfig(doc: unknown, baseDir: string, file = 'config'): KesdConfig {
  const top = fields(file, 'config', doc, ['version', 'address', 'admin', 'tls', 'policy', 'keystore', 'log', 'api']);
  if (top.version !== CONFIG_VERSION) throw bad(file, `version must be ${CONFIG_VERSION}`);
  const path = (where: string, v: unknown) => {
    const p = str(file, where, v);
    return isAbsolute(p) ? p : resolve(baseDir, p);
  };

  const { host, port } = (() => {
    try {
      return parseAddress(str(file, 'address', top.address ?? `127.0.0.1:${DEFAULT_PORT}`));
    } catch (err) {
      throw bad(file, (err as Error).message);
    }
  })();

  let admin: string | undefined;
  if (top.admin !== undefined) {
    const a = fields(file, 'admin', top.admin, ['identity']);
    if (a.identity !== 'disabled') {
      if (!isIdentity(a.identity)) throw bad(file, 'admin.identity must be 64 lowercase hex characters (or "disabled")');
      admin = a.identity;
    }
  }

  const t = fields(file, 'tls', top.tls, ['key', 'cert', 'client_ca']);
  const tls: KesdConfig['tls'] = { keyFile: path('tls.key', t.key), certFile: path('tls.cert', t.cert) };
  if (t.client_ca !== undefined && t.client_ca !== null) tls.clientCaFile = path('tls.client_ca', t.client_ca);

  const policies: Record<string, PolicyDefinition> = {};
  if (top.policy !== undefined) {
    if (!isObj(top.policy)) throw bad(file, 'policy must be an object of named policies');
    for (const [name, def] of Object.entries(top.policy)) {
      const d = fields(file, `policy.${name}`, def, ['allow', 'deny', 'identities']);
      policies[name] = {
        allow: strList(file, `policy.${name}.allow`, d.allow),
        deny: strList(file, `policy.${name}.deny`, d.deny),
        identities: strList(file, `policy.${name}.identities`, d.identities),
      };
    }
  }

  const ks = fields(file, 'keystore', top.keystore, ['fs', 'mem', 'aws']);
  const kinds = Object.keys(ks);
  if (kinds.length !== 1) throw bad(file, 'keystore must name exactly one of: fs, mem, aws');
  let keystore: KeystoreConfig;
  if (ks.aws !== undefined) {
    keystore = { kind: 'aws', options: parseAwsKeystore(file, ks.aws, path) };
  } else if (ks.fs !== undefined) {
    const f = fields(file, 'keystore.fs', ks.fs, ['path', 'master_key_file']);
    keystore = { kind: 'fs', path: path('keystore.fs.path', f.path), masterKeyFile: path('keystore.fs.master_key_file', f.master_key_file) };
  } else {
    fields(file, 'keystore.mem', ks.mem, []);
    keystore = { kind: 'mem' };
  }

  let audit: AuditConfig = { kind: 'off' };
  let errorLog: 'stderr' | 'off' = 'stderr';
  if (top.log !== undefined) {
    const l = fields(file, 'log', top.log, ['audit', 'error']);
    if (l.audit !== undefined) {
      const a = str(file, 'log.audit', l.audit);
      audit = a === 'off' ? { kind: 'off' } : a === 'stderr' ? { kind: 'stderr' } : { kind: 'file', path: path('log.audit', a) };
    }
    if (l.error !== undefined) {
      if (l.error !== 'stderr' && l.error !== 'off') throw bad(file, 'log.error must be "stderr" or "off"');
      errorLog = l.error;
    }
  }

  const api: Record<string, ApiRouteConfig> = {};
  if (top.api !== undefined) {
    if (!isObj(top.api)) throw bad(file, 'api must be an object keyed by route path');
    for (const [route, v] of Object.entries(top.api)) {
      const r = fields(file, `api.${route}`, v, ['timeout', 'skip_auth']);
      const entry: ApiRouteConfig = {};
      if (r.timeout !== undefined) {
        try {
          entry.timeoutMs = parseDuration(str(file, `api.${route}.timeout`, r.timeout));
        } catch (err) {
          throw bad(file, `api.${route}.timeout: ${(err as Error).message}`);
        }
      }
      if (r.skip_auth !== undefined) {
        if (typeof r.skip_auth !== 'boolean') throw bad(file, `api.${route}.skip_auth must be true or false`);
        entry.skipAuth = r.skip_auth;
      }
      api[route] = entry;
    }
  }

  // Fails early on bad globs, bad identities and an identity in two policies.
  try {
    new PolicySet({ admin, policies });
  } catch (err) {
    throw bad(file, (err as Error).message);
  }
  return { host, port, admin, tls, policies, keystore, audit, errorLog, api };
}

export async function loadConfig(file: string): Promise<KesdConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new MountdError(ErrorCode.InvalidArgument, `${file}: cannot read the config file`, { cause: err });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new MountdError(ErrorCode.InvalidArgument, `${file}: not valid JSON (${(err as Error).message})`);
  }
  return parseConfig(doc, dirname(resolve(file)), file);
}

/** Opens the configured keystore and a KeyServer over it. An fs keystore needs its master key file to exist. */
export async function openKeystore(config: KesdConfig): Promise<{ keystore: Keystore; keys: KeyServer }> {
  let keystore: Keystore;
  if (config.keystore.kind === 'aws') {
    // No EK cache in the KeyServer: a KMS key disabled in AWS must take effect within kms_state_ttl_ms.
    keystore = new AwsKeystore(config.keystore.options);
    return { keystore, keys: new KeyServer(keystore, { cacheKeys: false }) };
  }
  if (config.keystore.kind === 'mem') {
    keystore = new MemKeystore();
  } else {
    const { path, masterKeyFile } = config.keystore;
    try {
      await access(masterKeyFile, fsConstants.F_OK);
    } catch {
      // Creating a fresh key here would silently orphan every key sealed under the old one.
      throw new MountdError(ErrorCode.InvalidArgument, `master key file ${masterKeyFile} does not exist (kesd init creates one)`);
    }
    const masterKey = await loadOrCreateMasterKey(masterKeyFile);
    try {
      keystore = new FsKeystore(path, masterKey);
    } finally {
      masterKey.fill(0);
    }
  }
  return { keystore, keys: new KeyServer(keystore) };
}

// ------------------------------------------------------------------ kesd init

export interface InitOptions {
  /** Default 127.0.0.1:7373. */
  address?: string;
  /** Extra subjectAltNames for the server certificate (localhost, 127.0.0.1 and ::1 are always in). */
  dnsNames?: readonly string[];
  ipAddresses?: readonly string[];
  keystore?: 'fs' | 'mem';
  /** Server certificate validity (default 365 days). */
  days?: number;
}

export interface InitResult {
  configFile: string;
  /** Shown once; only its identity is stored. */
  adminApiKey: string;
  adminIdentity: string;
  certFile: string;
  keyFile: string;
  masterKeyFile?: string;
  keystoreDir?: string;
  auditFile: string;
  certNotAfter: Date;
}

/** Key routes a mountd daemon uses, for the example policy `kesd init` writes. */
export const MOUNTD_POLICY_PATHS = [
  '/v1/key/create/*',
  '/v1/key/describe/*',
  '/v1/key/list/*',
  '/v1/key/delete/*',
  '/v1/key/generate/*',
  '/v1/key/encrypt/*',
  '/v1/key/decrypt/*',
  '/v1/key/disable/*',
  '/v1/key/enable/*',
  '/v1/status',
  '/v1/ready',
] as const;

/** Writes a first configuration into `dir`: server certificate and key, master key, keystore, config.json. */
export async function initKesd(dir: string, options: InitOptions = {}): Promise<InitResult> {
  const root = resolve(dir);
  const address = options.address ?? `127.0.0.1:${DEFAULT_PORT}`;
  parseAddress(address);
  const keystoreKind = options.keystore ?? 'fs';
  await mkdir(root, { recursive: true, mode: 0o700 });
  await chmod(root, 0o700);
  const files = {
    config: join(root, 'config.json'),
    cert: join(root, 'server.crt'),
    key: join(root, 'server.key'),
    master: join(root, 'master.key'),
    keys: join(root, 'keys'),
    audit: join(root, 'audit.log'),
  };
  for (const f of [files.config, files.cert, files.key, ...(keystoreKind === 'fs' ? [files.master] : [])]) {
    if (await exists(f)) throw new MountdError(ErrorCode.Exists, `${f} already exists: kesd init only writes a fresh configuration`);
  }

  const serverKey = generateCertificateKey();
  const dnsNames = unique(['localhost', ...(options.dnsNames ?? [])]);
  const ipAddresses = unique(['127.0.0.1', '::1', ...(options.ipAddresses ?? [])]);
  const cert = createSelfSignedCertificate({ privateKey: serverKey, commonName: 'localhost', usage: 'server', dnsNames, ipAddresses, days: options.days ?? 365 });
  await writeNew(files.key, serverKey.export({ type: 'pkcs8', format: 'pem' }).toString(), 0o600);
  await writeNew(files.cert, cert.pem, 0o644);

  let keystore: Record<string, unknown>;
  if (keystoreKind === 'fs') {
    (await loadOrCreateMasterKey(files.master)).fill(0);
    await mkdir(files.keys, { recursive: true, mode: 0o700 });
    keystore = { fs: { path: 'keys', master_key_file: 'master.key' } };
  } else {
    keystore = { mem: {} };
  }

  const admin = generateApiKey();
  const doc = {
    version: CONFIG_VERSION,
    address,
    admin: { identity: admin.identity },
    tls: { key: 'server.key', cert: 'server.crt' },
    policy: {
      mountd: { allow: [...MOUNTD_POLICY_PATHS], deny: [], identities: [] as string[] },
    },
    keystore,
    log: { audit: 'audit.log', error: 'stderr' },
  };
  await writeNew(files.config, `${JSON.stringify(doc, null, 2)}\n`, 0o600);
  return {
    configFile: files.config,
    adminApiKey: admin.text,
    adminIdentity: admin.identity,
    certFile: files.cert,
    keyFile: files.key,
    ...(keystoreKind === 'fs' ? { masterKeyFile: files.master, keystoreDir: files.keys } : {}),
    auditFile: files.audit,
    certNotAfter: cert.notAfter,
  };
}

function unique(xs: readonly string[]): string[] {
  return [...new Set(xs)];
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

async function writeNew(path: string, text: string, mode: number): Promise<void> {
  const fh = await open(path, 'wx', mode);
  try {
    await fh.writeFile(text, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * keystore.aws: {"endpoint"?, "kms_endpoint"?, "region", "kms_key", "prefix"?, "timeout_ms"?,
 * "max_attempts"?, "kms_state_ttl_ms"?, "credentials_file"} where credentials_file is a 0600 JSON
 * file {"access_key", "secret_key", "session_token"?}: secrets never sit in the config itself.
 */
function parseAwsKeystore(file: string, value: unknown, resolvePath: (what: string, v: unknown) => string): AwsKeystoreOptions {
  const a = fields(file, 'keystore.aws', value, ['endpoint', 'kms_endpoint', 'region', 'kms_key', 'prefix', 'timeout_ms', 'max_attempts', 'kms_state_ttl_ms', 'credentials_file']);
  const str = (what: string, v: unknown, required: boolean): string | undefined => {
    if (v === undefined || v === null) {
      if (required) throw bad(file, `keystore.aws.${what} is required`);
      return undefined;
    }
    if (typeof v !== 'string' || v === '') throw bad(file, `keystore.aws.${what} must be a non-empty string`);
    return v;
  };
  const num = (what: string, v: unknown): number | undefined => {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw bad(file, `keystore.aws.${what} must be a positive integer`);
    return v;
  };
  const credFile = resolvePath('keystore.aws.credentials_file', a.credentials_file);
  let creds: Obj;
  try {
    const st = statSync(credFile);
    if ((st.mode & 0o077) !== 0) throw new Error(`${credFile} must not be readable by group or others (chmod 600)`);
    creds = JSON.parse(readFileSync(credFile, 'utf8')) as Obj;
  } catch (err) {
    throw bad(file, `keystore.aws.credentials_file: ${(err as Error).message}`);
  }
  if (typeof creds.access_key !== 'string' || typeof creds.secret_key !== 'string') {
    throw bad(file, 'keystore.aws.credentials_file must hold {"access_key": "...", "secret_key": "..."}');
  }
  return {
    endpoint: str('endpoint', a.endpoint, false),
    kmsEndpoint: str('kms_endpoint', a.kms_endpoint, false),
    region: str('region', a.region, true)!,
    kmsKeyId: str('kms_key', a.kms_key, true)!,
    prefix: str('prefix', a.prefix, false),
    timeoutMs: num('timeout_ms', a.timeout_ms),
    maxAttempts: num('max_attempts', a.max_attempts),
    kmsStateTtlMs: num('kms_state_ttl_ms', a.kms_state_ttl_ms),
    credentials: {
      accessKeyId: creds.access_key,
      secretAccessKey: creds.secret_key,
      sessionToken: typeof creds.session_token === 'string' ? creds.session_token : undefined,
    },
  };
}

/** Reads a standalone `keystore.aws` JSON object from a file (mountd --aws-keystore FILE). */
export function loadAwsKeystoreConfig(file: string): AwsKeystoreOptions {
  const abs = resolve(file);
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(abs, 'utf8'));
  } catch (err) {
    throw bad(abs, (err as Error).message);
  }
  const base = dirname(abs);
  return parseAwsKeystore(abs, doc, (what, v) => {
    if (typeof v !== 'string' || v === '') throw bad(abs, `${what} must be a path`);
    return isAbsolute(v) ? v : join(base, v);
  });
}
