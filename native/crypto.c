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
#include <node_api.h>
#include <openssl/evp.h>
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

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"sealInto", NULL, seal_into, NULL, NULL, NULL, napi_default, NULL},
    {"openInto", NULL, open_into, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 2, props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
