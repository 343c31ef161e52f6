#!/bin/sh
# check_state_cache_disk.sh: the state cache's disk tier through the real
# daemon (state_cache_dir): a conversation stored with /v1/responses is
# continued after a restart over the same directory (its stored response and
# its state come back: x-mmmamba-state resumed, cached_tokens > 0) with the
# tokens of a daemon that never restarted; a host tier of a few states
# pushes states to disk and back with the same tokens; the disk bound holds; another model's daemon over the directory resumes nothing
# (404) and leaves the files; a damaged responses file is ignored with a
# warning; without the disk tier a restart forgets the response (404).
set -eu
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
. "$top_srcdir/tests/skip.sh"
. "$top_srcdir/tests/daemon.sh"
bin="$top_builddir/mmmambad"
tool="$top_builddir/mmmamba"
command -v python3 >/dev/null 2>&1 || mm_skip "python3 missing"
command -v curl >/dev/null 2>&1 || mm_skip "curl missing"
mm_scratch
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
"$tool" mkmodel --preset tiny-linear --seed 3 --out "$tmp/m" >/dev/null
"$tool" mkmodel --preset tiny-linear --seed 4 --out "$tmp/other" >/dev/null

# start NAME MODEL FLAGS...: one daemon at a time; sets $pid and $url
start() {
  name=$1 model=$2
  shift 2
  mm_daemon "$name" "$bin" --model "$tmp/$model" --served-model-name m --backend cpu --threads 1 "$@"
  pid=$mm_pid url="http://127.0.0.1:$mm_port"
}
stop() { kill -TERM "$pid"; wait "$pid" || fail "daemon exited $? after SIGTERM"; }

# turn FILE TEXT [PREV]: one /v1/responses turn; the body in FILE, the headers in FILE.h
turn() {
  prev=""
  [ -z "${3:-}" ] || prev=",\"previous_response_id\":\"$3\""
  curl -s -D "$1.h" -o "$1" "$url/v1/responses" -d "{\"model\":\"m\",\"input\":\"$2\",\
\"max_output_tokens\":12,\"temperature\":0,\"return_token_ids\":true$prev}"
}
field() { # FILE KEY: id | cached | ids
  python3 -c '
import json, sys
o = json.load(open(sys.argv[1]))
k = sys.argv[2]
print(o["id"] if k == "id" else o["usage"]["input_tokens_details"]["cached_tokens"] if k == "cached"
      else o["output_token_ids"] if k == "ids" else o.get("error", {}).get("code"))' "$1" "$2"
}
state() { tr -d '\r' <"$1.h" | sed -n 's/^x-mmmamba-state: //p'; }
metric() { curl -s "$url/metrics" | sed -n "s/^$1{[^}]*} \([0-9.e+]*\)$/\1/p"; }

# the reference: three turns on one daemon that never restarts
start ref m
turn "$tmp/r1" "hello there"
turn "$tmp/r2" "tell me more" "$(field "$tmp/r1" id)"
turn "$tmp/r3" "and then?" "$(field "$tmp/r2" id)"
stop

# 1. a restart in the middle of the conversation
start a m --state-cache-dir "$tmp/sc"
turn "$tmp/a1" "hello there"
turn "$tmp/a2" "tell me more" "$(field "$tmp/a1" id)"
stop
ls "$tmp/sc" | grep -q '\.state$' || fail "no state file after shutdown"
[ -f "$tmp/sc/responses.store" ] || fail "no responses file after shutdown"
start b m --state-cache-dir "$tmp/sc"
grep -q "stored responses kept from before" "$tmp/b.log" || fail "the responses were not loaded"
turn "$tmp/b3" "and then?" "$(field "$tmp/a2" id)"
echo "after a restart: state $(state "$tmp/b3"), cached $(field "$tmp/b3" cached)"
[ "$(state "$tmp/b3")" = resumed ] && [ "$(field "$tmp/b3" cached)" -gt 0 ] ||
  fail "the continuation after a restart was not resumed: $(head -c 300 "$tmp/b3")"
