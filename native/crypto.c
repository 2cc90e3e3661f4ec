// mountd's in-place AES-256-GCM for 64 KiB packages: node:crypto's Cipheriv returns a fresh
// buffer for every update() and the engine then copied it again, so streaming I/O spent a
// quarter of its time in V8's garbage collector ("external memory pressure"). These two
// functions seal into and open into buffers the caller owns. They call the OpenSSL that Node
// itself carries (its EVP symbols are exported by the node binary), so the cipher is the same
// AES-NI code node:crypto uses. src/crypto/aead.ts falls back to node:crypto when this addon
// is missing, and test/crypto-native.test.ts checks both against @noble/ciphers.
//
//   sealInto(key[32], nonce[12], aad, plaintext, out[len(plaintext)+16]) -> undefined
//   openInto(key[32], nonce[12], aad, sealed, out[len(sealed)-16]) -> bool (false: not authentic; out zeroed)
//
//   md5New() -> hasher; md5Update(hasher, bytes); md5Digest(hasher) -> Promise<Buffer(16)>;
//   md5Abort(hasher)
//     An S3 PUT's ETag is the MD5 of its body, and MD5 (~700 MB/s here) took a third of the
//     main thread's time in a 1 GiB PUT. The first MD5_INLINE_BYTES are hashed inline (a small
//     PUT pays no thread); past them, copies of the chunks go to a thread of the hasher's own,
//     at most MD5_QUEUE_BYTES ahead of it (md5Update waits beyond that), and md5Digest resolves
//     when that thread has hashed the last one.
#include <node_api.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define TAG 16

static __thread EVP_CIPHER_CTX *ctx_tls;

static EVP_CIPHER_CTX *ctx_get(void) {
  if (!ctx_tls) ctx_tls = EVP_CIPHER_CTX_new();
  return ctx_tls;
}

typedef struct {
  uint8_t *p;
  size_t n;
} bytes_t;

static int get_bytes(napi_env env, napi_value v, bytes_t *b, const char *name) {
  bool is_ta = false;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) {
    napi_throw_type_error(env, NULL, name);
    return 0;
  }
  napi_typedarray_type type;
  size_t len;
  void *data;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &type, &len, &data, &ab, &off) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, name);
    return 0;
  }
  b->p = data;
  b->n = len;
  return 1;
}

static int get_args(napi_env env, napi_callback_info info, bytes_t a[5]) {
  size_t argc = 5;
  napi_value argv[5];
  static const char *names[5] = {"key: expected 32 bytes", "nonce: expected 12 bytes", "aad: expected bytes", "input: expected bytes", "out: expected bytes"};
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 5) {
    napi_throw_type_error(env, NULL, "expected 5 arguments");
    return 0;
  }
  for (int i = 0; i < 5; i++)
    if (!get_bytes(env, argv[i], &a[i], names[i])) return 0;
  if (a[0].n != 32) { napi_throw_type_error(env, NULL, names[0]); return 0; }
  if (a[1].n != 12) { napi_throw_type_error(env, NULL, names[1]); return 0; }
  if (a[2].n > 0x7fffffff || a[3].n > 0x7fffffff) { napi_throw_range_error(env, NULL, "input too large"); return 0; }
  return 1;
}

// Key, nonce and AAD into a fresh GCM operation: enc 1 seals, 0 opens.
static int gcm_begin(EVP_CIPHER_CTX *ctx, int enc, const bytes_t *key, const bytes_t *nonce, const bytes_t *aad) {
  int n = 0;
  return ctx && EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) == 1 &&
         EVP_CipherInit_ex(ctx, NULL, NULL, key->p, nonce->p, enc) == 1 &&
         (aad->n == 0 || EVP_CipherUpdate(ctx, NULL, &n, aad->p, (int)aad->n) == 1);
}

static napi_value seal_into(napi_env env, napi_callback_info info) {
  bytes_t a[5];
  if (!get_args(env, info, a)) return NULL;
  if (a[4].n != a[3].n + TAG) { napi_throw_range_error(env, NULL, "out: must be the plaintext's length + 16"); return NULL; }
  EVP_CIPHER_CTX *ctx = ctx_get();
  int n = 0, m = 0;
  int ok = gcm_begin(ctx, 1, &a[0], &a[1], &a[2]) &&
           (a[3].n == 0 || EVP_EncryptUpdate(ctx, a[4].p, &n, a[3].p, (int)a[3].n) == 1) &&
           EVP_EncryptFinal_ex(ctx, a[4].p + n, &m) == 1 &&
           EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG, a[4].p + a[3].n) == 1;
  if (!ok) {
    memset(a[4].p, 0, a[4].n);
    napi_throw_error(env, NULL, "AES-256-GCM seal failed");
  }
  return NULL;
}

