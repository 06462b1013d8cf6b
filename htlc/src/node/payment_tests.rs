// The node's payment steps as a table of scenarios: an HTLC in, a step out; an outcome in, the
// upstream step out. No I/O, no machine: thousands of cases per second.

use super::{
    ForwardRecord, InvoiceTerms, Known, Outcome, PaymentStatus, PlanError, Step, Upstream,
    concerns_payments, on_committed, outcomes, payee_accepts, plan,
};
use crate::forward::{
    DEFAULT_MAX_EXPIRY_HORIZON_SECS, ForwardPolicy, MIN_EXPIRY_DELTA_SECS,
    MIN_OUTGOING_EXPIRY_SECS, NextHop, OutgoingChannel, decide,
};
use crate::{
    Amount, ChannelId, CommittedHtlc, Event, Expiry, FailureReason, HtlcId, Lock, Op, OpError,
    Preimage, Side,
};
use alloy::primitives::B256;
use proptest::prelude::*;

const NOW: Expiry = Expiry(1_000_000);
const P: Preimage = Preimage([5; 32]);

fn htlc(amount: u128, expiry: u64) -> CommittedHtlc {
    CommittedHtlc::new(
        ChannelId(B256::repeat_byte(1)),
        3,
        Lock {
            id: HtlcId(7),
            amount: Amount(amount),
            hashlock: P.hashlock(),
            expiry: Expiry(expiry),
            sender: Side::A,
        },
    )
}

fn terms() -> InvoiceTerms {
    InvoiceTerms {
        amount: Amount(1_000),
        expires_at: Expiry(NOW.0 + 3_600),
        preimage: P,
        paid: false,
        sent: Some((Amount(1_000), Expiry(NOW.0 + MIN_OUTGOING_EXPIRY_SECS))),
    }
}

fn room(policy: ForwardPolicy) -> OutgoingChannel {
    OutgoingChannel {
        policy,
        available: Amount(1_000_000),
        pending_locks: 0,
        max_pending_locks: 10,
        in_flight: Amount::ZERO,
        max_in_flight: Amount(10_000_000),
        latest_expiry: Expiry(u64::MAX),
    }
}

fn policy() -> ForwardPolicy {
    ForwardPolicy {
        base_fee: Amount(10),
        fee_ppm: 1_000,
        expiry_delta: 3_600,
        ..ForwardPolicy::default()
    }
}

#[test]
fn every_step_and_failure_reason_of_a_committed_htlc() {
    let safe = NOW.0 + MIN_OUTGOING_EXPIRY_SECS;
    let next = NextHop {
        amount: Amount(1_000),
        expiry: Expiry(NOW.0 + 7_200),
    };
    let in_expiry = next.expiry.0 + 3_600;
    let fwd_ok = htlc(1_011, in_expiry);
    let out = room(policy());
    let paid = InvoiceTerms {
        paid: true,
        ..terms()
    };
    let stale = InvoiceTerms {
        expires_at: NOW,
        ..terms()
    };
    let other = InvoiceTerms {
        preimage: Preimage([6; 32]),
        ..terms()
    };
    let t = terms();
    let route = |outgoing, frozen| Known::Route {
        next: &next,
        outgoing,
        incoming_frozen: frozen,
    };
    use FailureReason as F;
    let table: Vec<(&str, CommittedHtlc, Known<'_>, Step)> = vec![
        (
            "payee: exact amount",
            htlc(1_000, safe),
            Known::Invoice(&t),
            Step::Claim(P),
        ),
        (
            "payee: overpaid is fine",
            htlc(1_500, safe),
            Known::Invoice(&t),
            Step::Claim(P),
        ),
        (
            "payee: one short",
            htlc(999, safe),
            Known::Invoice(&t),
            Step::Fail(F::IncorrectPaymentDetails),
        ),
        (
            "payee: paid twice",
            htlc(1_000, safe),
            Known::Invoice(&paid),
            Step::Fail(F::IncorrectPaymentDetails),
        ),
        (
            "payee: invoice expired",
            htlc(1_000, safe),
            Known::Invoice(&stale),
            Step::Fail(F::FinalExpiryTooSoon),
        ),
        (
            "payee: lock too short to claim on chain",
            htlc(1_000, safe - 1),
            Known::Invoice(&t),
            Step::Fail(F::FinalExpiryTooSoon),
        ),
        (
            "payee: terms of another hashlock",
            htlc(1_000, safe),
            Known::Invoice(&other),
            Step::Fail(F::IncorrectPaymentDetails),
        ),
        (
            "payee: unknown payment",
            htlc(1_000, safe),
            Known::Nothing { we_opened: true },
            Step::Fail(F::IncorrectPaymentDetails),
        ),
        (
            "hub: no instruction",
            htlc(1_000, safe),
            Known::Nothing { we_opened: false },
            Step::Fail(F::UnknownNextPeer),
        ),
        (
            "hub: no channel to the next peer",
            fwd_ok,
            route(None, false),
            Step::Fail(F::UnknownNextPeer),
        ),
        (
            "hub: incoming channel on chain",
            fwd_ok,
            route(Some(&out), true),
            Step::Fail(F::TemporaryChannelFailure),
        ),
        (
            "hub: fee one short",
            htlc(1_010, in_expiry),
            route(Some(&out), false),
            Step::Fail(F::FeeInsufficient),
        ),
        (
            "hub: delta one short",
            htlc(1_011, in_expiry - 1),
            route(Some(&out), false),
            Step::Fail(F::IncorrectExpiryDelta),
        ),
    ];
    for (name, h, known, want) in table {
        assert_eq!(on_committed(&h, known, NOW), want, "{name}");
    }
    // The forward carries the hashlock, the asked amount and expiry, and earns the fee.
    match on_committed(&fwd_ok, route(Some(&out), false), NOW) {
        Step::Forward(f) => {
            assert_eq!(f.amount, next.amount);
            assert_eq!(f.expiry, next.expiry);
            assert_eq!(f.hashlock, P.hashlock());
            assert_eq!(f.fee, Amount(11));
        }
        s => panic!("expected a forward, got {s:?}"),
    }
}

