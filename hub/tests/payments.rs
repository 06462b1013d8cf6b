//! Payments A → hub → B over real QUIC, real RocksDB and a real chain (anvil): exact balances
//! and fees, every failure reason produced by a scenario that causes it and reported to the
//! payer, an HTLC the payee never reveals expiring and refunded on both sides, idempotent
//! payment ids, and a flooding peer that does not disturb the others.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use alloy::primitives::B256;
use contracts::Devnet;
use htlc::forward::{ForwardPolicy, NextHop};
use htlc::sig::Keys;
use htlc::{Amount, ChannelId, Expiry, FailureReason};
use hub::clock::Clock;
use hub::events::NodeEvent;
use hub::node::{Node, NodeOptions};
use hub::payments::{HtlcPlan, Invoice, PaymentStatus};
use hub::store::Store;
use std::time::Duration;

mod common;
use common::{TempDir, loopback, wait_for, wait_state};

const ETH: u128 = 1_000_000_000_000_000_000;
const COLLATERAL: u128 = ETH;
const POLICY: ForwardPolicy = ForwardPolicy {
    base_fee: Amount(1_000),
    fee_ppm: 100,
    expiry_delta: 3600,
    min_htlc: Amount(1_000),
    max_htlc: Amount(u128::MAX),
    max_expiry_horizon: htlc::forward::DEFAULT_MAX_EXPIRY_HORIZON_SECS,
    enabled: true,
};

struct Net {
    _dirs: Vec<TempDir>,
    /// Keeps anvil running.
    _chain: Devnet,
    clock: Clock,
    hub: Node,
    alice: Node,
    bob: Node,
    /// alice–hub and bob–hub.
    ch: [ChannelId; 2],
}

async fn opts(net: &Devnet, i: usize, clock: &Clock) -> NodeOptions {
    let client = net.client(i).await.unwrap();
    client.set_poll_interval(Duration::from_millis(10));
    NodeOptions {
        chain_id: net.chain_id(),
        adjudicator: net.deployment().adjudicator,
        chain: Some(client),
        chain_poll: Duration::from_millis(50),
        chain_retry: Duration::from_millis(500),
        expiry_check: Duration::from_millis(100),
        clock: clock.clone(),
        ..NodeOptions::default()
    }
}

async fn peer_with_channel(
    net: &Devnet,
    i: usize,
    hub: &Node,
    addr: std::net::SocketAddr,
    o: NodeOptions,
    dirs: &mut Vec<TempDir>,
) -> (Node, ChannelId) {
    let d = TempDir::new("pay-peer");
    let n = Node::start(
        Keys::from_signer(net.signer(i).unwrap()),
        Store::open(&d.0).unwrap(),
        o,
    )
    .unwrap();
    dirs.push(d);
    n.connect(addr, Some(hub.address())).await.unwrap();
    let id = n.open_channel(hub.address(), Amount(ETH)).await.unwrap();
    n.fund(id).await.unwrap();
    // The hub's collateral is credited by a co-signed update, seen by both sides: the peer
    // countersigns it first, and the hub forwards over it only once the countersignature has
    // reached it (a payment racing that forwards over no liquidity and fails, rightly).
    wait_state(&n, id, |s| s.state.balances[1] == Amount(COLLATERAL)).await;
    wait_state(hub, id, |s| s.state.balances[1] == Amount(COLLATERAL)).await;
    (n, id)
}

async fn setup(bob_reveals: bool) -> Net {
    let net = Devnet::start().await.unwrap();
    let clock = Clock::system();
    let mut dirs = Vec::new();
    let dh = TempDir::new("pay-hub");
    let mut ho = opts(&net, 1, &clock).await;
    ho.collateral = Amount(COLLATERAL);
    ho.policy = POLICY;
    let hub = Node::start(
        Keys::from_signer(net.signer(1).unwrap()),
        Store::open(&dh.0).unwrap(),
        ho,
    )
    .unwrap();
    dirs.push(dh);
    let addr = hub.listen(loopback()).unwrap();
    let ao = opts(&net, 2, &clock).await;
    let (alice, a) = peer_with_channel(&net, 2, &hub, addr, ao, &mut dirs).await;
    let mut bo = opts(&net, 3, &clock).await;
    bo.reveal_preimages = bob_reveals;
    let (bob, b) = peer_with_channel(&net, 3, &hub, addr, bo, &mut dirs).await;
    Net {
        _dirs: dirs,
        _chain: net,
        clock,
        hub,
        alice,
        bob,
        ch: [a, b],
    }
}

