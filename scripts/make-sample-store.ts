// Generates test/sample-store/v1: a small data directory written by the engine, frozen so that every later version must still read format 1.
//
//   npx tsx scripts/make-sample-store.ts [--out DIR]
//
// The committed sample store must never be regenerated: it is what version 1 wrote, and a
// later version that cannot read it has broken the format. The script refuses to write over
// an existing directory. It holds a fixed master key: this is test data, not a secret.
//
// Git drops extended attributes, empty directories and file modes, so the script writes
// sidecars next to the store: xattrs.json (path -> {xattr name: base64 value}) and
// layout.json (empty directories, modes); expected.json says what every object must read as.
import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getAttributeSync, listAttributesSync } from '@napi-rs/xattr';
import { Engine } from '../src/engine/index.js';
import { openEmbeddedKeyService } from '../src/kms/embedded.js';
import { BackingStore } from '../src/store/index.js';

/** Test data, not a secret: the sample store is useless without it and worthless with it. */
export const SAMPLE_MASTER_KEY = '5a4d504c452d4d4f554e54442d56312d746573742d646174612d6f6e6c792121';
/** The SSE-C key of the sample's customer-key object (test data). */
export const SAMPLE_CUSTOMER_KEY = Buffer.alloc(32, 0xc5).toString('hex');

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const outIndex = args.indexOf('--out');
const out = path.resolve(outIndex >= 0 ? args[outIndex + 1]! : path.join(here, '..', 'test', 'sample-store', 'v1'));

