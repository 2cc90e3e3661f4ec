// The keystore's master key: loaded from (or created as) a 0600 file of 64 hex characters.

import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { link, open, readFile, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ErrorCode, MountdError } from '../errors/index.js';

export const MASTER_KEY_LENGTH = 32;

/**
 * Parses an operator-given master key: 64 hex characters, surrounding whitespace ignored.
 * The message never echoes the input, which may be a real key with a typo.
 */
export function parseMasterKey(text: string): Uint8Array {
  const trimmed = text.trim();
  if (!/^[0-9a-fA-F]{64}$/.test(trimmed)) {
    throw new MountdError(
      ErrorCode.InvalidArgument,
      `master key must be exactly ${MASTER_KEY_LENGTH * 2} hex characters (${MASTER_KEY_LENGTH} bytes)`,
    );
  }
  return new Uint8Array(Buffer.from(trimmed, 'hex'));
}

/**
 * Returns the master key stored at `path`, creating it with fresh random bytes when absent.
 * An existing file readable or writable by group or other is refused rather than repaired:
 * the key may already have leaked, and the operator should know.
 */
export async function loadOrCreateMasterKey(path: string): Promise<Uint8Array> {
  const existing = await loadIfPresent(path);
  if (existing) return existing;
  await createExclusive(path);
  // Read back through the same checks, which also covers losing a creation race.
  const created = await loadIfPresent(path);
  if (!created) {
    throw new MountdError(ErrorCode.Internal, `master key file ${path}: vanished right after creation`);
  }
  return created;
}

async function loadIfPresent(path: string): Promise<Uint8Array | undefined> {
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new MountdError(ErrorCode.InvalidArgument, `master key file ${path}: cannot stat`, { cause: err });
  }
  if (!st.isFile()) {
    throw new MountdError(ErrorCode.InvalidArgument, `master key file ${path}: not a regular file`);
  }
  if ((st.mode & 0o077) !== 0) {
    const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
    throw new MountdError(
      ErrorCode.InvalidArgument,
      `master key file ${path} has mode ${mode}, which gives group or other access; run 'chmod 600 ${path}' (and consider the key exposed)`,
    );
  }
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new MountdError(ErrorCode.InvalidArgument, `master key file ${path}: cannot read`, { cause: err });
  }
  try {
    return parseMasterKey(text);
  } catch (err) {
    throw new MountdError(
      ErrorCode.InvalidArgument,
      `master key file ${path}: contents must be ${MASTER_KEY_LENGTH * 2} hex characters`,
      { cause: err },
    );
  }
}

/**
 * Writes a complete temp file and links it into place, so that a crash or a concurrent
 * loader never sees an empty or half-written key file, and an existing key is never replaced.
 */
async function createExclusive(path: string): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${randomBytes(8).toString('hex')}.tmp`);
  const key = randomBytes(MASTER_KEY_LENGTH);
  const text = Buffer.from(`${key.toString('hex')}\n`, 'utf8');
  key.fill(0);
  try {
    const fh = await open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await link(tmp, path);
    } catch (err) {
      // Another process created the key first: theirs wins, and we use it.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    await syncDir(dir);
  } catch (err) {
    if (err instanceof MountdError) throw err;
    throw new MountdError(ErrorCode.InvalidArgument, `master key file ${path}: cannot create`, { cause: err });
  } finally {
    text.fill(0);
    await unlink(tmp).catch(() => undefined);
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
