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

function binding(env: Record<string, string>): string {
  const script = `
    import { chosenBinding } from './dist/fuse/mount.js';
    try { console.log(chosenBinding().kind); } catch (err) { console.log('error: ' + err.message); }`;
  return execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, env: { ...process.env, MOUNTD_FUSE_BINDING: '', ...env }, encoding: 'utf8' }).trim();
}

// scripts/test builds native/build/fuse-ll.node: the mount runs on the low-level binding unless told otherwise.
test('the mount runs on the low-level binding by default; MOUNTD_FUSE_BINDING picks fuse-native, and a bad value is an error', (t) => {
  t.is(binding({}), 'lowlevel');
  t.is(binding({ MOUNTD_FUSE_BINDING: 'lowlevel' }), 'lowlevel');
  t.is(binding({ MOUNTD_FUSE_BINDING: 'fuse-native' }), 'fuse-native');
  t.regex(binding({ MOUNTD_FUSE_BINDING: 'threads' }), /^error: MOUNTD_FUSE_BINDING must be lowlevel or fuse-native/);
});

test('MOUNTD_FUSE_SPIN_US: the low-level session waits 100 us for a next request unless told otherwise (0 on one CPU); a bad value is an error', async (t) => {
  const { spinMicrosFromEnv, DEFAULT_SPIN_MICROS } = await import('../src/fuse/lowlevel.js');
  t.is(DEFAULT_SPIN_MICROS, 100);
  t.is(spinMicrosFromEnv(undefined, 2), 100);
  t.is(spinMicrosFromEnv('', 2), 100);
  t.is(spinMicrosFromEnv(undefined, 1), 0, 'one CPU: no wait');
  t.is(spinMicrosFromEnv('50', 1), 50, 'unless asked for');
  t.is(spinMicrosFromEnv('0'), 0);
  t.is(spinMicrosFromEnv('250'), 250);
  t.is(spinMicrosFromEnv('2000'), 2000);
  for (const bad of ['abc', '-1', '1.5', '2001', '100000', ' 5', '1e3']) {
    t.throws(() => spinMicrosFromEnv(bad), { message: /MOUNTD_FUSE_SPIN_US must be a whole number of microseconds from 0 to 2000/ }, bad);
  }
});

test('MOUNTD_FUSE_CACHE_READS: read-only opens are cached unless it is 0; a bad value is an error', async (t) => {
  const { cacheReadsFromEnv } = await import('../src/fuse/lowlevel.js');
  t.true(cacheReadsFromEnv(undefined));
  t.true(cacheReadsFromEnv(''));
  t.true(cacheReadsFromEnv('1'));
  t.false(cacheReadsFromEnv('0'));
  for (const bad of ['yes', 'true', '2', ' 0', 'off']) {
    t.throws(() => cacheReadsFromEnv(bad), { message: /MOUNTD_FUSE_CACHE_READS must be 0 or 1/ }, bad);
  }
});
