# Sourced by the project's scripts: one warm target dir per user (every clone on the machine
# shares it, so a fresh clone builds warm), tools on PATH.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vhub/target}"
export PATH="$repo/node_modules/.bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
