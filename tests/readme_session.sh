#!/usr/bin/env bash
# Runs README.md's curl session (the block between the readme-session markers) against
# the embedded server and checks what it printed, so the README's session stays true.
#   bash tests/readme_session.sh      (tests/run calls it; needs curl and jq)
# The server runs with a 2 s grace period so the session's cancel wins deterministically
# and its "watch it become PAID or FAILED" loop really waits for a worker.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1mreadme_session:\033[0m %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
for tool in curl jq; do command -v "$tool" >/dev/null || die "$tool is needed (Debian: apt install $tool)"; done

server="${CARGO_TARGET_DIR:-target}/debug/examples/server"
[ -x "$server" ] || die "$server is missing: cargo build --examples --all-features (tests/run does)"

work=$(mktemp -d)
. tests/lib/embedded_server.sh
start_embedded_server "$server" ORDERS_GRACE_PERIOD_MS=2000

sed -n '/<!-- readme-session:start -->/,/<!-- readme-session:end -->/p' README.md \
  | sed '1,2d;$d' | sed '$d' >"$work/session.sh"
grep -q '^API=http://127.0.0.1:8000$' "$work/session.sh" || die "the README session no longer starts with API=http://127.0.0.1:8000"
sed -i "s|^API=http://127.0.0.1:8000\$|API=$api|" "$work/session.sh"
timeout 60 bash -euo pipefail "$work/session.sh" >"$work/session.out" 2>&1 \
  || { cat "$work/session.out" >&2; die "the README session failed"; }
cat "$work/session.out" >&2

out="$work/session.out"
grep -q '"name":"Limited Edition Headphones"' "$out" || die "the product list is missing"
grep -Eq '"status":"(PAID|FAILED)","total_amount":"209.97"' "$out" || die "the order did not end PAID/FAILED with total 209.97"
grep -q '"status":"CANCELLED"' "$out" || die "the cancel did not answer the cancelled order"
grep -q '"meta":{"current_page":1,"per_page":5,"total":2,"last_page":1}' "$out" || die "the order list's meta is wrong"
say "README session OK"
