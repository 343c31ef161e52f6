#!/bin/sh
# check_daemon.sh: the real mmmambad on a free loopback port (CPU backend, a
# tiny synthetic model), driven by curl and by the official `openai` npm
# package (sdk.mjs: every response and chunk validated against OpenAI's
# published schemas; abuse.mjs: every bad input and hostile connection).
# Then shutdown: SIGTERM during streams exits 0 within the drain deadline,
# and $NOTIFY_SOCKET receives READY=1 and STOPPING=1. A broken checkpoint is
# refused with a message naming the file.
#
# Node and npm are needed for the SDK parts; the npm packages (pinned in
# tests/http/package.json) are installed once into the build tree. Without
# node the suite skips (tests/skip.sh: a failure in CI).
set -eu
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
. "$top_srcdir/tests/skip.sh"
. "$top_srcdir/tests/daemon.sh"
bin="$top_builddir/mmmambad"
tool="$top_builddir/mmmamba"
here="$top_srcdir/tests/http"
mm_scratch
fails=0
pass=0
ok() { pass=$((pass + 1)); }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
KEY=test-key-$$

# ---- node and the npm packages -----------------------------------------------
. "$top_srcdir/tests/http/node_deps.sh"
command -v python3 >/dev/null 2>&1 || mm_skip "python3 (the notify-socket listener) missing"
command -v curl >/dev/null 2>&1 || mm_skip "curl missing"

# ---- models -----------------------------------------------------------------
"$tool" mkmodel --preset tiny-linear --seed 3 --out "$tmp/tiny" >/dev/null

# start NAME FLAGS...: runs the daemon, sets $pid and $port
start() {
  name=$1
  shift
  mm_daemon "$name" "$bin" --model "$tmp/tiny" --served-model-name tiny --backend cpu --threads 1 \
    --http-threads 2 --api-keys "$KEY" "$@"
  pid=$mm_pid port=$mm_port
}
# stop: SIGTERM, expect exit 0
stop() {
  kill -TERM "$pid"
  if wait "$pid"; then ok; else fail "daemon exited $? after SIGTERM"; tail -20 "$tmp/$name.log"; fi
}

# ---- a broken checkpoint is refused, naming the file -------------------------------
cp -r "$tmp/tiny" "$tmp/broken"
head -c 100 "$tmp/tiny/tokenizer.model" > "$tmp/broken/tokenizer.model"
if "$bin" --model "$tmp/broken" --port 0 --backend cpu >"$tmp/broken.log" 2>&1; then
  fail "a truncated tokenizer.model was served"
elif grep -q "tokenizer.model" "$tmp/broken.log"; then ok; else fail "message does not name tokenizer.model"; cat "$tmp/broken.log"; fi
if "$bin" --model "$tmp/nothere" --port 0 >"$tmp/missing.log" 2>&1; then
  fail "a missing model was served"
elif grep -q "$tmp/nothere" "$tmp/missing.log"; then ok; else fail "message does not name the directory"; cat "$tmp/missing.log"; fi

# ---- curl ---------------------------------------------------------------------------
datadir=$(cd "$top_srcdir/tests/data" && pwd)
start main --file-root "$datadir"
url="http://127.0.0.1:$port"
H="Authorization: Bearer $KEY"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/health")" = 200 ] && ok || fail "/health"
curl -s -H "$H" "$url/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model":"tiny","messages":[{"role":"user","content":"Hello"}],"max_tokens":8}' > "$tmp/c1"
grep -q '"object":"chat.completion"' "$tmp/c1" && grep -q '"finish_reason":"' "$tmp/c1" && ok ||
  { fail "curl chat"; cat "$tmp/c1"; }
curl -sN -H "$H" "$url/v1/chat/completions" \
  -d '{"model":"tiny","messages":[{"role":"user","content":"Hello"}],"max_tokens":8,"stream":true}' > "$tmp/s1"
