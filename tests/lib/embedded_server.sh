# Sourced by the test scripts that drive the debug `server` binary over HTTP
# (tests/readme_session.sh, tests/schemathesis/run.sh): starts it on the memory
# adapters on a free port, waits for its `listening on` line, and stops it on exit.
# The sourcing script defines `die` and `$work` (a temporary directory it owns).
#
#   start_embedded_server "$server" VAR=value ...   # sets $api and $pid
#   (the EXIT trap set here sends SIGTERM, then SIGKILL after 10 s, and removes $work)

pid=""
api=""

stop_embedded_server() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}

start_embedded_server() {
  local server=$1; shift
  trap stop_embedded_server EXIT
  env -u DATABASE_URL -u REDIS_URL "$@" \
    "$server" --listen 127.0.0.1:0 --ws-listen 127.0.0.1:0 >"$work/server.out" 2>"$work/server.err" &
  pid=$!
  for _ in $(seq 300); do
    grep -q '^listening on ' "$work/server.out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/server.err" >&2; die "the server exited"; }
    sleep 0.1
  done
  api=$(sed -n 's/^listening on //p' "$work/server.out" | head -1)
  [ -n "$api" ] || { cat "$work/server.err" >&2; die "the server printed no 'listening on' line"; }
}
