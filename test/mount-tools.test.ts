// The mount with ordinary tools on a real FUSE mount: cp, tar, rsync, git, sqlite3, editors, dd, mmap, xattrs.
import anyTest, { type TestFn } from 'ava';
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { HAS_FUSE, run, sh, sha256, startFdHolder, startMount, type MountFixture, reportMissingFuse } from './helpers/mount.js';

const test = anyTest as TestFn<{ fx: MountFixture; src: string }>;
const fuseTest = HAS_FUSE ? test : test.skip;

reportMissingFuse(test, 'mount-tools.test.ts', 'mount tests');

/** A source tree with the shapes that break file systems: package boundaries, empty files, modes, links, odd names. */
async function makeTree(dir: string): Promise<void> {
  await fsp.mkdir(path.join(dir, 'a/b/c'), { recursive: true });
  await fsp.mkdir(path.join(dir, 'private'), { mode: 0o700 });
  await fsp.chmod(path.join(dir, 'private'), 0o700);
  await fsp.writeFile(path.join(dir, 'a/b/c/deep.txt'), 'deep\n');
  await fsp.writeFile(path.join(dir, 'empty'), '');
  for (const size of [1, 4095, 65535, 65536, 65537, 131072 + 17, 300_000]) {
    await fsp.writeFile(path.join(dir, 'a', `rand-${size}.bin`), randomBytes(size));
  }
  await fsp.writeFile(path.join(dir, 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  await fsp.writeFile(path.join(dir, 'private/secret'), 'x', { mode: 0o600 });
  await fsp.writeFile(path.join(dir, 'ünï cödé name.txt'), 'unicode\n');
  await fsp.symlink('a/b/c/deep.txt', path.join(dir, 'link'));
  await fsp.symlink('does/not/exist', path.join(dir, 'dangling'));
}

/** Type, mode, name and link target of everything below `dir` (sizes are compared by diff). */
async function listing(dir: string): Promise<string> {
  return sh(`cd ${JSON.stringify(dir)} && find . -mindepth 1 -printf '%y %m %p %l\\n' | sort`);
}

test.before(async (t) => {
  if (!HAS_FUSE) return;
  const fx = await startMount('tools');
  const src = path.join(fx.root, 'src');
  await makeTree(src);
  t.context = { fx, src };
});

test.after.always(async (t) => {
  if (t.context.fx) await t.context.fx.cleanup();
});

async function bucket(t: { context: { fx: MountFixture } }, name: string): Promise<string> {
  const dir = path.join(t.context.fx.mnt, name);
  await sh(`mkdir ${dir}`);
  return dir;
}

fuseTest('cp -a of a tree, then diff -r against the source', async (t) => {
  const b = await bucket(t, 'cp-tree');
  await sh(`cp -a ${t.context.src} ${b}/tree`);
  await sh(`diff -r --no-dereference ${t.context.src} ${b}/tree`);
  t.is(await listing(`${b}/tree`), await listing(t.context.src));
  // Read back through a second copy off the mount.
  await sh(`cp -a ${b}/tree ${t.context.fx.root}/back && diff -r --no-dereference ${t.context.src} ${t.context.fx.root}/back`);
});

fuseTest('tar c onto the mount and x from it', async (t) => {
  const b = await bucket(t, 'tar-test');
  await sh(`tar cf ${b}/tree.tar -C ${t.context.src} . && mkdir ${b}/x && tar xf ${b}/tree.tar -C ${b}/x`);
  await sh(`diff -r --no-dereference ${t.context.src} ${b}/x`);
  t.is(await listing(`${b}/x`), await listing(t.context.src));
  // And a tar of the mount, unpacked elsewhere.
  await sh(`mkdir ${t.context.fx.root}/untar && tar cf - -C ${b}/x . | tar xf - -C ${t.context.fx.root}/untar && diff -r --no-dereference ${t.context.src} ${t.context.fx.root}/untar`);
});

fuseTest('rsync -a (temp file, then rename) onto the mount, twice', async (t) => {
  const b = await bucket(t, 'rsync-test');
  await sh(`rsync -a ${t.context.src}/ ${b}/r/`);
  await sh(`diff -r --no-dereference ${t.context.src} ${b}/r`);
  t.is(await listing(`${b}/r`), await listing(t.context.src));
  // A changed copy of the source: rsync rewrites the changed file through a temp name.
  const src2 = path.join(t.context.fx.root, 'src-rsync2');
  await sh(`cp -a ${t.context.src} ${src2} && echo changed >> ${src2}/a/b/c/deep.txt && rm ${src2}/empty`);
  const r = await run('rsync', ['-a', '--delete', '--itemize-changes', `${src2}/`, `${b}/r/`]);
  t.is(r.code, 0, r.stderr);
  await sh(`diff -r --no-dereference ${src2} ${b}/r`);
  t.is((await sh(`ls -A ${b}/r/a/b/c`)).trim(), 'deep.txt', 'no rsync temp file left');
});

fuseTest('git init, add, commit on the mount; clone from it and back onto it', async (t) => {
  const b = await bucket(t, 'git-test');
  const env = { GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@example.com', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@example.com', GIT_CONFIG_NOSYSTEM: '1', HOME: t.context.fx.root };
  await sh(`git init -q repo && cp -a ${t.context.src}/. repo/ && cd repo && git add -A && git commit -qm first && echo more >> run.sh && git commit -qam second`, { cwd: b, env });
  const log = await sh('git log --oneline', { cwd: `${b}/repo`, env });
  t.is(log.trim().split('\n').length, 2);
  await sh('git fsck --strict', { cwd: `${b}/repo`, env });
  const outside = path.join(t.context.fx.root, 'clone-out');
  await sh(`git clone -q ${b}/repo ${outside} && git -C ${outside} fsck --strict`, { env });
  await sh(`git clone -q ${outside} ${b}/back && git -C ${b}/back fsck --strict && git -C ${b}/back status --porcelain`, { env });
  await sh(`diff -r --no-dereference --exclude=.git ${outside} ${b}/back`);
  t.is((await sh('git status --porcelain', { cwd: `${b}/repo`, env })).trim(), '', 'the index matches the work tree on the mount');
});

fuseTest('sqlite3: thousands of rows in transactions, then PRAGMA integrity_check', async (t) => {
  const b = await bucket(t, 'sqlite-test');
  const db = path.join(b, 'test.db');
  await sh(`sqlite3 ${db} 'create table t (id integer primary key, body text); create index tb on t(body);'`);
  for (let round = 0; round < 4; round++) {
    const rows = Array.from({ length: 1000 }, (_, i) => `insert into t (body) values ('round ${round} row ${i} ${'x'.repeat(i % 200)}');`).join('\n');
    const r = await run('sqlite3', [db], { input: `begin;\n${rows}\ncommit;\n` });
    t.is(r.code, 0, r.stderr);
  }
  await sh(`sqlite3 ${db} "update t set body = body || '!' where id % 7 = 0; delete from t where id % 11 = 0;"`);
  const out = await sh(`sqlite3 ${db} 'pragma integrity_check; select count(*) from t;'`);
  t.is(out, `ok\n${4000 - Math.floor(4000 / 11)}\n`);
});

/** Text from a file on the mount, read by a child process (this process never touches the mount). */
const cat = (file: string) => sh(`cat ${JSON.stringify(file)}`);
const hex = (s: string) => Buffer.from(s).toString('hex');

fuseTest('editor-style save (write a temp file, rename over): an open reader keeps the old text', async (t) => {
  const b = await bucket(t, 'editor-test');
  await sh(`printf 'version one\\n' > ${b}/doc.txt`);
  const holder = startFdHolder();
  t.teardown(() => holder.close());
  const fd = (await holder.send(`open ${b}/doc.txt`)).split(' ')[1];
  await sh(`printf 'version two\\n' > ${b}/.doc.txt.swp && mv ${b}/.doc.txt.swp ${b}/doc.txt`);
  t.is(await cat(`${b}/doc.txt`), 'version two\n');
  t.is(await holder.send(`pread ${fd} 100 0`), `ok ${hex('version one\n')}`, 'the replaced file lives on for its open descriptor');
  t.is(await holder.send(`close ${fd}`), 'ok ');
  // vim-style: write to a backup name, then write the original in place.
  await sh(`cp ${b}/doc.txt ${b}/doc.txt~ && printf 'version three\\n' > ${b}/doc.txt && rm ${b}/doc.txt~`);
  t.is(await cat(`${b}/doc.txt`), 'version three\n');
  t.is((await sh(`ls -A ${b}`)).trim(), 'doc.txt');
});

fuseTest('appends with >> (and O_APPEND writes land at the end)', async (t) => {
  const b = await bucket(t, 'append-test');
  let expected = '';
  for (let i = 0; i < 40; i++) {
    await sh(`echo "line ${i}" >> ${b}/log.txt`);
    expected += `line ${i}\n`;
  }
  t.is(await cat(`${b}/log.txt`), expected);
  const holder = startFdHolder();
  t.teardown(() => holder.close());
  const fd = (await holder.send(`open ${b}/log.txt a`)).split(' ')[1];
  await sh(`echo "from the shell" >> ${b}/log.txt`);
  t.is(await holder.send(`write ${fd} ${hex('from python\n')}`), 'ok 12');
  await holder.send(`close ${fd}`);
  t.is(await cat(`${b}/log.txt`), `${expected}from the shell\nfrom python\n`);
});

fuseTest('dd at random offsets with conv=notrunc matches the same dd on a plain file', async (t) => {
  const b = await bucket(t, 'dd-test');
  const plain = path.join(t.context.fx.root, 'dd-plain.bin');
  const chunk = path.join(t.context.fx.root, 'dd-chunk.bin');
  await fsp.writeFile(plain, randomBytes(700_000));
  await fsp.writeFile(chunk, randomBytes(200_000));
  await sh(`cp ${plain} ${b}/target.bin`);
  // Deterministic "random" offsets: inside packages, across boundaries, past the end (growth).
  let seed = 12345;
  const next = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  const script: string[] = [];
  for (let i = 0; i < 25; i++) {
    const off = i === 24 ? 900_000 : next(760_000);
    const count = 1 + next(150_000);
    const skip = next(200_000 - count);
    for (const file of [plain, `${b}/target.bin`]) {
      script.push(`dd if=${chunk} of=${file} bs=${count} count=1 skip=${skip} seek=${off} iflag=skip_bytes,count_bytes oflag=seek_bytes conv=notrunc status=none`);
    }
  }
  await sh(script.join(' && '), { timeoutMs: 120_000 });
  t.is(await sha256(`${b}/target.bin`), await sha256(plain));
  const sizes = await sh(`stat -c %s ${plain} ${b}/target.bin`);
  const [a, m] = sizes.trim().split('\n');
  t.is(m, a);
});

fuseTest('Python mmap for reading: MAP_PRIVATE works; MAP_SHARED works on the low-level binding (read-only opens are cached), ENODEV under fuse-native\'s direct_io', async (t) => {
  const b = await bucket(t, 'mmap-test');
  const body = randomBytes(200_000);
  await fsp.writeFile(path.join(t.context.fx.root, 'mmap.bin'), body);
  await sh(`cp ${t.context.fx.root}/mmap.bin ${b}/m.bin`);
  const holder = startFdHolder();
  t.teardown(() => holder.close());
  t.is(await holder.send(`mmap ${b}/m.bin 0 copy`), `ok ${body.toString('hex')}`, 'mmap.ACCESS_COPY (MAP_PRIVATE)');
  t.is(await holder.send(`mmap ${b}/m.bin 0 private`), `ok ${body.toString('hex')}`, 'flags=MAP_PRIVATE, prot=PROT_READ');
  if (process.env.MOUNTD_FUSE_BINDING === 'fuse-native') {
    t.regex(await holder.send(`mmap ${b}/m.bin 0 read`), /^err 19 /, 'mmap.ACCESS_READ is MAP_SHARED: ENODEV with direct_io');
  } else {
    t.is(await holder.send(`mmap ${b}/m.bin 0 read`), `ok ${body.toString('hex')}`, 'mmap.ACCESS_READ is MAP_SHARED: served from the page cache');
  }
});

fuseTest('find, du, df and stat', async (t) => {
  const b = await bucket(t, 'find-test');
  await sh(`cp -a ${t.context.src} ${b}/t`);
  const found = await sh(`cd ${b} && find t -type f | sort`);
  const expected = await sh(`cd ${t.context.src}/.. && find src -type f | sed 's/^src/t/' | sort`);
  t.is(found, expected);
  t.is(await sh(`find ${b} -name deep.txt -printf '%s\\n'`), '5\n');
  const du = Number((await sh(`du -sb --apparent-size ${b}/t/a`)).split('\t')[0]);
  const duSrc = Number((await sh(`du -sb --apparent-size ${t.context.src}/a`)).split('\t')[0]);
  const fileBytes = Number(await sh(`find ${t.context.src}/a -type f -printf '%s\\n' | paste -sd+ | bc`).catch(() => '0'));
  t.true(du >= fileBytes && Math.abs(du - duSrc) < 64 * 1024, `du ${du} vs ${duSrc}`);
  const blocks = Number((await sh(`du -sk ${b}/t/a/rand-300000.bin`)).split('\t')[0]);
  t.true(blocks >= 293 && blocks <= 300, `du -k of a 300000-byte file: ${blocks}`);
  const df = await sh(`df -P ${t.context.fx.mnt}`);
  t.regex(df, /mountd/);
  t.true(Number(df.trim().split('\n')[1]!.split(/\s+/)[1]) > 0, 'df reports a size');
  t.is(await sh(`stat -c '%s %F %a' ${b}/t/a/rand-65537.bin ${b}/t/run.sh ${b}/t/a`), '65537 regular file 644\n18 regular file 755\n4096 directory 755\n');
  t.is(await sh(`stat -c '%F %N' ${b}/t/link`), `symbolic link '${b}/t/link' -> 'a/b/c/deep.txt'\n`);
});

fuseTest('fallocate: growing writes zeros, punch-hole and zero-range read back as zeros, keep-size past the end is refused; posix_fallocate works (fuse-native: EOPNOTSUPP, and glibc falls back)', async (t) => {
  const b = await bucket(t, 'falloc-test');
  const lowLevel = (process.env.MOUNTD_FUSE_BINDING || 'lowlevel') === 'lowlevel';
  // posix_fallocate works on either binding (glibc writes zeros itself where fallocate is EOPNOTSUPP).
  t.is(await sh(`python3 -c "import os; fd=os.open('${b}/posix', os.O_CREAT|os.O_RDWR); os.posix_fallocate(fd, 0, 300000); print(os.fstat(fd).st_size)"`), '300000\n');
  t.is(await sh(`head -c 300000 /dev/zero | cmp - ${b}/posix && echo same`), 'same\n');
  const grow = await run('fallocate', ['-l', '1048576', `${b}/grown`]);
  if (!lowLevel) {
    t.regex(grow.stderr, /Operation not supported/, 'fuse-native has no fallocate');
    return;
  }
  t.is(grow.code, 0, grow.stderr);
  t.is((await fsp.stat(`${b}/grown`)).size, 1048576);
  t.is(await sh(`head -c 1048576 /dev/zero | cmp - ${b}/grown && echo same`), 'same\n');
  await fsp.writeFile(`${b}/punched`, 'abcdefghijklmnopqrstuvwxyz');
  t.is((await run('fallocate', ['-p', '-o', '5', '-l', '10', `${b}/punched`])).code, 0);
  t.deepEqual(await fsp.readFile(`${b}/punched`), Buffer.concat([Buffer.from('abcde'), Buffer.alloc(10), Buffer.from('pqrstuvwxyz')]));
  await fsp.writeFile(`${b}/zeroed`, 'abcdefghij');
  t.is((await run('fallocate', ['-z', '-o', '8', '-l', '10', `${b}/zeroed`])).code, 0);
  t.deepEqual(await fsp.readFile(`${b}/zeroed`), Buffer.concat([Buffer.from('abcdefgh'), Buffer.alloc(10)]), 'zero-range past the end grows the file');
  t.regex((await run('fallocate', ['-n', '-l', '10M', `${b}/zeroed`])).stderr, /keep size mode is unsupported/, 'keep-size past the end cannot be honoured (EOPNOTSUPP)');
  t.is((await run('fallocate', ['-n', '-l', '10', `${b}/zeroed`])).code, 0, 'keep-size within the file has nothing to do');
  t.is((await fsp.stat(`${b}/zeroed`)).size, 18);
  // More than the backing store holds: fallocate itself says ENOSPC (not a close that fails
  // after it said yes), and the file is as it was.
  const huge = await run('fallocate', ['-l', '100T', `${b}/zeroed`]);
  t.regex(huge.stderr, /fallocate failed: No space left on device/);
  t.is((await fsp.stat(`${b}/zeroed`)).size, 18);
});

fuseTest('setfattr and getfattr: user.* round-trips; other namespaces are not supported', async (t) => {
  const b = await bucket(t, 'xattr-test');
  await sh(`echo data > ${b}/f`);
  await sh(`setfattr -n user.color -v blue ${b}/f && setfattr -n user.Mixed.Case -v 'a b c' ${b}/f`);
  t.is(await sh(`getfattr --only-values -n user.color ${b}/f`), 'blue');
  t.is(await sh(`getfattr -d --absolute-names ${b}/f | sort`), `\n# file: ${b}/f\nuser.Mixed.Case="a b c"\nuser.color="blue"\n`);
  const replaceMissing = await run('python3', ['-c', `import os; os.setxattr('${b}/f', 'user.nope', b'x', os.XATTR_REPLACE)`]);
  t.regex(replaceMissing.stderr, /No data available|Errno 61/);
  const createExisting = await run('python3', ['-c', `import os; os.setxattr('${b}/f', 'user.color', b'x', os.XATTR_CREATE)`]);
  t.regex(createExisting.stderr, /File exists/);
  await sh(`setfattr -x user.color ${b}/f`);
  t.is(await sh(`getfattr -d --absolute-names ${b}/f`), `# file: ${b}/f\nuser.Mixed.Case="a b c"\n\n`);
  const missing = await run('getfattr', ['-n', 'user.color', `${b}/f`]);
  t.regex(missing.stderr, /No such attribute/);
  const trusted = await run('setfattr', ['-n', 'trusted.x', '-v', '1', `${b}/f`]);
  t.regex(trusted.stderr, /Operation not supported/);
  // Reading a name outside user.* (answered by our C glue, not by JavaScript) is not supported either.
  for (const name of ['security.capability', 'trusted.x', 'system.posix_acl_access', 'user.', 'usr.x']) {
    const get = await run('getfattr', ['-n', name, `${b}/f`]);
    t.regex(get.stderr, /Operation not supported/, name);
  }
  // More than fits beside the key record in one attribute block: E2BIG, and the others stay.
  const big = await run('setfattr', ['-n', 'user.big', '-v', 'x'.repeat(3900), `${b}/f`]);
  t.regex(big.stderr, /Argument list too long/);
  t.is(await sh(`getfattr -d --absolute-names ${b}/f`), `# file: ${b}/f\nuser.Mixed.Case="a b c"\n\n`);
  t.is((await run('setfattr', ['-n', 'user.fits', '-v', 'x'.repeat(2500), `${b}/f`])).code, 0, 'a value that fits is stored');
  t.is((await sh(`getfattr --only-values -n user.fits ${b}/f`)).length, 2500);
  await sh(`setfattr -x user.fits ${b}/f`);
  const onDir = await run('setfattr', ['-n', 'user.x', '-v', '1', b]);
  t.regex(onDir.stderr, /Operation not supported/);
  t.is(await cat(`${b}/f`), 'data\n', 'metadata changes leave the content alone');
  // The engine's own record is never visible as an attribute.
  const all = (await sh(`getfattr -d -m - --absolute-names ${b}/f`)).split('\n').filter((l) => l !== '' && !l.startsWith('#'));
  t.deepEqual(all, ['user.Mixed.Case="a b c"']);
  // A buffer too small for the value (or the list) is ERANGE; a size query (0) gets the length.
  const probe = String.raw`
import ctypes, ctypes.util, os, sys
libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
p, out = sys.argv[1].encode(), []
for name, size in ((b'user.Mixed.Case', 0), (b'user.Mixed.Case', 2), (b'user.Mixed.Case', 64)):
    buf = ctypes.create_string_buffer(max(size, 1))
    n = libc.getxattr(p, name, buf if size else None, size)
    out.append('get %d: %s' % (size, n if n >= 0 else os.strerror(ctypes.get_errno())))
for size in (0, 4, 256):
    buf = ctypes.create_string_buffer(max(size, 1))
    n = libc.listxattr(p, buf if size else None, size)
    out.append('list %d: %s' % (size, 'ok' if n > 0 and (size == 0 or n <= size) else os.strerror(ctypes.get_errno())))
print('; '.join(out))
`;
  t.is((await sh(`python3 -c "${probe.replace(/"/g, '\\"')}" ${b}/f`)).trim(), 'get 0: 5; get 2: Numerical result out of range; get 64: 5; list 0: ok; list 4: Numerical result out of range; list 256: ok');
});

fuseTest('symlinks: ln -s, readlink, following, dangling', async (t) => {
  const b = await bucket(t, 'symlink-test');
  await sh(`mkdir -p ${b}/d && echo target > ${b}/d/file && ln -s d/file ${b}/rel && ln -s ${b}/d/file ${b}/abs && ln -s nowhere ${b}/dangling`);
  t.is(await sh(`readlink ${b}/rel ${b}/abs ${b}/dangling`), `d/file\n${b}/d/file\nnowhere\n`);
  t.is(await cat(`${b}/rel`), 'target\n');
  t.is(await cat(`${b}/abs`), 'target\n');
  t.is((await run('cat', [`${b}/dangling`])).code, 1);
  t.is(await sh(`stat -c %F ${b}/rel`), 'symbolic link\n');
  await sh(`mv ${b}/rel ${b}/d/moved && rm ${b}/abs`);
  t.is(await sh(`readlink ${b}/d/moved`), 'd/file\n');
});

fuseTest('chmod, truncate, touch', async (t) => {
  const b = await bucket(t, 'attr-test');
  await sh(`head -c 200000 /dev/urandom > ${b}/f && chmod 640 ${b}/f`);
  t.is(await sh(`stat -c %a ${b}/f`), '640\n');
  await sh(`chmod u+x,g-r ${b}/f && mkdir ${b}/d && chmod 700 ${b}/d`);
  t.is(await sh(`stat -c %a ${b}/f ${b}/d`), '700\n700\n');
  const head = await sh(`head -c 70000 ${b}/f | sha256sum`);
  await sh(`truncate -s 70000 ${b}/f`);
  t.is(await sh(`stat -c %s ${b}/f`), '70000\n');
  t.is(await sh(`sha256sum < ${b}/f`), head);
  await sh(`truncate -s 100000 ${b}/f`);
  t.is(await sh(`tail -c 30000 ${b}/f | tr -d '\\0' | wc -c`), '0\n', 'growth reads as zeros');
  await sh(`truncate -s 0 ${b}/f`);
  t.is(await sh(`stat -c %s ${b}/f`), '0\n');
  await sh(`touch -d '2020-01-02 03:04:05 UTC' ${b}/f`);
  t.is(await sh(`stat -c %Y ${b}/f`), '1577934245\n');
});

fuseTest('access and modification times are set apart: touch -a, touch -m, cp -a, and a second rsync copies nothing', async (t) => {
  const b = await bucket(t, 'times-test');
  await sh(`printf x > ${b}/f && touch -m -d '2010-01-01 00:00:00 UTC' ${b}/f && touch -a -d '2001-02-03 04:05:06 UTC' ${b}/f`);
  t.is(await sh(`stat -c '%X %Y' ${b}/f`), '981173106 1262304000\n', 'touch -a leaves mtime alone (UTIME_OMIT), touch -m leaves atime alone');
  // Reading it, and opening it to write, leave the access time alone (the backing file is read
  // with O_NOATIME); touch -m on a file whose atime was set keeps it.
  await sh(`cat ${b}/f > /dev/null && touch -m -d '2012-01-01 00:00:00 UTC' ${b}/f`);
  t.is(await sh(`stat -c '%X %Y' ${b}/f`), '981173106 1325376000\n', 'a read and touch -m leave atime alone');
  // A source whose atime and mtime differ: cp -a and tar keep the mtime, not the atime.
  const src = path.join(t.context.fx.root, 'times-src');
  await sh(`mkdir -p ${src} && printf one > ${src}/one && touch -m -d '2015-05-05 05:05:05 UTC' ${src}/one && touch -a -d '2019-09-09 09:09:09 UTC' ${src}/one`);
  await sh(`cp -a ${src}/one ${b}/copied && mkdir ${b}/untar && tar cf - -C ${src} one | tar xf - -C ${b}/untar`);
  t.is(await sh(`stat -c %Y ${b}/copied ${b}/untar/one`), '1430802305\n1430802305\n');
  await sh(`rsync -a ${src}/ ${b}/synced/`);
  const again = await run('rsync', ['-a', '--itemize-changes', `${src}/`, `${b}/synced/`]);
  t.is(again.code, 0, again.stderr);
  t.is(again.stdout.trim(), '', 'rsync finds nothing to copy the second time (sizes and mtimes match)');
});

fuseTest('mkdir and rmdir at the root create and delete buckets; bad names are EINVAL', async (t) => {
  const root = t.context.fx.mnt;
  await sh(`mkdir ${root}/new-bucket-1`);
  t.regex(await sh(`ls ${root}`), /new-bucket-1/);
  const bad = await run('mkdir', [`${root}/Bad_Name`]);
  t.regex(bad.stderr, /Invalid argument/);
  const short = await run('mkdir', [`${root}/ab`]);
  t.regex(short.stderr, /Invalid argument/);
  const dup = await run('mkdir', [`${root}/new-bucket-1`]);
  t.regex(dup.stderr, /File exists/);
  await sh(`echo x > ${root}/new-bucket-1/f`);
  const notEmpty = await run('rmdir', [`${root}/new-bucket-1`]);
  t.regex(notEmpty.stderr, /not empty/);
  const fileAtRoot = await run('sh', ['-c', `echo x > ${root}/not-a-bucket-file`]);
  t.not(fileAtRoot.code, 0, 'no files at the root');
  await sh(`rm ${root}/new-bucket-1/f && rmdir ${root}/new-bucket-1`);
  t.notRegex(await sh(`ls ${root}`), /new-bucket-1/);
  const gone = await run('stat', [`${root}/.Trash`]);
  t.regex(gone.stderr, /No such file/, 'a lookup of an impossible bucket name is ENOENT');
});

// Found by review: the unlink of an open file waits a moment in the store (for a rename onto the
// name); a rename of its directory in that moment used to bring the file back under the new name.
fuseTest('unlink of an open file, then a rename of its directory: the file stays gone, its descriptor keeps working', async (t) => {
  const b = await bucket(t, 'unlink-mv-test');
  await sh(`mkdir ${b}/hd && printf 'data' > ${b}/hd/f`);
  const holder = startFdHolder();
  t.teardown(() => holder.close());
  const fd = (await holder.send(`open ${b}/hd/f rw`)).split(' ')[1];
  await sh(`rm ${b}/hd/f && mv ${b}/hd ${b}/hd2`);
  t.is(await holder.send(`pwrite ${fd} 4 ${hex('more')}`), 'ok 4');
  t.is(await holder.send(`fstat ${fd}`), 'ok 8');
  t.is(await holder.send(`pread ${fd} 100 0`), `ok ${hex('datamore')}`);
  t.is(await holder.send(`close ${fd}`), 'ok ');
  await new Promise((r) => setTimeout(r, 700));
  t.is((await sh(`ls -A ${b}/hd2`)).trim(), '', 'the unlinked file did not come back');
  t.deepEqual(await fsp.readdir(path.join(t.context.fx.dataDir, 'unlink-mv-test', 'hd2')), [], 'nor in the store');
});

// Object keys are UTF-8: a name that is not cannot be stored faithfully. fuse-native turns its
// bad bytes into U+FFFD (two different names become one file); the low-level binding refuses it.
fuseTest('names that are not UTF-8 are refused with EILSEQ (never merged into one file)', async (t) => {
  if ((process.env.MOUNTD_FUSE_BINDING || 'lowlevel') !== 'lowlevel') {
    t.pass('MOUNTD_FUSE_BINDING=fuse-native: a known limitation of that binding (README, Limits)');
    return;
  }
  const b = await bucket(t, 'latin1-test');
  const py = [
    'import os, errno, sys',
    'd = sys.argv[1].encode()',
    "for n in (b'caf\\xe9', b'caf\\xe8', b'\\xff'):",
    '    try:',
    '        os.close(os.open(os.path.join(d, n), os.O_CREAT | os.O_EXCL | os.O_WRONLY))',
    "        print('created')",
    '    except OSError as e:',
    '        print(errno.errorcode[e.errno])',
    "os.close(os.open(os.path.join(d, 'caf\\u00e9'.encode()), os.O_CREAT | os.O_EXCL | os.O_WRONLY))",
    'print(sorted(os.listdir(sys.argv[1])))',
  ].join('\n');
  const r = await run('python3', ['-c', py, b]);
  t.is(r.stdout, "EILSEQ\nEILSEQ\nEILSEQ\n['café']\n", r.stderr);
});

fuseTest('unlink of an open file: the descriptor keeps working, the name and the data are gone', async (t) => {
  const b = await bucket(t, 'unlink-test');
  await sh(`mkdir ${b}/d && printf 'still here' > ${b}/d/open.txt`);
  const holder = startFdHolder();
  t.teardown(() => holder.close());
  const fd = (await holder.send(`open ${b}/d/open.txt rw`)).split(' ')[1];
  await sh(`rm ${b}/d/open.txt`);
  t.is((await sh(`ls -A ${b}/d`)).trim(), '', 'no .fuse_hidden file');
  t.regex((await run('stat', [`${b}/d/open.txt`])).stderr, /No such file/, 'the name is gone from the mount at once');
  // The store's unlink waits a moment for a rename onto the name (libfuse hides a rename's open
  // target the same way): S3 sees the object gone within that moment.
  const backing = path.join(t.context.fx.dataDir, 'unlink-test', 'd', 'open.txt');
  // The wait is 500 ms (UNLINK_GRACE_MS); up to 15 s here, for a loaded machine. The descriptor
  // stays open throughout: the store's unlink must not wait for its close.
  for (const end = Date.now() + 15_000; (await fsp.lstat(backing).catch(() => null)) && Date.now() < end; ) await new Promise((r) => setTimeout(r, 10));
  t.is(await fsp.lstat(backing).catch(() => null), null, 'gone from the store (and S3) while the descriptor is still open');
  t.is(await holder.send(`pread ${fd} 100 0`), `ok ${hex('still here')}`);
  t.is(await holder.send(`pwrite ${fd} 10 ${hex(' and more')}`), 'ok 9');
  t.is(await holder.send(`fstat ${fd}`), 'ok 19');
  t.is(await holder.send(`pread ${fd} 100 0`), `ok ${hex('still here and more')}`);
  // The directory can go while the file is open; a new file of the same name is a new file.
  await sh(`rmdir ${b}/d && mkdir ${b}/d && printf new > ${b}/d/open.txt`);
  t.is(await cat(`${b}/d/open.txt`), 'new');
  t.is(await holder.send(`close ${fd}`), 'ok ');
  t.is(await cat(`${b}/d/open.txt`), 'new');
  await sh(`rm ${b}/d/open.txt && rmdir ${b}/d`);
  t.is((await sh(`ls -A ${b}`)).trim(), '');
  t.deepEqual(await fsp.readdir(path.join(t.context.fx.dataDir, 'unlink-test')), [], 'nothing left on the backing store');
});

fuseTest('rename of files and directories, over existing targets, with files open', async (t) => {
  const b = await bucket(t, 'rename-test');
  await sh(`mkdir -p ${b}/d1/sub && printf one > ${b}/d1/sub/f1 && printf two > ${b}/d1/f2 && printf old > ${b}/target`);
  const holder = startFdHolder();
  t.teardown(() => holder.close());
  const fd = (await holder.send(`open ${b}/d1/sub/f1 rw`)).split(' ')[1];
  await sh(`mv ${b}/d1 ${b}/d2`);
  t.is(await sh(`cat ${b}/d2/sub/f1 ${b}/d2/f2`), 'onetwo');
  t.is(await holder.send(`pwrite ${fd} 3 ${hex('+')}`), 'ok 1');
  await holder.send(`fsync ${fd}`);
  t.is(await cat(`${b}/d2/sub/f1`), 'one+', 'a write on a handle opened before the rename lands in the renamed file');
  await sh(`mv ${b}/d2/f2 ${b}/target`);
  t.is(await cat(`${b}/target`), 'two');
  await sh(`mkdir ${b}/empty && mv ${b}/d2/sub ${b}/empty`);
  t.regex((await run('mv', ['-T', `${b}/d2`, `${b}/target`])).stderr, /Not a directory|cannot overwrite/);
  await sh(`mkdir ${b}/other-bucket-rn 2>/dev/null || true`);
  await sh(`mkdir ${t.context.fx.mnt}/rename-test-2 && mv ${b}/target ${t.context.fx.mnt}/rename-test-2/moved`);
  t.is(await cat(`${t.context.fx.mnt}/rename-test-2/moved`), 'two', 'across buckets');
  t.is(await holder.send(`close ${fd}`), 'ok ');
});

fuseTest('hard links are refused with EPERM', async (t) => {
  const b = await bucket(t, 'link-test');
  await sh(`echo x > ${b}/f`);
  const r = await run('ln', [`${b}/f`, `${b}/g`]);
  t.regex(r.stderr, /Operation not permitted/);
  t.regex(t.context.fx.daemon.log(), /hard links are not supported/);
});

fuseTest('chown, and mv of a whole bucket (EXDEV, so mv copies it)', async (t) => {
  const b = await bucket(t, 'chown-test');
  await sh(`echo x > ${b}/f && chown 1234:5678 ${b}/f && chown :4321 ${b}`);
  t.is(await sh(`stat -c '%u %g' ${b}/f ${b}`), '1234 5678\n0 4321\n');
  await sh(`mv ${b} ${t.context.fx.mnt}/chown-test-moved`);
  t.is(await cat(`${t.context.fx.mnt}/chown-test-moved/f`), 'x\n');
  t.is((await run('stat', [b])).code, 1, 'the old bucket is gone');
});

fuseTest('a file larger than the per-file write buffer streams through and reads back intact', async (t) => {
  const b = await bucket(t, 'big-test');
  const plain = path.join(t.context.fx.root, 'big.bin');
  await fsp.writeFile(plain, randomBytes(24 * 1024 * 1024 + 12345));
  await sh(`cp ${plain} ${b}/big.bin & cp ${plain} ${b}/big2.bin & wait`, { timeoutMs: 120_000 });
  t.is(await sha256(`${b}/big.bin`), await sha256(plain));
  t.is(await sha256(`${b}/big2.bin`), await sha256(plain));
  t.is(await sh(`dd if=${b}/big.bin bs=1 skip=16777200 count=40 status=none | od -An -tx1 | tr -d ' \\n'`), (await fsp.readFile(plain)).subarray(16777200, 16777240).toString('hex'));
});

fuseTest('a tampered backing file reads as EIO (never as wrong plaintext), with the detail in the log', async (t) => {
  const b = await bucket(t, 'tamper-test');
  await sh(`head -c 200000 /dev/urandom > ${b}/victim && echo fine > ${b}/bystander`);
  // The backing store, not the mount: flip one ciphertext byte in the second package.
  const backing = path.join(t.context.fx.dataDir, 'tamper-test', 'victim');
  const fh = await fsp.open(backing, 'r+');
  const one = Buffer.alloc(1);
  await fh.read(one, 0, 1, 100_000);
  one[0] = one[0]! ^ 0x40;
  await fh.write(one, 0, 1, 100_000);
  await fh.close();
  const r = await run('cat', [`${b}/victim`]);
  t.regex(r.stderr, /Input\/output error/);
  t.is(await sh(`head -c 1000 ${b}/victim | wc -c`), '1000\n', 'packages before the damage still read');
  t.regex(t.context.fx.daemon.log(), /read \/tamper-test\/victim: ENGINE_INTEGRITY: .* -> EIO/);
  t.is(await cat(`${b}/bystander`), 'fine\n');
});

fuseTest('names longer than an object key allows are ENAMETOOLONG; a mount point inside the data directory is refused', async (t) => {
  const b = await bucket(t, 'names-test');
  t.regex((await run('touch', [`${b}/${'n'.repeat(256)}`])).stderr, /File name too long/);
  t.regex((await run('mkdir', ['-p', `${b}/${Array.from({ length: 9 }, () => 'd'.repeat(120)).join('/')}`])).stderr, /File name too long/);
  await sh(`touch ${b}/${'n'.repeat(255)}`);
  const inside = await run(process.execPath, ['--import', import.meta.resolve('tsx'), 'src/cli/mountd.ts', '--data', path.join(t.context.fx.root, 'nested-data'), '--mount', path.join(t.context.fx.root, 'nested-data', 'mnt'), '--s3', 'off'], { timeoutMs: 30_000 });
  t.not(inside.code, 0);
  t.regex(inside.stderr, /must not contain each other/);
});

fuseTest('the attributes a create, chmod, chown, utimens and truncate answer with are the new ones (our C glue answers libfuse getattr with them)', async (t) => {
  const b = await bucket(t, 'setattr-answers');
  const f = path.join(b, 'f');
  // Each stat right after the change comes from the answer to it (the kernel caches it): a
  // stale answer (attributes from before the change) would fail here.
  const fh = await fsp.open(f, 'wx', 0o640);
  t.is((await fh.stat()).mode & 0o777, 0o640);
  t.is((await fsp.stat(f)).size, 0);
  await fh.write(Buffer.from('0123456789'));
  await fh.close();
  for (const mode of [0o600, 0o755, 0o444, 0o644]) {
    await fsp.chmod(f, mode);
    t.is((await fsp.stat(f)).mode & 0o777, mode);
  }
  await fsp.chown(f, 1234, 5678);
  let st = await fsp.stat(f);
  t.is(st.uid, 1234);
  t.is(st.gid, 5678);
  await fsp.utimes(f, new Date('2001-02-03T04:05:06.789Z'), new Date('2002-03-04T05:06:07.891Z'));
  st = await fsp.stat(f);
  t.is(st.mtime.toISOString(), '2002-03-04T05:06:07.891Z');
  t.is(st.atime.toISOString(), '2001-02-03T04:05:06.789Z');
  await fsp.truncate(f, 123_456);
  t.is((await fsp.stat(f)).size, 123_456);
  const h = await fsp.open(f, 'r+');
  await h.truncate(7);
  t.is((await h.stat()).size, 7);
  await h.close();
  t.is(await fsp.readFile(f, 'utf8'), '0123456');
  // A refused change answers with an error and leaves the attributes as they were.
  await t.throwsAsync(() => fsp.chmod(path.join(b, 'missing'), 0o600), { code: 'ENOENT' });
  t.is((await fsp.stat(f)).mode & 0o777, 0o644);
  // The store has them too: the backing file carries the mode, owner and times.
  const backing = path.join(t.context.fx.dataDir, 'setattr-answers', 'f');
  const raw = await fsp.stat(backing);
  t.is(raw.mode & 0o777, 0o644);
  t.is(raw.uid, 1234);
  t.is(raw.gid, 5678);
});