[ "$(tail -n 2 "$tmp/s1" | head -n 1)" = "data: [DONE]" ] && grep -q '"delta":{"role":"assistant"' "$tmp/s1" && ok ||
  { fail "curl stream"; cat "$tmp/s1"; }
img=$(base64 -w0 "$top_srcdir/tests/data/red-square.png")
printf '{"model":"tiny","max_tokens":4,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,%s"}},{"type":"text","text":"What is this?"}]}]}' "$img" > "$tmp/img.json"
curl -s -H "$H" "$url/v1/chat/completions" -d @"$tmp/img.json" > "$tmp/c2"
grep -q '"prompt_tokens":[3-9][0-9][0-9]' "$tmp/c2" && ok || { fail "curl image"; cat "$tmp/c2"; }
printf '{"model":"tiny","max_tokens":2,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"file://%s/red-square.png"}}]}]}' "$datadir" > "$tmp/file.json"
curl -s -H "$H" "$url/v1/chat/completions" -d @"$tmp/file.json" > "$tmp/c4"
grep -q '"prompt_tokens":[3-9][0-9][0-9]' "$tmp/c4" && ok || { fail "file:// image under file_root"; cat "$tmp/c4"; }
printf '{"model":"tiny","max_tokens":2,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"file://%s/../../README.md"}}]}]}' "$datadir" > "$tmp/file2.json"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "$H" "$url/v1/chat/completions" -d @"$tmp/file2.json")" = 400 ] && ok ||
  fail "file:// outside file_root must be 400"
curl -s -H "$H" "$url/v1/completions" -d '{"model":"tiny","prompt":[1,1029,17,40],"max_tokens":4}' > "$tmp/c3"
grep -q '"object":"text_completion"' "$tmp/c3" && ok || { fail "curl completions"; cat "$tmp/c3"; }
# no max_tokens on /v1/completions: 16 tokens, OpenAI's and vLLM's default there
curl -s -H "$H" "$url/v1/completions" -d '{"model":"tiny","prompt":[1,1029,17,40],"ignore_eos":true}' > "$tmp/c16"
grep -q '"completion_tokens":16,' "$tmp/c16" && grep -q '"finish_reason":"length"' "$tmp/c16" && ok ||
  { fail "completions without max_tokens must stop at 16 tokens"; cat "$tmp/c16"; }
# a NUL byte (the byte piece <0x00>, id 3) is text like any other: escaped, never a cut
curl -s -H "$H" "$url/detokenize" -d '{"model":"tiny","tokens":[68,3,68]}' > "$tmp/nul"
grep -q '"prompt":"A\\u0000A"' "$tmp/nul" && ok || { fail "a NUL byte cut /detokenize"; cat "$tmp/nul"; }
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/models")" = 401 ] && ok || fail "no key must be 401"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "$H" -X DELETE "$url/v1/models")" = 405 ] && ok || fail "DELETE must be 405"
grep -q 'access id=.* POST /v1/chat/completions status=200 prompt_tokens=[0-9]* completion_tokens=[1-9][0-9]* ttft_ms=[0-9.]* duration_ms=' "$tmp/main.log" && ok ||
  fail "access log line"

# ---- the README's curl examples, as written (its daemon has no keys) --------------------
main_pid=$pid
main_port=$port
mm_daemon readme "$bin" --model "$top_srcdir/models/mmmamba-shapes" --backend cpu --threads 1
pid=$mm_pid rport=$mm_port name=readme
sed -n '/^<!-- curl examples/,/^<!-- end of curl examples/p' "$top_srcdir/README.md" | grep '^    ' |
  sed "s/^    //; s/127.0.0.1:8000/127.0.0.1:$rport/g" > "$tmp/readme.sh"
