// The control commands as data (name, arguments, time limit, handler); a test pins the whole table.
import type { EncryptionInfo } from '../engine/index.js';
import { ErrorCode, MountdError } from '../errors/index.js';
import type { KeyInfo, KeyServiceStatus } from '../kms/KeyService.js';
import type { DaemonContext } from './types.js';

export interface ArgSpec {
  type: 'string' | 'boolean';
  required: boolean;
}

export interface Route {
  command: string;
  summary: string;
  /** The only arguments accepted; anything else is a bad request. */
  args: Record<string, ArgSpec>;
  timeoutMs: number;
  /**
   * `io.progress` sends an interim line to the client; `io.signal` aborts when the client goes
   * away (ctrl-C on mountctl), for commands that can stop halfway and resume.
   */
  handler(ctx: DaemonContext, args: Record<string, unknown>, io: RouteIo): Promise<unknown>;
  /** Runs after the response went out (unmount stops the daemon, socket included). */
  after?(ctx: DaemonContext): void;
}

export interface RouteIo {
  progress(p: unknown): void;
  signal: AbortSignal;
}

export interface KeyView {
  name: string;
  enabled: boolean;
  algorithm: string;
  createdAt: string;
  createdBy: string;
}

export interface StatusResult {
  pid: number;
  dataDir: string;
  startedAt: string;
  uptimeSeconds: number;
  mount: { mountPoint: string | null; error: string | null; binding: string | null; nodes: number | null };
  s3: { address: string | null };
  keyServer: KeyServiceStatus | { reachable: false; lastError: string };
  defaultKey: string;
  /** null when the key server could not list them (keysError says why). */
  keys: KeyView[] | null;
  keysError?: string;
  openFiles: number;
  handles: number;
  dirtyBytes: number;
  maxDirtyBytes: number;
  /** Plaintext DEKs cached in memory, when the key service keeps a cache. */
  dekCache: { entries: number; max: number; ttlMs: number } | null;
}

export type StatResult = Omit<EncryptionInfo, 'customerKeyMd5'> & { bucket: string; key: string; keyUsable: boolean; keyError?: string };

const str = (required = true): ArgSpec => ({ type: 'string', required });
const bool = (required = true): ArgSpec => ({ type: 'boolean', required });

const keyView = (k: KeyInfo): KeyView => ({ name: k.name, enabled: k.enabled, algorithm: k.algorithm, createdAt: k.createdAt, createdBy: k.createdBy });

function hasStats(x: unknown): x is { stats(): { entries: number; max: number; ttlMs: number } } {
  return typeof (x as { stats?: unknown }).stats === 'function';
}

async function status(ctx: DaemonContext): Promise<StatusResult> {
  const { engine, keyService } = ctx;
  const keyServer = await keyService.status().catch((err: Error) => ({ reachable: false as const, lastError: err.message }));
  let keys: KeyView[] | null = null;
  let keysError: string | undefined;
  try {
    keys = (await engine.listKeys()).map(keyView);
  } catch (err) {
    keysError = (err as Error).message;
  }
  const es = engine.status();
  const stats = hasStats(keyService) ? keyService.stats() : null;
  return {
    pid: process.pid,
    dataDir: ctx.dataDir,
    startedAt: ctx.startedAt.toISOString(),
    uptimeSeconds: Math.round((Date.now() - ctx.startedAt.getTime()) / 1000),
    mount: {
      mountPoint: ctx.mountPoint ?? null,
      error: ctx.mountPoint ? null : (ctx.mountError ?? 'not mounted (no --mount)'),
      binding: ctx.mountStatus?.().binding ?? null,
      nodes: ctx.mountStatus?.().nodes ?? null,
    },
    s3: { address: ctx.s3Address ?? null },
    keyServer,
    defaultKey: es.defaultKey,
    keys,
    ...(keysError !== undefined ? { keysError } : {}),
    openFiles: es.openFiles,
    handles: es.handles,
    dirtyBytes: es.dirtyBytes,
    maxDirtyBytes: es.maxDirtyBytesTotal,
    dekCache: stats ? { entries: stats.entries, max: stats.max, ttlMs: stats.ttlMs } : null,
  };
}

const name = (args: Record<string, unknown>) => args.name as string;