static napi_value open_into(napi_env env, napi_callback_info info) {
  bytes_t a[5];
  if (!get_args(env, info, a)) return NULL;
  if (a[3].n < TAG || a[4].n != a[3].n - TAG) { napi_throw_range_error(env, NULL, "out: must be the sealed length - 16"); return NULL; }
  size_t len = a[3].n - TAG;
  uint8_t tag[TAG];
  memcpy(tag, a[3].p + len, TAG); // the input may alias the output
  EVP_CIPHER_CTX *ctx = ctx_get();
  int n = 0, m = 0;
  int ok = gcm_begin(ctx, 0, &a[0], &a[1], &a[2]) &&
           (len == 0 || EVP_DecryptUpdate(ctx, a[4].p, &n, a[3].p, (int)len) == 1) &&
           EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG, tag) == 1 &&
           EVP_DecryptFinal_ex(ctx, a[4].p + n, &m) == 1;
  if (!ok) memset(a[4].p, 0, a[4].n);
  napi_value result;
  napi_get_boolean(env, ok, &result);
  return result;
}


// ---- MD5 on a thread of its own ---------------------------------------------------------------

#define MD5_INLINE_BYTES (8u << 20)
#define MD5_QUEUE_BYTES (32u << 20)

typedef struct chunk {
  struct chunk *next;
  size_t n;
  unsigned char data[];
} chunk_t;

typedef struct {
  EVP_MD_CTX *md;
  size_t total;
  int threaded, stop, finished, ended;
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t more, room;
  chunk_t *head, *tail;
  size_t queued;
  unsigned char digest[16];
  int ok;
  napi_threadsafe_function done;   // set by md5Digest on a threaded hasher
  napi_deferred deferred;
  napi_ref self;                   // keeps the hasher alive until its digest is delivered
} hasher_t;

static void *hash_run(void *arg) {
  hasher_t *h = arg;
  for (;;) {
    pthread_mutex_lock(&h->mu);
    while (!h->head && !h->stop) pthread_cond_wait(&h->more, &h->mu);
    chunk_t *c = h->head;
    if (!c) { pthread_mutex_unlock(&h->mu); break; }
    h->head = c->next;
    if (!h->head) h->tail = NULL;
    pthread_mutex_unlock(&h->mu);
    if (h->ok) h->ok = EVP_DigestUpdate(h->md, c->data, c->n) == 1;
    pthread_mutex_lock(&h->mu);
    h->queued -= c->n;
    pthread_cond_signal(&h->room);
    pthread_mutex_unlock(&h->mu);
    free(c);
  }
  unsigned int len = 0;
  if (h->ok) h->ok = EVP_DigestFinal_ex(h->md, h->digest, &len) == 1;
  pthread_mutex_lock(&h->mu);
  h->finished = 1;
  napi_threadsafe_function done = h->done;
  pthread_mutex_unlock(&h->mu);
  if (done) napi_call_threadsafe_function(done, NULL, napi_tsfn_blocking);
  return NULL;
}

// Stops the thread (dropping what it has not hashed yet) and waits for it.
static void hash_stop(hasher_t *h) {
  if (!h->threaded) return;
  pthread_mutex_lock(&h->mu);
  chunk_t *c = h->head;
  h->head = h->tail = NULL;
  h->queued = 0;
  h->ok = 0;
  h->stop = 1;
  pthread_cond_broadcast(&h->more);
  pthread_cond_broadcast(&h->room);
  pthread_mutex_unlock(&h->mu);
  while (c) { chunk_t *n = c->next; free(c); c = n; }
  pthread_join(h->th, NULL);
  h->threaded = 0;
}

static void hasher_free(napi_env env, void *data, void *hint) {
  hasher_t *h = data;
  if (!h->ended) hash_stop(h);
  if (h->threaded) pthread_join(h->th, NULL);
  pthread_mutex_destroy(&h->mu);
  pthread_cond_destroy(&h->more);
  pthread_cond_destroy(&h->room);
  EVP_MD_CTX_free(h->md);
  free(h);
}

static hasher_t *hasher_of(napi_env env, napi_value v) {
  hasher_t *h = NULL;
  if (napi_get_value_external(env, v, (void **)&h) != napi_ok || !h) napi_throw_type_error(env, NULL, "not an MD5 hasher");
  else if (h->ended) { napi_throw_error(env, NULL, "MD5 hasher already ended"); h = NULL; }
  return h;
}

static napi_value md5_new(napi_env env, napi_callback_info info) {
  hasher_t *h = calloc(1, sizeof *h);
  if (!h) { napi_throw_error(env, NULL, "out of memory"); return NULL; }
  h->md = EVP_MD_CTX_new();
  h->ok = h->md && EVP_DigestInit_ex(h->md, EVP_md5(), NULL) == 1;
  pthread_mutex_init(&h->mu, NULL);
  pthread_cond_init(&h->more, NULL);
  pthread_cond_init(&h->room, NULL);
  napi_value ext;
  napi_create_external(env, h, hasher_free, NULL, &ext);
  return ext;
}

