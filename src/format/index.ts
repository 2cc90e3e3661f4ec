// On-disk layout of data files and key records, and the offset arithmetic. Pure.
export * from './layout.js';
export * from './record.js';