impl Net {
    async fn balances(&self) -> [[Amount; 2]; 2] {
        let a = self.alice.channel(self.ch[0]).await.unwrap().state;
        let b = self.bob.channel(self.ch[1]).await.unwrap().state;
        assert!(
            a.locks.is_empty() && b.locks.is_empty(),
            "no lock left pending"
        );
        [a.balances, b.balances]
    }

    /// Wait until both channels hold no lock on every side.
    async fn settled(&self) {
        for (n, id) in [
            (&self.alice, self.ch[0]),
            (&self.hub, self.ch[0]),
            (&self.bob, self.ch[1]),
            (&self.hub, self.ch[1]),
        ] {
            wait_state(n, id, |s| s.state.locks.is_empty()).await;
        }
    }

    fn shutdown(&self) {
        for n in [&self.hub, &self.alice, &self.bob] {
            n.shutdown();
        }
    }
}

fn fee(amount: u128) -> u128 {
    POLICY.base_fee.0 + amount * u128::from(POLICY.fee_ppm) / 1_000_000
}

async fn outcome(
    n: &Node,
    rx: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
    id: B256,
) -> NodeEvent {
    let _ = n;
    wait_for(rx, |e| matches!(e, NodeEvent::PaymentSucceeded { id: i, .. } | NodeEvent::PaymentFailed { id: i, .. } if *i == id)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_pay_each_other_through_the_hub_with_exact_fees() {
    let n = setup(true).await;
    let before = n.balances().await;
    let mut ev = n.alice.subscribe();
    let mut hub_ev = n.hub.subscribe();
    let amount = ETH / 10;
    let inv = n
        .bob
        .create_invoice(Amount(amount), 600, n.hub.address())
        .await
        .unwrap();
    let text = inv.encode();
    assert_eq!(
        Invoice::decode(&text).unwrap(),
        inv,
        "an invoice survives copy and paste"
    );
    let id = B256::repeat_byte(1);
    let rec = n
        .alice
        .pay(&Invoice::decode(&text).unwrap(), id)
        .await
        .unwrap();
    assert_eq!(
        rec.fee(),
        Amount(fee(amount)),
        "the payer pays exactly the hub's policy"
    );
    let got = outcome(&n.alice, &mut ev, id).await;
    // What the hub said meanwhile, shown only if the payment failed (diagnostics).
    let mut said = Vec::new();
    if !matches!(got, NodeEvent::PaymentSucceeded { .. }) {
        while let Ok(e) = hub_ev.try_recv() {
            said.push(e);
        }
    }
    assert_eq!(
        got,
        NodeEvent::PaymentSucceeded {
            id,
            fee: Amount(fee(amount))
        },
        "the hub said: {said:#?}"
    );
    let earned = wait_for(&mut hub_ev, |e| matches!(e, NodeEvent::Forwarded { .. })).await;
    assert_eq!(
        earned,
        NodeEvent::Forwarded {
            in_channel: n.ch[0],
            out_channel: n.ch[1],
            fee: Amount(fee(amount))
        }
    );
    n.settled().await;
    let after = n.balances().await;
    let f = fee(amount);
    assert_eq!(
        after[0],
        [
            Amount(before[0][0].0 - amount - f),
            Amount(before[0][1].0 + amount + f)
        ]
    );
    assert_eq!(
        after[1],
        [
            Amount(before[1][0].0 + amount),
            Amount(before[1][1].0 - amount)
        ]
    );
    assert!(
        matches!(n.alice.payment(id).unwrap().unwrap().status, PaymentStatus::Succeeded { preimage } if preimage.hashlock() == inv.hashlock)
    );

    // Paying the same id again pays nothing more.
    let again = n.alice.pay(&inv, id).await.unwrap();
    assert!(matches!(again.status, PaymentStatus::Succeeded { .. }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        n.balances().await,
        after,
        "a repeated payment id never pays twice"
    );

    // And back: bob pays alice.
    let mut bev = n.bob.subscribe();
    let inv2 = n
        .alice
        .create_invoice(Amount(ETH / 20), 600, n.hub.address())
        .await
        .unwrap();
    let id2 = B256::repeat_byte(2);
    n.bob.pay(&inv2, id2).await.unwrap();
    assert!(matches!(
        outcome(&n.bob, &mut bev, id2).await,
        NodeEvent::PaymentSucceeded { .. }
    ));
    n.settled().await;
    let back = n.balances().await;
    assert_eq!(back[0][0], Amount(after[0][0].0 + ETH / 20));
    assert_eq!(back[1][0], Amount(after[1][0].0 - ETH / 20 - fee(ETH / 20)));
    // Conservation across the hub: what it holds in both channels grew by exactly its fees.
    let hub_total = |b: [[Amount; 2]; 2]| b[0][1].0 + b[1][1].0;
    assert_eq!(hub_total(back), hub_total(before) + f + fee(ETH / 20));
    n.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_reason_reaches_the_payer_and_nothing_moves() {
    let n = setup(true).await;
    let before = n.balances().await;
    let mut ev = n.alice.subscribe();
    let now = n.clock.now().0;
    let good = |amount: u128| HtlcPlan {
        sent: Amount(amount + fee(amount)),
        expiry: Expiry(now + 7200 + 3600),
        next: NextHop {
            amount: Amount(amount),
            expiry: Expiry(now + 7200),
        },
    };
    let amount = ETH / 100;
    let mut k = 10u8;
    let mut expect = async |inv: &Invoice, plan: HtlcPlan, reason: FailureReason| {
        k += 1;
        let id = B256::repeat_byte(k);
        n.alice.pay_planned(inv, id, plan).await.unwrap();
        assert_eq!(
            outcome(&n.alice, &mut ev, id).await,
            NodeEvent::PaymentFailed {
                id,
                reason: Some(reason)
            },
            "{reason:?}"
        );
        assert_eq!(
            n.alice.payment(id).unwrap().unwrap().status,
            PaymentStatus::Failed { reason }
        );
    };
    let inv = n
        .bob
        .create_invoice(Amount(amount), 600, n.hub.address())
        .await
        .unwrap();
    // Fee one wei short.
    let mut p = good(amount);
    p.sent = Amount(p.sent.0 - 1);
    expect(&inv, p, FailureReason::FeeInsufficient).await;
    // Leaves the hub less than its expiry delta.
    let mut p = good(amount);
    p.expiry = Expiry(p.next.expiry.0 + 3599);
    expect(&inv, p, FailureReason::IncorrectExpiryDelta).await;
    // Outgoing expiry too close to claim on chain.
    let mut p = good(amount);
    p.next.expiry = Expiry(now + 60);
    p.expiry = Expiry(now + 60 + 3600);
    expect(&inv, p, FailureReason::ExpiryTooSoon).await;
    // Outgoing expiry beyond the hub's horizon.
    let mut p = good(amount);
    p.next.expiry = Expiry(now + 30 * 24 * 3600);
    p.expiry = Expiry(p.next.expiry.0 + 3600);
    expect(&inv, p, FailureReason::ExpiryTooFar).await;
    // Below the hub's minimum HTLC.
    let small = n
        .bob
        .create_invoice(Amount(999), 600, n.hub.address())
        .await
        .unwrap();
    expect(&small, good(999), FailureReason::AmountBelowMinimum).await;
    // An unknown next peer: an invoice of someone with no channel with the hub.
    let stranger = Keys::from_bytes([0x77; 32]).unwrap().address();
    let mut ghost = inv.clone();
    ghost.payee = stranger;
    ghost.hashlock = htlc::Preimage([9; 32]).hashlock();
    expect(&ghost, good(amount), FailureReason::UnknownNextPeer).await;
    // The payee does not know the payment.
    let mut fake = inv.clone();
    fake.hashlock = htlc::Preimage([8; 32]).hashlock();
    expect(&fake, good(amount), FailureReason::IncorrectPaymentDetails).await;
    // Underpaying the invoice.
    let mut p = good(amount - 10_000);
    p.next.amount = Amount(amount - 10_000);
    expect(&inv, p, FailureReason::IncorrectPaymentDetails).await;
    // The invoice expired (by the payee's clock: all clocks move together here).
    let short = n
        .bob
        .create_invoice(Amount(amount), 5, n.hub.address())
        .await
        .unwrap();
    n.clock.advance(10);
    let now2 = n.clock.now().0;
    let p = HtlcPlan {
        sent: Amount(amount + fee(amount)),
        expiry: Expiry(now2 + 7200 + 3600),
        next: NextHop {
            amount: Amount(amount),
            expiry: Expiry(now2 + 7200),
        },
    };
    expect(&short, p, FailureReason::FinalExpiryTooSoon).await;
    n.settled().await;
    assert_eq!(n.balances().await, before, "failed payments move nothing");
    n.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_refuses_to_forward_more_than_it_holds() {
    let n = setup(true).await;
    // Alice tops up so she could pay more than the hub's collateral toward bob.
    n.alice.top_up(n.ch[0], Amount(2 * ETH)).await.unwrap();
    for node in [&n.hub, &n.alice] {
        wait_state(node, n.ch[0], |s| s.state.balances[0] == Amount(3 * ETH)).await;
    }
    let before = n.balances().await;
    let mut ev = n.alice.subscribe();
    let amount = COLLATERAL + 1;
    let inv = n
        .bob
        .create_invoice(Amount(amount), 600, n.hub.address())
        .await
        .unwrap();
    let id = B256::repeat_byte(0x33);
    n.alice.pay(&inv, id).await.unwrap();
    assert_eq!(
        outcome(&n.alice, &mut ev, id).await,
        NodeEvent::PaymentFailed {
            id,
            reason: Some(FailureReason::TemporaryChannelFailure)
        }
    );
    n.settled().await;
    assert_eq!(n.balances().await, before);
    n.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_htlc_the_payee_never_reveals_expires_and_is_refunded_on_both_sides() {
    let n = setup(false).await;
    let before = n.balances().await;
    let mut ev = n.alice.subscribe();
    let inv = n
        .bob
        .create_invoice(Amount(ETH / 10), 600, n.hub.address())
        .await
        .unwrap();
    let id = B256::repeat_byte(0x44);
    let mut bob_ev = n.bob.subscribe();
    n.alice.pay(&inv, id).await.unwrap();
    // The HTLC reaches bob, who decides to hold it (before the clock moves: later, he would
    // rightly refuse it as too close to its expiry).
    wait_state(&n.bob, n.ch[1], |s| s.state.locks.len() == 1).await;
    let held = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match bob_ev.recv().await {
                Ok(NodeEvent::Holding { hashlock }) if hashlock == inv.hashlock => break,
                Ok(_) => {}
                Err(e) => panic!("bob's events: {e}"),
            }
        }
    })
    .await;
    assert!(held.is_ok(), "bob never held the HTLC");
    // Alice's view of her lock (the hub's countersignature may still be on its way to her).
    wait_state(&n.alice, n.ch[0], |s| s.state.locks.len() == 1).await;
    // Past the hub's outgoing expiry (final delta 7200 s): the hub takes its lock back, bob
    // co-signs, and the hub fails the incoming one back.
    n.clock.advance(7200 + 60);
    assert_eq!(
        outcome(&n.alice, &mut ev, id).await,
        NodeEvent::PaymentFailed {
            id,
            reason: Some(FailureReason::TemporaryChannelFailure)
        }
    );
    n.settled().await;
    assert_eq!(n.balances().await, before, "refunded on both channels");
    n.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_does_not_stop_the_others_payments() {
    let n = setup(true).await;
    let addr = {
        // A fresh listener of the same hub for the attacker (any of its endpoints would do).
        n.hub.listen(loopback()).unwrap()
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let k = Keys::from_bytes([0x66; 32]).unwrap();
            let ep = hub::transport::client(loopback()).unwrap();
            let mut sent = 0u64;
            if let Ok(mut s) =
                hub::transport::connect(&ep, addr, &k, None, hub::wire::DEFAULT_MAX_FRAME).await
            {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let junk = [0, 0, 0, 4, hub::wire::WIRE_VERSION, 0xff, 0xfe, 0xfd];
                    if s.send.write_all(&junk).await.is_err() {
                        break;
                    }
                    sent += 1;
                    if sent.is_multiple_of(64) {
                        tokio::task::yield_now().await;
                    }
                }
            }
            sent
        })
    };
    let mut ev = n.alice.subscribe();
    // What the hub and the payee said meanwhile, shown if a payment fails (diagnostics only).
    let mut hub_said = n.hub.subscribe();
    let mut bob_said = n.bob.subscribe();
    let mut ok = 0;
    let mut failed = Vec::new();
    for i in 0..10u8 {
        let inv = n
            .bob
            .create_invoice(Amount(ETH / 1000), 600, n.hub.address())
            .await
            .unwrap();
        let id = B256::repeat_byte(0x80 + i);
        n.alice.pay(&inv, id).await.unwrap();
        match outcome(&n.alice, &mut ev, id).await {
            NodeEvent::PaymentSucceeded { .. } => ok += 1,
            other => failed.push(other),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let junk = flood.await.unwrap();
    assert!(junk > 100, "the attacker really flooded ({junk} frames)");
    let mut said = Vec::new();
    while let Ok(e) = hub_said.try_recv() {
        said.push(format!("hub: {e:?}"));
    }
    while let Ok(e) = bob_said.try_recv() {
        said.push(format!("bob: {e:?}"));
    }
    assert_eq!(
        ok, 10,
        "every honest payment succeeded under the flood; failed: {failed:?}; events: {said:#?}"
    );
    n.shutdown();
}

/// `hub bench`'s workload with several payments in flight per payer (issue 17), beside 20 idle
/// peers (the real `hub idle-peers` process, each opening a channel the hub accepts): every
/// payment succeeds and the report's counters are filled. The figures themselves are the
/// README's (speed is measured by the benchmark, never asserted here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_workload_with_payments_in_flight_pays_every_one() {
    let dir = TempDir::new("bench-smoke");
    let r = hub::localnet::bench(hub::localnet::BenchOptions {
        payers: 2,
        in_flight: 4,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        amount: Amount(1_000_000),
        dir: dir.0.clone(),
        flood: 0,
        idle: 20,
        idle_exe: Some(env!("CARGO_BIN_EXE_hub").into()),
        hub_cpu: true,
    })
    .await
    .unwrap();
    assert!(r.paid > 0, "{r:?}");
    assert_eq!(r.failed, 0, "{r:?}");
    assert_eq!((r.in_flight, r.idle), (4, 20));
    assert!(r.updates_per_payment > 0.0 && r.cpu_us_per_payment > 0.0 && r.rss_kib > 0);
    assert!(
        r.hub_cpu_us_per_payment > 0.0 && r.hub_cpu_us_per_payment < r.cpu_us_per_payment,
        "the hub's threads are some of the process's: {r:?}"
    );
    // Every payment syncs at its payer and payee too, so all nodes together sync more than
    // the hub alone.
    assert!(
        r.syncs_per_payment > 0.0 && r.all_syncs_per_payment > r.syncs_per_payment,
        "the hub's syncs are some of all nodes': {r:?}"
    );
}
