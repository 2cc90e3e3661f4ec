// mountd against a separate kesd process over HTTPS with an API key: kesd stopped and restarted under it,
// and a daemon started while the key server is down. MinIO's environment names select the key server.
import test from 'ava';
import { startDaemon, removeDir } from './helpers/daemon.js';
import { startKesd } from './helpers/kesd.js';
import { errorCode, s3request } from './helpers/s3.js';

const CREDS = { accessKeyId: 'minio-operator', secretAccessKey: 'minio-operator-secret' };

function minioEnv(kesd: { endpoint: string; adminApiKey: string; certFile: string }) {
  return {
    MINIO_KMS_KES_ENDPOINT: kesd.endpoint,
    MINIO_KMS_KES_API_KEY: kesd.adminApiKey,
    MINIO_KMS_KES_CAPATH: kesd.certFile,
    MINIO_KMS_KES_KEY_NAME: 'minio-default-key',
    MINIO_ROOT_USER: CREDS.accessKeyId,
    MINIO_ROOT_PASSWORD: CREDS.secretAccessKey,
  };
}

test.serial('objects are sealed through a remote kesd; with kesd down cached keys serve and new keys fail fast; it recovers', async (t) => {
  const kesd = await startKesd({ keystore: 'fs' });
  t.teardown(() => kesd.cleanup());
  const d = await startDaemon({ s3: true, env: minioEnv(kesd) });
  t.teardown(async () => {
    await d.stop();
    await removeDir(d.dataDir);
  });
  t.regex(d.log(), /default key minio-default-key, remote key server https:\/\/127\.0\.0\.1/);
  const port = d.s3Port!;
  const req = (spec: Parameters<typeof s3request>[1]) => s3request(port, { creds: CREDS, ...spec });
  t.is((await req({ method: 'PUT', path: '/remote' })).status, 200);
  t.is((await req({ method: 'PUT', path: '/remote/a.txt', body: 'sealed through kesd' })).status, 200);
  t.is((await req({ method: 'GET', path: '/remote/a.txt' })).text, 'sealed through kesd');

  await kesd.stop();
  // The DEK of a.txt is cached: still readable until the cache TTL.
  t.is((await req({ method: 'GET', path: '/remote/a.txt' })).text, 'sealed through kesd');
  // A new object needs a new DEK: a clear 503 within the client's timeouts, never a hang.
  const started = Date.now();
  const down = await req({ method: 'PUT', path: '/remote/b.txt', body: 'needs the key server' });
  t.is(down.status, 503, down.text);
  t.true(Date.now() - started < 15_000, `answered in ${Date.now() - started} ms`);
  t.is((await req({ method: 'HEAD', path: '/remote/b.txt' })).status, 404, 'nothing partial is left');

  await kesd.start();
  t.is((await req({ method: 'PUT', path: '/remote/b.txt', body: 'key server is back' })).status, 200);
  t.is((await req({ method: 'GET', path: '/remote/b.txt' })).text, 'key server is back');
  // The keys live in kesd's fs keystore, not in the daemon's data directory.
  const keys = await (await import('node:fs/promises')).readdir(`${d.dataDir}/.mountd`);
  t.false(keys.includes('kes'), 'no embedded keystore was created');
});

test.serial('mountd starts while the key server is down, reports it, and recovers by itself', async (t) => {
  const kesd = await startKesd({ keystore: 'fs' });
  t.teardown(() => kesd.cleanup());
  await kesd.stop();
  const d = await startDaemon({ s3: true, env: minioEnv(kesd) });
  t.teardown(async () => {
    await d.stop();
    await removeDir(d.dataDir);
  });
  t.regex(d.log(), /key server unavailable .*retrying/);
  const req = (spec: Parameters<typeof s3request>[1]) => s3request(d.s3Port!, { creds: CREDS, ...spec });
  t.is((await req({ method: 'PUT', path: '/late' })).status, 200, 'buckets need no key');
  const refused = await req({ method: 'PUT', path: '/late/x', body: 'x' });
  t.is(refused.status, 503);
  t.truthy(errorCode(refused));
  await kesd.start();
  const until = Date.now() + 20_000;
  let status = 0;
  while (Date.now() < until) {
    status = (await req({ method: 'PUT', path: '/late/x', body: 'after recovery' })).status;
    if (status === 200) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  t.is(status, 200);
  t.is((await req({ method: 'GET', path: '/late/x' })).text, 'after recovery');
});
