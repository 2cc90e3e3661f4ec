// mountd: the daemon. One engine over one data directory, a FUSE mount, an S3 listener and a control socket.
import * as path from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { startControlServer, type DaemonContext } from '../control/index.js';
import { Engine } from '../engine/index.js';
import { fuseAvailability, mountFilesystem, type MountHandle } from '../fuse/index.js';
import { loadAwsKeystoreConfig } from '../kes/index.js';
import { openEmbeddedKeyService } from '../kms/embedded.js';
import type { KeyService } from '../kms/KeyService.js';
import { openRemoteKeyService, remoteOptionsFromEnv } from '../kms/remote.js';
import { startS3Server, type S3Server } from '../s3/index.js';
import { BackingStore } from '../store/index.js';
import { createLogger } from './log.js';

export const DEFAULT_ACCESS_KEY = 'mountdadmin';
export const DEFAULT_SECRET_KEY = 'mountdadmin';

const argv = await yargs(hideBin(process.argv))
  .scriptName('mountd')
  .usage('$0 [options]\n\nServes an encrypted data directory through a FUSE mount and an S3 listener.')
  .option('data', { type: 'string', default: './data', describe: 'backing data directory' })
  .option('mount', { type: 'string', describe: 'mount point (omit for no mount)' })
  .option('s3', { type: 'string', default: '127.0.0.1:9000', describe: 'S3 listener HOST:PORT, or "off"' })
  .option('control', { type: 'string', describe: 'control socket path (default DATA/.mountd/control.sock)' })
  .option('default-key', { type: 'string', default: 'mountd-default', describe: 'key server key for objects without an explicit key' })
  .option('master-key-file', { type: 'string', describe: 'embedded key server master key (64 hex chars); default: created in DATA/.mountd/kes' })
  .option('kes', { type: 'string', describe: 'remote KES-compatible key server https://HOST:PORT (env MINIO_KMS_KES_ENDPOINT); default: embedded' })
  .option('kes-api-key', { type: 'string', describe: 'kes:v1: API key for --kes (env MINIO_KMS_KES_API_KEY; prefer the env or a file: argv is visible to other users)' })
  .option('kes-cert', { type: 'string', describe: 'client certificate PEM for --kes (env MINIO_KMS_KES_CERT_FILE)' })
  .option('kes-key', { type: 'string', describe: 'client private key PEM for --kes (env MINIO_KMS_KES_KEY_FILE)' })
  .option('kes-ca', { type: 'string', describe: 'CA or server certificate PEM for --kes (env MINIO_KMS_KES_CAPATH)' })
  .option('aws-keystore', { type: 'string', describe: 'embedded key server keeps its keys in AWS Secrets Manager: JSON file {endpoint, region, kms_key, credentials_file, ...}' })
  .option('dek-cache-ttl', { type: 'number', default: 300, describe: 'seconds a plaintext DEK stays cached in memory' })
  .option('s3-auto-create-keys', { type: 'boolean', default: false, describe: 'SSE-KMS requests may name a key that does not exist yet: create it' })
  .option('region', { type: 'string', default: 'us-east-1' })
  .option('allow-insecure-ssec', { type: 'boolean', default: false, describe: 'accept SSE-C over plain HTTP on a non-loopback address' })
  .option('multipart-expiry-days', { type: 'number', default: 7, describe: 'remove unfinished S3 multipart uploads this many days old (checked at start and hourly; 0: keep them)' })
  .option('quiet', { type: 'boolean', default: false })
  .strict()
  .help()
  .parse();

const log = createLogger('mountd', argv.quiet);

