// Engine conditions and checks: the attribute budget on rename, verify of empty files and symlink metadata, conditional writes (racing creators, directory markers).
import test from 'ava';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { makeFixture, readAll } from './helpers/engine.js';

const bigMeta = { user: { note: 'n'.repeat(1900) }, tags: Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`t${i}`, 'v'.repeat(100)])) };

test('a rename whose longer name would not fit beside the metadata is MetadataTooLarge, and nothing moves', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.putObject('bucket', 'a', Buffer.from('data'), bigMeta);
  const long = `${'x'.repeat(250)}/${'y'.repeat(250)}/${'z'.repeat(250)}`;
  await e.mkdir('bucket', 'x'.repeat(250));
  await e.mkdir('bucket', `${'x'.repeat(250)}/${'y'.repeat(250)}`);
  await t.throwsAsync(e.rename('bucket', 'a', 'bucket', long), { code: 'ENGINE_METADATA_TOO_LARGE' });
  t.is((await readAll((await e.getObject('bucket', 'a')).body)).toString(), 'data');
  t.deepEqual(await fsp.readdir(path.join(fx.dir, '.mountd', 'journal')), []);
  await fx.reopen(); // a journal left behind made the next start fail
  t.pass();
});

test('verify: an empty file whose package was damaged or a file truncated to one empty package is damaged; so is a symlink with damaged metadata', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.putObject('bucket', 'empty', Buffer.alloc(0));
  await e.putObject('bucket', 'trunc', Buffer.from('hello\n'));
  await e.putObject('bucket', 'fine-empty', Buffer.alloc(0));
  await e.symlink('bucket', 'link', 'target');
  const p = (k: string) => path.join(fx.dir, 'bucket', k);
  const b = await fsp.readFile(p('empty'));
  b[b.length - 1]! ^= 1;
  await fsp.writeFile(p('empty'), b);
  await fsp.truncate(p('trunc'), 60);
  const m = (await fx.store.getXattr(p('link'), 'user.mountd.meta'))!;
  m[m.length - 1]! ^= 1;
  await fx.store.setXattr(p('link'), 'user.mountd.meta', m);
  await fx.reopen();
  const r = await fx.engine.verify({ bucket: 'bucket' });
  t.deepEqual(r.damaged.map((d) => d.split(/[: ]/)[0]).sort(), ['bucket/empty', 'bucket/link', 'bucket/trunc']);
  t.is(r.ok, 1);
});

test('a directory marker written with If-None-Match: * where it exists is PreconditionFailed', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.putObject('bucket', 'dir/', Buffer.alloc(0), { expect: 'absent' });
  await t.throwsAsync(e.putObject('bucket', 'dir/', Buffer.alloc(0), { expect: 'absent' }), { code: 'ENGINE_PRECONDITION_FAILED' });
});

test('racing conditional creators: exactly one wins, the others are PreconditionFailed, and no temp file is left', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  const bodies = Array.from({ length: 8 }, (_, i) => Buffer.alloc(2 * 1024 * 1024, 65 + i));
  const results = await Promise.allSettled(bodies.map((b) => e.putObject('bucket', 'lock', b, { expect: 'absent' })));
  const won = results.map((r, i) => (r.status === 'fulfilled' ? i : -1)).filter((i) => i >= 0);
  t.is(won.length, 1);
  for (const r of results) if (r.status === 'rejected') t.is((r.reason as { code?: string }).code, 'ENGINE_PRECONDITION_FAILED');
  t.true((await readAll((await e.getObject('bucket', 'lock')).body)).equals(bodies[won[0]!]!));
  t.deepEqual(await fsp.readdir(path.join(fx.dir, '.mountd', 'tmp')), []);
});

/**
 * A rename "interrupted" after the move: the journal holds the record `bucket/moved` should get,
 * and a filler attribute leaves no room to write it (ENOSPC from setxattr, as a disk error
 * would). Then the engine starts again over it.
 */
async function startWithUnwritableJournal(t: { teardown(fn: () => unknown): void }) {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  await fx.engine.putObject('bucket', 'moved', Buffer.from('content'));
  const backing = path.join(fx.dir, 'bucket', 'moved');
  const record = (await fx.store.getXattr(backing, 'user.mountd.key'))!;
  const intent = { version: 1, op: 'rename', from: { bucket: 'bucket', key: 'gone-before' }, to: { bucket: 'bucket', key: 'moved' }, entries: [{ rel: '', record: record.toString('base64') }] };
  await fx.store.removeXattr(backing, 'user.mountd.key');
  await fx.store.setXattr(backing, 'user.filler', Buffer.alloc(3900, 1));
  const journal = path.join(fx.dir, '.mountd', 'journal');
  await fsp.writeFile(path.join(journal, 'rename-1-aaaaaaaaaaaa.json'), JSON.stringify(intent));
  const e1 = await fx.reopen();
  return { fx, backing, journal, e1 };
}

