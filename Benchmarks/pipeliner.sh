#!/usr/bin/env bash
# Memory of Grayscale's proxy under a client that pipelines requests and never reads its
# answers (a hostile or broken client): the proxy's RSS every 2 s while one such client
# sends GETs with 1 KiB answers for `duration` seconds through a 4 KiB receive buffer.
# Before the fix (c77e661) every request was answered into memory (48 MB to 112 MB in
# 20 s); now the answers stop once the client's socket is full, and the RSS stays flat.
#
#   Benchmarks/pipeliner.sh [duration=20]
#
# Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-20}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
swift build -c release --product grayscale >/dev/null
bin=$(swift build -c release --show-bin-path)
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/up.pid" ] && kill "$(cat "$work/up.pid")" 2>/dev/null || true
  sleep 0.3; rm -rf "$work"
}
trap cleanup EXIT
upstream_port=18200 grayscale_port=18201 admin_port=18202
body=$(head -c 1024 /dev/zero | tr '\0' 'x')
cat > "$work/upstream.conf" <<CONF
worker_processes 1; pid $work/up.pid; error_log $work/up.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 60s;
  server { listen 127.0.0.1:$upstream_port; location / { return 200 "$body"; } } }
CONF
"$NGINX" -p "$work" -c "$work/upstream.conf"
export GRAYSCALE_DB="$work/grayscale.sqlite"
"$bin/grayscale" release publish --service engine --number 7 --label v2.1.0 --upstream "http://127.0.0.1:$upstream_port" >/dev/null
"$bin/grayscale" proxy --listen "127.0.0.1:$grayscale_port" --admin "127.0.0.1:$admin_port" --access-log "$work/access.log" 2>"$work/grayscale.err" &
proxy=$!; pids+=("$proxy")
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$grayscale_port/" && break; sleep 0.1; done
rss() { awk '/VmRSS/ { print $2 }' "/proc/$proxy/status"; }
echo "proxy RSS before: $(( $(rss) / 1024 )) MB"
python3 - "$grayscale_port" "$duration" <<'PY' &
import socket, sys, time
port, duration = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", port))
s.setblocking(False)
chunk = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
sent, end = 0, time.time() + duration
while time.time() < end:
    try:
        sent += s.send(chunk)
    except BlockingIOError:
        time.sleep(0.001)
print(f"client sent {sent // 27:,} requests and read no answer", flush=True)
time.sleep(2)
PY
client=$!; pids+=("$client")
for second in $(seq 2 2 "$duration"); do
  sleep 2
  echo "after ${second}s: proxy RSS $(( $(rss) / 1024 )) MB"
done
wait "$client" || true
echo "requests the proxy answered (access log lines, the first curl included): $(wc -l < "$work/access.log")"