function parseHostPort(value: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(value);
  if (!m) throw new Error(`--s3 must be HOST:PORT, got ${JSON.stringify(value)}`);
  const port = Number(m[2]);
  if (port > 65535) throw new Error('--s3: port out of range');
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

async function main(): Promise<void> {
  const store = await BackingStore.open(argv.data);
  const cacheTtlMs = argv['dek-cache-ttl'] * 1000;
  const env = remoteOptionsFromEnv(process.env);
  const kesEndpoint = argv.kes ?? env?.endpoint;
  let keyService: KeyService;
  let keyServerWhat: string;
  if (kesEndpoint) {
    keyService = await openRemoteKeyService({
      endpoint: kesEndpoint,
      apiKey: argv['kes-api-key'] ?? env?.apiKey,
      certFile: argv['kes-cert'] ?? env?.certFile,
      keyFile: argv['kes-key'] ?? env?.keyFile,
      caFile: argv['kes-ca'] ?? env?.caFile,
      cacheTtlMs,
    });
    keyServerWhat = `remote key server ${kesEndpoint}`;
  } else {
    const aws = argv['aws-keystore'] ? loadAwsKeystoreConfig(argv['aws-keystore']) : undefined;
    keyService = await openEmbeddedKeyService({ internalDir: store.internalDir, masterKeyFile: argv['master-key-file'], aws, cacheTtlMs });
    keyServerWhat = aws ? `embedded key server over AWS Secrets Manager (${aws.endpoint ?? aws.region})` : 'embedded key server';
  }
  // MinIO's name for the default key, so that a MinIO operator's settings work unchanged.
  const defaultKey = process.env.MINIO_KMS_KES_KEY_NAME && argv['default-key'] === 'mountd-default' ? process.env.MINIO_KMS_KES_KEY_NAME : argv['default-key'];
  const engine = await Engine.open({ store, keys: keyService, defaultKeyName: defaultKey, createDefaultKey: true, log });
  log.info(`data directory ${store.root}, default key ${defaultKey}, ${keyServerWhat}`);
  const expiryDays = argv['multipart-expiry-days'];
  if (!Number.isFinite(expiryDays) || expiryDays < 0) throw new Error('--multipart-expiry-days must be 0 or more');
  if (expiryDays > 0) {
    const expire = () => void engine.expireUploads(expiryDays * 86_400_000).catch((err: Error) => log.warn(`multipart expiry: ${err.message}`));
    expire();
    setInterval(expire, 3_600_000).unref();
  }

  let mount: MountHandle | undefined;
  let s3: S3Server | undefined;
  let stopping: Promise<void> | undefined;
  const ctx: DaemonContext = {
    engine,
    keyService,
    dataDir: store.root,
    startedAt: new Date(),
    shutdown: (reason) => (stopping ??= shutdown(reason)),
  };

  async function shutdown(reason: string): Promise<void> {
    log.info(`stopping (${reason})`);
    const steps: Array<[string, () => Promise<void>]> = [
      ['unmount', async () => mount?.unmount()],
      ['S3 listener', async () => s3?.close()],
      ['control socket', async () => control.close()],
      ['engine', () => engine.close()],
      ['data directory lock', () => store.close()],
    ];
    let failed = false;
    for (const [what, step] of steps) {
      try {
        await step();
      } catch (err) {
        failed = true;
        log.error(`${what}: ${(err as Error).message}`);
      }
    }
    log.info('stopped');
    process.exit(failed ? 1 : 0);
  }

  const controlPath = argv.control ?? path.join(store.internalDir, 'control.sock');
  const control = await startControlServer(ctx, controlPath, log);
  log.info(`control socket ${control.socketPath}`);

  process.on('SIGINT', () => void ctx.shutdown('SIGINT'));
  process.on('SIGTERM', () => void ctx.shutdown('SIGTERM'));

  if (argv.s3 !== 'off') {
    const { host, port } = parseHostPort(argv.s3);
    const accessKeyId = process.env.MOUNTD_ACCESS_KEY ?? process.env.MINIO_ROOT_USER ?? DEFAULT_ACCESS_KEY;
    const secretAccessKey = process.env.MOUNTD_SECRET_KEY ?? process.env.MINIO_ROOT_PASSWORD ?? DEFAULT_SECRET_KEY;
    if (!isLoopback(host) && (accessKeyId === DEFAULT_ACCESS_KEY || secretAccessKey === DEFAULT_SECRET_KEY)) {
      throw new Error(`refusing to serve S3 on ${host} with the default credentials: set MOUNTD_ACCESS_KEY and MOUNTD_SECRET_KEY`);
    }
    try {
      s3 = await startS3Server(engine, {
        host,
        port,
        credentials: { accessKeyId, secretAccessKey },
        region: argv.region,
        log,
        allowInsecureSsec: argv['allow-insecure-ssec'],
        autoCreateKeys: argv['s3-auto-create-keys'],
        domains: process.env.MOUNTD_DOMAIN ? process.env.MOUNTD_DOMAIN.split(',').map((d) => d.trim()) : undefined,
      });
      ctx.s3Address = s3.address;
      log.info(`S3 listener on http://${s3.address}`);
    } catch (err) {
      log.warn(`S3 listener not started: ${(err as Error).message}`);
    }
  }

  if (argv.mount) {
    const avail = fuseAvailability();
    if (!avail.ok) {
      ctx.mountError = avail.reason;
      log.warn(`FUSE mount not available: ${avail.reason}`);
    } else {
      // mountFilesystem creates the directory, after removing a dead mount a crashed daemon left there.
      const mountPoint = path.resolve(argv.mount);
      // Unmounted from outside (fusermount -u): with no S3 listener the daemon has nothing left
      // to serve and stops, as FUSE file systems do; with one, S3 goes on.
      const onUnmounted = () => (s3 ? log.info('the S3 listener goes on') : void ctx.shutdown('the mount is gone and there is no S3 listener'));
      mount = await mountFilesystem(engine, { mountPoint, log, onUnmounted });
      ctx.mountPoint = mount.mountPoint;
      const m = mount;
      ctx.mountStatus = () => ({ binding: m.binding, nodes: m.nodes() });
      log.info(`mounted at ${mount.mountPoint}`);
    }
  }
  log.info('ready');
}

main().catch((err: Error) => {
  log.error(err.message);
  process.exit(1);
});
