// The S3 listener in-process over a temp engine, driven by raw HTTP signed with an independent SigV4: auth, bodies, bad input, SSE, key locks, ETags.
import * as fsp from 'node:fs/promises';
import * as http from 'node:http';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import test from 'ava';
import { ErrorCode, MountdError } from '../src/errors/index.js';
import type { KeyService } from '../src/kms/KeyService.js';
import { createChecksum } from '../src/s3/checksums.js';
import { startS3Server } from '../src/s3/index.js';
import { makeFixture } from './helpers/engine.js';
import { CREDS, chunkSignature, errorCode, rawExchange, s3request, sha256, signRequest, signingKey, startInProcess, type InProcess, type Response } from './helpers/s3.js';

let s3: InProcess;

test.before(async () => {
  s3 = await startInProcess();
});

test.after.always(async () => {
  await s3?.close();
});

const put = (key: string, body: string | Buffer, headers: Record<string, string> = {}) => s3request(s3.port, { method: 'PUT', path: key, body, headers });
const get = (key: string, headers: Record<string, string> = {}, query?: Record<string, string>) => s3request(s3.port, { method: 'GET', path: key, headers, query });
const head = (key: string, headers: Record<string, string> = {}) => s3request(s3.port, { method: 'HEAD', path: key, headers });

async function bucket(name: string): Promise<string> {
  const r = await s3request(s3.port, { method: 'PUT', path: `/${name}` });
  if (r.status !== 200) throw new Error(`create ${name}: ${r.status} ${r.text}`);
  return `/${name}`;
}

/** Sends already-signed headers and body as they are. */
function send(method: string, p: string, headers: Record<string, string>, body: Buffer): Promise<Response> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: s3.port, method, path: p, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const b = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: b, text: b.toString('utf8') });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function stillServing(t: import('ava').ExecutionContext): Promise<void> {
  const r = await s3request(s3.port, { method: 'GET', path: '/' });
  t.is(r.status, 200, 'the listener keeps serving');
}

test('signed PUT and GET round-trip keys with spaces, unicode and reserved characters', async (t) => {
  const b = await bucket('roundtrip');
  for (const key of ['plain.txt', 'a b/c+d=e&f.txt', 'ünï/cødé ✓', "quote'paren(1)*!.txt"]) {
    const p = `${b}/${key.split('/').map(encodeURIComponent).join('/')}`;
    const body = `content of ${key}`;
    const w = await put(p, body);
    t.is(w.status, 200, w.text);
    t.is(w.headers.etag, `"${createHash('md5').update(body).digest('hex')}"`);
    t.is(w.headers['x-amz-server-side-encryption'], 'AES256');
    const r = await get(p);
    t.is(r.text, body);
    t.is(r.headers['content-length'], String(Buffer.byteLength(body)));
  }
  const list = await get(b, {}, { 'list-type': '2', 'encoding-type': 'url' });
  t.true(list.text.includes('<Key>a%20b/c%2Bd%3De%26f.txt</Key>'), list.text);
});

test('authentication failures get AWS codes and statuses', async (t) => {
  const b = await bucket('authfail');
  await put(`${b}/k`, 'x');
  const noAuth = await s3request(s3.port, { method: 'GET', path: `${b}/k`, sign: 'none' });
  t.is(noAuth.status, 403);
  t.is(errorCode(noAuth), 'AccessDenied');
  const date = '20300101T000000Z';
  const raw = (authorization: string, extra: Record<string, string> = {}) =>
    send('GET', `${b}/k`, { host: `127.0.0.1:${s3.port}`, authorization, 'x-amz-date': date, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', ...extra }, Buffer.alloc(0));
  const garbage = await raw('AWS4-HMAC-SHA256 garbage');
  t.is(garbage.status, 400);
  t.is(errorCode(garbage), 'AuthorizationHeaderMalformed');
  const v2 = await raw('AWS mountdadmin:c2lnbmF0dXJl');
  t.is(v2.status, 400);
  t.is(errorCode(v2), 'InvalidRequest');
  const missing = await raw('AWS4-HMAC-SHA256 Credential=mountdadmin/20300101/us-east-1/s3/aws4_request');
  t.is(errorCode(missing), 'AuthorizationHeaderMalformed');
  const badDate = await raw('AWS4-HMAC-SHA256 Credential=mountdadmin/20300101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00', { 'x-amz-date': 'yesterday' });
  t.is(badDate.status, 403);
  t.is(errorCode(badDate), 'AccessDenied');
  const region = await raw(`AWS4-HMAC-SHA256 Credential=mountdadmin/20300101/eu-west-9/s3/aws4_request, SignedHeaders=host, Signature=${'0'.repeat(64)}`);
  t.is(errorCode(region), 'AuthorizationHeaderMalformed');
  t.regex(region.text, /<Region>us-east-1<\/Region>/);

  const wrongSecret = await s3request(s3.port, { method: 'GET', path: `${b}/k`, creds: { ...CREDS, secretAccessKey: 'not-the-secret' } });
  t.is(wrongSecret.status, 403);
  t.is(errorCode(wrongSecret), 'SignatureDoesNotMatch');
  const wrongKey = await s3request(s3.port, { method: 'GET', path: `${b}/k`, creds: { ...CREDS, accessKeyId: 'someoneelse' } });
  t.is(errorCode(wrongKey), 'InvalidAccessKeyId');
  const skewed = await s3request(s3.port, { method: 'GET', path: `${b}/k`, signingDate: new Date(Date.now() - 20 * 60 * 1000) });
  t.is(skewed.status, 403);
  t.is(errorCode(skewed), 'RequestTimeTooSkewed');
  const inSkew = await s3request(s3.port, { method: 'GET', path: `${b}/k`, signingDate: new Date(Date.now() - 10 * 60 * 1000) });
  t.is(inSkew.status, 200);

  // A header added after signing (here user metadata) must not ride along unsigned.
  const signed = await signRequest(s3.port, { method: 'PUT', path: `${b}/k2`, body: 'x' });
  const injected = await send('PUT', signed.path, { ...signed.headers, 'x-amz-meta-evil': '1' }, Buffer.from('x'));
  t.is(injected.status, 403);
  t.is(errorCode(injected), 'AccessDenied');
  // A tampered path fails the signature.
  const tampered = await send('PUT', `${b}/k3`, signed.headers, Buffer.from('x'));
  t.is(errorCode(tampered), 'SignatureDoesNotMatch');
  await stillServing(t);
});

test('presigned URLs: valid, expired, tampered', async (t) => {
  const b = await bucket('presigned');
  await put(`${b}/doc.txt`, 'presigned body');
  const ok = await s3request(s3.port, { method: 'GET', path: `${b}/doc.txt`, sign: 'presign' });
  t.is(ok.status, 200);
  t.is(ok.text, 'presigned body');
  const expired = await s3request(s3.port, { method: 'GET', path: `${b}/doc.txt`, sign: 'presign', signingDate: new Date(Date.now() - 3600_000) });
  t.is(expired.status, 403);
  t.regex(expired.text, /Request has expired/);
  const signed = await signRequest(s3.port, { method: 'GET', path: `${b}/doc.txt`, sign: 'presign' });
  const tampered = await send('GET', signed.path.replace('doc.txt', 'other.txt'), { host: `127.0.0.1:${s3.port}` }, Buffer.alloc(0));
  t.is(errorCode(tampered), 'SignatureDoesNotMatch');
  const both = await send('GET', signed.path, { host: `127.0.0.1:${s3.port}`, authorization: 'AWS4-HMAC-SHA256 x' }, Buffer.alloc(0));
  t.is(both.status, 400);
});

test('payload checks: x-amz-content-sha256, Content-MD5, UNSIGNED-PAYLOAD; a failed check stores nothing', async (t) => {
  const b = await bucket('payload');
  const bad = await s3request(s3.port, { method: 'PUT', path: `${b}/sha`, body: 'real body', payloadHash: sha256('other body') });
  t.is(bad.status, 400);
  t.is(errorCode(bad), 'XAmzContentSHA256Mismatch');
  t.is((await head(`${b}/sha`)).status, 404);
  const md5 = await put(`${b}/md5`, 'real body', { 'content-md5': createHash('md5').update('other').digest('base64') });
  t.is(errorCode(md5), 'BadDigest');
  t.is((await head(`${b}/md5`)).status, 404);
  const md5ok = await put(`${b}/md5`, 'real body', { 'content-md5': createHash('md5').update('real body').digest('base64') });
  t.is(md5ok.status, 200);
  const unsigned = await s3request(s3.port, { method: 'PUT', path: `${b}/unsigned`, body: 'u', payloadHash: 'UNSIGNED-PAYLOAD' });
  t.is(unsigned.status, 200);
  const crc = createChecksum('crc32');
  crc.update(Buffer.from('checked'));
  t.is((await put(`${b}/crc`, 'checked', { 'x-amz-checksum-crc32': crc.digest() })).headers['x-amz-checksum-crc32'], crc.digest());
  t.is(errorCode(await put(`${b}/crc2`, 'checked!', { 'x-amz-checksum-crc32': crc.digest() })), 'BadDigest');
});

/** A STREAMING-AWS4-HMAC-SHA256-PAYLOAD PUT with hand-made chunks chained from the request's signature. */
async function signedChunkedPut(p: string, data: Buffer, chunkSize: number, forge?: number): Promise<Response> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < data.length; i += chunkSize) pieces.push(data.subarray(i, i + chunkSize));
  pieces.push(Buffer.alloc(0));
  const sigLine = (n: number) => `${n.toString(16)};chunk-signature=${'0'.repeat(64)}\r\n`;
  const total = pieces.reduce((s, c) => s + sigLine(c.length).length + c.length + 2, 0);
  const headers = {
    'x-amz-content-sha256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
    'content-encoding': 'aws-chunked',
    'x-amz-decoded-content-length': String(data.length),
    'content-length': String(total),
  };
  const signed = await signRequest(s3.port, { method: 'PUT', path: p, headers });
  const seed = /Signature=([0-9a-f]{64})/.exec(signed.headers.authorization!)![1]!;
  const amzDate = signed.headers['x-amz-date']!;
  const scope = `${amzDate.slice(0, 8)}/us-east-1/s3/aws4_request`;
  const key = signingKey(CREDS.secretAccessKey, amzDate.slice(0, 8));
  let prev = seed;
  const body = Buffer.concat(
    pieces.map((c, i) => {
      const sig = chunkSignature(key, amzDate, scope, prev, i === forge ? Buffer.from(c).fill(0x41) : c);
      prev = sig;
      return Buffer.concat([Buffer.from(`${c.length.toString(16)};chunk-signature=${sig}\r\n`), c, Buffer.from('\r\n')]);
    }),
  );
  return send('PUT', signed.path, signed.headers, body);
}

