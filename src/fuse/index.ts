// The FUSE mount (placeholder until the mount lands): buckets as directories, objects as files.
import type { Engine, Logger } from '../engine/index.js';
import { ErrorCode, MountdError } from '../errors/index.js';

export interface MountOptions {
  mountPoint: string;
  log: Logger;
}

export interface MountHandle {
  mountPoint: string;
  /** Flushes open files and unmounts. */
  unmount(): Promise<void>;
}

/** Whether this machine can mount: /dev/fuse present and fuse-native loadable. */
export function fuseAvailability(): { ok: boolean; reason?: string } {
  return { ok: false, reason: 'the mount is not built yet' };
}

export async function mountFilesystem(_engine: Engine, _opts: MountOptions): Promise<MountHandle> {
  throw new MountdError(ErrorCode.NotSupported, 'the mount is not built yet');
}
