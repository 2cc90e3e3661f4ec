// Unit tests of the S3 listener's pure parts: the pinned route table, SigV4 pieces, aws-chunked decoding, ranges, conditions, checksums.
import test from 'ava';
import { createChecksum } from '../src/s3/checksums.js';
import { decodeAwsChunked } from '../src/s3/chunked.js';
import { S3Error } from '../src/s3/errors.js';
import { addressOf } from '../src/s3/index.js';
import { checkConditions, opaqueEtag, parseRange } from '../src/s3/objectmeta.js';
import { ROUTES, matchRoute } from '../src/s3/routes.js';
import { awsEncode, parseAmzDate } from '../src/s3/sigv4.js';
import { kmsKeyName } from '../src/s3/sse.js';
import { signingKey } from './helpers/s3.js';

test('the route table is pinned: changing the S3 API is a deliberate act', (t) => {
  const table = ROUTES.map((r) => [r.method, r.target, r.query.join('&') || '-', r.copySource === undefined ? '-' : r.copySource ? 'copy' : 'no-copy', r.bodyLimit, r.name].join(' '));
  t.deepEqual(table, [
    'GET service - - 0 ListBuckets',
    'GET bucket location - 0 GetBucketLocation',
    'GET bucket versioning - 0 GetBucketVersioning',
    'GET bucket acl - 0 GetBucketAcl',
    'PUT bucket acl - 65536 PutBucketAcl',
    'GET bucket encryption - 0 GetBucketEncryption',
    'PUT bucket encryption - 65536 PutBucketEncryption',
    'DELETE bucket encryption - 0 DeleteBucketEncryption',
    'GET bucket policy - 0 GetBucketPolicy',
    'GET bucket cors - 0 GetBucketCors',
    'GET bucket lifecycle - 0 GetBucketLifecycleConfiguration',
    'GET bucket tagging - 0 GetBucketTagging',
    'GET bucket website - 0 GetBucketWebsite',
    'GET bucket replication - 0 GetBucketReplication',
    'GET bucket object-lock - 0 GetObjectLockConfiguration',
    'GET bucket logging - 0 GetBucketLogging',
    'GET bucket notification - 0 GetBucketNotificationConfiguration',
    'GET bucket requestPayment - 0 GetBucketRequestPayment',
    'GET bucket accelerate - 0 GetBucketAccelerateConfiguration',
    'GET bucket ownershipControls - 0 GetBucketOwnershipControls',
    'GET bucket publicAccessBlock - 0 GetPublicAccessBlock',
    'DELETE bucket policy - 0 DeleteBucketPolicy',
    'DELETE bucket cors - 0 DeleteBucketCors',
    'DELETE bucket lifecycle - 0 DeleteBucketLifecycle',
    'DELETE bucket tagging - 0 DeleteBucketTagging',
    'DELETE bucket website - 0 DeleteBucketWebsite',
    'GET bucket uploads - 0 ListMultipartUploads',
    'POST bucket delete - 4194304 DeleteObjects',
    'GET bucket versions - 0 ListObjectVersions',
    'GET bucket list-type=2 - 0 ListObjectsV2',
    'GET bucket - - 0 ListObjects',
    'HEAD bucket - - 0 HeadBucket',
    'PUT bucket - - 65536 CreateBucket',
    'DELETE bucket - - 0 DeleteBucket',
    'GET object uploadId - 0 ListParts',
    'GET object acl - 0 GetObjectAcl',
    'PUT object acl - 65536 PutObjectAcl',
    'GET object tagging - 0 GetObjectTagging',
    'PUT object tagging - 65536 PutObjectTagging',
    'DELETE object tagging - 0 DeleteObjectTagging',
    'GET object - - 0 GetObject',
    'HEAD object - - 0 HeadObject',
    'PUT object partNumber&uploadId copy 0 UploadPartCopy',
    'PUT object partNumber&uploadId no-copy 5368709120 UploadPart',
    'PUT object - copy 0 CopyObject',
    'PUT object - no-copy 5368709120 PutObject',
    'DELETE object uploadId - 0 AbortMultipartUpload',
    'DELETE object - - 0 DeleteObject',
    'POST object uploads - 0 CreateMultipartUpload',
    'POST object uploadId - 4194304 CompleteMultipartUpload',
  ]);
});

