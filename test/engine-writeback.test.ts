// Background write-back (engine/FdFile.ts): at most one fdatasync in flight, started every N
// bytes, and an error it meets is reported once, by the next check, never dropped.
import test from 'ava';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { FdFile, Writeback } from '../src/engine/FdFile.js';

function fakeHandle() {
  const calls: { resolve: () => void; reject: (e: Error) => void }[] = [];
  return {
    calls,
    datasync: () => new Promise<void>((resolve, reject) => calls.push({ resolve, reject })),
  };
}

test('Writeback starts an fdatasync every N bytes, never two at once', async (t) => {
  const fh = fakeHandle();
  const wb = new Writeback(fh, 100);
  wb.wrote(60);
  t.is(fh.calls.length, 0);
  wb.wrote(60);
  t.is(fh.calls.length, 1, 'past 100 bytes');
  wb.wrote(500);
  t.is(fh.calls.length, 1, 'one in flight at a time');
  fh.calls[0]!.resolve();
  await wb.settle();
  wb.wrote(100);
  t.is(fh.calls.length, 2);
  fh.calls[1]!.resolve();
  await wb.settle();
  t.notThrows(() => wb.check());
});

test('Writeback: a failed background fdatasync is thrown once, by check() or settle()', async (t) => {
  const fh = fakeHandle();
  const wb = new Writeback(fh, 10);
  wb.wrote(10);
  const eio = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5 });
  fh.calls[0]!.reject(eio);
  await t.throwsAsync(() => wb.settle(), { is: eio });
  t.notThrows(() => wb.check(), 'reported once');
  wb.wrote(10);
  fh.calls[1]!.reject(eio);
  await new Promise((r) => setImmediate(r));
  t.throws(() => wb.check(), { is: eio });
});

test('FdFile: open, write, writev, read, datasync, truncate, close on a real file', async (t) => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'mountd-fdfile-'));
  try {
    const p = path.join(dir, 'f');
    const f = FdFile.open(p, 'wx+', 0o600);
    t.throws(() => FdFile.open(p, 'wx+', 0o600), { code: 'EEXIST' });
    t.is((await f.write(Buffer.from('hello'), 0, 5, 0)).bytesWritten, 5);
    t.is((await f.writev([Buffer.from(' big'), Buffer.from(' world')], 5)).bytesWritten, 10);
    const wb = new Writeback(f, 1);
    wb.wrote(15);
    await wb.settle();
    await f.sync();
    const buf = Buffer.alloc(15);
    t.is((await f.read(buf, 0, 15, 0)).bytesRead, 15);
    t.is(buf.toString(), 'hello big world');
    await f.truncate(5);
    t.is((await fsp.readFile(p, 'utf8')), 'hello');
    await f.close();
    await f.close();
    t.is((await fsp.stat(p)).mode & 0o777, 0o600);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
