// The control socket's wire format: one JSON request per line, one JSON response per line.

/** Bumped when a request or response changes incompatibly; the server refuses other versions. */
export const PROTOCOL_VERSION = 1;

/** Longest request line the server reads; control requests are a few hundred bytes. */
export const MAX_REQUEST_BYTES = 64 * 1024;

export interface ControlRequest {
  v?: number;
  /** Echoed in the response, so a client may pipeline requests. */
  id?: number | string;
  command: string;
  args?: Record<string, unknown>;
}

export interface ControlErrorBody {
  /** A stable code from errors/ (ENGINE_*, KMS_*) or one of the CONTROL_* codes below. */
  code: string;
  message: string;
}

/** An interim line a long command (key.rotate) sends before its response; no `ok` field. */
export interface ControlProgress {
  v: number;
  id?: number | string;
  progress: unknown;
}

export type ControlResponse =
  | { v: number; id?: number | string; ok: true; result: unknown }
  | { v: number; id?: number | string; ok: false; error: ControlErrorBody };

/** Codes of the control layer itself (engine and key server errors keep their own codes). */
export const ControlErrorCode = {
  BadRequest: 'CONTROL_BAD_REQUEST',
  UnknownCommand: 'CONTROL_UNKNOWN_COMMAND',
  Timeout: 'CONTROL_TIMEOUT',
  /** Client side: nothing listens at the socket path, or it may not be used. */
  Unreachable: 'CONTROL_UNREACHABLE',
  /** Client side: the connection closed or sent something that is not a response. */
  Protocol: 'CONTROL_PROTOCOL',
} as const;