test('routing: sub-resources select operations; unknown ones are NotImplemented, never served as something else', (t) => {
  const q = (o: Record<string, string>) => new Map(Object.entries(o));
  t.is(matchRoute('GET', 'object', q({}), false).name, 'GetObject');
  t.is(matchRoute('GET', 'object', q({ 'response-content-type': 'x', partNumber: '1' }), false).name, 'GetObject');
  t.is(matchRoute('GET', 'bucket', q({ 'list-type': '2', prefix: 'a' }), false).name, 'ListObjectsV2');
  t.is(matchRoute('GET', 'bucket', q({ 'list-type': '1' }), false).name, 'ListObjects');
  t.is(matchRoute('PUT', 'object', q({}), true).name, 'CopyObject');
  t.is(matchRoute('PUT', 'object', q({ partNumber: '1', uploadId: 'u' }), true).name, 'UploadPartCopy');
  t.is(matchRoute('PUT', 'object', q({ partNumber: '1', uploadId: 'u' }), false).name, 'UploadPart');
  t.is(matchRoute('GET', 'object', q({ acl: '' }), false).name, 'GetObjectAcl');
  const notImpl = t.throws(() => matchRoute('GET', 'object', q({ torrent: '' }), false)) as S3Error;
  t.is(notImpl.code, 'NotImplemented');
  t.is((t.throws(() => matchRoute('PUT', 'bucket', q({ policy: '' }), false)) as S3Error).status, 501);
  t.is((t.throws(() => matchRoute('GET', 'bucket', q({ inventory: '' }), false)) as S3Error).status, 501);
  t.is((t.throws(() => matchRoute('PATCH', 'object', q({}), false)) as S3Error).code, 'MethodNotAllowed');
});

test('addressing: path style and virtual-host style', (t) => {
  t.deepEqual(addressOf('127.0.0.1:9000', '/bkt/a/b%20c', ['localhost']), { bucket: 'bkt', key: 'a/b c' });
  t.deepEqual(addressOf('127.0.0.1:9000', '/bkt', ['localhost']), { bucket: 'bkt', key: '' });
  t.deepEqual(addressOf('127.0.0.1:9000', '/', ['localhost']), { bucket: '', key: '' });
  t.deepEqual(addressOf('bkt.localhost:9000', '/a/%2e%2e/b', ['localhost']), { bucket: 'bkt', key: 'a/../b' });
  t.deepEqual(addressOf('localhost:9000', '/bkt/k', ['localhost']), { bucket: 'bkt', key: 'k' });
  t.throws(() => addressOf('x', '/bkt/%zz', []), { message: /parse the specified URI/ });
});

test('SigV4 pieces: URI encoding and dates', (t) => {
  t.is(awsEncode("a b/c~d!'()*+=&é", true), 'a%20b/c~d%21%27%28%29%2A%2B%3D%26%C3%A9');
  t.is(awsEncode('a/b', false), 'a%2Fb');
  t.is(parseAmzDate('20130524T000000Z'), Date.UTC(2013, 4, 24));
  for (const bad of ['20131324T000000Z', '20130532T000000Z', '20130524T250000Z', '2013-05-24T00:00:00Z', '', undefined]) t.is(parseAmzDate(bad), null, String(bad));
  t.is(kmsKeyName('arn:aws:kms:us-east-1:123456789012:key/my-key'), 'my-key');
  t.is(kmsKeyName('my-key'), 'my-key');
});

async function collect(gen: AsyncIterable<Buffer>): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const c of gen) out.push(c);
  return Buffer.concat(out);
}

async function* pieces(b: Buffer, size = 1000): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

// The worked example of "Signature Calculations for the Authorization Header: Transferring
// Payload in Multiple Chunks (Chunked Upload)" in the Amazon S3 API reference (sigv4-streaming):
// 66560 bytes of "a" in chunks of 65536 and 1024, seed signature from the example's request.
const AWS_EXAMPLE = {
  secret: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
  amzDate: '20130524T000000Z',
  scope: '20130524/us-east-1/s3/aws4_request',
  seed: '4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9',
  chunks: [
    [65536, 'ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648'],
    [1024, '0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497'],
    [0, 'b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9'],
  ] as const,
};

function exampleBody(mutate?: (parts: Buffer[]) => void): Buffer {
  const parts = AWS_EXAMPLE.chunks.map(([n, sig]) => Buffer.concat([Buffer.from(`${n.toString(16)};chunk-signature=${sig}\r\n`), Buffer.alloc(n, 'a'), Buffer.from('\r\n')]));
  mutate?.(parts);
  return Buffer.concat(parts);
}

function exampleOptions(decodedLength = 66560) {
  return {
    signed: true,
    trailer: false,
    decodedLength,
    signing: { key: signingKey(AWS_EXAMPLE.secret, '20130524'), amzDate: AWS_EXAMPLE.amzDate, scope: AWS_EXAMPLE.scope, seed: AWS_EXAMPLE.seed },
    trailers: new Map<string, string>(),
  };
}

test('aws-chunked: the AWS documentation example verifies chunk by chunk', async (t) => {
  const out = await collect(decodeAwsChunked(pieces(exampleBody(), 777), exampleOptions()));
  t.true(out.equals(Buffer.alloc(66560, 'a')));
});

