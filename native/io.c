// mountd's read of what the page cache already holds, on the calling thread.
//
// Every fs.read in Node goes through libuv's thread pool: the main thread queues the call and
// wakes a worker, the worker wakes the main thread when done. On the benchmark machine (a VM
// with 2 vCPUs, where waking a halted vCPU is an exit to the host) that round trip cost the main
// thread 100-200 us per read, for a copy out of the page cache that takes 1-10 us. preadv2 with
// RWF_NOWAIT (Linux 4.14) reads only what is cached and answers EAGAIN instead of waiting for the
// disk, so the engine (src/engine/FdFile.ts) reads cached data here and sends only the rest to
// the thread pool: the event loop never waits for the disk.
//
//   preadNoWait(fd, buffer, offset, length, position) -> bytes read (>= 0; fewer than asked when
//     the rest is not cached or past the end), or -errno (-EAGAIN: nothing of it is cached;
//     -EOPNOTSUPP: the file system cannot do this)
#define _GNU_SOURCE
#include <node_api.h>
#include <sys/uio.h>
#include <errno.h>
#include <stdint.h>

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

static napi_value pread_nowait(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 5) {
    napi_throw_type_error(env, NULL, "preadNoWait(fd, buffer, offset, length, position)");
    return NULL;
  }
  int32_t fd;
  double offset, length, position;
  bool is_ta = false;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_is_typedarray(env, argv[1], &is_ta) != napi_ok || !is_ta ||
      napi_get_value_double(env, argv[2], &offset) != napi_ok || napi_get_value_double(env, argv[3], &length) != napi_ok ||
      napi_get_value_double(env, argv[4], &position) != napi_ok) {
    napi_throw_type_error(env, NULL, "preadNoWait(fd, buffer, offset, length, position)");
    return NULL;
  }
  napi_typedarray_type type;
  size_t len, byte_offset;
  void *data;
  napi_value ab;
  if (napi_get_typedarray_info(env, argv[1], &type, &len, &data, &ab, &byte_offset) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "preadNoWait: buffer must be a Uint8Array");
    return NULL;
  }
  if (!(offset >= 0 && length >= 0 && position >= 0) || offset + length > (double)len || position > 9007199254740991.0) {
    napi_throw_range_error(env, NULL, "preadNoWait: offset, length or position out of range");
    return NULL;
  }
  struct iovec iov = { .iov_base = (uint8_t *)data + (size_t)offset, .iov_len = (size_t)length };
  ssize_t n;
  do n = preadv2(fd, &iov, 1, (off_t)position, RWF_NOWAIT); while (n < 0 && errno == EINTR);
  napi_value r;
  napi_create_double(env, n < 0 ? -(double)errno : (double)n, &r);
  return r;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "preadNoWait", NAPI_AUTO_LENGTH, pread_nowait, NULL, &fn);
  napi_set_named_property(env, exports, "preadNoWait", fn);
  return exports;
}
