//! Crash recovery of the real `hub` binary in a dispute (issue 14, real anvil): a peer closes
//! on chain with a stale state; the hub challenges, waits out the window and pays the dispute
//! out. The hub is aborted right after handing each transaction to the node (before its
//! receipt), just before and just after each one, and SIGKILLed while the window is open; it
//! is restarted on the same data directory each time. In the end the chain must show the
//! challenge and the payout each sent exactly once (the hub's account used exactly two
//! nonces), and the payout exactly the latest co-signed balances.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use alloy::providers::Provider;
use contracts::bindings::Adjudicator::AdjudicatorEvents;
use contracts::{Devnet, EventKind, EventWatcher};
use htlc::forward::MIN_CHALLENGE_DURATION_SECS;
use htlc::sig::Keys;
use htlc::{Amount, ChannelId};
use hub::node::{Node, NodeOptions};
use hub::store::Store;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;
use common::{HubProc, TempDir, start_hub};

const ETH: u128 = 1_000_000_000_000_000_000;
const PAID: u128 = ETH / 100;

fn write_config(dir: &Path, net: &Devnet) -> PathBuf {
    common::write_hub_config(
        dir,
        net,
        "chain_poll_ms = 50\nchain_retry_secs = 1\nclose_grace_secs = 1\n",
    )
}

/// The channel's disputed versions and payouts, from the adjudicator's events.
async fn history(net: &Devnet, id: ChannelId) -> (Vec<u64>, Vec<(u128, u128)>) {
    let mut w = EventWatcher::new(net.provider().clone(), net.deployment(), 0);
    let (mut disputes, mut payouts) = (Vec::new(), Vec::new());
    for ev in w.poll().await.unwrap() {
        if let EventKind::Adjudicator(e) = ev.kind {
            match e {
                AdjudicatorEvents::Disputed(d) if d.channelId == id.0 => disputes.push(d.version),
                AdjudicatorEvents::Concluded(c) if c.channelId == id.0 => {
                    payouts.push((c.toA.to::<u128>(), c.toB.to::<u128>()))
                }
                _ => {}
            }
        }
    }
    (disputes, payouts)
}

/// Keep the hub running (restart it whenever it is gone) until `done` holds; returns the
/// number of restarts.
async fn keep_up<F, Fut>(cfg: &Path, hub: &mut HubProc, mut done: F) -> u32
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut restarts = 0;
    for _ in 0..600 {
        if done().await {
            // Done on chain; the hub may have crashed right after sending: it must come back
            // and stay up.
            tokio::time::sleep(Duration::from_millis(300)).await;
            if !hub.exited() {
                return restarts;
            }
        }
        if hub.exited() {
            *hub = start_hub(cfg, None);
            restarts += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the flow did not complete");
}

/// One case: crash the hub at `crash_at`, or SIGKILL it while the window is open.
async fn run_case(crash_at: Option<&str>, kill_in_window: bool) -> u32 {
    let case = format!("crash at {crash_at:?}, kill in window {kill_in_window}");
    let net = Devnet::start().await.unwrap();
    let dir = TempDir::new("crash-dispute-hub");
    let pdir = TempDir::new("crash-dispute-peer");
    let cfg = write_config(&dir.0, &net);
    let mut hub = start_hub(&cfg, crash_at);
    let hub_addr = Keys::from_signer(net.signer(1).unwrap()).address();
    // The peer opens, funds and pays the hub once, keeping the co-signed opening state.
    let client = net.client(2).await.unwrap();
    client.set_poll_interval(Duration::from_millis(10));
    let peer = Node::start(
        Keys::from_signer(net.signer(2).unwrap()),
        Store::open(&pdir.0).unwrap(),
        NodeOptions {
            chain_id: net.chain_id(),
            adjudicator: net.deployment().adjudicator,
            chain: Some(client.clone()),
            chain_poll: Duration::from_millis(50),
            challenge_duration: MIN_CHALLENGE_DURATION_SECS,
            ..NodeOptions::default()
        },
    )
    .unwrap();
    peer.connect(hub.addr, Some(hub_addr)).await.unwrap();
    let id = peer.open_channel(hub_addr, Amount(ETH)).await.unwrap();
    let stale = peer.channel(id).await.unwrap();
    let params = peer.channel_record(id).unwrap().snapshot.params().clone();
    peer.fund(id).await.unwrap();
    // The hub may read the deposit a moment after the peer: it refuses the transfer as not
    // yet funded, says `Funded` once it sees it, and the peer proposes it again.
    peer.transfer(id, Amount(PAID)).await.unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while peer.channel(id).await.unwrap().state.version < 1 {
        assert!(
            std::time::Instant::now() < until,
            "the transfer is never co-signed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        peer.channel(id).await.unwrap().state.balances[1],
        Amount(PAID)
    );
    peer.shutdown();
    drop(peer);
    // The stale close.
    client
        .close(&params, &stale.state, &stale.sigs)
        .await
        .unwrap();
    let reader = net.client(0).await.unwrap();
    let mut restarts = keep_up(&cfg, &mut hub, || async {
        reader.channel(id).await.unwrap().version == 1
    })
    .await;
    if kill_in_window {
        let _ = Command::new("kill")
            .args(["-9", &hub.child.id().to_string()])
            .status();
    }
    net.increase_time(MIN_CHALLENGE_DURATION_SECS + 5)
        .await
        .unwrap();
    restarts += keep_up(&cfg, &mut hub, || async {
        reader.channel(id).await.unwrap().concluded
    })
    .await;
    // The restarted hub records the payout it made.
    tokio::time::sleep(Duration::from_millis(700)).await;
    drop(hub);
    let record = common::hub_record(&dir.0.join("data"), id).expect("the hub knows the channel");
    assert!(record.concluded, "the hub recorded the payout ({case})");
    assert_eq!(
        record.snapshot.latest().state.balances,
        [Amount(ETH - PAID), Amount(PAID)]
    );
    let (disputes, payouts) = history(&net, id).await;
    assert_eq!(
        disputes,
        vec![0, 1],
        "one stale close, one challenge ({case})"
    );
    assert_eq!(
        payouts,
        vec![(ETH - PAID, PAID)],
        "paid out once, the latest balances ({case})"
    );
    assert_eq!(
        net.provider()
            .get_transaction_count(hub_addr)
            .await
            .unwrap(),
        2,
        "the hub sent the challenge and the payout, each exactly once ({case})"
    );
    assert_eq!(reader.holdings(id).await.unwrap(), Amount::ZERO, "{case}");
    restarts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_crashes_around_its_dispute_transactions_and_finishes_the_dispute() {
    // Hit 1 of each point is the challenge, hit 2 the payout.
    for point in ["tx_sent", "before_tx", "after_tx"] {
        for n in [1, 2] {
            let restarts = run_case(Some(&format!("{point}:{n}")), false).await;
            assert_eq!(restarts, 1, "{point}:{n} must have crashed the hub once");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_sigkilled_while_the_window_is_open_pays_the_dispute_out_after_restart() {
    let restarts = run_case(None, true).await;
    assert_eq!(restarts, 1);
}
