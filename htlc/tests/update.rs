//! Unit tests of the update protocol: the happy path and every rejection path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use alloy::primitives::B256;
use common::*;
use htlc::ids::{Expiry, HtlcId, Preimage};
use htlc::msg::RejectReason;
use htlc::ops::{Limits, OpError};
use htlc::sig::malleate;
use htlc::update::ProtocolError;
use htlc::{Amount, Effect, Event, Message, Op};

const NOW: Expiry = Expiry(1_000_000);

fn deliver(to: &mut htlc::Channel, msgs: Vec<Message>) -> Vec<Effect> {
    let mut out = Vec::new();
    for m in msgs {
        out.extend(to.handle(m, NOW).unwrap());
    }
    out
}

/// Run messages back and forth until both sides are quiet.
fn settle(a: &mut htlc::Channel, b: &mut htlc::Channel, mut to_b: Vec<Message>) -> Vec<Effect> {
    let mut all = Vec::new();
    let mut to_a = Vec::new();
    while !to_b.is_empty() || !to_a.is_empty() {
        let eb = deliver(b, std::mem::take(&mut to_b));
        to_a.extend(sent(&eb));
        all.extend(eb);
        let ea = deliver(a, std::mem::take(&mut to_a));
        to_b.extend(sent(&ea));
        all.extend(ea);
    }
    all
}

fn propose_ops(ops: Vec<Op>, version: u64, from: &htlc::Channel, sign_with: u8) -> Message {
    // Build a proposal by hand (as a malicious or buggy peer would).
    let mut state = from.latest().state.clone();
    let mut ids = from.snapshot().next_ids();
    htlc::ops::apply_batch(
        &mut state,
        &mut ids,
        &ops,
        from.me(),
        NOW,
        &Limits::default(),
        htlc::Deposits {
            holdings: Amount::MAX,
            uncredited: [Amount::MAX; 2],
        },
    )
    .ok();
    state.version = version;
    let sig = keys(sign_with).sign_digest(from.digest(&state).unwrap());
    Message::Propose {
        channel_id: from.id(),
        version,
        ops,
        sig,
    }
}

fn reason_of(effects: &[Effect]) -> RejectReason {
    match sent(effects).as_slice() {
        [Message::Reject { reason, .. }] => *reason,
        other => panic!("expected one reject, got {other:?}"),
    }
}

#[test]
fn htlc_round_trip_moves_exact_amounts() {
    let (mut a, mut b) = pair([1_000, 500], Limits::default());
    let pre = Preimage([7; 32]);
    let id = a.offer_htlc(Amount(300), pre.hashlock(), Expiry(NOW.0 + 100));
    let out = a.propose(NOW).unwrap();
    // Rule 2: persist comes before our signature leaves.
    assert!(matches!(out[0], Effect::Persist));
    assert!(matches!(out[1], Effect::Send(Message::Propose { .. })));
    let ev = settle(&mut a, &mut b, sent(&out));
    assert!(
        events(&ev)
            .iter()
            .any(|e| matches!(e, Event::HtlcReceived(h) if h.lock().id == id))
    );
    assert_eq!(a.latest(), b.latest());
    assert_eq!(a.latest().state.balances, [Amount(700), Amount(500)]);
    assert_eq!(a.latest().state.version, 1);

    b.fulfill_htlc(id, pre);
    let out = b.propose(NOW).unwrap();
    let ev = settle(&mut b, &mut a, sent(&out));
    assert!(events(&ev).contains(&Event::PreimageLearned { id, preimage: pre }));
    assert_eq!(a.latest(), b.latest());
    assert_eq!(b.latest().state.balances, [Amount(700), Amount(800)]);
    assert!(b.latest().state.locks.is_empty());
}

#[test]
fn stale_version_is_rejected() {
    let (mut a, mut b) = pair([1_000, 1_000], Limits::default());
    a.transfer(Amount(1));
    let out = a.propose(NOW).unwrap();
    settle(&mut a, &mut b, sent(&out));
    // A replays a proposal at version 1 (already used): B refuses.
    let stale = propose_ops(vec![Op::Transfer { amount: Amount(5) }], 1, &a, 0xA1);
    let before = b.latest().clone();
    let r = reason_of(&b.handle(stale, NOW).unwrap());
    assert_eq!(r, RejectReason::BadVersion { min: 2 });
    assert_eq!(b.latest(), &before);
    // A jump beyond the allowed gap is refused too.
    let far = propose_ops(vec![], 1 + 1 + htlc::update::MAX_VERSION_GAP, &a, 0xA1);
    assert!(matches!(
        reason_of(&b.handle(far, NOW).unwrap()),
        RejectReason::BadVersion { .. }
    ));
    assert_eq!(b.latest(), &before);
}