static napi_value md5_update(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  hasher_t *h = hasher_of(env, argv[0]);
  bytes_t b;
  if (!h || !get_bytes(env, argv[1], &b, "md5Update: bytes must be a Uint8Array")) return NULL;
  if (!h->threaded && h->total + b.n <= MD5_INLINE_BYTES) {
    if (h->ok && b.n) h->ok = EVP_DigestUpdate(h->md, b.p, b.n) == 1;
    h->total += b.n;
    return NULL;
  }
  if (!h->threaded) {
    if (pthread_create(&h->th, NULL, hash_run, h) != 0) {
      // No thread to be had: hash inline.
      if (h->ok && b.n) h->ok = EVP_DigestUpdate(h->md, b.p, b.n) == 1;
      h->total += b.n;
      return NULL;
    }
    h->threaded = 1;
  }
  h->total += b.n;
  if (!b.n) return NULL;
  chunk_t *c = malloc(sizeof *c + b.n);
  if (!c) { napi_throw_error(env, NULL, "out of memory"); return NULL; }
  c->next = NULL;
  c->n = b.n;
  memcpy(c->data, b.p, b.n);
  pthread_mutex_lock(&h->mu);
  while (h->queued > MD5_QUEUE_BYTES && !h->stop) pthread_cond_wait(&h->room, &h->mu);
  if (h->tail) h->tail->next = c; else h->head = c;
  h->tail = c;
  h->queued += c->n;
  pthread_cond_signal(&h->more);
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

static napi_value digest_value(napi_env env, hasher_t *h) {
  napi_value r;
  if (!h->ok) {
    napi_value msg;
    napi_create_string_utf8(env, "MD5 failed", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &r);
    return r;
  }
  void *out;
  napi_create_buffer_copy(env, 16, h->digest, &out, &r);
  return r;
}

static void digest_done(napi_env env, napi_value js_cb, void *context, void *data) {
  hasher_t *h = context;
  if (!env) return;
  pthread_join(h->th, NULL);
  h->threaded = 0;
  napi_value v = digest_value(env, h);
  if (h->ok) napi_resolve_deferred(env, h->deferred, v); else napi_reject_deferred(env, h->deferred, v);
  napi_release_threadsafe_function(h->done, napi_tsfn_release);
}

// The threadsafe function's finalizer: runs on the loop thread before Node frees the function,
// after the digest was delivered or at environment teardown (then with the thread maybe still
// hashing: it is joined here, while the function it will call is still allocated).
static void digest_tsfn_free(napi_env env, void *data, void *hint) {
  hasher_t *h = data;
  if (h->threaded) { pthread_join(h->th, NULL); h->threaded = 0; }
  napi_delete_reference(env, h->self);   // only now may the hasher be collected
}

static napi_value md5_digest(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  hasher_t *h = hasher_of(env, argv[0]);
  if (!h) return NULL;
  h->ended = 1;
  napi_value promise;
  napi_create_promise(env, &h->deferred, &promise);
  if (!h->threaded) {
    unsigned int len = 0;
    if (h->ok) h->ok = EVP_DigestFinal_ex(h->md, h->digest, &len) == 1;
    napi_value v = digest_value(env, h);
    if (h->ok) napi_resolve_deferred(env, h->deferred, v); else napi_reject_deferred(env, h->deferred, v);
    return promise;
  }
  napi_value name;
  napi_create_string_utf8(env, "mountd.md5", NAPI_AUTO_LENGTH, &name);
  napi_threadsafe_function tsfn;
  napi_create_reference(env, argv[0], 1, &h->self);
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, h, digest_tsfn_free, h, digest_done, &tsfn) != napi_ok) {
    napi_delete_reference(env, h->self);
    hash_stop(h);
    napi_value err; napi_create_string_utf8(env, "MD5: no threadsafe function", NAPI_AUTO_LENGTH, &err);
    napi_create_error(env, NULL, err, &err); napi_reject_deferred(env, h->deferred, err);
    return promise;
  }
  pthread_mutex_lock(&h->mu);
  h->done = tsfn;
  h->stop = 1;   // no more chunks: the thread finishes the queue, then the digest
  int finished = h->finished;
  pthread_cond_signal(&h->more);
  pthread_mutex_unlock(&h->mu);
  if (finished) napi_call_threadsafe_function(tsfn, NULL, napi_tsfn_blocking);
  return promise;
}

static napi_value md5_abort(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  hasher_t *h = NULL;
  napi_get_value_external(env, argv[0], (void **)&h);
  if (!h || h->ended) return NULL;
  h->ended = 1;
  hash_stop(h);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"sealInto", NULL, seal_into, NULL, NULL, NULL, napi_default, NULL},
    {"openInto", NULL, open_into, NULL, NULL, NULL, napi_default, NULL},
    {"md5New", NULL, md5_new, NULL, NULL, NULL, napi_default, NULL},
    {"md5Update", NULL, md5_update, NULL, NULL, NULL, napi_default, NULL},
    {"md5Digest", NULL, md5_digest, NULL, NULL, NULL, napi_default, NULL},
    {"md5Abort", NULL, md5_abort, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 6, props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
