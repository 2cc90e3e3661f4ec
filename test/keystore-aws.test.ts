// The aws keystore (Secrets Manager + KMS) against a real moto_server on 127.0.0.1.

import test from 'ava';
import { randomBytes } from 'node:crypto';
import { Socket } from 'node:net';
import { inspect } from 'node:util';
import { CreateAliasCommand, CreateKeyCommand, DisableKeyCommand, EnableKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import {
  CreateSecretCommand,
  DescribeSecretCommand,
  GetSecretValueCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { ErrorCode, MountdError } from '../src/errors/index.js';
import { AwsKeystore, KeyServer } from '../src/kes/index.js';
import type { AwsKeystoreOptions } from '../src/kes/index.js';
import { ctx, enc, keystoreSuite, rejectsWith } from './helpers/keystore-suite.js';
import { MOTO_CREDENTIALS, MOTO_REGION, findMotoServer, startMoto } from './helpers/moto.js';
import type { MotoServer } from './helpers/moto.js';

// ---------------------------------------------------------------- every TCP connection stays on loopback

const destinations: string[] = [];
const originalConnect = Socket.prototype.connect;

/** Records the destination of every TCP connection this test process opens. */
function watchConnections(): void {
  Socket.prototype.connect = function (this: Socket, ...args: unknown[]) {
    // net.connect() passes its normalized [options, callback] array as the first argument.
    const first = Array.isArray(args[0]) ? (args[0] as unknown[])[0] : args[0];
    if (typeof first === 'object' && first !== null) {
      const o = first as { host?: string; port?: number; path?: string };
      destinations.push(o.path ? `unix:${o.path}` : `${o.host ?? 'localhost'}:${o.port}`);
    } else if (typeof first === 'number' || typeof first === 'string') {
      destinations.push(`${typeof args[1] === 'string' ? args[1] : 'localhost'}:${String(first)}`);
    }
    return (originalConnect as (...a: unknown[]) => Socket).apply(this, args);
  } as typeof Socket.prototype.connect;
}

// ---------------------------------------------------------------- fixtures

const motoBin = findMotoServer();

if (!motoBin) {
  const bar = '!'.repeat(78);
  console.error(
    `\n${bar}\n!!! moto_server NOT FOUND on PATH: the aws keystore tests (Secrets Manager + KMS) are SKIPPED.\n` +
      `!!! Install it with: pip install 'moto[server]'  (or set MOTO_SERVER=/path/to/moto_server)\n${bar}\n`,
  );
  if (process.env.MOUNTD_REQUIRE_MOTO === '1') {
    test('moto_server is required (MOUNTD_REQUIRE_MOTO=1) but missing', (t) => t.fail());
  } else {
    test.skip('aws keystore: moto_server not found, tests skipped', () => undefined);
  }
} else {
  registerAwsTests();
}

function registerAwsTests(): void {
  watchConnections();
  const motos: MotoServer[] = [];
  const keystores: AwsKeystore[] = [];
  const clients: Array<{ destroy(): void }> = [];
  let shared: MotoServer;
  let sharedKmsKeyId: string;
  let seq = 0;

  const uniquePrefix = (what: string) => `mountd-test/${what}-${++seq}-${randomBytes(4).toString('hex')}/`;

  function sdkClients(moto: MotoServer) {
    const cfg = { endpoint: moto.endpoint, region: MOTO_REGION, credentials: { ...MOTO_CREDENTIALS }, maxAttempts: 1 };
    const sm = new SecretsManagerClient(cfg);
    const kms = new KMSClient(cfg);
    clients.push(sm, kms);
    return { sm, kms };
  }

  async function createKmsKey(moto: MotoServer, alias?: string): Promise<string> {
    const { kms } = sdkClients(moto);
    const out = await kms.send(new CreateKeyCommand({ Description: 'mountd test key' }));
    const id = out.KeyMetadata?.KeyId;
    if (!id) throw new Error('moto returned no KeyId');
    if (alias) await kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: id }));
    return id;
  }

  function options(moto: MotoServer, extra: Partial<AwsKeystoreOptions> = {}): AwsKeystoreOptions {
    return {
      endpoint: moto.endpoint,
      region: MOTO_REGION,
      credentials: { ...MOTO_CREDENTIALS },
      kmsKeyId: sharedKmsKeyId,
      prefix: uniquePrefix('ks'),
      timeoutMs: 3000,
      maxAttempts: 3,
      ...extra,
    };
  }

  function open(o: AwsKeystoreOptions): AwsKeystore {
    const ks = new AwsKeystore(o);
    keystores.push(ks);
    return ks;
  }

  test.before(async () => {
    shared = await startMoto({ bin: motoBin });
    motos.push(shared);
    sharedKmsKeyId = await createKmsKey(shared);
  });

  test.after.always(async () => {
    Socket.prototype.connect = originalConnect;
    for (const ks of keystores) ks.close();
    for (const c of clients) c.destroy();
    await Promise.all(motos.map((m) => m.stop()));
  });

  test.after('no connection went anywhere but 127.0.0.1', (t) => {
    t.true(destinations.length > 0);
    const elsewhere = destinations.filter((d) => !d.startsWith('127.0.0.1:'));
    t.deepEqual(elsewhere, [], `connections outside loopback: ${elsewhere.join(', ')}`);
  });

  // -------------------------------------------------------------- the shared suite

  keystoreSuite('aws', async (serverOptions) => {
    const o = options(shared);
    const keystore = open(o);
    // No EK cache in the KeyServer: every operation goes to Secrets Manager.
    return { keystore, server: new KeyServer(keystore, { cacheKeys: false, ...serverOptions }), reopen: () => open(o) };
  });

  // -------------------------------------------------------------- what lands in Secrets Manager

  test('aws: each key is one secret named prefix + name, encrypted under the named KMS key, holding our JSON document', async (t) => {
    const o = options(shared);
    const ks = open(o);
    const server = new KeyServer(ks, { now: () => new Date('2025-05-06T07:08:09.000Z') });
    const ek = new Uint8Array(randomBytes(32));
    await server.importKey('doc-key', ek, 'ops');
    await server.disableKey('doc-key');

    const { sm } = sdkClients(shared);
    const secretId = `${o.prefix}doc-key`;
    const described = await sm.send(new DescribeSecretCommand({ SecretId: secretId }));
    t.is(described.Name, secretId);
    t.is(described.KmsKeyId, sharedKmsKeyId);
    const value = await sm.send(new GetSecretValueCommand({ SecretId: secretId }));
    const doc = JSON.parse(value.SecretString ?? '') as Record<string, unknown>;
    t.deepEqual(Object.keys(doc).sort(), ['algorithm', 'created_at', 'created_by', 'enabled', 'key', 'name', 'version']);
    t.like(doc, { version: 1, name: 'doc-key', algorithm: 'AES256', created_at: '2025-05-06T07:08:09.000Z', created_by: 'ops', enabled: false });
    t.deepEqual(new Uint8Array(Buffer.from(String(doc.key), 'base64')), ek);
    t.is(ks.secretName('doc-key'), secretId);
  });

  test('aws: list pages through ListSecrets and ignores secrets outside the prefix, not named like keys, or not ours', async (t) => {
    const o = options(shared, { listPageSize: 2 });
    const ks = open(o);
    const server = new KeyServer(ks);
    const names = ['k5', 'k1', 'k3', 'k2', 'k4', 'j1', 'K0'];
    for (const n of names) await server.createKey(n, 'test');
    const { sm } = sdkClients(shared);
    // Same prefix, but no valid key name after it; a sibling prefix that merely starts alike; and
    // a secret named like a key that the keystore did not create (no owner Description).
    await sm.send(new CreateSecretCommand({ Name: `${o.prefix}nested/k9`, SecretString: '{}' }));
    await sm.send(new CreateSecretCommand({ Name: `${o.prefix}k6`, SecretString: '{}', Description: 'database password' }));
    await sm.send(new CreateSecretCommand({ Name: `${o.prefix}k7`, SecretString: '{}' }));
    await sm.send(new CreateSecretCommand({ Name: `${o.prefix}.hidden`, SecretString: '{}' }));
    await sm.send(new CreateSecretCommand({ Name: `${o.prefix!.slice(0, -1)}x/k8`, SecretString: '{}' }));
    t.deepEqual(await ks.list(), ['K0', 'j1', 'k1', 'k2', 'k3', 'k4', 'k5']);
    t.deepEqual(await ks.list('k'), ['k1', 'k2', 'k3', 'k4', 'k5']);
    t.deepEqual(await ks.list('k3'), ['k3']);
    t.deepEqual((await server.listKeys('j')).map((k) => k.name), ['j1']);
  });

  test('aws: altered secrets are integrity errors that never echo key material', async (t) => {
    const o = options(shared);
    const ks = open(o);
    const server = new KeyServer(ks, { cacheKeys: false });
    const ek = new Uint8Array(randomBytes(32));
    await server.importKey('victim', ek, 'test');
    const b64 = Buffer.from(ek).toString('base64');
    const { sm } = sdkClients(shared);
    const secretId = `${o.prefix}victim`;
    const good = (await sm.send(new GetSecretValueCommand({ SecretId: secretId }))).SecretString!;

    const check = async (secretString: string, code: ErrorCode) => {
      await sm.send(new PutSecretValueCommand({ SecretId: secretId, SecretString: secretString }));
      const err = await rejectsWith(t, server.describeKey('victim'), code);
      const shown = `${err.message}\n${inspect(err, { depth: 5 })}`;
      t.false(shown.includes(b64), 'error shows the key');
      t.false(shown.includes(b64.slice(4, 40)), 'error shows part of the key');
      t.regex(err.message, /aws keystore \(Secrets Manager at http:\/\/127\.0\.0\.1:\d+\): secret '.*victim'/);
    };
    // Truncated JSON: JSON.parse would quote the input in its message.
    await check(good.slice(0, good.length - 3), ErrorCode.Integrity);
    await check(`${good.slice(0, 20)} ${good.slice(20)}x`, ErrorCode.Integrity);
    const doc = JSON.parse(good) as Record<string, unknown>;
    await check(JSON.stringify({ ...doc, name: 'other' }), ErrorCode.Integrity);
    await check(JSON.stringify({ ...doc, key: Buffer.from(ek.subarray(0, 16)).toString('base64') }), ErrorCode.Integrity);
    await check(JSON.stringify({ ...doc, enabled: 'yes' }), ErrorCode.Integrity);
    await check(JSON.stringify({ ...doc, version: 2 }), ErrorCode.UnsupportedFormat);
    await check('not json at all', ErrorCode.Integrity);
    // An update refuses to overwrite what it cannot read.
    await rejectsWith(t, server.disableKey('victim'), ErrorCode.Integrity);
    // Restored, it works again.
    await sm.send(new PutSecretValueCommand({ SecretId: secretId, SecretString: good }));
    t.true((await server.describeKey('victim')).enabled);
  });

  test('aws: options are validated, and messages never show the secret access key', (t) => {
    const base: AwsKeystoreOptions = {
      endpoint: 'http://127.0.0.1:1',
      region: 'us-east-1',
      credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'very-secret-value' },
      kmsKeyId: 'alias/k',
    };
    const bad: Array<Partial<AwsKeystoreOptions> | Record<string, unknown>> = [
      { region: '' },
      { region: 'US EAST' },
      { credentials: { accessKeyId: '', secretAccessKey: 'very-secret-value' } },
      { credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: '' } },
      { kmsKeyId: '' },
      { prefix: 'bad prefix/' },
      { prefix: 'x'.repeat(433) },
      { endpoint: 'not a url' },
      { endpoint: 'ftp://127.0.0.1:1' },
      { endpoint: 'http://user:very-secret-value@127.0.0.1:1' },
      { kmsEndpoint: 'nope' },
      { timeoutMs: 0 },
      { timeoutMs: Number.NaN },
      { maxAttempts: 0 },
      { maxAttempts: 1.5 },
      { kmsStateTtlMs: -1 },
      { listPageSize: 101 },
    ];
    for (const b of bad) {
      const err = t.throws(() => new AwsKeystore({ ...base, ...b } as AwsKeystoreOptions), { instanceOf: MountdError }, JSON.stringify(b));
      t.is(err?.code, ErrorCode.InvalidArgument);
      t.false(err?.message.includes('very-secret-value'));
    }
    const ok = new AwsKeystore({ ...base, prefix: 'x'.repeat(432) });
    t.is(ok.endpoint, 'http://127.0.0.1:1');
    t.is(ok.kmsEndpoint, 'http://127.0.0.1:1');
    ok.close();
    const real = new AwsKeystore({ ...base, endpoint: undefined, region: 'eu-west-1' });
    t.is(real.endpoint, 'https://secretsmanager.eu-west-1.amazonaws.com');
    t.is(real.kmsEndpoint, 'https://kms.eu-west-1.amazonaws.com');
    real.close();
  });

  // -------------------------------------------------------------- KeyServer over AwsKeystore

  test('aws: KeyServer round trip, and a second daemon on the same secrets decrypts it', async (t) => {
    const o = options(shared);
    const ks = open(o);
    const server = new KeyServer(ks);
    await server.createKey('minio-default-key', 'kesd');
    const c = ctx('photos', '2024/cat.jpg');
    const g = await server.generate('minio-default-key', c);
    t.is(g.ciphertext.length, 76);
    t.deepEqual(await server.decrypt('minio-default-key', g.ciphertext, c), g.plaintext);
    const other = new KeyServer(open({ ...o }));
    t.deepEqual(await other.decrypt('minio-default-key', g.ciphertext, c), g.plaintext);
    await rejectsWith(t, other.decrypt('minio-default-key', g.ciphertext, ctx('photos', 'dog.jpg')), ErrorCode.NotAuthentic);
    const status = await ks.status();
    t.like(status, { kind: 'aws', endpoint: shared.endpoint, reachable: true, kmsKeyState: 'Enabled', kmsKeyId: sharedKmsKeyId, prefix: o.prefix });
    t.is(status.lastError, undefined);
  });

  test('aws: KMS DisableKey makes keys unusable within the TTL (KeyDisabled, status says why); EnableKey restores', async (t) => {
    const ttl = 600;
    const alias = `alias/mountd-disable-${randomBytes(4).toString('hex')}`;
    // DisableKey and EnableKey take a key id or ARN, not an alias (on AWS as in moto).
    const keyId = await createKmsKey(shared, alias);
    const ks = open(options(shared, { kmsKeyId: alias, kmsStateTtlMs: ttl }));
    // The KeyServer's own EK cache never expires, so it stays off for a store others can change.
    const server = new KeyServer(ks, { cacheKeys: false });
    await server.createKey('ek', 'test');
    const c = ctx('b', 'o');
    const g = await server.generate('ek', c);

    const { kms, sm } = sdkClients(shared);
    await kms.send(new DisableKeyCommand({ KeyId: keyId }));
    const disabledAt = Date.now();
    // What the TTL bounds is when the last decrypt that still succeeds may START (the KMS state
    // is dated from its request's start): how long the failing call then takes is moto's round
    // trips, seconds on a loaded machine, and no part of the TTL.
    let err: unknown;
    let lastOkStart = disabledAt;
    for (;;) {
      const callStart = Date.now();
      try {
        await server.decrypt('ek', g.ciphertext, c);
        lastOkStart = callStart;
      } catch (e) {
        err = e;
        break;
      }
      if (Date.now() - disabledAt > ttl + 15_000) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    const lag = lastOkStart - disabledAt;
    t.log(`KMS disable took effect after ${Date.now() - disabledAt} ms; the last decrypt that succeeded started ${lag} ms after it (TTL ${ttl} ms)`);
    t.true(err instanceof MountdError, 'decrypt kept working after the KMS key was disabled');
    t.is((err as MountdError).code, ErrorCode.KeyDisabled);
    t.regex((err as MountdError).message, /AWS KMS key 'alias\/mountd-disable-[0-9a-f]+' is disabled/);
    t.regex((err as MountdError).message, /^aws keystore \(Secrets Manager at http:\/\/127\.0\.0\.1:\d+\): key 'ek' is unusable/);
    t.true(lag <= ttl + 100, `a decrypt started ${lag} ms after the disable still succeeded: more than the TTL`);

    await rejectsWith(t, server.generate('ek', c), ErrorCode.KeyDisabled);
    await rejectsWith(t, server.describeKey('ek'), ErrorCode.KeyDisabled);
    await rejectsWith(t, server.createKey('new-key', 'test'), ErrorCode.KeyDisabled);
    // Names stay listable (nothing is decrypted), and a missing key is still reported as missing.
    t.deepEqual(await ks.list(), ['ek']);
    await rejectsWith(t, server.describeKey('absent'), ErrorCode.KeyNotFound);

    // What moto emulates: its Secrets Manager still serves the secret under a disabled KMS key
    // (AWS would refuse), which is why the keystore checks the KMS key itself.
    const direct = await sm.send(new GetSecretValueCommand({ SecretId: ks.secretName('ek') })).then(
      () => 'served',
      (e: Error) => `refused (${e.name})`,
    );
    t.log(`moto Secrets Manager GetSecretValue under a disabled KMS key: ${direct}`);

    const status = await ks.status();
    t.is(status.reachable, true);
    t.is(status.kmsKeyState, 'Disabled');
    t.regex(status.lastError ?? '', /AWS KMS key .* is disabled/);

    await kms.send(new EnableKeyCommand({ KeyId: keyId }));
    const enabledAt = Date.now();
    // As above: the TTL bounds when the last refused decrypt may start.
    let plaintext: Uint8Array | undefined;
    let lastRefusedStart = enabledAt;
    while (!plaintext && Date.now() - enabledAt < ttl + 15_000) {
      const callStart = Date.now();
      plaintext = await server.decrypt('ek', g.ciphertext, c).catch(() => undefined);
      if (!plaintext) {
        lastRefusedStart = callStart;
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    t.deepEqual(plaintext, g.plaintext);
    t.true(lastRefusedStart - enabledAt <= ttl + 100, `a decrypt started ${lastRefusedStart - enabledAt} ms after the enable was still refused: more than the TTL`);
    t.is((await ks.status()).kmsKeyState, 'Enabled');
  });

  // -------------------------------------------------------------- outages (own moto, serial)

  let outage: MotoServer | undefined;
  const outageAlias = 'alias/mountd-outage';

  test.serial('aws: a hung key store (moto SIGSTOPped) fails with KeyServerUnavailable within the timeout, then recovers', async (t) => {
    outage = await startMoto({ bin: motoBin });
    motos.push(outage);
    await createKmsKey(outage, outageAlias);
    const timeoutMs = 1500;
    const ks = open(options(outage, { kmsKeyId: outageAlias, timeoutMs, maxAttempts: 3, kmsStateTtlMs: 200 }));
    const server = new KeyServer(ks, { cacheKeys: false });
    await server.createKey('ek', 'test');
    const c = enc('ctx');
    const g = await server.generate('ek', c);

    outage.pause();
    try {
      for (const [label, p] of [
        ['decrypt', () => server.decrypt('ek', g.ciphertext, c)],
        ['list', () => server.listKeys()],
        ['create', () => server.createKey('during-hang', 'test')],
      ] as const) {
        const started = Date.now();
        const err = await rejectsWith(t, p(), ErrorCode.KeyServerUnavailable);
        const took = Date.now() - started;
        t.log(`${label} while hung: ${took} ms: ${err.message}`);
        // At the timeout, and once: a second attempt (maxAttempts 3) would take another 1500 ms.
        t.true(took >= timeoutMs - 100 && took < 2 * timeoutMs, `${label} took ${took} ms`);
        t.regex(err.message, new RegExp(`^aws keystore \\(Secrets Manager at ${outage.endpoint.replace(/\./g, '\\.')}\\): cannot `));
        t.regex(err.message, /timed out after 1500 ms/);
      }
      const started = Date.now();
      const status = await ks.status();
      t.true(Date.now() - started < 2 * timeoutMs, `status took ${Date.now() - started} ms`);
      t.false(status.reachable);
      t.regex(status.lastError ?? '', /timed out/);
    } finally {
      outage.resume();
    }
    // Back: same moto process, so the key is still there.
    t.deepEqual(await server.decrypt('ek', g.ciphertext, c), g.plaintext);
    t.true((await ks.status()).reachable);
    t.deepEqual(await ks.list(), ['ek']);
  });

  test.serial('aws: a stopped key store fails fast with KeyServerUnavailable; restarted, it works again (moto forgets everything)', async (t) => {
    if (!outage) return t.fail('the previous serial test did not start its moto');
    const timeoutMs = 3000;
    const o = options(outage, { kmsKeyId: outageAlias, timeoutMs, maxAttempts: 3, kmsStateTtlMs: 200 });
    const ks = open(o);
    const server = new KeyServer(ks, { cacheKeys: false });
    await server.createKey('before-restart', 'test');
    const g = await server.generate('before-restart', enc('c'));

    await outage.stop();
    for (const [label, p] of [
      ['generate', () => server.generate('before-restart', enc('c'))],
      ['list', () => server.listKeys()],
      ['delete', () => server.deleteKey('before-restart')],
    ] as const) {
      const started = Date.now();
      const err = await rejectsWith(t, p(), ErrorCode.KeyServerUnavailable);
      const took = Date.now() - started;
      t.log(`${label} while stopped: ${took} ms: ${err.message}`);
      t.true(took < timeoutMs, `${label} took ${took} ms`);
      t.regex(err.message, /^aws keystore \(Secrets Manager at http:\/\/127\.0\.0\.1:\d+\): cannot .*ECONNREFUSED/);
      t.regex(err.message, /after 3 attempts/);
    }
    const status = await ks.status();
    t.false(status.reachable);
    t.regex(status.lastError ?? '', /ECONNREFUSED/);

    await outage.start();
    await new Promise((r) => setTimeout(r, 250)); // let the cached KMS state expire
    // Reachable again, but moto kept nothing: the secrets and the KMS key (and its alias) are gone.
    t.deepEqual(await ks.list(), []);
    await rejectsWith(t, server.decrypt('before-restart', g.ciphertext, enc('c')), ErrorCode.KeyNotFound);
    const noKms = await rejectsWith(t, server.createKey('after-restart', 'test'), ErrorCode.KeyServerUnavailable);
    t.regex(noKms.message, /: cannot create key 'after-restart': cannot describe the AWS KMS key 'alias\/mountd-outage': it does not exist/);
    const s1 = await ks.status();
    t.true(s1.reachable);
    t.is(s1.kmsKeyState, undefined);
    t.regex(s1.lastError ?? '', /does not exist/);

    // The operator recreates the KMS key under the same alias: everything works again.
    await createKmsKey(outage, outageAlias);
    await server.createKey('after-restart', 'test');
    const g2 = await server.generate('after-restart', enc('c'));
    t.deepEqual(await server.decrypt('after-restart', g2.ciphertext, enc('c')), g2.plaintext);
    t.like(await ks.status(), { reachable: true, kmsKeyState: 'Enabled' });
  });
}
