//! Issue 12: a hub's peers are strangers. Each test is one attack by a peer that sends any frame
//! it likes (over real QUIC, against a hub on real RocksDB), and asserts that the hub signs
//! nothing that moves its money, writes nothing it need not write, and that honest traffic goes
//! on. The attacks that need the chain (deposits, disputes) are in `adversary_chain.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use alloy::primitives::{Address, B256};
use htlc::forward::MIN_CHALLENGE_DURATION_SECS;
use htlc::ops::Limits;
use htlc::sig::Keys;
use htlc::{Amount, ChannelId, Expiry, FailureReason, Guarantee, HtlcId, Op, OpError, Preimage};
use htlc::{Message, RejectReason};
use hub::events::NodeEvent;
use hub::node::{Node, NodeOptions};
use hub::store::{Cf, Store};
use hub::wire::{Body, ErrorCode, Frame};
use std::time::Duration;

mod common;
use common::adversary::{Adversary, Answer, HeldLock};
use common::{TempDir, loopback, store_entries, wait_for, wait_state};

const WINDOW: u64 = MIN_CHALLENGE_DURATION_SECS;

fn hub_with(dir: &TempDir, opts: NodeOptions) -> (Node, Store) {
    let keys = Keys::from_bytes([1; 32]).unwrap();
    let store = Store::open(&dir.0).unwrap();
    let node = Node::start(keys, store.clone(), opts).unwrap();
    (node, store)
}

fn evil_keys(byte: u8) -> Keys {
    Keys::from_bytes([byte; 32]).unwrap()
}

/// Attack 1: a guarantee the hub never agreed to, that would lock the hub's balance and
/// release it all to the attacker in one update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_move_the_hubs_balance_with_guarantees() {
    let dir = TempDir::new("adv-g");
    let (hub, _store) = hub_with(&dir, NodeOptions::default());
    let addr = hub.listen(loopback()).unwrap();
    let mut evil = Adversary::connect(addr, evil_keys(0xE1)).await;
    let id = evil
        .open(hub.address(), Amount(1_000), Address::ZERO, WINDOW)
        .await
        .unwrap();
    // The hub earns a balance honestly.
    evil.honest(id, |m| m.transfer(Amount(400))).await;
    wait_state(&hub, id, |s| s.state.balances == [Amount(600), Amount(400)]).await;
    let before = hub.channel(id).await.unwrap();

    let vc = ChannelId(B256::repeat_byte(0x66));
    let theft = vec![
        Op::AddGuarantee(Guarantee {
            virtual_channel: vc,
            from_a: Amount(0),
            from_b: Amount(400),
            crossed: false,
            locks_until: Expiry(u64::MAX),
        }),
        Op::RemoveGuarantee {
            virtual_channel: vc,
            to_a: Amount(400),
            to_b: Amount(0),
        },
    ];
    assert_eq!(
        evil.forge(id, theft).await,
        Answer::Rejected(RejectReason::InvalidOp {
            index: 0,
            error: OpError::NotAgreed
        }),
        "the hub must refuse guarantees it did not agree to"
    );
    // A guarantee alone, funded by the hub, is refused the same way.
    let lock_up = vec![Op::AddGuarantee(Guarantee {
        virtual_channel: vc,
        from_a: Amount(100),
        from_b: Amount(100),
        crossed: false,
        locks_until: Expiry(u64::MAX),
    })];
    assert!(matches!(
        evil.forge(id, lock_up).await,
        Answer::Rejected(RejectReason::InvalidOp {
            error: OpError::NotAgreed,
            ..
        })
    ));
    let after = hub.channel(id).await.unwrap();
    assert_eq!(after, before, "the hub's co-signed state did not move");
    // Honest traffic goes on.
    evil.honest(id, |m| m.transfer(Amount(1))).await;
    wait_state(&hub, id, |s| s.state.balances == [Amount(599), Amount(401)]).await;
}