#[test]
fn wrong_signer_and_high_s_are_rejected() {
    let (a, mut b) = pair([1_000, 1_000], Limits::default());
    let before = b.latest().clone();
    let forged = propose_ops(vec![Op::Transfer { amount: Amount(5) }], 1, &a, 0x33);
    assert_eq!(
        reason_of(&b.handle(forged, NOW).unwrap()),
        RejectReason::BadSignature
    );
    let Message::Propose {
        channel_id,
        version,
        ops,
        sig,
    } = propose_ops(vec![Op::Transfer { amount: Amount(5) }], 2, &a, 0xA1)
    else {
        unreachable!()
    };
    let high_s = Message::Propose {
        channel_id,
        version,
        ops,
        sig: malleate(&sig),
    };
    assert_eq!(
        reason_of(&b.handle(high_s, NOW).unwrap()),
        RejectReason::BadSignature
    );
    assert_eq!(b.latest(), &before);
}

#[test]
fn bad_countersignature_changes_nothing() {
    let (mut a, mut b) = pair([1_000, 1_000], Limits::default());
    a.transfer(Amount(5));
    let out = a.propose(NOW).unwrap();
    let accept = sent(&deliver(&mut b, sent(&out)));
    let Message::Accept {
        channel_id,
        version,
        sig,
    } = accept[0].clone()
    else {
        panic!()
    };
    let snap = a.snapshot().clone();
    let bad = Message::Accept {
        channel_id,
        version,
        sig: malleate(&sig),
    };
    assert!(matches!(
        a.handle(bad, NOW),
        Err(ProtocolError::BadSignature(_))
    ));
    let other = Message::Accept {
        channel_id,
        version,
        sig: keys(0x44).sign_digest(B256::ZERO),
    };
    assert!(matches!(
        a.handle(other, NOW),
        Err(ProtocolError::BadSignature(_))
    ));
    assert_eq!(a.snapshot(), &snap);
    // The genuine one still works afterwards.
    a.handle(
        Message::Accept {
            channel_id,
            version,
            sig,
        },
        NOW,
    )
    .unwrap();
    assert_eq!(a.latest(), b.latest());
}

#[test]
fn unknown_channel_and_unexpected_replies_are_errors() {
    let (mut a, _b) = pair([1_000, 1_000], Limits::default());
    let snap = a.snapshot().clone();
    let m = Message::Accept {
        channel_id: htlc::ChannelId(B256::repeat_byte(9)),
        version: 1,
        sig: keys(1).sign_digest(B256::ZERO),
    };
    assert!(matches!(
        a.handle(m, NOW),
        Err(ProtocolError::UnknownChannel(_))
    ));
    let m = Message::Reject {
        channel_id: a.id(),
        version: 1,
        reason: RejectReason::Conflict,
    };
    assert!(matches!(
        a.handle(m, NOW),
        Err(ProtocolError::UnexpectedReply(1))
    ));
    assert_eq!(a.snapshot(), &snap);
}

fn invalid_op(
    ops: Vec<Op>,
    by_b: bool,
    balances: [u128; 2],
    limits: Limits,
    setup: impl FnOnce(&mut htlc::Channel, &mut htlc::Channel),
) -> OpError {
    let (mut a, mut b) = pair(balances, limits);
    setup(&mut a, &mut b);
    let (from, to, k) = if by_b {
        (&b, &mut a, 0xB2)
    } else {
        (&a, &mut b, 0xA1)
    };
    let version = to.latest().state.version + 1;
    let msg = propose_ops(ops, version, from, k);
    let before = to.snapshot().clone();
    let eff = to.handle(msg, NOW).unwrap();
    // A refusal changes nothing but the floor: the refused version is dead (ADR 0021).
    assert_eq!(to.snapshot().version_floor(), version);
    let fields = |s: &htlc::Snapshot| {
        let text = format!("{s:?}");
        let i = text.find("version_floor: ").unwrap();
        let rest = &text[i..];
        let end = rest.find(',').unwrap();
        format!("{}{}", &text[..i], &rest[end..])
    };
    assert!(
        fields(to.snapshot()).contains("max_in_flight"),
        "Debug shows the fields"
    );
    assert_eq!(
        fields(to.snapshot()),
        fields(&before),
        "a refused proposal changes nothing else"
    );
    match reason_of(&eff) {
        RejectReason::InvalidOp { error, .. } => error,
        r => panic!("expected InvalidOp, got {r:?}"),
    }
}

