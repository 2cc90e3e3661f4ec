// GET streams hold their file open only while they live: read to the end, or destroyed unread.
import test from 'ava';
import { makeFixture, readAll } from './helpers/engine.js';

/** Polls the engine's open-file count until it is 0 (the stream closes its file asynchronously), at most 15 s. */
async function openFilesSettle(e: { status(): { openFiles: number } }): Promise<number> {
  const end = Date.now() + 15_000;
  while (e.status().openFiles !== 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  return e.status().openFiles;
}

test('a GET body destroyed unread releases its file', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.putObject('bucket', 'big', Buffer.alloc(3 * 1024 * 1024, 1));
  const unread = await e.getObject('bucket', 'big');
  t.is(e.status().openFiles, 1);
  unread.body.destroy();
  t.is(await openFilesSettle(e), 0, 'destroyed before the first read');

  const partly = await e.getObject('bucket', 'big');
  for await (const _chunk of partly.body) break; // reads one chunk, then destroys
  t.is(await openFilesSettle(e), 0, 'destroyed after one chunk');

  const whole = await e.getObject('bucket', 'big');
  t.is((await readAll(whole.body)).length, 3 * 1024 * 1024);
  t.is(await openFilesSettle(e), 0, 'read to the end');
});
