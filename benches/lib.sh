# Shared helpers for the sluice benchmark scripts. Source, don't run.
# sluice listens on 127.0.0.1:2535 and relays to smtp-sink on 127.0.0.1:2526
# (bench.py starts the sink); recipients user0000..user0999@example.com.

# sluice_start DIR LOG_LEVEL [SERVER_KEYS] [MORE_TOML]: writes DIR/sluice.toml,
# starts target/release/sluice, or $SLUICE_BIN if set (pid in DIR/pid, log in
# DIR/sluice.log) and waits for the port.
sluice_start() {
  local dir=$1 level=$2 server_keys=${3:-} more=${4:-}
  mkdir -p "$dir"
  [ -f "$dir/recipients" ] || for i in $(seq 0 999); do printf 'user%04d@example.com OK\n' "$i"; done > "$dir/recipients"
  cat > "$dir/sluice.toml" <<TOML
[server]
listen = ["127.0.0.1:2535"]
hostname = "bench.localdomain"
$server_keys
[relay]
next_hop = "smtp://127.0.0.1:2526"
${RELAY_TOML:-}
[recipients]
domains = ["example.com"]
table = "recipients"
[spool]
dir = "spool"
fsync = true
[log]
level = "$level"
$more
TOML
  "${SLUICE_BIN:-$ROOT/target/release/sluice}" serve --config "$dir/sluice.toml" 2>> "$dir/sluice.log" &
  echo $! > "$dir/pid"
  for _ in $(seq 1 100); do ss -Hltn "sport = :2535" | grep -q . && return 0; sleep 0.1; done
  echo "sluice did not start; see $dir/sluice.log" >&2; return 1
}

# sluice_stop DIR: graceful stop (SIGTERM) and wait.
sluice_stop() {
  local pid; pid=$(cat "$1/pid" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}
