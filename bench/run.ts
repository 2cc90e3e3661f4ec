// The benchmark: our mount beside plain disk, a null FUSE filesystem and gocryptfs; S3 beside peers; key operations.
// Run through scripts/bench, which installs what it needs. Writes BENCHMARKS.md.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LARGE_RUNS, NULL_SERVER, s3Bench, type S3Row } from './s3.js';
import { keyBench, type KeyRow } from './keys.js';
import { roundTripBench } from './roundtrip.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const flag = (name: string, def: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : def;
};
const SIZE_MIB = Number(flag('size-mib', '1024'));
const FILES = Number(flag('files', '3000'));
const ONLY = flag('only', 'mount,roundtrip,s3,keys').split(',');
const WORK = flag('work', path.join(os.tmpdir(), 'mountd-bench'));

function sh(cmd: string, opts: { cwd?: string; timeoutMs?: number } = {}): string {
  return execFileSync('bash', ['-c', cmd], { cwd: opts.cwd, encoding: 'utf8', timeout: opts.timeoutMs ?? 30 * 60_000, stdio: ['ignore', 'pipe', 'pipe'] });
}

function timed(cmd: string, cwd?: string): number {
  const t0 = process.hrtime.bigint();
  sh(cmd, { cwd });
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function dropCaches(): void {
  try {
    sh('sync; echo 3 > /proc/sys/vm/drop_caches');
  } catch {
    console.error('bench: could not drop the page cache (not root?): read figures may be cached');
  }
}

async function waitFor(pred: () => boolean, what: string, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const isMounted = (mnt: string) => fs.readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === mnt);

interface Target {
  name: string;
  /** Directory the workloads run in. */
  dir: string;
  pid?: number;
  stop(): Promise<void>;
}

async function startProcess(cmd: string, argv: string[], ready: (log: string) => boolean, what: string): Promise<{ proc: ChildProcess; log: () => string }> {
  const proc = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT });
  let log = '';
  proc.stdout!.on('data', (d) => (log += d));
  proc.stderr!.on('data', (d) => (log += d));
  await waitFor(() => ready(log) || proc.exitCode !== null, what);
  if (proc.exitCode !== null) throw new Error(`${what} exited: ${log}`);
  return { proc, log: () => log };
}

async function stopProcess(proc: ChildProcess, mnt?: string): Promise<void> {
  if (proc.exitCode === null) {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
  }
  if (mnt && isMounted(mnt)) sh(`fusermount -uz ${mnt} || umount -l ${mnt}`);
}

async function makeTarget(name: string): Promise<Target> {
  const base = path.join(WORK, name.replace(/[^a-z0-9]+/gi, '-'));
  await fsp.rm(base, { recursive: true, force: true });
  await fsp.mkdir(base, { recursive: true });
  const backing = path.join(base, 'backing');
  const mnt = path.join(base, 'mnt');
  await fsp.mkdir(backing);
  await fsp.mkdir(mnt);
  switch (name) {
    case 'plain disk':
      return { name, dir: backing, stop: async () => undefined };
    case 'null FUSE':
    case 'null FUSE (low-level)': {
      const flags = [...(process.env.BENCH_NULLFS_DIRECT_IO === '0' ? [] : ['--direct-io']), ...(name === 'null FUSE' ? [] : ['--lowlevel'])];
      const { proc } = await startProcess(process.execPath, [path.join(ROOT, 'bench/nullfs.mjs'), backing, mnt, ...flags], (l) => l.includes('ready'), 'nullfs');
      await waitFor(() => isMounted(mnt), 'nullfs mount');
      return { name, dir: mnt, pid: proc.pid, stop: () => stopProcess(proc, mnt) };
    }
    case 'gocryptfs': {
      sh(`gocryptfs -q -init -extpass 'echo benchpass' -scryptn 10 ${backing}`);
      sh(`gocryptfs -q -extpass 'echo benchpass' ${backing} ${mnt}`);
      return { name, dir: mnt, stop: async () => sh(`fusermount -u ${mnt}`) && undefined };
    }
    case 'mountd': {
      const { proc } = await startProcess(process.execPath, [path.join(ROOT, 'dist/cli/mountd.js'), '--data', backing, '--mount', mnt, '--s3', 'off', '--quiet'], () => isMounted(mnt), 'mountd');
      await fsp.mkdir(path.join(mnt, 'bench'));
      return { name, dir: path.join(mnt, 'bench'), pid: proc.pid, stop: () => stopProcess(proc, mnt) };
    }
    default:
      throw new Error(`unknown target ${name}`);
  }
}

