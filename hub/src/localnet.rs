//! A local network in one process: one hub and `n` peers, each a full [`Node`] with its own
//! RocksDB, talking real QUIC over loopback; optionally on a real chain (anvil with the
//! contracts deployed, deposits and collateral on chain). The `hub demo` and `hub bench`
//! commands and their tests run on it.
//!
//! Without a chain, channels count as funded from the start and the hub's side is given its
//! liquidity by the peer's first co-signed transfer (the peer opens with twice its deposit and
//! transfers half), so payments can flow both ways at once.

use crate::api::Wei;
use crate::clock::Clock;
use crate::error::NodeError;
use crate::node::{Node, NodeOptions};
use crate::payments::PaymentStatus;
use crate::store::Store;
use alloy::primitives::{Address, B256};
use htlc::forward::ForwardPolicy;
use htlc::sig::Keys;
use htlc::{Amount, ChannelId, FailureReason};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Dev accounts of the devnet used by a local network on chain: 1 is the hub, 2.. the peers.
const DEV_ACCOUNTS: usize = 10;

/// How long a payment may take before the local network calls it stuck.
pub const PAYMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// How to build a local network.
#[derive(Clone, Debug)]
pub struct LocalNetOptions {
    /// Number of peers.
    pub peers: usize,
    /// Each peer's spendable balance in its channel, and the hub's on the other side.
    pub deposit: Amount,
    /// Whether to run a real chain (anvil): deposits, collateral and payouts on chain. At most
    /// eight peers (the devnet's funded accounts).
    pub chain: bool,
    /// The hub's forwarding policy.
    pub policy: ForwardPolicy,
    /// Folder for the nodes' databases (created; removed when the network is dropped).
    pub dir: PathBuf,
    /// Where the hub's HTTP API listens, if anywhere.
    pub api: Option<SocketAddr>,
    /// Connections the hub serves at once, and accepts per second (room for idle peers
    /// beyond the default 10,000 and 100/s); `None`: the defaults.
    pub connections: Option<usize>,
    /// A runtime of its own for the hub's tasks (the bench measures their threads' CPU);
    /// `None`: the caller's.
    pub hub_runtime: Option<tokio::runtime::Handle>,
    /// The hub serves virtual channels between its peers under these rules (`None`: not).
    pub virtual_policy: Option<htlc::vchan::VirtualPolicy>,
}

/// Why a local network could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LocalNetError {
    /// A node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The chain failed.
    #[error("chain: {0}")]
    Chain(#[from] contracts::ChainError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The options are impossible.
    #[error("invalid local network: {0}")]
    Invalid(String),
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

/// A running local network. Dropping it stops the nodes and removes their databases.
pub struct LocalNet {
    /// The hub.
    pub hub: Node,
    /// Where the hub listens.
    pub hub_addr: SocketAddr,
    /// Where the hub's API listens.
    pub api: Option<SocketAddr>,
    /// The peers.
    pub peers: Vec<Node>,
    /// Peer `i`'s channel with the hub.
    pub channels: Vec<ChannelId>,
    /// The chain, when on one.
    pub devnet: Option<contracts::Devnet>,
    dir: PathBuf,
}

/// How one payment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayOutcome {
    /// Paid; the hub's fee.
    Paid {
        /// The fee.
        fee: Amount,
    },
    /// Failed with this reason (`None`: expired).
    Failed(Option<FailureReason>),
}

