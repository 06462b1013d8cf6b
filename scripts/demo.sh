#!/usr/bin/env bash
# The README's first command: set up, build, and run the local network demo: a local chain
# (anvil) with the contracts deployed, one hub, peers with funded ledger channels, and a stream
# of payments between them, printed as it goes, until Ctrl-C (then every channel closes on
# chain and the payouts are checked). `scripts/demo.sh --help` lists the options.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$repo"
scripts/setup.sh
exec cargo run --release --locked -p hub --bin hub -- demo "$@"
