//! The EIP-712 digest of a fixed state, pinned, and cross-checked against foundry's `cast` (an
//! independent implementation: channel id and lock leaves with `cast abi-encode` + `cast keccak`,
//! the typed-data digest with `cast wallet sign --data`, whose RFC 6979 signature equals ours
//! only if it hashed the same digest).
//!
//! `cast` is installed by `scripts/setup.sh` (npm package `@foundry-rs/cast-linux-amd64`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use alloy::primitives::{Address, B256, U256};
use htlc::eip712::DomainSeparator;
use htlc::ids::{ChannelId, Expiry, Hashlock, HtlcId, Side};
use htlc::sig::Keys;
use htlc::{Amount, ChannelParams, ChannelState, Guarantee, Lock};
use std::path::PathBuf;
use std::process::Command;

const KEY: [u8; 32] = [0x11; 32];

fn fixture() -> (ChannelParams, ChannelState) {
    let params = ChannelParams {
        chain_id: 31337,
        adjudicator: "0x5FbDB2315678afecb367f032d93F642f64180aa3"
            .parse()
            .unwrap(),
        participants: [
            "0x1111111111111111111111111111111111111111"
                .parse()
                .unwrap(),
            "0x2222222222222222222222222222222222222222"
                .parse()
                .unwrap(),
        ],
        asset: Address::ZERO,
        challenge_duration: 86_400,
        nonce: U256::from(42),
    };
    let lock = |id: u64, amount: u128, byte: u8, expiry: u64, sender| Lock {
        id: HtlcId(id),
        amount: Amount(amount),
        hashlock: Hashlock(B256::repeat_byte(byte)),
        expiry: Expiry(expiry),
        sender,
    };
    let state = ChannelState {
        channel_id: params.id(),
        version: 7,
        balances: [Amount(1_000_000_000_000_000_000), Amount(250_000)],
        locks: vec![
            lock(0, 5_000, 0xaa, 1_700_000_000, Side::A),
            lock(1, 7_000, 0xbb, 1_700_003_600, Side::B),
            lock(4, 9_000, 0xcc, 1_700_007_200, Side::A),
        ],
        guarantees: vec![
            Guarantee {
                virtual_channel: ChannelId(B256::repeat_byte(0x01)),
                from_a: Amount(100),
                from_b: Amount(200),
                crossed: true,
                locks_until: Expiry(1_700_086_400),
            },
            Guarantee {
                virtual_channel: ChannelId(B256::repeat_byte(0x02)),
                from_a: Amount(0),
                from_b: Amount(300),
                crossed: false,
                locks_until: Expiry(u64::MAX),
            },
        ],
        is_final: false,
    };
    (params, state)
}

// Pinned values: a change to the format or the hashing breaks these first.
const CHANNEL_ID: &str = "0x6e786ce6dd045495c7f16172faa80b18e764a36de337a6d19c34db67a8f2986b";
const LOCKS_ROOT: &str = "0x379ae9d5407e93d44cfecd341aa1eea63923e567798b6f587ed10459dd8bd632";
const DIGEST: &str = "0xbcb3180103f3ec0ee61725422d9ef0547a12612ddf11c1e6ad6d05dcd9906577";

#[test]
fn pinned_vector() {
    let (params, state) = fixture();
    assert_eq!(format!("{}", params.id().0), CHANNEL_ID);
    assert_eq!(format!("{}", state.locks_root()), LOCKS_ROOT);
    let digest = DomainSeparator::new(&params).digest(&state).unwrap();
    assert_eq!(format!("{digest}"), DIGEST);
    // And the alloy typed-data path agrees with the precomputed-separator fast path.
    use alloy::sol_types::SolStruct;
    let typed = htlc::eip712::typed_state(&state).unwrap();
    assert_eq!(
        typed.eip712_signing_hash(&htlc::eip712::domain(&params)),
        digest
    );
}

fn cast() -> PathBuf {
    let path = std::env::var_os("VHUB_CAST")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../node_modules/.bin/cast")
        });
    assert!(
        path.exists(),
        "cast not found at {path:?}: run scripts/setup.sh first"
    );
    path
}