fn with_lock(a: &mut htlc::Channel, b: &mut htlc::Channel) {
    a.offer_htlc(
        Amount(100),
        Preimage([1; 32]).hashlock(),
        Expiry(NOW.0 + 50),
    );
    let out = a.propose(NOW).unwrap();
    settle(a, b, sent(&out));
}

#[test]
fn each_invalid_operation_is_rejected_with_its_reason() {
    let l = Limits::default();
    let h = Preimage([1; 32]).hashlock();
    let exp = Expiry(NOW.0 + 50);
    let add = |id, amount| Op::AddHtlc {
        id: HtlcId(id),
        amount: Amount(amount),
        hashlock: h,
        expiry: exp,
    };
    // unknown lock
    assert_eq!(
        invalid_op(
            vec![Op::FulfillHtlc {
                id: HtlcId(9),
                preimage: Preimage([1; 32])
            }],
            true,
            [100, 100],
            l,
            |_, _| {}
        ),
        OpError::UnknownLock(HtlcId(9))
    );
    // bad preimage
    assert_eq!(
        invalid_op(
            vec![Op::FulfillHtlc {
                id: HtlcId(0),
                preimage: Preimage([2; 32])
            }],
            true,
            [1000, 100],
            l,
            with_lock
        ),
        OpError::BadPreimage
    );
    // the sender cannot fulfill or fail its own lock
    assert_eq!(
        invalid_op(
            vec![Op::FulfillHtlc {
                id: HtlcId(0),
                preimage: Preimage([1; 32])
            }],
            false,
            [1000, 100],
            l,
            with_lock
        ),
        OpError::WrongSide
    );
    // expiring before expiry
    assert_eq!(
        invalid_op(
            vec![Op::ExpireHtlc { id: HtlcId(0) }],
            false,
            [1000, 100],
            l,
            with_lock
        ),
        OpError::NotExpired
    );
    // over capacity
    assert_eq!(
        invalid_op(vec![add(0, 101)], false, [100, 100], l, |_, _| {}),
        OpError::InsufficientBalance
    );
    assert_eq!(
        invalid_op(
            vec![Op::Transfer {
                amount: Amount(101)
            }],
            false,
            [100, 100],
            l,
            |_, _| {}
        ),
        OpError::InsufficientBalance
    );
    // oversized amounts: more than the payer holds, however large
    assert_eq!(
        invalid_op(
            vec![Op::Transfer {
                amount: Amount::MAX
            }],
            false,
            [100, 100],
            l,
            |_, _| {}
        ),
        OpError::InsufficientBalance
    );
    // too many pending locks
    let tight = Limits {
        max_pending_locks: 1,
        ..l
    };
    assert_eq!(
        invalid_op(vec![add(2, 1)], false, [1000, 100], tight, with_lock),
        OpError::TooManyLocks
    );
    // in-flight over limit
    let cap = Limits {
        max_in_flight: Amount(150),
        ..l
    };
    assert_eq!(
        invalid_op(vec![add(2, 51)], false, [1000, 100], cap, with_lock),
        OpError::InFlightOverLimit
    );
    // reused or wrong-parity lock id
    assert!(matches!(
        invalid_op(vec![add(0, 1)], false, [1000, 100], l, with_lock),
        OpError::BadLockId { .. }
    ));
    assert!(matches!(
        invalid_op(vec![add(1, 1)], false, [1000, 100], l, |_, _| {}),
        OpError::BadLockId { .. }
    ));
    // expiry in the past, zero amount
    assert_eq!(
        invalid_op(
            vec![Op::AddHtlc {
                id: HtlcId(0),
                amount: Amount(1),
                hashlock: h,
                expiry: NOW
            }],
            false,
            [100, 100],
            l,
            |_, _| {}
        ),
        OpError::ExpiryInPast
    );
    assert_eq!(
        invalid_op(vec![add(0, 0)], false, [100, 100], l, |_, _| {}),
        OpError::AmountBelowMinimum
    );
    // close with a pending lock; operation after close
    assert_eq!(
        invalid_op(vec![Op::Close], false, [1000, 100], l, with_lock),
        OpError::CloseWithPending
    );
    assert_eq!(
        invalid_op(
            vec![Op::Close, Op::Transfer { amount: Amount(1) }],
            false,
            [100, 100],
            l,
            |_, _| {}
        ),
        OpError::ChannelClosed
    );
    // too many operations in one update
    let few = Limits {
        max_ops_per_update: 2,
        ..l
    };
    assert_eq!(
        invalid_op(
            vec![Op::Transfer { amount: Amount(1) }; 3],
            false,
            [100, 100],
            few,
            |_, _| {}
        ),
        OpError::TooManyOps
    );
    // guarantee split that does not match
    let vc = htlc::ChannelId(B256::repeat_byte(5));
    let g = htlc::Guarantee {
        virtual_channel: vc,
        from_a: Amount(10),
        from_b: Amount(10),
        crossed: false,
        locks_until: htlc::ids::Expiry(u64::MAX),
    };
    assert_eq!(
        invalid_op(
            vec![
                Op::AddGuarantee(g),
                Op::RemoveGuarantee {
                    virtual_channel: vc,
                    to_a: Amount(15),
                    to_b: Amount(6)
                }
            ],
            false,
            [100, 100],
            l,
            |_, b| {
                b.agree(Op::AddGuarantee(g)).unwrap();
                b.agree(Op::RemoveGuarantee {
                    virtual_channel: vc,
                    to_a: Amount(15),
                    to_b: Amount(6),
                })
                .unwrap();
            }
        ),
        OpError::GuaranteeMismatch
    );
    assert_eq!(
        invalid_op(
            vec![Op::AddGuarantee(g), Op::AddGuarantee(g)],
            false,
            [100, 100],
            l,
            |_, b| {
                b.agree(Op::AddGuarantee(g)).unwrap();
                b.agree(Op::AddGuarantee(g)).unwrap();
            }
        ),
        OpError::DuplicateGuarantee
    );
    // Issue 12, attack 1: guarantees the counterparty never agreed to (the theft: lock the
    // victim's balance in a guarantee and release it all to the proposer in one update).
    let steal = vec![
        Op::AddGuarantee(htlc::Guarantee {
            virtual_channel: vc,
            from_a: Amount(0),
            from_b: Amount(100),
            crossed: false,
            locks_until: htlc::ids::Expiry(u64::MAX),
        }),
        Op::RemoveGuarantee {
            virtual_channel: vc,
            to_a: Amount(100),
            to_b: Amount(0),
        },
    ];
    assert_eq!(
        invalid_op(steal.clone(), false, [100, 100], l, |_, _| {}),
        OpError::NotAgreed
    );
    // An agreement covers that exact operation only: agreeing to the guarantee does not
    // authorise a release to the proposer.
    assert_eq!(
        invalid_op(steal, false, [100, 100], l, |_, b| {
            b.agree(Op::AddGuarantee(htlc::Guarantee {
                virtual_channel: vc,
                from_a: Amount(0),
                from_b: Amount(100),
                crossed: false,
                locks_until: htlc::ids::Expiry(u64::MAX),
            }))
            .unwrap();
        }),
        OpError::NotAgreed
    );
    // A lock expiring beyond the channel's horizon (jamming).
    let short = Limits {
        max_expiry_secs: 3600,
        ..l
    };
    assert_eq!(
        invalid_op(
            vec![Op::AddHtlc {
                id: HtlcId(0),
                amount: Amount(1),
                hashlock: h,
                expiry: Expiry(NOW.0 + 3601),
            }],
            false,
            [100, 100],
            short,
            |_, _| {}
        ),
        OpError::ExpiryTooFar
    );
    // A top-up credited to the side that did not deposit (issue 12, attack 2): B deposited,
    // A claims it.
    assert_eq!(
        invalid_op(
            vec![Op::Deposit { amount: Amount(50) }],
            false,
            [100, 100],
            l,
            |_, b| {
                b.observe_holdings(Amount(250));
                b.observe_deposits(htlc::Side::A, Amount(100));
                b.observe_deposits(htlc::Side::B, Amount(150));
            }
        ),
        OpError::DepositNotOnChain
    );
    // A frozen channel (disputed on chain) takes no new lock.
    assert_eq!(
        invalid_op(
            vec![Op::AddHtlc {
                id: HtlcId(0),
                amount: Amount(1),
                hashlock: h,
                expiry: exp,
            }],
            false,
            [100, 100],
            l,
            |_, b| b.freeze()
        ),
        OpError::ChannelFrozen
    );
}

