// The S3 listener (placeholder until the listener lands).
import type { Engine, Logger } from '../engine/index.js';
import { ErrorCode, MountdError } from '../errors/index.js';

export interface S3Options {
  host: string;
  port: number;
  credentials: { accessKeyId: string; secretAccessKey: string };
  region: string;
  log: Logger;
  /** Accept SSE-C over plain HTTP on a non-loopback address. */
  allowInsecureSsec?: boolean;
}

export interface S3Server {
  /** "host:port" actually bound (port 0 picks a free one). */
  address: string;
  close(): Promise<void>;
}

export async function startS3Server(_engine: Engine, _opts: S3Options): Promise<S3Server> {
  throw new MountdError(ErrorCode.NotSupported, 'the S3 listener is not built yet');
}
