#!/bin/bash
# train/gpu_run.sh: the demo model's one GPU call (issue 14). Trains the demo model on the GPU
# while the engine builds on the other cores, then serves the checkpoint with the CUDA (bf16) and
# the CPU backends at once and measures, through HTTP: the shipped samples, the accuracy per task
# on 200 fresh pictures, and how often the greedy answers of the two backends agree.
# Run from the project root on the GPU machine (see train/GPU_RUN.md). Only a few files come back from
# $OUT (8 at most), so it holds four: log.txt (the summary), train.log, mmmamba-shapes.tar (the
# checkpoint with its model card and loss.tsv) and details.tar (build, daemon and eval logs,
# the answers as JSON). TRAIN_S: seconds of training (default 340); TRAIN_ARGS: more train.py flags.
# Two calls instead of one, for a longer training: MODE=train (train and tar the checkpoint only:
# TRAIN_S up to ~560 in a 600 s call), then MODE=eval MODEL=DIR (build, serve and measure a
# checkpoint that travelled with the tree, e.g. models/mmmamba-shapes: ~200 s). On a machine of two
# GPUs, MODE=train with TRAIN_ARGS_B trains a second recipe on the second GPU at the same time
# (train-b.log, mmmamba-shapes-b.tar); give each WORKERS=14 of the 32 cores.
set -u
MODE=${MODE:-all}
L=$OUT/log.txt
D=/tmp/details
mkdir -p $D
log() { echo "[$(date +%T)] $*" | tee -a "$L"; }
nvidia-smi -L >> "$L" 2>&1
log "python: $(python3 -c 'import sys, torch, PIL; print(sys.version.split()[0], torch.__version__, PIL.__version__)' 2>&1)"
M=/tmp/mmmamba-shapes
train() { # gpu out log args...: one training run on one GPU
  local gpu=$1 out=$2 tlog=$3
  shift 3
  ( CUDA_VISIBLE_DEVICES=$gpu python3 train/train.py --out "$out" --device cuda --workers "${WORKERS:-13}" --steps 0 \
      --time-budget "${TRAIN_S:-340}" --seed 1 --probe-every 250 --eval-n 100 "$@" > "$tlog" 2>&1
    echo "train $out rc $?" >> "$L" ) &
}
if [ "$MODE" != eval ]; then
  # shellcheck disable=SC2086
  train 0 $M "$OUT/train.log" ${TRAIN_ARGS:-}
  TR=$!
  if [ -n "${TRAIN_ARGS_B:-}" ]; then # MODE=train on two GPUs: a second recipe beside the first
    # shellcheck disable=SC2086
    train 1 $M-b "$OUT/train-b.log" ${TRAIN_ARGS_B}
    TRB=$!
  fi
else
  M=$(cd "$MODEL" && pwd)
fi
if [ "$MODE" != train ]; then
  . .device/env.sh
  ( autoreconf -fi && ./configure --enable-werror && nice -n 15 make -j6 ) > /tmp/build.log 2>&1 ||
    tail -40 /tmp/build.log > "$D/build-fail.log"
  log "built: $(ls mmmambad mmmamba 2>/dev/null | tr '\n' ' ')"
fi
if [ "$MODE" != eval ]; then
  wait $TR
  log "training done: $(grep -E 'speed|ended by|^eval ' "$OUT/train.log" | tr '\n' ';')"
  tar -C /tmp -cf "$OUT/mmmamba-shapes.tar" mmmamba-shapes
  if [ -n "${TRB:-}" ]; then
    wait $TRB
    log "training b done: $(grep -E 'speed|ended by|^eval ' "$OUT/train-b.log" | tr '\n' ';')"
    tar -C /tmp -cf "$OUT/mmmamba-shapes-b.tar" mmmamba-shapes-b
  fi
fi
if [ "$MODE" = train ]; then
  log "done"
  exit 0
fi
./mmmamba inspect $M > "$D/inspect.txt" 2>&1
log "inspect rc $?"
serve() { # backend port
  ./mmmambad --model $M --backend "$1" --host 127.0.0.1 --port "$2" --max-seqs 64 --max-queue 4096 \
    --access-log no > "$D/daemon-$1.log" 2>&1 &
}
serve cuda 18081
DC=$!
serve cpu 18082
DP=$!
for i in $(seq 1 120); do
  curl -sf http://127.0.0.1:18081/health > /dev/null && curl -sf http://127.0.0.1:18082/health > /dev/null && break
  sleep 0.5
done
log "daemons up"
for b in cuda:18081 cpu:18082; do
  python3 train/eval.py --url "http://127.0.0.1:${b#*:}" --samples train/samples > "$D/samples-${b%:*}.txt" 2>&1
  log "samples ${b%:*} rc $?: $(grep '| exact' "$D/samples-${b%:*}.txt")"
done
python3 train/eval.py --url http://127.0.0.1:18081 --n 200 --seed 2026 --concurrency 32 --save /tmp/ev-cuda \
  > "$D/eval-cuda.txt" 2>&1 &
EC=$!
timeout 170 python3 train/eval.py --url http://127.0.0.1:18082 --n 200 --seed 2026 --concurrency 32 \
  --save /tmp/ev-cpu > "$D/eval-cpu.txt" 2>&1
log "eval cpu rc $?"
wait $EC
log "eval cuda rc $?"
for b in cuda cpu; do
  echo "$b:" >> "$L"
  grep -E '^\|' "$D/eval-$b.txt" >> "$L"
done
python3 - >> "$L" 2>&1 <<'PY'
import json
a = json.load(open("/tmp/ev-cuda/results.json"))["answers"]
b = json.load(open("/tmp/ev-cpu/results.json"))["answers"]
same = sum(x["answer"] == y["answer"] for x, y in zip(a, b))
print("CUDA vs CPU greedy answers equal: %d of %d (%.1f%%)" % (same, len(a), 100.0 * same / len(a)))
for x, y in zip(a, b):
    if x["answer"] != y["answer"]:
        print("  differ %s %r: cuda %r cpu %r" % (x["picture"], x["question"], x["answer"], y["answer"]))
PY
cp /tmp/ev-cuda/results.json "$D/results-cuda.json" 2>/dev/null
cp /tmp/ev-cpu/results.json "$D/results-cpu.json" 2>/dev/null
kill $DC $DP
wait
tar -C /tmp -cf "$OUT/details.tar" details
log "done"
