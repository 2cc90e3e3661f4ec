// Public surface of the key server: names, keystores, master key handling, KES semantics.

export { MAX_KEY_NAME_LENGTH, isValidKeyName, validateKeyName } from './names.js';
export { EK_LENGTH, FsKeystore, MemKeystore } from './keystore.js';
export type { KeyEntry, Keystore } from './keystore.js';
export { AwsKeystore } from './keystore-aws.js';
export type { AwsKeystoreCredentials, AwsKeystoreOptions, AwsKeystoreStatus } from './keystore-aws.js';
export { MASTER_KEY_LENGTH, loadOrCreateMasterKey, parseMasterKey } from './master-key.js';
export {
  CIPHERTEXT_IV_LENGTH,
  CIPHERTEXT_NONCE_LENGTH,
  CIPHERTEXT_OVERHEAD,
  CIPHERTEXT_TAG_LENGTH,
  DEK_LENGTH,
  KeyServer,
} from './KeyServer.js';
export type { GeneratedDek, KeyDescription, KeyServerOptions } from './KeyServer.js';
export { loadAwsKeystoreConfig } from './config.js';
