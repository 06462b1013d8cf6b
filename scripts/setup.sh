#!/usr/bin/env bash
# Install everything the project needs that cargo does not fetch by itself. Safe to run twice.
#   - Debian's libclang-dev (librocksdb-sys generates its bindings with it) and chromium (the
#     dashboard test loads the page in it, headless)
#   - the pinned npm tools in package.json / package-lock.json: anvil (local chain),
#     cast (independent EIP-712 cross-check) and solc (Solidity compiler)
#   - cargo-nextest (the test runner), if the machine lacks it
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

need_apt=()
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
# The dashboard test drives a real headless browser.
command -v chromium >/dev/null 2>&1 || [ -n "${VHUB_CHROMIUM:-}" ] || need_apt+=(chromium)
if ((${#need_apt[@]})); then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# The test runner (`scripts/test.sh`); pinned, built from the crates registry if missing.
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest 0.9.143"
  cargo install cargo-nextest --version 0.9.143 --locked
fi

command -v npm >/dev/null || { echo "setup: npm (Node.js) is required to install anvil, cast and solc" >&2; exit 1; }
if ! cmp -s package-lock.json node_modules/.package-lock.json 2>/dev/null \
   || [ ! -x node_modules/.bin/anvil ] || [ ! -x node_modules/.bin/cast ] || [ ! -x node_modules/.bin/solcjs ]; then
  echo "setup: installing pinned npm tools (anvil, cast, solc)"
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
fi
echo "setup: $(node_modules/.bin/anvil --version | head -1); solc $(node_modules/.bin/solcjs --version)"
