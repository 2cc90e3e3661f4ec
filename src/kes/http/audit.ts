// The audit log: one JSON line per key operation (who, which route and key, allowed or not,
// the status). It never contains request or response bodies, so no key material or plaintext.

import { createWriteStream } from 'node:fs';
import type { WriteStream } from 'node:fs';

export interface AuditEvent {
  /** ISO 8601 time the request arrived. */
  time: string;
  /** hex SHA-256 of the client's public key info; null without a client certificate. */
  identity: string | null;
  ip: string | null;
  method: string;
  /** The route's path in the route table, e.g. "/v1/key/generate/". */
  route: string;
  /** The key name (or the list prefix) from the request path; null for routes without one. */
  key: string | null;
  /** Whether the identity was allowed to call this path (false: refused before the handler ran). */
  allowed: boolean;
  status: number;
  duration_ms: number;
  /** The KES error message sent to the client, for statuses >= 400. */
  error?: string;
}

export interface AuditSink {
  write(event: AuditEvent): void;
  close(): Promise<void>;
}

export type AuditTarget = { kind: 'off' } | { kind: 'stderr' } | { kind: 'file'; path: string } | { kind: 'callback'; fn: (line: string) => void };

/** A sink writing one compact JSON line per event; file sinks append and create the file 0600. */
export function createAuditSink(target: AuditTarget): AuditSink {
  switch (target.kind) {
    case 'off':
      return { write: () => undefined, close: async () => undefined };
    case 'stderr':
      return { write: (e) => void process.stderr.write(line(e)), close: async () => undefined };
    case 'callback':
      return { write: (e) => target.fn(line(e)), close: async () => undefined };
    case 'file': {
      const stream: WriteStream = createWriteStream(target.path, { flags: 'a', mode: 0o600 });
      let failed: Error | undefined;
      stream.on('error', (err) => {
        // Reported once on stderr; the server keeps serving (KES does the same).
        if (!failed) process.stderr.write(`kesd: audit log ${target.path}: ${err.message}\n`);
        failed = err;
      });
      return {
        write: (e) => {
          if (!failed) stream.write(line(e));
        },
        close: () => new Promise<void>((resolve) => stream.end(() => resolve())),
      };
    }
  }
}

function line(e: AuditEvent): string {
  // Fixed field order, so lines are easy to read and to grep.
  const out: AuditEvent = {
    time: e.time,
    identity: e.identity,
    ip: e.ip,
    method: e.method,
    route: e.route,
    key: e.key,
    allowed: e.allowed,
    status: e.status,
    duration_ms: e.duration_ms,
  };
  if (e.error !== undefined) out.error = e.error;
  return `${JSON.stringify(out)}\n`;
}
