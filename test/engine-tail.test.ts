// A flush that rewrites the last package of a file in place keeps that package's committed bytes
// (DATA/.mountd/tails/<file id>) until it is done, and the next start puts them back when a crash
// cut the flush short: committed bytes never become unreadable.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { HEADER_BYTES, PACKAGE_PLAINTEXT, backingSize, decodeHeader, packageOffset } from '../src/format/index.js';
import { makeFixture, readAll } from './helpers/engine.js';

const P = PACKAGE_PLAINTEXT;

async function fileId(file: string): Promise<string> {
  const fh = await fsp.open(file, 'r');
  try {
    const hb = Buffer.alloc(HEADER_BYTES);
    await fh.read(hb, 0, HEADER_BYTES, 0);
    return decodeHeader(hb).fileId.toString('hex');
  } finally {
    await fh.close();
  }
}

test('an append keeps a copy of the committed tail while it runs; a new file needs none', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  const tails = path.join(fx.dir, '.mountd', 'tails');
  // With the copy impossible (a file where the directory should be), a flush that would rewrite
  // a committed tail must fail rather than run unguarded; one that rewrites nothing committed runs.
  await fsp.rm(tails, { recursive: true });
  await fsp.writeFile(tails, 'not a directory');
  const h = await e.create('bucket', 'new.bin');
  await e.write(h, 0, randomBytes(P + 100));
  await e.release(h);
  const body = Buffer.from((await readAll((await e.getObject('bucket', 'new.bin')).body)));
  t.is(body.length, P + 100);
  const a = await e.open('bucket', 'new.bin');
  await e.write(a, P + 100, Buffer.from('appended'));
  await t.throwsAsync(e.flush(a), undefined, 'an unguarded append is refused');
  await fsp.rm(tails);
  await fsp.mkdir(tails);
  await e.flush(a);
  await e.release(a);
  t.deepEqual(await fsp.readdir(tails), [], 'the copy is gone once the flush is done');
  t.deepEqual(await readAll((await e.getObject('bucket', 'new.bin')).body), Buffer.concat([body, Buffer.from('appended')]));
});

test('after a crash in the middle of an append, the next start puts the committed tail back', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const committed = randomBytes(2 * P + 5000);
  await fx.engine.putObject('bucket', 'log.bin', committed);
  const file = path.join(fx.dir, 'bucket', 'log.bin');
  const oldBacking = backingSize(committed.length);
  const at = packageOffset(2);
  const tailBytes = (await fsp.readFile(file)).subarray(at);
  t.is(at + tailBytes.length, oldBacking);
  // The state a kill -9 leaves half way through an append: the copy written, the old last
  // package half rewritten, new bytes beyond it.
  await fsp.writeFile(path.join(fx.dir, '.mountd', 'tails', await fileId(file)), Buffer.concat([Buffer.from(`${JSON.stringify({ path: 'bucket/log.bin', oldBacking, at })}\n`), tailBytes]));
  const fh = await fsp.open(file, 'r+');
  await fh.write(randomBytes(30_000), 0, 30_000, at + 1000);
  await fh.write(randomBytes(P), 0, P, oldBacking);
  await fh.close();
  await t.throwsAsync(async () => readAll((await fx.engine.getObject('bucket', 'log.bin')).body), undefined, 'torn: unreadable before the restart');
  const e2 = await fx.reopen();
  t.deepEqual(await readAll((await e2.getObject('bucket', 'log.bin')).body), committed, 'every committed byte reads back');
  t.deepEqual(await fsp.readdir(path.join(fx.dir, '.mountd', 'tails')), []);
  // A copy for a file that is gone, or was replaced, is dropped without touching anything.
  await e2.putObject('bucket', 'other.bin', Buffer.from('other'));
  const tails = path.join(fx.dir, '.mountd', 'tails');
  await fsp.writeFile(path.join(tails, '00'.repeat(16)), Buffer.concat([Buffer.from(`${JSON.stringify({ path: 'bucket/other.bin', oldBacking: HEADER_BYTES + 100, at: HEADER_BYTES })}\n`), Buffer.alloc(100)]));
  await fsp.writeFile(path.join(tails, '11'.repeat(16)), Buffer.concat([Buffer.from(`${JSON.stringify({ path: '../../etc/passwd', oldBacking: HEADER_BYTES + 1, at: HEADER_BYTES })}\n`), Buffer.alloc(1)]));
  // And a copy the crash cut short while it was being written (its flush had not begun) goes quietly.
  await fsp.writeFile(path.join(tails, `${'22'.repeat(16)}.tmp`), '{"path":"bucket/oth');
  const errors: string[] = [];
  const e3 = await fx.reopen({ log: { info() {}, warn() {}, error: (m: string) => errors.push(m) } });
  t.deepEqual(await readAll((await e3.getObject('bucket', 'other.bin')).body), Buffer.from('other'));
  t.deepEqual(await fsp.readdir(tails), []);
  t.is(errors.length, 1, 'only the copy naming a path outside the data directory is an error');
  t.regex(errors[0] ?? '', /malformed/);
});

test('the long first flush of an empty file (a truncate up, a growing fallocate) is guarded too: a crash in it leaves the file empty, not damaged', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  const tails = path.join(fx.dir, '.mountd', 'tails');
  await fsp.rm(tails, { recursive: true });
  await fsp.writeFile(tails, 'not a directory');
  const h = await e.create('bucket', 'grown.bin');
  await e.ftruncate(h, 40 * P);
  await t.throwsAsync(e.flush(h), undefined, 'an unguarded growth of an empty file is refused');
  await fsp.rm(tails);
  await fsp.mkdir(tails);
  await e.flush(h);
  await e.release(h);
  t.deepEqual(await fsp.readdir(tails), []);
  t.deepEqual(await readAll((await e.getObject('bucket', 'grown.bin')).body), Buffer.alloc(40 * P));
});