#[test]
fn expired_lock_cannot_be_fulfilled_but_can_be_expired() {
    let (mut a, mut b) = pair([1_000, 100], Limits::default());
    with_lock(&mut a, &mut b);
    let later = Expiry(NOW.0 + 50);
    b.fulfill_htlc(HtlcId(0), Preimage([1; 32]));
    let out = b.propose(later).unwrap();
    // B's own validation drops the fulfill (never signed): reported at once.
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::OpDropped {
            error: OpError::LockExpired,
            ..
        }
    )));
    // B's own clock dropped its late fulfil, which releases its claim: the expiry is co-signed
    // (a claim B had in time is kept: see a_lock_whose_preimage_we_know_is_never_expired_...).
    assert!(b.claims().is_empty());
    a.expire_htlc(HtlcId(0));
    let out = a.propose(later).unwrap();
    let mut to_a = Vec::new();
    for m in sent(&out) {
        to_a.extend(sent(&b.handle(m, later).unwrap()));
    }
    for m in to_a {
        a.handle(m, later).unwrap();
    }
    assert_eq!(a.latest(), b.latest());
    assert_eq!(a.latest().state.balances, [Amount(1_000), Amount(100)]);
}

#[test]
fn refused_offer_is_reported_dead_only_after_a_superseding_state() {
    // B lowers its lock limit: A's offer passes A's validation but B refuses it.
    let (mut a, _) = pair([1_000, 100], Limits::default());
    let (_, mut b) = pair(
        [1_000, 100],
        Limits {
            max_pending_locks: 0,
            ..Limits::default()
        },
    );
    a.offer_htlc(Amount(10), Preimage([3; 32]).hashlock(), Expiry(NOW.0 + 50));
    let out = a.propose(NOW).unwrap();
    let reject = sent(&deliver(&mut b, sent(&out)));
    assert!(matches!(
        reject[0],
        Message::Reject {
            reason: RejectReason::InvalidOp {
                error: OpError::TooManyLocks,
                ..
            },
            ..
        }
    ));
    let out = deliver(&mut a, reject);
    // B holds A's signature on the refused state: not dead yet, A bumps the version instead.
    assert!(
        !events(&out)
            .iter()
            .any(|e| matches!(e, Event::OpDropped { .. }))
    );
    let bump = sent(&out);
    assert!(matches!(&bump[0], Message::Propose { version: 2, ops, .. } if ops.is_empty()));
    let out = deliver(&mut a, sent(&deliver(&mut b, bump)));
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::OpDropped {
            error: OpError::TooManyLocks,
            ..
        }
    )));
    assert_eq!(a.latest().state.version, 2);
    assert_eq!(a.latest(), b.latest());
}