export const ROUTES: readonly Route[] = [
  {
    command: 'status',
    summary: 'mount point, S3 address, key server, keys and their state, open files, caches',
    args: {},
    timeoutMs: 10_000,
    handler: (ctx) => status(ctx),
  },
  {
    command: 'key.create',
    summary: 'create a key in the key server',
    args: { name: str() },
    timeoutMs: 30_000,
    handler: async (ctx, args) => {
      await ctx.engine.createKey(name(args));
      return { name: name(args), created: true };
    },
  },
  {
    command: 'key.list',
    summary: 'keys (optionally those starting with a prefix) and whether each is enabled',
    args: { prefix: str(false) },
    timeoutMs: 30_000,
    handler: async (ctx, args) => (await ctx.engine.listKeys((args.prefix as string | undefined) ?? '')).map(keyView),
  },
  {
    command: 'key.disable',
    summary: 'lock every file under a key at once, open descriptors included; reversible',
    args: { name: str() },
    // Buffered writes under the key are encrypted and written before it locks.
    timeoutMs: 120_000,
    handler: async (ctx, args) => {
      await ctx.engine.disableKey(name(args));
      return { name: name(args), enabled: false };
    },
  },
  {
    command: 'key.enable',
    summary: 'unlock the files under a disabled key',
    args: { name: str() },
    timeoutMs: 30_000,
    handler: async (ctx, args) => {
      await ctx.engine.enableKey(name(args));
      return { name: name(args), enabled: true };
    },
  },
  {
    command: 'key.delete',
    summary: 'delete a key: every file under it becomes permanently unreadable (crypto-erase)',
    args: { name: str(), confirm: bool() },
    timeoutMs: 120_000,
    handler: async (ctx, args) => {
      if (args.confirm !== true) {
        throw new MountdError(ErrorCode.InvalidArgument, `deleting key ${name(args)} makes every file under it unreadable for good; confirm it`);
      }
      await ctx.engine.deleteKey(name(args));
      return { name: name(args), deleted: true };
    },
  },
  {
    command: 'key.rotate',
    summary: 're-wrap every file under one key to another without touching data; resumable',
    args: { from: str(), to: str(), bucket: str(false) },
    timeoutMs: 24 * 3600_000,
    handler: async (ctx, args, io) => {
      const from = args.from as string;
      const to = args.to as string;
      const bucket = args.bucket as string | undefined;
      return ctx.engine.rotateKey({ from, to, bucket, signal: io.signal, onProgress: (p) => io.progress(p) });
    },
  },
  {
    command: 'verify',
    summary: 'authenticate every file (or a bucket, or a prefix) as a read would, changing nothing',
    args: { bucket: str(false), prefix: str(false) },
    timeoutMs: 24 * 3600_000,
    handler: async (ctx, args, io) =>
      ctx.engine.verify({ bucket: args.bucket as string | undefined, prefix: args.prefix as string | undefined, signal: io.signal, onProgress: (p) => io.progress(p) }),
  },
  {
    command: 'stat',
    summary: "a file's encryption: algorithm, key name, format version, whether the key is usable",
    args: { bucket: str(), key: str() },
    timeoutMs: 30_000,
    handler: async (ctx, args): Promise<StatResult> => {
      const bucket = args.bucket as string;
      const key = args.key as string;
      const info = await ctx.engine.encryptionInfo(bucket, key);
      // An allow-list, so nothing the engine adds later leaks out by accident.
      return {
        bucket,
        key,
        kind: info.kind,
        ...(info.keyName !== undefined ? { keyName: info.keyName } : {}),
        algorithm: info.algorithm,
        formatVersion: info.formatVersion,
        fileId: info.fileId,
        keyUsable: info.keyUsable,
        ...(info.keyError !== undefined ? { keyError: info.keyError } : {}),
      };
    },
  },
  {
    command: 'unmount',
    summary: 'flush everything, unmount and stop the daemon',
    args: {},
    timeoutMs: 10_000,
    handler: async () => ({ stopping: true }),
    after: (ctx) => void ctx.shutdown('mountctl unmount'),
  },
];

export function findRoute(command: string): Route | undefined {
  return ROUTES.find((r) => r.command === command);
}
