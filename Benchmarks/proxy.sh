#!/usr/bin/env bash
# Grayscale's proxy against nginx and HAProxy as plain reverse proxies, same upstream,
# same keep-alive settings (upstream connections reused), one worker thread each,
# alternating wrk runs, each with the proxy's CPU time per request (user and system). A bare
# SwiftNIO byte relay (grayscale-relay) runs beside them as the ceiling the channel machinery
# sets. Then the routing decision alone (ns and heap allocations per decision, for a new
# token and for a keep-alive connection's next request) and each proxy's memory with 10,000
# open connections.
#
#   Benchmarks/proxy.sh [duration=10s] [connections=64] [rounds=3] [threads=1]
#
# threads=2 runs each proxy with two: Grayscale --threads 2, nginx 2 workers, HAProxy nbthread 2.
#
# All three write an access log (HAProxy's goes to a file through stdout). Only
# loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}
connections=${2:-64}
rounds=${3:-3}
threads=${4:-1}

sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
for tool in wrk nginx haproxy; do
  command -v $tool >/dev/null || command -v /usr/sbin/$tool >/dev/null || {
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk nginx haproxy; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

swift build -c release --product grayscale >/dev/null
swift build -c release --product grayscale-bench >/dev/null
swift build -c release --product grayscale-relay >/dev/null
bin=$(swift build -c release --show-bin-path)

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/up.pid" ] && kill "$(cat "$work/up.pid")" 2>/dev/null || true
  [ -f "$work/px.pid" ] && kill "$(cat "$work/px.pid")" 2>/dev/null || true
  sleep 0.3; rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

upstream_port=18100 grayscale_port=18101 admin_port=18102 nginx_port=18103 haproxy_port=18104 relay_port=18105

cat > "$work/upstream.conf" <<CONF
worker_processes 1; pid $work/up.pid; error_log $work/up.err;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 60s;
  server { listen 127.0.0.1:$upstream_port; location / { return 200 "hello from release 8\n"; } } }
CONF
cat > "$work/proxy.conf" <<CONF
worker_processes $threads; pid $work/px.pid; error_log $work/px.err;
events { worker_connections 20000; }
http { access_log $work/nginx-access.log; keepalive_requests 1000000; keepalive_timeout 60s;
  upstream releases { server 127.0.0.1:$upstream_port; keepalive 128; }
  server { listen 127.0.0.1:$nginx_port;
    location / { proxy_pass http://releases; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } } }
CONF
cat > "$work/haproxy.cfg" <<CONF
global
  nbthread $threads
  maxconn 9900  # 2 fds a connection: the most a hard limit of 20,000 allows
defaults
  mode http
  log stdout format raw local0
  option httplog
  option http-keep-alive
  option forwardfor
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend grayscale_bench
  bind 127.0.0.1:$haproxy_port
  log global
  default_backend releases
backend releases
  server upstream 127.0.0.1:$upstream_port
CONF
"$NGINX" -p "$work" -c "$work/upstream.conf"
"$NGINX" -p "$work" -c "$work/proxy.conf"
"$HAPROXY" -db -f "$work/haproxy.cfg" >"$work/haproxy-access.log" 2>"$work/haproxy.err" &
haproxy_pid=$!; pids+=("$haproxy_pid")
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$haproxy_port/" && break; sleep 0.1; done
kill -0 "$haproxy_pid" 2>/dev/null || { echo "haproxy did not start:"; cat "$work/haproxy.err"; exit 1; }

export GRAYSCALE_DB="$work/grayscale.sqlite"
"$bin/grayscale" release publish --service engine --number 7 --label v2.1.0 --upstream "http://127.0.0.1:$upstream_port" >/dev/null
"$bin/grayscale" release publish --service engine --number 8 --label v2.1.1 --upstream "http://127.0.0.1:$upstream_port" >/dev/null
"$bin/grayscale" traffic set --service engine --range 20:55 >/dev/null
"$bin/grayscale" proxy --listen "127.0.0.1:$grayscale_port" --admin "127.0.0.1:$admin_port" --threads "$threads" --max-connections 10500 \
  --access-log "$work/grayscale-access.log" 2>"$work/grayscale.err" &
grayscale_pid=$!; pids+=("$grayscale_pid")
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$grayscale_port/" && break; sleep 0.1; done

# The ceiling SwiftNIO itself sets: a byte relay, one upstream connection per client, nothing parsed.
"$bin/grayscale-relay" "$relay_port" "$upstream_port" "$threads" 2>"$work/relay.err" &
relay_pid=$!; pids+=("$relay_pid")
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$relay_port/" && break; sleep 0.1; done

payload=$(printf '{"appId":"1253970226","iss":"sls"}' | base64 | tr '+/' '-_' | tr -d '=\n')
token="eyJhbGciOiJIUzI1NiJ9.$payload.c2ln"

to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 } printf "%.3f", v }'; }
# CPU time (user and system, clock ticks) of a proxy's processes: what each request costs it,
# steadier than requests/s on a machine whose two cores wrk and the upstream share.
ticks() { local u=0 s=0 pid; for pid in $1; do set -- $(awk '{print $14, $15}' "/proc/$pid/stat"); u=$((u + $1)); s=$((s + $2)); done; echo "$u $s"; }
hz=$(getconf CLK_TCK)
run() { # name port "pids"
  local before after out; before=$(ticks "$3")
  out=$(wrk -t1 -c"$connections" -d"$duration" --latency -H "Authorization: Bearer $token" "http://127.0.0.1:$2/v1/deploy")
  after=$(ticks "$3")
  local rps p50 p99 errors requests user sys
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}' | to_ms)
  p99=$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)
  errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  read -r user sys <<<"$(echo "$before $after" | awk -v n="$requests" -v hz="$hz" '{ printf "%.2f %.2f", ($3 - $1) / hz * 1e6 / n, ($4 - $2) / hz * 1e6 / n }')"
  printf "%-10s round %s  %10s req/s  p50 %8s ms  p99 %8s ms  cpu/request: user %6s us  sys %6s us  %s\n" \
    "$1" "$round" "$rps" "$p50" "$p99" "$user" "$sys" "$errors" >&2
  echo "$1 $rps $p50 $p99 $user $sys"
}

