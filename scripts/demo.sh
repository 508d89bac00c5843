#!/usr/bin/env bash
# The Grayscale demo: `grayscale serve` with two demo releases of the Engine service,
# synthetic users over real loopback sockets, a bad canary rolled back by the
# controller, then a good one promoted. About two minutes; exits 0 with a summary.
set -euo pipefail
grayscale=${1:-.build/debug/grayscale}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export GRAYSCALE_DB="$work/grayscale.sqlite"
export USER=${USER:-demo}
proxy=127.0.0.1:18180 admin=127.0.0.1:18181

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

mkdir -p "$work/policies"
cat > "$work/policies/demo.yaml" <<POLICY
# Short steps so the demo fits in two minutes; any day, any time.
name: demo
service: engine
steps: [1, 5, 25, 50, 100]
stepMinimum: 8s
analysis: {interval: 2s, minRequests: 20}
window: {days: [monday, tuesday, wednesday, thursday, friday, saturday, sunday], start: "00:00", end: "24:00", timeZone: UTC}
slack: {channel: "#serverless-tencent"}
POLICY
cat > "$work/grayscale.yaml" <<CONFIG
database: $work/grayscale.sqlite
policies: $work/policies
proxy: {listen: $proxy, accessLog: $work/access.log, statsWindow: 1s}
admin: {listen: $admin}
controller: {tick: 1s}
CONFIG

say "Three demo releases of engine: 7 (v2.1.0, stable), 8 (v2.1.1, rejects names like xx.xx), 9 (v2.1.2, fixed)"
"$grayscale" demo upstream --listen 127.0.0.1:18107 --label v2.1.0 & pids+=($!)
"$grayscale" demo upstream --listen 127.0.0.1:18108 --label v2.1.1 --fail-dotted & pids+=($!)
"$grayscale" demo upstream --listen 127.0.0.1:18109 --label v2.1.2 & pids+=($!)
"$grayscale" release publish --service engine --number 7 --label v2.1.0 --upstream http://127.0.0.1:18107 --ref v2.1.0

say "grayscale serve (proxy on $proxy; dashboard on http://$admin/)"
"$grayscale" serve --config "$work/grayscale.yaml" > "$work/serve.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://$admin/healthz" && break; sleep 0.1; done
echo "Dashboard: http://$admin/   (open it while the demo runs)"

# 10,000 users: a 1% cohort of them holds about seven users with dotted names. With
# 3,000 it would hold about two, and exactly one in about a fifth of the releases: one
# failing user among thirty can never prove a fault at alpha = 1% (it lands on the
# canary by chance with probability 0.01), so such a rollout holds its first step
# instead of rolling back.
say "10,000 users start deploying through the proxy (200 requests/s; 7.5% have dotted names)"
"$grayscale" demo traffic --proxy "$proxy" --users 10000 --rate 200 > "$work/traffic.log" 2>&1 & traffic=$!; pids+=($traffic)
sleep 3

say "Release 8 (v2.1.1) is published: the controller starts it at 1% of users"
"$grayscale" release publish --service engine --number 8 --label v2.1.1 --upstream http://127.0.0.1:18108 --ref v2.1.1

watch_rollout() { # until the rollout of $1 reaches $2 (rolledBack or promoted), printing what changes
  local last="" deadline=$((SECONDS + 90))
  while [ $SECONDS -lt $deadline ]; do
    local now
    now=$("$grayscale" rollout status --service engine 2>/dev/null | head -3 | tr '\n' ' ' || true)
    if [ "$now" != "$last" ]; then echo "  $(date +%T)  $now"; last=$now; fi
    case "$now" in *"Version $1"*"$2"*) return 0;; esac
    if "$grayscale" release list --service engine --format json | grep -q "\"number\" : $1" &&
       [ "$2" = promoted ] && "$grayscale" release list --service engine | awk -v n="$1" '$1==n {print $3}' | grep -q stable; then return 0; fi
    if [ "$2" = rolledBack ] && "$grayscale" release list --service engine | awk -v n="$1" '$1==n {print $3}' | grep -q rolledBack; then return 0; fi
    sleep 1
  done
  echo "  (timed out waiting for $2)"; return 1
}
watch_rollout 8 rolledBack

say "What the controller saw, and why it rolled back"
"$grayscale" rollout status --service engine || true
curl -s "http://$admin/stats" | python3 -c '
import json, sys
for v in json.load(sys.stdin)["versions"]:
    t = v["totals"]
    print("  release %s (%s): %d requests, %d errors, %d users got an error" % (v["release"], v["label"], t["requests"], t["errors"], t["affectedUsers"]))
' 2>/dev/null || true

say "Release 9 (v2.1.2) fixes it: a new canary with a new cohort, widened step by step"
"$grayscale" release publish --service engine --number 9 --label v2.1.2 --upstream http://127.0.0.1:18109 --ref v2.1.2
watch_rollout 9 promoted

kill "$traffic" 2>/dev/null || true
say "Slack messages the release channel would have received"
grep -o 'slack #serverless-tencent: .*' "$work/serve.log" | sed 's/^slack /  /' | head -40

say "Summary"
"$grayscale" release list --service engine
echo
"$grayscale" traffic history --service engine | tail -12
echo
echo "Errors by version in the access log:"
for n in 7 8 9; do
  printf '  release %s: %s requests, %s 5xx\n' "$n" "$("$grayscale" logs --file "$work/access.log" --version $n --format json | grep -c '"status"' || true)" \
    "$("$grayscale" logs --file "$work/access.log" --version $n --status 5xx --format json | grep -c '"status"' || true)"
done
echo
echo "Without grayscale every user with a dotted name would have failed; here only the few in release 8's 1% cohort did."
