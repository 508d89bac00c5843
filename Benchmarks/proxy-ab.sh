#!/usr/bin/env bash
# Two builds of Grayscale's proxy in the same run: what a change to the hot path bought,
# measured as Benchmarks/proxy.sh measures (wrk with keep-alive and a bearer token through
# each proxy to one nginx upstream, every request logged, one thread each), with the rounds
# alternating so that the machine's drift falls on both alike. Prints requests/s, p99 and
# the proxy's user CPU time per request for each build, their medians and the ratios.
#
#   Benchmarks/proxy-ab.sh BEFORE_BIN AFTER_BIN [duration=6s] [rounds=5] [connections=64]
#
# BEFORE_BIN and AFTER_BIN are `grayscale` executables (release builds), e.g. one built from
# an earlier commit in a worktree: git worktree add /tmp/base REV && (cd /tmp/base &&
# swift build -c release --product grayscale).
set -euo pipefail
before_bin=$1
after_bin=$2
duration=${3:-6s}
rounds=${4:-5}
connections=${5:-64}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/up.pid" ] && kill "$(cat "$work/up.pid")" 2>/dev/null || true
  sleep 0.3; rm -rf "$work"
}
trap cleanup EXIT
upstream_port=18120 before_port=18121 after_port=18123
cat > "$work/upstream.conf" <<CONF
worker_processes 1; pid $work/up.pid; error_log $work/up.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 60s;
  server { listen 127.0.0.1:$upstream_port; location / { return 200 "hello from release 8\n"; } } }
CONF
"$NGINX" -p "$work" -c "$work/upstream.conf"
start() { # name bin port
  export GRAYSCALE_DB="$work/$1.sqlite"
  "$2" release publish --service engine --number 7 --label v2.1.0 --upstream "http://127.0.0.1:$upstream_port" >/dev/null
  "$2" release publish --service engine --number 8 --label v2.1.1 --upstream "http://127.0.0.1:$upstream_port" >/dev/null
  "$2" traffic set --service engine --range 20:55 >/dev/null
  "$2" proxy --listen "127.0.0.1:$3" --admin "127.0.0.1:$(($3 + 1))" --threads 1 --access-log "$work/$1-access.log" 2>"$work/$1.err" &
  pids+=($!)
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$3/" && break; sleep 0.1; done
}
start before "$before_bin" "$before_port"; before_pid=${pids[-1]}
start after "$after_bin" "$after_port"; after_pid=${pids[-1]}
payload=$(printf '{"appId":"1253970226","iss":"sls"}' | base64 | tr '+/' '-_' | tr -d '=\n')
token="eyJhbGciOiJIUzI1NiJ9.$payload.c2ln"
hz=$(getconf CLK_TCK)
to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 } printf "%.3f", v }'; }
run() { # name port pid
  local u0 u1 out
  u0=$(awk '{print $14}' "/proc/$3/stat")
  out=$(wrk -t1 -c"$connections" -d"$duration" --latency -H "Authorization: Bearer $token" "http://127.0.0.1:$2/v1/deploy")
  u1=$(awk '{print $14}' "/proc/$3/stat")
  local rps requests p99
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)
  local user; user=$(awk -v a="$u0" -v b="$u1" -v n="$requests" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz * 1e6 / n }')
  printf "%-7s round %s  %10s req/s  p99 %7s ms  user %6s us/request\n" "$1" "$round" "$rps" "$p99" "$user" >&2
  echo "$1 $rps $p99 $user"
}
for port in "$before_port" "$after_port"; do
  wrk -t1 -c"$connections" -d2s -H "Authorization: Bearer $token" "http://127.0.0.1:$port/v1/deploy" >/dev/null
done
results="$work/results"
for round in $(seq "$rounds"); do
  if [ $((round % 2)) = 1 ]; then
    run before "$before_port" "$before_pid" >> "$results"; run after "$after_port" "$after_pid" >> "$results"
  else
    run after "$after_port" "$after_pid" >> "$results"; run before "$before_port" "$before_pid" >> "$results"
  fi
done
awk '
  { rps[$1] = rps[$1] " " $2; p99[$1] = p99[$1] " " $3; user[$1] = user[$1] " " $4 }
  function median(list,   n, a, i, j, t) { n = split(list, a, " "); for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }; return a[int((n + 1) / 2)] }
  END {
    for (k in rps) printf "median  %-7s %10.0f req/s  p99 %7.3f ms  user %6.2f us/request\n", k, median(rps[k]), median(p99[k]), median(user[k])
    printf "after/before: throughput %.2fx, user time per request %.2fx\n", median(rps["after"]) / median(rps["before"]), median(user["after"]) / median(user["before"])
  }' "$results"
