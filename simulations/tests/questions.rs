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
    let ans = virtual_channel_savings(&s, None, None, None, Protocol::Fast, RunOptions::default())
        .unwrap();
    assert_eq!(ans.before.payments, ans.after.payments);
    assert!(ans.fund[0].0 > 0);
    // Through the virtual channel a payment is one hop and free.
    assert!(ans.after.succeeded > 0);
    assert!(ans.after.fees_paid < ans.before.fees_paid, "{ans:?}");
    assert!(ans.after.hops < ans.before.hops, "{ans:?}");
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
