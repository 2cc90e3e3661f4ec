// A key rotation killed with SIGKILL halfway, then run again after a restart: every file ends under
// the new key, readable, and the old key is no longer needed.
import test from 'ava';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { getAttribute } from '@napi-rs/xattr';
import { KEY_RECORD_XATTR, decodeRecord } from '../src/format/index.js';
import { startDaemon } from './helpers/daemon.js';
import { HAS_FUSE, fuseMissingBanner, mountctl, sh, startMount } from './helpers/mount.js';

const N = 3000;

if (!HAS_FUSE) {
  test('FUSE is missing: the rotation crash test did not run', (t) => t.log(fuseMissingBanner('rotate-crash.test.ts')));
} else {
  test('rotation survives kill -9 of the daemon and resumes', async (t) => {
    const fx = await startMount('rotcrash');
    t.teardown(() => fx.cleanup());
    await sh(`mkdir ${fx.mnt}/rot && cd ${fx.mnt}/rot && for d in $(seq 1 30); do mkdir d$d; for i in $(seq 1 ${N / 30}); do echo "file $d/$i" > d$d/f$i; done; done`, { timeoutMs: 120_000 });
    t.is((await mountctl(fx.dataDir, ['key', 'create', 'after-crash'])).code, 0);
    // Start a rotation and kill the daemon while it runs.
    const ctl = spawn(process.execPath, ['--import', 'tsx', path.join('src/cli/mountctl.ts'), '--data', fx.dataDir, 'key', 'rotate', '--from', 'mountd-default', '--to', 'after-crash'], {
      stdio: 'ignore',
    });
    // Kill as soon as the first file of the walk carries the new key: the rest are still to do.
    const first = path.join(fx.dataDir, 'rot', 'd1', 'f1');
    const until = Date.now() + 60_000;
    while (Date.now() < until) {
      const raw = await getAttribute(first, KEY_RECORD_XATTR).catch(() => null);
      if (raw && decodeRecord(raw).keyName === 'after-crash') break;
      await new Promise((r) => setTimeout(r, 2));
    }
    await fx.daemon.kill();
    ctl.kill('SIGKILL');
    // Restart on the same data directory and mount point (the stale mount is cleaned up).
    fx.daemon = await startDaemon({ dataDir: fx.dataDir, mount: fx.mnt });
    const again = await mountctl(fx.dataDir, ['--json', 'key', 'rotate', '--from', 'mountd-default', '--to', 'after-crash'], { timeoutMs: 120_000 });
    t.is(again.code, 0, again.stderr);
    const r = JSON.parse(again.stdout) as { rotated: number; skipped: number; failed: number; scanned: number };
    t.is(r.failed, 0);
    t.true(r.rotated > 0, 'the kill landed in the middle of the rotation');
    t.is(r.scanned, N);
    t.log(`after the restart: ${r.rotated} rotated, ${r.skipped} had been rotated before the kill`);
    // The old key is no longer needed by any file.
    t.is((await mountctl(fx.dataDir, ['key', 'disable', 'mountd-default'])).code, 0);
    const bad = await sh(`cd ${fx.mnt}/rot && n=0; for d in $(seq 1 30); do for i in $(seq 1 ${N / 30}); do [ "$(cat d$d/f$i)" = "file $d/$i" ] || n=$((n+1)); done; done; echo $n`, { timeoutMs: 120_000 });
    t.is(bad.trim(), '0', 'every file reads back under the new key');
    t.is((await mountctl(fx.dataDir, ['key', 'enable', 'mountd-default'])).code, 0);
  });
}
