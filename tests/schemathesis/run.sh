#!/usr/bin/env bash
# Schema-driven fuzzing of the served OpenAPI document (GET /api/openapi.json) with
# schemathesis: every operation, positive and negative inputs, all checks (no 5xx,
# status codes, content types, response schemas, headers, auth, …), authenticated as
# alice, against the embedded server (memory adapters, rate limit off).
#   bash tests/schemathesis/run.sh        (tests/run calls it)
# Knobs: SCHEMATHESIS_MAX_EXAMPLES (per operation, default 60), SCHEMATHESIS_SEED (to
# replay a run; schemathesis prints the seed it used), SCHEMATHESIS_EXTRA (more flags).
# Settings: tests/schemathesis/schemathesis.toml. Needs python3 with venv, and curl.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
here="$PWD/tests/schemathesis"
say() { printf '\033[1mschemathesis:\033[0m %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

SCHEMATHESIS_VERSION=4.32.5
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
venv="$target/schemathesis-venv"
server="$target/debug/examples/server"
[ -x "$server" ] || die "$server is missing: cargo build --examples --all-features (tests/run does)"
command -v curl >/dev/null || die "curl is needed (Debian: apt install curl)"

# 1. A virtualenv with the pinned schemathesis, reused while the version matches.
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "version $SCHEMATHESIS_VERSION"; then
  command -v python3 >/dev/null || die "python3 is needed (Debian: apt install python3 python3-venv)"
  say "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt install python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
    || die "pip could not install schemathesis==$SCHEMATHESIS_VERSION"
fi

# 2. The server on the memory adapters, on a free port.
work=$(mktemp -d)
. tests/lib/embedded_server.sh
start_embedded_server "$server" ORDERS_RATE_LIMIT_PER_MINUTE=0

# 3. A token for alice.
login=$(curl -sS -X POST "$api/api/tokens" -H 'Content-Type: application/json' \
  -d '{"email":"alice@example.com","password":"password"}') || die "POST /api/tokens failed"
token=$(printf '%s' "$login" | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["token"])') \
  || die "no token in the login answer: $login"

# 4. Fuzz. Bounded: a number of examples per operation (and a hard stop at 170 s).
say "fuzzing $api/api/openapi.json (schemathesis $SCHEMATHESIS_VERSION)"
seed_flag=()
[ -n "${SCHEMATHESIS_SEED:-}" ] && seed_flag=(--seed "$SCHEMATHESIS_SEED")
status=0
# The report and hypothesis' example database stay under target/, never in the tree.
(cd "$work" && timeout 170 "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" \
  run "$api/api/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-60}" \
  --request-timeout 10 \
  --generation-database none \
  --report junit --report-dir "$target/schemathesis-report" \
  --no-color \
  "${seed_flag[@]}" ${SCHEMATHESIS_EXTRA:-}) || status=$?
if [ "$status" = 124 ]; then
  die "schemathesis did not finish within 170 s"
elif [ "$status" != 0 ]; then
  say "server stderr (last 40 lines):"
  tail -40 "$work/server.err" >&2 || true
  die "schemathesis found failures (exit $status); report: $target/schemathesis-report"
fi
say "OK: no failures"
