#!/bin/sh
# check_responses_cache.sh: /v1/responses continuations with the state cache
# (issue 13): a 10-turn conversation with an image a turn is served from the
# snapshot each answer left (x-mmmamba-state: resumed, cached_tokens cover the
# history) and gives the tokens of cold runs over the same ids; a daemon with
# --state-cache-bytes 0 rebuilds every turn from the stored ids (rebuilt, no
# cached tokens) and gives the same tokens. Needs the state cache in the
# scheduler: on a branch without it the `resumed` half fails by design.
set -eu
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
. "$top_srcdir/tests/skip.sh"
. "$top_srcdir/tests/daemon.sh"
bin="$top_builddir/mmmambad"
tool="$top_builddir/mmmamba"
here="$top_srcdir/tests/http"
. "$top_srcdir/tests/http/node_deps.sh"
mm_scratch
fails=0
"$tool" mkmodel --preset tiny-linear --seed 3 --out "$tmp/tiny" >/dev/null
KEY=test-key-$$

run() { # NAME EXPECT FLAGS...
  name=$1 expect=$2
  shift 2
  mm_daemon "$name" "$bin" --model "$tmp/tiny" --served-model-name tiny --backend cpu --threads 1 \
    --api-keys "$KEY" --max-batch-tokens 16384 "$@"
  pid=$mm_pid port=$mm_port
  NODE_DEPS_DIR="$deps" MMD_URL="http://127.0.0.1:$port" MMD_KEY="$KEY" MMD_MODEL=tiny \
    MMD_TOOL="$tool" MMD_MODEL_DIR="$tmp/tiny" MMD_TMP="$tmp" MMD_EXPECT_STATE="$expect" \
    node "$here/responses_cache.mjs" || { fails=$((fails + 1)); tail -20 "$tmp/$name.log"; }
  kill -TERM "$pid"
  wait "$pid" || true
}
run cache resumed
run nocache rebuilt --state-cache-bytes 0
[ "$fails" -eq 0 ]
