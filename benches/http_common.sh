# What benches/http.sh and benches/http_redis.sh share; sourced by both.

# wrk, installed from Debian's package if it is missing and this is root.
need_wrk() {
  command -v wrk >/dev/null && return
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    echo "wrk is not installed (apt-get install wrk): nothing measured"; exit 1
  fi
}

# write_sessions_lua FILE: wrk's hooks. Each thread gets its number (`setup`, in the main
# state) and, if PORT_B is set, loads host A (even threads, PORT_A) or host B (odd, PORT_B);
# it then sends the cookies of $COOKIES (one per line) in turn, from its own share of them.
write_sessions_lua() {
  cat >"$1" <<'LUA'
local threads = 0
function setup(thread)
  if os.getenv("PORT_B") then
    local port = (threads % 2 == 0) and os.getenv("PORT_A") or os.getenv("PORT_B")
    thread.addr = wrk.lookup("127.0.0.1", port)[1]
  end
  thread:set("number", threads)
  threads = threads + 1
end
local cookies = {}
for line in io.lines(os.getenv("COOKIES")) do cookies[#cookies + 1] = line end
local i = nil
request = function()
  if i == nil then
    i = (number or 0) * math.floor(#cookies / tonumber(os.getenv("THREADS")))
  end
  i = i % #cookies + 1
  return wrk.format(nil, nil, { ["Cookie"] = cookies[i] })
end
LUA
}

# port_of LOG: the port the master whose log is LOG listens on, once it says so.
port_of() {
  local port=""
  for _ in $(seq 1 200); do # waiting for the master to bind, bounded by the loop
    port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$1" | grep -o '[0-9]*$' || true)
    [[ -n $port ]] && break
    sleep 0.05
  done
  [[ -n $port ]] || { cat "$1" >&2; echo "server did not start" >&2; exit 1; }
  echo "$port"
}

# start_redis DIR: a redis-server of the script's own on a free port of 127.0.0.1, persistence
# off, its files in DIR; sets redis (its pid, for the caller's cleanup) and redis_port, and
# returns once it answers PING.
start_redis() {
  # The kernel's choice of a free port, released just before redis-server binds it.
  redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --dir "$1" --logfile "$1/redis.log" &
  redis=$!
  for _ in $(seq 1 100); do # waiting for Redis, bounded by the loop
    [[ $(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null) == PONG ]] && return
    sleep 0.05
  done
  echo "redis-server did not start" >&2
  exit 1
}