/** A deterministic source tree: FILES files in nested directories, sizes 100 B to 64 KiB. */
async function makeTarball(): Promise<{ tarball: string; sums: string }> {
  const dir = path.join(WORK, 'src-tree');
  const tarball = path.join(WORK, 'tree.tar');
  const sums = path.join(WORK, 'tree.md5');
  if (fs.existsSync(tarball) && fs.existsSync(sums)) return { tarball, sums };
  await fsp.rm(dir, { recursive: true, force: true });
  let seed = 42;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const lines: string[] = [];
  for (let i = 0; i < FILES; i++) {
    const rel = `tree/d${i % 40}/s${i % 7}/file${i}.c`;
    const size = Math.floor(100 * Math.pow(655, rand()));
    const body = Buffer.alloc(size);
    for (let j = 0; j < size; j++) body[j] = 32 + Math.floor(rand() * 95);
    await fsp.mkdir(path.join(dir, path.dirname(rel)), { recursive: true });
    await fsp.writeFile(path.join(dir, rel), body);
    lines.push(`${createHash('md5').update(body).digest('hex')}  ${rel}`);
  }
  await fsp.writeFile(sums, lines.join('\n') + '\n');
  sh(`tar -C ${dir} -cf ${tarball} --sort=name --mtime=@0 --owner=0 --group=0 tree`);
  await fsp.rm(dir, { recursive: true, force: true });
  return { tarball, sums };
}

function rssPeakReset(pid?: number): void {
  if (pid) fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
}

function rssPeakMiB(pid?: number): number | undefined {
  if (!pid) return undefined;
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : undefined;
}

interface MountRow {
  target: string;
  write: number;
  read: number;
  untar: number;
  md5: number;
  lsR: number;
  rm: number;
  rssWriteMiB?: number;
  rssSmallMiB?: number;
}

const MOUNT_COMMANDS = {
  write: `dd if=/dev/zero of=FILE bs=128k count=${SIZE_MIB * 8} conv=fsync`,
  read: `sync; echo 3 > /proc/sys/vm/drop_caches; dd if=FILE of=/dev/null bs=128k`,
  untar: 'tar -xf TARBALL -C DIR',
  md5: 'cd DIR && md5sum -c --quiet SUMS',
  lsR: 'ls -lR DIR > /dev/null',
  rm: 'rm -rf DIR/tree DIR/big',
};

async function mountBench(): Promise<MountRow[]> {
  const { tarball, sums } = await makeTarball();
  const rows: MountRow[] = [];
  for (const name of ['plain disk', 'null FUSE', 'null FUSE (low-level)', 'gocryptfs', 'mountd']) {
    console.error(`bench: mount workloads on ${name}`);
    const t = await makeTarget(name);
    try {
      const file = path.join(t.dir, 'big');
      rssPeakReset(t.pid);
      const write = timed(MOUNT_COMMANDS.write.replace('FILE', file));
      const rssWriteMiB = rssPeakMiB(t.pid);
      dropCaches();
      const read = timed(`dd if=${file} of=/dev/null bs=128k`);
      rssPeakReset(t.pid);
      const untar = timed(`tar -xf ${tarball} -C ${t.dir}`);
      const md5 = timed(`md5sum -c --quiet ${sums}`, t.dir);
      const lsR = timed(`ls -lR ${t.dir} > /dev/null`);
      const rm = timed(`rm -rf ${t.dir}/tree ${file}`);
      const rssSmallMiB = rssPeakMiB(t.pid);
      rows.push({ target: name, write, read, untar, md5, lsR, rm, rssWriteMiB, rssSmallMiB });
    } finally {
      await t.stop();
    }
  }
  return rows;
}

const fmt = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');

