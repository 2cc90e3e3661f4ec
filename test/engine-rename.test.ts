// Renames re-seal every moved file for its new path without rewriting data, and an interrupted rename is finished at start-up.
import test from 'ava';
import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { getAttributeSync, setAttributeSync } from '@napi-rs/xattr';
import { Domain } from '../src/crypto/index.js';
import { KEY_RECORD_XATTR, PACKAGE_PLAINTEXT, decodeRecord, dekContext } from '../src/format/index.js';
import type { Engine } from '../src/engine/index.js';
import { makeFixture, readAll, type Fixture } from './helpers/engine.js';
import { nobleDecryptFile, nobleUnsealOek } from './helpers/scan.js';

const P = PACKAGE_PLAINTEXT;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const body = (key: string, size = 300) => Buffer.from(`${key}|`.repeat(Math.ceil(size / (key.length + 1)))).subarray(0, size);
const backing = (fx: Fixture, bucket: string, key: string) => path.join(fx.dir, bucket, ...key.split('/'));
const recordBytes = (p: string) => getAttributeSync(p, KEY_RECORD_XATTR)!;

async function get(e: Engine, bucket: string, key: string): Promise<Buffer> {
  return readAll((await e.getObject(bucket, key)).body);
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (err) {
    return (err as { code?: string }).code ?? `uncoded: ${(err as Error).message}`;
  }
}

async function journalEntries(fx: Fixture): Promise<string[]> {
  return fsp.readdir(path.join(fx.dir, '.mountd', 'journal'));
}

/** The record at `p` is bound to bucket/key: its context names it and @noble unseals it there with the key server's DEK. */
async function assertSealedFor(t: import('ava').ExecutionContext, e: Engine, p: string, bucket: string, key: string, plain: Buffer) {
  const record = decodeRecord(recordBytes(p));
  t.deepEqual(record.context, dekContext(bucket, key), `${bucket}/${key}: context`);
  const dek = await e.keyService.decrypt(record.keyName, record.dekCiphertext, record.context);
  const oek = nobleUnsealOek(record, dek, Domain.KeyServer, `${bucket}/${key}`);
  t.true(nobleDecryptFile(await fsp.readFile(p), oek).equals(plain), `${bucket}/${key}: @noble plaintext`);
}

test('a file rename re-seals: the record changes, the data bytes do not, and the old record does not open the moved file', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.createBucket('other');
  const plain = body('a/x', 2 * P + 5);
  await e.putObject('bucket', 'a/x', plain, { user: { k: 'v' }, contentType: 'text/x' });
  await e.mkdir('bucket', 'b');
  const src = backing(fx, 'bucket', 'a/x');
  const oldRecord = recordBytes(src);
  const oldData = await fsp.readFile(src);

  await e.rename('bucket', 'a/x', 'bucket', 'b/y');
  const dst = backing(fx, 'bucket', 'b/y');
  t.is(await codeOf(fsp.stat(src)), 'ENOENT');
  t.true((await fsp.readFile(dst)).equals(oldData), 'data bytes are not rewritten');
  const newRecord = recordBytes(dst);
  t.false(newRecord.equals(oldRecord), 'the record is re-sealed');
  const o = decodeRecord(oldRecord);
  const n = decodeRecord(newRecord);
  t.is(n.keyName, o.keyName);
  t.is(n.kind, o.kind);
  t.false(n.iv.equals(o.iv), 'a fresh iv');
  t.false(n.dekCiphertext.equals(o.dekCiphertext), 'the DEK is re-bound to the new context');
  t.false(n.sealedKey.equals(o.sealedKey));
  t.true((await get(e, 'bucket', 'b/y')).equals(plain));
  const head = await e.headObject('bucket', 'b/y');
  t.deepEqual(head.meta.user, { k: 'v' });
  t.is(head.meta.contentType, 'text/x');
  t.is(await codeOf(e.getObject('bucket', 'a/x')), 'ENGINE_NOT_FOUND');
  await assertSealedFor(t, e, dst, 'bucket', 'b/y', plain);
  // The same DEK is still behind both ciphertexts (only the binding changed).
  t.deepEqual(
    Buffer.from(await e.keyService.decrypt(o.keyName, o.dekCiphertext, o.context)),
    Buffer.from(await e.keyService.decrypt(n.keyName, n.dekCiphertext, n.context)),
  );

  // The old path's record copied back onto the moved file does not unseal there.
  setAttributeSync(dst, KEY_RECORD_XATTR, oldRecord);
  t.is(await codeOf(get(e, 'bucket', 'b/y')), 'ENGINE_INTEGRITY');
  setAttributeSync(dst, KEY_RECORD_XATTR, newRecord);
  t.true((await get(e, 'bucket', 'b/y')).equals(plain));

  // Across buckets, and it survives a restart.
  await e.rename('bucket', 'b/y', 'other', 'z');
  await assertSealedFor(t, e, backing(fx, 'other', 'z'), 'other', 'z', plain);
  const e2 = await fx.reopen();
  t.true((await get(e2, 'other', 'z')).equals(plain));
  t.deepEqual(await journalEntries(fx), []);
});

