// Public surface of the key service layer: the interface the engine uses and its implementations.

export type { GeneratedKey, KeyInfo, KeyService, KeyServiceStatus } from './KeyService.js';
export { InProcessKeyService } from './InProcessKeyService.js';
export type { InProcessKeyServiceOptions } from './InProcessKeyService.js';
export { CachingKeyService } from './CachingKeyService.js';
export type { CachingKeyServiceOptions, CachingKeyServiceStats } from './CachingKeyService.js';
