#!/usr/bin/env bash
# HTTP, two hosts over one Redis: this store's Redis tier (each host's shared-memory store a
# cache in front of Redis, `RedisStore`) against tower-sessions-redis-store 0.16 (every
# request to Redis, through fred), both serving the same axum app from the same prefork
# master (benches/http_redis/server.rs: WORKERS forked workers per host on one SO_REUSEPORT
# port, a current-thread Tokio runtime each), two hosts (two masters on two ports) on one
# redis-server that this script starts on a free port, persistence off.
#
# Two routes: /read, read-mostly (the session read on every request, written on its first),
# and /hello (read and written on every request). For each store, both hosts are started, the
# Redis flushed, SESSIONS sessions taken on host A through one connection (and one of them
# read back on host B, which must see it), then wrk loads /read, then /hello, with THREADS
# threads, half of them on each host (wrk's `thread.addr`), each thread sending every session's
# cookie in turn from its own starting point: every session is read on both hosts. ROUNDS
# rounds (an even number), the two stores in alternating order; the table gives each store's
# median over the rounds, the median of the rounds' ratios and their quartiles, and Redis's
# commands per request (INFO stats, reset before each load). Any non-2xx answer or socket
# error stops the script: no figure is reported for a failing server.
#
#   bash benches/http_redis.sh   # WORKERS=1 CONNECTIONS=16 THREADS=2 DURATION=3s ROUNDS=10 SESSIONS=100
#
# Needs redis-server and redis-cli on PATH; installs wrk (Debian's package) if it is missing
# and this is root. Everything runs on 127.0.0.1; every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKERS=${WORKERS:-1}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
DURATION=${DURATION:-3s}
ROUNDS=${ROUNDS:-10}
SESSIONS=${SESSIONS:-100}
if ((ROUNDS < 2 || ROUNDS % 2)); then
  echo "ROUNDS must be even and at least 2, so that each store goes first as often" >&2
  exit 2
fi
if ((THREADS < 2 || THREADS % 2 || CONNECTIONS % THREADS)); then
  echo "THREADS must be even (half on each host) and divide CONNECTIONS" >&2
  exit 2
fi

