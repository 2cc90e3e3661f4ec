// Which binding the mount loads, and the switch for the getattr shortcut (native/fuse-native.c, change 7).
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

function probe(env: Record<string, string>): string {
  const script = `
    import { loadFuse, isPatchedBinding, canPrimeAttributes } from './dist/fuse/binding.js';
    loadFuse();
    console.log(isPatchedBinding(), canPrimeAttributes());`;
  return execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, env: { ...process.env, ...env }, encoding: 'utf8' }).trim();
}

// scripts/test builds native/ first: a missing build fails here, as it should.
test('our build of the C glue is loaded, with the getattr shortcut; MOUNTD_FUSE_PRIME=0 turns the shortcut off', (t) => {
  t.is(probe({}), 'true true');
  t.is(probe({ MOUNTD_FUSE_PRIME: '0' }), 'true false');
});
