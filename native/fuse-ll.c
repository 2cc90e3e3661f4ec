// mountd's FUSE binding: a libfuse 2.9 low-level session driven by Node's own event loop.
//
// fuse-native runs libfuse's high-level loop on threads of its own and hands every request to the
// main thread and back (uv_async_send, then a semaphore the thread waits on): two thread switches
// per request, and a path-based API in which libfuse itself answers ENOENT for a node that a
// rename has replaced. Here /dev/fuse is polled by libuv (uv_poll) on the main thread, each
// request is handed to JavaScript with no thread switch, and JavaScript answers when its promise
// settles, through the reply functions below (the request stays libfuse's until then). Nodes are
// numbered and tracked by the JavaScript side (src/fuse/lowlevel.ts): lookup counts, renames of
// whole subtrees, stale nodes.
//
// The session's receive buffer is shared with JavaScript as one Buffer for the session's life: a
// write's data is handed over as an offset into it and must be copied before the dispatch call
// returns (the next request overwrites it). Attributes travel through one Float64Array the module
// keeps (setScratch), so that no request allocates an object to carry them.
#define FUSE_USE_VERSION 29
#include <uv.h>
#include <node_api.h>
#include <fuse_lowlevel.h>
#include <string.h>
#include <stdlib.h>
#include <stdio.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <pthread.h>
#include <sys/uio.h>
#include <stdint.h>
#include <unistd.h>

// Operation codes passed to the dispatcher; src/fuse/lowlevel.ts reads them from `ops`.
enum {
  OP_LOOKUP = 1, OP_FORGET, OP_GETATTR, OP_SETATTR, OP_READLINK, OP_MKNOD, OP_MKDIR, OP_UNLINK,
  OP_RMDIR, OP_SYMLINK, OP_RENAME, OP_LINK, OP_OPEN, OP_READ, OP_WRITE, OP_FLUSH, OP_RELEASE,
  OP_FSYNC, OP_OPENDIR, OP_READDIR, OP_RELEASEDIR, OP_STATFS, OP_SETXATTR, OP_GETXATTR,
  OP_LISTXATTR, OP_REMOVEXATTR, OP_CREATE, OP_FALLOCATE, OP_UNMOUNTED, OP_COUNT
};
static const char *OP_NAMES[OP_COUNT] = {
  NULL, "lookup", "forget", "getattr", "setattr", "readlink", "mknod", "mkdir", "unlink",
  "rmdir", "symlink", "rename", "link", "open", "read", "write", "flush", "release",
  "fsync", "opendir", "readdir", "releasedir", "statfs", "setxattr", "getxattr",
  "listxattr", "removexattr", "create", "fallocate", "unmounted"
};

// Scratch layout (Float64Array): attributes at 0..12, statfs at 0..10.
// A_INO is st_ino (the backing file's inode number, stable while the file lives); A_NODE is the
// FUSE node id an entry reply gives the kernel (it changes when the kernel forgets the node).
enum { A_INO, A_MODE, A_NLINK, A_UID, A_GID, A_SIZE, A_BLOCKS, A_BLKSIZE, A_ATIME, A_MTIME, A_CTIME, A_RDEV, A_NODE, SCRATCH_LEN = 16 };

struct session {
  napi_env env;
  napi_ref dispatch;
  napi_ref recv_ref;            // the Buffer over `buf`, kept alive with the session
  napi_async_context ctx;
  struct fuse_session *se;
  struct fuse_chan *ch;
  uv_poll_t poll;
  char *buf;
  size_t bufsize;
  char *mountpoint;
  int polling;
  int closed;
  long pending;                 // requests given to JavaScript and not answered yet
  long spin_ns;                 // how long to wait for the next request before sleeping
};

static double *g_scratch;
static napi_ref g_scratch_ref;

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "fuse-ll: " #call " failed"); return NULL; } } while (0)

// ---- calls into JavaScript ------------------------------------------------------------------

static napi_value num(napi_env env, double v) { napi_value r; napi_create_double(env, v, &r); return r; }
static napi_value str(napi_env env, const char *s) { napi_value r; if (s) napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &r); else napi_get_null(env, &r); return r; }

// dispatch(op, req, ino, a, b, c, d, e): `req` is the request's address as a number (user-space
// addresses fit in 53 bits), to be passed back to a reply function exactly once.
static void dispatch(struct session *s, int op, fuse_req_t req, fuse_ino_t ino, int argc, napi_value *rest) {
  napi_env env = s->env;
  napi_value argv[8], fn, recv, res;
  argv[0] = num(env, op);
  argv[1] = num(env, (double)(uintptr_t)req);
  argv[2] = num(env, (double)ino);
  for (int i = 0; i < argc && i < 5; i++) argv[3 + i] = rest[i];
  if (req) s->pending++;
  napi_get_reference_value(env, s->dispatch, &fn);
  napi_get_global(env, &recv);
  napi_status st = napi_make_callback(env, s->ctx, recv, fn, 3 + argc, argv, &res);
  if (st == napi_pending_exception) {
    // The dispatcher catches what its handlers throw and answers EIO itself, so an exception
    // here comes from other JavaScript run at the end of the call (nextTick, microtasks), and
    // this request may be answered already: it is left alone, and the exception goes where any
    // uncaught exception goes.
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
  }
}

