//! Rule 1 over a whole run: the sum of every channel's balances, pending locks and guarantees
//! (`htlc::ChannelState::total`, the protocol's own accounting) never changes — checked after
//! every single event, over random small networks and activities.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use htlc::Amount;
use proptest::prelude::*;
use serde_json::{Value, json};
use simulations::sim::{Collect, Engine, FastLedger, Ledger, RunOptions, Scenario};

/// A random network of `n` nodes and a few flows between them.
fn arb_case() -> impl Strategy<Value = Value> {
    (3usize..7).prop_flat_map(|n| {
        let chans = prop::collection::vec(
            (0..n, 1..n, 1_000u64..100_000, 0u64..50, 0u32..20_000, 0u64..50, 0u32..20_000),
            n - 1..2 * n,
        );
        let flows = prop::collection::vec(
            (0..n, 1..n, 1u64..50_000, 1u64..20, 0u64..30, 1u64..12),
            1..5,
        );
        (
            Just(n),
            chans,
            flows,
            0.0f64..=1.0,
            prop_oneof![Just(0u64), Just(30)],
            prop_oneof![Just(50u64), Just(100), Just(2000)],
            1u32..5,
            prop::option::of(0.25f64..4.0),
        )
    })
    .prop_map(|(n, chans, flows, split, epoch, latency, attempts, hub_mult)| {
        let node = |i: usize| common::addr(i as u8 + 1);
        let mut channels = Vec::new();
        for (k, (a, off, cap, b1, p1, b2, p2)) in chans.into_iter().enumerate() {
            // A line through every node first, so the network is connected; then random chords.
            let (x, y) = if k + 1 < n { (k, k + 1) } else { (a, (a + off) % n) };
            channels.push(common::channel(
                k as u8 + 1,
                x as u8 + 1,
                y as u8 + 1,
                cap,
                common::policy(b1, p1, cap),
                common::policy(b2, p2, cap),
            ));
        }
        let activity: Vec<Value> = flows
            .into_iter()
            .map(|(s, off, amount, interval, start, count)| {
                json!({"source": node(s), "destination": node((s + off) % n),
                       "interval_secs": interval, "amount": amount,
                       "start_secs": start, "count": count})
            })
            .collect();
        let mut hubs = Vec::new();
        if let Some(m) = hub_mult {
            hubs.push(json!({"node": node(0), "collateral_multiplier": m, "fee_ppm": 3000}));
        }
        json!({
            "seed": 1,
            "network": {"inline": {"version": 1, "nodes": (0..n).map(node).collect::<Vec<_>>(),
                                   "channels": channels}},
            "activity": activity,
            "hubs": hubs,
            "simulation": {"initial_balance_a": split, "knowledge_epoch_secs": epoch,
                           "hop_latency_ms": latency, "max_attempts": attempts,
                           "max_fee_ppm": 1000000}
        })
    })
}

/// Every channel's rule-1 total.
fn totals(l: &FastLedger) -> Vec<Amount> {
    (0..l.len() as u32)
        .map(|c| l.state(c).unwrap().total().unwrap())
        .collect()
}

/// Steps a scenario to its end, checking conservation after every event; returns the records.
fn check(s: &Scenario) -> Collect {
    let mut e = Engine::<FastLedger>::new(s, RunOptions::default()).unwrap();
    let total = e.total_value().unwrap();
    let per_channel = totals(e.ledger());
    let mut obs = Collect::default();
    let mut events = 0u64;
    while e.step(&mut obs).unwrap() {
        events += 1;
        assert_eq!(e.total_value().unwrap(), total, "after event {events}");
        assert_eq!(totals(e.ledger()), per_channel, "after event {events}");
    }
    // Every HTLC is resolved at the end: only balances (and guarantees) remain.
    for c in 0..e.ledger().len() as u32 {
        assert!(e.ledger().state(c).unwrap().locks.is_empty());
    }
    let out = e.run(&mut obs).unwrap();
    assert_eq!(out.summary.payments, obs.records.len() as u64);
    assert_eq!(
        out.summary.succeeded + out.summary.failed,
        out.summary.payments
    );
    obs
}

proptest! {
    #![proptest_config(testkit::config(48))]

    #[test]
    fn balances_and_locks_sum_to_the_same_total_at_every_event(case in arb_case()) {
        let s = Scenario::from_json_str(&case.to_string(), None).unwrap();
        let records = check(&s);
        // Fees are never negative and never above the amount (no fee limit was set, but
        // every fee is a policy's base + ppm of what is forwarded, bounded here).
        for r in &records.records {
            prop_assert!(r.attempts >= 1);
            prop_assert!(r.htlcs <= r.attempts);
        }
    }
}

#[test]
fn conservation_holds_with_virtual_channels_and_hubs() {
    // The star example with a virtual channel alice ↔ erin funded through both hubs.
    let mut s = common::star(3);
    let alice = s.network.resolve("alice", "test").unwrap();
    let erin = s.network.resolve("erin", "test").unwrap();
    s.virtual_channels
        .push(simulations::sim::scenario::VirtualChannel {
            between: [alice, erin],
            via: None,
            fund: [
                Amount(100_000_000_000_000_000),
                Amount(50_000_000_000_000_000),
            ],
        });
    let records = check(&s);
    assert!(!records.records.is_empty());
}
