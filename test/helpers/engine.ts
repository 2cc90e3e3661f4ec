// Test fixture: an engine over a fresh temp directory with the embedded key server.
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Engine, type EngineOptions } from '../../src/engine/index.js';
import { openEmbeddedKeyService } from '../../src/kms/embedded.js';
import { BackingStore } from '../../src/store/index.js';

export interface Fixture {
  dir: string;
  engine: Engine;
  store: BackingStore;
  reopen(opts?: Partial<EngineOptions>): Promise<Engine>;
  cleanup(): Promise<void>;
}

export async function tempDir(tag = 'mountd-test'): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), `${tag}-`));
}

export async function openEngineAt(dir: string, opts: Partial<EngineOptions> = {}): Promise<Engine> {
  const store = await BackingStore.open(dir);
  const keys = await openEmbeddedKeyService({ internalDir: store.internalDir });
  return Engine.open({ store, keys, defaultKeyName: 'default-key', createDefaultKey: true, ...opts });
}

export async function makeFixture(opts: Partial<EngineOptions> = {}, bucket = 'bucket'): Promise<Fixture> {
  const dir = await tempDir();
  const fx: Fixture = {
    dir,
    engine: await openEngineAt(dir, opts),
    get store() {
      return fx.engine.store;
    },
    async reopen(more = {}) {
      await fx.engine.close();
      await fx.engine.store.close();
      fx.engine = await openEngineAt(dir, { ...opts, ...more });
      return fx.engine;
    },
    async cleanup() {
      await fx.engine.close().catch(() => undefined);
      await fx.engine.store.close().catch(() => undefined);
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
  if (bucket) await fx.engine.createBucket(bucket);
  return fx;
}

export async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}