#[test]
fn concurrent_proposals_resolve_with_leader_first_and_no_double_signing() {
    let (mut a, mut b) = pair([1_000, 1_000], Limits::default());
    a.transfer(Amount(10));
    b.transfer(Amount(20));
    let pa = sent(&a.propose(NOW).unwrap());
    let pb = sent(&b.propose(NOW).unwrap());
    // Both at version 1: each refuses the other's.
    let ra = deliver(&mut a, pb);
    let rb = deliver(&mut b, pa);
    assert_eq!(reason_of(&ra), RejectReason::Conflict);
    assert_eq!(reason_of(&rb), RejectReason::Conflict);
    // The leader re-proposes at version 2; the follower waits, then goes after it.
    let from_a = sent(&deliver(&mut a, sent(&rb)));
    assert!(matches!(&from_a[0], Message::Propose { version: 2, .. }));
    assert!(sent(&deliver(&mut b, sent(&ra))).is_empty());
    settle(&mut a, &mut b, from_a);
    assert_eq!(a.latest(), b.latest());
    assert_eq!(a.latest().state.version, 3);
    assert_eq!(a.latest().state.balances, [Amount(1_010), Amount(990)]);
}

#[test]
fn a_follower_crossing_a_busy_leader_is_not_declared_stuck() {
    // A (leader) queues a new operation before every message it handles, as a busy peer
    // does; B's proposal keeps crossing A's next one (`Conflict`), and B keeps co-signing A's.
    // That is progress, not a peer refusing everything: B must not stop proposing.
    let (mut a, mut b) = pair([1_000_000, 1_000_000], Limits::default());
    b.transfer(Amount(7));
    let mut to_a = sent(&b.propose(NOW).unwrap());
    a.transfer(Amount(2));
    let mut to_b = sent(&a.propose(NOW).unwrap());
    for _ in 0..4 * htlc::update::MAX_CONSECUTIVE_REJECTS {
        let mut next_b = Vec::new();
        for m in std::mem::take(&mut to_a) {
            a.transfer(Amount(2));
            next_b.extend(sent(&a.handle(m, NOW).unwrap()));
            next_b.extend(sent(&a.propose(NOW).unwrap()));
        }
        to_a = sent(&deliver(&mut b, std::mem::take(&mut to_b)));
        to_b = next_b;
        assert!(b.snapshot().rejects_in_row() < htlc::update::MAX_CONSECUTIVE_REJECTS);
    }
    // Once A pauses, B's transfer goes through (A only ever sent even amounts).
    to_b.extend(sent(&deliver(&mut a, to_a)));
    settle(&mut a, &mut b, to_b);
    assert_eq!(a.latest(), b.latest());
    assert_eq!(b.latest().state.balances[0].0 % 2, 1, "B's transfer landed");
    assert!(b.snapshot().queue().is_empty() && b.snapshot().pending().is_none());
}

