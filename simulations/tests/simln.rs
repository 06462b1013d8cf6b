//! SimLN's formats: a simulation file (`sim_network` + `activity`) is a scenario as it is, and
//! a bare `sim_network` list works as a network file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use simulations::sim::network::NetworkKind;
use simulations::sim::report::write_payments_csv;
use simulations::sim::{Protocol, Scenario};

const SIMLN: &str = include_str!("../examples/simln.json");

#[test]
fn a_simln_file_is_read_and_simulated() {
    let s = Scenario::from_json_str(SIMLN, None).unwrap();
    assert_eq!(s.network.kind, NetworkKind::SimLn);
    assert_eq!((s.network.nodes.len(), s.network.channels.len()), (5, 6));
    // Aliases and public keys both name nodes; amounts are msat, shown in sat.
    assert_eq!(s.flows.len(), 4);
    assert_eq!(s.network.label(s.flows[0].source), "alice");
    assert_eq!(s.network.label(s.flows[1].source), "bob");
    assert_eq!(s.flows[0].amount[0].0, 2_000_000);
    assert_eq!(s.params.unit.name, "sat");
    // SimLN's max_htlc_count is kept as the channel's lock limit.
    assert!(
        s.network
            .channels
            .iter()
            .all(|c| c.max_pending_locks == Some(483))
    );

    let (out, c) = common::run_collect(&s, Protocol::Fast, 1);
    let sum = &out.summary;
    // Every flow's count: 100 + 120 + 100 + 60.
    assert_eq!(sum.payments, 380);
    assert!(sum.succeeded > 0 && sum.succeeded <= sum.payments);
    let mut csv = Vec::new();
    let label = |i: u32| s.network.label(i);
    write_payments_csv(&c.records, &label, &mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!(csv.lines().count(), 381);
    assert!(csv.lines().skip(1).all(|l| l.starts_with("alice,eve,")
        || l.starts_with("bob,dave,")
        || l.starts_with("eve,alice,")
        || l.starts_with("dave,bob,")));
    // Expiry deltas of 40 blocks × 600 s are above the protocol minimum: nothing raised.
    assert_eq!(sum.raised_expiry_deltas, 0);
}

#[test]
fn a_bare_sim_network_list_is_a_network_file() {
    let v: serde_json::Value = serde_json::from_str(SIMLN).unwrap();
    let network = serde_json::to_string(&v["sim_network"]).unwrap();
    let scenario = serde_json::json!({
        "network": {"file": "net.json"},
        "activity": [{"source": "carol", "destination": "alice", "interval_secs": 2,
                      "amount_msat": 1_000_000, "count": 20}]
    });
    let s = Scenario::from_json_str(&scenario.to_string(), Some(&network)).unwrap();
    assert_eq!(s.network.kind, NetworkKind::SimLn);
    let (out, _) = common::run_collect(&s, Protocol::Fast, 1);
    assert_eq!(out.summary.payments, 20);
    assert_eq!(out.summary.succeeded, 20);
}