fn run_cast(args: &[&str]) -> String {
    let out = Command::new(cast()).args(args).output().expect("cast runs");
    assert!(
        out.status.success(),
        "cast {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn cast_keccak_abi(sig: &str, args: &[String]) -> String {
    let mut a = vec!["abi-encode", sig];
    a.extend(args.iter().map(String::as_str));
    let encoded = run_cast(&a);
    run_cast(&["keccak", &encoded])
}

#[test]
fn cast_agrees_with_channel_id_locks_root_and_digest() {
    let (params, state) = fixture();
    // Channel id.
    let id = cast_keccak_abi(
        "f(uint256,address,address,address,address,uint64,uint256)",
        &[
            params.chain_id.to_string(),
            params.adjudicator.to_string(),
            params.participants[0].to_string(),
            params.participants[1].to_string(),
            params.asset.to_string(),
            params.challenge_duration.to_string(),
            params.nonce.to_string(),
        ],
    );
    assert_eq!(id, format!("{}", params.id().0));

    // Lock leaves, then the sorted-pair tree, hashed by cast.
    let mut level: Vec<String> = state
        .locks
        .iter()
        .map(|l| {
            cast_keccak_abi(
                "f(uint64,uint256,bytes32,uint64,uint8)",
                &[
                    l.id.0.to_string(),
                    l.amount.0.to_string(),
                    l.hashlock.0.to_string(),
                    l.expiry.0.to_string(),
                    l.sender.index().to_string(),
                ],
            )
        })
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| match p {
                [a, b] => {
                    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                    run_cast(&["keccak", &format!("{lo}{}", &hi[2..])])
                }
                [a] => a.clone(),
                _ => unreachable!(),
            })
            .collect();
    }
    assert_eq!(level[0], format!("{}", state.locks_root()));

    // The typed data, written out by hand from the ADR (not from our sol! definitions).
    let g = &state.guarantees;
    let typed = format!(
        r#"{{
  "types": {{
    "EIP712Domain": [
      {{"name": "name", "type": "string"}},
      {{"name": "version", "type": "string"}},
      {{"name": "chainId", "type": "uint256"}},
      {{"name": "verifyingContract", "type": "address"}}
    ],
    "State": [
      {{"name": "channelId", "type": "bytes32"}},
      {{"name": "version", "type": "uint64"}},
      {{"name": "balanceA", "type": "uint256"}},
      {{"name": "balanceB", "type": "uint256"}},
      {{"name": "locksRoot", "type": "bytes32"}},
      {{"name": "locksTotal", "type": "uint256"}},
      {{"name": "guarantees", "type": "Guarantee[]"}},
      {{"name": "isFinal", "type": "bool"}}
    ],
    "Guarantee": [
      {{"name": "virtualChannelId", "type": "bytes32"}},
      {{"name": "fromA", "type": "uint256"}},
      {{"name": "fromB", "type": "uint256"}},
      {{"name": "crossed", "type": "bool"}},
      {{"name": "locksUntil", "type": "uint64"}}
    ]
  }},
  "primaryType": "State",
  "domain": {{"name": "vhub", "version": "1", "chainId": {chain}, "verifyingContract": "{adj}"}},
  "message": {{
    "channelId": "{id}", "version": {version}, "balanceA": "{ba}", "balanceB": "{bb}",
    "locksRoot": "{root}", "locksTotal": "{total}",
    "guarantees": [
      {{"virtualChannelId": "{g0}", "fromA": "{g0a}", "fromB": "{g0b}", "crossed": {g0c}, "locksUntil": {g0u}}},
      {{"virtualChannelId": "{g1}", "fromA": "{g1a}", "fromB": "{g1b}", "crossed": {g1c}, "locksUntil": "{g1u}"}}
    ],
    "isFinal": false
  }}
}}"#,
        chain = params.chain_id,
        adj = params.adjudicator,
        id = id,
        version = state.version,
        ba = state.balances[0],
        bb = state.balances[1],
        root = level[0],
        total = 5_000 + 7_000 + 9_000,
        g0 = g[0].virtual_channel,
        g0a = g[0].from_a,
        g0b = g[0].from_b,
        g0c = g[0].crossed,
        g0u = g[0].locks_until.0,
        g1 = g[1].virtual_channel,
        g1a = g[1].from_a,
        g1b = g[1].from_b,
        g1c = g[1].crossed,
        g1u = g[1].locks_until.0,
    );
    let dir = std::env::temp_dir().join(format!("vhub-eip712-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("typed.json");
    std::fs::write(&file, typed).unwrap();
    let key = format!("0x{}", "11".repeat(32));
    let cast_sig = run_cast(&[
        "wallet",
        "sign",
        "--data",
        "--from-file",
        file.to_str().unwrap(),
        "--private-key",
        &key,
    ]);
    std::fs::remove_dir_all(&dir).ok();
    let digest = DomainSeparator::new(&params).digest(&state).unwrap();
    let ours = Keys::from_bytes(KEY).unwrap().sign_digest(digest);
    assert_eq!(
        cast_sig,
        format!("0x{}", alloy::primitives::hex::encode(ours.as_bytes()))
    );
}
