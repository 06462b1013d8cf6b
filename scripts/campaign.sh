#!/usr/bin/env bash
# A long property-test campaign (issue 19): every property test of htlc, router and simulations,
# in release, over and over with fresh random seeds and a large budget, until the time is up.
# CI runs the same tests on one fixed seed (testkit::CI_SEED); this hunts further.
#
#   scripts/campaign.sh [--minutes N] [--jobs J] [--cases C] [--skip PATTERN]
#
# Defaults: 60 minutes, 2 parallel workers (one per core), PROPTEST_CASES=2000 per test per run.
# On a failure it stops and prints the seed: replay it with
#   VHUB_PROPTEST_SEED=<seed> PROPTEST_CASES=<cases> cargo test --release -p <pkg> <target>
# (the test binaries run with the package as working directory, as cargo runs them)
# and proptest records the shrunk case in the test's *.proptest-regressions file: commit it.
# The summary line gives the wall and CPU time and how many generated cases ran clean.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$repo"

minutes=60 jobs=2 cases=2000 skip=""
while (($#)); do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --cases) cases="$2"; shift 2 ;;
    --skip) skip="$2"; shift 2 ;;   # leave out the targets matching PATTERN, e.g. "router --test"
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "campaign: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$minutes" =~ ^[0-9]+$ && "$jobs" =~ ^[1-9][0-9]*$ && "$cases" =~ ^[1-9][0-9]*$ ]] \
  || { echo "campaign: --minutes, --jobs and --cases take positive integers" >&2; exit 2; }

# (package, cargo target selector) pairs holding property tests.
targets=(
  "htlc --test protocol_props"
  "htlc --test node_network"
  "htlc --lib"
  "router --test routes"
  "router --lib"
  "simulations --test conservation"
)
if [ -n "$skip" ]; then
  kept=()
  for t in "${targets[@]}"; do [[ "$t" == *"$skip"* ]] || kept+=("$t"); done
  targets=("${kept[@]}")
  echo "campaign: skipping targets matching \"$skip\""
fi
echo "campaign: building the property tests in release"
# The test binaries themselves are run below (not `cargo test`), so the campaign never waits
# for cargo's build lock while another build runs.
bins=()
for t in "${targets[@]}"; do
  read -r pkg sel name <<<"$t"
  exe=$(cargo test --release --locked -p "$pkg" $sel ${name:-} --no-run 2>&1 \
        | grep -o 'Executable .*(\(.*\))' | sed 's/.*(\(.*\))/\1/' | tail -1)
  [ -x "$exe" ] || { echo "campaign: no test binary for $t" >&2; exit 1; }
  bins+=("$exe")
done

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
deadline=$(( $(date +%s) + minutes * 60 ))
start=$(date +%s)

worker() {
  local w="$1" runs=0 generated=0
  while (( $(date +%s) < deadline )); do
    for i in "${!targets[@]}"; do
      t="${targets[$i]}"
      log="$out/w$w.log"
      read -r pkg _ <<<"$t"
      if ! (cd "$repo/$pkg" && VHUB_PROPTEST_SEED=random PROPTEST_CASES="$cases" \
            CARGO_MANIFEST_DIR="$repo/$pkg" "${bins[$i]}" --nocapture) >"$log" 2>&1; then
        echo "campaign: FAILED in $t (worker $w); its seeds and output:" >&2
        grep -E 'VHUB_PROPTEST_SEED=|panicked|minimal failing|Test failed' "$log" >&2 || true
        cp "$log" "$repo/campaign-failure-$w.log"
        echo "campaign: full log in campaign-failure-$w.log" >&2
        echo "fail $runs $generated" >"$out/w$w.result"
        return 1
      fi
      # One seed line per property test that ran (testkit::config prints it).
      n=$(grep -c 'VHUB_PROPTEST_SEED=' "$log" || true)
      generated=$(( generated + n * cases ))
      runs=$(( runs + 1 ))
      (( $(date +%s) < deadline )) || break
    done
  done
  echo "ok $runs $generated" >"$out/w$w.result"
}

echo "campaign: $jobs worker(s) for $minutes min, PROPTEST_CASES=$cases, fresh seed per run"
pids=()
for ((w = 0; w < jobs; w++)); do worker "$w" & pids+=($!); done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done

runs=0 generated=0
for f in "$out"/w*.result; do
  read -r _ r g <"$f"; runs=$((runs + r)); generated=$((generated + g))
done
wall=$(( $(date +%s) - start ))
# `times` must run in this shell (a pipeline or $(...) would run it in a subshell without
# children): its second line is the CPU time of every process this script waited for.
times >"$out/times"
cpu=$(tail -1 "$out/times" | awk '{
  split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%d", u[1]*60 + u[2] + s[1]*60 + s[2] }')
verdict=$([ $status -eq 0 ] && echo clean || echo FAILED)
echo "campaign: $verdict: $runs test-binary runs, $generated generated cases, wall ${wall}s, CPU ${cpu}s ($(date -u +%Y-%m-%d))"
exit $status
