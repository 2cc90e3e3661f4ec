// Seeded fuzzing of a real mountd S3 listener for a bounded time (FUZZ_SECONDS, default 12; FUZZ_SEED reproduces):
// mutated authorization, paths and keys with "..", "%2e%2e", "%2F", NUL and overlong segments, huge headers,
// bad ranges and dates, malformed XML, broken aws-chunked bodies, broken HTTP, and the later API surface
// (ACLs, bucket settings, versions and versionId, conditional writes, stored and response-* headers,
// object ownership). Every request gets an answer
// (never a hang), never a 5xx; the daemon keeps serving (a known-good request after every batch); afterwards
// no file exists outside the data directory and nothing unexpected inside it.
//
// Accepted answers: 2xx/304 (a mutation that left the request valid), 4xx (400, 403, 404, 405, 409, 411,
// 412, 416 for unsatisfiable ranges, 431 for oversized heads, ...), 501 NotImplemented (sub-resources and
// headers we do not implement, by design). For broken HTTP framing and bodies cut short by the client,
// the server may also close the connection without a status (counted apart). Nothing else.
import test from 'ava';
import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT, removeDir, startDaemon, type Daemon } from './helpers/daemon.js';
import { tempDir } from './helpers/engine.js';
import { ESCAPE_MARK, Rng, added, amzDate, escapedFiles, exchange, fuzzSeed, mutate, rawRequest, sigv4Authorization, snapshot, type RawAnswer } from './helpers/fuzz.js';
import { CREDS, REGION, s3request } from './helpers/s3.js';

const SECONDS = Number(process.env.FUZZ_SECONDS ?? 12);
const SEED = fuzzSeed();
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

interface Case {
  family: string;
  data: Buffer;
  /** The request is cut short on purpose (half-closed): closing without a status is fine. */
  truncated?: boolean;
  /** Broken HTTP framing: Node's parser may close without a status. */
  framing?: boolean;
  head?: boolean;
}

function signed(port: number, method: string, p: string, opts: { query?: Array<[string, string]>; headers?: Array<[string, string]>; body?: Buffer; payloadHash?: string; date?: string } = {}): { headers: Array<[string, string]>; target: string; body: Buffer } {
  const body = opts.body ?? Buffer.alloc(0);
  const date = opts.date ?? amzDate();
  const payloadHash = opts.payloadHash ?? sha(body);
  const headers: Array<[string, string]> = [['host', `127.0.0.1:${port}`], ['x-amz-date', date], ['x-amz-content-sha256', payloadHash], ...(opts.headers ?? [])];
  const query = opts.query ?? [];
  const auth = sigv4Authorization({ method, path: p, query, headers, payloadHash, accessKey: CREDS.accessKeyId, secretKey: CREDS.secretAccessKey, region: REGION, amzDate: date });
  const target = query.length > 0 ? `${p}?${query.map(([k, v]) => (v === '' ? k : `${k}=${v}`)).join('&')}` : p;
  return { headers: [...headers, ['authorization', auth], ['content-length', String(body.length)], ['connection', 'close']], target, body };
}

const KEY_PIECES = ['..', '.', '%2e%2e', '%2E%2E', '%2e.', '.%2e', '%2F', '%2f', '%00', '%5C', '\\', '', '~', ';', '%', '%zz', '%C0%AE%C0%AE', '%ff', 'a b', '%20', 'ok', 'd', ESCAPE_MARK];

function keyPath(rng: Rng, n: number): string {
  if (rng.chance(0.08)) return `/${'k'.repeat(1000 + rng.int(200))}`; // overlong key
  if (rng.chance(0.08)) return `/${'s'.repeat(250 + rng.int(20))}/x`; // overlong segment
  const parts: string[] = [];
  for (let i = 0, m = 1 + rng.int(5); i < m; i++) parts.push(rng.pick(KEY_PIECES));
  parts.push(`${ESCAPE_MARK}-${n}`);
  return `/${parts.join('/')}`;
}

function bucketPart(rng: Rng): string {
  return rng.chance(0.8) ? 'fuzz' : rng.pick(['..', '.mountd', '%2e%2e', 'FUZZ', 'fu', 'a'.repeat(64), `${ESCAPE_MARK}-b`, '%2e%2emountd', '.', 'fuzz%2F..', 'xn--fuzz']);
}

