# daemon.sh: sourced by the script tests that start real daemons (after tests/skip.sh).

# mm_scratch: $tmp, a fresh scratch folder, and an exit trap that kills every daemon in $pids
# (mm_daemon adds each one it starts) and removes $tmp. Call it before the first mm_daemon.
mm_scratch() {
  tmp=$(mktemp -d)
  pids=""
  trap 'for p in $pids; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$tmp"' EXIT
}

# mm_daemon NAME BIN ARGS...: starts BIN ARGS... --host 127.0.0.1 --port 0 in the background
# with its output in $tmp/NAME.log and returns once the log says it serves: its pid in
# $mm_pid (also added to $pids, which the tests' exit traps kill) and its port in $mm_port.
# When it exits or does not come up within two minutes, prints its log and ends the test.
mm_daemon() {
  mm_name=$1 mm_bin=$2
  shift 2
  : >"$tmp/$mm_name.log" # exists before the background start opens it: the loop reads it at once
  "$mm_bin" "$@" --host 127.0.0.1 --port 0 >>"$tmp/$mm_name.log" 2>&1 &
  mm_pid=$!
  pids="${pids:-} $mm_pid"
  mm_port=""
  mm_i=0
  while [ $mm_i -lt 1200 ]; do
    mm_port=$(sed -n 's|.*serving .* on http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$tmp/$mm_name.log")
    [ -n "$mm_port" ] && return 0
    kill -0 "$mm_pid" 2>/dev/null || break
    sleep 0.1
    mm_i=$((mm_i + 1))
  done
  echo "FAIL: daemon $mm_name did not start"
  cat "$tmp/$mm_name.log"
  exit 1
}
