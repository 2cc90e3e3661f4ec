// Bucket names and object keys: nothing a client sends may name a path outside its bucket or reach .mountd.
import test from 'ava';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { BackingStore, INTERNAL_DIR, MAX_KEY_BYTES, parseObjectKey, validateBucketName, validatePrefix } from '../src/store/index.js';
import { makeFixture, readAll, tempDir } from './helpers/engine.js';

const invalidName = { code: 'ENGINE_INVALID_NAME' };

const goodBuckets = ['abc', 'my-bucket', 'my.bucket', 'a1b', '0ab', 'a'.repeat(63), 'b-1.c-2', 'mountd', 'data', 'tmp'];
const badBuckets: Array<[string, string]> = [
  ['ab', 'too short'],
  ['a'.repeat(64), 'too long'],
  ['', 'empty'],
  ['.mountd', 'the daemon directory'],
  ['mountd.', 'trailing dot'],
  ['.abc', 'leading dot'],
  ['-abc', 'leading hyphen'],
  ['abc-', 'trailing hyphen'],
  ['ABC', 'upper case'],
  ['a_b', 'underscore'],
  ['a..b', 'adjacent dots'],
  ['a.-b', 'dot next to hyphen'],
  ['a-.b', 'hyphen next to dot'],
  ['192.168.1.1', 'an IP address'],
  ['xn--abc', 'reserved prefix'],
  ['sthree-abc', 'reserved prefix'],
  ['abc-s3alias', 'reserved suffix'],
  ['abc--ol-s3', 'reserved suffix'],
  ['..', 'dot-dot'],
  ['a/b', 'slash'],
  ['abc\0', 'NUL'],
  ['ab\u00e9', 'non-ASCII'],
];

test('bucket name table', (t) => {
  for (const name of goodBuckets) t.is(validateBucketName(name), name);
  for (const [name, why] of badBuckets) t.throws(() => validateBucketName(name), invalidName, why);
  t.throws(() => validateBucketName(42), invalidName);
});

const goodKeys: Array<[string, string[], boolean]> = [
  ['a', ['a'], false],
  ['a/b/c', ['a', 'b', 'c'], false],
  ['dir/', ['dir'], true],
  ['a/b/', ['a', 'b'], true],
  ['%2e%2e', ['%2e%2e'], false],
  ['a/%2e%2e/b', ['a', '%2e%2e', 'b'], false],
  ['%2F', ['%2F'], false],
  ['...', ['...'], false],
  ['.hidden', ['.hidden'], false],
  ['a/.mountd/b', ['a', '.mountd', 'b'], false],
  ['..a', ['..a'], false],
  ['a..', ['a..'], false],
  ['ünïcødé 🐈', ['ünïcødé 🐈'], false],
  ['back\\slash', ['back\\slash'], false],
  [' space ', [' space '], false],
];

test('object keys that are allowed, and how they split', (t) => {
  for (const [key, segments, marker] of goodKeys) {
    const parsed = parseObjectKey(key);
    t.deepEqual(parsed.segments, segments, key);
    t.is(parsed.isDirectoryMarker, marker, key);
  }
  // Exactly 1024 bytes in segments of at most 255 bytes is allowed; one more byte is not.
  const exact = `${Array.from({ length: 4 }, () => 'é'.repeat(100)).join('/')}/${'x'.repeat(MAX_KEY_BYTES - 804)}`;
  t.is(Buffer.byteLength(exact), MAX_KEY_BYTES);
  t.is(parseObjectKey(exact).segments.length, 5);
  t.throws(() => parseObjectKey(`${exact}x`), invalidName);
  t.notThrows(() => parseObjectKey('x'.repeat(255)));
});

const badKeys: Array<[unknown, string]> = [
  ['', 'empty'],
  ['..', 'dot-dot'],
  ['.', 'dot'],
  ['../x', 'leading dot-dot'],
  ['a/../b', 'inner dot-dot'],
  ['a/..', 'trailing dot-dot'],
  ['a/./b', 'inner dot'],
  ['a/../../../etc/passwd', 'escape attempt'],
  ['../', 'dot-dot marker'],
  ['./', 'dot marker'],
  ['/a', 'leading slash'],
  ['/', 'only a slash'],
  ['//', 'two slashes'],
  ['a//b', 'empty segment'],
  ['a/b//', 'empty segment before the marker slash'],
  ['a\0b', 'NUL'],
  ['\0', 'only NUL'],
  ['a\uD800b', 'unpaired high surrogate'],
  ['a\uDC00', 'unpaired low surrogate'],
  ['\uDC00\uD800', 'reversed pair'],
  ['x'.repeat(MAX_KEY_BYTES + 1), 'over 1024 bytes'],
  [`${'é'.repeat(200)}/${'é'.repeat(200)}/${'é'.repeat(113)}`, 'over 1024 bytes in UTF-8 (513 chars)'],
  ['y'.repeat(256), 'segment over 255 bytes'],
  [42, 'not a string'],
  [undefined, 'undefined'],
];

test('object keys that are refused', (t) => {
  for (const [key, why] of badKeys) t.throws(() => parseObjectKey(key), invalidName, why);
});