function makeCase(rng: Rng, port: number, n: number, uploadId: string): Case {
  const family = rng.pick(['auth', 'path', 'headers', 'range', 'xml', 'chunked', 'http', 'presign', 'api']);
  switch (family) {
    case 'api': {
      // The later API surface: ACLs, bucket settings, versions, conditional writes, stored and response headers.
      const pick = rng.int(7);
      const key = `/fuzz/${ESCAPE_MARK}-a-${n % 13}`;
      const word = () => rng.pick(['', '*', 'null', '..', '%00', '"x"', '\u0001', 'private', 'public-read', 'bucket-owner-full-control', rng.word(1 + rng.int(300))]);
      let method = 'GET';
      let p = key;
      let query: Array<[string, string]> = [];
      const headers: Array<[string, string]> = [];
      let body: Buffer | undefined;
      if (pick === 0) {
        method = rng.pick(['GET', 'PUT']);
        p = rng.pick([key, '/fuzz', '/fuzz/known.txt']);
        query = [['acl', '']];
        if (method === 'PUT') {
          if (rng.chance(0.5)) headers.push([rng.pick(['x-amz-acl', 'x-amz-grant-read', 'x-amz-grant-full-control']), word()]);
          else body = mutate(rng, Buffer.from('<AccessControlPolicy><Owner><ID>mountd</ID></Owner><AccessControlList><Grant><Grantee><ID>mountd</ID></Grantee><Permission>FULL_CONTROL</Permission></Grant></AccessControlList></AccessControlPolicy>'));
        }
      } else if (pick === 1) {
        method = rng.pick(['GET', 'DELETE', 'PUT']);
        p = rng.pick(['/fuzz', `/${ESCAPE_MARK}-nb`]);
        query = [[rng.pick(['policy', 'cors', 'lifecycle', 'tagging', 'website', 'replication', 'object-lock', 'logging', 'notification', 'requestPayment', 'accelerate', 'ownershipControls', 'publicAccessBlock']), '']];
        if (method === 'PUT') body = Buffer.from(rng.word(rng.int(200)));
      } else if (pick === 2) {
        p = '/fuzz';
        query = [['versions', '']];
        for (const q of ['key-marker', 'version-id-marker', 'max-keys', 'prefix', 'delimiter', 'encoding-type']) if (rng.chance(0.4)) query.push([q, rng.pick(['0', '1', '-1', '1001', 'null', 'x', '..', '%2F', 'url', ''])]);
      } else if (pick === 3) {
        method = rng.pick(['GET', 'HEAD', 'DELETE', 'PUT']);
        p = rng.pick([key, '/fuzz/known.txt']);
        query = [['versionId', word()]];
        if (method === 'PUT') body = Buffer.from('versioned?');
      } else if (pick === 4) {
        method = 'PUT';
        headers.push([rng.pick(['if-none-match', 'if-match']), rng.pick(['*', '"x"', '', 'W/"x"', '"d41d8cd98f00b204e9800998ecf8427e"', rng.word(40)])]);
        if (rng.chance(0.3)) headers.push(['x-amz-copy-source', rng.pick(['/fuzz/known.txt', '/fuzz/known.txt?versionId=null', '/fuzz/known.txt?versionId=x', '/fuzz/known.txt?x=1'])]);
        else body = Buffer.from(`conditional ${n}`);
        p = rng.pick([key, `/fuzz/${ESCAPE_MARK}-dir-${n % 5}/`]);
      } else if (pick === 5) {
        method = rng.pick(['PUT', 'GET']);
        if (method === 'PUT') {
          for (const h of ['cache-control', 'content-disposition', 'content-encoding', 'content-language', 'expires']) if (rng.chance(0.5)) headers.push([h, rng.pick([rng.word(1 + rng.int(3000)), 'aws-chunked', 'gzip, aws-chunked', ' ', '\t'])]);
          body = Buffer.from('stored headers');
        } else {
          p = '/fuzz/known.txt';
          query = [[rng.pick(['response-content-disposition', 'response-cache-control', 'response-content-encoding', 'response-expires']), rng.pick(['%E6%97%A5', '%00', '%0d%0a', 'ok', '%FF', rng.word(50)])]];
        }
      } else {
        method = 'PUT';
        p = `/${ESCAPE_MARK}-own-${n % 5}`;
        headers.push([rng.pick(['x-amz-object-ownership', 'x-amz-acl']), rng.pick(['BucketOwnerEnforced', 'ObjectWriter', 'BucketOwnerPreferred', 'private', 'public-read-write', rng.word(20)])]);
      }
      const s = signed(port, method, p, { query, headers: headers.map(([k, v]) => [k, v.replace(/[\r\n]/g, '')] as [string, string]), body });
      return { family, data: rawRequest(method, s.target, s.headers, s.body), head: method === 'HEAD' };
    }
    case 'auth': {
      const s = signed(port, rng.pick(['GET', 'PUT', 'HEAD']), '/fuzz/known.txt', { body: rng.chance(0.5) ? Buffer.from('x') : undefined });
      const i = rng.int(s.headers.length - 2);
      const h = s.headers.map(([k, v]) => [k, v] as [string, string]);
      switch (rng.int(5)) {
        case 0: // mutate the Authorization value
          h[h.findIndex(([k]) => k === 'authorization')]![1] = mutate(rng, Buffer.from(h.find(([k]) => k === 'authorization')![1])).toString('latin1').replace(/[\r\n]/g, '');
          break;
        case 1: // mutate another header value after signing
          h[i]![1] = mutate(rng, Buffer.from(h[i]![1])).toString('latin1').replace(/[\r\n]/g, '');
          break;
        case 2: // drop a header
          h.splice(i, 1);
          break;
        case 3: // a date far off or malformed
          h[h.findIndex(([k]) => k === 'x-amz-date')]![1] = rng.pick(['19700101T000000Z', '20991231T235959Z', 'yesterday', '2024-01-01', '', 'ZZZZZZZZTZZZZZZZ']);
          break;
        default: // a whole made-up header
          h[h.findIndex(([k]) => k === 'authorization')]![1] = rng.pick([
            'AWS4-HMAC-SHA256',
            'AWS4-HMAC-SHA256 Credential=',
            `AWS4-HMAC-SHA256 Credential=${CREDS.accessKeyId}/../../../x/s3/aws4_request, SignedHeaders=host, Signature=00`,
            `AWS4-HMAC-SHA256 Credential=${'A'.repeat(5000)}, SignedHeaders=host, Signature=00`,
            'AWS mountdadmin:AAAA',
            'Bearer x',
            `AWS4-HMAC-SHA256 Credential=${CREDS.accessKeyId}/20300101/us-east-1/s3/aws4_request, SignedHeaders=${'host;'.repeat(500)}host, Signature=${'f'.repeat(64)}`,
            rng.word(1 + rng.int(200)),
          ]);
      }
      return { family, data: rawRequest(rng.pick(['GET', 'PUT', 'HEAD']), s.target, h, s.body) };
    }
    case 'path': {
      const method = rng.pick(['GET', 'PUT', 'HEAD', 'DELETE', 'POST']);
      const p = `/${bucketPart(rng)}${keyPath(rng, n)}`;
      const query: Array<[string, string]> = method === 'POST' ? [['uploads', '']] : rng.chance(0.1) ? [[rng.pick(['acl', 'tagging', 'uploadId', 'versionId', 'torrent']), rng.pick(['', '..', uploadId, '%2e%2e'])]] : [];
      const headers: Array<[string, string]> = rng.chance(0.2) ? [['x-amz-copy-source', rng.pick(['/fuzz/known.txt', '/fuzz/../.mountd/lock', '../../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', `/fuzz/${ESCAPE_MARK}/../..`, '/.mountd/kes/master.key'])]] : [];
      const s = signed(port, method, p, { query, headers, body: method === 'PUT' ? Buffer.from(`body ${n}`) : undefined });
      return { family, data: rawRequest(method, s.target, s.headers, s.body), head: method === 'HEAD' };
    }
    case 'headers': {
      const method = rng.pick(['GET', 'PUT', 'HEAD']);
      const extra: Array<[string, string]> = [];
      switch (rng.int(9)) {
        case 0:
          extra.push(['x-amz-meta-big', 'v'.repeat(9000 + rng.int(60_000))]);
          break;
        case 1:
          for (let i = 0; i < 100 + rng.int(300); i++) extra.push([`x-amz-meta-m${i}`, rng.word(20)]);
          break;
        case 2:
          extra.push(['content-md5', rng.pick(['', 'AAAA', '!!!!', 'a'.repeat(24), rng.word(30)])]);
          break;
        case 3:
          extra.push(['x-amz-server-side-encryption', rng.pick(['aws:kms', 'AES256', 'rot13', '', 'aws:kms:dsse'])], ['x-amz-server-side-encryption-aws-kms-key-id', rng.pick(['../../x', '.mountd', 'a'.repeat(300), `${ESCAPE_MARK}/..`, '%00', 'ok-key'])]);
          break;
        case 4:
          extra.push(['x-amz-server-side-encryption-customer-algorithm', rng.pick(['AES256', 'AES128', ''])], ['x-amz-server-side-encryption-customer-key', rng.pick(['', 'AAAA', Buffer.alloc(32).toString('base64'), rng.word(44)])], ['x-amz-server-side-encryption-customer-key-md5', rng.pick(['', 'x', rng.word(24)])]);
          break;
        case 5:
          extra.push([rng.pick(['if-modified-since', 'if-unmodified-since', 'if-match', 'if-none-match']), rng.pick(['yesterday', '', '*', 'Mon, 99 Foo 2024 99:99:99 GMT', '"' + 'e'.repeat(5000) + '"', 'Thu, 01 Jan 1970 00:00:00 GMT'])]);
          break;
        case 6:
          extra.push(['x-amz-tagging', rng.pick(['a', '=', '&&&', 'k=v&k=w', `${'k'.repeat(200)}=v`, '%zz=%zz', Array.from({ length: 20 }, (_, i) => `t${i}=v`).join('&')])]);
          break;
        case 7:
          extra.push(['content-type', rng.word(1 + rng.int(3000))], ['cache-control', rng.word(100)], ['expires', 'never']);
          break;
        default:
          extra.push(['x-amz-meta-' + rng.word(1 + rng.int(40)).replace(/[^A-Za-z0-9-]/g, '-'), rng.word(rng.int(500))]);
      }
      const s = signed(port, method, `/fuzz/${ESCAPE_MARK}-h-${n}`, { headers: extra, body: method === 'PUT' ? Buffer.from('header fuzz') : undefined });
      return { family, data: rawRequest(method, s.target, s.headers, s.body), head: method === 'HEAD' };
    }
    case 'range': {
      const v = rng.pick(['bytes=5-1', 'bytes=-0', 'bytes=99999999999999999999-', 'bytes=0-1,2-3', 'items=0-1', 'bytes=--1', 'bytes= 1-2', 'bytes=1-2-3', 'bytes=', 'bytes=-', 'bytes=100-', 'bytes=4-4', `bytes=${rng.int(20)}-${rng.int(20)}`, `bytes=${rng.word(8)}`, 'bytes=0-18446744073709551616']);
      const method = rng.pick(['GET', 'GET', 'HEAD']);
      const s = signed(port, method, '/fuzz/known.txt', { headers: [['range', v]], query: rng.chance(0.2) ? [['partNumber', rng.pick(['0', '1', '2', '-1', 'x', '99999'])]] : [] });
      return { family, data: rawRequest(method, s.target, s.headers, s.body), head: method === 'HEAD' };
    }
    case 'xml': {
      const docs: Array<{ method: string; p: string; query: Array<[string, string]>; body: string }> = [
        { method: 'POST', p: '/fuzz', query: [['delete', '']], body: `<Delete><Object><Key>${ESCAPE_MARK}-x</Key></Object><Object><Key>../../x</Key></Object></Delete>` },
        { method: 'POST', p: '/fuzz/mp.bin', query: [['uploadId', rng.pick([uploadId, 'nope', '..', '%2e%2e'])]], body: '<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"x"</ETag></Part></CompleteMultipartUpload>' },
        { method: 'PUT', p: '/fuzz', query: [['encryption', '']], body: '<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>aws:kms</SSEAlgorithm><KMSMasterKeyID>../x</KMSMasterKeyID></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>' },
        { method: 'PUT', p: `/${ESCAPE_MARK}-bkt-${n % 7}`, query: [], body: '<CreateBucketConfiguration><LocationConstraint>us-east-1</LocationConstraint></CreateBucketConfiguration>' },
        { method: 'PUT', p: '/fuzz/known.txt', query: [['tagging', '']], body: '<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value></Tag></TagSet></Tagging>' },
      ];
      const d = rng.pick(docs);
      const specials = [
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><Delete><Object><Key>&x;</Key></Object></Delete>',
        `<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">${Array.from({ length: 9 }, (_, i) => `<!ENTITY ${String.fromCharCode(98 + i)} "${`&${String.fromCharCode(97 + i)};`.repeat(10)}">`).join('')}]><Delete><Object><Key>&j;</Key></Object></Delete>`,
        '<a>'.repeat(20_000) + '</a>'.repeat(20_000),
        `<Delete>${'<Object><Key>k</Key></Object>'.repeat(1500)}</Delete>`,
        '',
        '\xff\xfe<\x00D\x00',
        '<Delete><Object><Key></Key></Object></Delete>',
      ];
      const bodyText = rng.chance(0.3) ? rng.pick(specials) : mutate(rng, Buffer.from(d.body)).toString('latin1');
      const body = Buffer.from(bodyText, 'latin1');
      const s = signed(port, d.method, d.p, { query: d.query, body });
      return { family, data: rawRequest(d.method, s.target, s.headers, s.body) };
    }
    case 'chunked': {
      const payload = Buffer.from(`chunked ${n} `.repeat(1 + rng.int(200)));
      const hash = rng.pick(['STREAMING-AWS4-HMAC-SHA256-PAYLOAD', 'STREAMING-UNSIGNED-PAYLOAD-TRAILER', 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER', 'STREAMING-BOGUS', 'UNSIGNED-PAYLOAD']);
      const sizeHex = rng.pick([payload.length.toString(16), 'zz', '-1', 'ffffffffffffffff', '0', (payload.length + 5).toString(16), ' ' + payload.length.toString(16), '']);
      const sig = rng.pick([';chunk-signature=' + '0'.repeat(64), ';chunk-signature=', '', ';chunk-signature=' + rng.word(64), ';' + rng.word(10)]);
      let body = Buffer.concat([Buffer.from(`${sizeHex}${sig}\r\n`), payload, Buffer.from('\r\n'), Buffer.from(rng.chance(0.7) ? `0${sig}\r\n` : ''), Buffer.from(rng.chance(0.5) ? 'x-amz-checksum-crc32:AAAAAA==\r\n' : ''), Buffer.from(rng.chance(0.8) ? '\r\n' : '')]);
      if (rng.chance(0.4)) body = mutate(rng, body);
      const truncated = rng.chance(0.2);
      const declared = truncated ? body.length + 100 : body.length;
      const headers: Array<[string, string]> = [['content-encoding', rng.pick(['aws-chunked', 'gzip,aws-chunked', 'x'])], ['x-amz-decoded-content-length', rng.pick([String(payload.length), '-1', 'x', '99999999999999999999', String(payload.length + 1)])]];
      if (hash.includes('TRAILER') && rng.chance(0.7)) headers.push(['x-amz-trailer', rng.pick(['x-amz-checksum-crc32', 'x-amz-checksum-bogus', ''])]);
      const s = signed(port, 'PUT', `/fuzz/${ESCAPE_MARK}-c-${n}`, { headers, payloadHash: hash, body: Buffer.alloc(0) });
      const h = s.headers.map(([k, v]) => (k === 'content-length' ? ([k, String(declared)] as [string, string]) : ([k, v] as [string, string])));
      return { family, data: rawRequest('PUT', s.target, h, body), truncated };
    }
    case 'presign': {
      const date = amzDate();
      const q: Array<[string, string]> = [
        ['X-Amz-Algorithm', rng.pick(['AWS4-HMAC-SHA256', 'AWS4-HMAC-SHA1', ''])],
        ['X-Amz-Credential', rng.pick([`${CREDS.accessKeyId}%2F${date.slice(0, 8)}%2F${REGION}%2Fs3%2Faws4_request`, '..%2F..', '', rng.word(30).replace(/[^A-Za-z0-9]/g, 'x')])],
        ['X-Amz-Date', rng.pick([date, '0', 'x', '99999999T999999Z'])],
        ['X-Amz-Expires', rng.pick(['300', '-1', '0', '604801', '99999999999999999999', 'x'])],
        ['X-Amz-SignedHeaders', rng.pick(['host', '', 'host;x', '%00'])],
        ['X-Amz-Signature', rng.pick(['0'.repeat(64), 'x', ''])],
      ];
      if (rng.chance(0.3)) q.splice(rng.int(q.length), 1);
      const target = `/fuzz/known.txt?${q.map(([k, v]) => `${k}=${v}`).join('&')}`;
      return { family, data: rawRequest(rng.pick(['GET', 'PUT', 'DELETE']), target, [['host', `127.0.0.1:${port}`], ['connection', 'close'], ['content-length', '0']]) };
    }
    default: {
      // Broken HTTP: request lines, header lines, framing.
      const forms = [
        () => rawRequest(rng.word(1 + rng.int(10)), '/fuzz/known.txt', [['host', 'x']]),
        () => rawRequest('GET', rng.pick(['fuzz/known.txt', 'http://127.0.0.1/../../etc/passwd', '*', '//fuzz//known.txt', '/fuzz/known.txt#frag', '/%', '/\x00']), [['host', 'x'], ['connection', 'close']]),
        () => Buffer.from(`GET /fuzz/known.txt HTTP/${rng.pick(['0.9', '2.0', '1.x', '9.9'])}\r\nHost: x\r\n\r\n`),
        () => Buffer.from('GET /fuzz/known.txt HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n'),
        () => Buffer.from('GET /fuzz/known.txt HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n'),
        () => Buffer.from('PUT /fuzz/known.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!'),
        () => Buffer.from('PUT /fuzz/known.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /fuzz/known.txt HTTP/1.1\r\nHost: x\r\n\r\n'),
        () => Buffer.from('PUT /fuzz/known.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n'),
        () => Buffer.from('PUT /fuzz/known.txt HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n'),
        () => Buffer.from(`GET /fuzz/known.txt HTTP/1.1\r\nHost: x\r\n${'X-Pad: ' + 'p'.repeat(200) + '\r\n'}`.repeat(1) + `X-Huge: ${'h'.repeat(20_000)}\r\n\r\n`),
        () => mutate(rng, rawRequest('GET', '/fuzz/known.txt', [['host', 'x'], ['connection', 'close']])),
      ];
      return { family: 'http', data: rng.pick(forms)(), framing: true, truncated: true };
    }
  }
}

function acceptable(c: Case, a: RawAnswer): boolean {
  if (a.hung) return false;
  if (a.status === 0) return Boolean(c.framing || c.truncated);
  if (a.status >= 200 && a.status < 300) return true;
  if (a.status === 304 || a.status === 501) return true;
  return a.status >= 400 && a.status < 500;
}

let daemon: Daemon | undefined;
let root = '';

test.before(async () => {
  root = await tempDir('mountd-fuzz-s3');
  daemon = await startDaemon({ dataDir: path.join(root, 'data'), s3: true });
});

test.after.always(async () => {
  await daemon?.stop();
  await removeDir(root);
});

test('seeded S3 fuzzing: every request answered with a 4xx (or accepted), never a 5xx or a hang; nothing escapes the data directory', async (t) => {
  const port = daemon!.s3Port!;
  const data = daemon!.dataDir;
  t.log(`S3 fuzz seed ${SEED} (FUZZ_SEED=${SEED} reproduces the inputs), ${SECONDS} s`);
  const stamp = new Date();
  t.is((await s3request(port, { method: 'PUT', path: '/fuzz' })).status, 200);
  t.is((await s3request(port, { method: 'PUT', path: '/known-good' })).status, 200);
  t.is((await s3request(port, { method: 'PUT', path: '/fuzz/known.txt', body: 'known body' })).status, 200);
  const init = await s3request(port, { method: 'POST', path: '/fuzz/mp.bin', query: { uploads: '' } });
  const uploadId = /<UploadId>([^<]+)<\/UploadId>/.exec(init.text)![1]!;
  const rootBefore = await snapshot(root);
  const tmpBefore = new Set(await fsp.readdir(os.tmpdir()));

  const rng = new Rng(SEED);
  const deadline = Date.now() + SECONDS * 1000;
  const statuses = new Map<string, number>();
  const bad: string[] = [];
  let tried = 0;
  let batches = 0;
  let closedWithoutStatus = 0;
  let slowest = 0;
  while (Date.now() < deadline) {
    const batch = Array.from({ length: 40 }, () => makeCase(rng, port, tried++, uploadId));
    // Eight at a time: concurrency is part of the input.
    for (let i = 0; i < batch.length; i += 8) {
      const answers = await Promise.all(batch.slice(i, i + 8).map((c) => exchange(port, c.data, { timeoutMs: 15_000, endWrite: c.truncated, headRequest: c.head })));
      answers.forEach((a, j) => {
        const c = batch[i + j]!;
        slowest = Math.max(slowest, a.ms);
        const k = `${c.family} ${a.hung ? 'HUNG' : a.status}`;
        statuses.set(k, (statuses.get(k) ?? 0) + 1);
        if (a.status === 0 && !a.hung) closedWithoutStatus++;
        if (!acceptable(c, a) && bad.length < 20) bad.push(`${k}: ${c.data.subarray(0, 300).toString('latin1').replace(/\r\n/g, '⏎')} -> ${a.head.split('\r\n')[0]} ${a.body.subarray(0, 200).toString('latin1')} ${a.error ?? ''}`);
        if (a.body.includes('root:x:0:0')) bad.push(`${k}: /etc/passwd in the answer`);
      });
    }
    batches++;
    // The daemon keeps serving: a known-good request after every batch.
    const body = `known good ${batches}`;
    const put = await s3request(port, { method: 'PUT', path: `/known-good/check-${batches % 5}`, body });
    const good = await s3request(port, { method: 'GET', path: `/known-good/check-${batches % 5}` });
    if (put.status !== 200 || good.status !== 200 || good.text !== body) {
      bad.push(`known-good PUT+GET after batch ${batches}: ${put.status} ${good.status} ${good.text.slice(0, 200)}`);
      break;
    }
  }
  const hist = [...statuses].sort().map(([k, v]) => `${k}: ${v}`).join(', ');
  t.log(`${tried} inputs in ${batches} batches; answers by family and status: ${hist}; ${closedWithoutStatus} closed without a status (broken framing or bodies cut short); slowest answer ${slowest} ms`);
  t.deepEqual(bad, [], 'every answer acceptable');
  t.true(daemon!.proc.exitCode === null, 'the daemon is still running');
  t.false(/ mountd error /.test(daemon!.log()), `errors logged:\n${daemon!.log().split('\n').filter((l) => / error /.test(l)).slice(0, 10).join('\n')}`);

  // Nothing outside the data directory: no file with the mark climbed out, nothing new beside it.
  const escaped = (await escapedFiles([os.tmpdir(), ROOT, '/'], [], stamp)).filter((p) => {
    if (!p.startsWith(data + path.sep)) return true;
    const rel = path.relative(data, p).split(path.sep);
    return rel[0] === '.mountd';
  });
  t.deepEqual(escaped, [], `files carrying "${ESCAPE_MARK}" outside the buckets (FUZZ_SEED=${SEED})`);
  const newBeside = added(rootBefore, await snapshot(root)).filter((p) => !p.startsWith(`data${path.sep}`));
  t.deepEqual(newBeside, [], 'nothing new beside the data directory');
  const newTmp = (await fsp.readdir(os.tmpdir())).filter((n) => !tmpBefore.has(n) && n.includes(ESCAPE_MARK));
  t.deepEqual(newTmp, [], 'nothing new in the OS temp dir from this fuzzer');
  // Inside it: buckets (directories) and the daemon's own files, nothing else.
  const unexpected: string[] = [];
  for (const d of await fsp.readdir(data, { withFileTypes: true })) {
    if (d.name === '.mountd') continue;
    if (!d.isDirectory() || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(d.name)) unexpected.push(d.name);
  }
  for (const n of await fsp.readdir(path.join(data, '.mountd'))) if (!['lock', 'control.sock', 'kes', 'tmp', 'journal', 'uploads', 'tails'].includes(n)) unexpected.push(`.mountd/${n}`);
  for (const n of await fsp.readdir(path.join(data, '.mountd', 'tmp'))) unexpected.push(`.mountd/tmp/${n}`);
  for (const n of await fsp.readdir(path.join(data, '.mountd', 'journal'))) unexpected.push(`.mountd/journal/${n}`);
  for (const id of await fsp.readdir(path.join(data, '.mountd', 'uploads')).catch(() => [] as string[])) {
    for (const n of await fsp.readdir(path.join(data, '.mountd', 'uploads', id))) if (!/^(upload\.json|meta|part-\d{5})$/.test(n)) unexpected.push(`.mountd/uploads/${id}/${n}`);
  }
  t.deepEqual(unexpected, [], 'only buckets and the daemon\'s own files in the data directory');
  t.true(Date.now() - stamp.getTime() < (SECONDS + 90) * 1000);
});
