#!/usr/bin/env bash
# Formatting and lints (part of scripts/test.sh; run it alone before a commit).
#
# Clippy type-checks without linking, but cargo runs build scripts separately for `check` and
# `build`, so a plain `cargo clippy` compiles RocksDB's C++ a second time (about 12 minutes of a
# cold CI run on 2 cores). librocksdb-sys skips its C++ build when told where a prebuilt library
# is (`ROCKSDB_LIB_DIR`); a check never links, so the lint pass points it at an empty directory.
# Always lint through this script: a plain `cargo clippy` in the same target dir re-runs the
# build script without the variable and compiles the C++ again.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$repo"
no_link="$CARGO_TARGET_DIR/lint-no-link"
mkdir -p "$no_link"
echo "== fmt";    cargo fmt --all -- --check
echo "== clippy"
ROCKSDB_LIB_DIR="$no_link" ROCKSDB_STATIC=1 \
  cargo clippy --workspace --all-targets --locked -- -D warnings