for tool in redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed: nothing measured"; exit 1; }
done
source benches/http_common.sh
need_wrk
cargo build --release --quiet -p benches --example http_redis_server
bin=target/release/examples/http_redis_server
tmp=$(mktemp -d)
servers=()
redis=""
stop() {
  for pid in "${servers[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${servers[@]}"; do wait "$pid" 2>/dev/null || true; done
  servers=()
}
finish() {
  stop
  if [[ -n $redis ]]; then
    kill -TERM "$redis" 2>/dev/null || true
    wait "$redis" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap finish EXIT

start_redis "$tmp"
rcli() { redis-cli -h 127.0.0.1 -p "$redis_port" "$@"; }
redis_url="redis://127.0.0.1:$redis_port"
redis_version=$(rcli info server | awk -F: '/^redis_version/ { print $2 }' | tr -d '\r')

write_sessions_lua "$tmp/hosts.lua"

# host MODE: starts one host of MODE (its master and workers) in this shell, so that `stop`
# knows it; prints its port.
host() {
  local log="$tmp/log.$1.${#servers[@]}"
  if [[ $1 == ours ]]; then
    MODE=ours REDIS_URL=$redis_url WORKERS=$WORKERS PORT=0 "$bin" >"$log" 2>&1 &
  else
    MODE=peer PEER_REDIS_URL=$redis_url WORKERS=$WORKERS PORT=0 "$bin" >"$log" 2>&1 &
  fi
  servers+=($!)
}

# load ROUTE: wrk on both hosts; prints "rps p50 p99 commands-per-request".
load() {
  rcli config resetstat >/dev/null
  PORT_A=$port_a PORT_B=$port_b COOKIES="$tmp/cookies" THREADS="$THREADS" \
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 5s --latency -s "$tmp/hosts.lua" \
    "http://127.0.0.1:$port_a/$1" >"$tmp/wrk"
  local commands
  commands=$(rcli info stats | awk -F: '/^total_commands_processed/ { print $2 }' | tr -d '\r')
  if grep -q -E 'Non-2xx|Socket errors' "$tmp/wrk"; then
    cat "$tmp/wrk" "$tmp"/log.* >&2
    echo "errors under load on /$1: nothing reported" >&2
    exit 1
  fi
  awk -v commands="$commands" '
    /requests in/ { requests = $1 }
    /^Requests\/sec/ { rps = $2 }
    $1 == "50%" { p50 = $2 }
    $1 == "99%" { p99 = $2 }
    END { printf "%s %s %s %.3f\n", rps, p50, p99, (commands - 1) / requests }' "$tmp/wrk"
}

# run MODE: two hosts of MODE, SESSIONS sessions, /read then /hello; appends a line to
# $tmp/MODE.read and $tmp/MODE.hello.
run() {
  rcli flushall >/dev/null
  host "$1"
  host "$1"
  port_a=$(port_of "$tmp/log.$1.0")
  port_b=$(port_of "$tmp/log.$1.1")
  # One keep-alive connection to host A: every session begins there; host B must then see
  # the first one (answered "again", no new cookie).
  python3 - "$port_a" "$port_b" "$SESSIONS" >"$tmp/cookies" <<'PY'
import http.client, sys
a, b, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", a, timeout=5)
cookies = []
for _ in range(n):
    conn.request("GET", "/read")
    response = conn.getresponse()
    assert response.read() == b"new", "a new session's first /read"
    cookies.append(response.getheader("set-cookie").split(";")[0])
other = http.client.HTTPConnection("127.0.0.1", b, timeout=5)
other.request("GET", "/read", headers={"Cookie": cookies[0]})
response = other.getresponse()
assert response.read() == b"again" and response.getheader("set-cookie") is None, \
    "host B does not see host A's session"
print("\n".join(cookies))
PY
  [[ $(grep -c '^id=' "$tmp/cookies") == "$SESSIONS" ]] || { echo "no session cookie" >&2; exit 1; }
  load read >>"$tmp/$1.read"
  load hello >>"$tmp/$1.hello"
  stop
}

for round in $(seq 1 "$ROUNDS"); do
  if ((round % 2)); then order="ours peer"; else order="peer ours"; fi
  for mode in $order; do
    run "$mode"
  done
  echo "round $round: /read ours $(tail -1 "$tmp/ours.read"), peer $(tail -1 "$tmp/peer.read");" \
    "/hello ours $(tail -1 "$tmp/ours.hello"), peer $(tail -1 "$tmp/peer.hello")"
done

# One table row per route: each store's medians (requests/s, p50, p99, Redis commands per
# request) and the median of the rounds' ratios of requests/s with their quartiles.
row() {
  local a_rps a_p50 a_p99 a_calls b_rps b_p50 b_p99 b_calls ratio q1 q3 _
  IFS='|' read -r a_rps a_p50 a_p99 a_calls b_rps b_p50 b_p99 b_calls ratio q1 q3 _ \
    <<<"$(python3 benches/rounds.py "$tmp/ours.$1" "$tmp/peer.$1")"
  printf '%s | %s / %s | %.2f | %s | %s / %s | %.2f | **%.2f×** | %.2f× to %.2f×' \
    "$a_rps" "$a_p50" "$a_p99" "$a_calls" "$b_rps" "$b_p50" "$b_p99" "$b_calls" "$ratio" "$q1" "$q3"
}
summary="| route | writes | RedisStore requests/s | p50 / p99 | Redis commands per request | tower-sessions-redis-store requests/s | p50 / p99 | Redis commands per request | ratio (median of rounds) | quartiles |
|---|---|---|---|---|---|---|---|---|---|
| \`/read\` | first request of a session | $(row read) |
| \`/hello\` | every request | $(row hello) |

Two hosts of $WORKERS worker(s) each, one Redis $redis_version (persistence off), $SESSIONS sessions read on both hosts; wrk -t$THREADS -c$CONNECTIONS -d$DURATION (half the threads on each host), $(nproc) cores, $ROUNDS rounds in alternating order."
echo "$summary"
mkdir -p target && echo "$summary" >target/bench-summary-http-redis.md