// Names must be UTF-8 (object keys are): a name that is not would be turned into U+FFFD on its
// way to JavaScript, and two different names would then be one file.
static int valid_utf8(const char *p) {
  const unsigned char *s = (const unsigned char *)p;
  while (*s) {
    if (s[0] < 0x80) { s++; continue; }
    int n; unsigned int c;
    if ((s[0] & 0xe0) == 0xc0) { n = 1; c = s[0] & 0x1f; }
    else if ((s[0] & 0xf0) == 0xe0) { n = 2; c = s[0] & 0x0f; }
    else if ((s[0] & 0xf8) == 0xf0) { n = 3; c = s[0] & 0x07; }
    else return 0;
    for (int i = 1; i <= n; i++) { if ((s[i] & 0xc0) != 0x80) return 0; c = (c << 6) | (s[i] & 0x3f); }
    if ((n == 1 && c < 0x80) || (n == 2 && c < 0x800) || (n == 3 && c < 0x10000) || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
    s += n + 1;
  }
  return 1;
}
#define NAMES_OK(req, ...) do { const char *names_[] = { __VA_ARGS__ }; \
  for (size_t i_ = 0; i_ < sizeof names_ / sizeof names_[0]; i_++) \
    if (!valid_utf8(names_[i_])) { fuse_reply_err(req, EILSEQ); return; } } while (0)