/// Attacks 4 and 6: channels in an asset the hub does not accept, with a challenge window too
/// short to answer, or with nothing deposited, are refused, and leave nothing on the hub's disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_in_foreign_assets_short_windows_or_empty_are_refused_and_leave_nothing() {
    let dir = TempDir::new("adv-open");
    let (hub, store) = hub_with(&dir, NodeOptions::default());
    let addr = hub.listen(loopback()).unwrap();
    let mut evil = Adversary::connect(addr, evil_keys(0xE2)).await;
    let disk = store_entries(&store);

    let token = Address::repeat_byte(0x77);
    let (code, detail) = evil
        .open(hub.address(), Amount(1_000), token, WINDOW)
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::Protocol);
    assert!(detail.contains("asset"), "{detail}");

    for window in [60, MIN_CHALLENGE_DURATION_SECS - 1] {
        let (_, detail) = evil
            .open(hub.address(), Amount(1_000), Address::ZERO, window)
            .await
            .unwrap_err();
        assert!(detail.contains("challenge window"), "{detail}");
    }
    let (_, detail) = evil
        .open(hub.address(), Amount::ZERO, Address::ZERO, WINDOW)
        .await
        .unwrap_err();
    assert!(detail.contains("deposit"), "{detail}");
    // Nor may the opener assign the hub a deposit it never made.
    let (_, detail) = evil
        .open_with(
            hub.address(),
            [Amount(1_000), Amount(5_000)],
            Address::ZERO,
            WINDOW,
        )
        .await
        .unwrap_err();
    assert!(detail.contains("deposit"), "{detail}");

    assert!(hub.channel_ids().is_empty());
    assert_eq!(
        store_entries(&store),
        disk,
        "refused opens wrote nothing to disk"
    );
    // The same stranger with acceptable terms gets its channel.
    evil.open(hub.address(), Amount(1_000), Address::ZERO, WINDOW)
        .await
        .unwrap();
    assert_eq!(hub.channel_ids().len(), 1);
}

/// Attack 4: a payment received in one asset is never paid out in another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_are_forwarded_only_within_one_asset() {
    let token = Address::repeat_byte(0x77);
    let opts = || NodeOptions {
        assets: vec![Address::ZERO, token],
        ..NodeOptions::default()
    };
    let (dh, dp, dq) = (
        TempDir::new("adv-asset-hub"),
        TempDir::new("adv-asset-payer"),
        TempDir::new("adv-asset-payee"),
    );
    let (hub, _) = hub_with(&dh, opts());
    let payer = Node::start(evil_keys(0xA1), Store::open(&dp.0).unwrap(), opts()).unwrap();
    let payee = Node::start(evil_keys(0xB2), Store::open(&dq.0).unwrap(), opts()).unwrap();
    let addr = hub.listen(loopback()).unwrap();
    payer.connect(addr, Some(hub.address())).await.unwrap();
    payee.connect(addr, Some(hub.address())).await.unwrap();
    // The payer's channel is in the (worthless) token, the payee's in ETH with hub liquidity.
    let pay_ch = payer
        .open_channel_in(hub.address(), token, Amount(1_000_000))
        .await
        .unwrap();
    let recv_ch = payee
        .open_channel(hub.address(), Amount(2_000_000))
        .await
        .unwrap();
    payee.transfer(recv_ch, Amount(1_000_000)).await.unwrap();
    wait_state(&hub, recv_ch, |s| s.state.balances[1] == Amount(1_000_000)).await;
    let before = hub.channel(recv_ch).await.unwrap();

    let invoice = payee
        .create_invoice(Amount(10_000), 3600, hub.address())
        .await
        .unwrap();
    let mut ev = payer.subscribe();
    let id = B256::repeat_byte(1);
    payer.pay(&invoice, id).await.unwrap();
    let failed = wait_for(
        &mut ev,
        |e| matches!(e, NodeEvent::PaymentFailed { id: p, .. } if *p == id),
    )
    .await;
    assert_eq!(
        failed,
        NodeEvent::PaymentFailed {
            id,
            reason: Some(FailureReason::UnknownNextPeer)
        }
    );
    // Nothing was offered on the ETH channel, and the token lock went back to the payer.
    let after = hub.channel(recv_ch).await.unwrap();
    assert_eq!(after.state.balances, before.state.balances);
    assert!(after.state.locks.is_empty());
    wait_state(&payer, pay_ch, |s| {
        s.state.locks.is_empty() && s.state.balances[0] == Amount(1_000_000)
    })
    .await;
}

