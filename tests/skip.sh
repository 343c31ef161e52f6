# skip.sh: sourced by the script tests; how a test says it cannot run here.
# Outside CI a missing tool is a skip (exit 77, Automake's code). In CI
# (CI=true, which .ci/run exports) every tool a non-GPU test needs is meant
# to be installed, so a missing one is a failure: the valuable checks cannot
# pass by not running. Only a missing GPU skips everywhere.

# mm_skip REASON: this test cannot run here.
mm_skip() {
  if [ "${CI:-}" = true ]; then
    echo "FAIL: $* (CI=true: only GPU tests may skip)"
    exit 1
  fi
  echo "SKIP: $*"
  exit 77
}

# mm_skip_gpu REASON: no usable GPU; a skip in CI too.
mm_skip_gpu() {
  echo "SKIP: $*"
  exit 77
}

# mm_partial REASON: part of a test cannot run here. Returns 1 (skip that
# part) outside CI; fails the test in CI.
mm_partial() {
  if [ "${CI:-}" = true ]; then
    echo "FAIL: $* (CI=true: only GPU tests may skip)"
    exit 1
  fi
  echo "note: $*; that part is skipped"
  return 1
}