static struct session *S(fuse_req_t req) { return (struct session *)fuse_req_userdata(req); }
static double fhv(struct fuse_file_info *fi) { return fi ? (double)fi->fh : -1; }

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  NAMES_OK(req, name);
  struct session *s = S(req); napi_value a[1] = { str(s->env, name) };
  dispatch(s, OP_LOOKUP, req, parent, 1, a);
}
static void ll_forget(fuse_req_t req, fuse_ino_t ino, unsigned long nlookup) {
  struct session *s = S(req); napi_value a[1] = { num(s->env, (double)nlookup) };
  // Answered (nothing to send) before JavaScript runs: nothing of the request is used after.
  fuse_reply_none(req);
  dispatch(s, OP_FORGET, NULL, ino, 1, a);
}
static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct session *s = S(req); napi_value a[1] = { num(s->env, fhv(fi)) };
  dispatch(s, OP_GETATTR, req, ino, 1, a);
}
static double ms_of(const struct timespec *t) { return (double)t->tv_sec * 1000 + (double)t->tv_nsec / 1e6; }
static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
  struct session *s = S(req);
  double *x = g_scratch;
  x[A_MODE] = attr->st_mode; x[A_UID] = attr->st_uid; x[A_GID] = attr->st_gid; x[A_SIZE] = (double)attr->st_size;
  x[A_ATIME] = ms_of(&attr->st_atim); x[A_MTIME] = ms_of(&attr->st_mtim);
  napi_value a[2] = { num(s->env, to_set), num(s->env, fhv(fi)) };
  dispatch(s, OP_SETATTR, req, ino, 2, a);
}
static void ll_readlink(fuse_req_t req, fuse_ino_t ino) { dispatch(S(req), OP_READLINK, req, ino, 0, NULL); }
static void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
  NAMES_OK(req, name);
  struct session *s = S(req); napi_value a[2] = { str(s->env, name), num(s->env, mode) };
  dispatch(s, OP_MKNOD, req, parent, 2, a);
}
static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  NAMES_OK(req, name);
  struct session *s = S(req); napi_value a[2] = { str(s->env, name), num(s->env, mode) };
  dispatch(s, OP_MKDIR, req, parent, 2, a);
}
static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
  NAMES_OK(req, name);
  struct session *s = S(req); napi_value a[1] = { str(s->env, name) };
  dispatch(s, OP_UNLINK, req, parent, 1, a);
}
static void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
  NAMES_OK(req, name);
  struct session *s = S(req); napi_value a[1] = { str(s->env, name) };
  dispatch(s, OP_RMDIR, req, parent, 1, a);
}
static void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) {
  NAMES_OK(req, name, link);
  struct session *s = S(req); napi_value a[2] = { str(s->env, name), str(s->env, link) };
  dispatch(s, OP_SYMLINK, req, parent, 2, a);
}
static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname) {
  NAMES_OK(req, name, newname);
  struct session *s = S(req); napi_value a[3] = { str(s->env, name), num(s->env, (double)newparent), str(s->env, newname) };
  dispatch(s, OP_RENAME, req, parent, 3, a);
}
static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  NAMES_OK(req, newname);
  struct session *s = S(req); napi_value a[2] = { num(s->env, (double)newparent), str(s->env, newname) };
  dispatch(s, OP_LINK, req, ino, 2, a);
}
static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct session *s = S(req); napi_value a[1] = { num(s->env, fi->flags) };
  dispatch(s, OP_OPEN, req, ino, 1, a);
}
static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  struct session *s = S(req); napi_value a[3] = { num(s->env, (double)size), num(s->env, (double)off), num(s->env, fhv(fi)) };
  dispatch(s, OP_READ, req, ino, 3, a);
}
static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  struct session *s = S(req);
  if (buf < s->buf || buf + size > s->buf + s->bufsize) {
    // Not in the receive buffer (libfuse copied it elsewhere): cannot happen without splice,
    // which this session never asks for.
    fuse_reply_err(req, EIO);
    return;
  }
  napi_value a[4] = { num(s->env, (double)(buf - s->buf)), num(s->env, (double)size), num(s->env, (double)off), num(s->env, fhv(fi)) };
  dispatch(s, OP_WRITE, req, ino, 4, a);
}
static void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct session *s = S(req); napi_value a[1] = { num(s->env, fhv(fi)) };
  dispatch(s, OP_FLUSH, req, ino, 1, a);
}
static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct session *s = S(req); napi_value a[1] = { num(s->env, fhv(fi)) };
  dispatch(s, OP_RELEASE, req, ino, 1, a);
}
static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  struct session *s = S(req); napi_value a[2] = { num(s->env, datasync), num(s->env, fhv(fi)) };
  dispatch(s, OP_FSYNC, req, ino, 2, a);
}
static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) { dispatch(S(req), OP_OPENDIR, req, ino, 0, NULL); }
static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  struct session *s = S(req); napi_value a[3] = { num(s->env, (double)size), num(s->env, (double)off), num(s->env, fhv(fi)) };
  dispatch(s, OP_READDIR, req, ino, 3, a);
}
static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct session *s = S(req); napi_value a[1] = { num(s->env, fhv(fi)) };
  dispatch(s, OP_RELEASEDIR, req, ino, 1, a);
}
static void ll_statfs(fuse_req_t req, fuse_ino_t ino) { dispatch(S(req), OP_STATFS, req, ino, 0, NULL); }
static void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags) {
  struct session *s = S(req);
  if (strncmp(name, "user.", 5) != 0) { fuse_reply_err(req, ENOTSUP); return; }
  NAMES_OK(req, name);
  napi_value v; void *data;
  if (napi_create_buffer_copy(s->env, size, value, &data, &v) != napi_ok) { fuse_reply_err(req, ENOMEM); return; }
  napi_value a[3] = { str(s->env, name), v, num(s->env, flags) };
  dispatch(s, OP_SETXATTR, req, ino, 3, a);
}
// Names outside user.* are answered here: the kernel asks for security.capability after every
// write, and the mount keeps only user.* attributes (they are the objects' S3 metadata).
static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  struct session *s = S(req);
  if (strncmp(name, "user.", 5) != 0) { fuse_reply_err(req, ENOTSUP); return; }
  NAMES_OK(req, name);
  napi_value a[2] = { str(s->env, name), num(s->env, (double)size) };
  dispatch(s, OP_GETXATTR, req, ino, 2, a);
}
static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  struct session *s = S(req); napi_value a[1] = { num(s->env, (double)size) };
  dispatch(s, OP_LISTXATTR, req, ino, 1, a);
}
static void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) {
  struct session *s = S(req);
  if (strncmp(name, "user.", 5) != 0) { fuse_reply_err(req, ENOTSUP); return; }
  NAMES_OK(req, name);
  napi_value a[1] = { str(s->env, name) };
  dispatch(s, OP_REMOVEXATTR, req, ino, 1, a);
}
static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi) {
  NAMES_OK(req, name);
  struct session *s = S(req); napi_value a[3] = { str(s->env, name), num(s->env, mode), num(s->env, fi->flags) };
  dispatch(s, OP_CREATE, req, parent, 3, a);
}

static void ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi) {
  struct session *s = S(req);
  napi_value a[4] = { num(s->env, mode), num(s->env, (double)offset), num(s->env, (double)length), num(s->env, fhv(fi)) };
  dispatch(s, OP_FALLOCATE, req, ino, 4, a);
}

static struct fuse_lowlevel_ops OPS = {
  .lookup = ll_lookup, .forget = ll_forget, .getattr = ll_getattr, .setattr = ll_setattr,
  .readlink = ll_readlink, .mknod = ll_mknod, .mkdir = ll_mkdir, .unlink = ll_unlink,
  .rmdir = ll_rmdir, .symlink = ll_symlink, .rename = ll_rename, .link = ll_link,
  .open = ll_open, .read = ll_read, .write = ll_write, .flush = ll_flush, .release = ll_release,
  .fsync = ll_fsync, .opendir = ll_opendir, .readdir = ll_readdir, .releasedir = ll_releasedir,
  .statfs = ll_statfs, .setxattr = ll_setxattr, .getxattr = ll_getxattr,
  .listxattr = ll_listxattr, .removexattr = ll_removexattr, .create = ll_create,
  .fallocate = ll_fallocate,
};

// ---- the event loop side --------------------------------------------------------------------

static long now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000L + t.tv_nsec; }

