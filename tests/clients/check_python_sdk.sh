#!/bin/sh
# check_python_sdk.sh: the Python SDK's unittest suite (clients/python/tests)
# against the fake OpenAI server, and against a real mmmambad when one can be
# started (the daemon's DaemonTest cases skip otherwise).
set -eu
. "${top_srcdir:-.}/tests/clients/lib.sh"
command -v "$py" >/dev/null || { echo "no $py: skipping"; exit 77; }
if [ -x "$build/mmmambad" ] && [ -x "$build/mmmamba" ]; then
  . "$src/tests/clients/daemon.sh"
  start_daemon sdk
  MMMAMBA_TEST_BASE_URL="http://127.0.0.1:$port"
  export MMMAMBA_TEST_BASE_URL
fi
check "python SDK unittest" env PYTHONPATH="$src/clients/python" "$py" -m unittest discover \
  -s "$src/clients/python/tests" -v
grep -E "^(Ran|OK|FAILED)" "$tmp/check.out" || true
finish
