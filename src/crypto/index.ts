// Pure, synchronous cryptography: AEAD, key derivation, object key sealing. No I/O, no logging.
export * from './aead.js';
export * from './kdf.js';
export * from './seal.js';
export * from './random.js';
