// What the daemon exposes to its control socket: the engine and the state of both doors.
import type { Engine } from '../engine/index.js';
import type { KeyService } from '../kms/KeyService.js';

export interface DaemonContext {
  engine: Engine;
  keyService: KeyService;
  dataDir: string;
  /** Where the FUSE mount is, if it is up. */
  mountPoint?: string;
  /** Why there is no mount (no /dev/fuse, disabled by flag, mount failed). */
  mountError?: string;
  /** The mount's binding, and how many nodes the kernel holds through it (null: not counted). */
  mountStatus?: () => { binding: string; nodes: number | null };
  /** "host:port" of the S3 listener, if it is up. */
  s3Address?: string;
  startedAt: Date;
  /** Flushes everything, unmounts, stops the listeners and exits the process. */
  shutdown(reason: string): Promise<void>;
}