[ "$(grep -c curl "$tmp/readme.sh")" -ge 4 ] && ok || fail "README curl examples not found"
k=0
while IFS= read -r line; do
  k=$((k + 1))
  (cd "$top_srcdir" && sh -c "$line") > "$tmp/readme.$k" 2>"$tmp/readme.$k.err" || fail "README example $k failed: $line"
  case "$line" in
  *metrics*) grep -q '^vllm:generation_tokens_total{model_name="mmmamba-shapes"} [1-9]' "$tmp/readme.$k" && ok ||
    fail "README metrics example" ;;
  *red-circle-blue-square*) # the demo model's true answer, as the README says
    grep -q '"content":"A red circle to the left of a small blue square."' "$tmp/readme.$k" && ok ||
      { fail "README picture example: not the answer the README shows"; cat "$tmp/readme.$k"; } ;;
  *three-shapes*)
    grep -q '"content":"Green."' "$tmp/readme.$k" && ok ||
      { fail "README second picture example: not the answer the README shows"; cat "$tmp/readme.$k"; } ;;
  *'"stream": true'*) [ "$(tail -n 2 "$tmp/readme.$k" | head -n 1)" = "data: [DONE]" ] && ok ||
    { fail "README streaming example"; cat "$tmp/readme.$k"; } ;;
  *) grep -q '"choices":\[{' "$tmp/readme.$k" && ok || { fail "README example $k: $line"; cat "$tmp/readme.$k"; } ;;
  esac
done < "$tmp/readme.sh"
stop
pid=$main_pid
port=$main_port
name=main

# ---- the SDK and the schemas --------------------------------------------------------------
export NODE_DEPS_DIR="$deps" MMD_URL="$url" MMD_KEY="$KEY" MMD_MODEL=tiny
node "$here/sdk.mjs" || fail "sdk.mjs"
stop

# ---- /v1/responses: the SDK, the schemas, conversations against cold runs -------------------
# two keys (each sees only its own responses), a small store, prefills in one step
# (the cold runs of `mmmamba generate` prefill whole prompts too)
start responses --api-keys "$KEY,$KEY-2" --responses-max 12 --max-batch-tokens 16384
MMD_URL="http://127.0.0.1:$port" MMD_KEY2="$KEY-2" MMD_TOOL="$tool" MMD_MODEL_DIR="$tmp/tiny" \
  MMD_TMP="$tmp" node "$here/responses.mjs" || fail "responses.mjs"
stop

# ---- a hybrid checkpoint (attention layers: KV blocks) with a small KV pool ----------------
"$tool" mkmodel --preset tiny-hybrid --seed 4 --out "$tmp/hybrid" >/dev/null
mm_daemon hybrid "$bin" --model "$tmp/hybrid" --backend cpu --threads 1 --kv-memory 4m --max-seqs 3
pid=$mm_pid hport=$mm_port name=hybrid
sed 's/"model":"tiny"/"model":"hybrid"/' "$tmp/img.json" > "$tmp/himg.json"
curl -s "http://127.0.0.1:$hport/v1/chat/completions" -d @"$tmp/himg.json" > "$tmp/h1"
grep -q '"finish_reason":"' "$tmp/h1" && ok || { fail "hybrid image chat"; cat "$tmp/h1"; tail "$tmp/hybrid.log"; }
cpids=""
for k in 1 2 3 4; do
  curl -s "http://127.0.0.1:$hport/v1/chat/completions" -d '{"model":"hybrid","n":2,"max_tokens":40,"messages":[{"role":"user","content":"Count the shapes."}]}' > "$tmp/h2.$k" &
  cpids="$cpids $!"
done
for c in $cpids; do wait "$c" || true; done
for k in 1 2 3 4; do grep -q '"index":1' "$tmp/h2.$k" && ok || { fail "hybrid n=2 request $k"; cat "$tmp/h2.$k"; }; done
curl -s "http://127.0.0.1:$hport/metrics" | grep -q 'mmmamba:kv_blocks_total{model_name="hybrid",stack="llm"} [1-9]' && ok ||
  fail "hybrid: KV blocks in the metrics"
stop

# ---- bad input and hostile clients, against small limits -------------------------------------
start abuse --max-queue 8 --max-seqs 2 --max-body-bytes 1m --max-prompt-bytes 64k \
  --max-model-len 4096 --max-images 3 --connection-timeout 2 --ping-interval 100 --max-connections 1000 --max-header-bytes 16k
