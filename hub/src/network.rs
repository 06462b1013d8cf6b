//! The network harness (`hub net`, issue 16): a topology of hubs and peers on a local chain,
//! every channel funded, a payment workload routed across the hubs, and at the end every
//! channel closed with each on-chain payout checked against its final co-signed state.
//!
//! Every node is a full [`Node`] with its own RocksDB, talking real QUIC over loopback, in this
//! one process (separate processes are the next step), on anvil with the contracts deployed.
//!
//! ```toml
//! shape = "ring"          # line | ring | star | random | edges (then list `edges`)
//! hubs = 4
//! peers_per_hub = 1       # clients of each hub (payers and payees)
//! # edges = [[0, 1], [1, 2]]   # with shape = "edges": hub i opens a channel to hub j
//! # extra_edges = 2         # with shape = "random": edges beyond a spanning tree
//! seed = 7                # for random shapes and the workload
//! deposit = "1000000000000000000"   # each opener's deposit and the other side's collateral, wei
//! payments = 50
//! max_amount = "1000000000000000"   # amounts drawn up to it, wei (at least 1 gwei)
//! concurrency = 4         # payments in flight at once
//! ```

use crate::events::NodeEvent;
use crate::node::{Node, NodeOptions};
use crate::payments::PaymentStatus;
use crate::store::Store;
use alloy::primitives::B256;
use htlc::forward::ForwardPolicy;
use htlc::sig::Keys;
use htlc::{Amount, ChannelId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A topology file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// How the hubs are joined.
    pub shape: Shape,
    /// Number of hubs.
    pub hubs: usize,
    /// Clients per hub.
    #[serde(default = "one")]
    pub peers_per_hub: usize,
    /// Hub-to-hub channels (`shape = "edges"`): hub `i` opens to hub `j`.
    #[serde(default)]
    pub edges: Vec<[usize; 2]>,
    /// Edges beyond a spanning tree (`shape = "random"`).
    #[serde(default)]
    pub extra_edges: usize,
    /// Seed of the random shape and the workload.
    #[serde(default)]
    pub seed: u64,
    /// Each opener's deposit, and the other side's collateral, wei.
    #[serde(default = "default_deposit", with = "crate::config::wei")]
    pub deposit: u128,
    /// Payments in the workload.
    #[serde(default = "default_payments")]
    pub payments: usize,
    /// Largest payment, wei.
    #[serde(default = "default_max_amount", with = "crate::config::wei")]
    pub max_amount: u128,
    /// Payments in flight at once.
    #[serde(default = "one")]
    pub concurrency: usize,
}

fn one() -> usize {
    1
}
fn default_deposit() -> u128 {
    1_000_000_000_000_000_000
}
fn default_payments() -> usize {
    50
}
fn default_max_amount() -> u128 {
    1_000_000_000_000_000
}

/// How the hubs are joined.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// 0 – 1 – … – n−1.
    Line,
    /// A line closed into a ring.
    Ring,
    /// Hub 0 joined to every other.
    Star,
    /// A random spanning tree plus `extra_edges` random edges.
    Random,
    /// Exactly the `edges` listed.
    Edges,
}

