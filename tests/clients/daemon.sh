# daemon.sh: starts real mmmambad daemons for the client tests (sourced after
# lib.sh): CPU backend, the tiny synthetic model, a free loopback port.
# start_daemon NAME [FLAGS...]: sets $port and $daemon_pid; stopped on exit.
. "$src/tests/daemon.sh"
daemon_model="$tmp/tiny-linear"

start_daemon() {
  name=$1; shift
  if [ ! -f "$daemon_model/config.json" ]; then
    "$build/mmmamba" mkmodel --preset tiny-linear --seed 3 --out "$daemon_model" >/dev/null
  fi
  mm_daemon "daemon-$name" "$build/mmmambad" --model "$daemon_model" --served-model-name tiny \
    --backend cpu --threads 1 --http-threads 2 "$@"
  daemon_pid=$mm_pid port=$mm_port
}