async function makeTree(e: Engine, root: string, n: number): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  const puts: Array<Promise<unknown>> = [];
  for (let i = 0; i < n; i++) {
    const rel = `d${i % 5}/e${i % 3}/f${i}`;
    const b = body(`${root}/${rel}`, 100 + ((i * 997) % 3000) + (i % 50 === 0 ? 2 * P : 0));
    files.set(rel, b);
    puts.push(e.putObject('bucket', `${root}/${rel}`, b));
  }
  await Promise.all(puts);
  return files;
}

test('a directory rename re-seals all 200 files of a nested tree', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  const files = await makeTree(e, 'tree', 200);
  await e.putObject('bucket', 'tree/d0/emptydir/', Buffer.alloc(0));
  const before = new Map<string, { record: Buffer; data: string }>();
  for (const rel of files.keys()) {
    const p = backing(fx, 'bucket', `tree/${rel}`);
    before.set(rel, { record: recordBytes(p), data: sha(await fsp.readFile(p)) });
  }
  await e.rename('bucket', 'tree', 'bucket', 'moved');
  t.is(await codeOf(fsp.stat(backing(fx, 'bucket', 'tree'))), 'ENOENT');
  t.true((await fsp.stat(backing(fx, 'bucket', 'moved/d0/emptydir'))).isDirectory());
  let checked = 0;
  for (const [rel, plain] of files) {
    const p = backing(fx, 'bucket', `moved/${rel}`);
    t.false(recordBytes(p).equals(before.get(rel)!.record), `${rel}: re-sealed`);
    t.is(sha(await fsp.readFile(p)), before.get(rel)!.data, `${rel}: data untouched`);
    t.deepEqual(decodeRecord(recordBytes(p)).context, dekContext('bucket', `moved/${rel}`));
    t.true((await get(e, 'bucket', `moved/${rel}`)).equals(plain), `${rel}: reads`);
    checked++;
  }
  t.is(checked, 200);
  for (const rel of ['d1/e1/f1', 'd0/e0/f0']) await assertSealedFor(t, e, backing(fx, 'bucket', `moved/${rel}`), 'bucket', `moved/${rel}`, files.get(rel)!);
  t.deepEqual(await journalEntries(fx), []);
  // Into another bucket, and back through a restart.
  await e.createBucket('other');
  await e.rename('bucket', 'moved/d2', 'other', 'd2');
  const e2 = await fx.reopen();
  for (const [rel, plain] of files) {
    const [bucket, key] = rel.startsWith('d2/') ? ['other', rel] : ['bucket', `moved/${rel}`];
    t.true((await get(e2, bucket, key)).equals(plain), `${bucket}/${key}`);
  }
});

