// KesClient and openRemoteKeyService against a real kesd process (and, for failure modes, an
// in-process kesd server): the same behaviour checks the in-process key service passes,
// error codes, timeouts, retries, and kesd stopped and restarted under a client.

import test from 'ava';
import type { ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { ErrorCode, MountdError } from '../src/errors/index.js';
import { KeyServer, MemKeystore } from '../src/kes/index.js';
import type { KeyEntry, Keystore } from '../src/kes/index.js';
import { ROUTES, createAuditSink, startKesServer } from '../src/kes/http/index.js';
import type { KesServer, KesServerOptions } from '../src/kes/http/index.js';
import { createSelfSignedCertificate, generateApiKey, generateCertificateKey, identityOfCertificate } from '../src/kes/identity.js';
import { PolicySet } from '../src/kes/policy.js';
import { InProcessKeyService } from '../src/kms/InProcessKeyService.js';
import { KesClient } from '../src/kms/KesClient.js';
import type { KeyService } from '../src/kms/KeyService.js';
import { openRemoteKeyService, remoteOptionsFromEnv } from '../src/kms/remote.js';
import { startKesd, tempDir } from './helpers/kesd.js';
import type { Kesd } from './helpers/kesd.js';

const enc = (s: string) => new TextEncoder().encode(s);

async function rejectsWith(t: ExecutionContext, p: Promise<unknown>, code: ErrorCode): Promise<MountdError> {
  const err = await t.throwsAsync(p, { instanceOf: MountdError });
  t.is(err?.code, code, err?.message);
  return err as MountdError;
}

// A client certificate (not an API key) for the certificate-based variants.
const certKey = generateCertificateKey();
const clientCert = createSelfSignedCertificate({ privateKey: certKey, commonName: 'mountd-test', usage: 'client', days: 2 });
const clientKeyPem = certKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const certIdentity = identityOfCertificate(clientCert.der);

let kesd: Kesd;
let work: string;
const cleanups: Array<() => Promise<void> | void> = [];

test.before(async () => {
  work = await tempDir('kes-client-test');
  kesd = await startKesd({
    policies: {
      // Everything the key service does, for keys starting with "c-".
      'mountd-cert': { allow: ['/v1/key/*/c-*', '/v1/status'], identities: [certIdentity] },
    },
  });
});

test.after.always(async () => {
  for (const c of cleanups.reverse()) await c();
  await kesd?.cleanup();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

function adminClient(extra: Partial<ConstructorParameters<typeof KesClient>[0]> = {}): KesClient {
  const c = new KesClient({ endpoint: kesd.endpoint, ca: kesd.caPem, apiKey: kesd.adminApiKey, ...extra });
  cleanups.push(() => c.close());
  return c;
}

// ------------------------------------------------------------------ shared behaviour checks

/** What every KeyService must do, whatever is behind it. `p` keeps runs apart on one server. */
async function behaviour(t: ExecutionContext, svc: KeyService, p: string): Promise<void> {
  const a = `${p}-a`;
  const b = `${p}-b`;
  await svc.createKey(b);
  await svc.createKey(a);
  await rejectsWith(t, svc.createKey(a), ErrorCode.KeyExists);

  const info = await svc.describeKey(a);
  t.is(info.name, a);
  t.is(info.algorithm, 'AES256');
  t.true(info.enabled);
  t.true(info.createdBy.length > 0);
  t.false(Number.isNaN(Date.parse(info.createdAt)));
  t.deepEqual((await svc.listKeys(p)).map((k) => k.name), [a, b]);
  t.deepEqual((await svc.listKeys(a)).map((k) => k.name), [a]);
  t.deepEqual(await svc.listKeys(`${p}-zzz`), []);

  const ctxA = enc(JSON.stringify({ bucket: 'bucket/obj-a' }));
  const ctxB = enc(JSON.stringify({ bucket: 'bucket/obj-b' }));
  const g = await svc.generate(a, ctxA);
  t.is(g.plaintext.length, 32);
  t.is(g.ciphertext.length, 76);
  t.deepEqual(await svc.decrypt(a, g.ciphertext, ctxA), g.plaintext);
  const g2 = await svc.generate(a, ctxA);
  t.notDeepEqual(g2.plaintext, g.plaintext);
  await rejectsWith(t, svc.decrypt(a, g.ciphertext, ctxB), ErrorCode.NotAuthentic);
  await rejectsWith(t, svc.decrypt(b, g.ciphertext, ctxA), ErrorCode.NotAuthentic);
  const tampered = new Uint8Array(g.ciphertext);
  tampered[5] = (tampered[5] ?? 0) ^ 1;
  await rejectsWith(t, svc.decrypt(a, tampered, ctxA), ErrorCode.NotAuthentic);
  await rejectsWith(t, svc.decrypt(a, g.ciphertext.subarray(0, 40), ctxA), ErrorCode.NotAuthentic);

  for (const size of [0, 1, 1000]) {
    const pt = new Uint8Array(randomBytes(size));
    const ct = await svc.encrypt(b, pt, ctxB);
    t.is(ct.length, size + 44);
    t.deepEqual(await svc.decrypt(b, ct, ctxB), pt);
  }

  await svc.disableKey(a);
  await svc.disableKey(a); // idempotent
  await rejectsWith(t, svc.generate(a, ctxA), ErrorCode.KeyDisabled);
  await rejectsWith(t, svc.decrypt(a, g.ciphertext, ctxA), ErrorCode.KeyDisabled);
  await rejectsWith(t, svc.encrypt(a, enc('x'), ctxA), ErrorCode.KeyDisabled);
  t.false((await svc.describeKey(a)).enabled);
  t.deepEqual((await svc.listKeys(p)).map((k) => [k.name, k.enabled]), [[a, false], [b, true]]);
  t.is((await svc.generate(b, ctxA)).ciphertext.length, 76, 'other keys are unaffected');
  await svc.enableKey(a);
  t.true((await svc.describeKey(a)).enabled);
  t.deepEqual(await svc.decrypt(a, g.ciphertext, ctxA), g.plaintext);

  await svc.deleteKey(b);
  await rejectsWith(t, svc.describeKey(b), ErrorCode.KeyNotFound);
  await rejectsWith(t, svc.deleteKey(b), ErrorCode.KeyNotFound);
  await rejectsWith(t, svc.generate(b, ctxA), ErrorCode.KeyNotFound);
  await rejectsWith(t, svc.decrypt(b, g.ciphertext, ctxA), ErrorCode.KeyNotFound);
  await rejectsWith(t, svc.disableKey(b), ErrorCode.KeyNotFound);
  await rejectsWith(t, svc.enableKey(b), ErrorCode.KeyNotFound);
  t.deepEqual((await svc.listKeys(p)).map((k) => k.name), [a]);

  await rejectsWith(t, svc.createKey('bad name'), ErrorCode.InvalidKeyName);
  await rejectsWith(t, svc.describeKey('../etc'), ErrorCode.InvalidKeyName);
  await rejectsWith(t, svc.generate('-x', ctxA), ErrorCode.InvalidKeyName);

  const st = await svc.status();
  t.true(st.reachable);
  t.is(st.lastError, undefined);
}

test('behaviour: in-process key service (the reference)', async (t) => {
  await behaviour(t, new InProcessKeyService(new KeyServer(new MemKeystore())), 'ip');
});

test('behaviour: KesClient with an API key against kesd', async (t) => {
  const client = adminClient();
  await behaviour(t, client, 'api');
  const st = await client.status();
  t.deepEqual(st, { kind: 'remote', endpoint: kesd.endpoint, reachable: true });
  t.is(client.identity, kesd.adminIdentity);
  t.is((await client.describeKey('api-a')).createdBy, kesd.adminIdentity);
  t.regex((await client.version()).version, /^\d+\.\d+\.\d+/);
});

test('behaviour: KesClient with a client certificate against kesd (policy-limited identity)', async (t) => {
  const client = new KesClient({ endpoint: kesd.endpoint, ca: kesd.caPem, cert: clientCert.pem, key: clientKeyPem });
  cleanups.push(() => client.close());
  t.is(client.identity, certIdentity);
  // listKeys needs /v1/key/list/c-* and each describe: both inside "/v1/key/*/c-*".
  await behaviour(t, client, 'c-cert');
  t.is((await client.describeKey('c-cert-a')).createdBy, certIdentity);
  // Outside its policy: access denied, never mistaken for "not found".
  await rejectsWith(t, client.createKey('other'), ErrorCode.KeyAccessDenied);
  await rejectsWith(t, client.describeKey('api-a'), ErrorCode.KeyAccessDenied);
  await rejectsWith(t, client.listKeys(), ErrorCode.KeyAccessDenied);
});

test('behaviour: openRemoteKeyService (cache over KesClient) from certificate, key and CA files', async (t) => {
  const certFile = path.join(work, 'client.crt');
  const keyFile = path.join(work, 'client.key');
  await fsp.writeFile(certFile, clientCert.pem);
  await fsp.writeFile(keyFile, clientKeyPem, { mode: 0o600 });
  const svc = await openRemoteKeyService({ endpoint: kesd.endpoint, certFile, keyFile, caFile: kesd.certFile, cacheTtlMs: 60_000 });
  cleanups.push(() => svc.client.close());
  await behaviour(t, svc, 'c-remote');
  t.is((await svc.status()).kind, 'remote');
  // The cache in front: a second decrypt of the same DEK needs no key server.
  const g = await svc.generate('c-remote-a', enc('ctx'));
  t.true(svc.stats().entries >= 1);
  t.deepEqual(await svc.decrypt('c-remote-a', g.ciphertext, enc('ctx')), g.plaintext);
});

test('openRemoteKeyService and KesClient refuse incomplete or contradictory settings', async (t) => {
  const err = (p: () => unknown) => t.throws(p, { instanceOf: MountdError });
  err(() => new KesClient({ endpoint: kesd.endpoint }));
  err(() => new KesClient({ endpoint: 'http://127.0.0.1:7373', apiKey: kesd.adminApiKey }));
  err(() => new KesClient({ endpoint: 'https://127.0.0.1:7373/v1', apiKey: kesd.adminApiKey }));
  err(() => new KesClient({ endpoint: 'not a url', apiKey: kesd.adminApiKey }));
  err(() => new KesClient({ endpoint: kesd.endpoint, apiKey: 'kes:v1:nope' }));
  err(() => new KesClient({ endpoint: kesd.endpoint, apiKey: kesd.adminApiKey, cert: clientCert.pem, key: clientKeyPem }));
  err(() => new KesClient({ endpoint: kesd.endpoint, apiKey: kesd.adminApiKey, requestTimeoutMs: 0 }));
  await t.throwsAsync(openRemoteKeyService({ endpoint: kesd.endpoint, certFile: '/nonexistent.crt' }), { instanceOf: MountdError });
  await t.throwsAsync(openRemoteKeyService({ endpoint: kesd.endpoint, certFile: '/nonexistent.crt', keyFile: '/nonexistent.key' }), {
    message: /cannot read the client certificate file/,
  });
  // Opening never contacts the server: a dead endpoint opens fine.
  const svc = await openRemoteKeyService({ endpoint: 'https://127.0.0.1:1', apiKey: kesd.adminApiKey, retries: 0 });
  const st = await svc.status();
  t.false(st.reachable);
  t.regex(st.lastError ?? '', /ECONNREFUSED/);
  svc.client.close();

  t.is(remoteOptionsFromEnv({}), undefined);
  t.deepEqual(
    remoteOptionsFromEnv({
      MINIO_KMS_KES_ENDPOINT: 'https://kes1:7373,https://kes2:7373',
      MINIO_KMS_KES_API_KEY: 'kes:v1:x',
      MINIO_KMS_KES_CAPATH: '/etc/ca.pem',
      MINIO_KMS_KES_CERT_FILE: '',
    }),
    { endpoint: 'https://kes1:7373', apiKey: 'kes:v1:x', caFile: '/etc/ca.pem' },
  );
});

// ------------------------------------------------------------------ failure modes (in-process server)

/** A keystore that can be made slow or failing. */
class FaultyKeystore implements Keystore {
  delayMs = 0;
  failing = false;
  readonly inner = new MemKeystore();
  async #gate(): Promise<void> {
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.failing) throw new MountdError(ErrorCode.KeyServerUnavailable, 'keystore: simulated backend outage');
  }
  async create(e: KeyEntry) {
    await this.#gate();
    return this.inner.create(e);
  }
  async get(name: string) {
    await this.#gate();
    return this.inner.get(name);
  }
  async update(e: KeyEntry) {
    await this.#gate();
    return this.inner.update(e);
  }
  async delete(name: string) {
    await this.#gate();
    return this.inner.delete(name);
  }
  async list(prefix?: string) {
    await this.#gate();
    return this.inner.list(prefix);
  }
}

interface Harness {
  server: KesServer;
  keystore: FaultyKeystore;
  audit: string[];
  ca: string;
  apiKey: string;
  options: KesServerOptions;
  client(extra?: Partial<ConstructorParameters<typeof KesClient>[0]>): KesClient;
}

async function harness(extra: Partial<KesServerOptions> = {}): Promise<Harness> {
  const keystore = new FaultyKeystore();
  const admin = generateApiKey();
  const serverKey = generateCertificateKey();
  const cert = createSelfSignedCertificate({ privateKey: serverKey, commonName: 'localhost', usage: 'server', ipAddresses: ['127.0.0.1'] });
  const audit: string[] = [];
  const options: KesServerOptions = {
    keys: new KeyServer(keystore, { cacheKeys: false }),
    keystore,
    policies: new PolicySet({ admin: admin.identity }),
    tls: { key: serverKey.export({ type: 'pkcs8', format: 'pem' }), cert: cert.pem },
    port: 0,
    audit: createAuditSink({ kind: 'callback', fn: (l) => audit.push(l) }),
    ...extra,
  };
  const server = await startKesServer(options);
  const h: Harness = {
    server,
    keystore,
    audit,
    ca: cert.pem,
    apiKey: admin.text,
    options,
    client: (more = {}) => {
      const c = new KesClient({ endpoint: h.server.url, ca: cert.pem, apiKey: admin.text, retryDelayMs: 20, ...more });
      cleanups.push(() => c.close());
      return c;
    },
  };
  cleanups.push(() => h.server.close(100));
  return h;
}

const auditCount = (h: Harness, route: string) => h.audit.filter((l) => JSON.parse(l).route === route).length;

test('5xx (keystore failure) is KMS_UNAVAILABLE; idempotent calls are retried a bounded number of times, create is not', async (t) => {
  const h = await harness();
  const client = h.client({ retries: 2 });
  await client.createKey('k');
  h.keystore.failing = true;
  const e = await rejectsWith(t, client.describeKey('k'), ErrorCode.KeyServerUnavailable);
  t.regex(e.message, /502 keystore failure/);
  t.is(auditCount(h, '/v1/key/describe/'), 3, 'one try and two retries');
  await rejectsWith(t, client.generate('k', enc('c')), ErrorCode.KeyServerUnavailable);
  t.is(auditCount(h, '/v1/key/generate/'), 3);
  await rejectsWith(t, client.createKey('k2'), ErrorCode.KeyServerUnavailable);
  t.is(auditCount(h, '/v1/key/create/'), 2, 'the first create, and one failed create: no retry');
  await rejectsWith(t, client.deleteKey('k'), ErrorCode.KeyServerUnavailable);
  t.is(auditCount(h, '/v1/key/delete/'), 1);
  const st = await client.status();
  t.true(st.reachable, 'the server answers; its keystore does not');
  h.keystore.failing = false;
  t.is((await client.describeKey('k')).name, 'k');
  t.is((await client.status()).lastError, undefined);
});

test('retries with backoff ride out a short outage of the server', async (t) => {
  const h = await harness();
  const port = h.server.port;
  const client = h.client({ retries: 6, retryDelayMs: 50 });
  await client.createKey('k');
  const g = await client.generate('k', enc('c'));
  await h.server.close(0);
  const pending = client.decrypt('k', g.ciphertext, enc('c'));
  await new Promise((r) => setTimeout(r, 250));
  h.server = await startKesServer({ ...h.options, port });
  t.deepEqual(await pending, g.plaintext);
});

test('connect timeout: a server that accepts TCP but never speaks TLS fails fast with KMS_UNAVAILABLE', async (t) => {
  const sockets: net.Socket[] = [];
  const silent = net.createServer((s) => sockets.push(s));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
  cleanups.push(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => silent.close(() => r()));
  });
  const port = (silent.address() as net.AddressInfo).port;
  const client = new KesClient({ endpoint: `https://127.0.0.1:${port}`, apiKey: generateApiKey().text, connectTimeoutMs: 300, requestTimeoutMs: 5000, retries: 0 });
  cleanups.push(() => client.close());
  const t0 = Date.now();
  const e = await rejectsWith(t, client.describeKey('k'), ErrorCode.KeyServerUnavailable);
  t.regex(e.message, /no TLS connection within 300 ms/);
  t.true(Date.now() - t0 < 3000);
  const st = await client.status();
  t.false(st.reachable);
  t.truthy(st.lastError);
});

