//! A network small enough to work out by hand: A — H — B, H charging 10 + 1 %.
//!
//! | t (s) | payment | route | what happens |
//! |---|---|---|---|
//! | 0  | A → B 300 | A→H 313, H→B 300 | fee 10 + 3 = 13; H–B: H 600 → 300 |
//! | 10 | A → B 250 | A→H 262, H→B 250 | fee 10 + 2 (2.5 rounded down); H–B: H 300 → 50 |
//! | 20 | A → B 100 | A→H 111, H refuses | H has 50 < 100: temporary_channel_failure; retry finds no route |
//! | 30 | B → A 200 | B→H 212, H→A 200 | fee 12; H–A: H has 575 |
//!
//! Each hop takes 100 ms: a success holds the first HTLC 400 ms and the second 200 ms; the
//! failure holds A's HTLC 200 ms. Locked × time: 313·400 + 300·200 + 262·400 + 250·200 +
//! 111·200 + 212·400 + 200·200 = 487,000 amount·ms = 487 amount·s; H's own: 300·200 + 250·200 +
//! 200·200 = 150,000 → 150.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use htlc::{Amount, Side};
use simulations::sim::questions::{CollateralSearch, Measure, collateral_for, fee_sweep};
use simulations::sim::report::{PaymentOutcome, write_payments_csv};
use simulations::sim::{Ledger, Protocol, RunOptions};

