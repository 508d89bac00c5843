#!/usr/bin/env bash
# How fast the embedded path rolls back: `grayscale serve` (1 s statistics windows,
# 250 ms controller ticks), 3,000 demo users at 200 requests/s, and a canary that
# fails every deploy of a dotted name (7.5% of users). For each run: from the first
# failure of the unit that tipped the e-value (the N-th distinct failing canary user or
# client, N from the verdict) to the commit of the rollback (the audit entry's time).
#
#   Benchmarks/rollback-latency.sh [runs=5]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
swift build -c release --product grayscale >/dev/null
grayscale=$(swift build -c release --show-bin-path)/grayscale

for run in $(seq "$runs"); do
  work=$(mktemp -d)
  pids=()
  export GRAYSCALE_DB="$work/grayscale.sqlite"
  mkdir -p "$work/policies"
  cat > "$work/policies/bench.yaml" <<POLICY
name: bench
service: engine
steps: [1, 5, 25, 50, 100]
stepMinimum: 8s
analysis: {interval: 2s, minRequests: 20}
window: {days: [monday, tuesday, wednesday, thursday, friday, saturday, sunday], start: "00:00", end: "24:00", timeZone: UTC}
POLICY
  cat > "$work/grayscale.yaml" <<CONFIG
database: $work/grayscale.sqlite
policies: $work/policies
proxy: {listen: 127.0.0.1:18280, accessLog: $work/access.log}
admin: {listen: 127.0.0.1:18281}
CONFIG
  "$grayscale" demo upstream --listen 127.0.0.1:18207 --label v2.1.0 & pids+=($!)
  "$grayscale" demo upstream --listen 127.0.0.1:18208 --label v2.1.1 --fail-dotted & pids+=($!)
  "$grayscale" release publish --service engine --number 7 --label v2.1.0 --upstream http://127.0.0.1:18207 >/dev/null
  "$grayscale" serve --config "$work/grayscale.yaml" > "$work/serve.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:18281/healthz" && break; sleep 0.1; done
  "$grayscale" demo traffic --proxy 127.0.0.1:18280 --users 3000 --rate 200 > /dev/null 2>&1 & pids+=($!)
  sleep 3
  "$grayscale" release publish --service engine --number 8 --label v2.1.1 --upstream http://127.0.0.1:18208 >/dev/null
  for _ in $(seq 600); do
    "$grayscale" release list --service engine | awk '$1==8 {print $3}' | grep -q rolledBack && break
    sleep 0.2
  done
  sleep 1
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$grayscale" audit --service engine --format json > "$work/audit.json"
  python3 - "$work" "$run" <<'PY'
import json, re, sys
from datetime import datetime
work, run = sys.argv[1], sys.argv[2]
def t(text): return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
audit = json.load(open(f"{work}/audit.json"))
rollback = next((e for e in audit if e["action"] == "rollback"), None)
if rollback is None:
    print(f"run {run}: no rollback"); sys.exit(0)
n = int(re.search(r"\((\d+) failing units on the canary", rollback["detail"]).group(1))
first = {}
for line in open(f"{work}/access.log"):
    entry = json.loads(line)
    if entry["release"] != 8 or entry["status"] < 500: continue
    unit = entry.get("appId") or "anonymous"
    first.setdefault(unit, t(entry["time"]))
times = sorted(first.values())
deciding = times[min(n, len(times)) - 1]
print(f"run {run}: rollback committed {t(rollback['at']) - deciding:.2f} s after the deciding failure ({n} failing units on the canary)")
PY
  rm -rf "$work"
done