test('rename over an existing file replaces it; an open handle on the replaced file keeps the old content', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.putObject('bucket', 'src', Buffer.from('source content'));
  await e.putObject('bucket', 'dst', Buffer.from('destination content'));
  const h = await e.open('bucket', 'dst');
  await e.rename('bucket', 'src', 'bucket', 'dst');
  t.is((await get(e, 'bucket', 'dst')).toString(), 'source content');
  t.is(await codeOf(e.getObject('bucket', 'src')), 'ENGINE_NOT_FOUND');
  t.is((await e.read(h, 0, 100)).toString(), 'destination content', 'the handle keeps the replaced file');
  await e.write(h, 0, Buffer.from('DEST'));
  await e.release(h);
  t.is((await get(e, 'bucket', 'dst')).toString(), 'source content', 'writes to the replaced file do not land on the new one');
  t.deepEqual((await e.list('bucket')).objects.map((o) => o.key), ['dst']);

  // The rename(2) rules, and nothing changes when they refuse.
  await e.putObject('bucket', 'dir/a', Buffer.from('a'));
  await e.putObject('bucket', 'full/b', Buffer.from('b'));
  await e.mkdir('bucket', 'emptydir');
  t.is(await codeOf(e.rename('bucket', 'dst', 'bucket', 'dir')), 'ENGINE_IS_DIRECTORY');
  t.is(await codeOf(e.rename('bucket', 'dir', 'bucket', 'dst')), 'ENGINE_NOT_DIRECTORY');
  t.is(await codeOf(e.rename('bucket', 'dir', 'bucket', 'full')), 'ENGINE_NOT_EMPTY');
  t.is(await codeOf(e.rename('bucket', 'dir', 'bucket', 'dir/sub')), 'ENGINE_INVALID_ARGUMENT');
  t.is(await codeOf(e.rename('bucket', 'missing', 'bucket', 'x')), 'ENGINE_NOT_FOUND');
  t.is(await codeOf(e.rename('bucket', 'dst', 'bucket', 'nodir/x')), 'ENGINE_NOT_FOUND');
  // rename(2) says ENOTDIR; the engine checks "into itself" first. The kernel never sends this one.
  t.true(['ENGINE_NOT_DIRECTORY', 'ENGINE_INVALID_ARGUMENT'].includes(await codeOf(e.rename('bucket', 'dst', 'bucket', 'dst/x'))));
  t.deepEqual(await journalEntries(fx), []);
  for (const [k, v] of [['dst', 'source content'], ['dir/a', 'a'], ['full/b', 'b']] as const) t.is((await get(e, 'bucket', k)).toString(), v);
  // A directory replaces an empty directory.
  await e.rename('bucket', 'dir', 'bucket', 'emptydir');
  t.is((await get(e, 'bucket', 'emptydir/a')).toString(), 'a');
  await assertSealedFor(t, e, backing(fx, 'bucket', 'emptydir/a'), 'bucket', 'emptydir/a', Buffer.from('a'));
});

test('rename of an open file: the handle keeps working, its buffered and later writes land at the new path', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.mkdir('bucket', 'dir');
  const h = await e.create('bucket', 'dir/open');
  const h2 = await e.create('bucket', 'dir/other');
  await e.write(h, 0, Buffer.from('buffered before the rename;'));
  await e.write(h2, 0, Buffer.from('second file'));
  await e.rename('bucket', 'dir/open', 'bucket', 'renamed');
  await e.write(h, 27, Buffer.from(' written after'));
  t.is((await e.read(h, 0, 100)).toString(), 'buffered before the rename; written after');
  await e.flush(h);
  // A directory rename with an open file inside.
  await e.rename('bucket', 'dir', 'bucket', 'dir2');
  await e.write(h2, 11, Buffer.from(', moved with its directory'));
  await e.release(h);
  await e.release(h2);
  t.is((await get(e, 'bucket', 'renamed')).toString(), 'buffered before the rename; written after');
  t.is((await get(e, 'bucket', 'dir2/other')).toString(), 'second file, moved with its directory');
  t.is(await codeOf(e.getObject('bucket', 'dir/open')), 'ENGINE_NOT_FOUND');
  t.deepEqual((await e.list('bucket')).objects.map((o) => o.key), ['dir2/other', 'renamed']);
  // The records on disk are bound to the new paths (checked without the engine's in-memory state).
  await assertSealedFor(t, e, backing(fx, 'bucket', 'renamed'), 'bucket', 'renamed', Buffer.from('buffered before the rename; written after'));
  await assertSealedFor(t, e, backing(fx, 'bucket', 'dir2/other'), 'bucket', 'dir2/other', Buffer.from('second file, moved with its directory'));
  const e2 = await fx.reopen();
  t.is((await get(e2, 'bucket', 'renamed')).toString(), 'buffered before the rename; written after');
});