test('a rename journal whose record cannot be written at start-up does not stop the start: the file is logged and kept for the next start, which finishes it', async (t) => {
  const { fx, backing, journal, e1 } = await startWithUnwritableJournal(t);
  t.deepEqual(await fsp.readdir(journal), ['rename-1-aaaaaaaaaaaa.failed'], 'kept for the next start');
  await t.throwsAsync(async () => readAll((await e1.getObject('bucket', 'moved')).body), { code: 'ENGINE_INTEGRITY' }, 'the file without its record does not read');
  // The cause gone, the next start writes the record and the file reads.
  await fx.store.removeXattr(backing, 'user.filler');
  const e2 = await fx.reopen();
  t.deepEqual(await fsp.readdir(journal), []);
  t.is((await readAll((await e2.getObject('bucket', 'moved')).body)).toString(), 'content');
});

test('a rotation to a longer key name that would overflow a file\'s attribute space fails that file with MetadataTooLarge; it stays readable under its old key', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  const backing = path.join(fx.dir, 'bucket', 'full');
  const total = async () => (await fx.store.getXattr(backing, 'user.mountd.meta'))!.length + (await fx.store.getXattr(backing, 'user.mountd.key'))!.length;
  // Metadata that leaves 20 bytes of the 3,800 free.
  await e.putObject('bucket', 'full', Buffer.from('data'), { user: { note: 'n'.repeat(1000) } });
  const fill = 1000 + (3780 - (await total()));
  await e.putObject('bucket', 'full', Buffer.from('data'), { user: { note: 'n'.repeat(fill) } });
  t.is(await total(), 3780);
  const longName = `k${'x'.repeat(79)}`;
  await e.createKey(longName);
  const p = await e.rotateKey({ from: (await e.encryptionInfo('bucket', 'full')).keyName!, to: longName });
  t.is(p.failed, 1);
  t.regex(p.errors[0]!, /bucket\/full: the \d+-byte sealed metadata does not fit beside the \d+-byte key record in 3800 bytes/);
  t.is((await readAll((await e.getObject('bucket', 'full')).body)).toString(), 'data');
  t.not((await e.encryptionInfo('bucket', 'full')).keyName, longName);
});

test('a rename entry kept as .failed is not applied to another file that took its path, and nothing is moved again at the next start', async (t) => {
  const { fx, journal, e1 } = await startWithUnwritableJournal(t);
  t.deepEqual(await fsp.readdir(journal), ['rename-1-aaaaaaaaaaaa.failed']);
  // Meanwhile the damaged object is replaced through S3, and a new object takes the old name.
  await e1.putObject('bucket', 'moved', Buffer.from('replacement'));
  await e1.putObject('bucket', 'gone-before', Buffer.from('new object at the old name'));
  const e2 = await fx.reopen();
  t.is((await readAll((await e2.getObject('bucket', 'moved')).body)).toString(), 'replacement');
  t.is((await readAll((await e2.getObject('bucket', 'gone-before')).body)).toString(), 'new object at the old name');
  t.deepEqual(await fsp.readdir(journal), []);
});

test('a live directory rename whose record cannot be written for one file completes, keeps that entry as .failed, and the next start finishes it', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.putObject('bucket', 'dir/a', Buffer.from('A'));
  await e.putObject('bucket', 'dir/b', Buffer.from('B'));
  // No room left for b's longer new record (a stand-in for a disk error on setxattr): the
  // largest filler attribute the block still takes.
  const b = path.join(fx.dir, 'bucket', 'dir', 'b');
  let filled = false;
  for (let n = 4000; n > 0 && !filled; n -= 4) filled = await fx.store.setXattr(b, 'user.filler', Buffer.alloc(n, 1)).then(() => true, () => false);
  t.true(filled);
  const to = `moved-${'x'.repeat(40)}`;
  await e.rename('bucket', 'dir', 'bucket', to);
  t.is((await readAll((await e.getObject('bucket', `${to}/a`)).body)).toString(), 'A');
  const journal = path.join(fx.dir, '.mountd', 'journal');
  t.is((await fsp.readdir(journal)).filter((n) => n.endsWith('.failed')).length, 1);
  t.deepEqual((await fsp.readdir(journal)).filter((n) => n.endsWith('.json')), [], 'no journal that would move things again');
  // A new object at the old name meanwhile is left where it is by the next start.
  await e.putObject('bucket', 'dir/new', Buffer.from('N'));
  await fx.store.removeXattr(path.join(fx.dir, 'bucket', to, 'b'), 'user.filler');
  const e2 = await fx.reopen();
  t.deepEqual(await fsp.readdir(journal), []);
  t.is((await readAll((await e2.getObject('bucket', `${to}/b`)).body)).toString(), 'B');
  t.is((await readAll((await e2.getObject('bucket', 'dir/new')).body)).toString(), 'N');
});

test('verify with a prefix checks exactly the keys that start with it (S3 prefix semantics, not whole directories)', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  for (const k of ['a/x', 'a/deep/y', 'ab', 'b/y', 'ba']) await e.putObject('bucket', k, Buffer.from(k));
  const scanned = async (prefix: string) => (await e.verify({ bucket: 'bucket', prefix })).scanned;
  t.is(await scanned(''), 5);
  t.is(await scanned('a'), 3);
  t.is(await scanned('a/'), 2);
  t.is(await scanned('a/d'), 1);
  t.is(await scanned('b/y'), 1);
  t.is(await scanned('c'), 0);
  t.is((await e.verify()).ok, 5);
});
