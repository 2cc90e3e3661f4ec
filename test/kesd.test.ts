// kesd over real TLS on 127.0.0.1: the KES HTTP API v1 wire format, mTLS identities (an
// openssl-made client certificate and kes:v1: API keys), policies, limits, the audit log,
// the route table, the config file and the CLI.

import test from 'ava';
import { execFile } from 'node:child_process';
import { X509Certificate, createHash, randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode, MountdError } from '../src/errors/index.js';
import { MemKeystore, KeyServer } from '../src/kes/index.js';
import type { KeyEntry, Keystore } from '../src/kes/index.js';
import { initKesd, loadConfig, parseConfig } from '../src/kes/config.js';
import { ROUTES, createAuditSink, describeRoutes, startKesServer } from '../src/kes/http/index.js';
import {
  certificateForApiKey,
  createSelfSignedCertificate,
  generateApiKey,
  generateCertificateKey,
  identityOfCertificate,
  identityOfPublicKey,
  parseApiKey,
} from '../src/kes/identity.js';
import { PolicySet, matchGlob } from '../src/kes/policy.js';
import { KesClient } from '../src/kms/KesClient.js';
import { KESD, ROOT, kesRequest, startKesd, tempDir } from './helpers/kesd.js';
import type { Credentials, Kesd } from './helpers/kesd.js';

const run = promisify(execFile);

const genOnly = generateApiKey();
const app = generateApiKey();
const stranger = generateApiKey();
/** Unknown too, and used by the audit-log test alone: its refused /v1/metrics line is that test's. */
const auditStranger = generateApiKey();

let kesd: Kesd;
let workDir: string;
/** A client certificate made by openssl (not by our code), and its identity computed by openssl. */
let opensslClient: { cert: string; key: string; identity: string };
/** Every DEK, plaintext and imported key the tests handled: none may appear in any log. */
const secrets: Buffer[] = [];

