#!/bin/sh
# check_dispatch.sh: the daemon with two engines behind one HTTP front
# (devices; src/serve/dispatch.c), driven by curl:
#   1. 32 concurrent greedy requests give exactly the text of a one-engine
#      daemon, and the metrics show them spread over both engines;
#   2. with the test hook MMMAMBA_FAIL_ENGINE=1:N, engine 1 faults mid-run:
#      only its own requests fail (500 engine_error), engine 0 has no error,
#      /health stays 200, engine 1 reports up 0, and the next requests all
#      succeed on engine 0;
#   3. with every engine faulted, requests fail and the daemon exits 1 by
#      itself (for systemd's Restart=on-failure).
# CI runs it on two CPU engines (the defaults). tests/serve/gpu_dispatch.sh
# runs it on two GPUs: BACKEND=cuda-fp32 DEVICES=0,1 REF_DEVICES=0 (exact tokens).
set -eu
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
. "$top_srcdir/tests/skip.sh"
. "$top_srcdir/tests/daemon.sh"
bin="$top_builddir/mmmambad"
tool="$top_builddir/mmmamba"
BACKEND=${BACKEND:-cpu}
DEVICES=${DEVICES:-2}         # the two-engine daemon
REF_DEVICES=${REF_DEVICES:-1} # the one-engine reference
PRESET=${PRESET:-tiny-linear}
command -v curl >/dev/null 2>&1 || mm_skip "curl missing"
mm_scratch
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
"$tool" mkmodel --preset "$PRESET" --seed 3 --out "$tmp/m" >/dev/null

# start NAME FLAGS...: a daemon on a free port; sets $pid and $url
start() {
  name=$1
  shift
  mm_daemon "$name" "$bin" --model "$tmp/m" --served-model-name m --backend "$BACKEND" --threads 2 \
    --http-threads 4 --max-seqs 8 --max-model-len 4096 "$@"
  pid=$mm_pid url="http://127.0.0.1:$mm_port"
}
stop() { kill -TERM "$pid" && wait "$pid" || fail "daemon exited $? after SIGTERM"; }

# metric NAME ENGINE: one per-engine value
metric() {
  curl -s "$url/metrics" | sed -n "s/^mmmamba:per_engine_$1{[^}]*engine=\"$2\"[^}]*} \([0-9.e+]*\)$/\1/p"
}

# body K MAX: a greedy /v1/completions body with prompt K (token ids)
body() {
  ids=1
  j=0
  while [ $j -lt $((4 + $1 % 23)) ]; do
    ids="$ids,$(( (($1 + 3) * 7919 + j * 104729) % 997 + 3 ))"
    j=$((j + 1))
  done
  printf '{"model":"m","prompt":[%s],"max_tokens":%d,"temperature":0,"ignore_eos":true}' "$ids" "$2"
}

# burst DIR N MAX: N concurrent requests; DIR/K gets the answer, DIR/K.code the status
burst() {
  mkdir -p "$1"
  k=0
  bp=""
  while [ $k -lt "$2" ]; do
    curl -s -o "$1/$k" -w '%{http_code}' "$url/v1/completions" -d "$(body $k "$3")" >"$1/$k.code" &
    bp="$bp $!"
    k=$((k + 1))
  done
  for p in $bp; do wait "$p" || true; done
}
text() { sed -n 's/.*"text":"\(.*\)","logprobs".*/\1/p' "$1"; }

# ---- 1. exactness and spread ------------------------------------------------------
start ref --devices "$REF_DEVICES"
burst "$tmp/ref" 32 16
stop
start two --devices "$DEVICES"
grep -q "engine 1 (" "$tmp/two.log" || fail "the startup log does not name engine 1"
burst "$tmp/two" 32 16
same=0
k=0
while [ $k -lt 32 ]; do
  if [ "$(cat "$tmp/two/$k.code")" = 200 ] && [ -n "$(text "$tmp/two/$k")" ] &&
     [ "$(text "$tmp/two/$k")" = "$(text "$tmp/ref/$k")" ]; then
    same=$((same + 1))
  elif [ $((k - same)) -lt 3 ]; then
    echo "request $k: $(head -c 300 "$tmp/two/$k") vs $(head -c 300 "$tmp/ref/$k")"
  fi
  k=$((k + 1))
