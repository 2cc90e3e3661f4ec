// Key operation benchmarks: key server generate/decrypt rates, re-seal rate of a directory rename, rotation rate.
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { Engine } from '../src/engine/index.js';
import { FsKeystore, KeyServer } from '../src/kes/index.js';
import { InProcessKeyService } from '../src/kms/index.js';
import { openEmbeddedKeyService } from '../src/kms/embedded.js';
import type { KeyService } from '../src/kms/KeyService.js';
import { BackingStore } from '../src/store/index.js';

export interface KeyRow {
  what: string;
  ops: number;
  seconds: number;
}

const now = () => Number(process.hrtime.bigint()) / 1e9;

async function rate(what: string, ops: number, fn: (i: number) => Promise<unknown>, concurrency = 1): Promise<KeyRow> {
  const t0 = now();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < ops) await fn(next++);
    }),
  );
  return { what, ops, seconds: now() - t0 };
}

async function keyServerRates(label: string, ks: KeyService, n: number): Promise<KeyRow[]> {
  await ks.createKey('bench-key').catch(() => undefined);
  const ctx = Buffer.from('{"bench":"bench/object"}');
  const sample = await ks.generate('bench-key', ctx);
  return [
    await rate(`${label}: generate`, n, () => ks.generate('bench-key', ctx), 8),
    await rate(`${label}: decrypt`, n, () => ks.decrypt('bench-key', sample.ciphertext, ctx), 8),
  ];
}

export async function keyBench(opts: { root: string; work: string; files?: number; remote?: () => Promise<{ ks: KeyService; stop(): Promise<void> } | undefined> }): Promise<KeyRow[]> {
  const rows: KeyRow[] = [];
  const files = opts.files ?? 10_000;
  const dir = path.join(opts.work, 'keys');
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  console.error('bench: key server rates (embedded, no DEK cache)');
  const server = new KeyServer(new FsKeystore(path.join(dir, 'ks'), Buffer.alloc(32, 7)));
  rows.push(...(await keyServerRates('embedded key server', new InProcessKeyService(server), 20_000)));
  const remote = await opts.remote?.();
  if (remote) {
    try {
      console.error('bench: key server rates (kesd over HTTPS with mTLS)');
      rows.push(...(await keyServerRates('kesd over HTTPS', remote.ks, 2_000)));
    } finally {
      await remote.stop();
    }
  }

  console.error(`bench: directory rename and rotation of ${files} files`);
  const store = await BackingStore.open(path.join(dir, 'data'));
  const keys = await openEmbeddedKeyService({ internalDir: store.internalDir });
  const engine = await Engine.open({ store, keys, defaultKeyName: 'bench-default', createDefaultKey: true });
  try {
    await engine.createBucket('bench');
    const body = Buffer.alloc(100, 1);
    const put = await rate(`put ${files} objects of 100 B (engine, no HTTP)`, files, (i) => engine.putObject('bench', `a/d${i % 100}/f${i}`, body), 8);
    rows.push(put);
    const t0 = now();
    await engine.rename('bench', 'a', 'bench', 'b');
    rows.push({ what: `files re-sealed by one directory rename of ${files} files`, ops: files, seconds: now() - t0 });
    await engine.createKey('bench-next');
    const t1 = now();
    const r = await engine.rotateKey({ from: 'bench-default', to: 'bench-next' });
    if (r.rotated !== files) throw new Error(`rotation rotated ${r.rotated} of ${files}`);
    rows.push({ what: `files rotated to a new key (mountctl key rotate), ${files} files`, ops: files, seconds: now() - t1 });
  } finally {
    await engine.close();
    await store.close();
  }
  return rows;
}
