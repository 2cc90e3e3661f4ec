// Seeded fuzzing of a real kesd over mTLS for a bounded time (FUZZ_SECONDS, default 8; FUZZ_SEED
// reproduces the inputs): paths and key names with "..", "%2e%2e", NUL, "/" and overlong names,
// every method, bad and mutated JSON, wrong base64 and types, oversized and lying bodies, broken
// HTTP, and four identities: the admin, an identity whose policy allows only "fz-*" keys, a
// well-formed identity no policy names, and no client certificate at all.
//
// What must hold: every request is answered (never a hang) with a 2xx only where the identity's
// policy allows the route, else a 4xx; never a 5xx; the server keeps serving (a known-good
// generate and decrypt after every batch); no key file is created outside the keystore, and no
// key outside the names the admin and "fz-*" rules allow; no DEK or plaintext of this run in the
// audit log or the server's output. The admin's known-good key (steady-key) is one the generator never names.
import test from 'ava';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as tls from 'node:tls';
import { certificateForApiKey, generateApiKey } from '../src/kes/identity.js';
import { Rng, escapedFiles, exchange, fuzzSeed, mutate, rawRequest, type RawAnswer } from './helpers/fuzz.js';
import { ROOT, kesRequest, startKesd, type Kesd } from './helpers/kesd.js';

const SECONDS = Number(process.env.FUZZ_SECONDS ?? 8);
const SEED = fuzzSeed();
/** This fuzzer's own mark (the S3 fuzzer, which may run at the same time, has another). */
const ESCAPE_MARK = 'kesdesc';

const limited = generateApiKey();
const stranger = generateApiKey();

type Who = 'admin' | 'limited' | 'stranger' | 'anonymous';

interface Case {
  family: string;
  who: Who;
  method: string;
  /** The route the request names, as the server would decode it (for the policy check). */
  route: string;
  data: Buffer;
  /** Broken framing or a body cut short: closing without a status is fine. */
  framing?: boolean;
}

const NAME_PIECES = ['fz-a', 'fz-b', 'key', '..', '.', '%2e%2e', '%2E%2e', '%2F', '/', '%00', '\\', '%5C', '', '*', '?', '%', '%zz', ' ', '%20', 'a'.repeat(300), ESCAPE_MARK, `fz-${ESCAPE_MARK}`];
const ROUTES = ['create', 'import', 'describe', 'list', 'delete', 'generate', 'encrypt', 'decrypt', 'disable', 'enable'];
const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'PATCH', 'OPTIONS', 'BREW'];

function keyName(rng: Rng, n: number): string {
  if (rng.chance(0.3)) return rng.pick(['fz-a', 'fz-b', 'fz-known', 'admin-key']);
  const parts: string[] = [];
  for (let i = 0, m = 1 + rng.int(3); i < m; i++) parts.push(rng.pick(NAME_PIECES));
  if (rng.chance(0.5)) parts.push(`${ESCAPE_MARK}${n}`);
  return parts.join(rng.pick(['', '/', '-']));
}

function jsonBody(rng: Rng, route: string): Buffer {
  const b64 = (n: number) => Buffer.from(rng.bytes(n)).toString('base64');
  const good: Record<string, unknown> =
    route === 'import'
      ? { key: b64(32), cipher: 'AES256' }
      : route === 'generate' || route === 'encrypt'
        ? { plaintext: b64(rng.int(64)), context: b64(rng.int(16)) }
        : route === 'decrypt'
          ? { ciphertext: b64(rng.int(200)), context: b64(8) }
          : {};
  const forms: Array<() => Buffer> = [
    () => Buffer.from(JSON.stringify(good)),
    () => mutate(rng, Buffer.from(JSON.stringify(good))),
    () => Buffer.from(rng.pick(['', '{', '}', '[]', 'null', '"x"', '{"plaintext":1}', '{"ciphertext":"%%%"}', '{"key":"AAAA"}', '{"key":null,"cipher":"AES256"}', '{"context":{}}', '{"__proto__":{"x":1}}', '{"plaintext":"' + 'A'.repeat(5000) + '"}', '\u0000'])),
    () => Buffer.from(JSON.stringify({ ...good, extra: rng.word(20) })),
    () => rng.bytes(rng.int(300)),
    () => Buffer.from(`{"a":${'['.repeat(5000)}${']'.repeat(5000)}}`), // deep nesting
  ];
  return rng.pick(forms)();
}