done
echo "two engines vs one: $same of 32 answers identical"
[ $same -eq 32 ] || fail "two engines changed greedy answers ($same of 32 identical)"
p0=$(metric requests_placed_total 0)
p1=$(metric requests_placed_total 1)
echo "placed: engine 0 $p0, engine 1 $p1"
[ "${p0:-0}" -ge 8 ] && [ "${p1:-0}" -ge 8 ] && [ $((p0 + p1)) -eq 32 ] ||
  fail "requests not spread over both engines ($p0 + $p1)"
g1=$(metric generation_tokens_total 1)
[ "${g1%.*}" -eq $((p1 * 16)) ] 2>/dev/null || fail "engine 1 generated $g1 tokens, want $((p1 * 16))"
curl -s "$url/metrics" | grep -q '^vllm:generation_tokens_total{model_name="m"} 512$' ||
  fail "the summed generation tokens are not 512"
stop

# ---- 2. one engine faults mid-run ---------------------------------------------------
MMMAMBA_FAIL_ENGINE=1:40 start fault --devices "$DEVICES"
grep -q "fails on purpose" "$tmp/fault.log" || fail "the hook is not announced in the log"
burst "$tmp/f" 16 300
ok=0
bad=0
k=0
while [ $k -lt 16 ]; do
  case $(cat "$tmp/f/$k.code") in
    200) grep -q '"finish_reason":"length"' "$tmp/f/$k" && ok=$((ok + 1)) ;;
    500) grep -q '"code":"engine_error"' "$tmp/f/$k" && bad=$((bad + 1)) ;;
  esac
  k=$((k + 1))
done
e0=$(metric request_errors_total 0)
e1=$(metric request_errors_total 1)
echo "fault: $ok succeeded, $bad failed; errors on engine 0: $e0, engine 1: $e1"
[ $((ok + bad)) -eq 16 ] || fail "some answers were neither a success nor an engine error"
[ $bad -ge 1 ] || fail "no request failed with the faulted engine"
[ "${e0:-x}" = 0 ] || fail "engine 0 failed requests ($e0)"
[ "${e1:-x}" = "$bad" ] || fail "engine 1 errors ($e1) are not the failed requests ($bad)"
[ "$(metric up 1)" = 0 ] && [ "$(metric up 0)" = 1 ] || fail "per_engine_up is not 1, 0"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/health")" = 200 ] ||
  fail "/health is not 200 with one engine serving"
before=$(metric requests_placed_total 0)
burst "$tmp/g" 6 8
k=0
while [ $k -lt 6 ]; do
  [ "$(cat "$tmp/g/$k.code")" = 200 ] || fail "request $k after the fault: $(cat "$tmp/g/$k")"
  k=$((k + 1))
done
[ "$(metric requests_placed_total 0)" = $((before + 6)) ] ||
  fail "requests after the fault did not all go to engine 0"
grep -q "out of rotation" "$tmp/fault.log" || fail "the log does not say engine 1 left rotation"
stop

# ---- 3. every engine faults ---------------------------------------------------------
MMMAMBA_FAIL_ENGINE=0:1,1:1 start dead --devices "$DEVICES"
burst "$tmp/d" 2 4
k=0
while [ $k -lt 2 ]; do
  [ "$(cat "$tmp/d/$k.code")" = 500 ] || [ "$(cat "$tmp/d/$k.code")" = 503 ] ||
    fail "request $k with every engine failing: $(cat "$tmp/d/$k")"
  k=$((k + 1))
done
# nothing can serve any more: the daemon stops by itself, exit status 1, so
# that systemd (Restart=on-failure) starts a fresh one
i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
if kill -0 "$pid" 2>/dev/null; then
  fail "the daemon keeps running with every engine failed"
  stop
else
  st=0
  wait "$pid" || st=$?
  [ "$st" = 1 ] || fail "exit status $st with every engine failed (want 1)"
  grep -q "every engine failed" "$tmp/dead.log" || fail "the log does not say every engine failed"
fi

[ "$fails" -eq 0 ] || exit 1
echo "dispatch checks passed"
