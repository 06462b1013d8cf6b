//! The operator questions on the star example: depletion and virtual channels (collateral and
//! fees are checked against hand-worked numbers in `hand_worked.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use simulations::sim::questions::{busiest_pair, virtual_channel_savings};
use simulations::sim::{Protocol, RunOptions};

#[test]
fn a_virtual_channel_between_the_busiest_peers_saves_their_fees_and_hops() {
    let s = common::star(6);
    let (_, c) = common::run_collect(&s, Protocol::Fast, 1);
    let (a, b) = busiest_pair(&s, &c.records).expect("a busy pair");
    let mut names = [s.network.label(a), s.network.label(b)];
    names.sort();
    // The two explicit flows (alice → erin, frank → dave, about one a minute each) are the
    // busiest pairs; none of them shares a channel.
    let count = |x: &str, y: &str| {
        c.records
            .iter()
            .filter(|r| {
                let (p, q) = (s.network.label(r.source), s.network.label(r.destination));
                (p == x && q == y) || (p == y && q == x)
            })
            .count()
    };
    let expected = if count("alice", "erin") >= count("dave", "frank") {
        ["alice".to_owned(), "erin".to_owned()]
    } else {
        ["dave".to_owned(), "frank".to_owned()]
    };
    assert_eq!(names, expected);
    let policy = htlc::vchan::VirtualPolicy::default();
    let ans = virtual_channel_savings(
        &s,
        None,
        None,
        None,
        &policy,
        Protocol::Fast,
        RunOptions::default(),
    )
    .unwrap();
    assert_eq!(ans.before.payments, ans.after.payments);
    assert!(ans.fund[0].0 > 0);
    // Through the virtual channel a payment is one hop and free.
    assert!(ans.after.succeeded > 0);
    assert!(ans.after.fees_paid < ans.before.fees_paid, "{ans:?}");
    assert!(ans.after.hops < ans.before.hops, "{ans:?}");
    // Its cost by the product's rules: each hub's opening fee on the channel's value, one
    // update per ledger leg plus the channel's own to open and to close, no gas when all
    // cooperate; the saving is the pair's fees saved less the opening fees.
    let c = &ans.cost;
    assert!(c.hubs >= 1, "{c:?}");
    let value = htlc::Amount(ans.fund[0].0 + ans.fund[1].0);
    assert_eq!(c.open_fee.0, c.hubs as u128 * policy.fee(value).unwrap().0);
    assert_eq!(
        (c.open_updates, c.close_updates),
        (c.hubs as u64 + 2, c.hubs as u64 + 2)
    );
    assert_eq!(c.happy_gas, 0);
    assert_eq!(
        c.net_saving,
        ans.before.fees_paid.0 as i128 - ans.after.fees_paid.0 as i128 - c.open_fee.0 as i128
    );
}

/// The sad-exit gas the `virtual` question quotes is the one the contracts' gas report measured.
#[test]
fn the_virtual_sad_exit_gas_is_the_gas_reports() {
    let report =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../contracts/GAS.md"))
            .unwrap();
    let line = report
        .lines()
        .find(|l| l.starts_with("| virtually-funded sad exit"))
        .expect("the gas report has the virtually-funded sad exit");
    let figure: u64 = line
        .split('|')
        .nth(2)
        .unwrap()
        .trim()
        .replace(',', "")
        .parse()
        .unwrap();
    assert_eq!(figure, simulations::sim::questions::VIRTUAL_SAD_EXIT_GAS);
}

#[test]
fn depletion_lists_the_earliest_depleted_directions_first() {
    let s = common::star(24);
    let (out, _) = common::run_collect(&s, Protocol::Fast, 1);
    let times: Vec<f64> = out
        .depletion
        .iter()
        .filter_map(|r| r.depleted_at_secs)
        .collect();
    assert!(
        !times.is_empty(),
        "the star example depletes channels within a day"
    );
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    // Directions that never depleted (only refused HTLCs) come after all that did.
    let first_never = out
        .depletion
        .iter()
        .position(|r| r.depleted_at_secs.is_none());
    if let Some(i) = first_never {
        assert!(
            out.depletion[i..]
                .iter()
                .all(|r| r.depleted_at_secs.is_none())
        );
    }
}