function makeCase(rng: Rng, n: number): Case {
  const who: Who = rng.pick(['admin', 'admin', 'limited', 'limited', 'stranger', 'anonymous']);
  const family = rng.pick(['key', 'key', 'key', 'system', 'body', 'http']);
  const headers: Array<[string, string]> = [['host', '127.0.0.1'], ['connection', 'close']];
  switch (family) {
    case 'system': {
      const route = rng.pick(['/version', '/v1/status', '/v1/ready', '/v1/metrics', '/v1/api', '/v1/log/audit', '/v1/policy/list', '/v2/status', '/', '/v1/', '/v1/../v1/status', '/v1/%2e%2e/status', '//v1/status', '/v1/status?x=1', '/v1/status/']);
      const method = rng.chance(0.8) ? 'GET' : rng.pick(METHODS);
      return { family, who, method, route, data: rawRequest(method, route, [...headers, ['content-length', '0']]) };
    }
    case 'body': {
      // Oversized and lying bodies on routes that take one.
      const route = `/v1/key/${rng.pick(['generate', 'encrypt', 'decrypt', 'import'])}/${rng.pick(['fz-a', 'admin-key'])}`;
      const size = rng.pick([(1 << 20) + 1, 2 << 20, 100, 0]);
      const body = Buffer.alloc(size, 0x41);
      const declared = rng.pick([String(size), String(size + 10), '-1', 'x', '99999999999999999999', String(Math.max(0, size - 10))]);
      const h: Array<[string, string]> = [...headers, ['content-type', 'application/json']];
      if (rng.chance(0.7)) h.push(['content-length', declared]);
      else h.push(['transfer-encoding', 'chunked']);
      const data = h.some(([k]) => k === 'transfer-encoding') ? Buffer.concat([rawRequest('POST', route, h), Buffer.from(`${size.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]) : rawRequest('POST', route, h, body);
      return { family, who, method: 'POST', route, data, framing: declared !== String(size) };
    }
    case 'http': {
      const gen = '/v1/key/generate/fz-a';
      const forms: Array<[string, () => Buffer]> = [
        ['/v1/status', () => Buffer.from(`${rng.word(1 + rng.int(8))} /v1/status HTTP/1.1\r\nHost: x\r\n\r\n`)],
        ['/v1/status', () => Buffer.from(`GET /v1/status HTTP/${rng.pick(['0.9', '2.0', '1.x'])}\r\nHost: x\r\n\r\n`)],
        ['/v1/status', () => Buffer.from(`GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Huge: ${'h'.repeat(20_000 + rng.int(50_000))}\r\n\r\n`)],
        [gen, () => Buffer.from(`POST ${gen} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`)],
        [gen, () => Buffer.from(`POST ${gen} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`)],
        // A mutation may leave the request valid (or change the name to another fz-* one).
        [gen, () => mutate(rng, rawRequest('POST', gen, [...headers, ['content-length', '2']], Buffer.from('{}')))],
      ];
      const [route, make] = rng.pick(forms);
      return { family, who, method: '?', route, data: make(), framing: true };
    }
    default: {
      const op = rng.pick(ROUTES);
      const name = keyName(rng, n);
      const route = op === 'list' ? `/v1/key/list/${rng.pick(['', '*', 'fz-*', name])}` : `/v1/key/${op}/${name}`;
      const method = rng.chance(0.8) ? (op === 'describe' || op === 'list' ? 'GET' : op === 'delete' ? 'DELETE' : 'POST') : rng.pick(METHODS);
      const body = ['import', 'generate', 'encrypt', 'decrypt'].includes(op) || rng.chance(0.2) ? jsonBody(rng, op) : Buffer.alloc(0);
      return { family, who, method, route, data: rawRequest(method, route, [...headers, ['content-type', 'application/json'], ['content-length', String(body.length)]], body) };
    }
  }
}

/** May this identity get a 2xx for this route at all? (A 4xx is always acceptable.) */
function mayPass(c: Case): boolean {
  if (c.route === '/version') return true;
  if (c.who === 'admin') return true;
  if (c.who === 'limited') {
    // Its policy: generate, encrypt and decrypt of fz-* only (a name with "/" or NUL is no key name).
    const m = /^\/v1\/key\/(generate|encrypt|decrypt)\/(fz-[^/?]*)$/.exec(c.route);
    return m !== null || (c.family === 'http' && c.route.startsWith('/v1/key/generate/fz-'));
  }
  return false;
}

function acceptable(c: Case, a: RawAnswer): string | null {
  if (a.hung) return 'no answer (hung)';
  if (a.status === 0) {
    // The TLS layer may refuse a client without a certificate outright; broken framing may close.
    if (c.framing || c.who === 'anonymous' || c.who === 'stranger') return null;
    return `closed without a status (${a.error ?? 'no error'})`;
  }
  if (a.status >= 500) return `${a.status}`;
  if (a.status >= 200 && a.status < 300 && !mayPass(c)) return `${a.status} for ${c.who} on a route its policy does not allow`;
  if (a.status >= 300 && a.status < 400) return `${a.status}`;
  return null;
}

const pick = (c: { cert: string; key: string }) => ({ cert: c.cert, key: c.key });

let kesd: Kesd | undefined;

test.before(async () => {
  kesd = await startKesd({
    policies: {
      'fuzz-limited': {
        allow: ['/v1/key/generate/fz-*', '/v1/key/encrypt/fz-*', '/v1/key/decrypt/fz-*'],
        identities: [limited.identity],
      },
    },
  });
});

test.after.always(async () => {
  await kesd?.cleanup();
});

test('seeded kesd fuzzing: a 2xx only where the policy allows, otherwise a 4xx, never a 5xx or a hang; nothing outside the keystore; no secret in the logs', async (t) => {
  const k = kesd!;
  t.log(`kesd fuzz seed ${SEED} (FUZZ_SEED=${SEED} reproduces the inputs), ${SECONDS} s`);
  const stamp = new Date();
  const admin = { endpoint: k.endpoint, ca: k.caPem, apiKey: k.adminApiKey };
  for (const name of ['steady-key', 'fz-a', 'admin-key']) t.is((await kesRequest(admin, 'POST', `/v1/key/create/${name}`)).status, 200, `create ${name}`);
  const tlsFor: Record<Who, tls.ConnectionOptions> = {
    admin: { ca: k.caPem, ...pick(certificateForApiKey(k.adminApiKey)), servername: 'localhost' },
    limited: { ca: k.caPem, ...pick(certificateForApiKey(limited)), servername: 'localhost' },
    stranger: { ca: k.caPem, ...pick(certificateForApiKey(stranger)), servername: 'localhost' },
    anonymous: { ca: k.caPem, servername: 'localhost' },
  };
  const secrets: Buffer[] = [];
  const rng = new Rng(SEED);
  const deadline = Date.now() + SECONDS * 1000;
  const statuses = new Map<string, number>();
  const bad: string[] = [];
  let tried = 0;
  let batches = 0;
  let slowest = 0;
  while (Date.now() < deadline) {
    const batch = Array.from({ length: 24 }, () => makeCase(rng, tried++));
    for (let i = 0; i < batch.length; i += 6) {
      const slice = batch.slice(i, i + 6);
      const answers = await Promise.all(slice.map((c) => exchange(k.port, c.data, { timeoutMs: 15_000, endWrite: c.framing, tlsOptions: tlsFor[c.who], headRequest: c.method === 'HEAD' })));
      answers.forEach((a, j) => {
        const c = slice[j]!;
        slowest = Math.max(slowest, a.ms);
        const key = `${c.who} ${c.family} ${a.hung ? 'HUNG' : a.status}`;
        statuses.set(key, (statuses.get(key) ?? 0) + 1);
        const why = acceptable(c, a);
        if (why && bad.length < 20) bad.push(`${c.who} ${c.method} ${c.route.slice(0, 120)}: ${why}: ${a.body.subarray(0, 160).toString('latin1')}`);
      });
    }
    batches++;
    // Still serving: a generate and decrypt round trip by the admin after every batch.
    const gen = await kesRequest(admin, 'POST', '/v1/key/generate/steady-key', { context: Buffer.from(`batch ${batches}`).toString('base64') });
    if (gen.status !== 200) {
      bad.push(`known-good generate after batch ${batches}: ${gen.status} ${gen.text().slice(0, 200)}`);
      break;
    }
    const dek = gen.json() as { plaintext: string; ciphertext: string };
    secrets.push(Buffer.from(dek.plaintext, 'base64'));
    const dec = await kesRequest(admin, 'POST', '/v1/key/decrypt/steady-key', { ciphertext: dek.ciphertext, context: Buffer.from(`batch ${batches}`).toString('base64') });
    if (dec.status !== 200 || (dec.json() as { plaintext: string }).plaintext !== dek.plaintext) {
      bad.push(`known-good decrypt after batch ${batches}: ${dec.status}`);
      break;
    }
  }
  const hist = [...statuses].sort().map(([key, v]) => `${key}: ${v}`).join(', ');
  t.log(`${tried} inputs in ${batches} batches; answers by identity, family and status: ${hist}; slowest answer ${slowest} ms`);
  t.deepEqual(bad, [], 'every answer acceptable');
  t.true(k.running(), 'kesd is still running');

  // The keys that exist: only names the admin or the fz-* rule could create, all inside the keystore.
  const list = await kesRequest(admin, 'GET', '/v1/key/list/*');
  t.is(list.status, 200);
  const names = (list.json() as { names: string[] }).names;
  t.true(names.includes('steady-key'), 'the known key is still there');
  for (const n of names) t.false(/[/\\\0]|\.\./.test(n), `a key name the server should have refused: ${JSON.stringify(n)}`);
  const escaped = await escapedFiles([os.tmpdir(), ROOT, '/'], [k.dir], stamp, ESCAPE_MARK);
  t.deepEqual(escaped, [], `files carrying "${ESCAPE_MARK}" outside kesd's directory (FUZZ_SEED=${SEED})`);

  // No DEK handed out during the run appears in the audit log or the server's output, in any encoding.
  const audit = await fsp.readFile(k.auditFile).catch(() => Buffer.alloc(0));
  const output = Buffer.from(k.log());
  let found = 0;
  for (const s of secrets) {
    for (const form of [s, Buffer.from(s.toString('base64')), Buffer.from(s.toString('hex'))]) {
      if (audit.includes(form) || output.includes(form)) found++;
    }
  }
  t.true(secrets.length > 0);
  t.is(found, 0, `${found} secrets in the audit log or output`);
  t.true(audit.length > 0, 'the audit log recorded the run');
  t.true(path.isAbsolute(k.auditFile));
});
