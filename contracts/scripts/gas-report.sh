#!/usr/bin/env bash
# Measure gas per entry point on anvil and write contracts/GAS.md and the table in
# contracts/README.md; with --check, measure and fail if either differs from what is committed.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$repo/scripts/env.sh"
cd "$repo"
if [ "${1:-}" = "--check" ]; then
  unset VHUB_GAS_REPORT
else
  export VHUB_GAS_REPORT=write
fi
cargo test -p contracts --test gas --locked -- --nocapture gas_report_is_current
