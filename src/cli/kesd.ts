// kesd: a KES-compatible key server. Serves the KES HTTP API v1 over HTTPS with mTLS or
// `kes:v1:` API keys; `kesd init` writes a first configuration; `kesd identity` computes identities.
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { initKesd, loadConfig, openKeystore } from '../kes/config.js';
import { createAuditSink, startKesServer } from '../kes/http/index.js';
import type { RouteOverride } from '../kes/http/index.js';
import {
  API_KEY_PREFIX,
  createSelfSignedCertificate,
  generateApiKey,
  generateCertificateKey,
  identityOfCertificate,
  parseApiKey,
} from '../kes/identity.js';
import { PolicySet } from '../kes/policy.js';
import { createLogger } from './log.js';

function packageVersion(): string {
  try {
    const here = path.dirname(fileURLToPath(import.meta.url));
    const pkg = JSON.parse(readFileSync(path.resolve(here, '..', '..', 'package.json'), 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

async function serve(configFile: string, quiet: boolean): Promise<void> {
  const log = createLogger('kesd', quiet);
  const config = await loadConfig(configFile);
  const { keys, keystore } = await openKeystore(config);
  const [key, cert, clientCa] = await Promise.all([
    readFile(config.tls.keyFile),
    readFile(config.tls.certFile),
    config.tls.clientCaFile ? readFile(config.tls.clientCaFile) : Promise.resolve(undefined),
  ]);
  const audit = createAuditSink(config.audit);
  const api: Record<string, RouteOverride> = {};
  for (const [route, o] of Object.entries(config.api)) api[route] = { timeoutMs: o.timeoutMs, skipAuth: o.skipAuth };
  const server = await startKesServer({
    keys,
    keystore,
    policies: new PolicySet({ admin: config.admin, policies: config.policies }),
    tls: { key, cert, ...(clientCa ? { clientCa } : {}) },
    host: config.host,
    port: config.port,
    audit,
    api,
    version: packageVersion(),
    log: (level, msg) => {
      if (config.errorLog === 'off' && level === 'error') return;
      log[level](msg);
    },
  });
  key.fill(0);
  const where =
    config.keystore.kind === 'fs'
      ? `fs keystore ${config.keystore.path}`
      : config.keystore.kind === 'aws'
        ? `aws keystore (Secrets Manager at ${config.keystore.options.endpoint ?? config.keystore.options.region}, KMS key ${config.keystore.options.kmsKeyId})`
        : 'mem keystore (keys are lost on exit)';
  log.info(`${where}; admin identity ${config.admin ?? 'disabled'}; ${Object.keys(config.policies).length} policies`);
  log.info(`listening on ${server.url}`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info(`stopping (${signal})`);
    await server.close();
    await audit.close();
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  log.info('ready');
}

async function writeSecretFile(file: string, text: string, mode: number): Promise<void> {
  const fh = await open(file, 'wx', mode);
  try {
    await fh.writeFile(text, 'utf8');
  } finally {
    await fh.close();
  }
}

async function identityOf(source: string): Promise<string> {
  if (source.startsWith(API_KEY_PREFIX)) return parseApiKey(source).identity;
  const raw = await readFile(source);
  const text = raw.toString('utf8').trim();
  if (text.startsWith(API_KEY_PREFIX)) return parseApiKey(text).identity;
  if (text.includes('-----BEGIN CERTIFICATE-----')) return identityOfCertificate(text);
  return identityOfCertificate(new X509Certificate(raw));
}

const out = (s: string) => process.stdout.write(`${s}\n`);

await yargs(hideBin(process.argv))
  .scriptName('kesd')
  .usage('$0 --config FILE\n\nA KES-compatible key server: the KES HTTP API v1 over HTTPS with mTLS or kes:v1: API keys.')
  .command(
    ['$0', 'server'],
    'serve the KES API',
    (y) =>
      y
        .option('config', { type: 'string', demandOption: true, describe: 'JSON config file (kesd init writes one)' })
        .option('quiet', { type: 'boolean', default: false, describe: 'log only warnings and errors' }),
    async (argv) => serve(argv.config, argv.quiet),
  )
  .command(
    'init <dir>',
    'write a first configuration: server certificate, master key, fs keystore, admin API key',
    (y) =>
      y
        .positional('dir', { type: 'string', demandOption: true })
        .option('address', { type: 'string', default: '127.0.0.1:7373', describe: 'HOST:PORT to listen on' })
        .option('dns', { type: 'string', array: true, default: [] as string[], describe: 'extra DNS name for the server certificate' })
        .option('ip', { type: 'string', array: true, default: [] as string[], describe: 'extra IP address for the server certificate' })
        .option('keystore', { choices: ['fs', 'mem'] as const, default: 'fs' as const })
        .option('json', { type: 'boolean', default: false, describe: 'print the result as JSON' }),
    async (argv) => {
      const r = await initKesd(argv.dir, { address: argv.address, dnsNames: argv.dns, ipAddresses: argv.ip, keystore: argv.keystore });
      if (argv.json) {
        out(JSON.stringify({ config: r.configFile, admin_api_key: r.adminApiKey, admin_identity: r.adminIdentity, cert: r.certFile, key: r.keyFile, master_key: r.masterKeyFile ?? null, cert_not_after: r.certNotAfter.toISOString() }));
        return;
      }
      out(`Wrote ${r.configFile}`);
      out(`  server certificate ${r.certFile} (self-signed, valid until ${r.certNotAfter.toISOString()}); clients use it as their CA file`);
      out(`  server key         ${r.keyFile}`);
      if (r.masterKeyFile) out(`  master key         ${r.masterKeyFile} (back it up: without it the keystore cannot be read)`);
      out('');
      out('Admin API key (shown only this once; keep it secret):');
      out(`  ${r.adminApiKey}`);
      out(`Admin identity: ${r.adminIdentity}`);
      out('');
      out(`Start with: kesd --config ${r.configFile}`);
    },
  )
  .command('identity', 'create or compute KES identities', (y) =>
    y
      .command(
        'new',
        'create a new API key (or, with --cert and --key, a client certificate) and print its identity',
        (yy) =>
          yy
            .option('json', { type: 'boolean', default: false })
            .option('cert', { type: 'string', describe: 'write a self-signed client certificate here (with --key)' })
            .option('key', { type: 'string', describe: 'write the private key of the client certificate here (0600)' })
            .option('days', { type: 'number', default: 365, describe: 'client certificate validity' }),
        async (argv) => {
          if ((argv.cert === undefined) !== (argv.key === undefined)) throw new Error('--cert and --key go together');
          if (argv.cert !== undefined && argv.key !== undefined) {
            const privateKey = generateCertificateKey();
            const c = createSelfSignedCertificate({ privateKey, commonName: 'kesd client', usage: 'client', days: argv.days });
            const identity = identityOfCertificate(c.der);
            await writeSecretFile(argv.key, privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), 0o600);
            await writeSecretFile(argv.cert, c.pem, 0o644);
            if (argv.json) out(JSON.stringify({ identity, cert: argv.cert, key: argv.key }));
            else out(`Identity: ${identity}\nCertificate ${argv.cert}, private key ${argv.key}`);
            return;
          }
          const k = generateApiKey();
          if (argv.json) {
            out(JSON.stringify({ api_key: k.text, identity: k.identity }));
            return;
          }
          out('API key (shown only this once; keep it secret):');
          out(`  ${k.text}`);
          out(`Identity: ${k.identity}`);
        },
      )
      .command(
        'of <source>',
        'print the identity of a certificate file or an API key',
        (yy) => yy.positional('source', { type: 'string', demandOption: true, describe: 'certificate file (PEM or DER), or kes:v1: API key' }),
        async (argv) => {
          out(await identityOf(argv.source));
        },
      )
      .demandCommand(1, 'say "identity new" or "identity of FILE|APIKEY"'),
  )
  .strict()
  .help()
  .fail((msg, err) => {
    process.stderr.write(`kesd: ${err ? err.message : msg}\n`);
    process.exit(err ? 1 : 2);
  })
  .parseAsync();
