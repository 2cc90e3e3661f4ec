// mountctl: controls a running mountd over its control socket (status, keys, a file's encryption, verification, unmount).
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import yargs, { type Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { formatRotateProgress, formatVerifyProgress, type RotateProgress, type VerifyProgress } from '../engine/index.js';
import { ControlError, ControlErrorCode, callControl, defaultSocketPath, type KeyView, type StatResult, type StatusResult } from '../control/index.js';

/** Exit codes, also listed in --help. */
const EXIT = { ok: 0, failed: 1, usage: 2, unreachable: 3 } as const;

interface Globals {
  control?: string;
  data: string;
  json: boolean;
  timeout: number;
}

class UsageError extends Error {}

const socketOf = (g: Globals) => g.control ?? defaultSocketPath(g.data);
const call = (g: Globals, command: string, args: Record<string, unknown> = {}) => callControl(socketOf(g), command, args, g.timeout * 1000);

function out(g: Globals, result: unknown, human: () => string): void {
  process.stdout.write(g.json ? JSON.stringify(result, null, 2) + '\n' : human() + '\n');
}

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

function duration(s: number): string {
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return [d && `${d}d`, (d || h) && `${h}h`, `${m}m`, `${s % 60}s`].filter(Boolean).join('');
}

function keyTable(keys: KeyView[], defaultKey?: string): string {
  if (keys.length === 0) return '  (no keys)';
  const w = Math.max(4, ...keys.map((k) => k.name.length));
  const rows = keys.map((k) => `  ${k.name.padEnd(w)}  ${(k.enabled ? 'enabled' : 'DISABLED').padEnd(8)}  ${k.createdAt}${k.name === defaultKey ? '  (default)' : ''}`);
  return [`  ${'NAME'.padEnd(w)}  ${'STATE'.padEnd(8)}  CREATED`, ...rows].join('\n');
}

function formatStatus(s: StatusResult): string {
  const ks = s.keyServer;
  const keyServer = 'kind' in ks ? `${ks.kind} (${ks.endpoint}), ${ks.reachable ? 'reachable' : `UNREACHABLE${ks.lastError ? `: ${ks.lastError}` : ''}`}` : `UNREACHABLE: ${ks.lastError}`;
  return [
    `mountd pid ${s.pid}, up ${duration(s.uptimeSeconds)}, data ${s.dataDir}`,
    `mount:       ${s.mount.mountPoint ? `${s.mount.mountPoint} (${s.mount.binding ?? 'unknown'} binding${s.mount.nodes !== null ? `, ${s.mount.nodes} nodes held by the kernel` : ''})` : `none (${s.mount.error})`}`,
    `S3:          ${s.s3.address ? `http://${s.s3.address}` : 'off'}`,
    `key server:  ${keyServer}`,
    `keys:${s.keys ? `\n${keyTable(s.keys, s.defaultKey)}` : `       unavailable (${s.keysError})`}`,
    `open files:  ${s.openFiles} (${s.handles} handle${s.handles === 1 ? '' : 's'})`,
    `buffered:    ${bytes(s.dirtyBytes)} of ${bytes(s.maxDirtyBytes)} not yet encrypted and written`,
    `DEK cache:   ${s.dekCache ? `${s.dekCache.entries} of ${s.dekCache.max} entries, TTL ${Math.round(s.dekCache.ttlMs / 1000)} s` : 'none'}`,
  ].join('\n');
}

function formatStat(r: StatResult): string {
  const kind = r.kind === 'customer' ? 'customer-provided key (SSE-C)' : `${r.keyName} (${r.kind === 'default' ? 'default key' : 'named key'})`;
  return [
    `file:        ${r.bucket}/${r.key}`,
    `encryption:  ${r.algorithm}, format version ${r.formatVersion}`,
    `key:         ${kind}`,
    `key usable:  ${r.keyUsable ? 'yes' : `no (${r.keyError ?? 'unknown'})`}`,
    `file id:     ${r.fileId}`,
  ].join('\n');
}

/**
 * FILE as an object: a path under the mount point (absolute, or relative to the current
 * directory), s3://BUCKET/KEY, or BUCKET/KEY. Nothing on the mount is touched.
 */
function objectOf(file: string, mountPoint: string | null): { bucket: string; key: string } {
  const split = (rel: string) => {
    const parts = rel.split('/').filter((s) => s !== '');
    if (parts.length < 2) throw new UsageError(`${file} is a bucket or the mount root, not a file`);
    return { bucket: parts[0]!, key: parts.slice(1).join('/') };
  };
  if (file.startsWith('s3://')) return split(file.slice(5));
  const abs = path.resolve(file);
  if (mountPoint && (abs === mountPoint || abs.startsWith(mountPoint + path.sep))) return split(path.relative(mountPoint, abs).split(path.sep).join('/'));
  if (!path.isAbsolute(file)) return split(file);
  throw new UsageError(`${file} is not under the mount point${mountPoint ? ` ${mountPoint}` : ' (the daemon has no mount)'}; give a path under it or BUCKET/KEY`);
}

/**
 * What `mountctl verify` covers: everything; s3://BUCKET[/PREFIX] or BUCKET[/PREFIX] (an S3
 * prefix); or a directory or file under the mount point.
 */
async function scopeOf(where: string | undefined, mountPoint: string | null): Promise<{ bucket?: string; prefix?: string }> {
  if (where === undefined) return {};
  const split = (rel: string) => {
    const slash = rel.indexOf('/');
    if (slash < 0) return rel === '' ? {} : { bucket: rel };
    const prefix = rel.slice(slash + 1);
    return prefix === '' ? { bucket: rel.slice(0, slash) } : { bucket: rel.slice(0, slash), prefix };
  };
  if (where.startsWith('s3://')) return split(where.slice(5));
  const abs = path.resolve(where);
  if (mountPoint && (abs === mountPoint || abs.startsWith(mountPoint + path.sep))) {
    const rel = path.relative(mountPoint, abs).split(path.sep).join('/');
    if (rel === '' || !rel.includes('/')) return split(rel);
    const isDir = (await fsp.stat(abs).catch(() => null))?.isDirectory() === true;
    return split(isDir ? `${rel}/` : rel);
  }
  if (!path.isAbsolute(where)) return split(where);
  throw new UsageError(`${where} is not under the mount point${mountPoint ? ` ${mountPoint}` : ' (the daemon has no mount)'}; give a path under it, s3://BUCKET/PREFIX or BUCKET/PREFIX`);
}

async function waitUntilGone(g: Globals): Promise<boolean> {
  const until = Date.now() + g.timeout * 1000;
  while (Date.now() < until) {
    try {
      await callControl(socketOf(g), 'status', {}, 2000);
    } catch (err) {
      if (err instanceof ControlError && err.code === ControlErrorCode.Unreachable) return true;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

const withName = (y: Argv<Globals>) => y.positional('name', { type: 'string', demandOption: true, describe: 'key name' });

async function main(): Promise<number> {
  let action: ((g: Globals) => Promise<void>) | undefined;
  const set = (fn: (g: Globals) => Promise<void>) => () => {
    action = fn;
  };
  const parser = yargs(hideBin(process.argv))
    .scriptName('mountctl')
    .usage('$0 <command> [options]\n\nControls a running mountd through its control socket.')
    .option('control', { type: 'string', describe: 'control socket path (default DATA/.mountd/control.sock)' })
    .option('data', { type: 'string', default: './data', describe: "the daemon's data directory, to find its socket" })
    .option('json', { type: 'boolean', default: false, describe: 'print results as JSON (for scripts)' })
    .option('timeout', { type: 'number', default: 150, describe: 'seconds to wait for the daemon' })
    .command('status', 'mount point, S3 address, key server, keys, open files, caches', {}, set(async (g) => {
      const s = (await call(g, 'status')) as StatusResult;
      out(g, s, () => formatStatus(s));
    }))
    .command('key', 'manage keys in the key server: create, list, disable, enable, delete, rotate', (y: Argv<Globals>) =>
      y
        .command('create <name>', 'create a key', withName, set(async (g) => {
          const name = (g as Globals & { name: string }).name;
          const r = await call(g, 'key.create', { name });
          out(g, r, () => `created key ${name}`);
        }))
        .command('list [prefix]', 'list keys and whether each is enabled', (yy) => yy.positional('prefix', { type: 'string', describe: 'only names starting with this' }), set(async (g) => {
          const prefix = (g as Globals & { prefix?: string }).prefix;
          const keys = (await call(g, 'key.list', prefix ? { prefix } : {})) as KeyView[];
          out(g, keys, () => keyTable(keys));
        }))
        .command('disable <name>', 'lock every file under a key now, open descriptors included', withName, set(async (g) => {
          const name = (g as Globals & { name: string }).name;
          const r = await call(g, 'key.disable', { name });
          out(g, r, () => `disabled key ${name}: its files are locked (ENOKEY), open descriptors included`);
        }))
        .command('enable <name>', 'unlock the files under a disabled key', withName, set(async (g) => {
          const name = (g as Globals & { name: string }).name;
          const r = await call(g, 'key.enable', { name });
          out(g, r, () => `enabled key ${name}`);
        }))
        .command(
          'delete <name>',
          'delete a key: its files become permanently unreadable (needs --yes)',
          (yy) => withName(yy).option('yes', { type: 'boolean', default: false, describe: 'yes, destroy every file under this key' }),
          set(async (g) => {
            const { name, yes } = g as Globals & { name: string; yes: boolean };
            if (!yes) throw new UsageError(`refusing to delete key ${name} without --yes: every file under it becomes permanently unreadable`);
            const r = await call(g, 'key.delete', { name, confirm: true });
            out(g, r, () => `deleted key ${name}: files under it can no longer be decrypted`);
          }),
        )
        .command(
          'rotate',
          're-wrap every file under --from to --to without touching data; run again to resume',
          (yy) =>
            yy
              .option('from', { type: 'string', demandOption: true, describe: 'the key files are under now' })
              .option('to', { type: 'string', demandOption: true, describe: 'the key to move them to (must exist and be enabled)' })
              .option('bucket', { type: 'string', describe: 'only this bucket' }),
          set(async (g) => {
            const { from, to, bucket } = g as Globals & { from: string; to: string; bucket?: string };
            const tty = process.stderr.isTTY === true;
            const onProgress = (p: unknown) => {
              const line = g.json ? JSON.stringify({ progress: p }) : formatRotateProgress(p as RotateProgress);
              process.stderr.write(tty && !g.json ? `\r${line}` : `${line}\n`);
            };
            const r = (await callControl(socketOf(g), 'key.rotate', { from, to, ...(bucket ? { bucket } : {}) }, g.timeout * 1000, onProgress)) as RotateProgress;
            if (tty && !g.json) process.stderr.write('\n');
            out(g, r, () => [formatRotateProgress(r), ...r.errors.map((e) => `  failed: ${e}`)].join('\n'));
            if (r.failed > 0) throw new ControlError({ code: 'ROTATION_INCOMPLETE', message: `${r.failed} file(s) could not be rotated; fix them and run the rotation again` });
          }),
        )
        .demandCommand(1, 'key needs a subcommand: create, list, disable, enable, delete or rotate'),
    )
    .command('stat <file>', "a file's encryption: algorithm, key, format version, whether the key is usable", (y) => y.positional('file', { type: 'string', demandOption: true, describe: 'a path under the mount, s3://BUCKET/KEY or BUCKET/KEY' }), set(async (g) => {
      const file = (g as Globals & { file: string }).file;
      const mountPoint = file.startsWith('s3://') ? null : ((await call(g, 'status')) as StatusResult).mount.mountPoint;
      const r = (await call(g, 'stat', objectOf(file, mountPoint))) as StatResult;
      out(g, r, () => formatStat(r));
    }))
    .command(
      'verify [where]',
      'authenticate every file as a read would (header, key record, metadata, all data), changing nothing; exit 1 if any is damaged',
      (y) => y.positional('where', { type: 'string', describe: 'only a bucket, prefix, directory or file: s3://BUCKET/PREFIX, BUCKET/PREFIX or a path under the mount' }),
      set(async (g) => {
        const where = (g as Globals & { where?: string }).where;
        const mountPoint = where === undefined || where.startsWith('s3://') ? null : ((await call(g, 'status')) as StatusResult).mount.mountPoint;
        const scope = await scopeOf(where, mountPoint);
        const tty = process.stderr.isTTY === true;
        const onProgress = (p: unknown) => {
          if ((p as VerifyProgress).done) return; // the summary follows on stdout
          const line = g.json ? JSON.stringify({ progress: p }) : formatVerifyProgress(p as VerifyProgress);
          process.stderr.write(tty && !g.json ? `\r${line}` : `${line}\n`);
        };
        const r = (await callControl(socketOf(g), 'verify', scope, g.timeout * 1000, onProgress)) as VerifyProgress;
        if (tty && !g.json) process.stderr.write('\n');
        out(g, r, () =>
          [
            formatVerifyProgress(r),
            ...r.damaged.map((e) => `  damaged: ${e}`),
            ...(r.failed > r.damaged.length ? [`  ... and ${r.failed - r.damaged.length} more damaged`] : []),
            ...r.locked.map((e) => `  locked: ${e}`),
            ...(r.lockedCount > r.locked.length ? [`  ... and ${r.lockedCount - r.locked.length} more locked`] : []),
          ].join('\n'),
        );
        if (r.failed > 0) throw new ControlError({ code: 'DAMAGED', message: `${r.failed} file(s) failed verification; their data is never served (reads give EIO at the mount, 500 at S3)` });
      }),
    )
    .command('unmount', 'flush everything, unmount and stop the daemon', {}, set(async (g) => {
      await call(g, 'unmount');
      const gone = await waitUntilGone(g);
      if (!gone) throw new ControlError({ code: ControlErrorCode.Timeout, message: `the daemon did not stop within ${g.timeout} s` });
      out(g, { stopped: true }, () => 'flushed, unmounted and stopped');
    }))
    .demandCommand(1, 'give a command: status, key, stat, verify or unmount')
    .strict()
    .epilog('Exit codes: 0 done, 1 the daemon refused or failed the command, 2 usage error, 3 daemon not reachable or not answering.')
    .exitProcess(false)
    .fail((msg, err) => {
      throw err ?? new UsageError(msg);
    })
    .help();

  let globals: Globals;
  try {
    globals = (await parser.parseAsync()) as unknown as Globals;
  } catch (err) {
    process.stderr.write(`mountctl: ${(err as Error).message}\nRun mountctl --help for usage.\n`);
    return EXIT.usage;
  }
  if (!action) return EXIT.ok; // --help or --version printed
  try {
    await action(globals);
    return EXIT.ok;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`mountctl: ${err.message}\n`);
      return EXIT.usage;
    }
    const code = err instanceof ControlError ? err.code : 'ERROR';
    const message = (err as Error).message;
    if (globals.json) process.stderr.write(JSON.stringify({ error: { code, message } }) + '\n');
    else process.stderr.write(`mountctl: ${message} [${code}]\n`);
    const unreachable: string[] = [ControlErrorCode.Unreachable, ControlErrorCode.Protocol, ControlErrorCode.Timeout];
    return unreachable.includes(code) ? EXIT.unreachable : EXIT.failed;
  }
}

process.exitCode = await main();
