// The mount's pure parts, without a mount: the pinned ops table, errno mapping, path parsing, options, the handle table.
import test from 'ava';
import { constants } from 'node:os';
import { ErrorCode, MountdError } from '../src/errors/index.js';
import { ENOKEY, FUSE_OPERATION_NAMES, mountOptionString, parseMountPath, toErrno } from '../src/fuse/index.js';
import { OpenHandleTable } from '../src/fuse/OpenHandleTable.js';
import { makeOperations } from '../src/fuse/operations.js';
import { isHiddenName } from '../src/fuse/paths.js';
import type { Engine, Logger, Stat } from '../src/engine/index.js';

const E = constants.errno;

function recorder(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, info: (m) => lines.push(`info ${m}`), warn: (m) => lines.push(`warn ${m}`), error: (m) => lines.push(`error ${m}`) };
}

test('the FUSE operations table is pinned: adding or dropping an operation is deliberate', (t) => {
  t.deepEqual(
    [...FUSE_OPERATION_NAMES],
    ['getattr', 'readdir', 'statfs', 'mkdir', 'rmdir', 'create', 'open', 'read', 'write', 'flush', 'fsync', 'release', 'truncate', 'ftruncate', 'unlink', 'rename', 'link', 'symlink', 'readlink', 'chmod', 'chown', 'utimens', 'setxattr', 'getxattr', 'listxattr', 'removexattr', 'fallocate'],
  );
});

test('the operations handed to fuse-native are exactly the pinned table', (t) => {
  const ops = makeOperations({ engine: {} as Engine, handles: new OpenHandleTable(), log: recorder() });
  t.deepEqual(Object.keys(ops).sort(), [...FUSE_OPERATION_NAMES].sort());
});

test('every engine code maps to an errno; integrity is EIO with the detail logged; key trouble is ENOKEY', (t) => {
  const expected: Record<string, number> = {
    [ErrorCode.NotFound]: E.ENOENT,
    [ErrorCode.Exists]: E.EEXIST,
    [ErrorCode.NotEmpty]: E.ENOTEMPTY,
    [ErrorCode.NotDirectory]: E.ENOTDIR,
    [ErrorCode.IsDirectory]: E.EISDIR,
    [ErrorCode.NameConflict]: E.ENOTDIR,
    [ErrorCode.InvalidName]: E.EINVAL,
    [ErrorCode.InvalidArgument]: E.EINVAL,
    [ErrorCode.Integrity]: E.EIO,
    [ErrorCode.UnsupportedFormat]: E.EIO,
    [ErrorCode.MetadataTooLarge]: E.E2BIG,
    [ErrorCode.PreconditionFailed]: E.EEXIST,
    [ErrorCode.BadHandle]: E.EBADF,
    [ErrorCode.NoSpace]: E.ENOSPC,
    [ErrorCode.Busy]: E.EBUSY,
    [ErrorCode.NotSupported]: E.ENOTSUP,
    [ErrorCode.PermissionDenied]: E.EACCES,
    [ErrorCode.CustomerKeyRequired]: 126,
    [ErrorCode.CustomerKeyMismatch]: 126,
    [ErrorCode.Internal]: E.EIO,
    [ErrorCode.KeyNotFound]: 126,
    [ErrorCode.KeyExists]: E.EEXIST,
    [ErrorCode.KeyDisabled]: 126,
    [ErrorCode.NotAuthentic]: E.EIO,
    [ErrorCode.KeyServerUnavailable]: E.EIO,
    [ErrorCode.KeyAccessDenied]: E.EACCES,
    [ErrorCode.InvalidKeyName]: E.EINVAL,
  };
  t.deepEqual(Object.keys(expected).sort(), Object.values(ErrorCode).sort(), 'the table covers every code');
  const log = recorder();
  for (const [code, n] of Object.entries(expected)) {
    t.is(toErrno(new MountdError(code as ErrorCode, `boom ${code}`), 'read', '/b/k', log), -n, code);
  }
  t.is(ENOKEY, 126);
  t.true(log.lines.some((l) => l.startsWith('error read /b/k: ENGINE_INTEGRITY: boom')), 'an integrity failure is logged in full');
  t.false(log.lines.some((l) => l.includes('ENGINE_NOT_FOUND')), 'ENOENT is not worth a log line');
});

test('errors that are not ours: a system errno passes through, anything else is EIO and logged', (t) => {
  const log = recorder();
  t.is(toErrno(Object.assign(new Error('x'), { code: 'EROFS' }), 'write', '/b/k', log), -E.EROFS);
  t.is(toErrno(new TypeError('a bug'), 'write', '/b/k', log), -E.EIO);
  t.true(log.lines.some((l) => l.includes('TypeError: a bug')));
});

test('mount paths: root, bucket, object key', (t) => {
  t.deepEqual(parseMountPath('/'), { kind: 'root' });
  t.deepEqual(parseMountPath('/photos'), { kind: 'bucket', bucket: 'photos' });
  t.deepEqual(parseMountPath('/photos/2024/a b.jpg'), { kind: 'object', bucket: 'photos', key: '2024/a b.jpg' });
  t.true(isHiddenName('/b/d/.fuse_hidden0000000a00000001'));
  t.false(isHiddenName('/b/d/.fuse_hidden'));
  t.false(isHiddenName('/b/d/x.fuse_hidden0000000a00000001'));
});

test('mount options: big writes of 128 KiB and direct_io, riding on fsname', (t) => {
  t.is(mountOptionString(true), 'mountd,big_writes,max_write=131072,direct_io');
  t.is(mountOptionString(false), 'mountd,big_writes,max_write=131072');
});

test('the open-handle table follows renames and hides unlinked files until their last handle', (t) => {
  const table = new OpenHandleTable();
  table.add(1, '/b/d/f', false);
  table.add(2, '/b/d/f', true);
  table.add(3, '/b/dd/g', false);
  table.renamed('/b/d', '/b/e');
  t.deepEqual(table.at('/b/e/f').map((h) => h.fh), [1, 2]);
  t.is(table.get(3)!.path, '/b/dd/g', 'a sibling with a common prefix does not move');
  const stat = { type: 'file', size: 3 } as Stat;
  table.hide('/b/e/f', '/b/e/.fuse_hidden0000000200000001', stat);
  t.is(table.hiddenStat('/b/e/.fuse_hidden0000000200000001'), stat);
  table.remove(1);
  t.truthy(table.hiddenStat('/b/e/.fuse_hidden0000000200000001'));
  table.remove(2);
  t.is(table.hiddenStat('/b/e/.fuse_hidden0000000200000001'), undefined);
  t.is(table.size, 1);
});