#[test]
fn outcomes_of_machine_events() {
    let add = Op::AddHtlc {
        id: HtlcId(4),
        amount: Amount(1),
        hashlock: P.hashlock(),
        expiry: NOW,
    };
    let cases = vec![
        (
            Event::PreimageLearned {
                id: HtlcId(1),
                preimage: P,
            },
            vec![(HtlcId(1), Outcome::Fulfilled(P))],
        ),
        (
            Event::OpDropped {
                op: add,
                error: OpError::InsufficientBalance,
            },
            vec![(
                HtlcId(4),
                Outcome::Failed(FailureReason::TemporaryChannelFailure),
            )],
        ),
        (
            Event::Committed {
                version: 2,
                proposer: Side::B,
                ops: vec![
                    Op::FailHtlc {
                        id: HtlcId(2),
                        reason: FailureReason::FeeInsufficient,
                    },
                    Op::ExpireHtlc { id: HtlcId(3) },
                    Op::Transfer { amount: Amount(1) },
                ],
            },
            vec![
                (HtlcId(2), Outcome::Failed(FailureReason::FeeInsufficient)),
                (HtlcId(3), Outcome::Expired),
            ],
        ),
        (
            Event::Committed {
                version: 2,
                proposer: Side::B,
                ops: vec![Op::Transfer { amount: Amount(1) }],
            },
            vec![],
        ),
        (Event::PeerStuck, vec![]),
    ];
    for (ev, want) in cases {
        assert_eq!(outcomes(&ev), want, "{ev:?}");
        assert_eq!(concerns_payments(&ev), !want.is_empty(), "{ev:?}");
    }
    assert!(concerns_payments(&Event::HtlcReceived(htlc(1, 1))));
}

#[test]
fn a_forward_learns_one_outcome_and_settles_upstream_once() {
    let fwd = decide(
        &htlc(1_011, NOW.0 + 7_200 + 3_600),
        &NextHop {
            amount: Amount(1_000),
            expiry: Expiry(NOW.0 + 7_200),
        },
        Some(&room(policy())),
        NOW,
    )
    .unwrap();
    let c = |b| ChannelId(B256::repeat_byte(b));
    let mut r = ForwardRecord::new((c(1), HtlcId(7)), (c(2), HtlcId(0)), &fwd, B256::ZERO);
    assert_eq!(r.fee, Amount(11));
    assert_eq!(
        r.upstream(),
        None,
        "nothing to do while the outgoing lock is open"
    );
    assert!(r.learn(Outcome::Fulfilled(P)));
    // A later failure report cannot undo a preimage (a lock ends once).
    assert!(!r.learn(Outcome::Failed(FailureReason::FeeInsufficient)));
    assert_eq!(r.upstream(), Some(Upstream::Fulfill(P)));
    r.done = true;
    assert_eq!(r.upstream(), None);

    let mut r = ForwardRecord::new((c(1), HtlcId(7)), (c(2), HtlcId(0)), &fwd, B256::ZERO);
    assert!(r.learn(Outcome::Expired));
    assert!(!r.learn(Outcome::Fulfilled(P)));
    assert_eq!(
        r.upstream(),
        Some(Upstream::Fail(FailureReason::TemporaryChannelFailure))
    );
}

#[test]
fn a_payment_ends_once() {
    let p = PaymentStatus::Pending;
    assert_eq!(
        p.after(Outcome::Fulfilled(P)),
        Some(PaymentStatus::Succeeded { preimage: P })
    );
    assert_eq!(p.after(Outcome::Expired), Some(PaymentStatus::Expired));
    let failed = p
        .after(Outcome::Failed(FailureReason::UnknownNextPeer))
        .unwrap();
    assert_eq!(failed.after(Outcome::Fulfilled(P)), None);
}

