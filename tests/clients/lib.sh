# lib.sh: shell helpers shared by the client tests (sourced, not run):
# a temp dir cleaned on exit, background servers stopped on exit, waiting for
# a port file, JSON assertions through Python's standard library, and
# pass/fail counting that ends with the "N passed, N failed" line. A missing
# tool skips through tests/skip.sh (a failure in CI, where all are installed).
. "${top_srcdir:-.}/tests/skip.sh"
py=${PYTHON:-python3}
src=${top_srcdir:-.}
build=${top_builddir:-.}
tmp=$(mktemp -d)
pids=""
pass=0
fails=0
cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  for p in $pids; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# bg CMD...: runs CMD in the background, remembered for cleanup.
bg() {
  "$@" &
  pids="$pids $!"
}

# wait_file PATH [SECONDS]: until PATH exists (a server wrote its port).
wait_file() {
  i=0
  while [ ! -s "$1" ]; do
    i=$((i + 1))
    [ $i -le $((${2:-20} * 10)) ] || { echo "timed out waiting for $1" >&2; return 1; }
    sleep 0.1
  done
}

# start_fake NAME [fake_openai.py args...]: a fake server; sets $port.
start_fake() {
  name=$1; shift
  bg "$py" "$src/tests/clients/fake_openai.py" --port-file "$tmp/$name.port" "$@" >/dev/null
  wait_file "$tmp/$name.port"
  port=$(cat "$tmp/$name.port")
}

# check NAME CMD...: CMD must succeed.
check() {
  name=$1; shift
  if "$@" >"$tmp/check.out" 2>&1; then
    pass=$((pass + 1))
  else
    echo "FAIL: $name"; sed 's/^/  | /' "$tmp/check.out" | tail -30
    fails=$((fails + 1))
  fi
}

# json_ok FILE EXPR: the Python expression EXPR is true of r = the JSON in FILE.
json_ok() {
  "$py" - "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ok = eval(sys.argv[2], {"r": r})
if not ok:
    keys = {k: v for k, v in r.items() if not isinstance(v, list)}
    print("false:", sys.argv[2]); print(json.dumps(keys, indent=1)[:3000])
sys.exit(0 if ok else 1)
PY
}

# finish: prints the summary and exits non-zero on a failure.
finish() {
  if [ "$fails" -gt 0 ]; then # what the daemons said, for the failures above
    for f in "$tmp"/daemon-*.log; do
      [ -f "$f" ] || continue
      echo "--- the end of $(basename "$f")"
      tail -n 40 "$f"
    done
  fi
  echo "$pass passed, $fails failed"
  [ "$fails" -eq 0 ]
}