test('BackingStore.objectPath never leaves the bucket and never reaches .mountd', async (t) => {
  const dir = await tempDir();
  const store = await BackingStore.open(dir);
  t.teardown(async () => {
    await store.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });
  const bucketDir = path.join(store.root, 'bucket');
  for (const [key] of goodKeys) {
    const p = store.objectPath('bucket', key);
    t.true(p.startsWith(bucketDir + path.sep), `${key} -> ${p}`);
    t.false(path.relative(bucketDir, p).split(path.sep).includes('..'), key);
  }
  t.is(store.objectPath('bucket', '%2e%2e'), path.join(bucketDir, '%2e%2e'));
  for (const [key, why] of badKeys) t.throws(() => store.objectPath('bucket', key as string), invalidName, why);
  // .mountd is unreachable as a bucket, however it is spelled.
  for (const b of [INTERNAL_DIR, '.mountd/kes', '.mountd/..', './.mountd', 'x/../.mountd', '..']) {
    t.throws(() => store.bucketPath(b), invalidName, b);
    t.throws(() => store.objectPath(b, 'kes/master.key'), invalidName, b);
  }
  t.is(store.bucketPath('mountd'), path.join(store.root, 'mountd'));
});

test('validatePrefix allows any well-formed string without NUL, up to 1024 bytes', (t) => {
  t.is(validatePrefix(undefined), '');
  t.is(validatePrefix(''), '');
  t.is(validatePrefix('a/b/'), 'a/b/');
  t.is(validatePrefix('../'), '../');
  t.throws(() => validatePrefix('a\0'), { code: 'ENGINE_INVALID_ARGUMENT' });
  t.throws(() => validatePrefix('\uD800'), { code: 'ENGINE_INVALID_ARGUMENT' });
  t.throws(() => validatePrefix('x'.repeat(1025)), { code: 'ENGINE_INVALID_ARGUMENT' });
  t.throws(() => validatePrefix(5), { code: 'ENGINE_INVALID_ARGUMENT' });
});

test('through the engine: literal "%2e%2e" stays inside the bucket, traversal keys and .mountd are refused', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.createBucket('other');
  await e.putObject('bucket', '%2e%2e', Buffer.from('literal dots'));
  await e.putObject('bucket', 'a/%2e%2e/b', Buffer.from('nested literal'));
  t.true((await fsp.stat(path.join(fx.dir, 'bucket', '%2e%2e'))).isFile());
  const longest = `${Array.from({ length: 4 }, () => 'é'.repeat(100)).join('/')}/${'x'.repeat(MAX_KEY_BYTES - 804)}`;
  await e.putObject('other', longest, Buffer.from('1024-byte key'));
  t.is((await readAll((await e.getObject('other', longest)).body)).toString(), '1024-byte key');
  await e.deleteObject('other', longest);
  t.true((await fsp.stat(path.join(fx.dir, 'bucket', 'a', '%2e%2e', 'b'))).isFile());
  t.is((await readAll((await e.getObject('bucket', '%2e%2e')).body)).toString(), 'literal dots');
  t.deepEqual(
    (await e.list('bucket')).objects.map((o) => o.key),
    ['%2e%2e', 'a/%2e%2e/b'],
  );
  t.deepEqual(await fsp.readdir(path.join(fx.dir, 'other')), [], 'nothing landed in the other bucket');
  t.deepEqual((await fsp.readdir(fx.dir)).sort(), ['.mountd', 'bucket', 'other']);

  const refused = async (p: Promise<unknown>) => {
    const err = await t.throwsAsync(p);
    return (err as { code?: string } | undefined)?.code;
  };
  for (const key of ['../other/x', '..', 'a/../../other/x', '/etc/passwd', 'a\0b', 'a//b', '\uD800']) {
    t.is(await refused(e.putObject('bucket', key, Buffer.from('x'))), 'ENGINE_INVALID_NAME', key);
    t.is(await refused(e.getObject('bucket', key)), 'ENGINE_INVALID_NAME', key);
    t.is(await refused(e.deleteObject('bucket', key)), 'ENGINE_INVALID_NAME', key);
  }
  t.is(await refused(e.createBucket('.mountd')), 'ENGINE_INVALID_NAME');
  t.is(await refused(e.getObject('.mountd', 'kes/master.key')), 'ENGINE_INVALID_NAME');
  t.is(await refused(e.putObject('.mountd', 'kes/master.key', Buffer.from('x'))), 'ENGINE_INVALID_NAME');
  t.is(await refused(e.list('.mountd')), 'ENGINE_INVALID_NAME');
  t.is(await refused(e.rename('bucket', '%2e%2e', '.mountd', 'kes/master.key')), 'ENGINE_INVALID_NAME');
  t.is(await refused(e.rename('bucket', '%2e%2e', 'bucket', '../other/x')), 'ENGINE_INVALID_NAME');
  t.deepEqual(
    (await e.listBuckets()).map((b) => b.name),
    ['bucket', 'other'],
    '.mountd is not listed as a bucket',
  );
  t.deepEqual(await fsp.readdir(path.join(fx.dir, 'other')), []);
});