test('aws-chunked with chunk signatures: accepted when every chunk verifies, refused (and not stored) otherwise', async (t) => {
  const b = await bucket('chunked');
  const data = randomBytes(200_000);
  const ok = await signedChunkedPut(`${b}/ok.bin`, data, 64 * 1024);
  t.is(ok.status, 200, ok.text);
  t.true((await get(`${b}/ok.bin`)).body.equals(data));
  const forged = await signedChunkedPut(`${b}/forged.bin`, data, 64 * 1024, 1);
  t.is(forged.status, 403);
  t.is(errorCode(forged), 'SignatureDoesNotMatch');
  t.is((await head(`${b}/forged.bin`)).status, 404);
});

test('aws-chunked with trailing checksums (STREAMING-UNSIGNED-PAYLOAD-TRAILER): CRC32C, CRC64NVME, and a wrong one', async (t) => {
  const b = await bucket('trailer');
  const data = randomBytes(100_000);
  const body = (alg: 'crc32c' | 'crc64nvme', value: string) =>
    Buffer.concat([Buffer.from(`${(60000).toString(16)}\r\n`), data.subarray(0, 60000), Buffer.from(`\r\n${(40000).toString(16)}\r\n`), data.subarray(60000), Buffer.from(`\r\n0\r\nx-amz-checksum-${alg}:${value}\r\n\r\n`)]);
  for (const alg of ['crc32c', 'crc64nvme'] as const) {
    const c = createChecksum(alg);
    c.update(data);
    const headers = (b: Buffer) => ({ 'x-amz-content-sha256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER', 'content-encoding': 'aws-chunked', 'x-amz-decoded-content-length': String(data.length), 'x-amz-trailer': `x-amz-checksum-${alg}`, 'content-length': String(b.length) });
    const good = body(alg, c.digest());
    const r = await s3request(s3.port, { method: 'PUT', path: `${b}/${alg}`, headers: headers(good), body: good });
    t.is(r.status, 200, r.text);
    t.true((await get(`${b}/${alg}`)).body.equals(data));
    const wrong = body(alg, c.digest().replace(/^./, (ch) => (ch === 'A' ? 'B' : 'A')));
    const w = await s3request(s3.port, { method: 'PUT', path: `${b}/${alg}-bad`, headers: headers(wrong), body: wrong });
    t.is(w.status, 400);
    t.is(errorCode(w), 'BadDigest');
    t.is((await head(`${b}/${alg}-bad`)).status, 404);
  }
  // Framing truncated inside a Content-Length that matches what was sent.
  const c = createChecksum('crc32c');
  c.update(data);
  const cut = body('crc32c', c.digest()).subarray(0, 70_000);
  const r = await s3request(s3.port, { method: 'PUT', path: `${b}/cut`, body: cut, headers: { 'x-amz-content-sha256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER', 'content-encoding': 'aws-chunked', 'x-amz-decoded-content-length': String(data.length), 'x-amz-trailer': 'x-amz-checksum-crc32c', 'content-length': String(cut.length) } });
  t.is(r.status, 400);
  t.is(errorCode(r), 'IncompleteBody');
  t.is((await head(`${b}/cut`)).status, 404);
  await stillServing(t);
});

test('Expect: 100-continue: the body is asked for only after authentication', async (t) => {
  const b = await bucket('continue');
  const ok = await s3request(s3.port, { method: 'PUT', path: `${b}/c`, body: 'after continue', expectContinue: true });
  t.is(ok.status, 200);
  t.is((await get(`${b}/c`)).text, 'after continue');
  // Wrong signature: the answer comes without a 100 and without reading the body.
  const signed = await signRequest(s3.port, { method: 'PUT', path: `${b}/d`, body: 'x', creds: { ...CREDS, secretAccessKey: 'wrong' } });
  const reply = await rawExchange(s3.port, `PUT ${signed.path} HTTP/1.1\r\n${Object.entries({ ...signed.headers, expect: '100-continue', 'content-length': '1' }).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`, 1500);
  t.regex(reply, /^HTTP\/1.1 403 /);
  t.notRegex(reply, /100 Continue/);
});

test('bad names and paths: "..", "%2e%2e", NUL, over-long keys, bad bucket names are clear 4xx', async (t) => {
  const b = await bucket('badnames');
  const cases: Array<[string, number, string]> = [
    [`${b}/a/../b`, 400, 'InvalidArgument'],
    [`${b}/a/%2e%2e/b`, 400, 'InvalidArgument'],
    [`${b}/%2E%2E`, 400, 'InvalidArgument'],
    [`${b}/a%00b`, 400, 'InvalidArgument'],
    [`${b}/a//b`, 400, 'InvalidArgument'],
    [`${b}/${'k'.repeat(1025)}`, 400, 'KeyTooLongError'],
    ['/Bad_Bucket/key', 400, 'InvalidBucketName'],
    ['/.mountd/lock', 400, 'InvalidBucketName'],
    [`${b}/%zz`, 400, 'InvalidURI'],
  ];
  for (const [p, status, code] of cases) {
    for (const method of ['PUT', 'GET']) {
      const r = await s3request(s3.port, { method, path: p, body: method === 'PUT' ? 'x' : undefined });
      t.is(r.status, status, `${method} ${p}: ${r.text}`);
      t.is(errorCode(r), code, `${method} ${p}`);
    }
  }
  t.is((await s3request(s3.port, { method: 'PUT', path: '/ab' })).status, 400);
  t.is((await put(`${b}/a/b`, 'x')).status, 200);
  const conflict = await put(`${b}/a/b/c`, 'x');
  t.is(conflict.status, 409);
  t.is(errorCode(conflict), 'XMountdNameConflict');
  t.is((await get(`${b}/nope`)).status, 404);
  t.is(errorCode(await get('/nosuchbucket/k')), 'NoSuchBucket');
  await stillServing(t);
});

