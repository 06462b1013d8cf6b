#!/usr/bin/env bash
# The README's second command: install what the tests need, then run every check and test.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$repo"
scripts/setup.sh
scripts/lint.sh
echo "== tests";  cargo nextest run --workspace --locked --no-fail-fast
echo "== doctests"; cargo test --workspace --doc --locked
echo "== operator walk-through"; cargo build --locked -q -p hub --bin hub
HUB_BIN="$CARGO_TARGET_DIR/debug/hub" scripts/walkthrough.sh
