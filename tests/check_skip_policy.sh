#!/bin/sh
# check_skip_policy.sh: the script tests skip (exit 77) when a tool they need
# is missing, except in CI (CI=true), where that is a failure (tests/skip.sh):
# CI must not pass with its most valuable checks not run.
set -u
src=${top_srcdir:-.}
fails=0
pass=0
expect_rc() { # name, wanted exit code, then the command
  name=$1 want=$2; shift 2
  "$@" > /dev/null 2>&1
  got=$?
  if [ "$got" -eq "$want" ]; then pass=$((pass + 1)); else
    echo "FAIL: $name: exit $got, expected $want"; fails=$((fails + 1)); fi
}
for t in tests/engine/check_reference.sh tests/model/check_image_conformance.sh; do
  expect_rc "$t without Python, outside CI" 77 env -u CI PYTHON=/nonexistent sh "$src/$t"
  expect_rc "$t without Python, in CI" 1 env CI=true PYTHON=/nonexistent sh "$src/$t"
done
for t in tests/clients/check_python_sdk.sh tests/clients/check_loadgen.sh; do
  expect_rc "$t without Python, outside CI" 77 env -u CI PYTHON=/nonexistent sh "$src/$t"
  expect_rc "$t without Python, in CI" 1 env CI=true PYTHON=/nonexistent sh "$src/$t"
done
t=tests/model/check_tokenizer_conformance.sh
expect_rc "$t without spm_*, outside CI" 77 env -u CI PATH=/nonexistent /bin/sh "$src/$t"
expect_rc "$t without spm_*, in CI" 1 env CI=true PATH=/nonexistent /bin/sh "$src/$t"
expect_rc "a GPU skip stays a skip in CI" 77 env CI=true /bin/sh -c ". \"$src/tests/skip.sh\"; mm_skip_gpu 'no GPU'"
echo "$pass passed, $fails failed"
[ "$fails" -eq 0 ]
