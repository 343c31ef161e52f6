#!/bin/sh
# check_state_cache_daemon.sh: the state cache through the real mmmambad (CPU
# backend, tiny synthetic models, curl + the python3 standard library):
# /v1/completions and /v1/chat/completions report
# usage.prompt_tokens_details.cached_tokens; a prompt that begins with an
# earlier one's prompt, or with an earlier answer's history, starts from its
# state and answers exactly as a daemon with --state-cache-bytes 0 (which
# reports 0 cached tokens); the /metrics counters and gauges move. Also
# prints how often a multi-turn chat that re-sends its history (re-tokenised
# by the chat template) hits the state kept when the previous answer ended.
set -eu
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
. "$top_srcdir/tests/skip.sh"
. "$top_srcdir/tests/daemon.sh"
bin="$top_builddir/mmmambad"
tool="$top_builddir/mmmamba"
mm_scratch
command -v python3 >/dev/null 2>&1 || mm_skip "python3 missing"
command -v curl >/dev/null 2>&1 || mm_skip "curl missing"

# start NAME MODEL FLAGS...: runs a daemon; its port is in $tmp/NAME.port
start() {
  name=$1 model=$2
  shift 2
  mm_daemon "$name" "$bin" --model "$tmp/$model" --served-model-name m --backend cpu --threads 1 \
    --http-threads 2 --max-seqs 4 "$@"
  echo "$mm_port" >"$tmp/$name.port"
}

"$tool" mkmodel --preset tiny-linear --seed 3 --out "$tmp/linear" >/dev/null
"$tool" mkmodel --preset tiny-hybrid --seed 4 --out "$tmp/hybrid" >/dev/null
start lw linear
start lc linear --state-cache-bytes 0
start hw hybrid --kv-memory 8m
start hc hybrid --kv-memory 8m --state-cache-bytes 0
start hg hybrid --kv-memory 8m --state-cache-gpu no

cat >"$tmp/drive.py" <<'EOF'
import json, sys, urllib.request

def post(port, path, body):
    req = urllib.request.Request("http://127.0.0.1:%s%s" % (port, path),
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())

def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port, timeout=30) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out

fails = 0
def check(cond, what):
    global fails
    if not cond:
        fails += 1
        print("FAIL:", what)

warm, cold, label = sys.argv[1], sys.argv[2], sys.argv[3]
cached = lambda r: r["usage"]["prompt_tokens_details"]["cached_tokens"]

# token-id prompts: P, then P + more starts from P's state
P = [1] + [(37 * i) % 900 + 5 for i in range(40)]
for port in (warm, cold):
    r = post(port, "/v1/completions", {"model": "m", "prompt": P, "max_tokens": 1,
                                       "temperature": 0})
    check(cached(r) == 0, "%s: first request cached %d" % (label, cached(r)))
texts = {}
for port in (warm, cold):
    r = post(port, "/v1/completions", {"model": "m", "prompt": P + [7, 8, 9], "max_tokens": 12,
                                       "temperature": 0, "ignore_eos": True})
    texts[port] = (r["choices"][0]["text"], cached(r))
check(texts[warm][1] == len(P), "%s: continuation cached %d, want %d" % (label, texts[warm][1], len(P)))
check(texts[cold][1] == 0, "%s: --state-cache-bytes 0 cached %d" % (label, texts[cold][1]))
check(texts[warm][0] == texts[cold][0], "%s: text differs with the cache" % label)

