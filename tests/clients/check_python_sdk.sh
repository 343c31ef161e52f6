#!/bin/sh
# check_python_sdk.sh: the Python SDK's unittest suite (clients/python/tests)
# against the fake OpenAI server, and its DaemonTest cases against a real CPU
# mmmambad started here.
set -eu
. "${top_srcdir:-.}/tests/clients/lib.sh"
command -v "$py" >/dev/null || mm_skip "no $py"
. "$src/tests/clients/daemon.sh"
start_daemon sdk
MMMAMBA_TEST_BASE_URL="http://127.0.0.1:$port"
export MMMAMBA_TEST_BASE_URL
check "python SDK unittest" env PYTHONPATH="$src/clients/python" "$py" -m unittest discover \
  -s "$src/clients/python/tests" -v
grep -E "^(Ran|OK|FAILED)" "$tmp/check.out" || true
finish
