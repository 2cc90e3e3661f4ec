// Seeded property test: thousands of random handle operations on the engine against an in-memory Buffer model.
//
// Reproduce a failure with MODEL_SEED=<seed> npx ava test/engine-model.test.ts (the seed is in the failure message).
import test from 'ava';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { PACKAGE_PLAINTEXT, backingSize } from '../src/format/index.js';
import type { EngineOptions } from '../src/engine/index.js';
import { makeFixture, readAll, type Fixture } from './helpers/engine.js';
import { nobleDecryptFile, nobleUnsealOek, readRecordSync } from './helpers/scan.js';
import { Domain } from '../src/crypto/index.js';

const P = PACKAGE_PLAINTEXT;
const MAX_SIZE = 1536 * 1024;
const OPS = Number(process.env.MODEL_OPS ?? 4000);

/** Small deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

class ModelFailure extends Error {}

interface Variant {
  name: string;
  seeds: number[];
  opts: Partial<EngineOptions>;
}

const envSeed = process.env.MODEL_SEED ? [Number(process.env.MODEL_SEED)] : undefined;
const variants: Variant[] = [
  { name: 'default dirty budget (writes stay buffered until flush or release)', seeds: envSeed ?? [1, 2], opts: {} },
  {
    name: 'small dirty budget (256 KiB per file, 384 KiB in all: flushes forced mid-stream)',
    seeds: envSeed ?? [3, 4],
    opts: { maxDirtyBytesPerFile: 256 * 1024, maxDirtyBytesTotal: 384 * 1024 },
  },
];

async function run(fx: Fixture, seed: number): Promise<{ ops: Record<string, number>; finalSizes: number[] }> {
  const rnd = prng(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const keys = ['model-a', 'model-b'];
  const models: Buffer[] = keys.map(() => Buffer.alloc(0));
  // Two handles on the first file (shared state), one on the second.
  const handles: Array<{ file: number; h: number }> = [];
  for (const [i, key] of keys.entries()) {
    const h = await fx.engine.create('bucket', key);
    handles.push({ file: i, h });
  }
  handles.push({ file: 0, h: await fx.engine.open('bucket', keys[0]!) });
  const recent: string[] = [];
  const counts: Record<string, number> = {};
  const fail = (step: number, what: string): never => {
    throw new ModelFailure(`seed ${seed}, step ${step}: ${what}\nlast operations:\n  ${recent.slice(-25).join('\n  ')}`);
  };
  const offsetNear = (size: number) => {
    const r = rnd();
    if (r < 0.3) return Math.max(0, int(Math.ceil((size + 1) / P) + 1) * P + int(7) - 3); // around a package boundary
    if (r < 0.5) return Math.max(0, size - int(100)); // near the end
    return int(size + 70_000);
  };
  const length = () => {
    const r = rnd();
    if (r < 0.4) return int(100) + 1;
    if (r < 0.85) return int(70_000) + 1;
    return int(300_000) + 1;
  };
  let fill = 1;

  for (let step = 0; step < OPS; step++) {
    const slot = handles[int(handles.length)]!;
    const e = fx.engine;
    const model = () => models[slot.file]!;
    const setModel = (b: Buffer) => (models[slot.file] = b);
    const r = rnd();
    let op: string;
    if (r < 0.3) {
      const at = Math.min(offsetNear(model().length), MAX_SIZE);
      const len = Math.max(0, Math.min(length(), MAX_SIZE - at));
      const data = Buffer.alloc(len, fill);
      for (let i = 0; i < len; i += 997) data[i] = (fill * 31 + i) & 0xff;
      fill = (fill % 250) + 1;
      op = `write h${slot.h} @${at} +${len}`;
      recent.push(op);
      const n = await e.write(slot.h, at, data);
      if (n !== len) fail(step, `write returned ${n}, expected ${len}`);
      const m = model();
      // A write of zero bytes changes nothing, not even the size (pwrite(2)).
      const next = len > 0 && at + len > m.length ? Buffer.concat([m, Buffer.alloc(at + len - m.length)]) : m;
      data.copy(next, at);
      setModel(next);
      counts.write = (counts.write ?? 0) + 1;
    } else if (r < 0.4) {
      const len = Math.min(length(), MAX_SIZE - model().length);
      const data = Buffer.alloc(len, fill);
      fill = (fill % 250) + 1;
      op = `append h${slot.h} +${len}`;
      recent.push(op);
      await e.write(slot.h, model().length, data);
      setModel(Buffer.concat([model(), data]));
      counts.append = (counts.append ?? 0) + 1;
    } else if (r < 0.5) {
      const m = model();
      const q = rnd();
      const size = q < 0.45 ? int(m.length + 1) : q < 0.6 ? Math.floor(m.length / P) * P : Math.min(MAX_SIZE, m.length + int(200_000));
      // Through the handle (ftruncate) or by path (truncate(2) at the mount: flushes at once).
      const byPath = rnd() < 0.2;
      op = `${byPath ? 'truncate by path' : `ftruncate h${slot.h}`} ${m.length} -> ${size}`;
      recent.push(op);
      if (byPath) await e.truncate('bucket', keys[slot.file]!, size);
      else await e.ftruncate(slot.h, size);
      setModel(size <= m.length ? Buffer.from(m.subarray(0, size)) : Buffer.concat([m, Buffer.alloc(size - m.length)]));
      counts[size < m.length ? 'shrink' : 'grow'] = (counts[size < m.length ? 'shrink' : 'grow'] ?? 0) + 1;
    } else if (r < 0.75) {
      const m = model();
      const at = rnd() < 0.1 ? m.length + int(10) : offsetNear(m.length);
      const len = length();
      op = `read h${slot.h} @${at} +${len}`;
      recent.push(op);
      const got = await e.read(slot.h, at, len);
      const want = m.subarray(at, at + len);
      if (!got.equals(want)) {
        let first = 0;
        while (first < Math.min(got.length, want.length) && got[first] === want[first]) first++;
        fail(step, `read @${at} +${len}: got ${got.length} bytes, want ${want.length}; first difference at ${at + first}`);
      }
      counts.read = (counts.read ?? 0) + 1;
    } else if (r < 0.82) {
      op = `flush h${slot.h}`;
      recent.push(op);
      await e.flush(slot.h);
      counts.flush = (counts.flush ?? 0) + 1;
    } else if (r < 0.84) {
      op = `fsync h${slot.h}`;
      recent.push(op);
      await e.fsync(slot.h);
      const st = await fsp.stat(path.join(fx.dir, 'bucket', keys[slot.file]!));
      if (st.size !== backingSize(model().length)) fail(step, `after fsync the backing file is ${st.size} bytes, want ${backingSize(model().length)}`);
      counts.fsync = (counts.fsync ?? 0) + 1;
    } else if (r < 0.9) {
      const trunc = rnd() < 0.1;
      op = `release h${slot.h} and reopen${trunc ? ' with O_TRUNC' : ''}`;
      recent.push(op);
      await e.release(slot.h);
      slot.h = await e.open('bucket', keys[slot.file]!, { truncate: trunc });
      if (trunc) setModel(Buffer.alloc(0));
      recent.push(`  (now h${slot.h})`);
      counts.reopen = (counts.reopen ?? 0) + 1;
    } else if (r < 0.94) {
      op = `getObject ${keys[slot.file]}`;
      recent.push(op);
      const g = await e.getObject('bucket', keys[slot.file]!);
      const got = await readAll(g.body);
      if (g.size !== model().length || !got.equals(model())) fail(step, `getObject: size ${g.size}/${got.length}, want ${model().length}`);
      counts.getObject = (counts.getObject ?? 0) + 1;
    } else if (r < 0.98) {
      op = `stat ${keys[slot.file]}`;
      recent.push(op);
      const st = await e.stat('bucket', keys[slot.file]!);
      if (st.size !== model().length) fail(step, `stat size ${st.size}, want ${model().length}`);
      if (e.handleSize(slot.h) !== model().length) fail(step, `handle size ${e.handleSize(slot.h)}, want ${model().length}`);
      counts.stat = (counts.stat ?? 0) + 1;
    } else {
      op = 'release everything, restart the engine, reopen';
      recent.push(op);
      for (const s of handles) await fx.engine.release(s.h);
      await fx.reopen();
      for (const s of handles) s.h = await fx.engine.open('bucket', keys[s.file]!);
      counts.restart = (counts.restart ?? 0) + 1;
    }
    // The engine's accounting of buffered bytes never exceeds what the budget allows for long.
    if (fx.engine.status().dirtyBytes < 0) fail(step, `negative dirty bytes after ${op}`);
  }
  for (const s of handles) await fx.engine.release(s.h);
  if (fx.engine.status().dirtyBytes !== 0) fail(OPS, `dirty bytes ${fx.engine.status().dirtyBytes} after releasing everything`);
  const e = await fx.reopen();
  for (const [i, key] of keys.entries()) {
    const got = await readAll((await e.getObject('bucket', key)).body);
    if (!got.equals(models[i]!)) fail(OPS, `${key} after restart: ${got.length} bytes, want ${models[i]!.length}`);
    // Independently: @noble decrypts the backing file to the model.
    const p = path.join(fx.dir, 'bucket', key);
    const record = readRecordSync(p);
    const dek = await e.keyService.decrypt(record.keyName, record.dekCiphertext, record.context);
    const plain = nobleDecryptFile(await fsp.readFile(p), nobleUnsealOek(record, dek, Domain.KeyServer, `bucket/${key}`));
    if (!plain.equals(models[i]!)) fail(OPS, `${key}: @noble decryption differs from the model`);
  }
  return { ops: counts, finalSizes: models.map((m) => m.length) };
}

for (const v of variants) {
  for (const seed of v.seeds) {
    test(`model: ${v.name}, seed ${seed}`, async (t) => {
      const fx = await makeFixture(v.opts);
      t.teardown(() => fx.cleanup());
      const started = Date.now();
      try {
        const { ops, finalSizes } = await run(fx, seed);
        t.log(`seed ${seed}: ${OPS} operations in ${Date.now() - started} ms: ${JSON.stringify(ops)}; final sizes ${finalSizes.join(', ')}`);
        // The mix really exercised what it is meant to.
        for (const k of ['write', 'append', 'shrink', 'grow', 'read', 'flush', 'reopen', 'getObject', 'restart']) t.true((ops[k] ?? 0) > 0, `no ${k} operations`);
      } catch (err) {
        t.fail(`${err instanceof ModelFailure ? '' : `seed ${seed}: `}${(err as Error).stack ?? String(err)}`);
      }
    });
  }
}