# a chat conversation re-sending its history: same answers; how often it hits
hits = turns = 0
msgs = [{"role": "user", "content": "Describe the red circle."}]
for turn in range(4):
    ans = {}
    for port in (warm, cold):
        r = post(port, "/v1/chat/completions", {"model": "m", "messages": msgs, "max_tokens": 10,
                                                "temperature": 0})
        ans[port] = (r["choices"][0]["message"]["content"], cached(r), r["usage"]["prompt_tokens"],
                     r["usage"]["completion_tokens"])
    check(ans[warm][0] == ans[cold][0], "%s: chat turn %d differs with the cache" % (label, turn))
    check(ans[cold][1] == 0, "%s: chat without a cache reports cached tokens" % label)
    if turn > 0:
        # the state kept when the previous answer ended covers its prompt and
        # all its tokens but the last; the one kept after its prefill, its prompt
        full = prev[2] + prev[3] - 1
        turns += 1
        hits += ans[warm][1] == full
        print("%s chat turn %d: %d of %d prompt tokens cached (previous answer's state: %d, "
              "previous prompt's: %d)" % (label, turn, ans[warm][1], ans[warm][2], full, prev[2]))
    prev = ans[warm]
    msgs += [{"role": "assistant", "content": ans[warm][0]},
             {"role": "user", "content": "And the next one, number %d?" % turn}]
print("%s: a re-sent chat history hit the previous answer's state in %d of %d turns" %
      (label, hits, turns))

# a streamed answer carries the usage too
req = urllib.request.Request("http://127.0.0.1:%s/v1/completions" % warm,
    data=json.dumps({"model": "m", "prompt": P + [7, 8, 9, 10], "max_tokens": 3, "temperature": 0,
                     "stream": True, "stream_options": {"include_usage": True}}).encode(),
    headers={"Content-Type": "application/json"})
usage = None
with urllib.request.urlopen(req, timeout=120) as r:
    for line in r.read().decode().splitlines():
        if line.startswith("data: {"):
            o = json.loads(line[6:])
            if o.get("usage"):
                usage = o["usage"]
check(usage is not None and usage["prompt_tokens_details"]["cached_tokens"] > 0,
      "%s: streamed usage lacks cached tokens: %r" % (label, usage))

m = metrics(warm)
lab = '{model_name="m"}'
check(m.get("vllm:prefix_cache_hits_total" + lab, 0) >= len(P), "%s: prefix_cache_hits_total" % label)
check(m.get("vllm:prefix_cache_queries_total" + lab, 0) > m.get("vllm:prefix_cache_hits_total" + lab, 0),
      "%s: prefix_cache_queries_total" % label)
check(m.get('mmmamba:state_cache_requests_total{model_name="m",result="hit"}', 0) >= 2,
      "%s: hit requests" % label)
check(m.get('mmmamba:state_cache_snapshots_total' + lab, 0) >= 2, "%s: snapshots" % label)
kept = m.get('mmmamba:state_cache_bytes{model_name="m",tier="gpu"}', 0) + \
       m.get('mmmamba:state_cache_bytes{model_name="m",tier="host"}', 0)
check(kept > 0, "%s: no bytes kept in any tier" % label)
check(m.get("mmmamba:state_cache_capacity_bytes" + lab, 0) == 4 << 30, "%s: capacity" % label)
c = metrics(cold)
check(c.get("vllm:prefix_cache_hits_total" + lab, -1) == 0, "%s: hits without a cache" % label)
check(c.get("mmmamba:state_cache_capacity_bytes" + lab, -1) == 0, "%s: capacity without a cache" % label)
sys.exit(1 if fails else 0)
EOF

fails=0
python3 "$tmp/drive.py" "$(cat "$tmp/lw.port")" "$(cat "$tmp/lc.port")" linear || fails=$((fails + 1))
python3 "$tmp/drive.py" "$(cat "$tmp/hw.port")" "$(cat "$tmp/hc.port")" hybrid || fails=$((fails + 1))
python3 "$tmp/drive.py" "$(cat "$tmp/hg.port")" "$(cat "$tmp/hc.port")" hybrid-host-only || fails=$((fails + 1))
for n in lw lc hw hc hg; do
  if grep -q " error " "$tmp/$n.log"; then echo "FAIL: $n logged errors"; grep " error " "$tmp/$n.log" | head; fails=$((fails + 1)); fi
done
[ $fails -eq 0 ] && echo "PASS: state cache through HTTP" || exit 1