test('aws-chunked: a changed byte, a forged or reordered signature, or a truncated body is refused', async (t) => {
  const flip = exampleBody();
  flip[100] = flip[100]! ^ 1;
  await t.throwsAsync(collect(decodeAwsChunked(pieces(flip), exampleOptions())), { instanceOf: S3Error, message: /signature/ });
  const swapped = exampleBody((p) => p.splice(0, 2, p[1]!, p[0]!));
  await t.throwsAsync(collect(decodeAwsChunked(pieces(swapped), exampleOptions())), { instanceOf: S3Error });
  const full = exampleBody();
  for (const cut of [10, 66000, full.length - 3]) {
    const e = await t.throwsAsync(collect(decodeAwsChunked(pieces(full.subarray(0, cut)), exampleOptions())), { instanceOf: S3Error });
    t.is(e.status, 400);
  }
  await t.throwsAsync(collect(decodeAwsChunked(pieces(full), exampleOptions(66559))), { instanceOf: S3Error });
  await t.throwsAsync(collect(decodeAwsChunked(pieces(Buffer.concat([full, Buffer.from('junk')])), exampleOptions())), { instanceOf: S3Error });
});

test('aws-chunked: unsigned chunks with a trailer, as botocore writes them', async (t) => {
  const data = Buffer.from('hello world, in two chunks');
  const crc = createChecksum('crc32');
  crc.update(data);
  const body = Buffer.from(`a\r\n${data.subarray(0, 10).toString()}\r\n${(data.length - 10).toString(16)}\r\n${data.subarray(10).toString()}\r\n0\r\nx-amz-checksum-crc32:${crc.digest()}\r\n\r\n`);
  const opts = { signed: false, trailer: true, decodedLength: data.length, trailers: new Map<string, string>() };
  t.true((await collect(decodeAwsChunked(pieces(body, 3), opts))).equals(data));
  t.is(opts.trailers.get('x-amz-checksum-crc32'), crc.digest());
});

test('checksums match their published check values', (t) => {
  const check = (alg: 'crc32' | 'crc32c' | 'crc64nvme') => {
    const c = createChecksum(alg);
    c.update(Buffer.from('123456789'));
    return Buffer.from(c.digest(), 'base64').toString('hex');
  };
  t.is(check('crc32'), 'cbf43926');
  t.is(check('crc32c'), 'e3069283');
  t.is(check('crc64nvme'), 'ae8b14860a799888');
});

test('ranges: one range per request, suffixes, open ends, unsatisfiable starts', (t) => {
  t.deepEqual(parseRange('bytes=0-9', 100), { start: 0, end: 9 });
  t.deepEqual(parseRange('bytes=90-', 100), { start: 90, end: 99 });
  t.deepEqual(parseRange('bytes=-10', 100), { start: 90, end: 99 });
  t.deepEqual(parseRange('bytes=-1000', 100), { start: 0, end: 99 });
  t.deepEqual(parseRange('bytes=50-1000', 100), { start: 50, end: 99 });
  t.is(parseRange('bytes=100-', 100), 'unsatisfiable');
  t.is(parseRange('bytes=0-', 0), 'unsatisfiable');
  t.is(parseRange('bytes=-0', 100), 'unsatisfiable');
  t.is(parseRange('bytes=5-1', 100), null);
  t.is(parseRange('bytes=0-1,5-6', 100), null);
  t.is(parseRange('items=0-1', 100), null);
  t.is(parseRange(undefined, 100), null);
});

test('conditional requests follow RFC 7232 as S3 applies it', (t) => {
  const mtime = Date.UTC(2024, 0, 1, 12, 0, 0, 500);
  const h = (o: Record<string, string>) => o;
  t.is(checkConditions(h({ 'if-match': '"abc"' }), '"abc"', mtime), 200);
  t.is(checkConditions(h({ 'if-match': '"nope", "abc"' }), '"abc"', mtime), 200);
  t.is(checkConditions(h({ 'if-match': '"nope"' }), '"abc"', mtime), 412);
  t.is(checkConditions(h({ 'if-none-match': '"abc"' }), '"abc"', mtime), 304);
  t.is(checkConditions(h({ 'if-none-match': '*' }), '"abc"', mtime), 304);
  t.is(checkConditions(h({ 'if-modified-since': new Date(mtime).toUTCString() }), '"abc"', mtime), 304);
  t.is(checkConditions(h({ 'if-modified-since': new Date(mtime - 2000).toUTCString() }), '"abc"', mtime), 200);
  t.is(checkConditions(h({ 'if-unmodified-since': new Date(mtime - 2000).toUTCString() }), '"abc"', mtime), 412);
  t.is(checkConditions(h({ 'if-match': '"abc"', 'if-unmodified-since': new Date(mtime - 2000).toUTCString() }), '"abc"', mtime), 200);
  t.is(checkConditions(h({ 'x-amz-copy-source-if-none-match': '"abc"' }), '"abc"', mtime, 'x-amz-copy-source-'), 412);
});

test('opaque ETags cannot be mistaken for an MD5 and follow the content', (t) => {
  const a = opaqueEtag('default', 'aa', 10, 1000);
  t.regex(a, /^[0-9a-f]{40}$/);
  t.not(a, opaqueEtag('default', 'aa', 10, 2000));
  t.not(a, opaqueEtag('default', 'aa', 11, 1000));
  t.not(a, opaqueEtag('default', 'bb', 10, 1000));
  t.is(opaqueEtag('customer', 'aa', 10, 1000), opaqueEtag('customer', 'aa', 10, 5000));
});
