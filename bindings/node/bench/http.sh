#!/usr/bin/env bash
# HTTP: the seed's /hello (hello.js) with WORKERS workers under wrk, on four stores side by
# side in one run: this package (cluster), the seed itself (strong-cluster-express-store over
# node's cluster IPC), connect-redis over its own redis-server, and express-session's
# MemoryStore per worker (not shared: the floor, a server with no store cost to speak of).
# Two loads: "returning" sends the cookies of SESSIONS sessions in turn (express-session then
# calls get and set on every request), "new" sends no cookie (a new session, one set, per
# request, as a plain `wrk URL` does). ROUNDS rounds, each running every store for DURATION,
# the order rotated each round so that each store runs in each position equally often; the
# table gives each store's median requests/s and p99 over the rounds, and its ratio to the
# seed's. Then the store calls alone (store.js), on the same redis-server.
#
#   bash bench/http.sh    # WORKERS=2 THREADS=1 CONNECTIONS=32 DURATION=3s ROUNDS=4 SESSIONS=100
#
# Needs wrk (installed from Debian's package if missing and root, as benches/http.sh does)
# and redis-server (.ci/test installs it); runs `npm install` here for the peers. Targets
# 127.0.0.1 only; every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")"
WORKERS=${WORKERS:-2}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-3s}
ROUNDS=${ROUNDS:-4}
SESSIONS=${SESSIONS:-100}
STORES=(cluster seed redis memory)

source ../../../benches/http_common.sh
need_wrk
command -v redis-server >/dev/null || { echo "redis-server is not installed (bash .ci/test installs it)" >&2; exit 1; }
[[ -f ../index.node ]] || (cd .. && npm install --no-audit --no-fund)
[[ -d node_modules/connect-redis ]] || npm install --no-audit --no-fund

tmp=$(mktemp -d)
server=""
redis=""
stop() {
  if [[ -n $server ]]; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
  fi
}
trap 'stop; [[ -n $redis ]] && { kill -TERM "$redis" 2>/dev/null; wait "$redis" 2>/dev/null; }; rm -rf "$tmp"' EXIT

start_redis "$tmp"

write_sessions_lua "$tmp/sessions.lua"
: >"$tmp/results"

# run STORE LOAD: starts the server, takes the sessions, loads it; appends "STORE LOAD rps p99ms".
run() {
  local store=$1 load=$2
  STORE=$store WORKERS=$WORKERS REDIS_URL="redis://127.0.0.1:$redis_port" node hello.js >"$tmp/log" 2>&1 &
  server=$!
  local port
  port=$(port_of "$tmp/log")
  local url="http://127.0.0.1:$port/hello"
  if [[ $load == returning ]]; then
    python3 - "$port" "$SESSIONS" >"$tmp/cookies" <<'PY'
import http.client, sys
for _ in range(int(sys.argv[2])):
    conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=5)
    conn.request("GET", "/hello", headers={"Connection": "close"})
    response = conn.getresponse()
    response.read()
    print(response.getheader("set-cookie").split(";")[0])
PY
    [[ $(grep -c '^connect.sid=' "$tmp/cookies") == "$SESSIONS" ]] || { echo "no session cookie" >&2; exit 1; }
    COOKIES="$tmp/cookies" THREADS="$THREADS" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 5s \
      --latency -s "$tmp/sessions.lua" "$url" >"$tmp/wrk"
  else
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 5s --latency "$url" >"$tmp/wrk"
  fi
  stop
  if grep -q 'Non-2xx\|Socket errors' "$tmp/wrk"; then
    echo "errors under load ($store, $load):" >&2
    cat "$tmp/wrk" "$tmp/log" >&2
    exit 1
  fi
  local rps p99
  rps=$(awk '/^Requests\/sec/ { print $2 }' "$tmp/wrk")
  p99=$(awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } print v }' "$tmp/wrk")
  echo "$store $load $rps $p99" >>"$tmp/results"
  printf '  %-8s %-9s %10s req/s  p99 %8s ms\n' "$store" "$load" "$rps" "$p99" >&2
}

n=${#STORES[@]}
for ((round = 0; round < ROUNDS; round++)); do
  echo "round $((round + 1)) of $ROUNDS" >&2
  for load in returning new; do
    for ((i = 0; i < n; i++)); do
      run "${STORES[$(((i + round) % n))]}" "$load"
    done
  done
done

python3 - "$tmp/results" "$WORKERS" "$THREADS" "$CONNECTIONS" "$DURATION" "$ROUNDS" "$SESSIONS" <<'PY'
import statistics, sys
path, workers, threads, conns, duration, rounds, sessions = sys.argv[1:]
runs = {}
for line in open(path):
    store, load, rps, p99 = line.split()
    runs.setdefault((store, load), []).append((float(rps), float(p99)))
print(f"/hello, {workers} workers, wrk -t{threads} -c{conns} -d{duration}, {rounds} rounds (medians)\n")
print("| load | store | requests/s | p99 ms | requests/s vs seed | p99 vs seed |")
print("|---|---|---|---|---|---|")
names = {"cluster": "this package", "seed": "seed (cluster IPC)", "redis": "connect-redis", "memory": "MemoryStore per worker (not shared)"}
loads = {"returning": f"returning ({sessions} sessions)", "new": "new session per request"}
for load in ("returning", "new"):
    seed = runs[("seed", load)]
    seed_rps = statistics.median(r for r, _ in seed)
    seed_p99 = statistics.median(p for _, p in seed)
    for store in ("cluster", "seed", "redis", "memory"):
        rs = runs[(store, load)]
        rps = statistics.median(r for r, _ in rs)
        p99 = statistics.median(p for _, p in rs)
        print(f"| {loads[load]} | {names[store]} | {rps:,.0f} | {p99:.2f} | {rps / seed_rps:.2f}× | {p99 / seed_p99:.2f}× |")
PY

echo
echo "store calls (store.js)" >&2
WORKERS=$WORKERS REDIS_URL="redis://127.0.0.1:$redis_port" node store.js
