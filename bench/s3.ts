// S3 benchmark: the same AWS SDK v3 client code against mountd, moto_server and s3rver on 127.0.0.1.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { createRequire } from 'node:module';
import * as net from 'node:net';
import * as path from 'node:path';

export interface S3Row {
  server: string;
  workload: string;
  mbps?: number;
  rps?: number;
  p50: number;
  p99: number;
}

interface Server {
  name: string;
  endpoint: string;
  ssec: boolean;
  pid?: number;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function waitPort(port: number, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.end();
        r(true);
      });
      s.once('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`port ${port} did not open`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function launch(name: string, cmd: string, argv: string[], port: number, ssec: boolean, cwd: string): Promise<Server> {
  const proc: ChildProcess = spawn(cmd, argv, { cwd, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, MOUNTD_ACCESS_KEY: 'benchkey', MOUNTD_SECRET_KEY: 'benchsecret' } });
  let log = '';
  proc.stderr!.on('data', (d) => (log = (log + d).slice(-4000)));
  try {
    await waitPort(port);
  } catch (err) {
    proc.kill('SIGKILL');
    throw new Error(`${name} did not start: ${(err as Error).message}\n${log}`);
  }
  return {
    name,
    endpoint: `http://127.0.0.1:${port}`,
    ssec,
    pid: proc.pid,
    async stop() {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await new Promise((r) => proc.once('exit', r));
      }
    },
  };
}

/** The server that does nothing: what the client alone reaches (a row of its own in the table). */
export const NULL_SERVER = 'null server (client ceiling)';
/** Transfers of the large object per server and mode (the median is shown). */
export const LARGE_RUNS = 3;

