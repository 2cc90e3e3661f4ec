// What a path under the mount names: the root (the bucket list), a bucket, or an object key in a bucket.

export type MountPath =
  | { kind: 'root' }
  | { kind: 'bucket'; bucket: string }
  | { kind: 'object'; bucket: string; key: string };

/** "/" -> root, "/b" -> bucket b, "/b/a/c" -> key "a/c" in bucket b. Validation is the engine's. */
export function parseMountPath(p: string): MountPath {
  const parts = p.split('/').filter((s) => s !== '');
  if (parts.length === 0) return { kind: 'root' };
  const [bucket, ...rest] = parts as [string, ...string[]];
  if (rest.length === 0) return { kind: 'bucket', bucket };
  return { kind: 'object', bucket, key: rest.join('/') };
}

/** The engine's (bucket, key) for a bucket or object path; key "" is the bucket directory itself. */
export function engineKey(p: MountPath): { bucket: string; key: string } | null {
  if (p.kind === 'root') return null;
  return { bucket: p.bucket, key: p.kind === 'bucket' ? '' : p.key };
}

/**
 * libfuse's high-level API hides a file that is unlinked while open by renaming it to
 * ".fuse_hidden" + 16 hex digits in the same directory (unless `hard_remove`, which breaks
 * every later operation on the open file with ENOENT). The mount answers that rename with a
 * real unlink and keeps the name in memory only.
 */
const HIDDEN_RE = /^\.fuse_hidden[0-9a-f]{16}$/;

export function isHiddenName(p: string): boolean {
  return HIDDEN_RE.test(p.slice(p.lastIndexOf('/') + 1));
}

/** `p` itself or something below it. */
export function isAtOrBelow(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}