// Reads and handles one request: 1 if one was handled, 0 if none was waiting, -1 if the session
// ended.
static int one_request(struct session *s) {
  struct fuse_buf fbuf = { .mem = s->buf, .size = s->bufsize };
  struct fuse_chan *tmpch = s->ch;
  int res = fuse_session_receive_buf(s->se, &fbuf, &tmpch);
  if (res == -EINTR || res == -EAGAIN) return 0;
  // The operation functions above make their arguments in this scope (one per request).
  napi_handle_scope scope;
  napi_open_handle_scope(s->env, &scope);
  if (res > 0) {
    fuse_session_process_buf(s->se, &fbuf, tmpch);
  } else {
    // 0: the kernel ended the session (unmounted from outside, or aborted); else a read error.
    if (s->polling) { uv_poll_stop(&s->poll); s->polling = 0; }
    if (res < 0) fprintf(stderr, "fuse-ll: reading /dev/fuse failed: %s\n", strerror(-res));
    dispatch(s, OP_UNMOUNTED, NULL, 0, 0, NULL);
    res = -1;
  }
  napi_close_handle_scope(s->env, scope);
  return res > 0 ? 1 : -1;
}

// The poll is level-triggered and each wake-up handles one request, then, if JavaScript answered
// everything it was given, waits up to spin_ns for the next one by reading the non-blocking fd
// again. A caller that makes one request at a time (tar, cp, md5sum) sends its next request a few
// tens of microseconds after its answer; without the wait the loop goes to sleep in epoll and is
// woken for it, and on the benchmark machine (a VM: a wake-up of a halted vCPU is an exit to the
// host) that sleep and wake-up cost as much as the request. At most SPIN_BUDGET_NS per wake-up is
// spent here before the loop's other work (S3 sockets, timers, the thread pool) has its turn.
#define SPIN_BUDGET_NS 2000000L
static void on_readable(uv_poll_t *h, int status, int events) {
  struct session *s = h->data;
  if (s->closed) return;
  if (one_request(s) <= 0 || s->spin_ns <= 0) return;
  long start = now_ns(), last = start;
  while (!s->closed && s->pending == 0) {
    long t = now_ns();
    if (t - last > s->spin_ns || t - start > SPIN_BUDGET_NS) break;
    int r = one_request(s);
    if (r < 0) break;
    if (r > 0) last = now_ns();
  }
}

static struct session *session_of(napi_env env, napi_value v) {
  struct session *s = NULL;
  napi_get_value_external(env, v, (void **)&s);
  return s;
}

// Only the reply functions call this: each takes its request's answer off the session's count.
static fuse_req_t req_of(napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  fuse_req_t req = (fuse_req_t)(uintptr_t)d;
  if (req) S(req)->pending--;
  return req;
}

// mount(mountpoint, options, dispatch, spinMicros) -> session. `options`: the -o string (fsname,
// subtype, big_writes, max_write, ...; "debug" for libfuse's trace on stderr). `spinMicros`: how
// long to wait for a next request before sleeping (see on_readable), 0 for never.
static napi_value mount_(napi_env env, napi_callback_info info) {
  size_t argc = 4; napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  double spin_us = 0;
  if (argc >= 4) napi_get_value_double(env, argv[3], &spin_us);
  if (!(spin_us >= 0 && spin_us <= 2000)) spin_us = 0;
  if (!g_scratch) { napi_throw_error(env, NULL, "fuse-ll: setScratch first"); return NULL; }
  size_t n;
  char mnt[4096], opts[1024];
  CHECK(napi_get_value_string_utf8(env, argv[0], mnt, sizeof mnt, &n));
  CHECK(napi_get_value_string_utf8(env, argv[1], opts, sizeof opts, &n));
  struct session *s = calloc(1, sizeof *s);
  s->env = env;
  s->mountpoint = strdup(mnt);
  char *av[] = { "mountd", "-o", opts, NULL };
  struct fuse_args args = FUSE_ARGS_INIT(3, av);
  s->ch = fuse_mount(mnt, &args);
  if (!s->ch) {
    fuse_opt_free_args(&args); free(s->mountpoint); free(s);
    napi_throw_error(env, NULL, "fuse_mount failed (libfuse says why on stderr)");
    return NULL;
  }
  s->se = fuse_lowlevel_new(&args, &OPS, sizeof OPS, s);
  fuse_opt_free_args(&args);
  if (!s->se) {
    fuse_unmount(mnt, s->ch); free(s->mountpoint); free(s);
    napi_throw_error(env, NULL, "fuse_lowlevel_new failed (bad options? libfuse says why on stderr)");
    return NULL;
  }
  fuse_session_add_chan(s->se, s->ch);
  int fd = fuse_chan_fd(s->ch);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  // Not inherited by the programs the daemon runs (umount, fusermount): one that outlived the
  // daemon would keep the connection open and the mount hanging instead of failing.
  fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
  s->bufsize = fuse_chan_bufsize(s->ch);
  napi_value recv;
  CHECK(napi_create_buffer(env, s->bufsize, (void **)&s->buf, &recv));
  CHECK(napi_create_reference(env, recv, 1, &s->recv_ref));
  CHECK(napi_create_reference(env, argv[2], 1, &s->dispatch));
  napi_value rn; napi_create_string_utf8(env, "mountd.fuse", NAPI_AUTO_LENGTH, &rn);
  CHECK(napi_async_init(env, NULL, rn, &s->ctx));
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  uv_poll_init(loop, &s->poll, fd);
  s->poll.data = s;
  s->spin_ns = (long)(spin_us * 1000);
  uv_poll_start(&s->poll, UV_READABLE, on_readable);
  s->polling = 1;
  napi_value ext, out, key;
  CHECK(napi_create_external(env, s, NULL, NULL, &ext));
  CHECK(napi_create_object(env, &out));
  napi_create_string_utf8(env, "session", NAPI_AUTO_LENGTH, &key); napi_set_property(env, out, key, ext);
  napi_create_string_utf8(env, "recv", NAPI_AUTO_LENGTH, &key); napi_set_property(env, out, key, recv);
  return out;
}

