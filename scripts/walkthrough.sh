#!/usr/bin/env bash
# The README's operator walk-through ("Running a hub"), run start to finish as an operator
# would, each node a real `hub serve` process: a local chain (anvil), `hub deploy`, a hub and
# two peers from their configuration files, `hub open` for each peer, `hub invoice` and
# `hub pay`, a virtual channel between the peers over the hub (`hub virtual open`, `pay` both
# ways, `list`, `close`), then `hub close` for each channel; it checks the payouts on chain and exits 0 only
# if every step answered as documented. Everything runs on loopback and stops on exit.
#   scripts/walkthrough.sh            (release build)
#   HUB_BIN=path/to/hub scripts/walkthrough.sh   (use a given binary)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$repo"

if [ -z "${HUB_BIN:-}" ]; then
  scripts/setup.sh >/dev/null
  cargo build --release --locked -q -p hub --bin hub
  HUB_BIN="$CARGO_TARGET_DIR/release/hub"
fi
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
step() { echo "== $*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_line() { # file pattern: wait (30 s at most) until the file has a line matching the pattern
  for _ in $(seq 300); do grep -qE "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "walkthrough: timed out waiting for /$2/ in $1" >&2; cat "$1" >&2; exit 1
}

step "a local chain"
rpc_port="$(free_port)"
anvil --port "$rpc_port" > "$work/anvil.log" 2>&1 & pids+=($!)
wait_line "$work/anvil.log" "Listening on"
rpc="http://127.0.0.1:$rpc_port"
# anvil's funded dev accounts: 0 deploys, 1 is the hub, 2 and 3 are the peers.
mapfile -t keys < <(sed -n '/Private Keys/,/Wallet/p' "$work/anvil.log" | grep -oE '0x[0-9a-f]{64}')
for i in 0 1 2 3; do printf '%s\n' "${keys[$i]}" > "$work/key$i"; chmod 600 "$work/key$i"; done

step "hub deploy"
"$HUB_BIN" deploy --rpc "$rpc" --key "$work/key0" > "$work/deploy.txt"
cat "$work/deploy.txt"
snippet="$(sed -n '/^#/,$p' "$work/deploy.txt" | tail -n +2)"

step "hub serve (the hub)"
hub_api="127.0.0.1:$(free_port)"
cat > "$work/hub.toml" <<TOML
listen = "127.0.0.1:0"
key_file = "key1"
data_dir = "hub-data"
api = "$hub_api"
$snippet

[funding]
collateral = "1000000000000000000"
min_peer_deposit = "10000000000000000"
chain_poll_ms = 100
chain_retry_secs = 1
close_grace_secs = 5

[virtual]
open_fee_base = "1000000000000"
open_fee_ppm = 100
TOML
"$HUB_BIN" serve --config "$work/hub.toml" > "$work/hub.out" 2> "$work/hub.err" & pids+=($!)
wait_line "$work/hub.out" "listening on"
read -r _ hub_addr _ _ hub_listen < "$work/hub.out"

peer_api=()
for p in 2 3; do
  step "hub serve (peer $p)"
  api="127.0.0.1:$(free_port)"
  peer_api[$p]="$api"
  cat > "$work/peer$p.toml" <<TOML
listen = "127.0.0.1:0"
key_file = "key$p"
data_dir = "peer$p-data"
api = "$api"
$snippet

[funding]
chain_poll_ms = 100
chain_retry_secs = 1

[[connect]]
addr = "$hub_listen"
address = "$hub_addr"
TOML
  "$HUB_BIN" serve --config "$work/peer$p.toml" > "$work/peer$p.out" 2> "$work/peer$p.err" & pids+=($!)
  wait_line "$work/peer$p.out" "listening on"
done
client() { # peer, command...
  local p="$1"; shift
  "$HUB_BIN" "$@" --api "http://${peer_api[$p]}" --api-token-file "$work/peer$p-data/api.token"
}

for p in 2 3; do
  step "hub open (peer $p, 2 ETH)"
  for _ in $(seq 50); do # the session to the hub comes up within a moment of the start
    out="$(client "$p" open --hub "$hub_addr" --deposit 2000000000000000000 2>&1)" && break
    case "$out" in *"not connected"*) sleep 0.2 ;; *) echo "$out" >&2; exit 1 ;; esac
  done
  echo "$out"
done
for p in 2 3; do
  for _ in $(seq 150); do # funded, and the hub's collateral (1 ETH) landed and is credited
    client "$p" channels | grep -q " open .*theirs 1.000000 ETH" && break; sleep 0.2
  done
  client "$p" channels
  client "$p" channels | grep -q " open .*theirs 1.000000 ETH" \
    || { echo "the hub's collateral never arrived in peer $p's channel" >&2; exit 1; }
done

step "hub invoice (peer 3) and hub pay (peer 2)"
invoice="$(client 3 invoice --hub "$hub_addr" --amount 100000000000000000)"
client 2 pay "$invoice"
again="$(client 2 pay "$invoice")"
case "$again" in *"already paid"*) ;; *) echo "paying twice did not say 'already paid': $again" >&2; exit 1 ;; esac
client 3 history | grep -q "^received" || { echo "the payee does not list what it received" >&2; exit 1; }

step "hub virtual open (peer 2 with peer 3 over the hub, 0.5 ETH), pay both ways, close"
read -r _ peer3_addr _ _ _ < "$work/peer3.out"
v="$(client 2 virtual open --hub "$hub_addr" --peer "$peer3_addr" --deposit 500000000000000000)"
echo "$v"
v="${v##* }"
client 2 virtual pay "$v" --amount 100000000000000000
client 3 virtual pay "$v" --amount 20000000000000000
client 3 virtual list
client 3 virtual list | grep -q "open .*0.420000 ETH / 0.080000 ETH" \
  || { echo "the virtual channel's balances are not 0.42 / 0.08 ETH" >&2; exit 1; }
client 3 virtual close "$v"
for _ in $(seq 150); do
  client 2 virtual list | grep -q " settled " && client 3 virtual list | grep -q " settled " && break; sleep 0.2
done
client 2 virtual list
client 2 virtual list | grep -q " settled " || { echo "the virtual channel's guarantees were not released" >&2; exit 1; }

for p in 2 3; do
  step "hub close (peer $p)"
  ch="$(client "$p" channels | grep -v "$v" | awk '{print $1}' | head -1)"
  client "$p" close "$ch"
  for _ in $(seq 150); do
    client "$p" channels | grep "$ch" | grep -q " closed " && break; sleep 0.2
  done
  client "$p" channels | grep "$ch" | grep -q " closed " || { echo "channel $ch not paid out" >&2; client "$p" channels >&2; exit 1; }
done
step "every channel paid out on chain; the walk-through ran as written"
