#!/usr/bin/env bash
# The judge's promises, by seeded Monte Carlo through the real code (the simulator
# drives the real routing, evidence, judge and reconciler): false rollbacks in every
# null world, and users hurt / time to rollback in the incidents. Release build.
#
#   Benchmarks/judge.sh [runs=1000]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1000}
swift build -c release --product grayscale >/dev/null
bin=$(swift build -c release --show-bin-path)/grayscale

printf '%-28s %6s %9s %9s %10s %10s %12s %12s\n' scenario runs rollback falseRb hurtMean hurtP95 rbAfterMean rbAfterP95
for name in null-uniform null-heavy-tailed null-chronic-client null-broken-qa null-sticky-anonymous null-noisy-engine \
            null-latency-noise yaml-name-rule fault-at-25 last-step-failure latency-half-600 unavailable-30-percent; do
  "$bin" simulate "simulations/$name.yaml" --runs "$runs" --format json | python3 -c '
import json, sys
r = json.load(sys.stdin)
r = r[0] if isinstance(r, list) else r
after = r.get("rolledBackAfter") or {}
print("%-28s %6d %8.1f%% %8.2f%% %10.2f %10.0f %12s %12s" % (r["scenario"], r["runs"], 100 * r["rollbackRate"], 100 * r["falseRollbackRate"],
      r["usersHurt"]["mean"], r["usersHurt"]["p95"], after.get("mean", "-"), after.get("p95", "-")))'
done