static void free_session(uv_handle_t *h) {
  struct session *s = h->data;
  free(s->mountpoint);
  free(s);
}

// unmount(session): stops polling, unmounts (if still mounted) and frees the session. Requests
// not answered by then are gone with it: no reply may be given for them afterwards.
static napi_value unmount_(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  struct session *s = session_of(env, argv[0]);
  if (!s || s->closed) return NULL;
  s->closed = 1;
  if (s->polling) { uv_poll_stop(&s->poll); s->polling = 0; }
  fuse_session_remove_chan(s->ch);
  fuse_unmount(s->mountpoint, s->ch);
  fuse_session_destroy(s->se);
  napi_delete_reference(env, s->dispatch);
  napi_delete_reference(env, s->recv_ref);
  napi_async_destroy(env, s->ctx);
  uv_close((uv_handle_t *)&s->poll, free_session);
  return NULL;
}

// ---- dropping what the kernel cached ----------------------------------------------------------

// A FUSE_NOTIFY_INVAL_INODE message (linux/fuse.h: struct fuse_out_header with unique 0 and the
// notify code in `error`, then struct fuse_notify_inval_inode_out), written as the kernel reads
// it rather than through libfuse's session, whose lifetime is the event loop's.
#define NOTIFY_INVAL_INODE 2
#define NOTIFY_INVAL_ENTRY 3
struct inval_msg { uint32_t len; int32_t code; uint64_t unique; uint64_t ino; int64_t off; int64_t length; };
// FUSE_NOTIFY_INVAL_ENTRY: the header, struct fuse_notify_inval_entry_out, then the name and a NUL.
struct inval_entry_msg { uint32_t len; int32_t code; uint64_t unique; uint64_t parent; uint32_t namelen; uint32_t flags; };

struct inval_job {
  int fd;                       // a dup of the session's /dev/fuse descriptor, closed when done
  size_t n;
  uint64_t *inos;
  size_t n_entries;             // names to drop from the kernel's directory cache: (parent, name)
  uint64_t *parents;
  char **names;
  int attrs_only;               // off -1: the attributes only, no page is dropped (nor waited for)
  int failed;                   // notifications the kernel refused for another reason than ENOENT
  int last_errno;
  napi_threadsafe_function done;
};

static void free_job(struct inval_job *j) {
  for (size_t i = 0; i < j->n_entries; i++) free(j->names[i]);
  free(j->names);
  free(j->parents);
  free(j->inos);
  free(j);
}

// The notifications are written from a thread of their own: the kernel drops a node's pages under
// their page locks, and a page being read is locked until the daemon answers its READ. Written
// from the event loop, which answers READs, that wait could never end; from libuv's pool, whose
// threads may all be taken by reads of the backing disk that such READs wait on, neither.
static void *inval_thread(void *p) {
  struct inval_job *j = p;
  for (size_t i = 0; i < j->n; i++) {
    // off 0, length 0: every page of the node, and its cached attributes; off -1: the attributes
    // only (a new ctime after a key re-seal or a metadata rewrite: the data did not change).
    struct inval_msg m = { sizeof m, NOTIFY_INVAL_INODE, 0, j->inos[i], j->attrs_only ? -1 : 0, 0 };
    ssize_t r;
    do r = write(j->fd, &m, sizeof m); while (r < 0 && errno == EINTR);
    // ENOENT: the kernel holds no such node (nothing cached to drop).
    if (r < 0 && errno != ENOENT) { j->failed++; j->last_errno = errno; }
  }
  for (size_t i = 0; i < j->n_entries; i++) {
    size_t namelen = strlen(j->names[i]);
    struct inval_entry_msg m = { (uint32_t)(sizeof m + namelen + 1), NOTIFY_INVAL_ENTRY, 0, j->parents[i], (uint32_t)namelen, 0 };
    struct iovec iov[2] = { { &m, sizeof m }, { j->names[i], namelen + 1 } };
    ssize_t r;
    do r = writev(j->fd, iov, 2); while (r < 0 && errno == EINTR);
    // ENOENT: the kernel holds no such name (nothing cached to drop).
    if (r < 0 && errno != ENOENT) { j->failed++; j->last_errno = errno; }
  }
  // The job belongs to the loop once handed over (inval_done frees it, maybe before the call
  // below returns): only the local copy of the function is used after.
  napi_threadsafe_function done = j->done;
  // napi_closing: the environment is ending (the process exits); nothing waits for the answer.
  // (mountd runs its mount on the main thread only: an environment that ended and freed the
  // function while this thread still wrote would be a Worker's, which never mounts.)
  if (napi_call_threadsafe_function(done, j, napi_tsfn_blocking) != napi_ok) {
    close(j->fd); free_job(j);
    return NULL;
  }
  napi_release_threadsafe_function(done, napi_tsfn_release);
  return NULL;
}

