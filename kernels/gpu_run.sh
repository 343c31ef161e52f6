#!/bin/sh
# gpu_run.sh: one call on the GPU machine (a developer tool, not a test):
# build with -Werror, run the GPU suites (optionally under compute-sanitizer),
# the golden cases on cuda-fp32, and `mmmamba bench` on full-size presets.
# Logs go to $OUT. Usage: sh kernels/gpu_run.sh "tests|sanitizer|bench:PRESET:ARGS..."
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/summary.log"; }
if [ ! -x ./mmmamba ]; then
  (autoreconf -fi && ./configure --enable-werror && make -j16 && make -j16 check TESTS=) \
    >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
fi
log "build ok: $(grep -c warning "$OUT/build.log") warnings"
for phase in "$@"; do
  case $phase in
    tests)
      CK_FORK=no timeout 400 ./tests/engine/check_cuda_backend >"$OUT/suite.log" 2>&1
      log "check_cuda_backend rc=$?"; grep -E "round 1|variant|diverge|sampler|%:|Checks|FAIL|fail" "$OUT/suite.log" | tail -40 | tee -a "$OUT/summary.log"
      top_srcdir=. top_builddir=. PYTHON=python3 timeout 300 sh tests/engine/check_reference_cuda.sh >"$OUT/reference.log" 2>&1
      log "check_reference_cuda rc=$?"; tail -3 "$OUT/reference.log" | tee -a "$OUT/summary.log";;
    sanitizer)
      CK_FORK=no timeout 500 compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 \
        ./tests/engine/check_cuda_backend >"$OUT/sanitizer.log" 2>&1
      log "memcheck rc=$?"; grep -E "ERROR SUMMARY|Checks" "$OUT/sanitizer.log" | tee -a "$OUT/summary.log";;
    bench:*)
      preset=$(echo "$phase" | cut -d: -f2); args=$(echo "$phase" | cut -d: -f3- | tr ':' ' ')
      [ -d "/tmp/m-$preset" ] || ./mmmamba mkmodel --preset "$preset" --out "/tmp/m-$preset" >/dev/null
      # shellcheck disable=SC2086
      timeout 400 ./mmmamba bench --model "/tmp/m-$preset" --json "$OUT/bench-$preset.json" $args \
        2>&1 | tee "$OUT/bench-$preset.log"
      log "bench $preset: see bench-$preset.log";;
  esac
done