function mountTable(rows: MountRow[]): string {
  const goc = rows.find((r) => r.target === 'gocryptfs');
  const nul = rows.find((r) => r.target === 'null FUSE');
  const nulLl = rows.find((r) => r.target === 'null FUSE (low-level)');
  const mb = (s: number) => (SIZE_MIB * 1.048576) / s;
  const out = [
    `| target | write MB/s | read MB/s | untar s | md5sum -c s | ls -lR s | rm -rf s | peak RSS write / small files (MiB) |`,
    `|---|---|---|---|---|---|---|---|`,
  ];
  for (const r of rows) {
    out.push(`| ${r.target} | ${fmt(mb(r.write), 0)} | ${fmt(mb(r.read), 0)} | ${fmt(r.untar)} | ${fmt(r.md5)} | ${fmt(r.lsR)} | ${fmt(r.rm)} | ${r.rssWriteMiB ?? '-'} / ${r.rssSmallMiB ?? '-'} |`);
  }
  const ours = rows.find((r) => r.target === 'mountd');
  if (ours && goc && nul) {
    out.push('');
    out.push(`| mountd ratio | write | read | untar | md5sum -c | ls -lR | rm -rf |`);
    out.push(`|---|---|---|---|---|---|---|`);
    // Throughput ratios: ours/theirs (higher is better). Time ratios: theirs/ours (higher is better).
    const r = (base: MountRow) =>
      [mb(ours.write) / mb(base.write), mb(ours.read) / mb(base.read), base.untar / ours.untar, base.md5 / ours.md5, base.lsR / ours.lsR, base.rm / ours.rm].map((x) => `${fmt(x)}x`).join(' | ');
    out.push(`| vs gocryptfs | ${r(goc)} |`);
    out.push(`| vs null FUSE | ${r(nul)} |`);
    if (nulLl) out.push(`| vs null FUSE (low-level) | ${r(nulLl)} |`);
    out.push('');
    out.push('Ratios are speed ratios: above 1.00x means mountd is faster than the baseline.');
  }
  return out.join('\n');
}

function machine(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown';
  const v = (cmd: string) => {
    try {
      return sh(cmd).trim().split('\n')[0];
    } catch {
      return 'n/a';
    }
  };
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules/fuse-native/package.json'), 'utf8')) as { version: string };
  return [
    `- CPU: ${cpu}, ${os.cpus().length} cores; memory ${Math.round(os.totalmem() / 2 ** 30)} GiB; kernel ${os.release()}`,
    `- Backing filesystem of ${WORK}: ${v(`df -T ${WORK} | tail -1 | awk '{print $2}'`)}`,
    `- Node ${process.version}, libfuse 2.9 through mountd's low-level binding (native/fuse-ll.c) for mountd and the low-level null FUSE; fuse-native ${pkg.version} with its C glue rebuilt from native/ for the other null FUSE, ${v('gocryptfs --version')}`,
    `- Date: ${new Date().toISOString()}`,
  ].join('\n');
}