impl LocalNet {
    /// Build the network: start the hub and the peers, connect them, open and fund one channel
    /// per peer, and wait until the hub holds liquidity on each.
    pub async fn start(o: LocalNetOptions) -> Result<LocalNet, LocalNetError> {
        if o.peers < 2 {
            return Err(LocalNetError::Invalid("at least two peers".into()));
        }
        if o.chain && o.peers > DEV_ACCOUNTS - 2 {
            return Err(LocalNetError::Invalid(format!(
                "at most {} peers on chain (the devnet's funded accounts)",
                DEV_ACCOUNTS - 2
            )));
        }
        if o.deposit.is_zero() {
            return Err(LocalNetError::Invalid("a positive deposit".into()));
        }
        std::fs::create_dir_all(&o.dir)
            .map_err(|e| LocalNetError::Invalid(format!("{}: {e}", o.dir.display())))?;
        let devnet = if o.chain {
            Some(contracts::Devnet::start().await?)
        } else {
            None
        };
        let clock = Clock::system();
        let node_opts = |chain: Option<contracts::ChainClient>| {
            let mut n = NodeOptions {
                clock: clock.clone(),
                chain_poll: Duration::from_millis(50),
                chain_retry: Duration::from_millis(500),
                ..NodeOptions::default()
            };
            if let (Some(d), Some(c)) = (&devnet, chain) {
                c.set_poll_interval(Duration::from_millis(10));
                n.chain_id = d.chain_id();
                n.adjudicator = d.deployment().adjudicator;
                n.chain = Some(c);
            }
            n
        };
        let keys_for = |i: usize| -> Result<Keys, LocalNetError> {
            match &devnet {
                Some(d) => d
                    .signer(i)
                    .map(Keys::from_signer)
                    .ok_or(LocalNetError::Invalid("no such dev account".into())),
                None => Ok(Keys::from_signer(
                    &alloy::signers::local::PrivateKeySigner::random(),
                )),
            }
        };
        let client_for = async |i: usize| -> Result<Option<contracts::ChainClient>, LocalNetError> {
            match &devnet {
                Some(d) => Ok(Some(d.client(i).await?)),
                None => Ok(None),
            }
        };
        let mut ho = node_opts(client_for(1).await?);
        ho.policy = o.policy;
        ho.virtual_policy = o.virtual_policy;
        if let Some(n) = o.connections {
            ho.max_connections = n;
            ho.handshakes_per_second = u32::try_from(n).unwrap_or(u32::MAX);
            ho.stranger_frames_per_second = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if o.chain {
            ho.collateral = o.deposit;
        }
        let (hub, hub_addr) = {
            let _in_hub_runtime = o.hub_runtime.as_ref().map(|h| h.enter());
            let hub = Node::start(keys_for(1)?, Store::open(&o.dir.join("hub"))?, ho)?;
            let addr = hub.listen(SocketAddr::from(([127, 0, 0, 1], 0)))?;
            (hub, addr)
        };
        let api = match o.api {
            Some(a) => Some(hub.serve_api(a).await?),
            None => None,
        };
        let mut peers = Vec::with_capacity(o.peers);
        let mut channels = Vec::with_capacity(o.peers);
        for i in 0..o.peers {
            let po = node_opts(client_for(i + 2).await?);
            let store = Store::open_with(
                &o.dir.join(format!("peer-{i}")),
                crate::store::Profile::Client,
            )?;
            let peer = Node::start(keys_for(i + 2)?, store, po)?;
            peer.connect(hub_addr, Some(hub.address())).await?;
            let id = if o.chain {
                let id = peer.open_channel(hub.address(), o.deposit).await?;
                peer.fund(id).await?;
                id
            } else {
                let twice = o
                    .deposit
                    .checked_add(o.deposit)
                    .map_err(|_| LocalNetError::Invalid("deposit overflows".into()))?;
                let id = peer.open_channel(hub.address(), twice).await?;
                peer.transfer(id, o.deposit).await?;
                id
            };
            peers.push(peer);
            channels.push(id);
        }
        let net = LocalNet {
            hub,
            hub_addr,
            api,
            peers,
            channels,
            devnet,
            dir: o.dir,
        };
        // Ready when the hub's side of every channel holds the deposit (collateral credited on
        // chain, or the transfer co-signed) and the peer knows the hub's policy.
        let deadline = Instant::now() + Duration::from_secs(120);
        for (peer, id) in net.peers.iter().zip(&net.channels) {
            loop {
                let hub_side = peer.channel(*id).await.map(|s| s.state.balances[1]);
                let policy = peer.hub_policy(net.hub.address())?;
                if hub_side == Some(o.deposit) && policy.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(LocalNetError::Timeout("the channels to be funded"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(net)
    }

    /// Peer `from` pays `amount` to peer `to` through the hub and waits for the outcome.
    pub async fn pay(
        &self,
        from: usize,
        to: usize,
        amount: Amount,
    ) -> Result<PayOutcome, LocalNetError> {
        let (payer, payee) = match (self.peers.get(from), self.peers.get(to)) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(LocalNetError::Invalid("no such peer".into())),
        };
        let invoice = payee
            .create_invoice(amount, 3600, self.hub.address())
            .await?;
        let id = B256::from(invoice.hashlock.0);
        payer.pay(&invoice, id).await?;
        wait_payment(payer, id, PAYMENT_TIMEOUT).await
    }

    /// Total of every balance and lock on the peers' side of their channels plus the hub's
    /// side: what conservation keeps constant while payments flow.
    pub async fn total_held(&self) -> u128 {
        let mut sum = 0u128;
        for (peer, id) in self.peers.iter().zip(&self.channels) {
            if let Some(s) = peer.channel(*id).await {
                sum = sum.saturating_add(s.state.total().map_or(u128::MAX, |a| a.0));
            }
        }
        sum
    }

    /// The peers' spendable balances and the hub's fees earned so far.
    pub async fn snapshot(&self) -> Result<(Vec<Wei>, Wei), LocalNetError> {
        let mut out = Vec::with_capacity(self.peers.len());
        for p in &self.peers {
            out.push(p.balance().await.spendable);
        }
        let (fees, _) = self.hub.fees_earned()?;
        Ok((out, fees.into()))
    }

    /// Stop every node.
    pub fn shutdown(&self) {
        self.hub.shutdown();
        for p in &self.peers {
            p.shutdown();
        }
    }
}

impl Drop for LocalNet {
    fn drop(&mut self) {
        self.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Wait for payment `id` of `payer` to end, at most `timeout`.
pub async fn wait_payment(
    payer: &Node,
    id: B256,
    timeout: Duration,
) -> Result<PayOutcome, LocalNetError> {
    let Some(rec) = payer.wait_settled(id, timeout).await? else {
        return Err(LocalNetError::Invalid("no such payment".into()));
    };
    match rec.status {
        PaymentStatus::Pending => Err(LocalNetError::Timeout("a payment")),
        PaymentStatus::Succeeded { .. } => Ok(PayOutcome::Paid { fee: rec.fee() }),
        PaymentStatus::Failed { reason } => Ok(PayOutcome::Failed(Some(reason))),
        PaymentStatus::Expired => Ok(PayOutcome::Failed(None)),
    }
}

/// What one benchmark run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    /// Idle peers connected, each with a channel.
    pub idle: usize,
    /// What connecting them added to the hub's resident memory, KiB.
    pub idle_rss_kib: u64,
    /// Concurrent payers.
    pub payers: usize,
    /// Payments each payer kept in flight.
    pub in_flight: usize,
    /// CPU time of the whole process (hub and payers together, all threads) per successful
    /// payment, microseconds.
    pub cpu_us_per_payment: f64,
    /// CPU time of the hub's own threads (its runtime and its store's writer) per
    /// successful payment, microseconds: what one payment costs the hub itself (with
    /// [`BenchOptions::hub_cpu`]; 0 otherwise).
    pub hub_cpu_us_per_payment: f64,
    /// CPU time over wall time during the measured part (2.0 = both cores of this machine).
    pub cpu_share: f64,
    /// Resident memory of the process at the end, KiB.
    pub rss_kib: u64,
    /// Payments that succeeded.
    pub paid: u64,
    /// Payments that failed.
    pub failed: u64,
    /// Wall time of the measured part, seconds.
    pub secs: f64,
    /// Latency percentiles of a payment, milliseconds: p50, p99.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// Co-signed states the hub committed per payment (each payment is four HTLC operations
    /// at the hub: two adds, two settles; under one update each that is 4.0).
    pub updates_per_payment: f64,
    /// Share of the measured time the hub's store writer spent writing and syncing (1.0: it
    /// never waited for work, so it bounds the rate).
    pub writer_busy: f64,
    /// Share of the measured time the hub's steps held its machine's lock (1.0: every step
    /// waited for the one before, so it bounds the rate).
    pub machine_busy: f64,
    /// Synced writes (fsyncs) of the hub's store per payment.
    pub syncs_per_payment: f64,
    /// Synced writes of every node's store together (the hub's, the payers' and payees')
    /// per payment: what durability costs the three nodes of each payment.
    pub all_syncs_per_payment: f64,
    /// Store batches the hub committed per synced write (group commit).
    pub batches_per_sync: f64,
    /// Frames the flooding strangers sent during the measured part (0 without a flood).
    pub flood_frames: u64,
    /// Entries the hub's store gained during the measured part (payments write some; a
    /// stranger's frames must write none).
    pub store_growth: i64,
    /// Growth of the process's resident memory during the measured part, KiB.
    pub rss_growth_kib: i64,
}

impl BenchReport {
    /// Successful payments per second.
    pub fn per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.paid as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// What one `hub bench` run does.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Payer nodes, each paying the next in a ring.
    pub payers: usize,
    /// Payments each payer keeps in flight at once (a wallet or a hub paying many invoices).
    pub in_flight: usize,
    /// Measured time.
    pub duration: Duration,
    /// Time before measuring.
    pub warmup: Duration,
    /// Each payment's amount.
    pub amount: Amount,
    /// Where the nodes' databases go.
    pub dir: PathBuf,
    /// Strangers flooding the hub with frames it must refuse.
    pub flood: usize,
    /// Idle peers, each with a channel, connected to the hub while the payers pay (run by
    /// `idle_exe idle-peers` in a process of their own, so that the RSS measured is the
    /// hub's); 0: none.
    pub idle: usize,
    /// The `hub` binary that runs the idle peers.
    pub idle_exe: Option<PathBuf>,
    /// Run the hub on a runtime of its own and report its threads' CPU per payment.
    pub hub_cpu: bool,
}

/// The `p` quantile (0..=1) of `sorted` durations, in milliseconds (0 when empty).
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// Run `payers` peers on a local network without a chain, each paying the next one in a ring
/// (so no channel depletes), `in_flight` payments at a time each, for `duration` after a
/// warm-up of `warmup`; report throughput and latency. Storage is durable (every batch synced).
pub async fn bench(o: BenchOptions) -> Result<BenchReport, LocalNetError> {
    if !o.hub_cpu {
        return bench_on(o, None).await;
    }
    // The hub's tasks on two threads of their own, so that its CPU can be told from the
    // payers' (they share the machine's two cores all the same; the extra thread switches
    // cost some throughput).
    let hub_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(HUB_THREADS)
        .enable_all()
        .build()
        .map_err(|e| LocalNetError::Invalid(format!("the hub's runtime: {e}")))?;
    let report = bench_on(o, Some(hub_rt.handle().clone())).await;
    hub_rt.shutdown_background();
    report
}

/// The hub's runtime threads' name in the bench.
const HUB_THREADS: &str = "hub-rt";

async fn bench_on(
    o: BenchOptions,
    hub_rt: Option<tokio::runtime::Handle>,
) -> Result<BenchReport, LocalNetError> {
    let BenchOptions {
        payers,
        in_flight,
        duration,
        warmup,
        amount,
        dir,
        flood,
        idle,
        idle_exe,
        ..
    } = o;
    let measure_hub = hub_rt.is_some();
    let net = std::sync::Arc::new(
        LocalNet::start(LocalNetOptions {
            hub_runtime: hub_rt,
            peers: payers,
            deposit: Amount(amount.0.saturating_mul(1_000_000_000)),
            chain: false,
            policy: ForwardPolicy::default(),
            dir,
            api: None,
            connections: (idle > 0).then_some(idle + payers + 64),
            virtual_policy: None,
        })
        .await?,
    );
    // Idle peers first, in their own process; the hub's memory is measured before and after.
    let rss_before_idle = rss_kib();
    let _idle = match (idle, idle_exe) {
        (0, _) => None,
        (_, None) => {
            return Err(LocalNetError::Invalid(
                "idle peers need the hub binary".into(),
            ));
        }
        (n, Some(exe)) => Some(IdlePeers::start(&exe, net.hub_addr, net.hub.address(), n)?),
    };
    let idle_rss_kib = rss_kib().saturating_sub(rss_before_idle);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::with_capacity(payers * in_flight.max(1));
    for i in 0..payers {
        for _ in 0..in_flight.max(1) {
            let net = net.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut failed = 0u64;
                while Instant::now() < end {
                    let t0 = Instant::now();
                    let r = net.pay(i, (i + 1) % net.peers.len(), amount).await;
                    let counted = t0 >= measure_from;
                    match r {
                        Ok(PayOutcome::Paid { .. }) if counted => lat.push(t0.elapsed()),
                        Ok(PayOutcome::Paid { .. }) => {}
                        Ok(PayOutcome::Failed(_)) | Err(_) if counted => failed += 1,
                        Ok(PayOutcome::Failed(_)) | Err(_) => {}
                    }
                }
                (lat, failed)
            }));
        }
    }
    // Strangers flooding the hub with frames it must refuse (issue 12): each a fresh key per
    // connection, sending as fast as the hub reads.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut flooders = Vec::with_capacity(flood);
    for _ in 0..flood {
        let (addr, sent) = (net.hub_addr, sent.clone());
        flooders.push(tokio::spawn(async move {
            let Ok(endpoint) = crate::transport::client(SocketAddr::from(([127, 0, 0, 1], 0)))
            else {
                return;
            };
            while Instant::now() < end {
                if flood_once(&endpoint, addr, end, measure_from, &sent)
                    .await
                    .is_err()
                {
                    // Refused (the hub's handshake budget): try again a little later.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    // Counters at the start of the measured window.
    tokio::time::sleep_until(measure_from.into()).await;
    let entries0 = store_entries(&net.hub.inner.store);
    let rss0 = rss_kib();
    let cpu0 = cpu_secs();
    let hub_cpu0 = threads_cpu_secs(|name| name.starts_with(HUB_THREADS) || name == "store hub");
    let stats = net.hub.inner.store.stats();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let m0 = net.hub.step_micros();
    let all_syncs = || {
        std::iter::once(&net.hub)
            .chain(&net.peers)
            .map(|n| load(&n.inner.store.stats().syncs))
            .sum::<u64>()
    };
    let all0 = all_syncs();
    let (u0, b0, s0, w0) = (
        net.hub.metrics().updates(),
        load(&stats.batches),
        load(&stats.syncs),
        load(&stats.sync_micros),
    );
    let mut lat = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t
            .await
            .map_err(|e| LocalNetError::Invalid(format!("a payer task failed: {e}")))?;
        lat.extend(l);
        failed += f;
    }
    let secs = measure_from.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let hub_cpu =
        threads_cpu_secs(|name| name.starts_with(HUB_THREADS) || name == "store hub") - hub_cpu0;
    let rss_kib_now = rss_kib();
    for f in flooders {
        let _ = f.await;
    }
    let store_growth = store_entries(&net.hub.inner.store) as i64 - entries0 as i64;
    let rss_growth_kib = rss_kib_now as i64 - rss0 as i64;
    let m1 = net.hub.step_micros();
    let all1 = all_syncs();
    let (u1, b1, s1, w1) = (
        net.hub.metrics().updates(),
        load(&stats.batches),
        load(&stats.syncs),
        load(&stats.sync_micros),
    );
    lat.sort();
    let pct = |p: f64| percentile_ms(&lat, p);
    let paid = lat.len() as u64;
    Ok(BenchReport {
        idle,
        idle_rss_kib,
        payers,
        in_flight: in_flight.max(1),
        cpu_us_per_payment: if paid > 0 {
            cpu * 1e6 / paid as f64
        } else {
            0.0
        },
        cpu_share: cpu / secs.max(1e-9),
        hub_cpu_us_per_payment: if paid > 0 && measure_hub {
            hub_cpu * 1e6 / paid as f64
        } else {
            0.0
        },
        rss_kib: rss_kib_now,
        paid,
        failed,
        secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        updates_per_payment: if paid > 0 {
            (u1 - u0) as f64 / paid as f64
        } else {
            0.0
        },
        writer_busy: (w1 - w0) as f64 / (secs * 1e6).max(1.0),
        machine_busy: (m1 - m0) as f64 / (secs * 1e6).max(1.0),
        syncs_per_payment: if paid > 0 {
            (s1 - s0) as f64 / paid as f64
        } else {
            0.0
        },
        all_syncs_per_payment: if paid > 0 {
            (all1 - all0) as f64 / paid as f64
        } else {
            0.0
        },
        batches_per_sync: if s1 > s0 {
            (b1 - b0) as f64 / (s1 - s0) as f64
        } else {
            0.0
        },
        flood_frames: sent.load(std::sync::atomic::Ordering::Relaxed),
        store_growth,
        rss_growth_kib,
    })
}

/// One flooding connection: a fresh key, frames the hub must refuse (pings, funding notices and
/// replies for channels it does not have) at 5,000 per second, a reader draining the refusals.
/// Counts the frames sent inside the measured window.
async fn flood_once(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    end: Instant,
    measure_from: Instant,
    sent: &std::sync::atomic::AtomicU64,
) -> Result<(), LocalNetError> {
    use crate::wire::{Body, Frame};
    let keys = htlc::sig::Keys::from_bytes(rand::random())
        .ok_or_else(|| LocalNetError::Invalid("random key".into()))?;
    let mut s =
        crate::transport::connect(endpoint, addr, &keys, None, crate::wire::DEFAULT_MAX_FRAME)
            .await
            .map_err(NodeError::from)?;
    let mut recv = s.recv;
    let reader = tokio::spawn(async move {
        while let Ok(Some(_)) =
            crate::wire::read_frame(&mut recv, crate::wire::DEFAULT_MAX_FRAME).await
        {}
    });
    let ghost = htlc::ChannelId(alloy::primitives::B256::repeat_byte(0x42));
    for seq in 1..=10_000u64 {
        if Instant::now() >= end {
            break;
        }
        let body = match seq % 3 {
            0 => Body::Ping,
            1 => Body::Funded { channel_id: ghost },
            _ => Body::Channel(htlc::Message::Reject {
                channel_id: ghost,
                version: seq,
                reason: htlc::RejectReason::Conflict,
            }),
        };
        if crate::wire::write_frame(&mut s.send, &Frame::Msg { seq, body })
            .await
            .is_err()
        {
            break;
        }
        if Instant::now() >= measure_from {
            sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // 5,000 frames per second per flooder: the attacker's own CPU (it shares this
        // process's cores) stays small, while offering far more than the strangers' budget.
        if seq % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    s.conn.close(0u32.into(), b"done");
    reader.abort();
    Ok(())
}

/// Entries in the store's column families (what a flood must not grow).
fn store_entries(store: &Store) -> usize {
    use crate::store::Cf;
    [
        Cf::Meta,
        Cf::Outbox,
        Cf::Channels,
        Cf::Locks,
        Cf::Chain,
        Cf::States,
    ]
    .into_iter()
    .map(|cf| store.scan_raw(cf, &[]).map_or(0, |v| v.len()))
    .sum()
}

/// This process's resident memory, KiB (0 where /proc is not available).
/// CPU time (user + system) of this process so far, all threads, seconds.
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_cpu_secs(&s))
        .unwrap_or(0.0)
}

/// CPU time (user + system) of this process's threads whose name `pick` accepts, seconds.
fn threads_cpu_secs(pick: impl Fn(&str) -> bool) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            pick(
                std::fs::read_to_string(t.path().join("comm"))
                    .unwrap_or_default()
                    .trim(),
            )
        })
        .filter_map(|t| stat_cpu_secs(&std::fs::read_to_string(t.path().join("stat")).ok()?))
        .sum()
}

/// utime + stime of a `/proc/.../stat` line, seconds (the kernel's user-visible ticks: 100
/// per second on Linux).
fn stat_cpu_secs(stat: &str) -> Option<f64> {
    // Fields after the command name (which may hold spaces) and its closing ')': utime and
    // stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Idle peers in a child process (`hub idle-peers`), killed on drop.
struct IdlePeers(std::process::Child);

impl IdlePeers {
    /// Start `count` idle peers of the hub at `addr` and wait until each holds a channel.
    fn start(
        exe: &std::path::Path,
        addr: SocketAddr,
        hub: Address,
        count: usize,
    ) -> Result<IdlePeers, LocalNetError> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(exe)
            .args(["idle-peers", "--hub-addr"])
            .arg(addr.to_string())
            .arg("--hub")
            .arg(hub.to_string())
            .arg("--count")
            .arg(count.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| LocalNetError::Invalid(format!("cannot run {}: {e}", exe.display())))?;
        let out = child.stdout.take();
        let mut guard = IdlePeers(child);
        let mut line = String::new();
        let ok = out
            .map(std::io::BufReader::new)
            .is_some_and(|mut r| r.read_line(&mut line).is_ok());
        if !ok || !line.starts_with("ready") {
            let _ = guard.0.kill();
            return Err(LocalNetError::Invalid(format!(
                "the idle peers did not all get a channel: {}",
                line.trim()
            )));
        }
        Ok(guard)
    }
}

impl Drop for IdlePeers {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `count` idle peers of the hub `hub` at `addr` (the `hub idle-peers` process of
/// [`bench`]): each connects under a fresh key, opens a channel (0.01 ETH on its side,
/// without a chain, as the bench's hub expects), acknowledges what the hub sends, and then
/// stays connected and silent. Returns once every channel is accepted; the peers stay
/// connected while the returned endpoint and connections (and the runtime) live.
pub async fn idle_peers(
    addr: SocketAddr,
    hub: Address,
    count: usize,
) -> Result<(quinn::Endpoint, Vec<quinn::Connection>), LocalNetError> {
    use crate::wire::{Body, Frame};
    let defaults = NodeOptions::default();
    let endpoint =
        crate::transport::client(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(NodeError::from)?;
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel::<()>(count.max(1));
    let mut held = Vec::with_capacity(count);
    for i in 0..count {
        let keys = htlc::sig::Keys::from_bytes(rand::random())
            .ok_or_else(|| LocalNetError::Invalid("random key".into()))?;
        let mut s = loop {
            match crate::transport::connect(
                &endpoint,
                addr,
                &keys,
                Some(hub),
                crate::wire::DEFAULT_MAX_FRAME,
            )
            .await
            {
                Ok(s) => break s,
                // The hub's handshake budget: try again shortly.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let params = htlc::ChannelParams {
            chain_id: defaults.chain_id,
            adjudicator: defaults.adjudicator,
            participants: [keys.address(), hub],
            asset: Address::ZERO,
            challenge_duration: defaults.challenge_duration,
            nonce: alloy::primitives::U256::from(i as u64 + 1),
        };
        let balances = [defaults.min_peer_deposit, Amount::ZERO];
        let state = htlc::ChannelState::opening(params.id(), balances);
        let sig = htlc::update::sign_state(&params, &keys, &state)
            .map_err(|e| LocalNetError::Invalid(e.to_string()))?;
        let open = Frame::Msg {
            seq: 1,
            body: Body::OpenChannel {
                params,
                balances,
                sig,
            },
        };
        crate::wire::write_frame(&mut s.send, &open)
            .await
            .map_err(|e| LocalNetError::Invalid(e.to_string()))?;
        let (mut send, mut recv) = (s.send, s.recv);
        let tx = accepted_tx.clone();
        tokio::spawn(async move {
            while let Ok(Some(f)) =
                crate::wire::read_frame(&mut recv, crate::wire::DEFAULT_MAX_FRAME).await
            {
                if let Frame::Msg { seq, body } = f {
                    if crate::wire::write_frame(&mut send, &Frame::Ack { seq })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    if matches!(body, Body::ChannelAccepted { .. }) {
                        let _ = tx.send(()).await;
                    }
                }
            }
        });
        held.push(s.conn);
    }
    drop(accepted_tx);
    for n in 0..count {
        if tokio::time::timeout(Duration::from_secs(60), accepted.recv())
            .await
            .ok()
            .flatten()
            .is_none()
        {
            return Err(LocalNetError::Invalid(format!(
                "{n} of {count} idle peers' channels accepted in time"
            )));
        }
    }
    Ok((endpoint, held))
}
