#!/usr/bin/env bash
# The ecosystem's own tools against a live `grayscale serve`, run by `make test`: Slack's
# Python SDK (slack_sdk) signing Events API and slash-command requests as Slack does
# (scripts/slack_sdk_check.py, first, on the fresh state); then schemathesis (PyPI) on every
# operation of openapi.yaml with every check, generated valid and invalid requests.
#   scripts/ecosystem-checks.sh [GRAYSCALE_BINARY]
# SCHEMATHESIS_SEED replays a run (the seed is printed either way); SCHEMATHESIS_EXAMPLES
# sets the examples per operation (default 100).
set -euo pipefail
cd "$(dirname "$0")/.."
grayscale=${1:-.build/debug/grayscale}
venv=${ECOSYSTEM_VENV:-.build-ecosystem}
seed=${SCHEMATHESIS_SEED:-$(( (RANDOM << 15) | RANDOM ))}
examples=${SCHEMATHESIS_EXAMPLES:-100}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do  # SIGTERM first; whatever is still there after 15 s is killed
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
proxy=127.0.0.1:$(free_port) admin=127.0.0.1:$(free_port)
while [ "$proxy" = "$admin" ]; do admin=127.0.0.1:$(free_port); done
export GRAYSCALE_DB="$work/grayscale.sqlite" GRAYSCALE_ADMIN_TOKEN=schemathesis-token USER=${USER:-schemathesis}
export GRAYSCALE_SLACK_SIGNING_SECRET=8f742231b10e8888abcd99yyyzzz85a5
unset GRAYSCALE_SLACK_BOT_TOKEN GRAYSCALE_SLACK_WEBHOOK_URL

# A service with a stable release, a canary in its rollout, history, verdicts and audit entries.
mkdir -p "$work/policies"
cat > "$work/policies/engine.yaml" <<POLICY
service: engine
steps: [1, 5, 25, 50, 100]
stepMinimum: 1h
slack: {channel: "#serverless-tencent", operators: [U0OPERATOR]}
window: {days: [monday, tuesday, wednesday, thursday, friday, saturday, sunday], start: "00:00", end: "24:00", timeZone: UTC}
POLICY
cat > "$work/grayscale.yaml" <<CONFIG
database: $work/grayscale.sqlite
policies: $work/policies
proxy: {listen: $proxy, accessLog: $work/access.log}
admin: {listen: $admin}
controller: {tick: 1s}
CONFIG
"$grayscale" release publish --service engine --number 7 --label v2.1.0 --upstream http://127.0.0.1:9 --ref v2.1.0 > /dev/null
"$grayscale" release publish --service engine --number 8 --label v2.1.1 --upstream http://127.0.0.1:9 --ref v2.1.1 > /dev/null
"$grayscale" serve --config "$work/grayscale.yaml" > "$work/serve.log" 2>&1 & pids+=($!)
for _ in $(seq 300); do curl -s -o /dev/null "http://$admin/healthz" && break; sleep 0.1; done
curl -sf -o /dev/null "http://$admin/healthz" || { echo "serve did not start:"; cat "$work/serve.log"; exit 1; }

echo "slack_sdk $("$venv/bin/python" -c 'import slack_sdk.version as v; print(v.__version__)') signing requests to http://$admin/slack/*"
"$venv/bin/python" scripts/slack_sdk_check.py "http://$admin" "$GRAYSCALE_SLACK_SIGNING_SECRET" || {
  status=$?; echo "slack_sdk checks failed; serve's log:"; tail -50 "$work/serve.log"; exit "$status"; }


echo "schemathesis $("$venv/bin/schemathesis" --version | awk '{print $NF}') against http://$admin (seed $seed, $examples examples per operation; SCHEMATHESIS_SEED=$seed replays it)"
status=0
"$venv/bin/schemathesis" run openapi.yaml --url "http://$admin" --checks all --seed "$seed" --max-examples "$examples" \
  --header "Authorization: Bearer $GRAYSCALE_ADMIN_TOKEN" --no-color --workers 1 --output-sanitize false --generation-database none || status=$?
if [ "$status" != 0 ]; then
  echo "schemathesis found failures (seed $seed); serve's log:"; tail -50 "$work/serve.log"
  exit "$status"
fi
