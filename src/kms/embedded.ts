// The embedded default: a KES-semantics key server in-process over an fs keystore inside the data directory.
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { AwsKeystore, FsKeystore, KeyServer, loadOrCreateMasterKey, parseMasterKey, type AwsKeystoreOptions } from '../kes/index.js';
import { CachingKeyService } from './CachingKeyService.js';
import { InProcessKeyService } from './InProcessKeyService.js';

export interface EmbeddedKeyServiceOptions {
  /** The daemon's internal directory (DATA/.mountd); keys live in its kes/ folder. */
  internalDir: string;
  /** An operator-given master key file; default: kes/master.key, created 0600 on first start. */
  masterKeyFile?: string;
  cacheTtlMs?: number;
  cacheMax?: number;
  /** Keep the external keys in AWS Secrets Manager under an AWS KMS key instead of the fs keystore. */
  aws?: AwsKeystoreOptions;
}

export async function openEmbeddedKeyService(opts: EmbeddedKeyServiceOptions): Promise<CachingKeyService> {
  if (opts.aws) {
    // No EK cache in the KeyServer: a KMS key disabled in AWS must take effect within kmsStateTtlMs.
    const server = new KeyServer(new AwsKeystore(opts.aws), { cacheKeys: false });
    return new CachingKeyService(new InProcessKeyService(server), { ttl: opts.cacheTtlMs, max: opts.cacheMax });
  }
  const dir = path.join(opts.internalDir, 'kes');
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  const masterKey = opts.masterKeyFile
    ? parseMasterKey(await fsp.readFile(opts.masterKeyFile, 'utf8'))
    : await loadOrCreateMasterKey(path.join(dir, 'master.key'));
  const server = new KeyServer(new FsKeystore(path.join(dir, 'keys'), masterKey));
  return new CachingKeyService(new InProcessKeyService(server), { ttl: opts.cacheTtlMs, max: opts.cacheMax });
}
