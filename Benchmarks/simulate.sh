#!/usr/bin/env bash
# Simulated requests per second of wall time: the whole incident library once, then a
# 1,000-run Monte Carlo of the name-rule incident, on a release build.
#
#   Benchmarks/simulate.sh [runs=1000]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1000}
swift build -c release --product grayscale >/dev/null
bin=$(swift build -c release --show-bin-path)/grayscale

echo "== the incident library, once"
start=$(date +%s.%N)
"$bin" simulate simulations/ | tail -1
end=$(date +%s.%N)
echo "wall time: $(echo "$end - $start" | bc) s"

echo
echo "== Monte Carlo: yaml-name-rule, $runs runs (one core)"
start=$(date +%s.%N)
taskset -c 0 "$bin" simulate simulations/yaml-name-rule.yaml --runs "$runs"
end=$(date +%s.%N)
echo "wall time: $(echo "$end - $start" | bc) s"
