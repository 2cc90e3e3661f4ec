// Key rotation: re-wraps the key record of every file under one external key to another, without touching data.

export interface RotateOptions {
  from: string;
  to: string;
  /** Only this bucket (default: every bucket). */
  bucket?: string;
  /** Called about once a second and at the end. */
  onProgress?: (p: RotateProgress) => void;
  /** Stops between files; run the rotation again to resume. */
  signal?: AbortSignal;
}

export interface RotateProgress {
  /** Files whose record now names `to`. */
  rotated: number;
  /** Files under other keys, customer keys, or already rotated by an earlier run. */
  skipped: number;
  /** Files that could not be rotated (their error is in `errors`). */
  failed: number;
  scanned: number;
  elapsedMs: number;
  /** Files rotated per second so far. */
  rate: number;
  done: boolean;
  errors: string[];
}

/** A progress line for logs and mountctl. */
export function formatRotateProgress(p: RotateProgress): string {
  return `${p.done ? 'rotation done' : 'rotating'}: ${p.rotated} rotated, ${p.skipped} skipped, ${p.failed} failed, ${p.scanned} scanned in ${(p.elapsedMs / 1000).toFixed(1)} s (${Math.round(p.rate)} files/s)`;
}