for (const fault of ['afterRenameJournal', 'afterRenameMove'] as const) {
  test(`a directory rename interrupted ${fault === 'afterRenameJournal' ? 'after the journal, before the move' : 'after the move, before the records'} is finished at the next start`, async (t) => {
    const fx = await makeFixture();
    t.teardown(() => fx.cleanup());
    const files = await makeTree(fx.engine, 'tree', 60);
    await fx.engine.putObject('bucket', 'solo', Buffer.from('single file'));
    await fx.reopen({
      faults: {
        [fault]: () => {
          throw new Error('crash');
        },
      },
    });
    const err = await t.throwsAsync(fx.engine.rename('bucket', 'tree', 'bucket', 'moved'));
    t.is(err?.message, 'crash');
    t.is((await journalEntries(fx)).length, 1, 'the intent is on disk');
    if (fault === 'afterRenameMove') {
      // Moved, records not yet re-sealed: reading there is an integrity error, never wrong plaintext.
      t.is(await codeOf(get(fx.engine, 'bucket', 'moved/d0/e0/f0')), 'ENGINE_INTEGRITY');
    }
    const saved = await fsp.readdir(path.join(fx.dir, '.mountd', 'journal'));
    const journalText = await fsp.readFile(path.join(fx.dir, '.mountd', 'journal', saved[0]!), 'utf8');
    t.notRegex(journalText, /single file|tree\/d0\/e0\/f0\|/, 'the journal holds records, not content');

    const e2 = await fx.reopen({ faults: undefined });
    t.deepEqual(await journalEntries(fx), []);
    t.is(await codeOf(fsp.stat(backing(fx, 'bucket', 'tree'))), 'ENOENT');
    for (const [rel, plain] of files) t.true((await get(e2, 'bucket', `moved/${rel}`)).equals(plain), rel);
    await assertSealedFor(t, e2, backing(fx, 'bucket', 'moved/d3/e1/f13'), 'bucket', 'moved/d3/e1/f13', files.get('d3/e1/f13')!);

    // Replaying the same intent again (a crash during the replay) changes nothing.
    await fsp.writeFile(path.join(fx.dir, '.mountd', 'journal', saved[0]!), journalText);
    const e3 = await fx.reopen();
    t.deepEqual(await journalEntries(fx), []);
    for (const [rel, plain] of files) t.true((await get(e3, 'bucket', `moved/${rel}`)).equals(plain), `again: ${rel}`);

    // A single-file rename interrupted the same way.
    await fx.reopen({
      faults: {
        [fault]: () => {
          throw new Error('crash');
        },
      },
    });
    await t.throwsAsync(fx.engine.rename('bucket', 'solo', 'bucket', 'moved/solo'));
    const e4 = await fx.reopen({ faults: undefined });
    t.is((await get(e4, 'bucket', 'moved/solo')).toString(), 'single file');
    t.is(await codeOf(e4.getObject('bucket', 'solo')), 'ENGINE_NOT_FOUND');
    t.deepEqual(await journalEntries(fx), []);
  });
}

test('a directory rename that cannot re-seal every file moves nothing (SSE-C file inside, disabled key)', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  const ck = Buffer.alloc(32, 0x17);
  await e.createKey('locked-key');
  await e.putObject('bucket', 'd1/plain', Buffer.from('plain'));
  await e.putObject('bucket', 'd1/ssec', Buffer.from('customer'), { encryption: { kind: 'customer', customerKey: ck } });
  await e.putObject('bucket', 'd2/plain', Buffer.from('plain 2'));
  await e.putObject('bucket', 'd2/locked', Buffer.from('locked'), { encryption: { kind: 'named', keyName: 'locked-key' } });
  await e.disableKey('locked-key');
  const before = recordBytes(backing(fx, 'bucket', 'd1/plain'));
  t.is(await codeOf(e.rename('bucket', 'd1', 'bucket', 'd1-moved')), 'ENGINE_CUSTOMER_KEY_REQUIRED');
  t.is(await codeOf(e.rename('bucket', 'd2', 'bucket', 'd2-moved')), 'KMS_KEY_DISABLED');
  t.is(await codeOf(e.rename('bucket', 'd1/ssec', 'bucket', 'ssec-moved')), 'ENGINE_CUSTOMER_KEY_REQUIRED');
  t.deepEqual(await journalEntries(fx), []);
  t.deepEqual((await e.list('bucket')).objects.map((o) => o.key), ['d1/plain', 'd1/ssec', 'd2/locked', 'd2/plain']);
  t.true(recordBytes(backing(fx, 'bucket', 'd1/plain')).equals(before), 'no record was touched');
  t.is((await get(e, 'bucket', 'd2/plain')).toString(), 'plain 2');
  t.is((await readAll((await e.getObject('bucket', 'd1/ssec', { customerKey: ck })).body)).toString(), 'customer');
});
