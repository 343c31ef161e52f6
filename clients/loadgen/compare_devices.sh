#!/bin/sh
# compare_devices.sh: data-parallel scaling through the HTTP API. Starts
# mmmambad once per device set (e.g. "0" then "0,1"), runs mmmamba-loadgen
# at each concurrency against it, and prints one table: request and token
# throughput, TTFT and TPOT per device set and concurrency, then the
# speedup of each set over the first.
#
#   MODEL=/tmp/linear sh clients/loadgen/compare_devices.sh 0 0,1
#
# Environment (defaults in brackets): MODEL (required), BIN [.] where mmmambad
# and mmmamba-loadgen are, CONCURRENCY ["64 512"], PROMPTS_PER_CONC [2]
# (num-prompts = that x concurrency), INPUT_LEN [1024], OUTPUT_LEN [128],
# VOCAB [90000] (prompt ids drawn below it), DAEMON_FLAGS [sized for a GPU:
# --backend cuda --max-seqs 512 --max-batch-tokens 8192 --max-queue 4096],
# PORT [18090], RESULTS [a temporary directory] keeps the loadgen JSON and
# logs, RUN_TIMEOUT [300] seconds per loadgen run. Needs python3 for the table.
set -u
BIN=${BIN:-.}
: "${MODEL:?set MODEL to a checkpoint directory}"
CONCURRENCY=${CONCURRENCY:-"64 512"}
PROMPTS_PER_CONC=${PROMPTS_PER_CONC:-2}
INPUT_LEN=${INPUT_LEN:-1024}
OUTPUT_LEN=${OUTPUT_LEN:-128}
VOCAB=${VOCAB:-90000}
DAEMON_FLAGS=${DAEMON_FLAGS:-"--backend cuda --max-seqs 512 --max-batch-tokens 8192 --max-queue 4096"}
PORT=${PORT:-18090}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
RESULTS=${RESULTS:-$(mktemp -d)}
mkdir -p "$RESULTS"
[ $# -ge 1 ] || { echo "usage: MODEL=DIR $0 DEVICES [DEVICES...]   (e.g. 0 0,1)" >&2; exit 2; }
daemon=""
trap '[ -n "$daemon" ] && kill -9 "$daemon" 2>/dev/null' EXIT

for devs in "$@"; do
  tag=$(echo "$devs" | tr ',' '+')
  # shellcheck disable=SC2086
  "$BIN/mmmambad" --model "$MODEL" --host 127.0.0.1 --port "$PORT" --devices "$devs" \
    --max-model-len $((INPUT_LEN + OUTPUT_LEN + 64)) --access-log no $DAEMON_FLAGS \
    >"$RESULTS/daemon-$tag.log" 2>&1 &
  daemon=$!
  t0=$(date +%s)
  until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do
    kill -0 "$daemon" 2>/dev/null || { echo "mmmambad --devices $devs died:"; tail -5 "$RESULTS/daemon-$tag.log"; exit 1; }
    sleep 0.5
  done
  echo "devices $devs: serving after $(( $(date +%s) - t0 )) s"
  for c in $CONCURRENCY; do
    timeout "$RUN_TIMEOUT" "$BIN/mmmamba-loadgen" --base-url "http://127.0.0.1:$PORT" \
      --num-prompts $((c * PROMPTS_PER_CONC)) --max-concurrency "$c" \
      --random-input-len "$INPUT_LEN" --random-output-len "$OUTPUT_LEN" --ignore-eos \
      --vocab-size "$VOCAB" --disable-tqdm --label "d$tag-c$c" --result-dir "$RESULTS" \
      --result-filename "d$tag-c$c.json" >"$RESULTS/d$tag-c$c.txt" 2>&1 ||
      echo "loadgen devices $devs c$c: exit $? (see $RESULTS/d$tag-c$c.txt)"
    echo "devices $devs c$c: done"
  done
  curl -s "http://127.0.0.1:$PORT/metrics" | grep '^mmmamba:per_engine_requests_placed_total' \
    >"$RESULTS/placed-$tag.txt"
  kill -TERM "$daemon"
  wait "$daemon"
  daemon=""
done

python3 - "$RESULTS" "$CONCURRENCY" "$@" <<'EOF'
import json, os, re, sys
res, concs, sets = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
rows, base = [], {}
print(f"{'devices':8} {'conc':>5} {'done':>6} {'fail':>5} {'req/s':>7} {'out tok/s':>10} "
      f"{'total tok/s':>12} {'TTFT mean':>10} {'TTFT p50':>9} {'TTFT p99':>9} {'TPOT mean':>10} "
      f"{'speedup':>8}")
for s in sets:
    tag = s.replace(",", "+")
    for c in concs:
        p = os.path.join(res, f"d{tag}-c{c}.json")
        if not os.path.exists(p):
            print(f"{s:8} {c:>5}  (no result)")
            continue
        r = json.load(open(p))
        out = r.get("output_throughput", 0.0)
        base.setdefault(c, out)
        sp = out / base[c] if base[c] else 0.0
        print(f"{s:8} {c:>5} {r.get('completed', 0):>6} {r.get('failed', 0):>5} "
              f"{r.get('request_throughput', 0):>7.2f} {out:>10.0f} "
              f"{r.get('total_token_throughput', 0):>12.0f} {r.get('mean_ttft_ms', 0):>10.1f} "
              f"{r.get('median_ttft_ms', 0):>9.1f} {r.get('p99_ttft_ms', 0):>9.1f} "
              f"{r.get('mean_tpot_ms', 0):>10.2f} {sp:>7.2f}x")
    placed = os.path.join(res, f"placed-{tag}.txt")
    if os.path.exists(placed):
        m = [re.search(r'engine="(\d+)",device="([^"]*)"\} (\S+)', l) for l in open(placed)]
        print("   requests placed: " + ", ".join(f"engine {x[1]} ({x[2]}) {x[3]}" for x in m if x))
print("(TTFT and TPOT in ms; speedup = output tokens/s over the first device set's at the same "
      "concurrency)")
EOF
