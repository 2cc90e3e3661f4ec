// S3-style listing over the backing tree: keys in UTF-8 byte order, prefix, delimiter, start-after, max-keys.
import type { Dirent } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { plaintextSize } from '../format/index.js';

export interface ListOptions {
  prefix?: string;
  delimiter?: string;
  /** Exclusive: only keys (and common prefixes) after this one. */
  startAfter?: string;
  maxKeys?: number;
}

export interface ListEntry {
  key: string;
  size: number;
  mtimeMs: number;
  /** An empty directory, listed as the S3 folder object "key/". */
  isDirectoryMarker: boolean;
}

export interface ListResult {
  objects: ListEntry[];
  commonPrefixes: string[];
  isTruncated: boolean;
  /** The last key or common prefix returned: the marker for the next page. */
  nextStartAfter?: string;
}

const cmp = (a: string, b: string) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));


/** Yields the objects under `dirAbs` (whose key prefix is `dirKey`, "" or ending in "/") in key order. */
async function* walk(dirAbs: string, dirKey: string, prefix: string, delimiter: string): AsyncGenerator<ListEntry | { commonPrefix: string }> {
  let dirents: Dirent[];
  try {
    dirents = await fsp.readdir(dirAbs, { withFileTypes: true });
  } catch {
    return;
  }
  const items: Array<{ sortKey: string; dirent: Dirent }> = [];
  for (const d of dirents) {
    if (!d.isFile() && !d.isDirectory()) continue;
    const key = dirKey + d.name + (d.isDirectory() ? '/' : '');
    // Skip whole subtrees that cannot match the prefix.
    if (!key.startsWith(prefix) && !prefix.startsWith(key)) continue;
    items.push({ sortKey: key, dirent: d });
  }
  items.sort((a, b) => cmp(a.sortKey, b.sortKey));
  for (const { sortKey, dirent } of items) {
    const abs = path.join(dirAbs, dirent.name);
    if (dirent.isDirectory()) {
      if (delimiter && sortKey.startsWith(prefix)) {
        const idx = sortKey.indexOf(delimiter, prefix.length);
        if (idx >= 0 && delimiter === '/') {
          // Everything below collapses into one common prefix: no need to descend.
          yield { commonPrefix: sortKey.slice(0, idx + delimiter.length) };
          continue;
        }
      }
      let empty = true;
      for await (const x of walk(abs, sortKey, prefix, delimiter)) {
        empty = false;
        yield x;
      }
      if (empty && sortKey.startsWith(prefix) && (await isEmptyDir(abs))) {
        const st = await fsp.stat(abs).catch(() => null);
        if (st) yield { key: sortKey, size: 0, mtimeMs: st.mtimeMs, isDirectoryMarker: true };
      }
    } else if (sortKey.startsWith(prefix)) {
      const st = await fsp.stat(abs).catch(() => null);
      if (!st) continue;
      let size: number;
      try {
        size = plaintextSize(st.size);
      } catch {
        size = 0;
      }
      yield { key: sortKey, size, mtimeMs: st.mtimeMs, isDirectoryMarker: false };
    }
  }
}

async function isEmptyDir(abs: string): Promise<boolean> {
  const dir = await fsp.opendir(abs).catch(() => null);
  if (!dir) return false;
  try {
    return (await dir.read()) === null;
  } finally {
    await dir.close().catch(() => undefined);
  }
}

/**
 * A prefix naming an empty directory exactly ("a/b/") lists that directory's marker object, as
 * S3 lists a folder object under its own key; the walk alone starts inside it and sees nothing.
 */
async function* fromBase(baseAbs: string, baseKey: string, prefix: string, delimiter: string): AsyncGenerator<ListEntry | { commonPrefix: string }> {
  if (baseKey !== '' && prefix === baseKey && (await isEmptyDir(baseAbs))) {
    const st = await fsp.stat(baseAbs).catch(() => null);
    if (st) yield { key: baseKey, size: 0, mtimeMs: st.mtimeMs, isDirectoryMarker: true };
    return;
  }
  yield* walk(baseAbs, baseKey, prefix, delimiter);
}

export async function listObjects(bucketAbs: string, options: ListOptions): Promise<ListResult> {
  const prefix = options.prefix ?? '';
  const delimiter = options.delimiter ?? '';
  const startAfter = options.startAfter ?? '';
  const maxKeys = Math.max(0, Math.min(options.maxKeys ?? 1000, 1000));
  // Start at the deepest directory the prefix names completely.
  const slash = prefix.lastIndexOf('/');
  const baseKey = slash >= 0 ? prefix.slice(0, slash + 1) : '';
  const segments = baseKey.split('/').filter((s) => s !== '');
  if (segments.some((s) => s === '.' || s === '..')) return { objects: [], commonPrefixes: [], isTruncated: false };
  const baseAbs = path.join(bucketAbs, ...segments);
  const result: ListResult = { objects: [], commonPrefixes: [], isTruncated: false };
  let lastPrefix: string | undefined;
  let count = 0;
  for await (const item of fromBase(baseAbs, baseKey, prefix, delimiter)) {
    let cp: string | undefined;
    let entry: ListEntry | undefined;
    if ('commonPrefix' in item) cp = item.commonPrefix;
    else {
      const idx = delimiter ? item.key.indexOf(delimiter, prefix.length) : -1;
      if (idx >= 0) cp = item.key.slice(0, idx + delimiter.length);
      else entry = item;
    }
    const name = cp ?? entry!.key;
    if (startAfter && cmp(name, startAfter) <= 0) continue;
    if (cp !== undefined && cp === lastPrefix) continue;
    if (count >= maxKeys) {
      result.isTruncated = true;
      break;
    }
    if (cp !== undefined) {
      lastPrefix = cp;
      result.commonPrefixes.push(cp);
    } else result.objects.push(entry!);
    result.nextStartAfter = name;
    count++;
  }
  return result;
}
