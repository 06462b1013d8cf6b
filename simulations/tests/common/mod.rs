//! Test support: small networks and scenarios written out as JSON, and helpers to run them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use simulations::sim::{Collect, Protocol, RunOptions, RunOutput, Scenario, run};

/// The address of test node `i` (`0x…0i`).
pub fn addr(i: u8) -> String {
    format!("0x{:040x}", i)
}

/// The id of test channel `i`.
pub fn chan(i: u8) -> String {
    format!("0x{:064x}", i)
}

/// A policy with the given fees, a one-hour expiry delta and HTLCs up to `max`.
pub fn policy(base: u64, ppm: u32, max: u64) -> Value {
    json!({"base_fee": base, "fee_ppm": ppm, "expiry_delta": 3600, "htlc_min": 1,
           "htlc_max": max, "enabled": true})
}

/// A router-JSON channel.
pub fn channel(id: u8, a: u8, b: u8, cap: u64, pa: Value, pb: Value) -> Value {
    json!({"id": chan(id), "node_a": addr(a), "node_b": addr(b), "capacity": cap,
           "policy_a": pa, "policy_b": pb})
}

/// The hand-worked network: A (1) — H (2) — B (3). A–H holds 1000 (A is side A), H–B holds
/// 600 (H is side A); with `initial_balance_a = 1` every side A holds everything. H charges
/// 10 + 1 % on both its directions; A and B charge nothing (they never forward).
pub fn three_nodes() -> Value {
    json!({
        "version": 1,
        "nodes": [addr(1), addr(2), addr(3)],
        "channels": [
            channel(1, 1, 2, 1000, policy(0, 0, 1000), policy(10, 10_000, 1000)),
            channel(2, 2, 3, 600, policy(10, 10_000, 600), policy(0, 0, 600)),
        ]
    })
}

/// The hand-worked scenario: four payments (see `tests/hand_worked.rs`), immediate learning,
/// no fee limit, 100 ms per hop.
pub fn three_node_scenario() -> Value {
    json!({
        "seed": 5,
        "network": {"inline": three_nodes()},
        "aliases": {"A": addr(1), "H": addr(2), "B": addr(3)},
        "activity": [
            {"source": "A", "destination": "B", "interval_secs": 10, "amount": 300, "count": 1},
            {"source": "A", "destination": "B", "interval_secs": 10, "amount": 250, "start_secs": 10, "count": 1},
            {"source": "A", "destination": "B", "interval_secs": 10, "amount": 100, "start_secs": 20, "count": 1},
            {"source": "B", "destination": "A", "interval_secs": 10, "amount": 200, "start_secs": 30, "count": 1}
        ],
        "hubs": [{"node": "H"}],
        "simulation": {
            "initial_balance_a": 1.0,
            "knowledge_epoch_secs": 0,
            "max_fee_ppm": 1000000,
            "hop_latency_ms": 100,
            "unit": {"name": "units", "decimals": 0}
        }
    })
}

/// Parses a scenario given as a JSON value (no network file).
pub fn scenario(v: &Value) -> Scenario {
    Scenario::from_json_str(&v.to_string(), None).expect("valid scenario")
}

/// Runs a scenario and keeps every payment record.
pub fn run_collect(s: &Scenario, protocol: Protocol, threads: usize) -> (RunOutput, Collect) {
    let mut c = Collect::default();
    let out = run(s, protocol, RunOptions { threads }, &mut c).expect("run");
    (out, c)
}

/// The star example (two hubs, eight peers) shortened to `hours` of activity.
pub fn star(hours: u64) -> Scenario {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/");
    let text = std::fs::read_to_string(format!("{dir}star.json")).unwrap();
    let net = std::fs::read_to_string(format!("{dir}star_network.json")).unwrap();
    let mut file = simulations::sim::config::ScenarioFile::from_json_str(&text).unwrap();
    file.simulation.duration_secs = Some(hours * 3600);
    Scenario::build(file, Some(&net)).unwrap()
}
