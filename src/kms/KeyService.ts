// The interface the engine uses to reach a key server (in-process kes/, or a remote KES over HTTPS).

export interface KeyInfo {
  name: string;
  /** e.g. "AES256" as KES reports it. */
  algorithm: string;
  createdAt: string;
  createdBy: string;
  /** Our extension to KES: a disabled key refuses generate/encrypt/decrypt. */
  enabled: boolean;
}

export interface GeneratedKey {
  /** 32 random bytes. Lives only in memory. */
  plaintext: Uint8Array;
  /** The key server's ciphertext of `plaintext` under the named key, bound to the context. */
  ciphertext: Uint8Array;
}

export interface KeyServiceStatus {
  kind: 'embedded' | 'remote';
  endpoint: string;
  reachable: boolean;
  lastError?: string;
}

/**
 * Errors are MountdError with codes KeyNotFound, KeyExists, KeyDisabled, NotAuthentic,
 * KeyServerUnavailable, KeyAccessDenied, InvalidKeyName.
 *
 * `context` is the associated data the key server binds a ciphertext to; decrypt must present
 * the exact same bytes.
 */
export interface KeyService {
  createKey(name: string): Promise<void>;
  deleteKey(name: string): Promise<void>;
  describeKey(name: string): Promise<KeyInfo>;
  /** Names starting with `prefix` (empty: all), sorted. */
  listKeys(prefix?: string): Promise<KeyInfo[]>;
  generate(name: string, context: Uint8Array): Promise<GeneratedKey>;
  encrypt(name: string, plaintext: Uint8Array, context: Uint8Array): Promise<Uint8Array>;
  decrypt(name: string, ciphertext: Uint8Array, context: Uint8Array): Promise<Uint8Array>;
  disableKey(name: string): Promise<void>;
  enableKey(name: string): Promise<void>;
  status(): Promise<KeyServiceStatus>;
}