test('request timeout: a slow answer fails with KMS_UNAVAILABLE after requestTimeoutMs', async (t) => {
  const h = await harness();
  const client = h.client({ requestTimeoutMs: 300, retries: 0 });
  await client.createKey('k');
  h.keystore.delayMs = 4000;
  const t0 = Date.now();
  const e = await rejectsWith(t, client.describeKey('k'), ErrorCode.KeyServerUnavailable);
  t.regex(e.message, /timed out after 300 ms/);
  t.true(Date.now() - t0 < 3000);
});

test('an untrusted server certificate is KMS_UNAVAILABLE with a clear message, and not retried', async (t) => {
  const h = await harness();
  const other = createSelfSignedCertificate({ privateKey: generateCertificateKey(), commonName: 'other', usage: 'server', ipAddresses: ['127.0.0.1'] });
  const client = h.client({ ca: other.pem, retries: 3, retryDelayMs: 5000 });
  const t0 = Date.now();
  const e = await rejectsWith(t, client.describeKey('k'), ErrorCode.KeyServerUnavailable);
  t.regex(e.message, /cannot verify its TLS certificate/);
  t.true(Date.now() - t0 < 2500, 'no retry delay was spent');
  // No CA at all: the system roots do not know a self-signed kesd either.
  const noCa = new KesClient({ endpoint: h.server.url, apiKey: h.apiKey, retries: 0 });
  cleanups.push(() => noCa.close());
  await rejectsWith(t, noCa.describeKey('k'), ErrorCode.KeyServerUnavailable);
});

