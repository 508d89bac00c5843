#!/usr/bin/env bash
# A scripted walk through a release on a temporary database: publish a stable and a
# canary release, give the canary a cohort, ask who gets what, widen, roll back.
# Every step runs the real `grayscale` binary against a real SQLite file.
set -euo pipefail

grayscale=${1:-.build/debug/grayscale}
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
export GRAYSCALE_DB="$workdir/grayscale.sqlite"
export USER=${USER:-demo}

step() { printf '\n\033[1m== %s\033[0m\n$ grayscale %s\n' "$1" "${*:2}"; "$grayscale" "${@:2}"; }

step "Check the shipped rollout policies" policy check policies/default.yaml policies/engine.yaml policies/events.yaml
step "Engine 7 is the first release: stable at once" \
  release publish --service engine --number 7 --label v2.1.0 --upstream http://127.0.0.1:9007 --ref v2.1.0
step "Engine 8 is published: it becomes the canary, with no users yet" \
  release publish --service engine --number 8 --label v2.1.1 --upstream http://127.0.0.1:9008 --ref v2.1.1
step "Give the canary 5% of users" traffic set --service engine --percent 5 --as kaiyuzeng --reason "first step"
step "Which version does app-1001 get, and why?" traffic which --service engine --app-id app-1001
step "Move the canary to percent buckets 20 through 55 (the design's -p 20:55)" \
  traffic set --service engine --range 20:55 --as kaiyuzeng
step "Which version does app-1001 get now?" traffic which --service engine --app-id app-1001
printf '\n\033[1m== The split as JSON, as scripts and the admin API read it\033[0m\n'
"$grayscale" traffic show --service engine --format json | python3 -c '
import json, sys
split = json.load(sys.stdin)
print("  range %s = %s%% of users; requests without a token: %s%%" % (
    split["canary"]["range"]["text"], split["canary"]["range"]["percent"], split["nonAuthWeightPercent"]))'
step "Errors on the canary: roll everything back to stable in one command" \
  release rollback --service engine --as kaiyuzeng --reason "deploy errors on names like xx.xx"
step "Engine 9 fixes it: a new canary, with a new salt and so a new cohort" \
  release publish --service engine --number 9 --label v2.1.2 --upstream http://127.0.0.1:9009
step "Releases of engine" release list --service engine
step "Every split engine has had" traffic history --service engine
step "The audit trail" audit --service engine