/// Why a topology cannot run.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The file does not describe a network we can build.
    #[error("topology: {0}")]
    Invalid(String),
    /// A node failed.
    #[error(transparent)]
    Node(#[from] crate::error::NodeError),
    /// The chain failed.
    #[error("chain: {0}")]
    Chain(#[from] contracts::ChainError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// A payout on chain differs from the final co-signed state.
    #[error("channel {0}: {1}")]
    Payout(ChannelId, String),
}

impl Topology {
    /// Read a topology from TOML.
    pub fn parse(s: &str) -> Result<Topology, NetError> {
        let t: Topology = toml::from_str(s).map_err(|e| NetError::Invalid(e.to_string()))?;
        t.edges()?;
        if t.peers_per_hub == 0 || t.hubs * t.peers_per_hub < 2 {
            return Err(NetError::Invalid("at least two peers in all".into()));
        }
        if t.max_amount < 1_000_000_000 || t.deposit < t.max_amount.saturating_mul(2) {
            return Err(NetError::Invalid(
                "max_amount at least 1 gwei and deposit at least twice max_amount".into(),
            ));
        }
        Ok(t)
    }

    /// The hub-to-hub channels: (opener, acceptor).
    pub fn edges(&self) -> Result<Vec<(usize, usize)>, NetError> {
        let n = self.hubs;
        if n == 0 || n > 200 {
            return Err(NetError::Invalid("1 to 200 hubs".into()));
        }
        let e: Vec<(usize, usize)> = match self.shape {
            Shape::Line => (1..n).map(|i| (i - 1, i)).collect(),
            Shape::Ring if n >= 3 => (0..n).map(|i| (i, (i + 1) % n)).collect(),
            Shape::Ring => (1..n).map(|i| (i - 1, i)).collect(),
            Shape::Star => (1..n).map(|i| (0, i)).collect(),
            Shape::Random => {
                let mut rng = StdRng::seed_from_u64(self.seed);
                let mut e: Vec<(usize, usize)> =
                    (1..n).map(|i| (rng.random_range(0..i), i)).collect();
                let mut tries = 0;
                while e.len() < n - 1 + self.extra_edges && tries < 10 * n * n {
                    tries += 1;
                    let (a, b) = (rng.random_range(0..n), rng.random_range(0..n));
                    if a != b && !e.iter().any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a)) {
                        e.push((a, b));
                    }
                }
                e
            }
            Shape::Edges => self.edges.iter().map(|[a, b]| (*a, *b)).collect(),
        };
        if e.iter().any(|&(a, b)| a >= n || b >= n || a == b) {
            return Err(NetError::Invalid(
                "an edge names a hub that is not there".into(),
            ));
        }
        Ok(e)
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetReport {
    /// Payments tried.
    pub payments: usize,
    /// Payments that succeeded (possibly after retries).
    pub succeeded: usize,
    /// Median and 99th-percentile latency of the succeeded ones, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Fees paid by the payers of succeeded payments, wei.
    pub fees: u128,
    /// Channels closed and paid out on chain exactly as their final states say.
    pub channels_paid_out: usize,
}

struct Member {
    node: Node,
    addr: SocketAddr,
}

/// Build `t` on a fresh local chain in `dir`, run its workload (printing progress when
/// `verbose`), close every channel and check every payout.
pub async fn run(t: &Topology, dir: PathBuf, verbose: bool) -> Result<NetReport, NetError> {
    let edges = t.edges()?;
    let peers = t.hubs * t.peers_per_hub;
    let nodes = t.hubs + peers;
    std::fs::create_dir_all(&dir).map_err(|e| NetError::Invalid(e.to_string()))?;
    let devnet = contracts::Devnet::start_with(contracts::devnet::DevnetOptions {
        accounts: Some(nodes + 1),
        ..Default::default()
    })
    .await?;
    let say = |s: String| {
        if verbose {
            println!("{s}");
        }
    };
    say(format!(
        "chain {} (adjudicator {}); {} hubs, {} hub-to-hub channels, {peers} peers",
        devnet.endpoint(),
        devnet.deployment().adjudicator,
        t.hubs,
        edges.len()
    ));
    let start = async |i: usize, hub: Option<usize>| -> Result<Member, NetError> {
        let client = devnet.client(i).await?;
        client.set_poll_interval(Duration::from_millis(10));
        let mut o = NodeOptions {
            chain_id: devnet.chain_id(),
            adjudicator: devnet.deployment().adjudicator,
            chain: Some(client),
            chain_poll: Duration::from_millis(50),
            chain_retry: Duration::from_millis(500),
            close_grace: Duration::from_secs(1),
            ..NodeOptions::default()
        };
        if let Some(h) = hub {
            o.announce = true;
            o.collateral = Amount(t.deposit);
            o.policy = ForwardPolicy {
                base_fee: Amount(1_000 * (h as u128 + 1)),
                fee_ppm: 100,
                ..ForwardPolicy::default()
            };
        }
        let signer = devnet
            .signer(i)
            .ok_or(NetError::Invalid("no such dev account".into()))?;
        let node = Node::start(
            Keys::from_signer(signer),
            Store::open(&dir.join(format!("node{i}")))?,
            o,
        )?;
        let addr = node.listen(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        Ok(Member { node, addr })
    };
    let mut hubs = Vec::with_capacity(t.hubs);
    for h in 0..t.hubs {
        hubs.push(start(1 + h, Some(h)).await?);
    }
    let mut channels: Vec<(usize, ChannelId)> = Vec::new(); // (opener's node index, id)
    let open = async |a: &Member, b: &Member| -> Result<ChannelId, NetError> {
        a.node.connect(b.addr, Some(b.node.address())).await?;
        let id = a
            .node
            .open_channel(b.node.address(), Amount(t.deposit))
            .await?;
        a.node.fund(id).await?;
        Ok(id)
    };
    for &(a, b) in &edges {
        channels.push((a, open(&hubs[a], &hubs[b]).await?));
    }
    let mut clients = Vec::with_capacity(peers);
    for p in 0..peers {
        let m = start(1 + t.hubs + p, None).await?;
        let hub = p % t.hubs;
        channels.push((t.hubs + p, open(&m, &hubs[hub]).await?));
        clients.push((m, hub));
    }
    let node_of = |i: usize| -> &Node {
        if i < t.hubs {
            &hubs[i].node
        } else {
            &clients[i - t.hubs].0.node
        }
    };
    // Funded (collateral credited) and the map known to every client.
    let deadline = Instant::now() + Duration::from_secs(120);
    for (opener, id) in &channels {
        loop {
            let st = node_of(*opener).channel(*id).await;
            if st.is_some_and(|s| s.state.balances[1] == Amount(t.deposit)) {
                break;
            }
            if Instant::now() > deadline {
                return Err(NetError::Timeout("every channel to be funded"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for (c, _) in &clients {
        loop {
            let g = c.node.gossip();
            if g.len() == edges.len() && g.values().all(|x| x.policies.iter().all(Option::is_some))
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(NetError::Timeout("gossip to reach every client"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    say(format!(
        "{} channels funded; every client knows the {} hub-to-hub channels",
        channels.len(),
        edges.len()
    ));

    // The workload: random payer and payee among the clients, `concurrency` at a time.
    let mut rng = StdRng::seed_from_u64(t.seed ^ 0x5eed);
    let mut report = NetReport {
        payments: t.payments,
        ..NetReport::default()
    };
    let mut latencies = Vec::new();
    let t0 = Instant::now();
    let mut last_print = Instant::now();
    let mut k = 0usize;
    while k < t.payments {
        let batch = t.concurrency.max(1).min(t.payments - k);
        let mut tasks = Vec::with_capacity(batch);
        for _ in 0..batch {
            let from = rng.random_range(0..peers);
            let mut to = rng.random_range(0..peers);
            if to == from {
                to = (to + 1) % peers;
            }
            let amount = rng.random_range(1_000_000_000..=t.max_amount);
            let (payer, payee) = (clients[from].0.node.clone(), clients[to].0.node.clone());
            let hub = hubs[clients[to].1].node.address();
            let id = B256::from(alloy::primitives::U256::from(k + 1));
            k += 1;
            tasks.push(tokio::spawn(async move {
                let inv = payee.create_invoice(Amount(amount), 3600, hub).await.ok()?;
                let started = Instant::now();
                let recs = payer
                    .pay_with_retries(&inv, id, 3, Duration::from_secs(30))
                    .await
                    .ok()?;
                let last = recs.last()?;
                matches!(last.status, PaymentStatus::Succeeded { .. })
                    .then(|| (started.elapsed(), last.fee().0))
            }));
        }
        for task in tasks {
            if let Ok(Some((lat, fee))) = task.await {
                report.succeeded += 1;
                report.fees += fee;
                latencies.push(lat);
            }
        }
        if verbose && (last_print.elapsed() > Duration::from_secs(1) || k == t.payments) {
            last_print = Instant::now();
            println!(
                "{k:>6} payments  {:>5.1} % succeeded  {:>6.0}/s  fees {} wei",
                100.0 * report.succeeded as f64 / k as f64,
                k as f64 / t0.elapsed().as_secs_f64(),
                report.fees
            );
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    report.p50_ms = pct(0.5);
    report.p99_ms = pct(0.99);
    say(format!(
        "{}/{} succeeded; p50 {:.1} ms, p99 {:.1} ms; fees {} wei",
        report.succeeded, report.payments, report.p50_ms, report.p99_ms, report.fees
    ));

    // Close everything; each payout on chain must be the final state's.
    let mut waits = Vec::new();
    for (opener, id) in &channels {
        let n = node_of(*opener);
        let ev = n.subscribe();
        waits.push((*opener, *id, ev));
    }
    for (opener, id) in &channels {
        let n = node_of(*opener);
        let deadline = Instant::now() + Duration::from_secs(60);
        while n
            .channel(*id)
            .await
            .is_some_and(|s| !s.state.locks.is_empty())
        {
            if Instant::now() > deadline {
                return Err(NetError::Timeout("locks to clear before closing"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n.close(*id).await?;
    }
    for (opener, id, mut ev) in waits {
        let payout = tokio::time::timeout(Duration::from_secs(120), async {
            loop {
                match ev.recv().await {
                    Ok(NodeEvent::Concluded {
                        channel_id,
                        to_a,
                        to_b,
                    }) if channel_id == id => return Some([to_a, to_b]),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
        .ok_or(NetError::Timeout("every channel to be paid out"))?;
        let st = node_of(opener)
            .channel(id)
            .await
            .ok_or(NetError::Payout(id, "no final state".into()))?
            .state;
        if payout != st.balances {
            return Err(NetError::Payout(
                id,
                format!("paid {payout:?}, final state says {:?}", st.balances),
            ));
        }
        report.channels_paid_out += 1;
    }
    say(format!(
        "{} channels closed; every payout on chain is exactly its final state",
        report.channels_paid_out
    ));
    // Stop every node (and its chain tasks) before the chain goes away.
    for m in hubs
        .iter()
        .map(|m| &m.node)
        .chain(clients.iter().map(|(m, _)| &m.node))
    {
        m.stop().await;
    }
    Ok(report)
}