/// Attack 7: the channel's jamming limits (smallest HTLC, lock slots, value in flight, longest
/// expiry) hold against proposals built by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jamming_limits_hold_against_hand_made_locks() {
    let dir = TempDir::new("adv-jam");
    let limits = Limits {
        min_htlc: Amount(100),
        max_pending_locks: 3,
        max_in_flight: Amount(1_000),
        max_expiry_secs: 7_200,
        ..Limits::default()
    };
    let (hub, _) = hub_with(
        &dir,
        NodeOptions {
            limits,
            ..NodeOptions::default()
        },
    );
    let addr = hub.listen(loopback()).unwrap();
    let mut evil = Adversary::connect(addr, evil_keys(0xE3)).await;
    let id = evil
        .open(hub.address(), Amount(100_000), Address::ZERO, WINDOW)
        .await
        .unwrap();
    let before = hub.channel(id).await.unwrap();
    let now = evil.now.0;
    let lock = |n: u64, amount: u128, expiry: u64| Op::AddHtlc {
        id: HtlcId(2 * n),
        amount: Amount(amount),
        hashlock: Preimage([n as u8; 32]).hashlock(),
        expiry: Expiry(expiry),
    };
    let refused = |a: Answer| match a {
        Answer::Rejected(RejectReason::InvalidOp { error, .. }) => error,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        refused(evil.forge(id, vec![lock(0, 99, now + 3600)]).await),
        OpError::AmountBelowMinimum
    );
    assert_eq!(
        refused(evil.forge(id, vec![lock(0, 100, now + 7_300)]).await),
        OpError::ExpiryTooFar
    );
    assert_eq!(
        refused(
            evil.forge(id, (0..4).map(|n| lock(n, 100, now + 3600)).collect())
                .await
        ),
        OpError::TooManyLocks
    );
    assert_eq!(
        refused(
            evil.forge(id, vec![lock(0, 600, now + 3600), lock(1, 401, now + 3600)])
                .await
        ),
        OpError::InFlightOverLimit
    );
    assert_eq!(hub.channel(id).await.unwrap(), before);
}

/// Attack 8: a fresh key cannot make the hub write to disk or keep state in memory, nor hold
/// two sessions; a peer with a channel cannot pile up route instructions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_write_nothing_and_instructions_are_bounded() {
    let dir = TempDir::new("adv-disk");
    let limits = Limits {
        max_pending_locks: 5,
        ..Limits::default()
    };
    let (hub, store) = hub_with(
        &dir,
        NodeOptions {
            limits,
            ..NodeOptions::default()
        },
    );
    let addr = hub.listen(loopback()).unwrap();
    let disk = store_entries(&store);

    let mut evil = Adversary::connect(addr, evil_keys(0xE4)).await;
    let ghost = ChannelId(B256::repeat_byte(0x42));
    let bodies = || {
        vec![
            Body::Ping,
            Body::HubPolicy {
                policy: htlc::forward::ForwardPolicy::default(),
                key: evil_keys(0xE4).public_key(),
            },
            Body::Funded { channel_id: ghost },
            Body::Route {
                channel_id: ghost,
                hashlock: Preimage([1; 32]).hashlock(),
                htlc: htlc::HtlcId(0),
                onion: junk_onion(),
            },
            Body::RouteFailed {
                channel_id: ghost,
                htlc: htlc::HtlcId(0),
                packet: htlc::onion::ErrorPacket(vec![0; htlc::onion::ERROR_LEN]),
            },
            Body::Channel(Message::Reject {
                channel_id: ghost,
                version: 1,
                reason: RejectReason::Conflict,
            }),
        ]
    };
    let rounds = 60;
    for _ in 0..rounds {
        for b in bodies() {
            evil.send(b).await;
        }
    }
    // Every one of them is refused, unsequenced.
    let mut refused = 0;
    while refused < rounds * bodies().len() {
        match evil.next(Duration::from_secs(10)).await {
            Some(Body::Refused { seq: 0, .. }) => refused += 1,
            Some(other) => panic!("a stranger got {other:?}"),
            None => panic!("only {refused} refusals"),
        }
    }
    assert_eq!(
        store_entries(&store),
        disk,
        "a stranger's frames wrote nothing to disk"
    );

    // One session per key: a second connection with the same key closes the first.
    let mut twin = Adversary::connect(addr, evil_keys(0xE4)).await;
    twin.seq = evil.seq;
    let closed = tokio::time::timeout(Duration::from_secs(10), evil.conn.closed()).await;
    assert!(
        closed.is_ok(),
        "the older session of the same key was closed"
    );
    twin.send(Body::Ping).await;
    assert!(matches!(
        twin.next(Duration::from_secs(10)).await,
        Some(Body::Refused { .. })
    ));

    // A peer with a channel: route instructions are capped at the channel's lock slots.
    let mut peer = Adversary::connect(addr, evil_keys(0xE5)).await;
    let id = peer
        .open(hub.address(), Amount(1_000), Address::ZERO, WINDOW)
        .await
        .unwrap();
    for n in 0..6u8 {
        peer.send(Body::Route {
            channel_id: id,
            hashlock: Preimage([n; 32]).hashlock(),
            htlc: htlc::HtlcId(u64::from(n)),
            onion: junk_onion(),
        })
        .await;
    }
    let (code, _) = peer.refusal().await;
    assert_eq!(code, ErrorCode::RateLimited);
    // A peer with a channel keeps its sequence: a gap is refused.
    let skip = peer.seq + 5;
    peer.send_frame(&Frame::Msg {
        seq: skip,
        body: Body::Ping,
    })
    .await;
    let (code, _) = peer.refusal().await;
    assert_eq!(code, ErrorCode::OutOfOrder);
    let routes = store.scan_raw(Cf::Locks, b"route/").unwrap().len();
    assert_eq!(routes, 5, "no more instructions than lock slots");
}