#[test]
fn an_opening_state_whose_total_overflows_is_refused() {
    let (ka, kb) = (keys(0xA1), keys(0xB2));
    let p = params(&ka, &kb);
    let state = htlc::ChannelState::opening(p.id(), [Amount::MAX, Amount(1)]);
    let sigs = [
        htlc::update::sign_state(&p, &ka, &state).unwrap(),
        htlc::update::sign_state(&p, &kb, &state).unwrap(),
    ];
    let r =
        htlc::Channel::from_cosigned(p, ka, Limits::default(), htlc::SignedState { state, sigs });
    assert!(matches!(r, Err(ProtocolError::Overflow)));
}

#[test]
fn a_top_up_is_accepted_only_once_the_chain_holds_it() {
    let (mut a, mut b) = pair([1_000, 0], Limits::default());
    // B deposited 500 on chain and proposes the top-up before A has seen it.
    b.observe_holdings(Amount(1_500));
    b.observe_deposits(htlc::Side::B, Amount(500));
    b.deposit(Amount(500));
    let out = b.propose(NOW).unwrap();
    let reject = sent(&deliver(&mut a, sent(&out)));
    assert!(matches!(
        reject[0],
        Message::Reject {
            reason: RejectReason::InvalidOp {
                error: OpError::DepositNotOnChain,
                ..
            },
            ..
        }
    ));
    assert_eq!(a.latest().state.total().unwrap(), Amount(1_000));
    // Settle B's version bump, then A sees the deposit and B tries again.
    settle(&mut a, &mut b, reject);
    a.observe_holdings(Amount(1_500));
    a.observe_deposits(htlc::Side::B, Amount(500));
    b.deposit(Amount(500));
    let out = b.propose(NOW).unwrap();
    settle(&mut b, &mut a, sent(&out));
    assert_eq!(a.latest(), b.latest());
    assert_eq!(a.latest().state.balances, [Amount(1_000), Amount(500)]);
    // Nothing beyond what the chain holds, and no deposit credited twice.
    b.deposit(Amount(1));
    let out = b.propose(NOW).unwrap();
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::OpDropped {
            error: OpError::DepositNotOnChain,
            ..
        }
    )));
    let twice = propose_ops(
        vec![Op::Deposit {
            amount: Amount(500),
        }],
        a.latest().state.version + 1,
        &b,
        0xB2,
    );
    assert!(matches!(
        reason_of(&deliver(&mut a, vec![twice])),
        RejectReason::InvalidOp {
            error: OpError::DepositNotOnChain,
            ..
        }
    ));
}

