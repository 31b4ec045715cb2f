#!/usr/bin/env bash
# HTTP: the hello example (axum + tower-sessions, examples/hello_cluster.rs) under wrk, with a
# session cookie, once over this store (shared by the workers) and once over tower-sessions'
# MemoryStore (one per worker, STORE=memory): requests/s and latency p50/p99 for both, and
# their ratio, so the store's share of a request's cost shows. ROUNDS rounds (an even number),
# each running both servers one after the other, in alternating order, so that each store goes
# first in half of them (a server measured faster or slower by its position alone would
# otherwise bias the ratio); the table gives each store's median over the rounds, the median
# of the rounds' ratios and their quartiles. Many short rounds rather than a few long ones:
# on a shared machine the neighbours' load drifts over seconds, and each round's two halves
# should see the same.
#
# The load spreads over SESSIONS sessions (default 100), taken before the load through one
# connection, so on one worker: each request carries the next session's cookie in turn, each
# wrk thread starting at its own share of them, as requests from many clients would.
# SESSIONS=1 sends every request with one cookie: a single session that both workers write on
# every request, its memory moving between their CPUs.
#
#   bash benches/http.sh    # WORKERS=2 CONNECTIONS=16 DURATION=3s ROUNDS=10 SESSIONS=100
#
# Installs wrk (Debian's package) if it is missing and this is root. Targets 127.0.0.1 only;
# every server it starts is stopped on exit. With the per-process store, a request reaching a
# worker that does not hold the session starts a new one there (a miss and an insert): that
# is what a per-process store costs a pre-forked server, and the figures include it.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${WORKERS:-2}
CONNECTIONS=${CONNECTIONS:-16}
DURATION=${DURATION:-3s}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-10}
if ((ROUNDS < 2 || ROUNDS % 2)); then
  echo "ROUNDS must be even and at least 2, so that each store goes first as often" >&2
  exit 2
fi
SESSIONS=${SESSIONS:-100}

source benches/http_common.sh
need_wrk
cargo build --release --quiet -p examples --example hello_cluster
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

write_sessions_lua "$tmp/sessions.lua"

# run STORE: starts the server, takes SESSIONS sessions, loads them with wrk; prints
# "rps p50 p99".
run() {
  STORE=$1 WORKERS=$WORKERS PORT=0 "$bin" >"$tmp/log" 2>&1 &
  server=$!
  local port
  port=$(port_of "$tmp/log")
  local url="http://127.0.0.1:$port/hello"
  # One keep-alive connection: every session begins on the worker that accepted it.
  python3 - "$port" "$SESSIONS" >"$tmp/cookies" <<'PY'
import http.client, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
for _ in range(int(sys.argv[2])):
    conn.request("GET", "/hello")
    response = conn.getresponse()
    response.read()
    print(response.getheader("set-cookie").split(";")[0])
PY
  [[ $(grep -c '^id=' "$tmp/cookies") == "$SESSIONS" ]] || { echo "no session cookie" >&2; exit 1; }
  COOKIES="$tmp/cookies" THREADS="$THREADS" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 5s \
    --latency -s "$tmp/sessions.lua" "$url" >"$tmp/wrk"
  stop
  local rps p50 p99
  rps=$(awk '/^Requests\/sec/ { print $2 }' "$tmp/wrk")
  p50=$(awk '$1 == "50%" { print $2 }' "$tmp/wrk")
  p99=$(awk '$1 == "99%" { print $2 }' "$tmp/wrk")
  echo "$rps $p50 $p99"
}

# `run` in this shell (not a subshell), so that the EXIT trap knows the server to stop.
# Each round appends "rps p50 p99" to $tmp/shared and $tmp/memory.
for round in $(seq 1 "$ROUNDS"); do
  if ((round % 2)); then order="shared memory"; else order="memory shared"; fi
  for store in $order; do
    run "$store" >>"$tmp/$store"
  done
  echo "round $round: shared $(tail -1 "$tmp/shared"); memory $(tail -1 "$tmp/memory")"
done
# Medians: of each store's requests/s, p50 and p99, and of the ratios (benches/rounds.py).
medians=$(python3 benches/rounds.py "$tmp/shared" "$tmp/memory")
IFS='|' read -r shared_rps shared_p50 shared_p99 memory_rps memory_p50 memory_p99 ratio q1 q3 ratios <<<"$medians"
quartiles="$q1 to $q3"
summary="| store | requests/s | p50 | p99 |
|---|---|---|---|
| cluster-session-store (shared by $WORKERS workers) | $shared_rps | $shared_p50 | $shared_p99 |
| tower-sessions MemoryStore (one per worker, not shared) | $memory_rps | $memory_p50 | $memory_p99 |

shared / per-process requests/s: ${ratio}× (median of the rounds' ratios; quartiles $quartiles; rounds $ratios; wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $WORKERS workers, $(nproc) cores, $SESSIONS sessions, $ROUNDS rounds in alternating order)"
echo "$summary"
mkdir -p target && echo "$summary" >target/bench-summary-http.md
