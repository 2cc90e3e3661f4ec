// KeyService over a KeyServer in the same process: the embedded default, no network hop.

import type { KeyServer } from '../kes/index.js';
import type { GeneratedKey, KeyInfo, KeyService, KeyServiceStatus } from './KeyService.js';

export interface InProcessKeyServiceOptions {
  /** Recorded as `createdBy` on keys this service creates (default "mountd"). */
  identity?: string;
}

export class InProcessKeyService implements KeyService {
  readonly #server: KeyServer;
  readonly #identity: string;

  constructor(server: KeyServer, options: InProcessKeyServiceOptions = {}) {
    this.#server = server;
    this.#identity = options.identity ?? 'mountd';
  }

  createKey(name: string): Promise<void> {
    return this.#server.createKey(name, this.#identity);
  }

  deleteKey(name: string): Promise<void> {
    return this.#server.deleteKey(name);
  }

  describeKey(name: string): Promise<KeyInfo> {
    return this.#server.describeKey(name);
  }

  listKeys(prefix = ''): Promise<KeyInfo[]> {
    return this.#server.listKeys(prefix);
  }

  generate(name: string, context: Uint8Array): Promise<GeneratedKey> {
    return this.#server.generate(name, context);
  }

  encrypt(name: string, plaintext: Uint8Array, context: Uint8Array): Promise<Uint8Array> {
    return this.#server.encrypt(name, plaintext, context);
  }

  decrypt(name: string, ciphertext: Uint8Array, context: Uint8Array): Promise<Uint8Array> {
    return this.#server.decrypt(name, ciphertext, context);
  }

  disableKey(name: string): Promise<void> {
    return this.#server.disableKey(name);
  }

  enableKey(name: string): Promise<void> {
    return this.#server.enableKey(name);
  }

  async status(): Promise<KeyServiceStatus> {
    return { kind: 'embedded', endpoint: 'in-process', reachable: true };
  }
}