static void inval_done(napi_env env, napi_value cb, void *context, void *data) {
  struct inval_job *j = data;
  close(j->fd);
  if (env && cb) {
    napi_value argv[2] = { num(env, j->failed), num(env, j->last_errno) }, recv;
    napi_get_undefined(env, &recv);
    napi_call_function(env, recv, cb, 2, argv, NULL);
  }
  free_job(j);
}

// invalidate(session, nodeIds, done(failed, errno), parentIds?, names?): drops the kernel's cached
// pages and attributes of each node, then each (parent, name) from its directory cache, on a
// thread of its own; `done` runs on the loop when all were written. Returns false (and never
// calls `done`) if the session has ended.
static napi_value invalidate_(napi_env env, napi_callback_info info) {
  size_t argc = 6; napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_value res;
  struct session *s = argc >= 3 ? session_of(env, argv[0]) : NULL;
  if (!s) { napi_throw_type_error(env, NULL, "fuse-ll: invalidate(session, nodeIds, done, parentIds?, names?)"); return NULL; }
  if (s->closed) { napi_get_boolean(env, false, &res); return res; }
  uint32_t n = 0;
  CHECK(napi_get_array_length(env, argv[1], &n));
  struct inval_job *j = calloc(1, sizeof *j);
  if (j) j->inos = calloc(n ? n : 1, sizeof *j->inos);
  if (!j || !j->inos) {
    if (j) free(j);
    napi_throw_error(env, NULL, "fuse-ll: out of memory");
    return NULL;
  }
  j->n = n;
  for (uint32_t i = 0; i < n; i++) {
    napi_value v; double d = 0;
    napi_get_element(env, argv[1], i, &v);
    napi_get_value_double(env, v, &d);
    j->inos[i] = (uint64_t)d;
  }
  if (argc >= 6) { bool b = false; napi_get_value_bool(env, argv[5], &b); j->attrs_only = b; }
  uint32_t ne = 0;
  if (argc >= 5) {
    uint32_t nn = 0;
    CHECK(napi_get_array_length(env, argv[3], &ne));
    CHECK(napi_get_array_length(env, argv[4], &nn));
    if (nn != ne) { free_job(j); napi_throw_type_error(env, NULL, "fuse-ll: invalidate: as many names as parents"); return NULL; }
  }
  if (ne > 0) {
    j->parents = calloc(ne, sizeof *j->parents);
    j->names = calloc(ne, sizeof *j->names);
    if (!j->parents || !j->names) { free_job(j); napi_throw_error(env, NULL, "fuse-ll: out of memory"); return NULL; }
    for (uint32_t i = 0; i < ne; i++) {
      napi_value v; double d = 0; size_t len = 0;
      napi_get_element(env, argv[3], i, &v);
      napi_get_value_double(env, v, &d);
      j->parents[i] = (uint64_t)d;
      napi_get_element(env, argv[4], i, &v);
      if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok || len == 0 || len > 1024) {
        free_job(j); napi_throw_type_error(env, NULL, "fuse-ll: invalidate: a name is a non-empty string"); return NULL;
      }
      j->names[i] = malloc(len + 1);
      if (!j->names[i]) { free_job(j); napi_throw_error(env, NULL, "fuse-ll: out of memory"); return NULL; }
      napi_get_value_string_utf8(env, v, j->names[i], len + 1, &len);
      j->n_entries = i + 1;
    }
  }
  j->fd = fcntl(fuse_chan_fd(s->ch), F_DUPFD_CLOEXEC, 0);
  napi_value name; napi_create_string_utf8(env, "mountd.fuse.invalidate", NAPI_AUTO_LENGTH, &name);
  if (j->fd < 0 || napi_create_threadsafe_function(env, argv[2], NULL, name, 0, 1, NULL, NULL, NULL, inval_done, &j->done) != napi_ok) {
    if (j->fd >= 0) close(j->fd);
    free_job(j);
    napi_throw_error(env, NULL, "fuse-ll: cannot start an invalidation");
    return NULL;
  }
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int err = pthread_create(&t, &attr, inval_thread, j);
  pthread_attr_destroy(&attr);
  if (err) {
    napi_release_threadsafe_function(j->done, napi_tsfn_abort);
    close(j->fd); free_job(j);
    napi_throw_error(env, NULL, "fuse-ll: cannot start a thread for an invalidation");
    return NULL;
  }
  napi_get_boolean(env, true, &res);
  return res;
}

