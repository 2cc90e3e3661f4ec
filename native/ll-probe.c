// A measuring probe for the benchmark (bench/roundtrip.mjs), not part of mountd: a libfuse 2.9
// low-level session driven from Node's own event loop (uv_poll on /dev/fuse), so that a request
// reaches JavaScript with no thread hand-off. fuse-native runs libfuse's high-level loop on its
// own threads and hands every request to the main thread and back (uv_async_send, a semaphore);
// the probe tells how much of the per-request floor that hand-off is. It answers lookup and
// getattr only: the root directory exists, nothing else does.
#define FUSE_USE_VERSION 29
#include <uv.h>
#include <node_api.h>
#include <fuse_lowlevel.h>
#include <string.h>
#include <stdlib.h>
#include <errno.h>
#include <sys/stat.h>

static napi_env g_env;
static napi_ref g_cb;
static struct fuse_session *g_se;
static struct fuse_chan *g_ch;
static uv_poll_t g_poll;
static char *g_buf;
static size_t g_bufsize;

static void call_js(const char *op, fuse_req_t req, fuse_ino_t ino, const char *name) {
  napi_handle_scope scope;
  napi_open_handle_scope(g_env, &scope);
  napi_value cb, global, argv[4], res;
  napi_get_reference_value(g_env, g_cb, &cb);
  napi_get_global(g_env, &global);
  napi_create_string_utf8(g_env, op, NAPI_AUTO_LENGTH, &argv[0]);
  napi_create_bigint_uint64(g_env, (uint64_t)(uintptr_t)req, &argv[1]);
  napi_create_double(g_env, (double)ino, &argv[2]);
  if (name) napi_create_string_utf8(g_env, name, NAPI_AUTO_LENGTH, &argv[3]); else napi_get_null(g_env, &argv[3]);
  napi_async_context ctx;
  napi_value rn; napi_create_string_utf8(g_env, "fuse", NAPI_AUTO_LENGTH, &rn);
  napi_async_init(g_env, NULL, rn, &ctx);
  napi_make_callback(g_env, ctx, global, cb, 4, argv, &res);
  napi_async_destroy(g_env, ctx);
  napi_close_handle_scope(g_env, scope);
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) { call_js("lookup", req, parent, name); }
static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) { call_js("getattr", req, ino, NULL); }

static struct fuse_lowlevel_ops ops = { .lookup = ll_lookup, .getattr = ll_getattr };

static void on_readable(uv_poll_t *h, int status, int events) {
  struct fuse_buf fbuf = { .mem = g_buf, .size = g_bufsize };
  struct fuse_chan *tmpch = g_ch;
  int res = fuse_session_receive_buf(g_se, &fbuf, &tmpch);
  if (res > 0) fuse_session_process_buf(g_se, &fbuf, tmpch);
  else if (res < 0 && res != -EINTR && res != -EAGAIN) uv_poll_stop(h);
}

static fuse_req_t req_of(napi_env env, napi_value v) { uint64_t r; bool lossless; napi_get_value_bigint_uint64(env, v, &r, &lossless); return (fuse_req_t)(uintptr_t)r; }

static napi_value reply_err(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value argv[2]; napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t e; napi_get_value_int32(env, argv[1], &e);
  fuse_reply_err(req_of(env, argv[0]), e);
  return NULL;
}

static napi_value reply_root_attr(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value argv[1]; napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  struct stat st; memset(&st, 0, sizeof st); st.st_ino = 1; st.st_mode = S_IFDIR | 0755; st.st_nlink = 2;
  fuse_reply_attr(req_of(env, argv[0]), &st, 1.0);
  return NULL;
}

static napi_value mount_(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value argv[2]; napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char mnt[1024]; size_t n; napi_get_value_string_utf8(env, argv[0], mnt, sizeof mnt, &n);
  g_env = env; napi_create_reference(env, argv[1], 1, &g_cb);
  char *av[] = { "llprobe", "-o", "fsname=llprobe", NULL };
  struct fuse_args args = FUSE_ARGS_INIT(3, av);
  g_ch = fuse_mount(mnt, &args);
  if (!g_ch) { napi_throw_error(env, NULL, "fuse_mount failed"); return NULL; }
  g_se = fuse_lowlevel_new(&args, &ops, sizeof ops, NULL);
  fuse_session_add_chan(g_se, g_ch);
  g_bufsize = fuse_chan_bufsize(g_ch); g_buf = malloc(g_bufsize);
  uv_loop_t *loop; napi_get_uv_event_loop(env, &loop);
  uv_poll_init(loop, &g_poll, fuse_chan_fd(g_ch));
  uv_poll_start(&g_poll, UV_READABLE, on_readable);
  return NULL;
}

static napi_value umount_(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value argv[1]; napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char mnt[1024]; size_t n; napi_get_value_string_utf8(env, argv[0], mnt, sizeof mnt, &n);
  uv_poll_stop(&g_poll); uv_close((uv_handle_t*)&g_poll, NULL);
  fuse_session_remove_chan(g_ch); fuse_unmount(mnt, g_ch); fuse_session_destroy(g_se);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor p[] = {
    {"mount", NULL, mount_, NULL, NULL, NULL, napi_default, NULL},
    {"unmount", NULL, umount_, NULL, NULL, NULL, napi_default, NULL},
    {"replyErr", NULL, reply_err, NULL, NULL, NULL, napi_default, NULL},
    {"replyRootAttr", NULL, reply_root_attr, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 4, p);
  return exports;
}
NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