/// Issue 12, attack 2: a peer that deposited nothing cannot be credited with what the other
/// side deposited, even when the adjudicator holds it.
#[test]
fn a_top_up_is_credited_only_to_its_depositor() {
    let (mut a, mut b) = pair([1_000, 0], Limits::default());
    // B (the hub) deposited 5,000 of collateral; A saw it on chain.
    for m in [&mut a, &mut b] {
        m.observe_holdings(Amount(6_000));
        m.observe_deposits(htlc::Side::A, Amount(1_000));
        m.observe_deposits(htlc::Side::B, Amount(5_000));
    }
    // A claims it: its own machine drops the operation ...
    a.deposit(Amount(5_000));
    let out = a.propose(NOW).unwrap();
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::OpDropped {
            error: OpError::DepositNotOnChain,
            ..
        }
    )));
    // ... and a hand-made proposal is refused by B.
    let steal = propose_ops(
        vec![Op::Deposit {
            amount: Amount(5_000),
        }],
        1,
        &a,
        0xA1,
    );
    assert!(matches!(
        reason_of(&deliver(&mut b, vec![steal])),
        RejectReason::InvalidOp {
            error: OpError::DepositNotOnChain,
            ..
        }
    ));
    // B's own credit goes through.
    b.deposit(Amount(5_000));
    let out = b.propose(NOW).unwrap();
    settle(&mut b, &mut a, sent(&out));
    assert_eq!(a.latest(), b.latest());
    assert_eq!(a.latest().state.balances, [Amount(1_000), Amount(5_000)]);
}

/// Issue 12, attack 5: once we know the preimage of the peer's lock (we claim it), we never
/// co-sign its expiry, even after the expiry time.
#[test]
fn a_lock_whose_preimage_we_know_is_never_expired_by_the_peer() {
    let (mut a, mut b) = pair([1_000, 1_000], Limits::default());
    with_lock(&mut a, &mut b);
    let id = a.latest().state.locks[0].id;
    // B learns the preimage (downstream) and queues the claim, but the expiry passes first.
    b.fulfill_htlc(id, Preimage([1; 32]));
    assert_eq!(b.claims(), &[(id, Preimage([1; 32]))]);
    let late = Expiry(NOW.0 + 60);
    a.expire_htlc(id);
    let out = a.propose(late).unwrap();
    let eff = b.handle(sent(&out)[0].clone(), late).unwrap();
    assert!(matches!(
        reason_of(&eff),
        RejectReason::InvalidOp {
            error: OpError::ClaimPending,
            ..
        } | RejectReason::Conflict
    ));
    assert_eq!(b.latest().state.locks.len(), 1, "the lock is still there");
    // The application may give the claim up (it cannot win it on chain).
    b.release_claim(id);
    assert!(b.claims().is_empty());
    // A lock B knows nothing about can be expired as usual.
    let (mut a, mut b) = pair([1_000, 1_000], Limits::default());
    with_lock(&mut a, &mut b);
    let id = a.latest().state.locks[0].id;
    a.expire_htlc(id);
    let out = a.propose(late).unwrap();
    let all = {
        let eb = b.handle(sent(&out)[0].clone(), late).unwrap();
        let ea = deliver(&mut a, sent(&eb));
        [eb, ea].concat()
    };
    assert!(
        !all.iter()
            .any(|e| matches!(e, Effect::Send(Message::Reject { .. })))
    );
    assert!(b.latest().state.locks.is_empty());
}

/// Issue 19's shrunk sequence: B proposes a top-up A cannot see on chain yet, A refuses it; A
/// then sees the holdings; the same proposal delivered to A again must still be refused, and
/// the refusal must be durable (persisted before the reject leaves).
#[test]
fn a_refused_proposal_replayed_after_it_became_valid_never_commits() {
    let (mut a, mut b) = pair([1_000, 1_000], Limits::default());
    b.observe_holdings(Amount(2_001));
    b.observe_deposits(htlc::Side::B, Amount(1_001));
    b.deposit(Amount(1));
    let proposal = sent(&b.propose(NOW).unwrap());
    let refusal = deliver(&mut a, proposal.clone());
    assert!(matches!(
        reason_of(&refusal),
        RejectReason::InvalidOp {
            error: OpError::DepositNotOnChain,
            ..
        }
    ));
    // The raised floor is written before the refusal is sent.
    let persist = refusal.iter().position(|e| matches!(e, Effect::Persist));
    assert_eq!(
        a.snapshot().version_floor(),
        1,
        "the floor is raised by the refusal"
    );
    let send = refusal.iter().position(|e| matches!(e, Effect::Send(_)));
    assert!(
        persist.is_some() && persist < send,
        "floor persisted first: {refusal:?}"
    );
    // A queues an offer of its own meanwhile (as in the shrunk case) and then sees the chain.
    a.offer_htlc(Amount(1), Preimage([0; 32]).hashlock(), Expiry(NOW.0 + 1));
    a.observe_holdings(Amount(2_001));
    a.observe_deposits(htlc::Side::B, Amount(1_001));
    let before = a.snapshot().clone();
    let replay = deliver(&mut a, proposal);
    assert!(matches!(
        reason_of(&replay),
        RejectReason::BadVersion { min: 2 }
    ));
    assert!(
        !events(&replay)
            .iter()
            .any(|e| matches!(e, Event::Committed { .. })),
        "a refused proposal committed when replayed"
    );
    assert_eq!(a.snapshot(), &before, "the replay changed nothing");
    // The refusal reaches B: B re-proposes above the refused version and the two agree.
    let all = settle(&mut a, &mut b, sent(&refusal));
    assert!(
        !all.iter()
            .any(|e| matches!(e, Effect::Event(Event::PeerStuck)))
    );
    let out = a.propose(NOW).unwrap();
    settle(&mut a, &mut b, sent(&out));
    assert_eq!(a.latest(), b.latest());
    assert!(a.latest().state.version >= 2);
    // The refused top-up was reported dead to B, which asks again, now that A sees it.
    assert_eq!(a.latest().state.total().unwrap(), Amount(2_000));
    b.deposit(Amount(1));
    let out = b.propose(NOW).unwrap();
    settle(&mut b, &mut a, sent(&out));
    assert_eq!(a.latest(), b.latest());
    assert_eq!(a.latest().state.total().unwrap(), Amount(2_001));
}

