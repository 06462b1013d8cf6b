//! Crash recovery of the real `hub` binary in the on-chain flows (real anvil): the hub adds
//! collateral to a channel a peer funds, and pays the channel out when it closes. It is aborted
//! just before and just after each of those transactions, or SIGKILLed at random moments, and
//! restarted on the same data directory. In the end the chain must show exactly one deposit of
//! each kind (never two), the channel paid out once with the final balances both sides agree on,
//! and nothing left in the adjudicator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use contracts::bindings::Adjudicator::AdjudicatorEvents;
use contracts::{Devnet, EventKind, EventWatcher};
use htlc::sig::Keys;
use htlc::{Amount, ChannelId};
use hub::node::{Node, NodeOptions};
use hub::store::Store;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod common;
use common::{HubProc, TempDir, hub_record, start_hub};

const ETH: u128 = 1_000_000_000_000_000_000;
const COLLATERAL: u128 = ETH / 2;
const TRANSFERS: u128 = 5;
const STEP: u128 = ETH / 100;

fn write_config(dir: &Path, net: &Devnet) -> PathBuf {
    common::write_hub_config(
        dir,
        net,
        &format!(
            "collateral = {COLLATERAL}\nchain_poll_ms = 50\nchain_retry_secs = 1\nclose_grace_secs = 1\n"
        ),
    )
}

async fn peer_node(net: &Devnet, dir: &TempDir) -> Node {
    let client = net.client(2).await.unwrap();
    client.set_poll_interval(Duration::from_millis(10));
    let opts = NodeOptions {
        chain_id: net.chain_id(),
        adjudicator: net.deployment().adjudicator,
        chain: Some(client),
        auto_settle: false,
        chain_poll: Duration::from_millis(50),
        chain_retry: Duration::from_millis(500),
        challenge_duration: htlc::forward::MIN_CHALLENGE_DURATION_SECS,
        ..NodeOptions::default()
    };
    Node::start(
        Keys::from_signer(net.signer(2).unwrap()),
        Store::open(&dir.0).unwrap(),
        opts,
    )
    .unwrap()
}

/// Every `Deposited` and `Concluded` event of the channel since genesis: (deposits, payouts).
async fn history(net: &Devnet, id: ChannelId) -> (Vec<u128>, Vec<(u128, u128)>) {
    let mut w = EventWatcher::new(net.provider().clone(), net.deployment(), 0);
    let mut deposits = Vec::new();
    let mut payouts = Vec::new();
    for ev in w.poll().await.unwrap() {
        if let EventKind::Adjudicator(e) = ev.kind {
            match e {
                AdjudicatorEvents::Deposited(d) if d.channelId == id.0 => {
                    deposits.push(d.amount.to::<u128>())
                }
                AdjudicatorEvents::Concluded(c) if c.channelId == id.0 => {
                    payouts.push((c.toA.to::<u128>(), c.toB.to::<u128>()))
                }
                _ => {}
            }
        }
    }
    (deposits, payouts)
}

/// Drive open → fund → (hub adds collateral) → transfers → close → (hub pays out), restarting
/// the hub whenever it is gone. Returns the channel, the last hub process and the restarts.
async fn drive(net: &Devnet, cfg: &Path, peer: &Node, first: HubProc) -> (ChannelId, HubProc, u32) {
    let client = net.client(0).await.unwrap();
    let hub_addr = Keys::from_signer(net.signer(1).unwrap()).address();
    let mut hub = first;
    let mut restarts = 0;
    let mut connected = false;
    let mut id: Option<ChannelId> = None;
    let mut funded = false;
    let mut sent = 0;
    let mut closing = false;
    for _round in 0..1500 {
        if hub.exited() {
            hub = start_hub(cfg, None);
            restarts += 1;
            connected = false;
        }
        if !connected {
            connected = peer.connect(hub.addr, Some(hub_addr)).await.is_ok();
            if !connected {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        let step = Duration::from_millis(800);
        match id {
            None => {
                match tokio::time::timeout(step, peer.open_channel(hub_addr, Amount(ETH))).await {
                    Ok(Ok(c)) => id = Some(c),
                    _ => {
                        id = peer.channel_ids().first().copied();
                        connected = !hub.exited();
                    }
                }
            }
            Some(c) if !funded => {
                // Retried after a hub crash: never deposits twice (expected-held guard).
                if let Ok(Ok(())) = tokio::time::timeout(step, peer.fund(c)).await {
                    funded = true;
                }
            }
            Some(c) => {
                let s = peer.channel(c).await.unwrap();
                if s.state.balances[1] < Amount(COLLATERAL) && sent == 0 {
                    // Waiting for the hub's collateral to be credited.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                } else if sent < TRANSFERS {
                    if peer.transfer(c, Amount(STEP)).await.is_ok() {
                        sent += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                } else if !s.state.is_final {
                    if !closing && peer.close(c).await.is_ok() {
                        closing = true;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                } else if client.channel(c).await.unwrap().concluded {
                    // Let the hub record the payout, then return with it alive.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if !hub.exited() {
                        return (c, hub, restarts);
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        if hub.exited() {
            connected = false;
        }
    }
    panic!("flow did not complete (id {id:?}, funded {funded}, sent {sent})");
}

async fn run_case(crash_at: Option<&str>, kill_after_ms: Option<u64>) -> u32 {
    let net = Devnet::start().await.unwrap();
    let dir = TempDir::new("crash-chain-hub");
    let pdir = TempDir::new("crash-chain-peer");
    let cfg = write_config(&dir.0, &net);
    let hub = start_hub(&cfg, crash_at);
    if let Some(ms) = kill_after_ms {
        let pid = hub.child.id();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        });
    }
    let peer = peer_node(&net, &pdir).await;
    let (id, hub, restarts) = drive(&net, &cfg, &peer, hub).await;
    drop(hub);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let case = format!("crash at {crash_at:?}, kill at {kill_after_ms:?}");

    let ours = peer.channel(id).await.unwrap();
    let theirs = hub_record(&dir.0.join("data"), id).expect("hub knows the channel");
    assert_eq!(
        &ours,
        theirs.snapshot.latest(),
        "hub and peer agree ({case})"
    );
    assert!(theirs.concluded, "the hub recorded the payout ({case})");
    let a = ETH - TRANSFERS * STEP;
    let b = COLLATERAL + TRANSFERS * STEP;
    assert_eq!(ours.state.balances, [Amount(a), Amount(b)], "{case}");

    let (deposits, payouts) = history(&net, id).await;
    assert_eq!(
        deposits,
        vec![ETH, COLLATERAL],
        "one deposit each, never twice ({case})"
    );
    assert_eq!(
        payouts,
        vec![(a, b)],
        "paid out once, the final balances ({case})"
    );
    let on_chain = net.client(0).await.unwrap().channel(id).await.unwrap();
    assert_eq!(on_chain.holdings, Amount::ZERO, "{case}");
    peer.shutdown();
    restarts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_crashes_around_its_chain_transactions_and_recovers() {
    // Hit 1 of each point is the collateral deposit, hit 2 the cooperative close.
    for point in ["before_tx", "after_tx"] {
        for n in [1, 2] {
            let restarts = run_case(Some(&format!("{point}:{n}")), None).await;
            assert_eq!(restarts, 1, "{point}:{n} must have crashed the hub once");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_sigkilled_during_the_chain_flow_recovers() {
    let mut restarts = 0;
    for ms in [300, 900, 1500] {
        restarts += run_case(None, Some(ms)).await;
    }
    assert!(restarts >= 1, "at least one kill landed during the flow");
}
