// GET streams hold their file open only while they live: read to the end, or destroyed unread.
import test from 'ava';
import { makeFixture, readAll } from './helpers/engine.js';

test('a GET body destroyed unread releases its file', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  const e = fx.engine;
  await e.putObject('bucket', 'big', Buffer.alloc(3 * 1024 * 1024, 1));
  const unread = await e.getObject('bucket', 'big');
  t.is(e.status().openFiles, 1);
  unread.body.destroy();
  await new Promise((r) => setTimeout(r, 50));
  t.is(e.status().openFiles, 0, 'destroyed before the first read');

  const partly = await e.getObject('bucket', 'big');
  for await (const _chunk of partly.body) break; // reads one chunk, then destroys
  await new Promise((r) => setTimeout(r, 50));
  t.is(e.status().openFiles, 0, 'destroyed after one chunk');

  const whole = await e.getObject('bucket', 'big');
  t.is((await readAll(whole.body)).length, 3 * 1024 * 1024);
  await new Promise((r) => setTimeout(r, 50));
  t.is(e.status().openFiles, 0, 'read to the end');
});