/// A refusal because a proposal crossed ours (ADR 0003) also kills the peer's version for good.
#[test]
fn a_proposal_refused_as_a_conflict_is_never_countersigned_later() {
    let (mut a, mut b) = pair([1_000, 1_000], Limits::default());
    a.transfer(Amount(5));
    b.transfer(Amount(7));
    let from_a = sent(&a.propose(NOW).unwrap());
    let from_b = sent(&b.propose(NOW).unwrap());
    // A (leader) refuses B's crossing proposal; then everything settles.
    let a_refuses = deliver(&mut a, from_b.clone());
    assert_eq!(reason_of(&a_refuses), RejectReason::Conflict);
    let b_refuses = deliver(&mut b, from_a);
    assert_eq!(reason_of(&b_refuses), RejectReason::Conflict);
    let mut to_b = sent(&a_refuses);
    to_b.extend(sent(&deliver(&mut a, sent(&b_refuses))));
    settle(&mut a, &mut b, to_b);
    assert_eq!(a.latest(), b.latest());
    // B's crossing proposal, replayed now that A has nothing pending, is refused.
    let before = a.snapshot().clone();
    let replay = deliver(&mut a, from_b);
    assert!(matches!(
        reason_of(&replay),
        RejectReason::BadVersion { .. }
    ));
    assert_eq!(a.snapshot(), &before);
    assert_eq!(
        a.latest().state.balances,
        [Amount(1_000 - 5 + 7), Amount(1_000 + 5 - 7)]
    );
}

/// Built from a co-signed opening with our own signature vouched for, a channel still checks
/// the counterparty's: a forged or misplaced one is refused; only our own side is taken on
/// our word (`from_cosigned` checks both).
#[test]
fn a_channel_from_a_state_we_signed_still_checks_the_counterpartys_signature() {
    let (ka, kb) = (keys(0xA1), keys(0xB2));
    let p = params(&ka, &kb);
    let state = htlc::ChannelState::opening(p.id(), [Amount(10), Amount(0)]);
    let ours = htlc::update::sign_state(&p, &ka, &state).unwrap();
    let theirs = htlc::update::sign_state(&p, &kb, &state).unwrap();
    let stranger = htlc::update::sign_state(&p, &keys(0xC3), &state).unwrap();
    let build = |by_us: bool, sigs| {
        let s = htlc::SignedState {
            state: state.clone(),
            sigs,
        };
        if by_us {
            htlc::Channel::from_cosigned_by_us(p.clone(), ka.clone(), Limits::default(), s)
        } else {
            htlc::Channel::from_cosigned(p.clone(), ka.clone(), Limits::default(), s)
        }
    };
    assert!(build(true, [ours, theirs]).is_ok());
    for sigs in [[ours, stranger], [ours, ours]] {
        assert!(matches!(
            build(true, sigs),
            Err(ProtocolError::BadSignature(_))
        ));
    }
    // Our side is not re-checked by `from_cosigned_by_us`; `from_cosigned` checks it.
    assert!(build(true, [stranger, theirs]).is_ok());
    assert!(matches!(
        build(false, [stranger, theirs]),
        Err(ProtocolError::BadSignature(_))
    ));
}
