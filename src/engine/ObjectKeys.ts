// Creates, unseals and re-seals the per-file key record through the key server; tracks disabled keys.
import { createHash } from 'node:crypto';
import { Domain, customerSecret, sealObjectKey, unsealObjectKey, type RandomSource } from '../crypto/index.js';
import { ErrorCode, MountdError, isMountdError } from '../errors/index.js';
import { KeyKind, RECORD_ALGORITHM_V1, RECORD_VERSION, dekContext, sealAad, type KeyRecord } from '../format/index.js';
import type { KeyService } from '../kms/KeyService.js';

/** Which key protects a new object. */
export type EncryptionSpec =
  | { kind: 'default' }
  | { kind: 'named'; keyName: string }
  | { kind: 'customer'; customerKey: Uint8Array };

export interface Unsealed {
  oek: Buffer;
  record: KeyRecord;
}

export function objectPath(bucket: string, key: string): string {
  return `${bucket}/${key}`;
}

/** MD5 of the customer key, as S3 echoes it (base64). */
export function customerKeyMd5(customerKey: Uint8Array): string {
  return createHash('md5').update(customerKey).digest('base64');
}

export class ObjectKeys {
  /** Keys locked through this daemon: checked synchronously on every read and write. */
  private readonly locked = new Set<string>();

  constructor(
    private readonly keys: KeyService,
    private readonly random: RandomSource,
    public defaultKeyName: string,
  ) {}

  isLocked(keyName: string): boolean {
    return this.locked.has(keyName);
  }

  lock(keyName: string): void {
    this.locked.add(keyName);
  }

  unlock(keyName: string): void {
    this.locked.delete(keyName);
  }

  assertUsable(record: KeyRecord): void {
    if (record.kind !== KeyKind.Customer && this.locked.has(record.keyName)) {
      throw new MountdError(ErrorCode.KeyDisabled, `key ${record.keyName} is disabled`);
    }
  }

  async create(bucket: string, key: string, spec: EncryptionSpec): Promise<Unsealed> {
    const oek = Buffer.from(this.random(32));
    const record = await this.sealFor(bucket, key, oek, spec, undefined);
    return { oek, record };
  }

  /** Recovers the OEK; the record must have been sealed for exactly this bucket/key. */
  async unseal(record: KeyRecord, bucket: string, key: string, customerKey?: Uint8Array): Promise<Buffer> {
    this.assertUsable(record);
    const path = objectPath(bucket, key);
    const aad = sealAad(record);
    if (record.kind === KeyKind.Customer) {
      if (!customerKey) throw new MountdError(ErrorCode.CustomerKeyRequired, 'object is encrypted with a customer-provided key');
      const secret = customerSecret(customerKey);
      try {
        return unsealObjectKey(record.sealedKey, { secret, iv: record.iv, domain: Domain.Customer, path, aad });
      } catch (err) {
        if (isMountdError(err, ErrorCode.Integrity)) {
          throw new MountdError(ErrorCode.CustomerKeyMismatch, 'the customer-provided key does not match the object');
        }
        throw err;
      } finally {
        secret.fill(0);
      }
    }
    if (!record.context.equals(dekContext(bucket, key))) {
      throw new MountdError(ErrorCode.Integrity, `key record of ${path} is bound to another path`);
    }
    const dek = Buffer.from(await this.keys.decrypt(record.keyName, record.dekCiphertext, record.context));
    this.assertUsable(record);
    try {
      return unsealObjectKey(record.sealedKey, { secret: dek, iv: record.iv, domain: Domain.KeyServer, path, aad });
    } finally {
      dek.fill(0);
    }
  }

  /**
   * A record for the same OEK at a new path: the DEK is re-bound to the new context and the OEK
   * sealed under a KEK for the new path with a fresh IV. Data is not touched.
   */
  async reseal(record: KeyRecord, from: { bucket: string; key: string }, to: { bucket: string; key: string }): Promise<KeyRecord> {
    if (record.kind === KeyKind.Customer) {
      throw new MountdError(ErrorCode.CustomerKeyRequired, 'an object encrypted with a customer-provided key cannot be renamed without that key');
    }
    const oek = await this.unseal(record, from.bucket, from.key);
    try {
      const dek = Buffer.from(await this.keys.decrypt(record.keyName, record.dekCiphertext, record.context));
      try {
        const context = dekContext(to.bucket, to.key);
        const dekCiphertext = Buffer.from(await this.keys.encrypt(record.keyName, dek, context));
        return this.sealRecord(oek, record.kind, record.keyName, dekCiphertext, context, dek, Domain.KeyServer, objectPath(to.bucket, to.key));
      } finally {
        dek.fill(0);
      }
    } finally {
      oek.fill(0);
    }
  }

  /** Re-wraps the DEK under another external key (rotation): data and OEK stay. */
  async rewrap(record: KeyRecord, bucket: string, key: string, newKeyName: string): Promise<KeyRecord> {
    const oek = await this.unseal(record, bucket, key);
    try {
      return await this.sealFor(bucket, key, oek, { kind: 'named', keyName: newKeyName }, record.kind);
    } finally {
      oek.fill(0);
    }
  }

  private async sealFor(bucket: string, key: string, oek: Buffer, spec: EncryptionSpec, keepKind: KeyKind | undefined): Promise<KeyRecord> {
    const path = objectPath(bucket, key);
    if (spec.kind === 'customer') {
      if (spec.customerKey.length !== 32) throw new MountdError(ErrorCode.InvalidArgument, 'customer key must be 32 bytes');
      const secret = customerSecret(spec.customerKey);
      try {
        return this.sealRecord(oek, KeyKind.Customer, '', Buffer.alloc(0), Buffer.alloc(0), secret, Domain.Customer, path);
      } finally {
        secret.fill(0);
      }
    }
    const keyName = spec.kind === 'named' ? spec.keyName : this.defaultKeyName;
    if (this.locked.has(keyName)) throw new MountdError(ErrorCode.KeyDisabled, `key ${keyName} is disabled`);
    const context = dekContext(bucket, key);
    const generated = await this.keys.generate(keyName, context);
    const dek = Buffer.from(generated.plaintext);
    try {
      const kind = keepKind ?? (spec.kind === 'named' ? KeyKind.Named : KeyKind.Default);
      return this.sealRecord(oek, kind, keyName, Buffer.from(generated.ciphertext), context, dek, Domain.KeyServer, path);
    } finally {
      dek.fill(0);
      generated.plaintext.fill?.(0);
    }
  }

  private sealRecord(
    oek: Buffer,
    kind: KeyKind,
    keyName: string,
    dekCiphertext: Buffer,
    context: Buffer,
    secret: Buffer,
    domain: string,
    path: string,
  ): KeyRecord {
    const base = { version: RECORD_VERSION, algorithm: RECORD_ALGORITHM_V1, kind, keyName, dekCiphertext, context, iv: Buffer.from(this.random(32)) };
    const sealedKey = sealObjectKey(oek, this.random(12), { secret, iv: base.iv, domain, path, aad: sealAad(base) });
    return { ...base, sealedKey };
  }
}
