#!/bin/sh
# check_nginx.sh: etc/nginx-mmmambad.conf as shipped (only its ports
# rewritten) in front of two backends on loopback, driven by mmmamba-loadgen,
# twice: with two fake OpenAI servers of known timing (streams stay
# unbuffered: TTFT through nginx is the backend's, not the whole answer's;
# least_conn uses both), then with two CPU mmmambad daemons. Each time, when
# one backend dies the other takes every request, and with both dead the
# front answers 502. nginx runs as the test user with its own prefix, temp
# dirs, pid and log, on a free port.
set -eu
. "${top_srcdir:-.}/tests/clients/lib.sh"
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx" ] || mm_skip "no nginx"
command -v "$py" >/dev/null || mm_skip "no $py"
[ -x "$build/mmmamba-loadgen" ] || mm_skip "mmmamba-loadgen not built (no libcurl)"
. "$src/tests/clients/daemon.sh"
lg="$build/mmmamba-loadgen"

free_port() {
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_nginx NAME P1 P2: nginx on its own prefix in front of ports P1 and P2;
# sets $front and $nginx_pid. As root (CI), workers stay root so they can use
# the temp dirs under $tmp.
start_nginx() {
  ng="$tmp/nginx-$1"
  mkdir -p "$ng/logs" "$ng/tmp"
  pn=$(free_port)
  sed -e "s/127\.0\.0\.1:8001/127.0.0.1:$2/" -e "s/127\.0\.0\.1:8002/127.0.0.1:$3/" \
    -e "s/listen 8000;/listen 127.0.0.1:$pn;/" "$src/etc/nginx-mmmambad.conf" > "$ng/mmmambad.conf"
  check "$1: the shipped upstreams were rewritten" grep -q "127.0.0.1:$3 max_fails" "$ng/mmmambad.conf"
  {
    [ "$(id -u)" -eq 0 ] && echo "user root;"
    cat <<NGX
daemon off;
worker_processes 1;
error_log $ng/logs/error.log warn;
pid $ng/nginx.pid;
events { worker_connections 2048; }
http {
    access_log off;
    client_body_temp_path $ng/tmp/body;
    proxy_temp_path $ng/tmp/proxy;
    fastcgi_temp_path $ng/tmp/fastcgi;
    uwsgi_temp_path $ng/tmp/uwsgi;
    scgi_temp_path $ng/tmp/scgi;
    include $ng/mmmambad.conf;
}
NGX
  } > "$ng/nginx.conf"
  check "$1: nginx -t" "$nginx" -t -p "$ng" -c "$ng/nginx.conf"
  bg "$nginx" -p "$ng" -c "$ng/nginx.conf"
  front="http://127.0.0.1:$pn"
  i=0
  until curl -fs -o /dev/null "$front/health"; do
    i=$((i + 1))
    [ $i -le 100 ] || { echo "nginx did not come up"; cat "$ng/logs/error.log"; exit 1; }
    sleep 0.1
  done
}

# failover NAME B1 B2: kill backend B1, then B2, checking the front each time.
failover() {
  kill "$2"
  wait "$2" 2>/dev/null || true
  check "$1: one backend down" "$lg" --base-url "$front" --num-prompts 16 --max-concurrency 4 \
    --random-input-len 16 --random-output-len 4 --ignore-eos --result-filename "$tmp/$1-d.json" --disable-tqdm
  check "$1: one backend down: all served" json_ok "$tmp/$1-d.json" 'r["completed"] == 16 and r["failed"] == 0'
  check "$1: front /health with one backend" curl -fs "$front/health"
  kill "$3"
  wait "$3" 2>/dev/null || true
  check "$1: both down: /health fails" sh -c "! curl -fs '$front/health'"
  check "$1: both down run" "$lg" --base-url "$front" --model m --num-prompts 4 \
    --result-filename "$tmp/$1-z.json" --disable-tqdm
  check "$1: both down: 502s counted" json_ok "$tmp/$1-z.json" 'r["errors_by_status"] == {"502": 4}'
}

# 1. Fake backends: TTFT 300 ms, then a token every 40 ms.
start_fake a --ttft-ms 300 --itl-ms 40; p1=$port; b1=$(echo $pids | awk '{print $NF}')
start_fake b --ttft-ms 300 --itl-ms 40; p2=$port; b2=$(echo $pids | awk '{print $NF}')
start_nginx fake "$p1" "$p2"
check "fake: through nginx" "$lg" --base-url "$front" --num-prompts 32 --max-concurrency 8 \
  --random-input-len 32 --random-output-len 8 --ignore-eos --result-filename "$tmp/f.json" --disable-tqdm
check "fake: all served" json_ok "$tmp/f.json" 'r["completed"] == 32 and r["failed"] == 0'
# Buffered, TTFT would be the whole answer's, ~580 ms.
check "fake: unbuffered: TTFT is the backend's" json_ok "$tmp/f.json" '295 <= r["mean_ttft_ms"] <= 450'
check "fake: unbuffered: ITL is the backend's" json_ok "$tmp/f.json" '30 <= r["mean_itl_ms"] <= 60'
n1=$(curl -fs "http://127.0.0.1:$p1/_stats" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["n_generate"])')
n2=$(curl -fs "http://127.0.0.1:$p2/_stats" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["n_generate"])')
check "fake: least_conn used both backends ($n1 + $n2)" test "$n1" -ge 8 -a "$n2" -ge 8 -a $((n1 + n2)) -eq 32
check "fake: front /metrics is not proxied" sh -c "curl -s -o /dev/null -w '%{http_code}' '$front/metrics' | grep -qx 404"
failover fake "$b1" "$b2"

# 2. Two CPU daemons.
start_daemon a; p1=$port; b1=$daemon_pid
start_daemon b; p2=$port; b2=$daemon_pid
start_nginx daemon "$p1" "$p2"
check "daemons: through nginx" "$lg" --base-url "$front" --num-prompts 32 --max-concurrency 8 \
  --random-input-len 32 --random-output-len 8 --ignore-eos --result-filename "$tmp/n.json" --disable-tqdm
check "daemons: all served" json_ok "$tmp/n.json" \
  'r["completed"] == 32 and r["failed"] == 0 and r["total_output_tokens"] == 256'
check "daemons: streamed" json_ok "$tmp/n.json" 'r["mean_itl_ms"] > 0 and r["mean_ttft_ms"] < r["mean_e2el_ms"]'
for p in "$p1" "$p2"; do
  check "daemon on $p served some" sh -c "curl -fs http://127.0.0.1:$p/metrics | grep -Eq '^vllm:request_success_total(\{[^}]*\})? [1-9]'"
done
failover daemons "$b1" "$b2"
finish
