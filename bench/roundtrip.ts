// The per-request floor of each way to serve FUSE here: N stat(2) calls of missing names, each
// one lookup request answered "no such file" at once. fuse-native (libfuse's high-level loop on
// its own threads, what the null pass-through runs on), mountd's low-level binding on Node's own
// event loop (native/fuse-ll.c with src/fuse/lowlevel.ts), and gocryptfs.
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface RoundTripRow {
  target: string;
  requests: number;
  usPerRequest: number;
}

const mounted = (mnt: string) => fs.readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === mnt);

async function waitMounted(mnt: string, want: boolean): Promise<void> {
  for (let i = 0; i < 100 && mounted(mnt) !== want; i++) await new Promise((r) => setTimeout(r, 100));
  if (mounted(mnt) !== want) throw new Error(`${mnt} did not ${want ? 'mount' : 'unmount'}`);
}

function measure(mnt: string, n: number): number {
  for (let i = 0; i < 200; i++) fs.statSync(path.join(mnt, `warm${i}`), { throwIfNoEntry: false });
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fs.statSync(path.join(mnt, `missing${i}`), { throwIfNoEntry: false });
  return Number(process.hrtime.bigint() - t0) / 1e3 / n;
}

export async function roundTripBench(opts: { root: string; work: string; requests?: number }): Promise<RoundTripRow[]> {
  const n = opts.requests ?? 20_000;
  const base = path.join(opts.work, 'roundtrip');
  fs.rmSync(base, { recursive: true, force: true });
  const rows: RoundTripRow[] = [];
  for (const kind of ['fuse-native', 'fuse-ll']) {
    const mnt = path.join(base, kind);
    fs.mkdirSync(mnt, { recursive: true });
    const proc = spawn(process.execPath, [path.join(opts.root, 'bench/roundtrip-server.mjs'), kind, mnt], { stdio: ['ignore', 'ignore', 'inherit'] });
    try {
      await waitMounted(mnt, true);
      rows.push({ target: kind, requests: n, usPerRequest: measure(mnt, n) });
    } finally {
      proc.kill('SIGTERM');
      await waitMounted(mnt, false).catch(() => execFileSync('fusermount', ['-uz', mnt]));
    }
  }
  try {
    const backing = path.join(base, 'gocryptfs-backing');
    const mnt = path.join(base, 'gocryptfs');
    fs.mkdirSync(backing, { recursive: true });
    fs.mkdirSync(mnt, { recursive: true });
    execFileSync('gocryptfs', ['-q', '-init', '-extpass', 'echo benchpass', '-scryptn', '10', backing], { stdio: 'ignore' });
    execFileSync('gocryptfs', ['-q', '-extpass', 'echo benchpass', backing, mnt], { stdio: 'ignore' });
    try {
      rows.push({ target: 'gocryptfs', requests: n, usPerRequest: measure(mnt, n) });
    } finally {
      execFileSync('fusermount', ['-u', mnt]);
    }
  } catch (err) {
    console.error(`bench: gocryptfs round trip skipped: ${(err as Error).message}`);
  }
  return rows;
}
