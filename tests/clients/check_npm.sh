#!/bin/sh
# check_npm.sh: the clients/js example (the official openai npm package, v6)
# runs as written against the fake OpenAI server and against a real CPU
# mmmambad. The package is installed from the lockfile into a
# scratch copy (clients/js/node_modules is used when present); with no node,
# or no npm registry to install from, the test skips (fails in CI).
set -eu
. "${top_srcdir:-.}/tests/clients/lib.sh"
command -v node >/dev/null || mm_skip "no node"
command -v "$py" >/dev/null || mm_skip "no $py"
js="$tmp/js"
mkdir -p "$js"
cp "$src/clients/js/package.json" "$src/clients/js/package-lock.json" "$src/clients/js/chat.mjs" "$js/"
if [ -d "$src/clients/js/node_modules/openai" ]; then
  ln -s "$(cd "$src/clients/js" && pwd)/node_modules" "$js/node_modules"
elif ! command -v npm >/dev/null ||
     ! (cd "$js" && timeout 300 npm ci --no-audit --no-fund --loglevel=error) >"$tmp/npm.log" 2>&1; then
  cat "$tmp/npm.log" 2>/dev/null || true
  mm_skip "could not install the openai package (no npm or no registry)"
fi
"$py" - "$tmp/px.png" <<'PY'
import struct, sys, zlib
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
raw = b"".join(b"\0" + bytes([90, 120, 200]) * 8 for _ in range(8))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
    + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
PY

start_fake npm --ttft-ms 5 --itl-ms 1 --api-key k-9
check "node chat.mjs (fake)" env MMMAMBA_BASE_URL="http://127.0.0.1:$port" MMMAMBA_API_KEY=k-9 \
  MAX_TOKENS=3 node "$js/chat.mjs" "$tmp/px.png" "hello there"
cp "$tmp/check.out" "$tmp/fake.out"
check "fake: streamed text" grep -qx "stream: tok0 tok1 tok2 " "$tmp/fake.out"
check "fake: usage" grep -qx 'usage: {"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}' "$tmp/fake.out"
check "fake: image" grep -Eqx 'image: \[image/png [0-9]+ bytes\] tok1 tok2 ' "$tmp/fake.out"
check "fake: error object" grep -qx "error: 400 invalid_request_error" "$tmp/fake.out"

. "$src/tests/clients/daemon.sh"
start_daemon npm
check "node chat.mjs (daemon)" env MMMAMBA_BASE_URL="http://127.0.0.1:$port" MAX_TOKENS=4 \
  node "$js/chat.mjs" "$tmp/px.png" "hello there"
cp "$tmp/check.out" "$tmp/daemon.out"
check "daemon: stream and usage" grep -q '^usage: {"prompt_tokens":[0-9]*,"completion_tokens":[1-9]' "$tmp/daemon.out"
check "daemon: image answered" grep -q "^image: " "$tmp/daemon.out"
check "daemon: error object" grep -Eq "^error: 4[0-9][0-9] " "$tmp/daemon.out"
finish
