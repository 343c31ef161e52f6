#!/bin/bash
# gpu_dispatch.sh: data parallel on a host with two GPUs (kind nvidia-h200-x2),
# run by hand from a built tree (a developer tool, not part of `make check`):
#   1. the dispatch suite (tests/serve/check_dispatch.sh) on two CUDA engines;
#   2. the daemon on the full-size linear model with --devices 0, then 0,1,
#      mmmamba-loadgen at concurrency 64 and 512 with 1K-token prompts and 128
#      output tokens (num-prompts = 2 x concurrency): the 1-GPU vs 2-GPU
#      throughput and TTFT table (clients/loadgen/compare_devices.sh);
#   3. time permitting, `mmmamba bench --devices 0,1`: one decode point on one
#      GPU and on both at once.
# Logs and JSON go to $OUT (default /tmp/gpu-dispatch); the summary is
# printed and kept in $OUT/summary.txt. Aims to finish within 4 minutes.
#   . .device/env.sh && ./configure --enable-werror && make -j16 && bash tests/serve/gpu_dispatch.sh
set -u
OUT=${OUT:-/tmp/gpu-dispatch}
mkdir -p "$OUT"
S="$OUT/summary.txt"
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$S"; }
n_gpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
nvidia-smi -L >>"$S" 2>&1
[ "$n_gpu" -ge 2 ] || { log "needs two GPUs, found $n_gpu"; exit 77; }
[ -x ./mmmambad ] && [ -x ./mmmamba-loadgen ] || { log "build first (mmmambad, mmmamba-loadgen)"; exit 1; }
MODEL=${MODEL:-/tmp/linear}
if [ ! -f "$MODEL/config.json" ]; then
  ./mmmamba mkmodel --preset linear --seed 1 --out "$MODEL" >"$OUT/mkmodel.log" 2>&1 &
  MK=$!
else
  MK=""
fi

# 1. the dispatch suite on two GPUs in the CUDA backend's fp32 mode, where a
#    sequence's tokens do not depend on its batch (in bf16 the kernels chosen by
#    batch size change greedy tokens of the random tiny model between the
#    daemons: 23 of 32 identical on 2026-11-30)
BACKEND=cuda-fp32 DEVICES=0,1 REF_DEVICES=0 top_srcdir=. top_builddir=. \
  timeout 150 sh tests/serve/check_dispatch.sh >"$OUT/dispatch.log" 2>&1
log "check_dispatch.sh on cuda-fp32:0+1: rc=$? ($(grep -E 'identical|placed:|fault:|passed|FAIL' "$OUT/dispatch.log" | tr '\n' ';'))"
[ -n "$MK" ] && { wait "$MK" || { log "mkmodel failed"; tail -5 "$OUT/mkmodel.log" | tee -a "$S"; exit 1; }; }
log "model ready: $MODEL"

# 2. the daemon through HTTP: 1 GPU vs 2 GPUs
MODEL="$MODEL" BIN=. RESULTS="$OUT/loadgen" CONCURRENCY="64 512" PROMPTS_PER_CONC=2 \
  INPUT_LEN=1024 OUTPUT_LEN=128 RUN_TIMEOUT=100 \
  DAEMON_FLAGS="--backend cuda --max-seqs 512 --max-batch-tokens 8192 --max-queue 4096" \
  sh clients/loadgen/compare_devices.sh 0 0,1 >"$OUT/compare.log" 2>&1
log "compare_devices rc=$?"
tee -a "$S" <"$OUT/compare.log"
grep -hE 'engine [0-9] \(|error|fail' "$OUT"/loadgen/daemon-*.log | head -20 >>"$S"
# 3. bench, if time is left: batch 256 at 256 tokens of context on one GPU,
#    then on both at once
left=$(( 225 - ($(date +%s) - T0) ))
if [ "$left" -gt 40 ]; then
  timeout "$left" ./mmmamba bench --model "$MODEL" --devices 0,1 --batches 256 --contexts 256 \
    --prefill "" --capacity 0 --steps 10 --json "$OUT/bench.json" >"$OUT/bench.log" 2>&1
  log "bench rc=$?: $(grep -E '^(ceilings|decode|scaling)' "$OUT/bench.log" | tr -s ' ' | tr '\n' ';')"
else
  log "bench skipped (${left}s left)"
fi
log "total $(( $(date +%s) - T0 ))s"