#[test]
fn summary_matches_the_hand_worked_outcome() {
    let s = common::scenario(&common::three_node_scenario());
    let (out, c) = common::run_collect(&s, Protocol::Fast, 1);
    let sum = &out.summary;
    assert_eq!((sum.nodes, sum.channels, sum.virtual_channels), (3, 2, 0));
    assert_eq!((sum.payments, sum.succeeded, sum.failed), (4, 3, 1));
    assert_eq!(sum.success_rate, 0.75);
    assert_eq!(sum.fees_paid, Amount(37));
    assert_eq!(sum.volume, Amount(750));
    let reasons: BTreeMap<String, u64> = [("temporary_channel_failure".to_owned(), 1)]
        .into_iter()
        .collect();
    assert_eq!(sum.failure_reasons, reasons);
    assert_eq!(sum.htlc_failures, reasons);
    assert_eq!(sum.avg_attempts, 1.25);
    assert_eq!(sum.avg_htlcs, 1.0);
    assert_eq!(sum.avg_hops, 2.0);
    assert_eq!(sum.locked_amount_secs, 487);
    assert_eq!(sum.channel_updates, 14);
    assert_eq!(sum.virtual_secs, 30.4);
    assert_eq!(sum.raised_expiry_deltas, 0);
    let h = &sum.hubs[0];
    assert_eq!(h.node, "H");
    assert_eq!(h.collateral, Amount(600));
    assert_eq!((h.forwarded, h.forwarded_volume), (3, Amount(750)));
    assert_eq!((h.fees_earned, h.fees_paid), (Amount(37), Amount(0)));
    assert_eq!((h.payments_via, h.succeeded_via), (4, 3));
    assert_eq!(h.locked_amount_secs, 150);

    // Per payment, in completion order.
    let rows: Vec<(u64, u128, u128, u32, u32, u32, bool)> = c
        .records
        .iter()
        .map(|r| {
            (
                r.id,
                r.amount.0,
                r.fees.0,
                r.attempts,
                r.htlcs,
                r.hops,
                r.outcome == PaymentOutcome::Succeeded,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (0, 300, 13, 1, 1, 2, true),
            (1, 250, 12, 1, 1, 2, true),
            (2, 100, 0, 2, 1, 0, false),
            (3, 200, 12, 1, 1, 2, true),
        ]
    );
    let mut csv = Vec::new();
    let label = |i: u32| s.network.label(i);
    write_payments_csv(&c.records, &label, &mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "source,destination,amount,hash,dispatch_time,htlc_count,outcome,failure_reason,completion_time,attempts,hops,fees,payment_id"
    );
    assert!(lines[1].starts_with("A,B,300,0x"), "{}", lines[1]);
    assert!(
        lines[1].ends_with(",0.000,1,success,,0.400,1,2,13,0"),
        "{}",
        lines[1]
    );
    assert!(
        lines[3].ends_with(",20.000,1,failure,temporary_channel_failure,20.200,2,0,0,2"),
        "{}",
        lines[3]
    );

    // The depletion table: H → B kept 50, above 5 % of 600 (30), so it did not deplete, but
    // it refused one HTLC; A → H never fell below 314 (threshold 50). Only the refusal is listed.
    assert_eq!(out.depletion.len(), 1);
    let row = out
        .depletion
        .iter()
        .find(|r| r.from == "H" && r.to == "B")
        .expect("H → B refused an HTLC");
    assert_eq!((row.failures, row.depleted_at_secs), (1, None));
}

#[test]
fn final_balances_match_the_hand_worked_outcome() {
    let s = common::scenario(&common::three_node_scenario());
    let mut e =
        simulations::sim::Engine::<simulations::sim::FastLedger>::new(&s, RunOptions::default())
            .unwrap();
    let mut obs = simulations::sim::Discard;
    while e.step(&mut obs).unwrap() {}
    let l = e.ledger();
    let a_h = l.state(0).unwrap();
    let h_b = l.state(1).unwrap();
    // A–H: A 1000 - 313 - 262 + 200 = 625, H 375. H–B: H 600 - 300 - 250 + 212 = 262, B 338.
    assert_eq!(a_h.balances, [Amount(625), Amount(375)]);
    assert_eq!(h_b.balances, [Amount(262), Amount(338)]);
    assert!(a_h.locks.is_empty() && h_b.locks.is_empty());
    // H's wealth grew by exactly its fees: (375 + 262) - (0 + 600) = 37.
    assert_eq!(
        a_h.balances[Side::B.index()].0 + h_b.balances[Side::A.index()].0 - 600,
        37
    );
}

#[test]
fn collateral_search_finds_the_hand_worked_minimum() {
    // H needs 300 + 250 + 100 = 650 toward B: a multiplier of at least 650 / 600 = 1.083.
    // Bisection from [1, 2]: 1.5, 1.25, 1.125 pass, 1.0625 (637) fails, 1.09375 (656) passes.
    let s = common::scenario(&common::three_node_scenario());
    let search = CollateralSearch {
        hub: s.network.resolve("H", "test").unwrap(),
        target: 1.0,
        measure: Measure::Overall,
        max_multiplier: 8.0,
        steps: 5,
    };
    let a = collateral_for(&s, &search, Protocol::Fast, RunOptions::default()).unwrap();
    let tried: Vec<(f64, u128, f64)> = a
        .trials
        .iter()
        .map(|t| (t.multiplier, t.collateral.0, t.success_rate))
        .collect();
    assert_eq!(
        tried,
        vec![
            (1.0, 600, 0.75),
            (1.0625, 637, 0.75),
            (1.09375, 656, 1.0),
            (1.125, 675, 1.0),
            (1.25, 750, 1.0),
            (1.5, 900, 1.0),
            (2.0, 1200, 1.0),
        ]
    );
    let ans = a.answer.expect("reachable");
    assert_eq!((ans.multiplier, ans.collateral), (1.09375, Amount(656)));
    // The fourth payment still earns H its fee: 13 + 12 + 11 + 12.
    assert_eq!(ans.fees_earned, Amount(48));
}

#[test]
fn fee_sweep_reprices_the_hub() {
    let s = common::scenario(&common::three_node_scenario());
    let hub = s.network.resolve("H", "test").unwrap();
    let trials = fee_sweep(
        &s,
        hub,
        &[(Some(Amount(0)), Some(0)), (Some(Amount(1)), None)],
        Protocol::Fast,
        RunOptions::default(),
    )
    .unwrap();
    let earned: Vec<u128> = trials.iter().map(|t| t.fees_earned.0).collect();
    // As given: 37. Free: 0. Base 1 with the network's 1 %: (1 + 3) + (1 + 2) + (1 + 2) = 10.
    assert_eq!(earned, vec![37, 0, 10]);
    assert!(trials.iter().all(|t| t.success_rate == 0.75));
}