/** Deterministic content, so that expected.json is readable and re-derivable. */
function content(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = seed >>> 0;
  for (let i = 0; i < size; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

interface Expected {
  bucket: string;
  key: string;
  size: number;
  sha256: string;
  meta: { etag?: string; contentType?: string; user: Record<string, string> };
  encryption: { kind: 'default' | 'named' | 'customer'; keyName?: string };
  customerKey?: string;
  symlinkTarget?: string;
}

async function main(): Promise<void> {
  if (await fsp.stat(out).catch(() => null)) {
    throw new Error(`${out} exists; the sample store of a released format must never be regenerated`);
  }
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'mountd-sample-'));
  const dataDir = path.join(work, 'store');
  try {
    await fsp.mkdir(path.join(dataDir, '.mountd', 'kes'), { recursive: true, mode: 0o700 });
    await fsp.writeFile(path.join(dataDir, '.mountd', 'kes', 'master.key'), `${SAMPLE_MASTER_KEY}\n`, { mode: 0o600 });
    const store = await BackingStore.open(dataDir);
    const keys = await openEmbeddedKeyService({ internalDir: store.internalDir });
    const e = await Engine.open({ store, keys, defaultKeyName: 'default-key', createDefaultKey: true });
    const expected: Expected[] = [];
    const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
    const record = (bucket: string, key: string, body: Buffer, rest: Omit<Expected, 'bucket' | 'key' | 'size' | 'sha256'>) =>
      expected.push({ bucket, key, size: body.length, sha256: createHash('sha256').update(body).digest('hex'), ...rest });

    await e.createBucket('sample');
    await e.createBucket('tenant-bucket');
    await e.createKey('tenant-key');

    // Objects through the S3 path.
    const empty = Buffer.alloc(0);
    await e.putObject('sample', 'empty', empty);
    record('sample', 'empty', empty, { meta: { etag: md5(empty), user: {} }, encryption: { kind: 'default', keyName: 'default-key' } });
    const hundred = content(100, 100);
    await e.putObject('sample', 'hundred.bin', hundred, { contentType: 'application/octet-stream', user: { author: 'mountd', 'ünïcødé': 'välüe ✓' } });
    record('sample', 'hundred.bin', hundred, {
      meta: { etag: md5(hundred), contentType: 'application/octet-stream', user: { author: 'mountd', 'ünïcødé': 'välüe ✓' } },
      encryption: { kind: 'default', keyName: 'default-key' },
    });
    const big = content(70000, 70000);
    await e.putObject('sample', 'seventy-thousand', big);
    record('sample', 'seventy-thousand', big, { meta: { etag: md5(big), user: {} }, encryption: { kind: 'default', keyName: 'default-key' } });
    const nested = Buffer.from('a nested key: a/b/c\n'.repeat(50));
    await e.putObject('sample', 'nested/dir/deep/object.txt', nested, { contentType: 'text/plain' });
    record('sample', 'nested/dir/deep/object.txt', nested, { meta: { etag: md5(nested), contentType: 'text/plain', user: {} }, encryption: { kind: 'default', keyName: 'default-key' } });
    const named = content(3 * 65536 + 17, 3);
    await e.putObject('tenant-bucket', 'named/object', named, { encryption: { kind: 'named', keyName: 'tenant-key' }, user: { tenant: 'a' } });
    record('tenant-bucket', 'named/object', named, { meta: { etag: md5(named), user: { tenant: 'a' } }, encryption: { kind: 'named', keyName: 'tenant-key' } });
    const ssec = content(65536, 65536);
    await e.putObject('sample', 'customer-key', ssec, { encryption: { kind: 'customer', customerKey: Buffer.from(SAMPLE_CUSTOMER_KEY, 'hex') } });
    record('sample', 'customer-key', ssec, { meta: { etag: md5(ssec), user: {} }, encryption: { kind: 'customer' }, customerKey: SAMPLE_CUSTOMER_KEY });
    await e.putObject('sample', 'folder/', empty);

    // A bucket default of a named key: new objects there use it.
    await e.setBucketEncryption('tenant-bucket', { algorithm: 'aws:kms', keyId: 'tenant-key' });
    const byDefault = Buffer.from('sealed under the bucket default key\n');
    await e.putObject('tenant-bucket', 'by-bucket-default', byDefault);
    record('tenant-bucket', 'by-bucket-default', byDefault, { meta: { etag: md5(byDefault), user: {} }, encryption: { kind: 'named', keyName: 'tenant-key' } });

    // Through the mount's path: written in pieces, rewritten in the middle, truncated, renamed (re-sealed record).
    await e.mkdir('sample', 'mount');
    const h = await e.create('sample', 'mount/written');
    const mountBody = content(2 * 65536 + 1000, 7);
    for (let at = 0; at < mountBody.length; at += 10_000) await e.write(h, at, mountBody.subarray(at, at + 10_000));
    await e.ftruncate(h, mountBody.length - 500);
    await e.release(h);
    await e.setUserMeta('sample', 'mount/written', 'origin', 'fuse');
    await e.rename('sample', 'mount/written', 'sample', 'mount/renamed');
    const mountFinal = mountBody.subarray(0, mountBody.length - 500);
    record('sample', 'mount/renamed', mountFinal, { meta: { user: { 'origin': 'fuse' } }, encryption: { kind: 'default', keyName: 'default-key' } });
    await e.symlink('sample', 'mount/link', '../hundred.bin');
    record('sample', 'mount/link', Buffer.from('../hundred.bin'), { meta: { etag: md5(Buffer.from('../hundred.bin')), user: {} }, encryption: { kind: 'default', keyName: 'default-key' }, symlinkTarget: '../hundred.bin' });

    await e.close();
    await store.close();

    // Copy out what git can keep, and write down what it cannot.
    await fsp.mkdir(out, { recursive: true });
    const storeOut = path.join(out, 'store');
    await fsp.cp(dataDir, storeOut, { recursive: true, filter: (src) => path.basename(src) !== 'lock' });
    const xattrs: Record<string, Record<string, string>> = {};
    const emptyDirectories: string[] = [];
    const modes: Record<string, string> = {};
    const files: string[] = [];
    const walk = async (rel: string) => {
      const abs = path.join(dataDir, rel);
      const st = await fsp.stat(abs);
      const names = listAttributesSync(abs).sort();
      if (names.length > 0) {
        xattrs[rel || '.'] = Object.fromEntries(names.map((n) => [n, getAttributeSync(abs, n)!.toString('base64')]));
      }
      if ((st.mode & 0o077) === 0) modes[rel || '.'] = (st.mode & 0o777).toString(8).padStart(4, '0');
      if (st.isDirectory()) {
        const entries = (await fsp.readdir(abs)).sort();
        if (entries.length === 0) emptyDirectories.push(rel);
        for (const n of entries) await walk(rel ? path.join(rel, n) : n);
      } else if (path.basename(rel) !== 'lock') files.push(rel);
    };
    await walk('');
    const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;
    await fsp.writeFile(path.join(out, 'xattrs.json'), json(xattrs));
    await fsp.writeFile(path.join(out, 'layout.json'), json({ comment: 'What git does not keep: empty directories and private modes (restore before opening the store).', emptyDirectories, modes, files }));
    await fsp.writeFile(
      path.join(out, 'expected.json'),
      json({
        comment: 'Written by scripts/make-sample-store.ts with format version 1. Must never change: every later version must read this store to exactly these objects.',
        formatVersion: 1,
        masterKey: SAMPLE_MASTER_KEY,
        keys: ['default-key', 'tenant-key'],
        buckets: { sample: { encryption: null }, 'tenant-bucket': { encryption: { algorithm: 'aws:kms', keyId: 'tenant-key' } } },
        directoryMarkers: [{ bucket: 'sample', key: 'folder/' }],
        objects: expected,
      }),
    );
    console.log(`wrote ${out}: ${files.length} files, ${expected.length} objects`);
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}

await main();
