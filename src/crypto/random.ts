// Injectable randomness, so that tests can make the format's random fields deterministic.
import { randomBytes as nodeRandomBytes } from 'node:crypto';

export type RandomSource = (length: number) => Uint8Array;

export const systemRandom: RandomSource = (length) => nodeRandomBytes(length);
