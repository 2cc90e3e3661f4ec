// Backing directory I/O and name validation. No crypto.
export * from './BackingStore.js';
export * from './names.js';
