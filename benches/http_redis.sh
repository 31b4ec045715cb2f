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

# A free port for Redis (the kernel's choice, released just before redis-server binds it).
redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
  --dir "$tmp" --logfile "$tmp/redis.log" &
redis=$!
rcli() { redis-cli -h 127.0.0.1 -p "$redis_port" "$@"; }
for _ in $(seq 1 100); do # waiting for Redis, bounded by the loop
  [[ $(rcli ping 2>/dev/null) == PONG ]] && break
  sleep 0.05
done
[[ $(rcli ping) == PONG ]] || { echo "redis-server did not start" >&2; exit 1; }
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
  python3 - "$tmp/ours.$1" "$tmp/peer.$1" <<'PY'
import re, statistics, sys
def seconds(t):
    v, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", t).groups()
    return float(v) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]
def show(s):
    return f"{s * 1e6:.0f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms"
runs = [[line.split() for line in open(path) if line.strip()] for path in sys.argv[1:]]
out = []
for rows in runs:
    rps = statistics.median(float(r[0]) for r in rows)
    p50 = statistics.median(seconds(r[1]) for r in rows)
    p99 = statistics.median(seconds(r[2]) for r in rows)
    calls = statistics.median(float(r[3]) for r in rows)
    out += [f"{rps:,.0f}", f"{show(p50)} / {show(p99)}", f"{calls:.2f}"]
ratios = [float(a[0]) / float(b[0]) for a, b in zip(*runs)]
q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
out += [f"**{statistics.median(ratios):.2f}×**", f"{q1:.2f}× to {q3:.2f}×"]
print(" | ".join(out))
PY
}
summary="| route | writes | RedisStore requests/s | p50 / p99 | Redis commands per request | tower-sessions-redis-store requests/s | p50 / p99 | Redis commands per request | ratio (median of rounds) | quartiles |
|---|---|---|---|---|---|---|---|---|---|
| \`/read\` | first request of a session | $(row read) |
| \`/hello\` | every request | $(row hello) |

Two hosts of $WORKERS worker(s) each, one Redis $redis_version (persistence off), $SESSIONS sessions read on both hosts; wrk -t$THREADS -c$CONNECTIONS -d$DURATION (half the threads on each host), $(nproc) cores, $ROUNDS rounds in alternating order."
echo "$summary"
mkdir -p target && echo "$summary" >target/bench-summary-http-redis.md
