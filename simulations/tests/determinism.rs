//! A run is a pure function of its scenario: the same seed gives the same bytes (summary, CSVs,
//! SVGs) whatever the thread count or the ledger; another seed gives other bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::json;
use simulations::sim::report::{write_balances_csv, write_payments_csv};
use simulations::sim::{Protocol, Scenario, plot};

/// Every output of a run, as bytes.
fn outputs(s: &Scenario, protocol: Protocol, threads: usize) -> Vec<(String, Vec<u8>)> {
    let (out, c) = common::run_collect(s, protocol, threads);
    let label = |i: u32| s.network.label(i);
    let mut payments = Vec::new();
    write_payments_csv(&c.records, &label, &mut payments).unwrap();
    let mut balances = Vec::new();
    write_balances_csv(&out.samples, &mut balances).unwrap();
    let hub = (!s.hubs.is_empty()).then_some(0);
    vec![
        ("summary.txt".into(), out.summary.to_text().into_bytes()),
        (
            "summary.json".into(),
            out.summary.to_json().unwrap().into_bytes(),
        ),
        ("payments.csv".into(), payments),
        ("balances.csv".into(), balances),
        (
            "success_rate.svg".into(),
            plot::success_rate_svg(&out.samples).unwrap().into_bytes(),
        ),
        (
            "balances.svg".into(),
            plot::balances_svg(&out.samples, hub).unwrap().into_bytes(),
        ),
        (
            "fees.svg".into(),
            plot::fees_svg(&out.samples, &s.params.unit)
                .unwrap()
                .into_bytes(),
        ),
    ]
}

fn assert_same(a: &[(String, Vec<u8>)], b: &[(String, Vec<u8>)]) {
    for ((name, x), (_, y)) in a.iter().zip(b) {
        assert!(
            x == y,
            "{name} differs between two runs that should be identical"
        );
    }
}

#[test]
fn same_seed_gives_byte_identical_outputs() {
    let s = common::star(6);
    let a = outputs(&s, Protocol::Fast, 1);
    let b = outputs(&s, Protocol::Fast, 1);
    assert_same(&a, &b);
    // A scenario parsed again from its text is the same scenario.
    let again = common::star(6);
    assert_same(&a, &outputs(&again, Protocol::Fast, 1));
    assert!(a.iter().all(|(_, x)| !x.is_empty()));
}

#[test]
fn a_different_seed_gives_different_outputs() {
    let s = common::star(6);
    let mut t = s.clone();
    t.seed += 1;
    let a = outputs(&s, Protocol::Fast, 1);
    let b = outputs(&t, Protocol::Fast, 1);
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x != y, "{name} did not change with the seed");
    }
}

#[test]
fn thread_count_does_not_change_outputs() {
    // Enough payments per knowledge epoch for the parallel route search to run.
    let s = common::scenario(&json!({
        "seed": 3,
        "network": {"generate": {"nodes": 300, "seed": 9}},
        "random_activity": {"expected_payment": "1000000000000000", "capacity_multiplier": 200.0},
        "hubs": [{"node": "#0"}],
        "simulation": {"max_payments": 3000, "knowledge_epoch_secs": 60}
    }));
    let one = outputs(&s, Protocol::Fast, 1);
    let two = outputs(&s, Protocol::Fast, 2);
    let three = outputs(&s, Protocol::Fast, 3);
    assert_same(&one, &two);
    assert_same(&one, &three);
}

#[test]
fn signed_machines_and_decide_give_the_same_outputs_as_the_fast_ledger() {
    // The SimLN example, shortened: every update signed and verified, every forwarding decision
    // taken by htlc::forward::decide on the machine's CommittedHtlc.
    let text = include_str!("../examples/simln.json");
    let mut file = simulations::sim::config::ScenarioFile::from_json_str(text).unwrap();
    for f in &mut file.activity {
        f.count = f.count.map(|c| c.min(40));
    }
    let s = Scenario::build(file, None).unwrap();
    let fast = outputs(&s, Protocol::Fast, 1);
    let signed = outputs(&s, Protocol::Signed, 1);
    assert_same(&fast, &signed);
    // And on the hand-worked network, where a hop refuses for liquidity.
    let h = common::scenario(&common::three_node_scenario());
    assert_same(
        &outputs(&h, Protocol::Fast, 1),
        &outputs(&h, Protocol::Signed, 1),
    );
}
