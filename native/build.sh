#!/usr/bin/env bash
# Builds native/build/Release/fuse.node, fuse-native's C glue with mountd's fixes (see the head
# of native/fuse-native.c), against Node's headers, fuse-native's libfuse 2.9 headers and the
# system's libfuse.so.2; and native/build/crypto.node (native/crypto.c: not in build/Release,
# where node-gyp-build would take it for fuse-native's binary). Needs gcc;
# scripts/setup installs it when missing.
set -euo pipefail
cd "$(dirname "$0")"
out=build/Release/fuse.node
node_include="$(dirname "$(dirname "$(command -v node)")")/include/node"
[ -f "$node_include/node_api.h" ] || node_include="$(node -p "require('path').join(process.execPath, '..', '..', 'include', 'node')")"
[ -f "$node_include/node_api.h" ] || { echo "native/build.sh: Node's headers (node_api.h) are missing" >&2; exit 1; }
fuse_include=../node_modules/fuse-shared-library-linux/libfuse/include
napi_include=../node_modules/napi-macros
[ -f "$fuse_include/fuse.h" ] || { echo "native/build.sh: run npm ci first (fuse-native's headers are missing)" >&2; exit 1; }
# awk reads all of ldconfig's output (no early exit): under pipefail an early exit would kill
# ldconfig with SIGPIPE and this script with status 141 whenever the list outgrows a pipe buffer.
libfuse=$(ldconfig -p | awk '/libfuse\.so\.2 / && !found {print $NF; found=1}')
[ -n "$libfuse" ] || { echo "native/build.sh: libfuse.so.2 is missing (apt-get install libfuse2)" >&2; exit 1; }
mkdir -p build/Release
gcc -O2 -g -Wall -Wno-unused-result -fPIC -shared -D_FILE_OFFSET_BITS=64 \
  -I"$node_include" -I"$napi_include" -I"$fuse_include" \
  fuse-native.c -o "$out.tmp" "$libfuse" -lpthread
mv "$out.tmp" "$out"
echo "native: built native/$out"

# crypto.node: in-place AES-256-GCM (see the head of crypto.c). Its OpenSSL symbols are left
# undefined here and resolved against the node binary that loads it (Node exports them).
crypto_out=build/crypto.node
gcc -O2 -g -Wall -fPIC -shared -DNODE_GYP_MODULE_NAME=mountd_crypto \
  -I"$node_include" crypto.c -o "$crypto_out.tmp"
mv "$crypto_out.tmp" "$crypto_out"
echo "native: built native/$crypto_out"

# fuse-ll.node: mountd's low-level FUSE binding (see the head of fuse-ll.c), the mount's default.
ll_out=build/fuse-ll.node
gcc -O2 -g -Wall -fPIC -shared -D_FILE_OFFSET_BITS=64 -DNODE_GYP_MODULE_NAME=mountd_fuse_ll \
  -I"$node_include" -I"$fuse_include" fuse-ll.c -o "$ll_out.tmp" "$libfuse"
mv "$ll_out.tmp" "$ll_out"
echo "native: built native/$ll_out"

# io.node: preadv2(RWF_NOWAIT), a read of what the page cache holds without the thread pool (see
# the head of io.c).
io_out=build/io.node
gcc -O2 -g -Wall -fPIC -shared -D_FILE_OFFSET_BITS=64 -DNODE_GYP_MODULE_NAME=mountd_io \
  -I"$node_include" io.c -o "$io_out.tmp"
mv "$io_out.tmp" "$io_out"
echo "native: built native/$io_out"