// ---- replies ----------------------------------------------------------------------------------

static void stat_from_scratch(struct stat *st) {
  const double *x = g_scratch;
  memset(st, 0, sizeof *st);
  st->st_ino = (ino_t)x[A_INO];
  st->st_mode = (mode_t)x[A_MODE];
  st->st_nlink = (nlink_t)x[A_NLINK];
  st->st_uid = (uid_t)x[A_UID];
  st->st_gid = (gid_t)x[A_GID];
  st->st_size = (off_t)x[A_SIZE];
  st->st_blocks = (blkcnt_t)x[A_BLOCKS];
  st->st_blksize = (blksize_t)x[A_BLKSIZE];
  st->st_rdev = (dev_t)x[A_RDEV];
  const double t[3] = { x[A_ATIME], x[A_MTIME], x[A_CTIME] };
  struct timespec *ts[3] = { &st->st_atim, &st->st_mtim, &st->st_ctim };
  for (int i = 0; i < 3; i++) {
    double sec = t[i] >= 0 ? (double)(long long)(t[i] / 1000) : -(double)(long long)((-t[i] + 999) / 1000);
    ts[i]->tv_sec = (time_t)sec;
    long ns = (long)((t[i] - sec * 1000) * 1e6);
    if (ns < 0) ns = 0;
    if (ns > 999999999) ns = 999999999;
    ts[i]->tv_nsec = ns;
  }
}

static int arg_int(napi_env env, napi_value v) { int32_t r = 0; napi_get_value_int32(env, v, &r); return r; }
static double arg_num(napi_env env, napi_value v) { double r = 0; napi_get_value_double(env, v, &r); return r; }

#define ARGS(nmax) size_t argc = nmax; napi_value argv[nmax]; napi_get_cb_info(env, info, &argc, argv, NULL, NULL)

// replyErr(req, errno): errno positive.
static napi_value reply_err(napi_env env, napi_callback_info info) {
  ARGS(2);
  fuse_reply_err(req_of(env, argv[0]), arg_int(env, argv[1]));
  return NULL;
}

// replyEntry(req, entryTimeout, attrTimeout): the node and its attributes from the scratch.
static void entry_from(napi_env env, napi_value *argv, struct fuse_entry_param *e) {
  memset(e, 0, sizeof *e);
  stat_from_scratch(&e->attr);
  e->ino = (fuse_ino_t)g_scratch[A_NODE];
  e->entry_timeout = arg_num(env, argv[1]);
  e->attr_timeout = arg_num(env, argv[2]);
}

static napi_value reply_entry(napi_env env, napi_callback_info info) {
  ARGS(3);
  struct fuse_entry_param e;
  entry_from(env, argv, &e);
  fuse_reply_entry(req_of(env, argv[0]), &e);
  return NULL;
}

// replyCreate(req, entryTimeout, attrTimeout, fh, directIo)
static napi_value reply_create(napi_env env, napi_callback_info info) {
  ARGS(5);
  struct fuse_entry_param e;
  entry_from(env, argv, &e);
  struct fuse_file_info fi;
  memset(&fi, 0, sizeof fi);
  fi.fh = (uint64_t)arg_num(env, argv[3]);
  fi.direct_io = arg_int(env, argv[4]) ? 1 : 0;
  fuse_reply_create(req_of(env, argv[0]), &e, &fi);
  return NULL;
}

// replyAttr(req, attrTimeout)
static napi_value reply_attr(napi_env env, napi_callback_info info) {
  ARGS(2);
  struct stat st;
  stat_from_scratch(&st);
  fuse_reply_attr(req_of(env, argv[0]), &st, arg_num(env, argv[1]));
  return NULL;
}

// replyOpen(req, fh, openFlags) -> 0, or -errno if the kernel took no answer (-ENOENT: the open
// was interrupted, and the handle is the caller's to release). openFlags: FOPEN_DIRECT_IO (1),
// FOPEN_NOFLUSH (32: no FLUSH request at close, Linux 5.16; older kernels ignore it). The
// struct fuse_open_out is written here: libfuse 2.9's fuse_file_info has no bit for NOFLUSH.
#define OPEN_FLAGS_KNOWN ((1 << 0) | (1 << 5))
static napi_value reply_open(napi_env env, napi_callback_info info) {
  ARGS(3);
  struct { uint64_t fh; uint32_t open_flags; uint32_t padding; } out;
  memset(&out, 0, sizeof out);
  out.fh = (uint64_t)arg_num(env, argv[1]);
  out.open_flags = (uint32_t)arg_int(env, argv[2]) & OPEN_FLAGS_KNOWN;
  return num(env, fuse_reply_buf(req_of(env, argv[0]), (const char *)&out, sizeof out));
}