/// An onion no node can read (its HTLC would fail with InvalidOnion).
fn junk_onion() -> Box<htlc::onion::Packet> {
    Box::new(htlc::onion::Packet::Sphinx(htlc::onion::Sphinx {
        version: 0,
        ephemeral: evil_keys(0xE9).public_key().serialize().to_vec(),
        routing: vec![0; htlc::onion::ROUTING_LEN],
        mac: B256::ZERO,
    }))
}

/// Attack 5: the upstream peer refuses the hub's fulfil, waits for the lock's expiry, and asks
/// the hub to co-sign the refund, after the hub has already paid downstream. The hub knows the
/// preimage and refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_never_co_signs_the_expiry_of_a_lock_it_can_claim() {
    let clock = hub::clock::Clock::system();
    let opts = || NodeOptions {
        clock: clock.clone(),
        ..NodeOptions::default()
    };
    let (dh, dq) = (TempDir::new("adv-exp-hub"), TempDir::new("adv-exp-payee"));
    let (hub, _) = hub_with(&dh, opts());
    let payee = Node::start(evil_keys(0xB2), Store::open(&dq.0).unwrap(), opts()).unwrap();
    let addr = hub.listen(loopback()).unwrap();
    payee.connect(addr, Some(hub.address())).await.unwrap();
    let out_ch = payee
        .open_channel(hub.address(), Amount(2_000_000))
        .await
        .unwrap();
    payee.transfer(out_ch, Amount(1_000_000)).await.unwrap();
    wait_state(&hub, out_ch, |s| s.state.balances[1] == Amount(1_000_000)).await;

    let mut evil = Adversary::connect(addr, evil_keys(0xE6)).await;
    let in_ch = evil
        .open(hub.address(), Amount(1_000_000), Address::ZERO, WINDOW)
        .await
        .unwrap();
    let amount = 100_000u128;
    let HeldLock {
        now, expiry, sent, ..
    } = evil
        .pay_and_refuse_the_fulfil(&hub, &payee, in_ch, amount)
        .await;
    // The downstream lock is settled: the hub paid the payee.
    wait_state(&hub, out_ch, |s| {
        s.state.locks.is_empty() && s.state.balances[0] == Amount(1_000_000 + amount)
    })
    .await;
    // Time passes beyond the upstream lock's expiry; the attacker asks for its refund.
    clock.advance(expiry.0 - now + 60);
    evil.now = hub.now();
    let id = evil.channels[&in_ch].latest().state.locks[0].id;
    let answer = evil
        .forge_when_idle(in_ch, vec![Op::ExpireHtlc { id }])
        .await;
    assert_eq!(
        answer,
        Answer::Rejected(RejectReason::InvalidOp {
            index: 0,
            error: OpError::ClaimPending
        }),
        "the hub must not co-sign the refund of a lock it can claim"
    );
    let s = hub.channel(in_ch).await.unwrap().state;
    assert_eq!(
        s.locks.len(),
        1,
        "the lock stays until it is claimed (on chain if need be)"
    );
    assert_eq!(s.balances[0], Amount(1_000_000 - sent.0));
}