echo "== wrk -t1 -c$connections -d$duration, $rounds alternating rounds (grayscale: --threads $threads; nginx: $threads worker(s); haproxy: nbthread $threads)" >&2
for port in "$grayscale_port" "$nginx_port" "$haproxy_port" "$relay_port"; do   # warm up all four
  wrk -t1 -c"$connections" -d2s "http://127.0.0.1:$port/" >/dev/null
done
nginx_workers=$(pgrep -P "$(cat "$work/px.pid")" | tr '\n' ' ')
results="$work/results"
for round in $(seq "$rounds"); do
  run grayscale "$grayscale_port" "$grayscale_pid" >> "$results"
  run nginx "$nginx_port" "$nginx_workers" >> "$results"
  run haproxy "$haproxy_port" "$haproxy_pid" >> "$results"
  run nio-relay "$relay_port" "$relay_pid" >> "$results"
done
awk '
  { rps[$1] = rps[$1] " " $2; p50[$1] = p50[$1] " " $3; p99[$1] = p99[$1] " " $4; user[$1] = user[$1] " " $5; sys[$1] = sys[$1] " " $6 }
  function median(list,   n, a, i, j, t) { n = split(list, a, " "); for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }; return a[int((n + 1) / 2)] }
  END {
    g = median(rps["grayscale"]); n = median(rps["nginx"]); h = median(rps["haproxy"])
    printf "\n"
    split("grayscale nginx haproxy nio-relay", names, " ")
    for (i = 1; i <= 4; i++) { k = names[i]
      printf "median     %-9s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms  cpu/request: user %6.2f us  sys %6.2f us\n", k, median(rps[k]), median(p50[k]), median(p99[k]), median(user[k]), median(sys[k]) }
    printf "throughput ratio grayscale/nginx: %.2f   p99 ratio: %.2f\n", g / n, median(p99["grayscale"]) / median(p99["nginx"])
    printf "throughput ratio grayscale/haproxy: %.2f   p99 ratio: %.2f\n", g / h, median(p99["grayscale"]) / median(p99["haproxy"])
    printf "user time per request: grayscale %.2f us, nginx %.2f, haproxy %.2f, the bare SwiftNIO relay %.2f\n", median(user["grayscale"]), median(user["nginx"]), median(user["haproxy"]), median(user["nio-relay"])
  }' "$results"

echo
echo "== the routing decision alone (malloc-interposer preloaded)"
LD_PRELOAD="$bin/libMallocInterposerSwift.so" "$bin/grayscale-bench"

echo
echo "== memory with 10,000 idle keep-alive connections (each opened, asked one request and answered in"
echo "   turn, so one upstream connection serves them all and only the client connections are counted)"
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
nginx_worker=$(pgrep -P "$(cat "$work/px.pid")" | head -1)  # with 2 workers: the first one's memory
# HAProxy is held to 9,000 where its maxconn must stay within the file limit.
for target in "grayscale $grayscale_pid $grayscale_port 10000" "nginx $nginx_worker $nginx_port 10000" "haproxy $haproxy_pid $haproxy_port 9000"; do
  set -- $target
  python3 - "$3" "$2" "$1" "$4" <<'PY'
import socket, sys, time
port, pid, name, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
rss = lambda: int(next(l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")))
time.sleep(0.5)
before = rss()
sockets = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    s.recv(65536)
    sockets.append(s)
time.sleep(0.5)
after = rss()
print(f"{name:10} RSS {before/1024:7.1f} MiB -> {after/1024:7.1f} MiB with {count} idle keep-alive connections ({(after-before)/count:.2f} KiB per connection)")
for s in sockets:
    s.close()
time.sleep(0.5)
PY
done
