#!/usr/bin/env bash
# `grayscale logs` against grep on a generated access log of the proxy's own format
# (7.3 million lines, about 1.6 GiB: five minutes of proxy traffic at 24k requests/s).
# Prints wall time and peak memory of each command. Release build.
#
#   Benchmarks/logs.sh [lines=7300000]
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-7300000}
swift build -c release --product grayscale >/dev/null
bin=$(swift build -c release --show-bin-path)/grayscale
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$lines" "$work/access.log" <<'PY'
import sys, random
n, path = int(sys.argv[1]), sys.argv[2]
random.seed(7)
with open(path, "w") as out:
    chunk = []
    for i in range(n):
        release = 1 if random.random() < 0.9 else 2
        status = 200 if random.random() < 0.995 else random.choice([500, 502, 503, 504])
        if release == 2 and status == 200 and random.random() < 0.01: status = 503
        ms = i // 24 % 1000
        s = i // 24000
        chunk.append('{"time":"2026-12-07T06:%02d:%02d.%03dZ","service":"engine","release":%d,"label":"v2.1.%d","route":"%s","appId":"app-%d","bucket":%d,"method":"GET","path":"/api/v1/functions/deploy?name=app-%d","status":%d,"latencyMs":%.3f,"upstream":"127.0.0.1:91%02d","bytesIn":0,"bytesOut":%d,"error":null}\n'
                     % (s // 60 % 60, s % 60, ms, release, release, "canary" if release == 2 else "stable", i % 50000, i % 10000, i % 50000, status, random.random() * 80, release, 200 + i % 900))
        if len(chunk) == 10000:
            out.write("".join(chunk)); chunk = []
    out.write("".join(chunk))
PY
size=$(stat -c %s "$work/access.log")
printf 'access log: %d lines, %.2f GiB\n' "$lines" "$(echo "$size / 1073741824" | bc -l)"
measure() { # label, command...
  local label=$1; shift
  cat "$work/access.log" > /dev/null  # the file in the page cache for every command alike
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" > "$work/out" 2>/dev/null || true
  read -r seconds kib < "$work/time"
  printf '%-52s %6.2f s  %7.1f MiB  %9d lines out\n' "$label" "$seconds" "$(echo "$kib / 1024" | bc -l)" "$(wc -l < "$work/out")"
}
measure 'grep -c "\"release\":2," (count only)' grep -c '"release":2,' "$work/access.log"
measure 'grep "\"release\":2," (lines out)' grep '"release":2,' "$work/access.log"
measure 'grayscale logs --version 2 --status 5xx' "$bin" logs --file "$work/access.log" --version 2 --status 5xx
measure 'grayscale logs --version 2 --status 5xx --format json' "$bin" logs --file "$work/access.log" --version 2 --status 5xx --format json
measure 'grep "\"release\":1," (lines out)' grep '"release":1,' "$work/access.log"
measure 'grayscale logs --version 1 --format json' "$bin" logs --file "$work/access.log" --version 1 --format json
measure 'grayscale logs --app-id app-42 --format json' "$bin" logs --file "$work/access.log" --app-id app-42 --format json
