// A client for the control socket: one request, one response (what mountctl and the tests use).
import * as net from 'node:net';
import * as path from 'node:path';
import { ControlErrorCode, PROTOCOL_VERSION, type ControlErrorBody, type ControlProgress, type ControlResponse } from './protocol.js';

export const CONTROL_SOCKET_NAME = 'control.sock';

/** Where mountd puts its socket by default: DATA/.mountd/control.sock. */
export function defaultSocketPath(dataDir: string): string {
  return path.join(path.resolve(dataDir), '.mountd', CONTROL_SOCKET_NAME);
}

/** A failed control call: the daemon's error code (ENGINE_*, KMS_*, CONTROL_*) and message. */
export class ControlError extends Error {
  readonly code: string;

  constructor(body: ControlErrorBody) {
    super(body.message);
    this.code = body.code;
    this.name = 'ControlError';
  }
}

export async function callControl(
  socketPath: string,
  command: string,
  args: Record<string, unknown> = {},
  timeoutMs = 150_000,
  onProgress?: (p: unknown) => void,
): Promise<unknown> {
  const response = await new Promise<ControlResponse>((resolve, reject) => {
    const conn = net.connect(socketPath);
    let buffered = '';
    const fail = (code: string, message: string) => {
      conn.destroy();
      reject(new ControlError({ code, message }));
    };
    conn.setTimeout(timeoutMs, () => fail(ControlErrorCode.Timeout, `no answer from the daemon within ${timeoutMs / 1000} s`));
    conn.setEncoding('utf8');
    conn.on('connect', () => conn.write(JSON.stringify({ v: PROTOCOL_VERSION, id: 1, command, args }) + '\n'));
    conn.on('data', (chunk: string) => {
      buffered += chunk;
      for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        let msg: ControlResponse | ControlProgress;
        try {
          msg = JSON.parse(line) as ControlResponse | ControlProgress;
        } catch {
          fail(ControlErrorCode.Protocol, 'the daemon sent something that is not JSON');
          return;
        }
        if ('progress' in msg && !('ok' in msg)) {
          onProgress?.(msg.progress);
          continue;
        }
        conn.end();
        resolve(msg as ControlResponse);
        return;
      }
    });
    conn.on('error', (err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
          ? `no daemon is listening on ${socketPath} (is mountd running? use --data DIR or --control PATH)`
          : err.code === 'EACCES' || err.code === 'EPERM'
            ? `permission denied on ${socketPath}: the control socket belongs to the user running mountd`
            : `cannot reach ${socketPath}: ${err.message}`;
      fail(ControlErrorCode.Unreachable, why);
    });
    conn.on('close', () => fail(ControlErrorCode.Protocol, 'the daemon closed the connection without an answer'));
  });
  if (!response.ok) throw new ControlError(response.error);
  return response.result;
}
