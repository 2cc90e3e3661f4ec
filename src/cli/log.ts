// A line-per-event logger on stderr. Callers never pass key material or plaintext.
import type { Logger } from '../engine/index.js';

export function createLogger(name: string, quiet = false): Logger {
  const line = (level: string, msg: string) => {
    if (quiet && level === 'info') return;
    process.stderr.write(`${new Date().toISOString()} ${name} ${level} ${msg}\n`);
  };
  return { info: (m) => line('info', m), warn: (m) => line('warn', m), error: (m) => line('error', m) };
}
