// KES error bodies: `{"message": "..."}` with the status codes and messages KES uses, plus the
// one status our disable/enable extension adds. Shared by kesd and by our KES client.

import { ErrorCode, MountdError } from '../../errors/index.js';

/** Messages as KES sends them (key names are never echoed, so a message leaks nothing). */
export const KesMessage = {
  KeyNotFound: 'key does not exist',
  KeyExists: 'key already exists',
  NotAuthorized: 'not authorized: insufficient permissions',
  NoCertificate: 'not authorized: no client certificate',
  UntrustedCertificate: 'not authorized: client certificate is not trusted',
  NotAuthentic: 'decryption failed: ciphertext is not authentic',
  KeystoreFailure: 'keystore failure',
  Timeout: 'request timed out',
  BodyTooLarge: 'request body too large',
  NotFound: 'not found',
  Internal: 'internal server error',
  /** Our extension: KES has no disabled state. */
  KeyDisabled: 'key is disabled',
} as const;

/**
 * How kesd reports a disabled key: 409 Conflict (the request is valid but the key's state
 * refuses it), message "key is disabled". Distinct from 403 (who you are) and from 400
 * (what you sent), so a client can tell the three apart without parsing prose.
 */
export const KEY_DISABLED_STATUS = 409;

/** An error a handler raises to answer with a given status and message. */
export class HttpError extends Error {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;

  constructor(status: number, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.status = status;
    this.headers = headers;
    this.name = 'HttpError';
  }
}

export interface MappedError {
  status: number;
  message: string;
  headers?: Readonly<Record<string, string>>;
  /** For the server's error log only (may name files); never sent to the client. */
  detail?: string;
}

/** Maps anything a handler threw onto a KES status and message. */
export function toHttpError(err: unknown): MappedError {
  if (err instanceof HttpError) return { status: err.status, message: err.message, headers: err.headers };
  if (err instanceof MountdError) {
    switch (err.code) {
      case ErrorCode.KeyNotFound:
        return { status: 404, message: KesMessage.KeyNotFound };
      case ErrorCode.KeyExists:
        return { status: 400, message: KesMessage.KeyExists };
      case ErrorCode.KeyDisabled:
        return { status: KEY_DISABLED_STATUS, message: KesMessage.KeyDisabled };
      case ErrorCode.NotAuthentic:
        return { status: 400, message: KesMessage.NotAuthentic };
      case ErrorCode.InvalidKeyName:
        return { status: 400, message: err.message };
      case ErrorCode.InvalidArgument:
        return { status: 400, message: err.message };
      case ErrorCode.KeyAccessDenied:
        return { status: 403, message: KesMessage.NotAuthorized };
      case ErrorCode.KeyServerUnavailable:
      case ErrorCode.Integrity:
      case ErrorCode.UnsupportedFormat:
        return { status: 502, message: KesMessage.KeystoreFailure, detail: describe(err) };
      default:
        return { status: 500, message: KesMessage.Internal, detail: describe(err) };
    }
  }
  return { status: 500, message: KesMessage.Internal, detail: describe(err) };
}

/** The JSON error body KES sends. */
export function errorBody(message: string): Buffer {
  return Buffer.from(`${JSON.stringify({ message })}\n`, 'utf8');
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as { cause?: unknown }).cause;
  return cause instanceof Error ? `${err.message}: ${cause.message}` : err.message;
}