async function opensslCert(dir: string, name: string, keyArgs: string[]): Promise<{ cert: string; key: string; identity: string }> {
  const keyFile = path.join(dir, `${name}.key`);
  const certFile = path.join(dir, `${name}.crt`);
  await run('openssl', ['req', '-x509', ...keyArgs, '-nodes', '-keyout', keyFile, '-out', certFile, '-subj', `/CN=${name}`, '-days', '2']);
  // The identity as openssl sees it: SHA-256 over the DER SubjectPublicKeyInfo.
  const { stdout: pubPem } = await run('openssl', ['x509', '-in', certFile, '-noout', '-pubkey']);
  const spki = await new Promise<Buffer>((resolve, reject) => {
    const child = execFile('openssl', ['pkey', '-pubin', '-outform', 'DER'], { encoding: 'buffer' }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
    child.stdin!.end(pubPem);
  });
  return {
    cert: await fsp.readFile(certFile, 'utf8'),
    key: await fsp.readFile(keyFile, 'utf8'),
    identity: createHash('sha256').update(spki).digest('hex'),
  };
}

test.before(async () => {
  workDir = await tempDir('kesd-test-work');
  opensslClient = await opensslCert(workDir, 'client', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']);
  kesd = await startKesd({
    policies: {
      'gen-only': {
        // Allows decrypt too, but the deny rule must win.
        allow: ['/v1/key/create/gen-*', '/v1/key/generate/gen-*', '/v1/key/decrypt/gen-*'],
        deny: ['/v1/key/decrypt/*'],
        identities: [genOnly.identity],
      },
      app: {
        allow: ['/v1/key/create/app-*', '/v1/key/generate/app-*', '/v1/key/decrypt/app-*', '/v1/key/describe/app-*', '/v1/status'],
        deny: ['/v1/key/decrypt/app-secret*'],
        identities: [app.identity],
      },
      certs: {
        allow: ['/v1/key/*/cert-*'],
        identities: [opensslClient.identity],
      },
    },
  });
});

test.after.always(async () => {
  await kesd?.cleanup();
  if (workDir) await fsp.rm(workDir, { recursive: true, force: true });
});

const admin = (): Credentials => ({ endpoint: kesd.endpoint, ca: kesd.caPem, apiKey: kesd.adminApiKey });
const as = (apiKey: string): Credentials => ({ endpoint: kesd.endpoint, ca: kesd.caPem, apiKey });
const noCert = (): Credentials => ({ endpoint: kesd.endpoint, ca: kesd.caPem });
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');

function remember(b64OrBytes: string | Uint8Array): Buffer {
  const buf = typeof b64OrBytes === 'string' ? Buffer.from(b64OrBytes, 'base64') : Buffer.from(b64OrBytes);
  secrets.push(buf);
  return buf;
}

// ------------------------------------------------------------------ route table

test('the route table is pinned, and /v1/api reports it', async (t) => {
  const table = ROUTES.map((r) => [r.methods.join('|'), r.path, r.resource, r.maxBody, r.timeoutMs, r.auth, r.audit]);
  t.deepEqual(table, [
    ['GET', '/version', 'none', 0, 10_000, 'none', false],
    ['GET', '/v1/status', 'none', 0, 15_000, 'policy', false],
    ['GET', '/v1/ready', 'none', 0, 15_000, 'policy', false],
    ['GET', '/v1/metrics', 'none', 0, 15_000, 'policy', false],
    ['GET', '/v1/api', 'none', 0, 10_000, 'policy', false],
    ['POST|PUT', '/v1/key/create/', 'key', 0, 15_000, 'policy', true],
    ['POST|PUT', '/v1/key/import/', 'key', 1_048_576, 15_000, 'policy', true],
    ['GET', '/v1/key/describe/', 'key', 0, 15_000, 'policy', true],
    ['GET', '/v1/key/list/', 'prefix', 0, 15_000, 'policy', true],
    ['DELETE', '/v1/key/delete/', 'key', 0, 15_000, 'policy', true],
    ['POST|PUT', '/v1/key/generate/', 'key', 1_048_576, 15_000, 'policy', true],
    ['POST|PUT', '/v1/key/encrypt/', 'key', 1_048_576, 15_000, 'policy', true],
    ['POST|PUT', '/v1/key/decrypt/', 'key', 1_048_576, 15_000, 'policy', true],
    ['POST|PUT', '/v1/key/disable/', 'key', 0, 15_000, 'policy', true],
    ['POST|PUT', '/v1/key/enable/', 'key', 0, 15_000, 'policy', true],
  ]);
  t.true(Object.isFrozen(ROUTES));
  const res = await kesRequest(admin(), 'GET', '/v1/api');
  t.is(res.status, 200);
  t.deepEqual(res.json(), describeRoutes(ROUTES));
  t.deepEqual(res.json()[10], { method: 'POST', path: '/v1/key/generate/', max_body: 1_048_576, timeout: 15 });
});

// ------------------------------------------------------------------ system routes

test('GET /version needs no certificate; status, ready, metrics and api need an identity', async (t) => {
  const v = await kesRequest(noCert(), 'GET', '/version');
  t.is(v.status, 200);
  t.deepEqual(Object.keys(v.json()).sort(), ['commit', 'version']);
  for (const p of ['/v1/status', '/v1/ready', '/v1/metrics', '/v1/api']) {
    const r = await kesRequest(noCert(), 'GET', p);
    t.is(r.status, 401, p);
    t.deepEqual(r.json(), { message: 'not authorized: no client certificate' });
  }
  const s = await kesRequest(admin(), 'GET', '/v1/status');
  t.is(s.status, 200);
  const status = s.json();
  for (const f of ['version', 'os', 'arch', 'uptime', 'num_cpu', 'num_cpu_used', 'mem_heap_used', 'mem_stack_used', 'keystore_latency']) t.true(f in status, f);
  t.false('keystore_unreachable' in status);
  t.true(Number.isInteger(status.uptime) && status.uptime > 0, 'uptime in nanoseconds');
  t.is((await kesRequest(admin(), 'GET', '/v1/ready')).status, 200);
  const m = await kesRequest(admin(), 'GET', '/v1/metrics');
  t.is(m.status, 200);
  t.regex(String(m.headers['content-type']), /^text\/plain/);
  t.regex(m.text(), /^# TYPE kes_http_request_success counter$/m);
  t.regex(m.text(), /^kes_http_response_time_bucket\{le="\+Inf"\} \d+$/m);
  t.regex(m.text(), /^kes_system_up_time \d+$/m);
  // The app policy allows /v1/status but not /v1/metrics.
  t.is((await kesRequest(as(app.text), 'GET', '/v1/status')).status, 200);
  t.is((await kesRequest(as(app.text), 'GET', '/v1/metrics')).status, 403);
});

// ------------------------------------------------------------------ key API, KES shapes

test('API key: the key API speaks KES JSON, base64 fields, status codes and error bodies', async (t) => {
  const c = admin();
  t.is((await kesRequest(c, 'POST', '/v1/key/create/wire-a')).status, 200);
  t.is((await kesRequest(c, 'PUT', '/v1/key/create/wire-b')).status, 200, 'PUT is accepted like POST');
  const dup = await kesRequest(c, 'POST', '/v1/key/create/wire-a');
  t.is(dup.status, 400);
  t.deepEqual(dup.json(), { message: 'key already exists' });
  t.is(dup.headers['content-type'], 'application/json');

  const d = await kesRequest(c, 'GET', '/v1/key/describe/wire-a');
  t.is(d.status, 200);
  const desc = d.json();
  t.deepEqual(Object.keys(desc).sort(), ['algorithm', 'created_at', 'created_by', 'enabled', 'name']);
  t.is(desc.name, 'wire-a');
  t.is(desc.algorithm, 'AES256');
  t.is(desc.created_by, kesd.adminIdentity);
  t.false(Number.isNaN(Date.parse(desc.created_at)));

  // KES reads the resource as a literal prefix ('*' alone: all); a trailing '*' is also accepted.
  t.true((await kesRequest(c, 'GET', '/v1/key/list/*')).json().names.includes('wire-a'));
  for (const p of ['/v1/key/list/wire-', '/v1/key/list/wire-*']) {
    const l = await kesRequest(c, 'GET', p);
    t.is(l.status, 200);
    t.deepEqual(l.json(), { names: ['wire-a', 'wire-b'], continue_at: '' });
  }

  const context = Buffer.from('{"bucket":"bucket/object"}');
  const g = await kesRequest(c, 'POST', '/v1/key/generate/wire-a', { context: b64(context) });
  t.is(g.status, 200);
  const gen = g.json();
  t.deepEqual(Object.keys(gen).sort(), ['ciphertext', 'plaintext']);
  const dek = remember(gen.plaintext);
  t.is(dek.length, 32);
  t.is(Buffer.from(gen.ciphertext, 'base64').length, 76);
  const dec = await kesRequest(c, 'POST', '/v1/key/decrypt/wire-a', { ciphertext: gen.ciphertext, context: b64(context) });
  t.is(dec.status, 200);
  t.deepEqual(Buffer.from(dec.json().plaintext, 'base64'), dek);
  const wrong = await kesRequest(c, 'POST', '/v1/key/decrypt/wire-a', { ciphertext: gen.ciphertext, context: b64(Buffer.from('other')) });
  t.is(wrong.status, 400);
  t.deepEqual(wrong.json(), { message: 'decryption failed: ciphertext is not authentic' });
  const otherKey = await kesRequest(c, 'POST', '/v1/key/decrypt/wire-b', { ciphertext: gen.ciphertext, context: b64(context) });
  t.is(otherKey.status, 400);

  // A generate body may omit the context (KES treats it as empty).
  const g2 = await kesRequest(c, 'POST', '/v1/key/generate/wire-a', {});
  t.is(g2.status, 200);
  remember(g2.json().plaintext);

  const pt = remember(randomBytes(100));
  const e = await kesRequest(c, 'POST', '/v1/key/encrypt/wire-a', { plaintext: b64(pt), context: b64(context) });
  t.is(e.status, 200);
  t.deepEqual(Object.keys(e.json()), ['ciphertext']);
  const e2 = await kesRequest(c, 'POST', '/v1/key/decrypt/wire-a', { ciphertext: e.json().ciphertext, context: b64(context) });
  t.deepEqual(Buffer.from(e2.json().plaintext, 'base64'), pt);

  const imported = remember(randomBytes(32));
  t.is((await kesRequest(c, 'POST', '/v1/key/import/wire-imported', { key: b64(imported), cipher: 'AES256' })).status, 200);
  const badSize = await kesRequest(c, 'POST', '/v1/key/import/wire-bad', { key: b64(randomBytes(16)), cipher: 'AES256' });
  t.is(badSize.status, 406, 'as KES answers');
  t.deepEqual(badSize.json(), { message: "invalid key size for 'AES256'" });
  const chacha = await kesRequest(c, 'POST', '/v1/key/import/wire-bad', { key: b64(randomBytes(32)), cipher: 'ChaCha20' });
  t.is(chacha.status, 406);
  t.deepEqual(chacha.json(), { message: "algorithm 'ChaCha20' is not supported" });
  t.is((await kesRequest(c, 'GET', '/v1/key/describe/wire-bad')).status, 404);

  // Our extension: disable and enable. A disabled key answers 409 "key is disabled".
  t.is((await kesRequest(c, 'POST', '/v1/key/disable/wire-a')).status, 200);
  const disabled = await kesRequest(c, 'POST', '/v1/key/decrypt/wire-a', { ciphertext: gen.ciphertext, context: b64(context) });
  t.is(disabled.status, 409);
  t.deepEqual(disabled.json(), { message: 'key is disabled' });
  t.is((await kesRequest(c, 'POST', '/v1/key/generate/wire-a', {})).status, 409);
  t.false((await kesRequest(c, 'GET', '/v1/key/describe/wire-a')).json().enabled);
  t.is((await kesRequest(c, 'PUT', '/v1/key/enable/wire-a')).status, 200);
  t.is((await kesRequest(c, 'POST', '/v1/key/decrypt/wire-a', { ciphertext: gen.ciphertext, context: b64(context) })).status, 200);

  t.is((await kesRequest(c, 'DELETE', '/v1/key/delete/wire-b')).status, 200);
  const gone = await kesRequest(c, 'GET', '/v1/key/describe/wire-b');
  t.is(gone.status, 404);
  t.deepEqual(gone.json(), { message: 'key does not exist' });
  t.is((await kesRequest(c, 'DELETE', '/v1/key/delete/wire-b')).status, 404);
  t.is((await kesRequest(c, 'POST', '/v1/key/disable/wire-b')).status, 404);

  for (const bad of ['/v1/key/create/-bad', '/v1/key/create/a.b', '/v1/key/describe/', `/v1/key/create/${'x'.repeat(81)}`, '/v1/key/create/a%2Fb', '/v1/key/generate/../create/x']) {
    const r = await kesRequest(c, bad.includes('describe') ? 'GET' : 'POST', bad);
    t.is(r.status, 400, bad);
    t.regex(r.json().message, /^key name '.*' is empty, too long or contains invalid characters$/, bad);
  }
  const badList = await kesRequest(c, 'GET', '/v1/key/list/a.b*');
  t.is(badList.status, 400);
  t.deepEqual(badList.json(), { message: "listing pattern 'a.b*' is empty, too long or is invalid" });
  t.is((await kesRequest(c, 'GET', '/v1/key/list/')).status, 400);
});

test('wrong method is 405 with Allow; unknown path is 404 with a KES error body', async (t) => {
  const r = await kesRequest(admin(), 'GET', '/v1/key/generate/x');
  t.is(r.status, 405);
  t.is(r.headers.allow, 'POST, PUT');
  t.regex(r.json().message, /received method 'GET'/);
  const del = await kesRequest(admin(), 'POST', '/v1/key/delete/x');
  t.is(del.status, 405);
  const nf = await kesRequest(admin(), 'GET', '/v1/nothing');
  t.is(nf.status, 404);
  t.deepEqual(nf.json(), { message: 'not found' });
});

// ------------------------------------------------------------------ authentication and policies

test('a real client certificate (made by openssl) authenticates as the SHA-256 of its SPKI', async (t) => {
  t.is(identityOfCertificate(opensslClient.cert), opensslClient.identity);
  t.is(identityOfPublicKey(new X509Certificate(opensslClient.cert).publicKey), opensslClient.identity);
  const c: Credentials = { endpoint: kesd.endpoint, ca: kesd.caPem, cert: opensslClient.cert, key: opensslClient.key };
  t.is((await kesRequest(c, 'POST', '/v1/key/create/cert-1')).status, 200);
  const g = await kesRequest(c, 'POST', '/v1/key/generate/cert-1', { context: '' });
  t.is(g.status, 200);
  remember(g.json().plaintext);
  t.is((await kesRequest(c, 'GET', '/v1/key/describe/cert-1')).json().created_by, opensslClient.identity);
  // Outside its policy: refused.
  t.is((await kesRequest(c, 'POST', '/v1/key/create/other-1')).status, 403);
  t.is((await kesRequest(c, 'GET', '/v1/key/list/*')).status, 403);
  // Same client through KesClient with the certificate.
  const client = new KesClient({ endpoint: kesd.endpoint, ca: kesd.caPem, cert: opensslClient.cert, key: opensslClient.key });
  try {
    t.is(client.identity, opensslClient.identity);
    const dek = await client.generate('cert-1', Buffer.from('c'));
    remember(dek.plaintext);
    t.deepEqual(await client.decrypt('cert-1', dek.ciphertext, Buffer.from('c')), dek.plaintext);
  } finally {
    client.close();
  }
});

test('an RSA client certificate works too: the identity hashes the SPKI exactly as sent', async (t) => {
  const rsa = await opensslCert(workDir, 'rsa-client', ['-newkey', 'rsa:2048']);
  t.is(identityOfCertificate(rsa.cert), rsa.identity);
  // Unknown to the server: authenticated, then refused by policy.
  const r = await kesRequest({ endpoint: kesd.endpoint, ca: kesd.caPem, cert: rsa.cert, key: rsa.key }, 'GET', '/v1/key/describe/cert-1');
  t.is(r.status, 403);
});

test('a policy that allows generate but denies decrypt really denies decrypt: deny wins over allow', async (t) => {
  const g = as(genOnly.text);
  t.is((await kesRequest(g, 'POST', '/v1/key/create/gen-k')).status, 200);
  const gen = await kesRequest(g, 'POST', '/v1/key/generate/gen-k', { context: b64(Buffer.from('ctx')) });
  t.is(gen.status, 200);
  remember(gen.json().plaintext);
  const body = { ciphertext: gen.json().ciphertext, context: b64(Buffer.from('ctx')) };
  const dec = await kesRequest(g, 'POST', '/v1/key/decrypt/gen-k', body);
  t.is(dec.status, 403);
  t.deepEqual(dec.json(), { message: 'not authorized: insufficient permissions' });
  // The ciphertext itself is fine: the admin, who bypasses policies, can decrypt it.
  const adminDec = await kesRequest(admin(), 'POST', '/v1/key/decrypt/gen-k', body);
  t.is(adminDec.status, 200);
  t.deepEqual(adminDec.json().plaintext, gen.json().plaintext);
  // Nothing else is allowed: not even describe.
  t.is((await kesRequest(g, 'GET', '/v1/key/describe/gen-k')).status, 403);
  t.is((await kesRequest(g, 'POST', '/v1/key/encrypt/gen-k', { plaintext: '' })).status, 403);

  // The same through KesClient: KMS_ACCESS_DENIED, and never retried into something else.
  const client = new KesClient({ endpoint: kesd.endpoint, ca: kesd.caPem, apiKey: genOnly.text });
  try {
    const dek = await client.generate('gen-k', Buffer.from('ctx'));
    remember(dek.plaintext);
    const err = await t.throwsAsync(client.decrypt('gen-k', dek.ciphertext, Buffer.from('ctx')), { instanceOf: MountdError });
    t.is(err?.code, ErrorCode.KeyAccessDenied);
  } finally {
    client.close();
  }

  // A narrower deny inside a wider allow: app-secret* is denied, app-* allowed.
  const a = as(app.text);
  for (const name of ['app-public', 'app-secret-1']) {
    t.is((await kesRequest(a, 'POST', `/v1/key/create/${name}`)).status, 200);
    const r = await kesRequest(a, 'POST', `/v1/key/generate/${name}`, {});
    remember(r.json().plaintext);
    const d = await kesRequest(a, 'POST', `/v1/key/decrypt/${name}`, { ciphertext: r.json().ciphertext });
    t.is(d.status, name === 'app-public' ? 200 : 403, name);
  }
});

test('an unknown identity is refused everywhere except /version', async (t) => {
  const s = as(stranger.text);
  t.is((await kesRequest(admin(), 'POST', '/v1/key/create/stranger-target')).status, 200);
  for (const [method, p, body] of [
    ['POST', '/v1/key/create/stranger-1', undefined],
    ['GET', '/v1/key/describe/stranger-target', undefined],
    ['GET', '/v1/key/list/*', undefined],
    ['POST', '/v1/key/generate/stranger-target', {}],
    ['POST', '/v1/key/decrypt/stranger-target', { ciphertext: b64(randomBytes(76)) }],
    ['POST', '/v1/key/disable/stranger-target', undefined],
    ['DELETE', '/v1/key/delete/stranger-target', undefined],
    ['GET', '/v1/status', undefined],
    ['GET', '/v1/metrics', undefined],
  ] as const) {
    const r = await kesRequest(s, method, p, body);
    t.is(r.status, 403, `${method} ${p}`);
    t.deepEqual(r.json(), { message: 'not authorized: insufficient permissions' });
  }
  t.is((await kesRequest(s, 'GET', '/version')).status, 200);
  // The refused delete and disable changed nothing.
  const d = await kesRequest(admin(), 'GET', '/v1/key/describe/stranger-target');
  t.is(d.status, 200);
  t.true(d.json().enabled);
});

test('no client certificate: every authenticated route answers 401, never anything else', async (t) => {
  t.is((await kesRequest(admin(), 'POST', '/v1/key/create/nocert-target')).status, 200);
  for (const route of ROUTES.filter((r) => r.auth === 'policy')) {
    const p = route.resource === 'none' ? route.path : `${route.path}nocert-target`;
    const r = await kesRequest(noCert(), route.methods[0]!, p, route.maxBody > 0 ? {} : undefined);
    t.is(r.status, 401, `${route.methods[0]} ${p}`);
    t.deepEqual(r.json(), { message: 'not authorized: no client certificate' });
  }
  t.is((await kesRequest(admin(), 'GET', '/v1/key/describe/nocert-target')).status, 200);
});

test('client CA configured: a certificate that does not chain to it is refused even with a known identity', async (t) => {
  // A CA, a client certificate it signed, and a self-signed one: all by openssl.
  const dir = await fsp.mkdtemp(path.join(workDir, 'ca-'));
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', path.join(dir, 'ca.key'), '-out', path.join(dir, 'ca.crt'), '-subj', '/CN=test-ca', '-days', '2']);
  await run('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', path.join(dir, 'c.key'), '-out', path.join(dir, 'c.csr'), '-subj', '/CN=signed-client']);
  await run('openssl', ['x509', '-req', '-in', path.join(dir, 'c.csr'), '-CA', path.join(dir, 'ca.crt'), '-CAkey', path.join(dir, 'ca.key'), '-CAcreateserial', '-out', path.join(dir, 'c.crt'), '-days', '2']);
  const signed = { cert: await fsp.readFile(path.join(dir, 'c.crt'), 'utf8'), key: await fsp.readFile(path.join(dir, 'c.key'), 'utf8') };
  const self = await opensslCert(dir, 'self', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']);

  const serverKey = generateCertificateKey();
  const serverCert = createSelfSignedCertificate({ privateKey: serverKey, commonName: 'localhost', usage: 'server', ipAddresses: ['127.0.0.1'] });
  const policies = new PolicySet({
    policies: { p: { allow: ['/v1/key/*/*'], identities: [identityOfCertificate(signed.cert), self.identity] } },
  });
  const server = await startKesServer({
    keys: new KeyServer(new MemKeystore()),
    keystore: new MemKeystore(),
    policies,
    tls: { key: serverKey.export({ type: 'pkcs8', format: 'pem' }), cert: serverCert.pem, clientCa: await fsp.readFile(path.join(dir, 'ca.crt')) },
    port: 0,
  });
  try {
    const base = { endpoint: server.url, ca: serverCert.pem };
    t.is((await kesRequest({ ...base, ...signed }, 'POST', '/v1/key/create/ca-1')).status, 200);
    const r = await kesRequest({ ...base, cert: self.cert, key: self.key }, 'POST', '/v1/key/create/ca-2');
    t.is(r.status, 401);
    t.deepEqual(r.json(), { message: 'not authorized: client certificate is not trusted' });
  } finally {
    await server.close();
  }
});

// ------------------------------------------------------------------ limits

test('a body over 1 MiB is refused with 413, with and without Content-Length', async (t) => {
  const c = admin();
  t.is((await kesRequest(c, 'POST', '/v1/key/create/big')).status, 200);
  const over = Buffer.alloc((1 << 20) + 1, 0x20);
  const r1 = await kesRequest(c, 'POST', '/v1/key/generate/big', over);
  t.is(r1.status, 413);
  t.deepEqual(r1.json(), { message: 'request body too large' });
  const r2 = await kesRequest(c, 'POST', '/v1/key/encrypt/big', over, { chunked: true });
  t.is(r2.status, 413);
  // Routes without a body refuse large ones too.
  t.is((await kesRequest(c, 'POST', '/v1/key/create/big-2', over)).status, 413);
  // Just under the limit is fine: a context of ~700 KiB.
  const context = randomBytes(700 * 1024);
  const ok = await kesRequest(c, 'POST', '/v1/key/generate/big', { context: b64(context) });
  t.is(ok.status, 200);
  remember(ok.json().plaintext);
});

test('malformed requests are 400 with a KES error body', async (t) => {
  const c = admin();
  t.is((await kesRequest(c, 'POST', '/v1/key/create/badjson')).status, 200);
  const cases: Array<[string, string | object, RegExp]> = [
    ['/v1/key/generate/badjson', 'not json', /not valid JSON/],
    ['/v1/key/generate/badjson', '{"context":', /not valid JSON/],
    ['/v1/key/generate/badjson', '[1,2]', /expected a JSON object/],
    ['/v1/key/generate/badjson', { context: 'not base64!' }, /base64/],
    ['/v1/key/generate/badjson', { context: 12 }, /base64/],
    ['/v1/key/encrypt/badjson', {}, /missing field 'plaintext'/],
    ['/v1/key/decrypt/badjson', { context: '' }, /missing field 'ciphertext'/],
    ['/v1/key/decrypt/badjson', '', /expected a JSON object/],
    ['/v1/key/import/badjson-2', { cipher: 'AES256' }, /missing field 'key'/],
  ];
  for (const [p, body, re] of cases) {
    const r = await kesRequest(c, 'POST', p, body);
    t.is(r.status, 400, `${p} ${JSON.stringify(body)}`);
    t.regex(r.json().message, re);
  }
  // A too-short ciphertext is simply not authentic.
  const short = await kesRequest(c, 'POST', '/v1/key/decrypt/badjson', { ciphertext: b64(randomBytes(10)) });
  t.is(short.status, 400);
  t.deepEqual(short.json(), { message: 'decryption failed: ciphertext is not authentic' });
});

/** A keystore whose reads take `delayMs`, to exercise timeouts. */
class SlowKeystore implements Keystore {
  constructor(readonly inner: Keystore, public delayMs: number) {}
  create(e: KeyEntry) {
    return this.inner.create(e);
  }
  async get(name: string) {
    await new Promise((r) => setTimeout(r, this.delayMs));
    return this.inner.get(name);
  }
  update(e: KeyEntry) {
    return this.inner.update(e);
  }
  delete(name: string) {
    return this.inner.delete(name);
  }
  list(prefix?: string) {
    return this.inner.list(prefix);
  }
}

test('per-route timeouts: a slow keystore makes the route answer 503 "request timed out"; others are unaffected', async (t) => {
  const slow = new SlowKeystore(new MemKeystore(), 0);
  const keys = new KeyServer(slow, { cacheKeys: false });
  const admin2 = generateApiKey();
  const serverKey = generateCertificateKey();
  const serverCert = createSelfSignedCertificate({ privateKey: serverKey, commonName: 'localhost', usage: 'server', ipAddresses: ['127.0.0.1'] });
  const server = await startKesServer({
    keys,
    keystore: slow,
    policies: new PolicySet({ admin: admin2.identity }),
    tls: { key: serverKey.export({ type: 'pkcs8', format: 'pem' }), cert: serverCert.pem },
    port: 0,
    api: { '/v1/key/generate/': { timeoutMs: 300 } },
  });
  try {
    t.is(server.routes.find((r) => r.path === '/v1/key/generate/')?.timeoutMs, 300);
    const c: Credentials = { endpoint: server.url, ca: serverCert.pem, apiKey: admin2.text };
    t.is((await kesRequest(c, 'POST', '/v1/key/create/slow')).status, 200);
    slow.delayMs = 3000;
    const t0 = Date.now();
    const r = await kesRequest(c, 'POST', '/v1/key/generate/slow', {});
    t.is(r.status, 503);
    t.deepEqual(r.json(), { message: 'request timed out' });
    t.true(Date.now() - t0 < 2500, 'answered at the route timeout, not when the keystore finished');
    // describe keeps its default 15 s timeout and succeeds, slowly.
    slow.delayMs = 600;
    t.is((await kesRequest(c, 'GET', '/v1/key/describe/slow')).status, 200);
    const api = (await kesRequest(c, 'GET', '/v1/api')).json() as Array<{ path: string; timeout: number }>;
    t.is(api.find((e) => e.path === '/v1/key/generate/')?.timeout, 1);
  } finally {
    await server.close(100);
  }
});

// ------------------------------------------------------------------ audit log

test('the audit log has one JSON line per key operation, allowed and denied, and no key material', async (t) => {
  const c = admin();
  t.is((await kesRequest(c, 'POST', '/v1/key/create/audit-k')).status, 200);
  const g = await kesRequest(c, 'POST', '/v1/key/generate/audit-k', { context: b64(Buffer.from('audit-ctx')) });
  const dek = remember(g.json().plaintext);
  await kesRequest(c, 'POST', '/v1/key/decrypt/audit-k', { ciphertext: g.json().ciphertext, context: b64(Buffer.from('audit-ctx')) });
  await kesRequest(as(stranger.text), 'POST', '/v1/key/decrypt/audit-k', { ciphertext: g.json().ciphertext });
  await kesRequest(noCert(), 'GET', '/v1/key/describe/audit-k');
  await kesRequest(as(auditStranger.text), 'GET', '/v1/metrics');

  // The file sink writes asynchronously; wait for our lines (up to 20 s on a loaded machine).
  // Only whole lines: a read can land between the two halves of a line being appended.
  let lines: any[] = [];
  for (const end = Date.now() + 20_000; Date.now() < end; ) {
    lines = (await fsp.readFile(kesd.auditFile, 'utf8')).split('\n').slice(0, -1).map((l) => JSON.parse(l));
    // Other tests in this file hit /v1/metrics too (concurrently, "stranger" among them): wait for
    // this test's own lines, the refused /v1/metrics one by an identity no other test uses.
    const strangerMetrics = lines.some((l) => l.route === '/v1/metrics' && l.identity === auditStranger.identity && l.allowed === false);
    if (lines.filter((l) => l.key === 'audit-k').length >= 5 && strangerMetrics) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const mine = lines.filter((l) => l.key === 'audit-k');
  t.deepEqual(
    mine.map((l) => [l.method, l.route, l.identity, l.allowed, l.status]),
    [
      ['POST', '/v1/key/create/', kesd.adminIdentity, true, 200],
      ['POST', '/v1/key/generate/', kesd.adminIdentity, true, 200],
      ['POST', '/v1/key/decrypt/', kesd.adminIdentity, true, 200],
      ['POST', '/v1/key/decrypt/', stranger.identity, false, 403],
      ['GET', '/v1/key/describe/', null, false, 401],
    ],
  );
  for (const l of mine) {
    t.deepEqual(Object.keys(l).filter((k) => k !== 'error'), ['time', 'identity', 'ip', 'method', 'route', 'key', 'allowed', 'status', 'duration_ms']);
    t.is(l.ip, '127.0.0.1');
    t.false(Number.isNaN(Date.parse(l.time)));
  }
  t.is(mine[3].error, 'not authorized: insufficient permissions');
  // A refused request to a non-key route is audited too; allowed ones are not.
  t.true(lines.some((l) => l.route === '/v1/metrics' && l.allowed === false && l.identity === auditStranger.identity));
  t.false(lines.some((l) => l.route === '/v1/metrics' && l.allowed === true));
  // No DEK of this test in the audit log, in any encoding (the full scan runs at the end).
  const text = await fsp.readFile(kesd.auditFile, 'utf8');
  t.false(text.includes(dek.toString('base64')));
  t.false(text.includes(dek.toString('hex')));
});

test.after('no DEK, plaintext or imported key from any test appears in the audit log or the server log', async (t) => {
  const audit = await fsp.readFile(kesd.auditFile, 'utf8');
  const all = `${audit}\n${kesd.log()}`;
  t.true(secrets.length >= 10, `scanned ${secrets.length} secrets`);
  t.true(audit.split('\n').length > 20, 'the audit log has lines');
  for (const s of secrets) {
    for (const enc of [s.toString('base64'), s.toString('hex'), s.toString('base64url')]) {
      if (enc.length < 16) continue;
      t.false(all.includes(enc), 'key material in a log');
    }
  }
});

test('an audit sink writes compact lines in a fixed field order', (t) => {
  const got: string[] = [];
  const sink = createAuditSink({ kind: 'callback', fn: (l) => got.push(l) });
  sink.write({ key: 'k', route: '/v1/key/create/', time: 'T', identity: null, ip: null, method: 'POST', allowed: true, status: 200, duration_ms: 1 } as never);
  t.is(got[0], '{"time":"T","identity":null,"ip":null,"method":"POST","route":"/v1/key/create/","key":"k","allowed":true,"status":200,"duration_ms":1}\n');
});

// ------------------------------------------------------------------ identities and certificates

test('API keys: kes-go test vectors, round trip, and malformed keys refused without echoing them', (t) => {
  t.is(parseApiKey('kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw').identity, '0426fa9a04bc2756b92fbe8a97e1a1e07b53ecf04ed33da22c33e5c9faeb8cbb');
  t.is(parseApiKey('kes:v1:AMxvd2uV1l5dDSRwuKZxSjuM5BDemlr+685+JAHA1TuJ').identity, 'ab785e3b95d80d72cc9c27cb9fde886a0bf9068a69d40e3bd08a54e68c3f2bf7');
  const k = generateApiKey();
  t.regex(k.text, /^kes:v1:A[A-Za-z0-9+/]{43}$/);
  t.is(parseApiKey(k.text).identity, k.identity);
  t.is(identityOfPublicKey(k.publicKey), k.identity);
  for (const bad of ['', 'v1:AM0F5TP43FYEShMzA42f2drFYGnBOiNx7UH4DK0nm08E', 'kes:AM0F5TP43FYEShMzA42f2drFYGnBOiNx7UH4DK0nm08E', 'kes:v1:sbDvZFqUPFFwxRS4EkuoEb2nyyInkdKSUEYHXFHeTouW', 'kes:v1:AAAA', 'kes:v1:not base64']) {
    const err = t.throws(() => parseApiKey(bad), { instanceOf: MountdError });
    t.is(err?.code, ErrorCode.InvalidArgument);
    if (bad.length > 20) t.false(err!.message.includes(bad.slice(7)));
  }
});

test('hand-built certificates: Node and openssl parse them, signatures verify, identity = SPKI hash', async (t) => {
  const k = generateApiKey();
  const creds = certificateForApiKey(k);
  const x = new X509Certificate(creds.cert);
  t.is(x.subject, `CN=${k.identity}`);
  t.true(x.verify(x.publicKey));
  t.is(identityOfCertificate(x), k.identity);
  t.true(x.checkPrivateKey((await import('node:crypto')).createPrivateKey(creds.key)));
  t.true(new Date(x.validTo).getTime() - Date.now() > 89 * 86_400_000);
  const file = path.join(workDir, 'apikey.crt');
  await fsp.writeFile(file, creds.cert);
  const { stdout } = await run('openssl', ['x509', '-in', file, '-noout', '-text']);
  t.regex(stdout, /Signature Algorithm: ED25519/);
  t.regex(stdout, /TLS Web Client Authentication/);

  const sk = generateCertificateKey();
  const server = createSelfSignedCertificate({ privateKey: sk, commonName: 'localhost', usage: 'server', dnsNames: ['localhost', 'kes.example'], ipAddresses: ['127.0.0.1', '::1', '10.1.2.3'], now: new Date('2049-06-01T00:00:00Z'), days: 400 });
  const sx = new X509Certificate(server.pem);
  t.is(sx.subjectAltName, 'DNS:localhost, DNS:kes.example, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:10.1.2.3');
  t.true(sx.verify(sx.publicKey));
  t.is(new Date(sx.validTo).getUTCFullYear(), 2050, 'GeneralizedTime after 2049');
  const sfile = path.join(workDir, 'server.crt');
  await fsp.writeFile(sfile, server.pem);
  const verified = await run('openssl', ['verify', '-attime', String(Date.parse('2049-07-01') / 1000), '-CAfile', sfile, sfile]);
  t.regex(verified.stdout, /OK/);
});

test('policy globs follow Go path.Match: * and ? stay within one path segment', (t) => {
  t.true(matchGlob('/v1/key/generate/my-key*', '/v1/key/generate/my-key'));
  t.true(matchGlob('/v1/key/generate/my-key*', '/v1/key/generate/my-key-2'));
  t.false(matchGlob('/v1/key/generate/my-key*', '/v1/key/generate/other'));
  t.false(matchGlob('/v1/key/*', '/v1/key/generate/x'));
  t.true(matchGlob('/v1/key/*/x', '/v1/key/generate/x'));
  t.true(matchGlob('/v1/key/generate/k?', '/v1/key/generate/k1'));
  t.false(matchGlob('/v1/key/generate/k?', '/v1/key/generate/k12'));
  t.true(matchGlob('/v1/status', '/v1/status'));
  t.false(matchGlob('/v1/status', '/v1/statusx'));
  t.false(matchGlob('/v1/key/generate/a.b', '/v1/key/generate/aXb'), '. is literal');
  t.throws(() => matchGlob('v1/key/*', '/v1/key/x'));
  t.throws(() => matchGlob('/v1/key/[ab]', '/v1/key/a'));

  const id = (n: number) => createHash('sha256').update(String(n)).digest('hex');
  const ps = new PolicySet({ admin: id(0), policies: { p: { allow: ['/v1/key/*/a*'], deny: ['/v1/key/decrypt/*'], identities: [id(1)] } } });
  t.deepEqual(ps.authorize(id(0), '/anything'), { allowed: true, reason: 'admin' });
  t.deepEqual(ps.authorize(id(1), '/v1/key/generate/a1'), { allowed: true, reason: 'allow', policy: 'p' });
  t.deepEqual(ps.authorize(id(1), '/v1/key/decrypt/a1'), { allowed: false, reason: 'deny', policy: 'p' });
  t.deepEqual(ps.authorize(id(1), '/v1/key/generate/b1'), { allowed: false, reason: 'no-match', policy: 'p' });
  t.deepEqual(ps.authorize(id(2), '/v1/key/generate/a1'), { allowed: false, reason: 'unknown-identity' });
  t.deepEqual(ps.authorize(undefined, '/v1/key/generate/a1'), { allowed: false, reason: 'unknown-identity' });
});

// ------------------------------------------------------------------ config and CLI

test('config: strict parsing with helpful errors', (t) => {
  const id = createHash('sha256').update('x').digest('hex');
  const base = { version: 1, address: '127.0.0.1:7373', admin: { identity: id }, tls: { key: 'k.pem', cert: 'c.pem' }, keystore: { mem: {} } };
  const c = parseConfig(base, '/etc/kesd');
  t.is(c.tls.keyFile, '/etc/kesd/k.pem');
  t.deepEqual(c.keystore, { kind: 'mem' });
  t.deepEqual(c.audit, { kind: 'off' });
  const refuse = (doc: unknown, re: RegExp) => {
    const err = t.throws(() => parseConfig(doc, '/etc/kesd', 'kesd.json'), { instanceOf: MountdError });
    t.regex(err!.message, re);
  };
  refuse({ ...base, adress: 'x' }, /unknown field "adress"/);
  refuse({ ...base, version: 2 }, /version must be 1/);
  refuse({ ...base, address: 'localhost' }, /HOST:PORT/);
  refuse({ ...base, admin: { identity: 'ABC' } }, /admin.identity/);
  refuse({ ...base, keystore: { fs: { path: 'k' } } }, /master_key_file/);
  refuse({ ...base, keystore: { mem: {}, fs: {} } }, /exactly one/);
  refuse({ ...base, policy: { p: { allow: ['v1/key'] } } }, /must start with '\/'/);
  refuse({ ...base, policy: { p: { allow: ['/v1/key/*'], idents: [] } } }, /unknown field "idents"/);
  const other = createHash('sha256').update('y').digest('hex');
  refuse({ ...base, policy: { a: { identities: [other] }, b: { identities: [other] } } }, /assigned to both policy a and policy b/);
  refuse({ ...base, policy: { a: { identities: [id] } } }, /admin identity/);
  refuse({ ...base, api: { '/v1/key/generate/': { timeout: 'soon' } } }, /duration/);
  refuse({ ...base, log: { error: 'file' } }, /log.error/);
  const withApi = parseConfig({ ...base, api: { '/v1/ready': { skip_auth: true, timeout: '2s' } } }, '/');
  t.deepEqual(withApi.api, { '/v1/ready': { skipAuth: true, timeoutMs: 2000 } });
});

test('skip_auth opens only the system routes it may open', async (t) => {
  const serverKey = generateCertificateKey();
  const serverCert = createSelfSignedCertificate({ privateKey: serverKey, commonName: 'localhost', usage: 'server', ipAddresses: ['127.0.0.1'] });
  const common = {
    keys: new KeyServer(new MemKeystore()),
    keystore: new MemKeystore(),
    policies: new PolicySet(),
    tls: { key: serverKey.export({ type: 'pkcs8', format: 'pem' }), cert: serverCert.pem },
    port: 0,
  };
  await t.throwsAsync(startKesServer({ ...common, api: { '/v1/key/decrypt/': { skipAuth: true } } }), { message: /always requires authentication/ });
  await t.throwsAsync(startKesServer({ ...common, api: { '/v1/nope': { timeoutMs: 5 } } }), { message: /no route/ });
  const server = await startKesServer({ ...common, api: { '/v1/ready': { skipAuth: true } } });
  try {
    t.is((await kesRequest({ endpoint: server.url, ca: serverCert.pem }, 'GET', '/v1/ready')).status, 200);
    t.is((await kesRequest({ endpoint: server.url, ca: serverCert.pem }, 'GET', '/v1/status')).status, 401);
  } finally {
    await server.close();
  }
});

async function kesdCli(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', KESD, ...args], { cwd: ROOT });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; code?: number };
    return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: e.code ?? -1 };
  }
}

test('kesd identity new / identity of, and kesd init writes a working configuration once', async (t) => {
  const dir = path.join(workDir, 'cli-init');
  const [newKey, ofVector, init, newCert] = await Promise.all([
    kesdCli('identity', 'new', '--json'),
    kesdCli('identity', 'of', 'kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw'),
    kesdCli('init', dir, '--address', '127.0.0.1:7999', '--dns', 'kes.internal', '--ip', '10.0.0.7'),
    kesdCli('identity', 'new', '--json', '--cert', path.join(workDir, 'cli.crt'), '--key', path.join(workDir, 'cli.key')),
  ]);
  t.is(newKey.code, 0, newKey.stderr);
  const nk = JSON.parse(newKey.stdout);
  t.is(parseApiKey(nk.api_key).identity, nk.identity);
  t.is(ofVector.stdout.trim(), '0426fa9a04bc2756b92fbe8a97e1a1e07b53ecf04ed33da22c33e5c9faeb8cbb');

  t.is(init.code, 0, init.stderr);
  const m = /Admin API key[^\n]*\n\s+(kes:v1:\S+)\nAdmin identity: ([0-9a-f]{64})/.exec(init.stdout);
  t.truthy(m, init.stdout);
  t.is(parseApiKey(m![1]!).identity, m![2]!);
  const config = await loadConfig(path.join(dir, 'config.json'));
  t.is(config.admin, m![2]);
  t.is(config.port, 7999);
  t.deepEqual(config.keystore, { kind: 'fs', path: path.join(dir, 'keys'), masterKeyFile: path.join(dir, 'master.key') });
  t.deepEqual(config.audit, { kind: 'file', path: path.join(dir, 'audit.log') });
  const mode = async (f: string) => (await fsp.stat(f)).mode & 0o777;
  t.is(await mode(dir), 0o700);
  t.is(await mode(path.join(dir, 'master.key')), 0o600);
  t.is(await mode(path.join(dir, 'server.key')), 0o600);
  t.is(await mode(path.join(dir, 'keys')), 0o700);
  t.false((await fsp.readFile(path.join(dir, 'config.json'), 'utf8')).includes(m![1]!.slice(7)), 'the API key itself is not stored');
  const cert = new X509Certificate(await fsp.readFile(path.join(dir, 'server.crt')));
  t.is(cert.subjectAltName, 'DNS:localhost, DNS:kes.internal, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:10.0.0.7');
  t.truthy(cert.checkHost('localhost'));
  t.truthy(cert.checkIP('127.0.0.1'));

  const [again, ofCert] = await Promise.all([kesdCli('init', dir), kesdCli('identity', 'of', path.join(workDir, 'cli.crt'))]);
  t.not(again.code, 0);
  t.regex(again.stderr, /already exists/);
  t.is(newCert.code, 0, newCert.stderr);
  t.is(ofCert.stdout.trim(), JSON.parse(newCert.stdout).identity);
  t.is(await mode(path.join(workDir, 'cli.key')), 0o600);

  // A missing master key is an error, never silently replaced.
  const dir2 = path.join(workDir, 'cli-init-2');
  await initKesd(dir2, { address: '127.0.0.1:0' });
  await fsp.rm(path.join(dir2, 'master.key'));
  const noMaster = await kesdCli('--config', path.join(dir2, 'config.json'));
  t.not(noMaster.code, 0);
  t.regex(noMaster.stderr, /master key file .* does not exist/);
});