test('headers over 8 KiB get 431 and the listener keeps serving', async (t) => {
  const reply = await rawExchange(s3.port, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(9000)}\r\n\r\n`);
  t.regex(reply, /^HTTP\/1.1 431 /);
  const garbage = await rawExchange(s3.port, 'NOT HTTP AT ALL\r\n\r\n');
  t.regex(garbage, /^HTTP\/1.1 400 /);
  await stillServing(t);
});

test('malformed XML in DeleteObjects and CompleteMultipartUpload is MalformedXML', async (t) => {
  const b = await bucket('badxml');
  for (const body of ['<Delete><Object><Key>a</Key></Delete>', 'not xml', '<!DOCTYPE x [<!ENTITY a "b">]><Delete><Object><Key>&a;</Key></Object></Delete>', '<Delete></Delete>', '<Delete><Object><Key><Nested/></Key></Object></Delete>']) {
    const r = await s3request(s3.port, { method: 'POST', path: b, query: { delete: '' }, body });
    t.is(r.status, 400, body);
    t.is(errorCode(r), 'MalformedXML', body);
  }
  const create = await s3request(s3.port, { method: 'POST', path: `${b}/mp`, query: { uploads: '' } });
  const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(create.text)![1]!;
  for (const body of ['<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>', '<CompleteMultipartUpload></CompleteMultipartUpload>', '<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>"a"</ETag></Part></CompleteMultipartUpload>']) {
    const r = await s3request(s3.port, { method: 'POST', path: `${b}/mp`, query: { uploadId }, body });
    t.is(r.status, 400, body);
    t.is(errorCode(r), 'MalformedXML', body);
  }
  const tooBig = await s3request(s3.port, { method: 'PUT', path: b, query: { encryption: '' }, body: 'x'.repeat(70 * 1024) });
  t.is(errorCode(tooBig), 'MaxMessageLengthExceeded');
  await stillServing(t);
});

test('ranges, conditional GETs and response overrides', async (t) => {
  const b = await bucket('ranges');
  const data = randomBytes(200_000);
  const w = await put(`${b}/r.bin`, data);
  const etag = w.headers.etag!;
  const r = await get(`${b}/r.bin`, { range: 'bytes=70000-140000' });
  t.is(r.status, 206);
  t.is(r.headers['content-range'], `bytes 70000-140000/${data.length}`);
  t.true(r.body.equals(data.subarray(70000, 140001)));
  t.true((await get(`${b}/r.bin`, { range: 'bytes=-10' })).body.equals(data.subarray(-10)));
  const bad = await get(`${b}/r.bin`, { range: `bytes=${data.length}-` });
  t.is(bad.status, 416);
  t.is(errorCode(bad), 'InvalidRange');
  t.is(bad.headers['content-range'], `bytes */${data.length}`);
  t.is((await get(`${b}/r.bin`, { 'if-none-match': etag })).status, 304);
  t.is((await get(`${b}/r.bin`, { 'if-match': '"0000"' })).status, 412);
  t.is((await get(`${b}/r.bin`, { 'if-match': etag })).status, 200);
  t.is((await get(`${b}/r.bin`, { 'if-modified-since': new Date(Date.now() + 60_000).toUTCString() })).status, 304);
  const o = await get(`${b}/r.bin`, {}, { 'response-content-type': 'text/x-override', 'response-content-disposition': 'attachment' });
  t.is(o.headers['content-type'], 'text/x-override');
  t.is(o.headers['content-disposition'], 'attachment');
  const h = await head(`${b}/r.bin`, { range: 'bytes=0-9' });
  t.is(h.status, 206);
  t.is(h.headers['content-length'], '10');
  t.is((await put(`${b}/empty`, '')).status, 200);
  t.is((await get(`${b}/empty`, { range: 'bytes=0-' })).status, 416);
  t.is((await get(`${b}/empty`)).body.length, 0);
});

test('stored headers: Cache-Control, Content-Disposition, Content-Encoding, Content-Language and Expires come back on GET and HEAD, follow copies, and aws-chunked is not one of them', async (t) => {
  const b = await bucket('stored-headers');
  const sent = {
    'cache-control': 'max-age=3600, public',
    'content-disposition': 'attachment; filename="report.csv.gz"',
    'content-encoding': 'gzip',
    'content-language': 'de-CH',
    expires: 'Wed, 21 Oct 2037 07:28:00 GMT',
  };
  t.is((await put(`${b}/a`, 'zipped', { ...sent, 'content-type': 'text/csv' })).status, 200);
  const pick = (h: http.IncomingHttpHeaders) => Object.fromEntries(Object.keys(sent).map((n) => [n, h[n]]));
  for (const r of [await get(`${b}/a`), await head(`${b}/a`)]) {
    t.deepEqual(pick(r.headers), sent);
    t.is(r.headers['content-type'], 'text/csv');
  }
  // A response-* override wins over the stored value.
  t.is((await get(`${b}/a`, {}, { 'response-content-encoding': 'identity' })).headers['content-encoding'], 'identity');
  // An object put without them has none.
  await put(`${b}/plain`, 'x');
  t.deepEqual(pick((await head(`${b}/plain`)).headers), { 'cache-control': undefined, 'content-disposition': undefined, 'content-encoding': undefined, 'content-language': undefined, expires: undefined });
  // A copy keeps them (COPY); REPLACE takes the request's, including none.
  await s3request(s3.port, { method: 'PUT', path: `${b}/copy`, headers: { 'x-amz-copy-source': `${b}/a` } });
  t.deepEqual(pick((await head(`${b}/copy`)).headers), sent);
  await s3request(s3.port, { method: 'PUT', path: `${b}/copy`, headers: { 'x-amz-copy-source': `${b}/copy`, 'x-amz-metadata-directive': 'REPLACE', 'cache-control': 'no-store' } });
  const replaced = await head(`${b}/copy`);
  t.is(replaced.headers['cache-control'], 'no-store');
  t.is(replaced.headers['content-encoding'], undefined);
  t.is((await get(`${b}/copy`)).text, 'zipped');
  // aws-chunked is the request's framing: gzip is stored, aws-chunked is not.
  const data = Buffer.from('framed body');
  const crc = createChecksum('crc32c');
  crc.update(data);
  const framed = Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from(`\r\n0\r\nx-amz-checksum-crc32c:${crc.digest()}\r\n\r\n`)]);
  const chunked = await s3request(s3.port, { method: 'PUT', path: `${b}/chunked`, body: framed, headers: { 'x-amz-content-sha256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER', 'content-encoding': 'aws-chunked,gzip', 'x-amz-decoded-content-length': String(data.length), 'x-amz-trailer': 'x-amz-checksum-crc32c', 'content-length': String(framed.length) } });
  t.is(chunked.status, 200, chunked.text);
  const g = await get(`${b}/chunked`);
  t.true(g.body.equals(data));
  t.is(g.headers['content-encoding'], 'gzip');
  // A Content-Encoding without aws-chunked is stored as sent.
  await put(`${b}/two`, 'x', { 'content-encoding': 'gzip, br' });
  t.is((await head(`${b}/two`)).headers['content-encoding'], 'gzip, br');
  // A response-* value HTTP cannot carry is a 400, and the error lends it none of the object's headers.
  const bad = await get(`${b}/a`, {}, { 'response-content-disposition': 'attachment; filename="\u65e5.pdf"' });
  t.is(bad.status, 400, bad.text);
  t.is(errorCode(bad), 'InvalidArgument');
  for (const n of ['content-encoding', 'cache-control', 'expires', 'etag', 'last-modified']) t.is(bad.headers[n], undefined, n);
  // User metadata within its 2 KB and ten tags at AWS's maximum sizes are more than fits beside
  // the key record in one 4 KiB attribute block: MetadataTooLarge, and nothing stored (not a 500,
  // not a 507 that reads as a full disk).
  const tagging = Array.from({ length: 10 }, (_, i) => `${`k${i}`.padEnd(128, 'k')}=${'v'.repeat(256)}`).join('&');
  const crowded = await put(`${b}/crowded`, 'x', { 'x-amz-meta-note': 'n'.repeat(1900), 'x-amz-tagging': tagging });
  t.is(crowded.status, 400, crowded.text);
  t.is(errorCode(crowded), 'MetadataTooLarge');
  t.is((await head(`${b}/crowded`)).status, 404);
  const five = tagging.split('&').slice(0, 5).join('&');
  t.is((await put(`${b}/crowded`, 'x', { 'x-amz-meta-note': 'n'.repeat(1000), 'x-amz-tagging': five })).status, 200, 'five maximal tags and 1 KB of user metadata fit');
  // Tagging an object beyond the budget is refused the same way, and leaves its tags as they were.
  const retag = await s3request(s3.port, { method: 'PUT', path: `${b}/crowded`, query: { tagging: '' }, body: `<Tagging><TagSet>${tagging.split('&').map((kv) => `<Tag><Key>${kv.split('=')[0]}</Key><Value>${kv.split('=')[1]}</Value></Tag>`).join('')}</TagSet></Tagging>` });
  t.is(errorCode(retag), 'MetadataTooLarge');
  t.is((await head(`${b}/crowded`)).headers['x-amz-tagging-count'], '5');
  // As on AWS they do not count toward user metadata's 2 KB; what does not fit the attributes is refused.
  t.is((await put(`${b}/both`, 'x', { 'cache-control': 'c'.repeat(1000), 'x-amz-meta-note': 'n'.repeat(2000) })).status, 200);
  t.is((await head(`${b}/both`)).headers['cache-control'], 'c'.repeat(1000));
  const big = await put(`${b}/big`, 'x', { 'cache-control': 'c'.repeat(2500), 'x-amz-meta-note': 'n'.repeat(1500) });
  t.is(errorCode(big), 'MetadataTooLarge');
  t.is((await head(`${b}/big`)).status, 404);
});

test('ACLs as AWS has them by default (bucket owner enforced): reads show the owner\'s FULL_CONTROL; owner-only ACLs are accepted; anything wider is AccessControlListNotSupported and nothing is written', async (t) => {
  const b = await bucket('acls');
  const refused = (r: Response) => {
    t.is(r.status, 400, r.text);
    t.is(errorCode(r), 'AccessControlListNotSupported');
  };
  t.is((await put(`${b}/private`, 'x', { 'x-amz-acl': 'private' })).status, 200);
  t.is((await put(`${b}/owner`, 'x', { 'x-amz-acl': 'bucket-owner-full-control' })).status, 200);
  refused(await put(`${b}/public`, 'x', { 'x-amz-acl': 'public-read' }));
  refused(await put(`${b}/granted`, 'x', { 'x-amz-grant-read': 'uri="http://acs.amazonaws.com/groups/global/AllUsers"' }));
  t.is((await head(`${b}/public`)).status, 404);
  t.is((await head(`${b}/granted`)).status, 404);
  refused(await s3request(s3.port, { method: 'PUT', path: `${b}/copied`, headers: { 'x-amz-copy-source': `${b}/private`, 'x-amz-acl': 'public-read-write' } }));
  t.is((await head(`${b}/copied`)).status, 404);
  refused(await s3request(s3.port, { method: 'POST', path: `${b}/mp`, query: { uploads: '' }, headers: { 'x-amz-acl': 'authenticated-read' } }));
  t.is(errorCode(await s3request(s3.port, { method: 'PUT', path: '/acls-public', headers: { 'x-amz-acl': 'public-read' } })), 'InvalidBucketAclWithObjectOwnership');
  t.is((await s3request(s3.port, { method: 'HEAD', path: '/acls-public' })).status, 404);

  for (const p of [b, `${b}/private`]) {
    const r = await s3request(s3.port, { method: 'GET', path: p, query: { acl: '' } });
    t.is(r.status, 200, r.text);
    t.regex(r.text, /<AccessControlPolicy[^>]*><Owner><ID>mountd<\/ID>/);
    t.regex(r.text, /<Grant><Grantee [^>]*xsi:type="CanonicalUser"><ID>mountd<\/ID><DisplayName>mountd<\/DisplayName><\/Grantee><Permission>FULL_CONTROL<\/Permission><\/Grant>/);
    t.is((r.text.match(/<Grant>/g) ?? []).length, 1);
  }
  t.is(errorCode(await s3request(s3.port, { method: 'GET', path: `${b}/missing`, query: { acl: '' } })), 'NoSuchKey');
  t.is(errorCode(await s3request(s3.port, { method: 'GET', path: '/no-such-acl-bucket', query: { acl: '' } })), 'NoSuchBucket');

  const setAcl = (p: string, headers: Record<string, string>, body = '') => s3request(s3.port, { method: 'PUT', path: p, query: { acl: '' }, headers, body });
  t.is((await setAcl(`${b}/private`, { 'x-amz-acl': 'private' })).status, 200);
  t.is((await setAcl(b, { 'x-amz-acl': 'bucket-owner-full-control' })).status, 200);
  refused(await setAcl(`${b}/private`, { 'x-amz-acl': 'public-read' }));
  refused(await setAcl(b, { 'x-amz-grant-write': 'id=someone-else' }));
  const doc = (grants: string) => `<AccessControlPolicy><Owner><ID>mountd</ID></Owner><AccessControlList>${grants}</AccessControlList></AccessControlPolicy>`;
  const ownerGrant = '<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser"><ID>mountd</ID></Grantee><Permission>FULL_CONTROL</Permission></Grant>';
  const allUsers = '<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="Group"><URI>http://acs.amazonaws.com/groups/global/AllUsers</URI></Grantee><Permission>READ</Permission></Grant>';
  t.is((await setAcl(`${b}/private`, {}, doc(ownerGrant))).status, 200);
  refused(await setAcl(`${b}/private`, {}, doc(ownerGrant + allUsers)));
  refused(await setAcl(`${b}/private`, {}, doc('')));
  t.is(errorCode(await setAcl(`${b}/private`, {}, '<AccessControlPolicy><unclosed>')), 'MalformedXML');
  t.is(errorCode(await setAcl(`${b}/missing`, { 'x-amz-acl': 'private' })), 'NoSuchKey');
  t.is((await get(`${b}/private`)).text, 'x', 'the object is untouched');
});

test('bucket settings this server never has read as AWS answers for a bucket without them; setting one is NotImplemented', async (t) => {
  const b = await bucket('settings');
  const absent: Array<[string, string]> = [
    ['policy', 'NoSuchBucketPolicy'],
    ['cors', 'NoSuchCORSConfiguration'],
    ['lifecycle', 'NoSuchLifecycleConfiguration'],
    ['tagging', 'NoSuchTagSet'],
    ['website', 'NoSuchWebsiteConfiguration'],
    ['replication', 'ReplicationConfigurationNotFoundError'],
    ['object-lock', 'ObjectLockConfigurationNotFoundError'],
  ];
  for (const [q, code] of absent) {
    const r = await s3request(s3.port, { method: 'GET', path: b, query: { [q]: '' } });
    t.is(r.status, 404, q);
    t.is(errorCode(r), code, q);
    t.is(errorCode(await s3request(s3.port, { method: 'GET', path: '/no-such-settings', query: { [q]: '' } })), 'NoSuchBucket', q);
  }
  const fixedAnswers: Array<[string, RegExp]> = [
    ['logging', /<BucketLoggingStatus[^>]*(\/>|><\/BucketLoggingStatus>)/],
    ['notification', /<NotificationConfiguration[^>]*(\/>|><\/NotificationConfiguration>)/],
    ['requestPayment', /<Payer>BucketOwner<\/Payer>/],
    ['accelerate', /<AccelerateConfiguration/],
    ['ownershipControls', /<Rule><ObjectOwnership>BucketOwnerEnforced<\/ObjectOwnership><\/Rule>/],
    ['publicAccessBlock', /<BlockPublicAcls>true<\/BlockPublicAcls><IgnorePublicAcls>true<\/IgnorePublicAcls><BlockPublicPolicy>true<\/BlockPublicPolicy><RestrictPublicBuckets>true<\/RestrictPublicBuckets>/],
  ];
  for (const [q, re] of fixedAnswers) {
    const r = await s3request(s3.port, { method: 'GET', path: b, query: { [q]: '' } });
    t.is(r.status, 200, `${q}: ${r.text}`);
    t.regex(r.text, re, q);
  }
  for (const q of ['policy', 'cors', 'lifecycle', 'website']) {
    const r = await s3request(s3.port, { method: 'PUT', path: b, query: { [q]: '' }, body: '<x/>' });
    t.is(r.status, 501, q);
    t.is(errorCode(r), 'NotImplemented', q);
  }
  // Deleting one of them is nothing to do: 204, and reading it still says there is none.
  for (const q of ['policy', 'cors', 'lifecycle', 'tagging', 'website']) {
    t.is((await s3request(s3.port, { method: 'DELETE', path: b, query: { [q]: '' } })).status, 204, q);
    t.is((await s3request(s3.port, { method: 'GET', path: b, query: { [q]: '' } })).status, 404, q);
  }
  t.is(errorCode(await s3request(s3.port, { method: 'DELETE', path: '/no-such-settings', query: { policy: '' } })), 'NoSuchBucket');
  // Buckets are BucketOwnerEnforced: asking for another ownership is refused, and makes no bucket.
  t.is((await s3request(s3.port, { method: 'PUT', path: '/settings-owned', headers: { 'x-amz-object-ownership': 'BucketOwnerEnforced' } })).status, 200);
  const writer = await s3request(s3.port, { method: 'PUT', path: '/settings-writer', headers: { 'x-amz-object-ownership': 'ObjectWriter' } });
  t.is(writer.status, 501);
  t.is((await s3request(s3.port, { method: 'HEAD', path: '/settings-writer' })).status, 404);
  // max-keys=0 is an empty page that is not truncated, in all three listings.
  await put(`${b}/one`, '1');
  for (const query of [{ 'max-keys': '0' }, { 'list-type': '2', 'max-keys': '0' }, { versions: '', 'max-keys': '0' }] as Array<Record<string, string>>) {
    const r = await s3request(s3.port, { method: 'GET', path: b, query });
    t.is(r.status, 200, r.text);
    t.regex(r.text, /<IsTruncated>false<\/IsTruncated>/, JSON.stringify(query));
    t.notRegex(r.text, /<Key>|Next/, JSON.stringify(query));
  }
});

test('versions with versioning off: each object is its one version "null"; another version id is refused and never reads or deletes the object', async (t) => {
  const b = await bucket('versions');
  for (const k of ['a', 'd/x', 'd/y', 'z']) await put(`${b}/${k}`, `body of ${k}`);
  const list = (query: Record<string, string>) => s3request(s3.port, { method: 'GET', path: b, query: { versions: '', ...query } });
  const all = await list({});
  t.is(all.status, 200, all.text);
  t.deepEqual([...all.text.matchAll(/<Version><Key>([^<]+)<\/Key><VersionId>null<\/VersionId><IsLatest>true<\/IsLatest>/g)].map((m) => m[1]), ['a', 'd/x', 'd/y', 'z']);
  t.regex(all.text, /<IsTruncated>false<\/IsTruncated>/);
  t.notRegex(all.text, /DeleteMarker/);
  t.regex(all.text, new RegExp(`<Key>a</Key><VersionId>null</VersionId><IsLatest>true</IsLatest><LastModified>[^<]+</LastModified><ETag>&quot;${createHash('md5').update('body of a').digest('hex')}&quot;</ETag><Size>9</Size>`));
  // Pages: max-keys, then key-marker with version-id-marker null.
  const p1 = await list({ 'max-keys': '2' });
  t.regex(p1.text, /<IsTruncated>true<\/IsTruncated>/);
  t.regex(p1.text, /<NextKeyMarker>d\/x<\/NextKeyMarker><NextVersionIdMarker>null<\/NextVersionIdMarker>/);
  const p2 = await list({ 'key-marker': 'd/x', 'version-id-marker': 'null' });
  t.deepEqual([...p2.text.matchAll(/<Version><Key>([^<]+)<\/Key>/g)].map((m) => m[1]), ['d/y', 'z']);
  const delim = await list({ delimiter: '/' });
  t.deepEqual([...delim.text.matchAll(/<Version><Key>([^<]+)<\/Key>/g)].map((m) => m[1]), ['a', 'z']);
  t.regex(delim.text, /<CommonPrefixes><Prefix>d\/<\/Prefix><\/CommonPrefixes>/);
  t.is(errorCode(await list({ 'version-id-marker': 'null' })), 'InvalidArgument', 'a version marker needs a key marker');
  t.is(errorCode(await list({ 'key-marker': 'a', 'version-id-marker': '3HL4kqtJlcpXroDTDmJ' })), 'InvalidArgument');

  // versionId=null is the object; another id is 400 and touches nothing.
  t.is((await get(`${b}/a`, {}, { versionId: 'null' })).text, 'body of a');
  // An argument echoed in the error stays well-formed XML whatever bytes it held.
  const ctl = await get(`${b}/a`, {}, { versionId: '\u0001\u001f<&' });
  t.is(ctl.status, 400);
  t.regex(ctl.text, /<ArgumentValue>\uFFFD\uFFFD&lt;&amp;<\/ArgumentValue>/);
  const other = await get(`${b}/a`, {}, { versionId: '3HL4kqtJlcpXroDTDmJ' });
  t.is(other.status, 400);
  t.is(errorCode(other), 'InvalidArgument');
  t.is((await s3request(s3.port, { method: 'DELETE', path: `${b}/a`, query: { versionId: '3HL4kqtJlcpXroDTDmJ' } })).status, 400);
  t.is((await head(`${b}/a`)).status, 200, 'a DELETE of another version left the object');
  const del = await s3request(s3.port, {
    method: 'POST',
    path: b,
    query: { delete: '' },
    body: '<Delete><Object><Key>a</Key><VersionId>3HL4kqtJlcpXroDTDmJ</VersionId></Object><Object><Key>z</Key><VersionId>null</VersionId></Object><Object><Key>d/x</Key></Object></Delete>',
  });
  t.is(del.status, 200, del.text);
  t.regex(del.text, /<Error><Key>a<\/Key><VersionId>3HL4kqtJlcpXroDTDmJ<\/VersionId><Code>NoSuchVersion<\/Code>/);
  t.regex(del.text, /<Deleted><Key>z<\/Key><VersionId>null<\/VersionId><\/Deleted>/);
  t.regex(del.text, /<Deleted><Key>d\/x<\/Key><\/Deleted>/);
  t.is((await head(`${b}/a`)).status, 200);
  t.is((await head(`${b}/z`)).status, 404);
  // The same in a copy source.
  t.is((await s3request(s3.port, { method: 'PUT', path: `${b}/copy-null`, headers: { 'x-amz-copy-source': `${b}/a?versionId=null` } })).status, 200);
  t.is((await get(`${b}/copy-null`)).text, 'body of a');
  for (const src of [`${b}/a?versionId=3HL4kqtJlcpXroDTDmJ`, `${b}/a?versionId=`, `${b}/a?partNumber=1`]) {
    const r = await s3request(s3.port, { method: 'PUT', path: `${b}/copy-other`, headers: { 'x-amz-copy-source': src } });
    t.is(errorCode(r), 'InvalidArgument', src);
  }
  t.is((await head(`${b}/copy-other`)).status, 404);
  t.is((await s3request(s3.port, { method: 'DELETE', path: `${b}/a`, query: { versionId: 'null' } })).status, 204);
  t.is((await head(`${b}/a`)).status, 404);
});

test('conditional writes: If-None-Match: * creates only, If-Match replaces only that version; racing creators have one winner; a failed condition stores nothing', async (t) => {
  const b = await bucket('cond-writes');
  const first = await put(`${b}/lock`, 'owner A', { 'if-none-match': '*' });
  t.is(first.status, 200, first.text);
  const second = await put(`${b}/lock`, 'owner B', { 'if-none-match': '*' });
  t.is(second.status, 412);
  t.is(errorCode(second), 'PreconditionFailed');
  t.regex(second.text, /<Condition>If-None-Match<\/Condition>/);
  t.is((await get(`${b}/lock`)).text, 'owner A');
  t.is((await put(`${b}/lock`, 'x', { 'if-none-match': first.headers.etag! })).status, 501, 'If-None-Match takes only * on a write');

  // If-Match: the current ETag (or *) replaces; another is 412; no object is 404.
  const wrong = await put(`${b}/lock`, 'owner C', { 'if-match': '"00000000000000000000000000000000"' });
  t.is(errorCode(wrong), 'PreconditionFailed');
  t.regex(wrong.text, /<Condition>If-Match<\/Condition>/);
  const replaced = await put(`${b}/lock`, 'owner A, again', { 'if-match': first.headers.etag! });
  t.is(replaced.status, 200, replaced.text);
  t.is((await put(`${b}/lock`, 'stale', { 'if-match': first.headers.etag! })).status, 412, 'the old ETag no longer matches');
  t.is((await put(`${b}/lock`, 'any', { 'if-match': '*' })).status, 200);
  t.is(errorCode(await put(`${b}/missing`, 'x', { 'if-match': '*' })), 'NoSuchKey');
  t.is((await head(`${b}/missing`)).status, 404);
  t.is((await get(`${b}/lock`)).text, 'any');

  // Racing creators: bodies large enough that every request passes the early check before any
  // swaps, so the engine's check at the swap decides. Exactly one wins, and its body is stored.
  const bodies = Array.from({ length: 8 }, (_, i) => Buffer.alloc(3 * 1024 * 1024, 65 + i));
  const results = await Promise.all(bodies.map((body) => put(`${b}/race`, body, { 'if-none-match': '*' })));
  const winners = results.map((r, i) => (r.status === 200 ? i : -1)).filter((i) => i >= 0);
  t.is(winners.length, 1, results.map((r) => r.status).join(' '));
  t.true(results.every((r) => r.status === 200 || (r.status === 412 && errorCode(r) === 'PreconditionFailed')));
  t.true((await get(`${b}/race`)).body.equals(bodies[winners[0]!]!));
  // That the losers leave no temp file is checked in engine-conditions (this listener is shared
  // with tests whose PUTs are in flight).

  // CopyObject takes them for its destination.
  t.is(errorCode(await s3request(s3.port, { method: 'PUT', path: `${b}/lock`, headers: { 'x-amz-copy-source': `${b}/race`, 'if-none-match': '*' } })), 'PreconditionFailed');
  t.is((await get(`${b}/lock`)).text, 'any');
  t.is((await s3request(s3.port, { method: 'PUT', path: `${b}/copied`, headers: { 'x-amz-copy-source': `${b}/lock`, 'if-none-match': '*' } })).status, 200);
  // A directory marker: created once.
  t.is((await put(`${b}/dir/`, '', { 'if-none-match': '*' })).status, 200);
  t.is(errorCode(await put(`${b}/dir/`, '', { 'if-none-match': '*' })), 'PreconditionFailed');
  // An SSE-C object's ETag is compared without its key, as AWS does.
  const key = randomBytes(32);
  const sse = { 'x-amz-server-side-encryption-customer-algorithm': 'AES256', 'x-amz-server-side-encryption-customer-key': key.toString('base64'), 'x-amz-server-side-encryption-customer-key-md5': createHash('md5').update(key).digest('base64') };
  t.is((await put(`${b}/secret`, 'sealed with C', sse)).status, 200);
  const secretEtag = (await head(`${b}/secret`, sse)).headers.etag!;
  t.is(errorCode(await put(`${b}/secret`, 'x', { 'if-match': '"0000000000000000000000000000000000000000"' })), 'PreconditionFailed');
  t.is((await put(`${b}/secret`, 'replaced without C', { 'if-match': secretEtag })).status, 200);
  t.is((await get(`${b}/secret`)).text, 'replaced without C');

  // CompleteMultipartUpload takes the same conditions.
  const create = await s3request(s3.port, { method: 'POST', path: `${b}/lock`, query: { uploads: '' } });
  const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(create.text)![1]!;
  const e1 = (await s3request(s3.port, { method: 'PUT', path: `${b}/lock`, query: { partNumber: '1', uploadId }, body: 'multipart body' })).headers.etag!;
  const doc = `<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>${e1}</ETag></Part></CompleteMultipartUpload>`;
  const refused = await s3request(s3.port, { method: 'POST', path: `${b}/lock`, query: { uploadId }, headers: { 'if-none-match': '*' }, body: doc });
  t.is(errorCode(refused), 'PreconditionFailed');
  t.is((await get(`${b}/lock`)).text, 'any');
  const done = await s3request(s3.port, { method: 'POST', path: `${b}/lock`, query: { uploadId }, headers: { 'if-match': (await head(`${b}/lock`)).headers.etag! }, body: doc });
  t.is(done.status, 200, done.text);
  t.is((await get(`${b}/lock`)).text, 'multipart body');
});

test('virtual-host-style addressing', async (t) => {
  await bucket('vhost');
  const host = `vhost.localhost:${s3.port}`;
  const signedPut = await signRequest(s3.port, { method: 'PUT', path: '/in/vhost.txt', headers: { host }, body: 'by host' });
  t.is((await send('PUT', signedPut.path, signedPut.headers, Buffer.from('by host'))).status, 200);
  t.is((await get('/vhost/in/vhost.txt')).text, 'by host');
  const signedList = await signRequest(s3.port, { method: 'GET', path: '/', query: { 'list-type': '2' }, headers: { host } });
  const list = await send('GET', signedList.path, signedList.headers, Buffer.alloc(0));
  t.regex(list.text, /<Key>in\/vhost.txt<\/Key>/);
});

test('a disabled key locks its objects through S3 at once (403 KMS.DisabledException) and enabling restores them', async (t) => {
  // Its own listener and engine: disabling the default key must not disturb the other tests.
  const own = await startInProcess();
  t.teardown(() => own.close());
  const put = (key: string, body: string) => s3request(own.port, { method: 'PUT', path: key, body });
  const get = (key: string, _h = {}, query?: Record<string, string>) => s3request(own.port, { method: 'GET', path: key, query });
  const head = (key: string) => s3request(own.port, { method: 'HEAD', path: key });
  const b = '/keylock';
  t.is((await s3request(own.port, { method: 'PUT', path: b })).status, 200);
  await put(`${b}/locked.txt`, 'secret under the default key');
  t.is((await get(`${b}/locked.txt`)).status, 200);
  const name = own.fx.engine.keys.defaultKeyName;
  await own.fx.engine.disableKey(name);
  try {
    const r = await get(`${b}/locked.txt`);
    t.is(r.status, 403);
    t.is(errorCode(r), 'KMS.DisabledException');
    t.is((await head(`${b}/locked.txt`)).status, 403);
    const w = await put(`${b}/new.txt`, 'x');
    t.is(errorCode(w), 'KMS.DisabledException');
    const list = await get(b, {}, { 'list-type': '2' });
    t.is(list.status, 200);
    t.regex(list.text, /<ETag>&quot;[0-9a-f]{40}&quot;<\/ETag>/);
  } finally {
    await own.fx.engine.enableKey(name);
  }
  const r = await get(`${b}/locked.txt`);
  t.is(r.status, 200);
  t.is(r.text, 'secret under the default key');
});

test('SSE-KMS: named keys must exist, responses name the key, bucket default encryption applies to requests without SSE headers', async (t) => {
  const b = await bucket('ssekms');
  const missing = await put(`${b}/m`, 'x', { 'x-amz-server-side-encryption': 'aws:kms', 'x-amz-server-side-encryption-aws-kms-key-id': 'no-such-key' });
  t.is(missing.status, 404);
  t.is(errorCode(missing), 'kms:KeyNotFound');
  await s3.fx.engine.createKey('tenant-a');
  const w = await put(`${b}/k`, 'kms body', { 'x-amz-server-side-encryption': 'aws:kms', 'x-amz-server-side-encryption-aws-kms-key-id': 'arn:aws:kms:us-east-1:000000000000:key/tenant-a' });
  t.is(w.status, 200, w.text);
  t.is(w.headers['x-amz-server-side-encryption'], 'aws:kms');
  t.is(w.headers['x-amz-server-side-encryption-aws-kms-key-id'], 'tenant-a');
  t.is((await head(`${b}/k`)).headers['x-amz-server-side-encryption-aws-kms-key-id'], 'tenant-a');
  t.is(errorCode(await put(`${b}/x`, 'x', { 'x-amz-server-side-encryption': 'aws:kms:dsse' })), 'InvalidArgument');

  t.is((await s3request(s3.port, { method: 'GET', path: b, query: { encryption: '' } })).status, 404);
  const cfg = '<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>aws:kms</SSEAlgorithm><KMSMasterKeyID>tenant-a</KMSMasterKeyID></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>';
  t.is((await s3request(s3.port, { method: 'PUT', path: b, query: { encryption: '' }, body: cfg })).status, 200);
  t.regex((await s3request(s3.port, { method: 'GET', path: b, query: { encryption: '' } })).text, /<KMSMasterKeyID>tenant-a<\/KMSMasterKeyID>/);
  await put(`${b}/default`, 'bucket default');
  t.is((await head(`${b}/default`)).headers['x-amz-server-side-encryption-aws-kms-key-id'], 'tenant-a');
  await put(`${b}/s3`, 'explicit AES256', { 'x-amz-server-side-encryption': 'AES256' });
  t.is((await head(`${b}/s3`)).headers['x-amz-server-side-encryption'], 'AES256');
  const badCfg = cfg.replace('tenant-a', 'nope');
  t.is(errorCode(await s3request(s3.port, { method: 'PUT', path: b, query: { encryption: '' }, body: badCfg })), 'kms:KeyNotFound');
  t.is((await s3request(s3.port, { method: 'DELETE', path: b, query: { encryption: '' } })).status, 204);
  t.is((await s3request(s3.port, { method: 'GET', path: b, query: { encryption: '' } })).status, 404);
});

test('SSE-KMS with autoCreateKeys creates the named key on demand', async (t) => {
  const other = await startInProcess({ autoCreateKeys: true });
  try {
    t.is((await s3request(other.port, { method: 'PUT', path: '/auto' })).status, 200);
    const w = await s3request(other.port, { method: 'PUT', path: '/auto/k', body: 'x', headers: { 'x-amz-server-side-encryption': 'aws:kms', 'x-amz-server-side-encryption-aws-kms-key-id': 'made-on-demand' } });
    t.is(w.status, 200, w.text);
    t.true((await other.fx.engine.listKeys()).some((k) => k.name === 'made-on-demand'));
  } finally {
    await other.close();
  }
});

test('SSE-C: header validation, key needed to read, wrong key 403, refused over HTTP off loopback', async (t) => {
  const b = await bucket('ssec');
  const key = randomBytes(32);
  const ssec = (k: Buffer, prefix = 'x-amz-server-side-encryption-customer-') => ({ [`${prefix}algorithm`]: 'AES256', [`${prefix}key`]: k.toString('base64'), [`${prefix}key-md5`]: createHash('md5').update(k).digest('base64') });
  const w = await put(`${b}/c`, 'customer secret', ssec(key));
  t.is(w.status, 200, w.text);
  t.is(w.headers['x-amz-server-side-encryption-customer-key-md5'], createHash('md5').update(key).digest('base64'));
  t.regex(w.headers.etag!, /^"[0-9a-f]{40}"$/, 'SSE-C ETags are opaque');
  const h = await head(`${b}/c`, ssec(key));
  t.is(h.headers.etag, w.headers.etag);
  t.is(h.headers['content-length'], '15');
  t.is((await get(`${b}/c`)).status, 400);
  t.is(errorCode(await get(`${b}/c`, ssec(randomBytes(32)))), 'AccessDenied');
  t.is((await get(`${b}/c`, ssec(key))).text, 'customer secret');
  const list = await get(b, {}, { 'list-type': '2' });
  t.true(list.text.includes(`<ETag>${w.headers.etag!.replace(/"/g, '&quot;')}</ETag>`), list.text);
  t.is(errorCode(await put(`${b}/d`, 'x', { ...ssec(key), 'x-amz-server-side-encryption-customer-key-md5': 'AAAAAAAAAAAAAAAAAAAAAA==' })), 'InvalidArgument');
  t.is(errorCode(await put(`${b}/d`, 'x', { ...ssec(key), 'x-amz-server-side-encryption': 'AES256' })), 'InvalidArgument');
  t.is(errorCode(await put(`${b}/d`, 'x', { ...ssec(randomBytes(16)) })), 'InvalidArgument');
  t.is(errorCode(await get(`${b}/c`, { 'x-amz-server-side-encryption': 'AES256' })), 'InvalidArgument');
  // Copy an SSE-C object to SSE-S3 with the source key.
  const c = await s3request(s3.port, { method: 'PUT', path: `${b}/plain-copy`, headers: { 'x-amz-copy-source': `${b}/c`, ...ssec(key, 'x-amz-copy-source-server-side-encryption-customer-') } });
  t.is(c.status, 200, c.text);
  t.is((await get(`${b}/plain-copy`)).text, 'customer secret');

  const open = await startInProcess({ host: '0.0.0.0' });
  try {
    await s3request(open.port, { method: 'PUT', path: '/offloop' });
    const r = await s3request(open.port, { method: 'PUT', path: '/offloop/k', body: 'x', headers: ssec(key) });
    t.is(r.status, 400);
    t.regex(r.text, /secure connection/);
  } finally {
    await open.close();
  }
});

test('an object changed outside S3 (through the engine, as the mount does) gets an ETag that is not an MD5, the same in HEAD and listings', async (t) => {
  const b = await bucket('mountetag');
  await put(`${b}/f.txt`, 'original');
  const h = await s3.fx.engine.open('mountetag', 'f.txt');
  await s3.fx.engine.write(h, 0, Buffer.from('CHANGED!'));
  await s3.fx.engine.release(h);
  const etag = (await head(`${b}/f.txt`)).headers.etag!;
  t.regex(etag, /^"[0-9a-f]{40}"$/);
  t.is((await get(`${b}/f.txt`)).headers.etag, etag);
  const list = await get(b, {}, { 'list-type': '2' });
  t.true(list.text.includes(`<ETag>${etag.replace(/"/g, '&quot;')}</ETag>`), list.text);
});

async function filesContaining(dir: string, needle: Buffer): Promise<string[]> {
  const hits: string[] = [];
  const walk = async (d: string) => {
    // Concurrent tests remove buckets, directories and temp files while this walks: what is gone
    // between the listing and the read is skipped (it holds nothing any more), not an error.
    const entries = await fsp.readdir(d, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [];
      throw err;
    });
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile() && (await fsp.readFile(p).catch(() => Buffer.alloc(0))).includes(needle)) hits.push(p);
    }
  };
  await walk(dir);
  return hits;
}

