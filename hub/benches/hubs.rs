//! Payments across 1, 2 and 3 hubs, and gossip across 20 hubs, with real nodes (each its own
//! RocksDB) over real QUIC on loopback, in one process, without a chain (channels count as
//! funded at once, announcements are believed on their signatures). Prints a table.
//!
//! `cargo bench -p hub --bench hubs` (release build). Figures are for the machine it runs on;
//! the README records them with the machine.
#![allow(clippy::expect_used, clippy::panic, missing_docs)]

use alloy::primitives::B256;
use htlc::forward::ForwardPolicy;
use htlc::sig::Keys;
use htlc::{Amount, ChannelId};
use hub::events::NodeEvent;
use hub::node::{Node, NodeOptions};
use hub::store::Store;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const DEPOSIT: u128 = 1_000_000_000_000_000_000;
const PAYMENTS: usize = 300;
const GOSSIP_HUBS: usize = 20;

fn policy(i: u128) -> ForwardPolicy {
    ForwardPolicy {
        base_fee: Amount(1_000 * i),
        fee_ppm: 100,
        ..ForwardPolicy::default()
    }
}

fn start(dir: &Path, name: &str, hub: Option<u128>) -> (Node, SocketAddr) {
    let mut o = NodeOptions::default();
    if let Some(i) = hub {
        o.announce = true;
        o.policy = policy(i);
    }
    let store = Store::open(&dir.join(name)).expect("a fresh store");
    let keys = Keys::from_signer(&alloy::signers::local::PrivateKeySigner::random());
    let n = Node::start(keys, store, o).expect("the node starts");
    let addr = n
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("a loopback port");
    (n, addr)
}

/// `a` opens a channel with `b` and gives it half: both sides can pay. Announced if both are
/// hubs.
async fn channel(a: &Node, b: &Node, b_addr: SocketAddr, announce: bool) -> ChannelId {
    a.connect(b_addr, Some(b.address())).await.expect("connect");
    let id = a
        .open_channel(b.address(), Amount(2 * DEPOSIT))
        .await
        .expect("open");
    a.transfer(id, Amount(DEPOSIT)).await.expect("transfer");
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.channel(id).await.map(|s| s.state.balances[1]) != Some(Amount(DEPOSIT)) {
        assert!(Instant::now() < deadline, "the channel never settled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if announce {
        a.announce_channel(id).await.expect("announce");
        b.announce_channel(id).await.expect("announce");
    }
    id
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A line payer — h hubs — payee; `PAYMENTS` payments one after the other.
async fn line(h: usize) -> (Duration, Duration, f64) {
    let dir = tempdir(&format!("line{h}"));
    let mut hubs = Vec::new();
    for i in 0..h {
        hubs.push(start(&dir, &format!("hub{i}"), Some(i as u128 + 1)));
    }
    for i in 0..h.saturating_sub(1) {
        channel(&hubs[i].0, &hubs[i + 1].0, hubs[i + 1].1, true).await;
    }
    let (payer, _) = start(&dir, "payer", None);
    let (payee, _) = start(&dir, "payee", None);
    channel(&payer, &hubs[0].0, hubs[0].1, false).await;
    channel(&payee, &hubs[h - 1].0, hubs[h - 1].1, false).await;
    // The payer's router knows every hub-to-hub channel and policy.
    let deadline = Instant::now() + Duration::from_secs(30);
    while payer.gossip().len() != h - 1
        || payer
            .gossip()
            .values()
            .any(|c| c.policies.iter().any(Option::is_none))
    {
        assert!(Instant::now() < deadline, "gossip never reached the payer");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last = hubs[h - 1].0.address();
    let mut lat = Vec::with_capacity(PAYMENTS);
    let mut events = payer.subscribe();
    let t0 = Instant::now();
    for k in 0..PAYMENTS {
        let inv = payee
            .create_invoice(Amount(1_000_000 + k as u128), 3600, last)
            .await
            .expect("invoice");
        let id = B256::from(alloy::primitives::U256::from(k + 1));
        let start = Instant::now();
        payer.pay(&inv, id).await.expect("pay");
        loop {
            match events.recv().await {
                Ok(NodeEvent::PaymentSucceeded { id: p, .. }) if p == id => break,
                Ok(NodeEvent::PaymentFailed { id: p, reason }) if p == id => {
                    panic!("payment {k} failed: {reason:?}")
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("events: {e}"),
            }
        }
        lat.push(start.elapsed());
    }
    let per_sec = PAYMENTS as f64 / t0.elapsed().as_secs_f64();
    lat.sort();
    for (n, _) in &hubs {
        n.shutdown();
    }
    payer.shutdown();
    payee.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    (pct(&lat, 0.5), pct(&lat, 0.99), per_sec)
}

/// 20 hubs in a line (19 hops from one end to the other): the time from a policy change at
/// one end until every hub holds it.
async fn gossip() -> Duration {
    let dir = tempdir("gossip");
    let mut hubs = Vec::new();
    for i in 0..GOSSIP_HUBS {
        hubs.push(start(&dir, &format!("hub{i}"), Some(i as u128 + 1)));
    }
    let mut ids = Vec::new();
    for i in 0..GOSSIP_HUBS - 1 {
        ids.push(channel(&hubs[i].0, &hubs[i + 1].0, hubs[i + 1].1, true).await);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while hubs
        .iter()
        .any(|(n, _)| n.gossip().len() != GOSSIP_HUBS - 1)
    {
        assert!(Instant::now() < deadline, "gossip never converged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut changed = policy(1);
    changed.base_fee = Amount(7);
    let first = ids[0];
    let origin = hubs[0].0.address();
    let holds = |n: &Node| {
        n.gossip().get(&first).is_some_and(|c| {
            c.policies
                .iter()
                .flatten()
                .any(|u| u.node == origin && u.policy == changed)
        })
    };
    let t0 = Instant::now();
    hubs[0].0.update_policy(changed).await.expect("update");
    while !hubs.iter().all(|(n, _)| holds(n)) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the update never arrived"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let took = t0.elapsed();
    for (n, _) in &hubs {
        n.shutdown();
    }
    let _ = std::fs::remove_dir_all(&dir);
    took
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vhub-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep it short then.
    let quick =
        std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    if quick {
        println!("hubs bench: run with `cargo bench -p hub --bench hubs`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        println!("| hubs on the route | p50 | p99 | payments/s (one at a time) |");
        println!("|---:|---:|---:|---:|");
        for h in 1..=3 {
            let (p50, p99, per_sec) = line(h).await;
            println!(
                "| {h} | {:.2} ms | {:.2} ms | {per_sec:.0} |",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
        }
        let took = gossip().await;
        println!(
            "\npolicy change reaching all {GOSSIP_HUBS} hubs of a line (19 hops): {:.1} ms",
            took.as_secs_f64() * 1e3
        );
    });
}
