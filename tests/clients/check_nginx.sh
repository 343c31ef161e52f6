#!/bin/sh
# check_nginx.sh: etc/nginx-mmmambad.conf as shipped (only its ports
# rewritten) in front of two backends on loopback, driven by mmmamba-loadgen:
# both backends serve, streams stay unbuffered (TTFT through nginx is the
# backend's, not the whole answer's), and when one backend dies the other
# takes every request. The backends are two CPU mmmambad daemons when they
# can be started, else two fake OpenAI servers. nginx runs as the test user
# with its own prefix, temp dirs, pid and log, on a free port.
set -eu
. "${top_srcdir:-.}/tests/clients/lib.sh"
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$nginx" ] || { echo "no nginx: skipping"; exit 77; }
command -v "$py" >/dev/null || { echo "no $py: skipping"; exit 77; }
[ -x "$build/mmmamba-loadgen" ] || { echo "mmmamba-loadgen not built (no libcurl): skipping"; exit 77; }
lg="$build/mmmamba-loadgen"

free_port() {
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Two backends: $p1 $p2, their pids $b1 $b2; $kind says which.
if [ -x "$build/mmmambad" ] && [ -x "$build/mmmamba" ]; then
  kind=daemon
  . "$src/tests/clients/daemon.sh"
  start_daemon a; p1=$port; b1=$daemon_pid
  start_daemon b; p2=$port; b2=$daemon_pid
else
  kind=fake
  start_fake a --ttft-ms 300 --itl-ms 40; p1=$port; b1=$(echo $pids | awk '{print $NF}')
  start_fake b --ttft-ms 300 --itl-ms 40; p2=$port; b2=$(echo $pids | awk '{print $NF}')
fi

# nginx on its own prefix; as root (CI), workers stay root so they can use the
# temp dirs under $tmp.
ng="$tmp/nginx"
mkdir -p "$ng/logs" "$ng/tmp"
pn=$(free_port)
sed -e "s/127\.0\.0\.1:8001/127.0.0.1:$p1/" -e "s/127\.0\.0\.1:8002/127.0.0.1:$p2/" \
  -e "s/listen 8000;/listen 127.0.0.1:$pn;/" "$src/etc/nginx-mmmambad.conf" > "$ng/mmmambad.conf"
check "the shipped upstreams were rewritten" grep -q "127.0.0.1:$p2 max_fails" "$ng/mmmambad.conf"
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
check "nginx -t" "$nginx" -t -p "$ng" -c "$ng/nginx.conf"
bg "$nginx" -p "$ng" -c "$ng/nginx.conf"
front="http://127.0.0.1:$pn"
i=0
until curl -fs -o /dev/null "$front/health"; do
  i=$((i + 1))
  [ $i -le 100 ] || { echo "nginx did not come up"; cat "$ng/logs/error.log"; exit 1; }
  sleep 0.1
done

# 1. Both backends serve; tokens stream through unbuffered.
check "through nginx" "$lg" --base-url "$front" --num-prompts 32 --max-concurrency 8 \
  --random-input-len 32 --random-output-len 8 --ignore-eos --result-filename "$tmp/n.json" --disable-tqdm
check "through nginx: all served" json_ok "$tmp/n.json" 'r["completed"] == 32 and r["failed"] == 0'
if [ $kind = fake ]; then
  # Backend TTFT 300 ms, then 7 tokens 40 ms apart: buffered, TTFT would be ~580 ms.
  check "unbuffered: TTFT is the backend's" json_ok "$tmp/n.json" '295 <= r["mean_ttft_ms"] <= 450'
  check "unbuffered: ITL is the backend's" json_ok "$tmp/n.json" '30 <= r["mean_itl_ms"] <= 60'
  n1=$(curl -fs "http://127.0.0.1:$p1/_stats" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["n_generate"])')
  n2=$(curl -fs "http://127.0.0.1:$p2/_stats" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["n_generate"])')
  check "least_conn: both backends used ($n1 + $n2)" test "$n1" -ge 8 -a "$n2" -ge 8 -a $((n1 + n2)) -eq 32
else
  check "unbuffered: ITLs measured" json_ok "$tmp/n.json" 'r["mean_itl_ms"] > 0 and r["mean_ttft_ms"] < r["mean_e2el_ms"]'
fi
check "front /health" curl -fs "$front/health"
check "front /metrics is not proxied" sh -c "curl -s -o /dev/null -w '%{http_code}' '$front/metrics' | grep -qx 404"

# 2. One backend dies: nginx retries on the other; every request is served.
kill "$b1"
wait "$b1" 2>/dev/null || true
check "one backend down" "$lg" --base-url "$front" --num-prompts 16 --max-concurrency 4 \
  --random-input-len 16 --random-output-len 4 --ignore-eos --result-filename "$tmp/d.json" --disable-tqdm
check "one backend down: all served" json_ok "$tmp/d.json" 'r["completed"] == 16 and r["failed"] == 0'
check "front /health with one backend" curl -fs "$front/health"

# 3. Both down: the front says so (502), the load generator counts it.
kill "$b2"
wait "$b2" 2>/dev/null || true
check "both down: /health fails" sh -c "! curl -fs '$front/health'"
check "both down run" "$lg" --base-url "$front" --model m --num-prompts 4 \
  --result-filename "$tmp/z.json" --disable-tqdm
check "both down: 502s counted" json_ok "$tmp/z.json" 'r["errors_by_status"] == {"502": 4}'
finish