#[test]
fn plan_refuses_what_the_hub_would_refuse() {
    let pol = policy();
    let plan_of =
        |amount: u128, available: u128| plan(Amount(amount), 7_200, &pol, Amount(available), NOW);
    let ok = plan_of(1_000, 10_000).unwrap();
    assert_eq!(ok.sent, Amount(1_011));
    assert_eq!(ok.next.expiry, Expiry(NOW.0 + 7_200));
    assert_eq!(ok.expiry, Expiry(NOW.0 + 7_200 + 3_600));
    assert!(matches!(
        plan_of(1_000, 1_010),
        Err(PlanError::Insufficient { .. })
    ));
    assert!(matches!(
        plan_of(0, 10_000),
        Err(PlanError::OutOfBounds { .. })
    ));
    assert!(matches!(
        plan(
            Amount(1_000),
            MIN_OUTGOING_EXPIRY_SECS - 1,
            &pol,
            Amount(10_000),
            NOW
        ),
        Err(PlanError::ExpiryTooSoon { .. })
    ));
    assert!(matches!(
        plan(
            Amount(1_000),
            DEFAULT_MAX_EXPIRY_HORIZON_SECS + 1,
            &pol,
            Amount(10_000),
            NOW
        ),
        Err(PlanError::ExpiryTooFar { .. })
    ));
    let off = ForwardPolicy {
        enabled: false,
        ..pol
    };
    assert_eq!(
        plan(Amount(1), 7_200, &off, Amount(10), NOW),
        Err(PlanError::Disabled)
    );
    assert!(matches!(
        plan(
            Amount::MAX,
            7_200,
            &ForwardPolicy::default(),
            Amount::MAX,
            NOW
        ),
        Err(PlanError::Overflow { .. })
    ));
    // A delta configured below the protocol minimum is raised, as the hub raises it.
    let tight = ForwardPolicy {
        expiry_delta: 1,
        ..pol
    };
    let p = plan(Amount(1_000), 7_200, &tight, Amount(10_000), NOW).unwrap();
    assert_eq!(p.expiry.0 - p.next.expiry.0, MIN_EXPIRY_DELTA_SECS);
}

proptest! {
    #![proptest_config(testkit::config(512))]

    /// The payer's plan and the hub's decision are one rule seen from two sides: whatever the
    /// policy and amount, a plan is made exactly when the hub (with room) forwards it, with the
    /// planned fee.
    #[test]
    fn the_hub_forwards_exactly_what_the_payer_plans(
        amount in 0u128..10_000_000_000, base in 0u128..100_000, ppm in 0u32..100_000,
        delta in 0u64..100_000, min in 0u128..1_000, final_delta in 0u64..3_000_000,
        enabled in proptest::bool::weighted(0.9),
    ) {
        let pol = ForwardPolicy { base_fee: Amount(base), fee_ppm: ppm, expiry_delta: delta,
            min_htlc: Amount(min), enabled, ..ForwardPolicy::default() };
        let planned = plan(Amount(amount), final_delta, &pol, Amount::MAX, NOW);
        let window_ok = (MIN_OUTGOING_EXPIRY_SECS..=DEFAULT_MAX_EXPIRY_HORIZON_SECS).contains(&final_delta);
        match planned {
            Ok(p) => {
                prop_assert!(window_ok);
                let inc = htlc(p.sent.0, p.expiry.0);
                let out = OutgoingChannel { available: Amount::MAX, max_in_flight: Amount::MAX, ..room(pol) };
                let d = decide(&inc, &p.next, Some(&out), NOW);
                prop_assert!(d.is_ok(), "planned but refused: {:?}", d);
                if let Ok(f) = d {
                    prop_assert_eq!(f.fee, pol.fee(Amount(amount)).unwrap());
                    prop_assert_eq!(f.amount, Amount(amount));
                }
            }
            Err(_) => prop_assert!(!enabled || amount == 0 || amount < min || !window_ok),
        }
    }

    /// The payee claims exactly when the lock pays the invoice, the invoice is open, the
    /// lock leaves the on-chain claim window, and the lock carries at least what the payer's
    /// onion says it sent (amount and expiry: the last hub keeps no more than its fee).
    #[test]
    fn payee_claims_iff_terms_hold(
        amount in 0u128..3_000, inv in 1u128..3_000, ttl in 0u64..10_000,
        valid in 0u64..10, paid in any::<bool>(),
        sent in proptest::option::of((0u128..3_000, 0u64..10_000)),
    ) {
        let t = InvoiceTerms {
            amount: Amount(inv), expires_at: Expiry(NOW.0 + valid), preimage: P, paid,
            sent: sent.map(|(a, e)| (Amount(a), Expiry(NOW.0 + e))),
        };
        let h = htlc(amount, NOW.0 + ttl);
        let ok = payee_accepts(h.lock(), &t, NOW).is_ok();
        let onion_ok = sent.is_some_and(|(a, e)| amount >= a && ttl >= e);
        prop_assert_eq!(ok, !paid && amount >= inv && valid > 0 && ttl >= MIN_OUTGOING_EXPIRY_SECS && onion_ok);
    }
}