test('a server without the disable/enable extension (like KES) answers 404: reported as NotSupported, not KeyNotFound', async (t) => {
  const h = await harness({ routes: ROUTES.filter((r) => !/disable|enable/.test(r.path)) });
  const client = h.client();
  await client.createKey('k');
  await rejectsWith(t, client.disableKey('k'), ErrorCode.NotSupported);
  await rejectsWith(t, client.describeKey('missing'), ErrorCode.KeyNotFound);
});

// ------------------------------------------------------------------ kesd stopped and restarted

test('kesd stopped and restarted under a client: KMS_UNAVAILABLE while down, cached DEKs still serve, keys persist (fs)', async (t) => {
  const own = await startKesd({ keystore: 'fs' });
  cleanups.push(() => own.cleanup());
  const svc = await openRemoteKeyService({
    endpoint: own.endpoint,
    apiKey: own.adminApiKey,
    caFile: own.certFile,
    cacheTtlMs: 60_000,
    retries: 1,
    connectTimeoutMs: 2000,
    requestTimeoutMs: 3000,
  });
  cleanups.push(() => svc.client.close());
  await svc.createKey('persist');
  const ctx = enc('{"b":"b/o"}');
  const cached = await svc.generate('persist', ctx); // the cache keeps this DEK

  for (const down of ['stop', 'kill'] as const) {
    const uncached = await svc.client.generate('persist', ctx); // straight from kesd, not cached
    if (down === 'stop') t.is(await own.stop(), 0, 'SIGTERM exits cleanly');
    else await own.kill();
    t.false(own.running());

    t.deepEqual(await svc.decrypt('persist', cached.ciphertext, ctx), cached.plaintext, `${down}: a cached DEK still serves`);
    for (const call of [
      () => svc.decrypt('persist', uncached.ciphertext, ctx),
      () => svc.generate('persist', ctx),
      () => svc.describeKey('persist'),
      () => svc.listKeys(),
      () => svc.createKey('while-down'),
      // (A failed disable still purges the cache, by design: so only on the last round.)
      ...(down === 'kill' ? [() => svc.disableKey('persist')] : []),
    ]) {
      await rejectsWith(t, call(), ErrorCode.KeyServerUnavailable);
    }
    const st = await svc.status();
    t.false(st.reachable, down);
    t.regex(st.lastError ?? '', /ECONNREFUSED|unreachable/);

    await own.start();
    t.deepEqual(await svc.decrypt('persist', uncached.ciphertext, ctx), uncached.plaintext, `${down}: the key survived the restart`);
    t.true((await svc.describeKey('persist')).enabled);
    t.deepEqual((await svc.listKeys()).map((k) => k.name), ['persist']);
    const after = await svc.status();
    t.true(after.reachable);
    t.is(after.lastError, undefined);
  }
});
