// Key lifecycle edges: a failed disable locks nothing; a default key re-created over old data is said loudly.
import test from 'ava';
import { makeFixture, readAll } from './helpers/engine.js';

test('disabling a key that does not exist fails and leaves the name usable once created', async (t) => {
  const fx = await makeFixture();
  t.teardown(() => fx.cleanup());
  await t.throwsAsync(fx.engine.disableKey('not-yet'), { code: 'KMS_KEY_NOT_FOUND' });
  await fx.engine.createKey('not-yet');
  await fx.engine.putObject('bucket', 'x', Buffer.from('usable'), { encryption: { kind: 'named', keyName: 'not-yet' } });
  t.is((await readAll((await fx.engine.getObject('bucket', 'x')).body)).toString(), 'usable');
});

test('a default key re-created over existing buckets is logged as a warning', async (t) => {
  const warnings: string[] = [];
  const log = { info() {}, warn: (m: string) => warnings.push(m), error() {} };
  const fx = await makeFixture({ log });
  t.teardown(() => fx.cleanup());
  await fx.engine.putObject('bucket', 'old', Buffer.from('sealed under the first default key'));
  await fx.engine.deleteKey('default-key');
  const e = await fx.reopen({ log });
  t.true(warnings.some((w) => /NEW default key default-key/.test(w)), warnings.join('\n'));
  await t.throwsAsync(e.getObject('bucket', 'old'), { code: 'KMS_NOT_AUTHENTIC' });
});