MMD_URL="http://127.0.0.1:$port" node "$here/abuse.mjs" || fail "abuse.mjs"
stop

# ---- one event loop: slow preparation (large images on /tokenize) runs on a worker ---------
start oneloop --http-threads 1
MMD_URL="http://127.0.0.1:$port" node "$here/one_loop.mjs" || fail "one_loop.mjs"
stop

# ---- SIGTERM during streams, and the notify socket ----------------------------------------------
python3 - "$tmp/notify.sock" > "$tmp/notify.txt" <<'EOF' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(120)
while True:
    try:
        d = s.recv(4096).decode()
    except socket.timeout:
        break
    print(d.replace("\n", " | "), flush=True)
    if "STOPPING=1" in d:
        break
EOF
listener=$!
pids="$pids $listener"
i=0
while [ ! -S "$tmp/notify.sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
NOTIFY_SOCKET="$tmp/notify.sock" WATCHDOG_USEC=400000 start drain --drain-timeout 3 --max-seqs 4 --ping-interval 100
i=0
while [ $i -lt 100 ] && ! grep -q "READY=1" "$tmp/notify.txt"; do sleep 0.05; i=$((i + 1)); done
grep -q "READY=1" "$tmp/notify.txt" && ok || { fail "no READY=1 on the notify socket"; cat "$tmp/notify.txt"; }
url="http://127.0.0.1:$port"
long='{"model":"tiny","messages":[{"role":"user","content":"Go"}],"max_tokens":30000,"ignore_eos":true,"stream":true}'
short='{"model":"tiny","messages":[{"role":"user","content":"Go"}],"max_tokens":300,"ignore_eos":true,"stream":true}'
# three long streams and a short one: the short one finishes within the
# deadline, the long ones are cut at it
cpids=""
for k in 1 2 3; do
  curl -sN -H "$H" "$url/v1/chat/completions" -d "$long" > "$tmp/long$k" &
  cpids="$cpids $!"
done
i=0
while [ $i -lt 400 ] && ! grep -q content "$tmp/long3" 2>/dev/null; do sleep 0.05; i=$((i + 1)); done
curl -sN -H "$H" "$url/v1/chat/completions" -d "$short" > "$tmp/short" &
cpids="$cpids $!"
i=0
while [ $i -lt 400 ] && ! grep -q content "$tmp/short" 2>/dev/null; do sleep 0.02; i=$((i + 1)); done
t0=$(date +%s)
kill -TERM "$pid"
if wait "$pid"; then ok; else fail "exit status $? after SIGTERM during streams"; tail -20 "$tmp/drain.log"; fi
t1=$(date +%s)
[ $((t1 - t0)) -le 10 ] && ok || fail "drain took $((t1 - t0)) s (deadline 3 s)"
for c in $cpids; do wait "$c" || true; done
for f in long1 long2 long3; do
  [ "$(tail -n 2 "$tmp/$f" | head -n 1)" = "data: [DONE]" ] && grep -q '"code":"cancelled"' "$tmp/$f" && ok ||
    { fail "stream $f not cut cleanly at the deadline"; tail -c 400 "$tmp/$f"; }
done
grep -q '"finish_reason":"length"' "$tmp/short" && [ "$(tail -n 2 "$tmp/short" | head -n 1)" = "data: [DONE]" ] && ok ||
  { fail "a running stream did not finish during the drain"; tail -c 400 "$tmp/short"; }
grep -q "WATCHDOG=1" "$tmp/notify.txt" && ok || { fail "no WATCHDOG=1 with WATCHDOG_USEC set"; cat "$tmp/notify.txt"; }
grep -q "STOPPING=1" "$tmp/notify.txt" && grep -q "STATUS=serving tiny" "$tmp/notify.txt" && ok || { fail "no STOPPING=1 on the notify socket"; cat "$tmp/notify.txt"; }

echo "check_daemon: $pass shell checks passed, $fails failed"
[ "$fails" -eq 0 ]
