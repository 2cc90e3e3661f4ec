// mountd with its embedded key server's keys in AWS Secrets Manager under an AWS KMS key (moto_server):
// an S3 round trip and a mount round trip, and a KMS key disabled in AWS locks the files.
import test from 'ava';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { CreateAliasCommand, CreateKeyCommand, DisableKeyCommand, EnableKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { startDaemon, removeDir } from './helpers/daemon.js';
import { tempDir } from './helpers/engine.js';
import { HAS_FUSE, sh } from './helpers/mount.js';
import { MOTO_CREDENTIALS, MOTO_REGION, findMotoServer, startMoto } from './helpers/moto.js';
import { s3request } from './helpers/s3.js';

if (!findMotoServer()) {
  console.error('\n!!!! moto_server is not installed: the aws keystore round trips through mountd are SKIPPED !!!!\n');
  test('moto_server missing: aws keystore round trips skipped', (t) => t.log('install moto (pip install "moto[server]")'));
} else {
  test('S3 and mount round trips with keys held in Secrets Manager; a KMS key disabled in AWS locks them', async (t) => {
    const moto = await startMoto();
    t.teardown(() => moto.stop());
    const kms = new KMSClient({ endpoint: moto.endpoint, region: MOTO_REGION, credentials: MOTO_CREDENTIALS });
    t.teardown(() => kms.destroy());
    const keyId = (await kms.send(new CreateKeyCommand({ Description: 'mountd keystore' }))).KeyMetadata!.KeyId!;
    await kms.send(new CreateAliasCommand({ AliasName: 'alias/mountd-test', TargetKeyId: keyId }));
    const conf = await tempDir('mountd-aws-conf');
    t.teardown(() => removeDir(conf));
    await fsp.writeFile(path.join(conf, 'creds.json'), JSON.stringify({ access_key: MOTO_CREDENTIALS.accessKeyId, secret_key: MOTO_CREDENTIALS.secretAccessKey }), { mode: 0o600 });
    await fsp.writeFile(
      path.join(conf, 'aws.json'),
      JSON.stringify({ endpoint: moto.endpoint, region: MOTO_REGION, kms_key: 'alias/mountd-test', prefix: 'mountd/', credentials_file: 'creds.json', timeout_ms: 3000, kms_state_ttl_ms: 300 }),
    );
    const d = await startDaemon({ s3: true, mount: HAS_FUSE, args: ['--aws-keystore', path.join(conf, 'aws.json'), '--dek-cache-ttl', '1'] });
    t.teardown(async () => {
      await d.stop();
      await removeDir(d.dataDir);
      if (d.mountPoint) await removeDir(d.mountPoint);
    });
    t.regex(d.log(), /embedded key server over AWS Secrets Manager/);
    const req = (spec: Parameters<typeof s3request>[1]) => s3request(d.s3Port!, spec);
    t.is((await req({ method: 'PUT', path: '/awsks' })).status, 200);
    t.is((await req({ method: 'PUT', path: '/awsks/s3.txt', body: 'through S3, key in Secrets Manager' })).status, 200);
    t.is((await req({ method: 'GET', path: '/awsks/s3.txt' })).text, 'through S3, key in Secrets Manager');
    await fsp.access(path.join(d.dataDir, '.mountd')); // the daemon's own dir exists…
    await t.throwsAsync(fsp.access(path.join(d.dataDir, '.mountd', 'kes', 'keys')), undefined, '…but no local keystore');
    if (d.mountPoint) {
      await sh(`echo "through the mount" > ${d.mountPoint}/awsks/mnt.txt`);
      t.is((await req({ method: 'GET', path: '/awsks/mnt.txt' })).text, 'through the mount\n');
      t.is((await sh(`cat ${d.mountPoint}/awsks/s3.txt`)), 'through S3, key in Secrets Manager');
    } else t.log('FUSE missing: the mount half of this test did not run');

    // Disabled in AWS, not through mountd: effective after the KMS state TTL and the DEK cache TTL.
    await kms.send(new DisableKeyCommand({ KeyId: keyId }));
    await new Promise((r) => setTimeout(r, 1500));
    const locked = await req({ method: 'PUT', path: '/awsks/new.txt', body: 'x' });
    t.true(locked.status === 403 || locked.status === 503, `${locked.status} ${locked.text}`);
    t.regex(locked.text, /disabled|Disabled/);
    await kms.send(new EnableKeyCommand({ KeyId: keyId }));
    await new Promise((r) => setTimeout(r, 600));
    t.is((await req({ method: 'PUT', path: '/awsks/new.txt', body: 'after enable' })).status, 200);
    t.is((await req({ method: 'GET', path: '/awsks/s3.txt' })).text, 'through S3, key in Secrets Manager');
  });
}
