// The daemon's control socket (placeholder until mountctl lands).
import type { Logger } from '../engine/index.js';
import type { DaemonContext } from './types.js';

export type { DaemonContext } from './types.js';

export interface ControlServer {
  socketPath: string;
  close(): Promise<void>;
}

export async function startControlServer(_ctx: DaemonContext, socketPath: string, _log: Logger): Promise<ControlServer> {
  return { socketPath, async close() {} };
}
