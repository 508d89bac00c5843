#!/usr/bin/env bash
# The shared store: a controller tick and a human command (p50/p99) on SQLite and on
# PostgreSQL, then three `grayscale serve` replicas on one PostgreSQL and the time from
# a split change to every replica's routing (pushed by LISTEN/NOTIFY).
#
#   Benchmarks/replicas.sh [iterations=500] [rounds=100]
#
# Starts its own PostgreSQL (Debian's server, a temporary data directory, 127.0.0.1
# only, as the postgres user when run as root). Release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
iterations=${1:-500}
rounds=${2:-100}

bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x "$bindir/pg_ctl" ] || { echo "PostgreSQL's server is not installed (apt-get install postgresql)"; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

swift build -c release --product grayscale >/dev/null
swift build -c release --product grayscale-store-bench >/dev/null
bin=$(swift build -c release --show-bin-path)

work=$(mktemp -d /tmp/grayscale-replicas-XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  as_pg "$bindir/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

export GRAYSCALE_DB_PASSWORD=bench-password
pg_port=18300
mkdir "$work/pg"; echo "$GRAYSCALE_DB_PASSWORD" > "$work/pw"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg" "$work/pw"
as_pg "$bindir/initdb" -D "$work/pg" -U grayscale -A scram-sha-256 --pwfile="$work/pw" -E UTF8 --locale=C >/dev/null
as_pg "$bindir/pg_ctl" -D "$work/pg" -l "$work/pg/server.log" -w \
  -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1" start </dev/null >/dev/null 2>&1
for db in store fleet; do PGPASSWORD=$GRAYSCALE_DB_PASSWORD "$bindir/createdb" -h 127.0.0.1 -p $pg_port -U grayscale $db; done
url=postgres://grayscale@127.0.0.1:$pg_port

echo "== controller tick and command, $iterations each (PostgreSQL with fsync on, as shipped) =="
"$bin/grayscale-store-bench" store "$work/store.sqlite" "$url/store" "$iterations"

echo "== three serve replicas on $url/fleet =="
mkdir -p "$work/policies"
admins=()
for i in 0 1 2; do
  proxy_port=$((18310 + i)) admin_port=$((18320 + i))
  cat > "$work/r$i.yaml" <<CONF
database: $url/fleet
policies: $work/policies
proxy: {listen: "127.0.0.1:$proxy_port", accessLog: $work/r$i-access.log}
admin: {listen: "127.0.0.1:$admin_port"}
CONF
  "$bin/grayscale" serve --config "$work/r$i.yaml" >"$work/r$i.log" 2>&1 &
  pids+=($!)
  admins+=("http://127.0.0.1:$admin_port")
done
for admin in "${admins[@]}"; do
  for _ in $(seq 100); do curl -fs "$admin/healthz" >/dev/null && break; sleep 0.1; done
done
"$bin/grayscale-store-bench" propagation "$url/fleet" "${admins[@]}" --rounds "$rounds"