[ "$(field "$tmp/b3" ids)" = "$(field "$tmp/r3" ids)" ] || fail "tokens after a restart differ"
[ "${hits:=$(metric mmmamba:state_cache_disk_hits_total)}" -ge 1 ] 2>/dev/null ||
  fail "no disk hit counted ($hits)"
[ -n "$(metric mmmamba:state_cache_disk_queue_bytes)" ] || fail "no disk write queue gauge"
code=$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/responses/$(field "$tmp/a1" id)")
[ "$code" = 200 ] || fail "GET of a response from before the restart: $code"
stop

# 2. a host tier of about three states: most states go through the disk
rm -rf "$tmp/sc2"
start c m --state-cache-dir "$tmp/sc2" --state-cache-bytes 100k --state-cache-gpu no \
  --state-cache-disk-bytes 200k
turn "$tmp/c1" "hello there"
turn "$tmp/c2" "tell me more" "$(field "$tmp/c1" id)"
turn "$tmp/c3" "and then?" "$(field "$tmp/c2" id)"
for k in 1 2 3 4 5 6; do turn "$tmp/x$k" "filler number $k with some words"; done
turn "$tmp/c3b" "and then?" "$(field "$tmp/c2" id)"
for f in c3 c3b; do
  [ "$(field "$tmp/$f" ids)" = "$(field "$tmp/r3" ids)" ] || fail "$f: tokens differ"
done
writes=$(metric mmmamba:state_cache_disk_writes_total)
bytes=$(curl -s "$url/metrics" | sed -n 's/^mmmamba:state_cache_bytes{.*tier="disk"} \([0-9]*\)$/\1/p')
echo "small host tier: disk writes $writes, disk bytes $bytes, c3 cached $(field "$tmp/c3" cached)"
[ "${writes%.*}" -ge 3 ] || fail "states did not go to disk ($writes writes)"
[ "$bytes" -le 204800 ] || fail "the disk bound does not hold ($bytes bytes)"
[ "$(du -sb "$tmp/sc2" | cut -f1)" -le $((204800 + 8192)) ] || fail "the directory outgrew the bound"
[ "$(field "$tmp/c3" cached)" -gt 0 ] || fail "a continuation did not resume from disk"
stop

# 3. another model over the same directory: nothing of it is used or removed
n_before=$(ls "$tmp/sc" | grep -c '\.state$')
start d other --state-cache-dir "$tmp/sc"
grep -q "another model" "$tmp/d.log" || fail "no warning about another model's files"
turn "$tmp/d3" "and then?" "$(field "$tmp/a2" id)"
[ "$(field "$tmp/d3" code)" = response_not_found ] ||
  fail "another model resumed a response: $(head -c 200 "$tmp/d3")"
stop
[ "$(ls "$tmp/sc" | grep -c '\.state$')" -ge "$n_before" ] || fail "another model removed files"

# 4. a damaged responses file is ignored with a warning
start e m --state-cache-dir "$tmp/sc"
turn "$tmp/e1" "hello there"
stop
printf 'X' | dd of="$tmp/sc/responses.store" bs=1 seek=100 conv=notrunc 2>/dev/null
start f m --state-cache-dir "$tmp/sc"
grep -q "responses.store is damaged" "$tmp/f.log" || fail "no warning for a damaged responses file"
turn "$tmp/f2" "more" "$(field "$tmp/e1" id)"
[ "$(field "$tmp/f2" code)" = response_not_found ] || fail "a damaged file's response was used"
stop

# 5. without the disk tier a restart forgets
start g m
turn "$tmp/g1" "hello there"
stop
start h m
turn "$tmp/h2" "more" "$(field "$tmp/g1" id)"
[ "$(field "$tmp/h2" code)" = response_not_found ] || fail "a response survived a restart without the disk tier"
stop

[ "$fails" -eq 0 ] || exit 1
echo "disk tier checks passed"