async function main(): Promise<void> {
  // The null FUSE pass-through loads fuse-native through the same C glue as mountd (native/).
  if (fs.existsSync(path.join(ROOT, 'native/build/Release/fuse.node'))) process.env.FUSE_NATIVE_PREBUILD ??= path.join(ROOT, 'native');
  await fsp.mkdir(WORK, { recursive: true });
  const sections: string[] = [];
  sections.push(`# Benchmarks\n\nProduced by \`${['scripts/bench', ...args].join(' ')}\` on:\n\n${machine()}\n`);
  if (ONLY.includes('mount')) {
    const rows = await mountBench();
    const table = mountTable(rows);
    console.log(table);
    sections.push(
      `## Mount (the gocryptfs benchmark)\n\n${SIZE_MIB} MiB streaming write and read, then a tarball of ${FILES} files (${WORK}/tree.tar, made deterministically by bench/run.ts). Commands, with FILE, DIR, TARBALL and SUMS set per target:\n\n` +
        Object.entries(MOUNT_COMMANDS)
          .map(([k, c]) => `- ${k}: \`${c}\``)
          .join('\n') +
        `\n\nThe null FUSE filesystem is bench/nullfs.mjs: a pass-through through fuse-native with the same mount options as mountd and no crypto, the ceiling of the fuse-native binding; \"null FUSE (low-level)\" is the same pass-through on mountd's own binding (native/fuse-ll.c, \`--lowlevel\`), the ceiling of the binding mountd runs on. gocryptfs runs with its defaults (\`-scryptn 10\` only speeds up its key derivation at mount).\n\n${table}\n`,
    );
  }
  if (ONLY.includes('roundtrip')) {
    const rows = await roundTripBench({ root: ROOT, work: WORK });
    const lines = ['| served by | requests | µs per request |', '|---|---|---|'];
    const labels: Record<string, string> = {
      'fuse-native': 'fuse-native (libfuse high-level loop on its threads, hand-off to the main thread): the null FUSE, and mountd with MOUNTD_FUSE_BINDING=fuse-native',
      'fuse-ll': "mountd's binding: a libfuse low-level session on the main event loop (native/fuse-ll.c, src/fuse/lowlevel.ts), waiting up to 100 us for the next request before the loop sleeps (MOUNTD_FUSE_SPIN_US)",
      gocryptfs: 'gocryptfs (go-fuse)',
    };
    for (const r of rows) lines.push(`| ${labels[r.target] ?? r.target} | ${r.requests} | ${fmt(r.usPerRequest, 1)} |`);
    console.log(lines.join('\n'));
    sections.push(
      `## Per-request floor\n\n\`stat\` of ${rows[0]?.requests ?? 0} missing names on a file system that answers every lookup "no such file" at once (bench/roundtrip.ts, bench/roundtrip-server.mjs): the cost of one FUSE request and nothing else. A \`tar x\` of the tarball above makes about 12 requests per file (lookup, create, writes, flush, three setattrs, getxattr, release).\n\n${lines.join('\n')}\n`,
    );
  }
  if (ONLY.includes('s3')) {
    const rows: S3Row[] = await s3Bench({ root: ROOT, work: WORK, sizeMiB: SIZE_MIB });
    const lines = ['| server | workload | MB/s | req/s | p50 ms | p99 ms |', '|---|---|---|---|---|---|'];
    for (const r of rows) lines.push(`| ${r.server} | ${r.workload} | ${r.mbps === undefined ? '-' : fmt(r.mbps, 0)} | ${r.rps === undefined ? '-' : fmt(r.rps, 0)} | ${fmt(r.p50, 1)} | ${fmt(r.p99, 1)} |`);
    // mountd beside moto_server and beside the client's ceiling, workload by workload (SSE-S3).
    const speed = (r?: S3Row) => r?.mbps ?? r?.rps;
    const ratios = ['| mountd, SSE-S3 | vs moto_server | share of the client ceiling |', '|---|---|---|'];
    for (const r of rows.filter((x) => x.server === 'mountd' && x.workload.endsWith('SSE-S3'))) {
      const moto = speed(rows.find((x) => x.server === 'moto_server' && x.workload === r.workload));
      const ceiling = speed(rows.find((x) => x.server === NULL_SERVER && x.workload === r.workload));
      const ours = speed(r);
      const share = ours !== undefined && ceiling ? `${fmt((100 * ours) / ceiling, 0)}%` : 'n/a';
      ratios.push(`| ${r.workload.replace(/, SSE-S3$/, '')} | ${ours !== undefined && moto ? `${fmt(ours / moto)}x` : 'n/a'} | ${share} |`);
    }
    console.log(lines.join('\n'));
    console.log(ratios.join('\n'));
    sections.push(
      `## S3\n\nThe same client code (bench/s3.ts, AWS SDK for JavaScript v3) against each server on 127.0.0.1. ${SIZE_MIB} MiB object PUT then GET (one client), ${LARGE_RUNS} times: MB/s of the median transfer, p50 and p99 its time and the slowest's; 2,000 objects of 4 KiB PUT then GET with 16 concurrent clients. "${NULL_SERVER}" is bench/null-s3-server.mjs: it checks nothing and stores nothing but sizes, so what the client reaches against it is the most any server can show here, where client and server share the machine's ${os.cpus().length} cores.\n\n${lines.join('\n')}\n\n${ratios.join('\n')}\n`,
    );
  }
  if (ONLY.includes('keys')) {
    const rows: KeyRow[] = await keyBench({ root: ROOT, work: WORK });
    const lines = ['| what | operations | seconds | per second |', '|---|---|---|---|'];
    for (const r of rows) lines.push(`| ${r.what} | ${r.ops} | ${fmt(r.seconds)} | ${fmt(r.ops / r.seconds, 0)} |`);
    console.log(lines.join('\n'));
    sections.push(`## Key operations\n\n${lines.join('\n')}\n`);
  }
  // The tables are replaced; the history below them (sections "## Runs of ...", written by hand
  // with each change's before and after) is kept.
  const target = path.join(ROOT, 'BENCHMARKS.md');
  const previous = await fsp.readFile(target, 'utf8').catch(() => '');
  const history = previous.indexOf('\n## Runs of ');
  await fsp.writeFile(target, sections.join('\n') + (history >= 0 ? previous.slice(history) : ''));
  console.error(`bench: wrote BENCHMARKS.md${history >= 0 ? ' (the history sections below the tables are kept)' : ''}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