function pct(sorted: number[], p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export async function s3Bench(opts: { root: string; work: string; sizeMiB: number; objects?: number; concurrency?: number }): Promise<S3Row[]> {
  const tools = path.join(opts.root, '.bench-tools');
  const req = createRequire(path.join(tools, 'package.json'));
  // Installed by scripts/bench into .bench-tools, not a project dependency.
  const S3 = req('@aws-sdk/client-s3') as any; // eslint-disable-line @typescript-eslint/no-explicit-any
  const objects = opts.objects ?? 2000;
  const concurrency = opts.concurrency ?? 16;
  const dir = path.join(opts.work, 's3');
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  const bigFile = path.join(dir, 'big.bin');
  {
    const fh = await fsp.open(bigFile, 'w');
    const chunk = randomBytes(8 * 1024 * 1024);
    for (let i = 0; i < opts.sizeMiB / 8; i++) await fh.write(chunk);
    await fh.close();
  }
  const small = randomBytes(4096);
  const customerKey = randomBytes(32);
  const ssecParams = {
    SSECustomerAlgorithm: 'AES256',
    SSECustomerKey: customerKey.toString('base64'),
    SSECustomerKeyMD5: createHash('md5').update(customerKey).digest('base64'),
  };

  const rows: S3Row[] = [];
  const starters: Array<() => Promise<Server>> = [
    async () => {
      const port = await freePort();
      return launch('mountd', process.execPath, [path.join(opts.root, 'dist/cli/mountd.js'), '--data', path.join(dir, 'mountd-data'), '--s3', `127.0.0.1:${port}`, '--quiet'], port, true, opts.root);
    },
    async () => {
      const port = await freePort();
      return launch('moto_server', 'moto_server', ['-H', '127.0.0.1', '-p', String(port)], port, true, dir);
    },
    async () => {
      const port = await freePort();
      await fsp.mkdir(path.join(dir, 's3rver'), { recursive: true });
      return launch('s3rver', process.execPath, [path.join(tools, 'node_modules/s3rver/bin/s3rver.js'), '-d', path.join(dir, 's3rver'), '-a', '127.0.0.1', '-p', String(port), '--silent'], port, false, dir);
    },
    async () => {
      // Not a peer: the client's own ceiling on these cores (see bench/null-s3-server.mjs).
      const port = await freePort();
      return launch(NULL_SERVER, process.execPath, [path.join(opts.root, 'bench/null-s3-server.mjs'), String(port)], port, false, dir);
    },
  ];
  for (const start of starters) {
    let server: Server;
    try {
      server = await start();
    } catch (err) {
      console.error(`bench: ${(err as Error).message}`);
      continue;
    }
    console.error(`bench: S3 workloads on ${server.name}`);
    const client = new S3.S3Client({
      endpoint: server.endpoint,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: server.name === 's3rver' ? { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } : { accessKeyId: 'benchkey', secretAccessKey: 'benchsecret' },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 1,
    });
    try {
      await client.send(new S3.CreateBucketCommand({ Bucket: 'bench' }));
      for (const mode of ['SSE-S3', 'SSE-C'] as const) {
        if (mode === 'SSE-C' && !server.ssec) continue;
        const sse = mode === 'SSE-C' ? ssecParams : { ServerSideEncryption: 'AES256' as const };
        const getSse = mode === 'SSE-C' ? ssecParams : {};
        try {
          // One transfer of a large object swings with the page cache and the disk's writeback
          // (220-360 MB/s for the same PUT); each is made LARGE_RUNS times and the median shown,
          // with the slowest in the p99 column.
          const puts: number[] = [];
          const gets: number[] = [];
          for (let run = 0; run < LARGE_RUNS; run++) {
            let t0 = performance.now();
            await client.send(new S3.PutObjectCommand({ Bucket: 'bench', Key: `big-${mode}`, Body: fs.createReadStream(bigFile), ContentLength: opts.sizeMiB * 1048576, ...sse }));
            puts.push(performance.now() - t0);
            t0 = performance.now();
            const got = await client.send(new S3.GetObjectCommand({ Bucket: 'bench', Key: `big-${mode}`, ...getSse }));
            let n = 0;
            for await (const c of got.Body as AsyncIterable<Uint8Array>) n += c.length;
            gets.push(performance.now() - t0);
            if (n !== opts.sizeMiB * 1048576) throw new Error(`GET returned ${n} bytes`);
          }
          for (const [op, ms] of [['PUT', puts], ['GET', gets]] as const) {
            const sorted = [...ms].sort((a, b) => a - b);
            const median = pct(sorted, 50);
            rows.push({ server: server.name, workload: `${op} ${opts.sizeMiB} MiB, ${mode}`, mbps: (opts.sizeMiB * 1.048576) / (median / 1000), p50: median, p99: sorted[sorted.length - 1]! });
          }
          for (const op of ['PUT', 'GET'] as const) {
            const lat: number[] = [];
            let next = 0;
            const t1 = performance.now();
            await Promise.all(
              Array.from({ length: concurrency }, async () => {
                while (next < objects) {
                  const i = next++;
                  const a = performance.now();
                  if (op === 'PUT') await client.send(new S3.PutObjectCommand({ Bucket: 'bench', Key: `small/${mode}/${i}`, Body: small, ...sse }));
                  else {
                    const r = await client.send(new S3.GetObjectCommand({ Bucket: 'bench', Key: `small/${mode}/${i}`, ...getSse }));
                    await r.Body!.transformToByteArray();
                  }
                  lat.push(performance.now() - a);
                }
              }),
            );
            const total = (performance.now() - t1) / 1000;
            lat.sort((a, b) => a - b);
            rows.push({ server: server.name, workload: `${op} ${objects} x 4 KiB, ${concurrency} clients, ${mode}`, rps: objects / total, p50: pct(lat, 50), p99: pct(lat, 99) });
          }
        } catch (err) {
          console.error(`bench: ${server.name} ${mode}: ${(err as Error).message}`);
          rows.push({ server: server.name, workload: `${mode}: failed (${(err as Error).name})`, p50: NaN, p99: NaN });
        }
      }
    } finally {
      client.destroy();
      await server.stop();
    }
  }
  return rows;
}
