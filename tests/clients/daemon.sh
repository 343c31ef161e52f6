# daemon.sh: starts real mmmambad daemons for the client tests (sourced after
# lib.sh): CPU backend, the tiny synthetic model, a free loopback port.
# start_daemon NAME [FLAGS...]: sets $port and $daemon_pid; stopped on exit.
daemon_model="$tmp/tiny-linear"

start_daemon() {
  name=$1; shift
  if [ ! -f "$daemon_model/config.json" ]; then
    "$build/mmmamba" mkmodel --preset tiny-linear --seed 3 --out "$daemon_model" >/dev/null
  fi
  log="$tmp/daemon-$name.log"
  : >"$log" # exists before the background start opens it (the loop reads it at once)
  "$build/mmmambad" --model "$daemon_model" --served-model-name tiny --host 127.0.0.1 --port 0 \
    --backend cpu --threads 1 --http-threads 2 "$@" >>"$log" 2>&1 &
  daemon_pid=$!
  pids="$pids $daemon_pid"
  port=""
  i=0
  while [ $i -lt 600 ]; do
    port=$(sed -n 's|.*serving tiny on http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$log")
    if [ -n "$port" ] && curl -fs -o /dev/null "http://127.0.0.1:$port/health"; then
      return 0
    fi
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.1
    i=$((i + 1))
  done
  echo "FAIL: mmmambad ($name) did not come up serving"
  cat "$log"
  exit 1
}
