// Key name rules of KES, so that names we accept are names a real KES server accepts too.

import { ErrorCode, MountdError } from '../errors/index.js';

export const MAX_KEY_NAME_LENGTH = 80;

// ASCII only: a Unicode letter class would admit look-alike names and names KES rejects.
const KEY_NAME = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,78}[A-Za-z0-9_])?$/;

export function isValidKeyName(name: string): boolean {
  return KEY_NAME.test(name);
}

/** Throws InvalidKeyName unless `name` is 1..80 of [A-Za-z0-9_-] with no leading or trailing `-`. */
export function validateKeyName(name: string): void {
  if (typeof name !== 'string' || !isValidKeyName(name)) {
    // The name comes from a client; quoting it with JSON.stringify keeps control characters
    // and very long input from making the message misleading.
    const shown = typeof name === 'string' ? JSON.stringify(name.slice(0, 100)) : typeof name;
    throw new MountdError(
      ErrorCode.InvalidKeyName,
      `invalid key name ${shown}: use 1 to ${MAX_KEY_NAME_LENGTH} letters, digits, '-' or '_', not starting or ending with '-'`,
    );
  }
}
