#!/usr/bin/env bash
# The Node tests of the Pusher-protocol gateway (pusher-js, laravel-echo, raw `ws`) and
# the browser test of the live page (playwright-core driving Debian's Chromium), all
# against the real `server` / `gateway` binaries. Called by tests/run after
# `cargo build --examples --all-features`.
#
#   SERVER_BIN, GATEWAY_BIN   default target/debug/examples/{server,gateway}
#   CHROMIUM_BIN              default /usr/bin/chromium
#   DATABASE_URL, REDIS_URL   required by redis.test.mjs (tests/run exports them)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

die() { echo "tests/node/run.sh: $*" >&2; exit 1; }

command -v node >/dev/null || die "node is missing: install Node.js 20 or newer (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null || die "npm is missing: install it (Debian: apt-get install npm)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "node $(node --version) is too old: Node.js 20 or newer is needed"
export CHROMIUM_BIN=${CHROMIUM_BIN:-/usr/bin/chromium}
[ -x "$CHROMIUM_BIN" ] || die "$CHROMIUM_BIN is missing: install Debian's chromium (apt-get install chromium) or set CHROMIUM_BIN"

export SERVER_BIN=${SERVER_BIN:-$root/target/debug/examples/server}
export GATEWAY_BIN=${GATEWAY_BIN:-$root/target/debug/examples/gateway}
for bin in "$SERVER_BIN" "$GATEWAY_BIN"; do
  [ -x "$bin" ] || die "$bin is missing: run \`cargo build --examples --all-features\` first"
done

# npm ci only when node_modules was not installed from this exact lock file.
cd "$here"
stamp=node_modules/.package-lock.sha256
want=$( (sha256sum package-lock.json; node --version) | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "tests/node: npm ci" >&2
  npm ci --no-audit --no-fund
  echo "$want" > "$stamp"
fi

mkdir -p "$root/target/artifacts/browser"

# Both parts run even when the first fails, so one run reports everything.
status=0
echo "tests/node: gateway and client tests" >&2
node --test --test-concurrency=1 --test-timeout=90000 --test-force-exit \
  pusher.test.mjs echo.test.mjs security.test.mjs recovery.test.mjs trigger.test.mjs redis.test.mjs \
  || status=$?

echo "tests/node: browser test (screenshots in target/artifacts/browser/)" >&2
node --test --test-timeout=90000 --test-force-exit browser.test.mjs || status=$?

[ "$status" -eq 0 ] || die "FAILED (see the output above)"
echo "tests/node: all passed" >&2
