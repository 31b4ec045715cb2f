#!/usr/bin/env bash
# HTTP: the hello example (axum + tower-sessions, examples/hello_cluster.rs) under wrk, with a
# session cookie, once over this store (shared by the workers) and once over tower-sessions'
# MemoryStore (one per worker, STORE=memory): requests/s and latency p50/p99 for both, and
# their ratio, so the store's share of a request's cost shows.
#
#   bash benches/http.sh            # WORKERS=2 CONNECTIONS=16 DURATION=10s by default
#
# Installs wrk (Debian's package) if it is missing and this is root. Targets 127.0.0.1 only;
# every server it starts is stopped on exit. With the per-process store, a request reaching a
# worker that does not hold the session starts a new one there (a miss and an insert): that
# is what a per-process store costs a pre-forked server, and the figures include it.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${WORKERS:-2}
CONNECTIONS=${CONNECTIONS:-16}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}

if ! command -v wrk >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    echo "wrk is not installed (apt-get install wrk): nothing measured"; exit 1
  fi
fi
cargo build --release --quiet --features tower-sessions --example hello_cluster
bin=target/release/examples/hello_cluster
tmp=$(mktemp -d)
server=""
stop() {
  if [[ -n $server ]]; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
  fi
}
trap 'stop; rm -rf "$tmp"' EXIT

# run STORE: starts the server, takes a session, loads it with wrk; prints "rps p50 p99".
run() {
  STORE=$1 WORKERS=$WORKERS PORT=0 "$bin" >"$tmp/log" 2>&1 &
  server=$!
  local port=""
  for _ in $(seq 1 200); do # waiting for the server to bind, bounded by the loop
    port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$tmp/log" | grep -o '[0-9]*$' || true)
    [[ -n $port ]] && break
    sleep 0.05
  done
  [[ -n $port ]] || { cat "$tmp/log"; echo "server did not start"; exit 1; }
  local url="http://127.0.0.1:$port/hello"
  curl -s --max-time 5 -c "$tmp/jar" "$url" >/dev/null
  local cookie
  cookie=$(awk '$6 == "id" { print "id=" $7 }' "$tmp/jar")
  [[ -n $cookie ]] || { echo "no session cookie"; exit 1; }
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 5s --latency \
    -H "Cookie: $cookie" "$url" >"$tmp/wrk"
  stop
  local rps p50 p99
  rps=$(awk '/^Requests\/sec/ { print $2 }' "$tmp/wrk")
  p50=$(awk '$1 == "50%" { print $2 }' "$tmp/wrk")
  p99=$(awk '$1 == "99%" { print $2 }' "$tmp/wrk")
  echo "$rps $p50 $p99"
}

# `run` in this shell (not a subshell), so that the EXIT trap knows the server to stop.
run shared >"$tmp/shared"
run memory >"$tmp/memory"
read -r shared_rps shared_p50 shared_p99 <"$tmp/shared"
read -r memory_rps memory_p50 memory_p99 <"$tmp/memory"
ratio=$(python3 -c "print(f'{$shared_rps / $memory_rps:.3f}')")
summary="| store | requests/s | p50 | p99 |
|---|---|---|---|
| cluster-session-store (shared by $WORKERS workers) | $shared_rps | $shared_p50 | $shared_p99 |
| tower-sessions MemoryStore (one per worker, not shared) | $memory_rps | $memory_p50 | $memory_p99 |

shared / per-process requests/s: ${ratio}× (wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $WORKERS workers, $(nproc) cores)"
echo "$summary"
mkdir -p target && echo "$summary" >target/bench-summary-http.md