test('multipart: parts are stored encrypted, Complete replaces the object atomically with the multipart ETag', async (t) => {
  const b = await bucket('multipart');
  const marker = Buffer.from(`PLAINTEXT-MARKER-${randomBytes(8).toString('hex')}`);
  const part1 = Buffer.concat(Array.from({ length: Math.ceil((5 * 1024 * 1024) / marker.length) }, () => marker));
  const part2 = Buffer.concat([marker, Buffer.from(' the end')]);
  await put(`${b}/obj`, 'old version');
  const create = await s3request(s3.port, { method: 'POST', path: `${b}/obj`, query: { uploads: '' }, headers: { 'x-amz-meta-kind': 'multi', 'content-type': 'text/x-multi', 'content-disposition': 'inline' } });
  const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(create.text)![1]!;
  const e1 = (await s3request(s3.port, { method: 'PUT', path: `${b}/obj`, query: { partNumber: '1', uploadId }, body: part1 })).headers.etag!;
  const e2 = (await s3request(s3.port, { method: 'PUT', path: `${b}/obj`, query: { partNumber: '2', uploadId }, body: part2 })).headers.etag!;
  t.deepEqual(await filesContaining(s3.fx.dir, marker), [], 'no part is stored in plaintext');
  t.is((await get(`${b}/obj`)).text, 'old version', 'parts are invisible until Complete');
  const parts = await s3request(s3.port, { method: 'GET', path: `${b}/obj`, query: { uploadId } });
  t.regex(parts.text, /<PartNumber>1<\/PartNumber>[\s\S]*<PartNumber>2<\/PartNumber>/);
  const small = await s3request(s3.port, { method: 'POST', path: `${b}/obj`, query: { uploadId }, body: `<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>${e1}</ETag></Part><Part><PartNumber>3</PartNumber><ETag>${e2}</ETag></Part></CompleteMultipartUpload>` });
  t.is(errorCode(small), 'InvalidPart');
  const order = await s3request(s3.port, { method: 'POST', path: `${b}/obj`, query: { uploadId }, body: `<CompleteMultipartUpload><Part><PartNumber>2</PartNumber><ETag>${e2}</ETag></Part><Part><PartNumber>1</PartNumber><ETag>${e1}</ETag></Part></CompleteMultipartUpload>` });
  t.is(errorCode(order), 'InvalidPartOrder');
  const done = await s3request(s3.port, { method: 'POST', path: `${b}/obj`, query: { uploadId }, body: `<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>${e1}</ETag></Part><Part><PartNumber>2</PartNumber><ETag>${e2}</ETag></Part></CompleteMultipartUpload>` });
  t.is(done.status, 200, done.text);
  const md5 = createHash('md5');
  for (const e of [e1, e2]) md5.update(Buffer.from(e.replace(/"/g, ''), 'hex'));
  const expected = `"${md5.digest('hex')}-2"`;
  t.true(done.text.includes(`<ETag>${expected.replace(/"/g, '&quot;')}</ETag>`), done.text);
  const r = await get(`${b}/obj`);
  t.is(r.headers.etag, expected);
  t.is(r.headers['x-amz-meta-kind'], 'multi');
  t.is(r.headers['content-type'], 'text/x-multi');
  t.is(r.headers['content-disposition'], 'inline', 'CreateMultipartUpload\'s stored headers reach the completed object');
  t.true(r.body.equals(Buffer.concat([part1, part2])));
  t.deepEqual(await filesContaining(s3.fx.dir, marker), [], 'nor the completed object');
  t.is(errorCode(await s3request(s3.port, { method: 'GET', path: `${b}/obj`, query: { uploadId } })), 'NoSuchUpload');
  // A too-small part that is not the last.
  const c2 = await s3request(s3.port, { method: 'POST', path: `${b}/obj2`, query: { uploads: '' } });
  const id2 = /<UploadId>([^<]+)<\/UploadId>/.exec(c2.text)![1]!;
  const s1 = (await s3request(s3.port, { method: 'PUT', path: `${b}/obj2`, query: { partNumber: '1', uploadId: id2 }, body: 'tiny' })).headers.etag!;
  const s2 = (await s3request(s3.port, { method: 'PUT', path: `${b}/obj2`, query: { partNumber: '2', uploadId: id2 }, body: 'tiny' })).headers.etag!;
  const tooSmall = await s3request(s3.port, { method: 'POST', path: `${b}/obj2`, query: { uploadId: id2 }, body: `<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>${s1}</ETag></Part><Part><PartNumber>2</PartNumber><ETag>${s2}</ETag></Part></CompleteMultipartUpload>` });
  t.is(errorCode(tooSmall), 'EntityTooSmall');
  t.is(errorCode(await s3request(s3.port, { method: 'PUT', path: `${b}/obj2`, query: { partNumber: '10001', uploadId: id2 }, body: 'x' })), 'InvalidArgument');
  t.is(errorCode(await s3request(s3.port, { method: 'PUT', path: `${b}/obj2`, query: { partNumber: '1', uploadId: 'not-an-upload' }, body: 'x' })), 'NoSuchUpload');
  t.is((await s3request(s3.port, { method: 'DELETE', path: `${b}/obj2`, query: { uploadId: id2 } })).status, 204);
});

test('a client that sends less than its Content-Length and hangs up leaves no object, and the listener serves on', async (t) => {
  // Its own listener: the temp directory must be empty afterwards, which concurrent PUTs would spoil.
  const own = await startInProcess();
  t.teardown(() => own.close());
  const b = '/hangup';
  await s3request(own.port, { method: 'PUT', path: b });
  const signed = await signRequest(own.port, { method: 'PUT', path: `${b}/partial`, headers: { 'content-length': '100000' }, payloadHash: 'UNSIGNED-PAYLOAD' });
  await rawExchange(own.port, `PUT ${signed.path} HTTP/1.1\r\n${Object.entries(signed.headers).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n${'x'.repeat(1000)}`, 500, true);
  // The server removes the temp file of the cut-short PUT once it has seen the hang-up, in its
  // own time: wait for that (up to 15 s on a loaded machine) rather than a fixed 200 ms.
  const tmp = path.join(own.fx.dir, '.mountd', 'tmp');
  let left = await fsp.readdir(tmp);
  for (const end = Date.now() + 15_000; left.length > 0 && Date.now() < end; left = await fsp.readdir(tmp)) await new Promise((r) => setTimeout(r, 25));
  t.is((await s3request(own.port, { method: 'HEAD', path: `${b}/partial` })).status, 404);
  t.deepEqual(left, []);
  t.is((await s3request(own.port, { method: 'GET', path: '/' })).status, 200);
});

test('buckets: create, list, head, location, delete (not while it holds objects)', async (t) => {
  await bucket('lifecycle');
  t.is(errorCode(await s3request(s3.port, { method: 'PUT', path: '/lifecycle' })), 'BucketAlreadyOwnedByYou');
  t.regex((await s3request(s3.port, { method: 'GET', path: '/' })).text, /<Name>lifecycle<\/Name>/);
  t.is((await s3request(s3.port, { method: 'HEAD', path: '/lifecycle' })).status, 200);
  t.is((await s3request(s3.port, { method: 'HEAD', path: '/nonexistent' })).status, 404);
  t.regex((await s3request(s3.port, { method: 'GET', path: '/lifecycle', query: { location: '' } })).text, /<LocationConstraint/);
  await put('/lifecycle/x', 'x');
  t.is(errorCode(await s3request(s3.port, { method: 'DELETE', path: '/lifecycle' })), 'BucketNotEmpty');
  t.is((await s3request(s3.port, { method: 'DELETE', path: '/lifecycle/x' })).status, 204);
  t.is((await s3request(s3.port, { method: 'DELETE', path: '/lifecycle' })).status, 204);
  t.is(errorCode(await s3request(s3.port, { method: 'PUT', path: '/other-region', body: '<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>' })), 'IllegalLocationConstraintException');
  t.is(errorCode(await s3request(s3.port, { method: 'GET', path: '/lifecycle', query: { inventory: '' } })), 'NotImplemented');
});

test('an unreachable key server is a 503 at once, never a hang', async (t) => {
  const fx = await makeFixture();
  let down = false;
  const real = fx.engine.keyService;
  const fail = () => {
    if (down) throw new MountdError(ErrorCode.KeyServerUnavailable, 'key server unreachable (test)');
  };
  const flaky: KeyService = {
    createKey: (n) => real.createKey(n),
    deleteKey: (n) => real.deleteKey(n),
    describeKey: async (n) => (fail(), real.describeKey(n)),
    listKeys: (p) => real.listKeys(p),
    generate: async (n, c) => (fail(), real.generate(n, c)),
    encrypt: async (n, p, c) => (fail(), real.encrypt(n, p, c)),
    decrypt: async (n, x, c) => (fail(), real.decrypt(n, x, c)),
    disableKey: (n) => real.disableKey(n),
    enableKey: (n) => real.enableKey(n),
    status: () => real.status(),
  };
  const engine = await fx.reopen({ keys: flaky });
  const log = { info() {}, warn() {}, error() {} };
  const server = await startS3Server(engine, { host: '127.0.0.1', port: 0, credentials: CREDS, region: 'us-east-1', log });
  t.teardown(async () => {
    await server.close();
    await fx.cleanup();
  });
  const port = Number(server.address.split(':').pop());
  t.is((await s3request(port, { method: 'PUT', path: '/bucket/k', body: 'x' })).status, 200);
  down = true;
  const started = Date.now();
  for (const r of [await s3request(port, { method: 'GET', path: '/bucket/k' }), await s3request(port, { method: 'PUT', path: '/bucket/k2', body: 'y' })]) {
    t.is(r.status, 503, r.text);
    t.is(errorCode(r), 'XMountdKeyServerUnavailable');
  }
  t.true(Date.now() - started < 5000);
  down = false;
  t.is((await s3request(port, { method: 'GET', path: '/bucket/k' })).text, 'x');
});

test('a declared body over the 5 GiB PUT limit is refused before any byte is read', async (t) => {
  await bucket('hugebody');
  const signed = await signRequest(s3.port, { method: 'PUT', path: '/hugebody/huge', headers: { 'content-length': String(6 * 1024 ** 3) }, payloadHash: 'UNSIGNED-PAYLOAD' });
  const reply = await rawExchange(s3.port, `PUT ${signed.path} HTTP/1.1\r\n${Object.entries(signed.headers).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`, 1500);
  t.regex(reply, /^HTTP\/1.1 400 [\s\S]*EntityTooLarge/);
  t.regex(reply, /Connection: close/i);
});
