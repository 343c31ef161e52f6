#!/bin/sh
# check_curl.sh: the clients/curl scripts run as written against the fake
# OpenAI server (with an API key), and against a real CPU mmmambad: each must
# exit 0 and print the documented shapes.
set -eu
. "${top_srcdir:-.}/tests/clients/lib.sh"
command -v curl >/dev/null || mm_skip "no curl"
command -v "$py" >/dev/null || mm_skip "no $py"
"$py" - "$tmp/px.png" <<'PY'
import struct, sys, zlib
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
raw = b"".join(b"\0" + bytes([90, 120, 200]) * 8 for _ in range(8))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
    + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
PY
c="$src/clients/curl"

# run_all WHO: every script against $MMMAMBA_BASE_URL; WHO=fake checks exact text.
run_all() {
  who=$1
  check "$who chat.sh" sh -c "sh '$c/chat.sh' 'Say \"hi\" \\\\ there' > '$tmp/chat.out'"
  check "$who chat.sh JSON" json_ok "$tmp/chat.out" \
    'r["object"] == "chat.completion" and r["choices"][0]["message"]["role"] == "assistant" and r["usage"]["completion_tokens"] >= 1'
  check "$who chat-stream.sh" sh -c "sh '$c/chat-stream.sh' hello > '$tmp/stream.out'"
  check "$who stream ends with [DONE]" sh -c "grep -v '^\$' '$tmp/stream.out' | tail -n 1 | grep -qx 'data: \[DONE\]'"
  check "$who stream chunks" "$py" - "$tmp/stream.out" <<'PY'
import json, sys
chunks = [json.loads(l[6:]) for l in open(sys.argv[1]) if l.startswith("data: {")]
assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks), chunks[:2]
assert any(c.get("usage") for c in chunks), "no usage chunk"
PY
  check "$who chat-image.sh" sh -c "sh '$c/chat-image.sh' '$tmp/px.png' 'What is it?' > '$tmp/image.out'"
  check "$who image JSON" json_ok "$tmp/image.out" 'r["object"] == "chat.completion"'
  check "$who completions.sh" sh -c "sh '$c/completions.sh' 'Once upon' > '$tmp/compl.out'"
  check "$who completions shapes" "$py" - "$tmp/compl.out" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
whole = json.loads(lines[0])
assert whole["object"] == "text_completion", whole
chunks = [json.loads(l[6:]) for l in lines if l.startswith("data: {")]
assert chunks and lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]", lines[-3:]
PY
  check "$who health.sh" sh -c "sh '$c/health.sh' > '$tmp/health.out'"
  check "$who health 200" grep -qx "health: 200" "$tmp/health.out"
}

start_fake curl --ttft-ms 5 --itl-ms 1 --api-key k-123
MMMAMBA_BASE_URL="http://127.0.0.1:$port/"
MMMAMBA_API_KEY=k-123
MAX_TOKENS=3
export MMMAMBA_BASE_URL MMMAMBA_API_KEY MAX_TOKENS
run_all fake
check "fake: image arrived" grep -q '"\[image/png [0-9]* bytes\] tok1 tok2 "' "$tmp/image.out"
sh "$c/chat.sh" 'Say "hi" \ there' > /dev/null
"$py" -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$port/_stats').read().decode())" > "$tmp/stats.json"
check "fake: prompt escaped" json_ok "$tmp/stats.json" \
  'r["last_body"]["messages"][1]["content"] == "Say \x22hi\x22 \x5c there"'
check "fake: exact stream text" sh -c "grep -o '\"content\": \"tok[0-9] \"' '$tmp/stream.out' | wc -l | grep -qx 3"
for m in "" mmmamba-fake; do # the key fails on the model lookup or on the request
  if MMMAMBA_MODEL=$m MMMAMBA_API_KEY=wrong sh "$c/chat.sh" hi > "$tmp/bad.out" 2>&1; then
    echo "FAIL: a wrong key succeeded"; fails=$((fails + 1))
  else
    check "wrong key: the error object is shown" grep -q '"authentication_error"' "$tmp/bad.out"
  fi
done

. "$src/tests/clients/daemon.sh"
start_daemon curl
MMMAMBA_BASE_URL="http://127.0.0.1:$port"
unset MMMAMBA_API_KEY
run_all daemon
finish
