// Who may call which API path: named policies of allow/deny path globs, identities assigned
// to policies, deny wins, and one admin identity that bypasses policies (KES semantics).

import { ErrorCode, MountdError } from '../errors/index.js';
import { isIdentity } from './identity.js';

export interface PolicyDefinition {
  /** Path globs, e.g. "/v1/key/generate/my-key*". */
  allow?: readonly string[];
  deny?: readonly string[];
  /** Identities (hex SHA-256 of the client's public key info) this policy applies to. */
  identities?: readonly string[];
}

export interface PolicySetOptions {
  /** The identity that may call every API; omit to have none. */
  admin?: string;
  policies?: Readonly<Record<string, PolicyDefinition>>;
}

export type Decision =
  | { allowed: true; reason: 'admin' }
  | { allowed: true; reason: 'allow'; policy: string }
  | { allowed: false; reason: 'deny' | 'no-match'; policy: string }
  | { allowed: false; reason: 'unknown-identity' };

interface CompiledPolicy {
  name: string;
  allow: RegExp[];
  deny: RegExp[];
}

const POLICY_NAME = /^[A-Za-z0-9_-]{1,80}$/;

/**
 * Matches like Go's path.Match, which KES uses: `*` is any run of characters other than `/`,
 * `?` one such character; everything else is literal. Character classes (`[...]`) and
 * escapes are refused when the policy is loaded rather than half supported.
 */
export function compileGlob(pattern: string): RegExp {
  if (typeof pattern !== 'string' || !pattern.startsWith('/')) {
    throw new MountdError(ErrorCode.InvalidArgument, `policy path ${JSON.stringify(pattern)} must start with '/'`);
  }
  if (/[[\]\\]/.test(pattern)) {
    throw new MountdError(ErrorCode.InvalidArgument, `policy path ${JSON.stringify(pattern)}: only '*' and '?' wildcards are supported`);
  }
  let re = '^';
  for (const ch of pattern) {
    if (ch === '*') re += '[^/]*';
    else if (ch === '?') re += '[^/]';
    else re += ch.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(`${re}$`);
}

export function matchGlob(pattern: string, path: string): boolean {
  return compileGlob(pattern).test(path);
}

export class PolicySet {
  readonly admin: string | undefined;
  readonly #byIdentity = new Map<string, CompiledPolicy>();
  readonly #policies: string[] = [];

  constructor(options: PolicySetOptions = {}) {
    if (options.admin !== undefined && !isIdentity(options.admin)) {
      throw new MountdError(ErrorCode.InvalidArgument, 'admin identity must be 64 lowercase hex characters');
    }
    this.admin = options.admin;
    for (const [name, def] of Object.entries(options.policies ?? {})) {
      if (!POLICY_NAME.test(name)) {
        throw new MountdError(ErrorCode.InvalidArgument, `policy name ${JSON.stringify(name)}: use 1 to 80 letters, digits, '-' or '_'`);
      }
      const compiled: CompiledPolicy = {
        name,
        allow: globs(name, 'allow', def.allow),
        deny: globs(name, 'deny', def.deny),
      };
      this.#policies.push(name);
      for (const id of def.identities ?? []) {
        if (!isIdentity(id)) {
          throw new MountdError(ErrorCode.InvalidArgument, `policy ${name}: identity ${JSON.stringify(id)} must be 64 lowercase hex characters`);
        }
        if (id === this.admin) {
          throw new MountdError(ErrorCode.InvalidArgument, `policy ${name}: identity ${id} is the admin identity, which needs no policy`);
        }
        const other = this.#byIdentity.get(id);
        if (other) {
          throw new MountdError(ErrorCode.InvalidArgument, `identity ${id} is assigned to both policy ${other.name} and policy ${name}; an identity has one policy`);
        }
        this.#byIdentity.set(id, compiled);
      }
    }
  }

  get policyNames(): readonly string[] {
    return this.#policies;
  }

  /** The policy assigned to `identity`, if any. */
  policyOf(identity: string): string | undefined {
    return this.#byIdentity.get(identity)?.name;
  }

  /** May `identity` call `path` (the request path, without query)? Deny wins over allow. */
  authorize(identity: string | undefined, path: string): Decision {
    if (identity === undefined) return { allowed: false, reason: 'unknown-identity' };
    if (this.admin !== undefined && identity === this.admin) return { allowed: true, reason: 'admin' };
    const policy = this.#byIdentity.get(identity);
    if (!policy) return { allowed: false, reason: 'unknown-identity' };
    if (policy.deny.some((re) => re.test(path))) return { allowed: false, reason: 'deny', policy: policy.name };
    if (policy.allow.some((re) => re.test(path))) return { allowed: true, reason: 'allow', policy: policy.name };
    return { allowed: false, reason: 'no-match', policy: policy.name };
  }
}

function globs(policy: string, kind: string, patterns: readonly string[] | undefined): RegExp[] {
  if (patterns === undefined) return [];
  if (!Array.isArray(patterns)) throw new MountdError(ErrorCode.InvalidArgument, `policy ${policy}: ${kind} must be a list of paths`);
  return patterns.map((p) => {
    try {
      return compileGlob(p);
    } catch (err) {
      throw new MountdError(ErrorCode.InvalidArgument, `policy ${policy}, ${kind}: ${(err as Error).message}`);
    }
  });
}
