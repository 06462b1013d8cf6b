#!/usr/bin/env bash
# The README's first command: set up, build, and run the best demo the code gives today:
# payer → hub → payee HTLC payments through the real protocol machines (in process).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$repo"
scripts/setup.sh
exec cargo run --release --locked -p simulations --bin demo -- "$@"