// replyBuf(req, buffer, length): the first `length` bytes of `buffer` (copied out before return).
static napi_value reply_buf(napi_env env, napi_callback_info info) {
  ARGS(3);
  void *data = NULL; size_t len = 0;
  napi_get_buffer_info(env, argv[1], &data, &len);
  double n = arg_num(env, argv[2]);
  if (n < 0 || n > (double)len) { napi_throw_range_error(env, NULL, "fuse-ll: replyBuf length out of range"); return NULL; }
  fuse_reply_buf(req_of(env, argv[0]), data, (size_t)n);
  return NULL;
}

static napi_value reply_write(napi_env env, napi_callback_info info) {
  ARGS(2);
  fuse_reply_write(req_of(env, argv[0]), (size_t)arg_num(env, argv[1]));
  return NULL;
}

static napi_value reply_xattr(napi_env env, napi_callback_info info) {
  ARGS(2);
  fuse_reply_xattr(req_of(env, argv[0]), (size_t)arg_num(env, argv[1]));
  return NULL;
}

static napi_value reply_readlink(napi_env env, napi_callback_info info) {
  ARGS(2);
  size_t n = 0;
  napi_get_value_string_utf8(env, argv[1], NULL, 0, &n);
  char *target = malloc(n + 1);
  napi_get_value_string_utf8(env, argv[1], target, n + 1, &n);
  fuse_reply_readlink(req_of(env, argv[0]), target);
  free(target);
  return NULL;
}

// replyStatfs(req): scratch holds bsize, frsize, blocks, bfree, bavail, files, ffree, favail, fsid, flag, namemax.
static napi_value reply_statfs(napi_env env, napi_callback_info info) {
  ARGS(1);
  const double *x = g_scratch;
  struct statvfs sv;
  memset(&sv, 0, sizeof sv);
  sv.f_bsize = (unsigned long)x[0]; sv.f_frsize = (unsigned long)x[1];
  sv.f_blocks = (fsblkcnt_t)x[2]; sv.f_bfree = (fsblkcnt_t)x[3]; sv.f_bavail = (fsblkcnt_t)x[4];
  sv.f_files = (fsfilcnt_t)x[5]; sv.f_ffree = (fsfilcnt_t)x[6]; sv.f_favail = (fsfilcnt_t)x[7];
  sv.f_fsid = (unsigned long)x[8]; sv.f_flag = (unsigned long)x[9]; sv.f_namemax = (unsigned long)x[10];
  fuse_reply_statfs(req_of(env, argv[0]), &sv);
  return NULL;
}

// setScratch(Float64Array(SCRATCH_LEN)): the array attributes travel through, kept for good.
static napi_value set_scratch(napi_env env, napi_callback_info info) {
  ARGS(1);
  napi_typedarray_type type; size_t length; void *data; napi_value ab; size_t off;
  CHECK(napi_get_typedarray_info(env, argv[0], &type, &length, &data, &ab, &off));
  if (type != napi_float64_array || length < SCRATCH_LEN) { napi_throw_type_error(env, NULL, "fuse-ll: setScratch wants a Float64Array(16)"); return NULL; }
  if (g_scratch_ref) napi_delete_reference(env, g_scratch_ref);
  CHECK(napi_create_reference(env, argv[0], 1, &g_scratch_ref));
  g_scratch = data;
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor p[] = {
    {"mount", NULL, mount_, NULL, NULL, NULL, napi_default, NULL},
    {"unmount", NULL, unmount_, NULL, NULL, NULL, napi_default, NULL},
    {"invalidate", NULL, invalidate_, NULL, NULL, NULL, napi_default, NULL},
    {"setScratch", NULL, set_scratch, NULL, NULL, NULL, napi_default, NULL},
    {"replyErr", NULL, reply_err, NULL, NULL, NULL, napi_default, NULL},
    {"replyEntry", NULL, reply_entry, NULL, NULL, NULL, napi_default, NULL},
    {"replyCreate", NULL, reply_create, NULL, NULL, NULL, napi_default, NULL},
    {"replyAttr", NULL, reply_attr, NULL, NULL, NULL, napi_default, NULL},
    {"replyOpen", NULL, reply_open, NULL, NULL, NULL, napi_default, NULL},
    {"replyBuf", NULL, reply_buf, NULL, NULL, NULL, napi_default, NULL},
    {"replyWrite", NULL, reply_write, NULL, NULL, NULL, napi_default, NULL},
    {"replyXattr", NULL, reply_xattr, NULL, NULL, NULL, napi_default, NULL},
    {"replyReadlink", NULL, reply_readlink, NULL, NULL, NULL, napi_default, NULL},
    {"replyStatfs", NULL, reply_statfs, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof p / sizeof p[0], p);
  napi_value ops, v;
  napi_create_object(env, &ops);
  for (int i = 1; i < OP_COUNT; i++) { napi_create_int32(env, i, &v); napi_set_named_property(env, ops, OP_NAMES[i], v); }
  napi_set_named_property(env, exports, "ops", ops);
  napi_create_int32(env, SCRATCH_LEN, &v);
  napi_set_named_property(env, exports, "scratchLength", v);
  return exports;
}
NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
