#!/usr/bin/env bash
# Compile the Solidity sources with the pinned solc and write contracts/artifacts/.
#   contracts/scripts/compile.sh          write the artifacts
#   contracts/scripts/compile.sh --check  recompile and fail if the committed artifacts differ
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec node "$here/compile.js" "$@"
