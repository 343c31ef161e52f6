#!/bin/bash
# flash_gpu.sh: one call on the GPU machine for flash.cu (a developer tool, not
# a test): build with -Werror, the "flash" case of check_cuda_backend, the
# same case under compute-sanitizer memcheck, full-size hybrid prefill with
# and without the flash path (and a profile of the flash run), then the whole
# GPU suite with the time left. Each phase has its own timeout so that all of
# it fits one 600 s device call. Results under $OUT: summary.log (read it
# first), flash.log, bench-flash.log, bench-split.log, logs.tar.gz (the rest).
# Usage, from the repository root with .device/ alongside:
#   bash kernels/flash_gpu.sh [PREFILL_LIST]     (default 8192,32768)
set -u
OUT=${OUT:-/tmp/gpu-out}
LOGS="$OUT/logs"
mkdir -p "$OUT" "$LOGS"
PREFILL=${1:-8192,32768}
BUDGET=570 # seconds for everything, under the device call's 600
left() { echo $((BUDGET - SECONDS > 10 ? BUDGET - SECONDS : 10)); }
log() { echo "== [${SECONDS}s] $*" | tee -a "$OUT/summary.log"; }
finish() {
  tar -C "$OUT" -czf "$OUT/logs.tar.gz" logs && rm -rf "$LOGS"
  exit 0
}
[ -f .device/env.sh ] && . .device/env.sh
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader >>"$OUT/summary.log" 2>&1

if [ ! -x ./mmmamba ]; then
  (autoreconf -fi && ./configure --enable-werror && make -j16 && make -j16 check TESTS=) \
    >"$LOGS/build.log" 2>&1 || { log "build FAILED"; tail -40 "$LOGS/build.log" >>"$OUT/summary.log"; finish; }
fi
log "build ok: $(grep -c warning "$LOGS/build.log") warnings"
# registers and shared memory of the kernel, as built (sm_90a)
"$(sed -n "s/^NVCC = //p" Makefile)" -gencode arch=compute_90a,code=sm_90a -O3 -std=c++17 -Isrc -Ikernels -Xptxas -v \
  -c -o /tmp/flash-ptxas.o kernels/flash.cu 2>&1 | grep -E "Compiling|registers" >>"$OUT/summary.log"

# 1. the kernel against the CPU and the split kernel, and whole models on vs off
CK_RUN_CASE=flash CK_FORK=no timeout 150 ./tests/engine/check_cuda_backend >"$OUT/flash.log" 2>&1
log "check_cuda_backend case flash rc=$?"
grep -E "^flash|Checks|Failure|FAIL|Error" "$OUT/flash.log" | tee -a "$OUT/summary.log"

# 2. memcheck over the same case
CK_RUN_CASE=flash CK_FORK=no timeout 150 compute-sanitizer --tool memcheck --leak-check no \
  --error-exitcode 9 ./tests/engine/check_cuda_backend >"$LOGS/sanitizer.log" 2>&1
log "memcheck (case flash) rc=$?"
grep -E "ERROR SUMMARY|Checks|Invalid|out of bounds" "$LOGS/sanitizer.log" | head -20 | tee -a "$OUT/summary.log"

# 3. full-size hybrid prefill, flash (default threshold) then the split kernel alone
[ -d /tmp/m-hybrid ] || timeout 150 ./mmmamba mkmodel --preset hybrid --seed 1 --out /tmp/m-hybrid \
  >"$LOGS/mkmodel.log" 2>&1 || log "mkmodel hybrid FAILED"
log "full-size hybrid checkpoint ready"
for mode in flash split; do
  if [ $mode = split ]; then export MMMAMBA_CUDA_FLASH=0; else unset MMMAMBA_CUDA_FLASH; fi
  timeout $(($(left) > 150 ? 150 : $(left))) ./mmmamba bench --model /tmp/m-hybrid --prefill "$PREFILL" \
    --batches 1 --contexts '' --capacity 0 --json "$LOGS/bench-$mode.json" >"$OUT/bench-$mode.log" 2>&1
  log "bench hybrid prefill $PREFILL ($mode) rc=$?"
  grep -E "^prefill|ceilings" "$OUT/bench-$mode.log" | tee -a "$OUT/summary.log"
done
unset MMMAMBA_CUDA_FLASH
# where an 8K prefill's time goes with flash (GPU time per kernel group), if time allows
if [ "$(left)" -gt 150 ]; then
  MMMAMBA_CUDA_PROFILE=1 timeout 90 ./mmmamba bench --model /tmp/m-hybrid --prefill 8192 \
    --batches 1 --contexts '' --capacity 0 >"$LOGS/profile-flash.log" 2>&1
  log "profile (flash, 8K) rc=$?"
  grep -iE "attention|gemm|scan|total" "$LOGS/profile-flash.log" | head -20 | tee -a "$OUT/summary.log"
fi

# 4. the whole GPU suite with the time left
CK_FORK=no timeout "$(left)" ./tests/engine/check_cuda_backend >"$LOGS/suite.log" 2>&1
log "check_cuda_backend (all cases) rc=$? (124: out of time)"
grep -E "Checks|Failure|FAIL" "$LOGS/suite.log" | tail -10 | tee -a "$OUT/summary.log"
finish
