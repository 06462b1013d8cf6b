//! `hub bench-virtual`: what a virtual channel costs on the real stack (issue 15): the latency
//! of opening and closing one over one hub and over a chain of two, and payments inside one per
//! second. The nodes run in one process (A, the hub, B; a second hub and its peer C for the
//! chain), each with its own RocksDB synced at every commit, talking QUIC on loopback; no chain
//! (the ledgers count as funded, as in `hub bench`).
//!
//! An open is timed from A's request until A may pay inside the channel (every leg locks the
//! guarantee and B signed the opening: four message delays for A over one hub, six over two,
//! ADR 0026); a close from B's request until the parties' ledgers, as their peers see them,
//! have released the guarantee by the final state (over two hubs the hubs' own ledger is
//! released before the first hub completes A's). Payments go in rounds of `batch` transfers issued together by A; a round ends
//! when A holds B's signature on a state paying all of them, so each payment's latency is at
//! most its round's, which is what is reported.

use crate::error::{NodeError, PayError};
use crate::events::NodeEvent;
use crate::localnet::{LocalNet, LocalNetError, LocalNetOptions, percentile_ms};
use crate::node::Node;
use htlc::forward::ForwardPolicy;
use htlc::{Amount, ChannelId};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// What to measure.
#[derive(Clone, Debug)]
pub struct VirtualBenchOptions {
    /// Virtual channels opened and closed one after the other (the latency samples).
    pub opens: usize,
    /// Transfers issued together per round, one run per value.
    pub batches: Vec<usize>,
    /// Measured time per run of payments.
    pub duration: Duration,
    /// Where the nodes' databases go.
    pub dir: PathBuf,
}

/// One run of payments inside a virtual channel.
#[derive(Clone, Debug)]
pub struct VirtualPayRow {
    /// Transfers issued together.
    pub batch: usize,
    /// Payments co-signed.
    pub paid: u64,
    /// Payments per second.
    pub per_sec: f64,
    /// Round latency, milliseconds: p50.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// Co-signed states of the virtual channel per payment.
    pub updates_per_payment: f64,
}

/// The figures.
#[derive(Clone, Debug)]
pub struct VirtualBenchReport {
    /// Opens measured.
    pub opens: usize,
    /// Open latency, milliseconds: p50 and p99.
    pub open_ms: [f64; 2],
    /// Close latency, milliseconds: p50 and p99.
    pub close_ms: [f64; 2],
    /// Over a chain of two hubs: open latency, milliseconds, p50 and p99.
    pub open2_ms: [f64; 2],
    /// Over a chain of two hubs: close latency, milliseconds, p50 and p99.
    pub close2_ms: [f64; 2],
    /// One row per batch size.
    pub rows: Vec<VirtualPayRow>,
}

/// Wait until `f` holds for `n`'s latest co-signed state of `id` (re-checked at each commit).
async fn until(
    n: &Node,
    events: &mut broadcast::Receiver<NodeEvent>,
    id: ChannelId,
    f: impl Fn(&htlc::ChannelState) -> bool,
) -> Result<(), LocalNetError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if n.channel(id).await.is_some_and(|s| f(&s.state)) {
            return Ok(());
        }
        // Any event (or a lagged receiver) is a reason to look again.
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => return Err(LocalNetError::Timeout("a virtual channel's state")),
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                return Err(LocalNetError::Timeout("a node that stopped"));
            }
            Ok(_) => {}
        }
    }
}

/// Open with the hub's virtual-channel rules known to A (they arrive after the connection).
async fn open(net: &LocalNet, deposit: Amount) -> Result<ChannelId, LocalNetError> {
    let (a, b) = (&net.peers[0], &net.peers[1]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match a
            .open_virtual(net.hub.address(), b.address(), deposit, 3600)
            .await
        {
            Ok(v) => return Ok(v),
            Err(NodeError::Pay(PayError::NoPolicy(_))) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Run the benchmark.
pub async fn bench_virtual(o: VirtualBenchOptions) -> Result<VirtualBenchReport, LocalNetError> {
    if o.opens == 0 || o.batches.iter().any(|b| *b == 0 || *b > 1_000) {
        return Err(LocalNetError::Invalid(
            "at least one open, and batches of 1 to 1000 transfers".into(),
        ));
    }
    let deposit = Amount(1_000_000_000_000_000_000_000);
    let net = LocalNet::start(LocalNetOptions {
        peers: 2,
        deposit,
        chain: false,
        policy: ForwardPolicy::default(),
        dir: o.dir.clone(),
        api: None,
        connections: None,
        hub_runtime: None,
        // The hub is also the first of a chain of two below.
        virtual_policy: Some(htlc::vchan::VirtualPolicy {
            toward_hubs: true,
            ..htlc::vchan::VirtualPolicy::default()
        }),
    })
    .await?;
    let (a, b) = (&net.peers[0], &net.peers[1]);
    let (la, lb) = (net.channels[0], net.channels[1]);
    let mut ea = a.subscribe();
    let mut eb = b.subscribe();
    let released = |v: ChannelId| {
        move |s: &htlc::ChannelState| !s.guarantees.iter().any(|g| g.virtual_channel == v)
    };

    // Open and close, one after the other.
    let (mut opens, mut closes) = (Vec::with_capacity(o.opens), Vec::with_capacity(o.opens));
    for _ in 0..o.opens {
        let t0 = Instant::now();
        let v = open(&net, Amount(1_000_000_000)).await?;
        opens.push(t0.elapsed());
        a.transfer(v, Amount(1_000)).await?;
        until(b, &mut eb, v, |s| s.balances[1] == Amount(1_000)).await?;
        let t1 = Instant::now();
        b.close(v).await?;
        until(a, &mut ea, la, released(v)).await?;
        until(b, &mut eb, lb, released(v)).await?;
        closes.push(t1.elapsed());
    }
    opens.sort();
    closes.sort();

    // The same over a chain of two hubs: A2 — hub — hub 2 — C.
    let chain = second_hub(&net, &o.dir).await?;
    let (a2, c) = (&chain.a, &chain.c);
    let mut ea2 = a2.subscribe();
    let mut ec = c.subscribe();
    let (mut opens2, mut closes2) = (Vec::with_capacity(o.opens), Vec::with_capacity(o.opens));
    let hubs = [net.hub.address(), chain.hub.address()];
    for _ in 0..o.opens {
        let t0 = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(30);
        let v = loop {
            // The first hub's rules reach A2 after its channel opened.
            match a2
                .open_virtual_over(&hubs, c.address(), Amount(1_000_000_000), 3600)
                .await
            {
                Ok(v) => break v,
                Err(NodeError::Pay(PayError::NoPolicy(_))) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        opens2.push(t0.elapsed());
        a2.transfer(v, Amount(1_000)).await?;
        until(c, &mut ec, v, |s| s.balances[1] == Amount(1_000)).await?;
        let t1 = Instant::now();
        c.close(v).await?;
        until(c, &mut ec, chain.lc, released(v)).await?;
        until(a2, &mut ea2, chain.la, released(v)).await?;
        closes2.push(t1.elapsed());
    }
    opens2.sort();
    closes2.sort();
    for n in [&chain.a, &chain.hub, &chain.c] {
        n.shutdown();
    }

    // Payments inside one channel, in rounds of `batch` transfers.
    let value = Amount(1_000_000_000_000_000_000);
    let v = open(&net, value).await?;
    let mut rows = Vec::with_capacity(o.batches.len());
    let mut paid_total: u128 = 0;
    for &batch in &o.batches {
        let v0 = a.channel(v).await.map_or(0, |s| s.state.version);
        let mut rounds = Vec::new();
        let mut paid = 0u64;
        let start = Instant::now();
        while start.elapsed() < o.duration {
            let t0 = Instant::now();
            let mut sends = tokio::task::JoinSet::new();
            for _ in 0..batch {
                let a = a.clone();
                sends.spawn(async move { a.transfer(v, Amount(1)).await });
            }
            while let Some(r) = sends.join_next().await {
                r.map_err(|e| LocalNetError::Invalid(format!("a transfer task: {e}")))??;
            }
            paid_total += batch as u128;
            let want = Amount(paid_total);
            until(a, &mut ea, v, |s| s.balances[1] == want).await?;
            rounds.push(t0.elapsed());
            paid += batch as u64;
        }
        let secs = start.elapsed().as_secs_f64();
        let v1 = a.channel(v).await.map_or(0, |s| s.state.version);
        rounds.sort();
        rows.push(VirtualPayRow {
            batch,
            paid,
            per_sec: paid as f64 / secs.max(1e-9),
            p50_ms: percentile_ms(&rounds, 0.50),
            p99_ms: percentile_ms(&rounds, 0.99),
            updates_per_payment: (v1 - v0) as f64 / paid.max(1) as f64,
        });
    }
    Ok(VirtualBenchReport {
        opens: o.opens,
        open_ms: [percentile_ms(&opens, 0.50), percentile_ms(&opens, 0.99)],
        close_ms: [percentile_ms(&closes, 0.50), percentile_ms(&closes, 0.99)],
        open2_ms: [percentile_ms(&opens2, 0.50), percentile_ms(&opens2, 0.99)],
        close2_ms: [percentile_ms(&closes2, 0.50), percentile_ms(&closes2, 0.99)],
        rows,
    })
}

/// The chain of two hubs the bench opens over: A2 — `net`'s hub — hub 2 — C.
struct Chain {
    /// The payer (its ledger with the first hub has the longer window a chain needs).
    a: Node,
    /// The second hub.
    hub: Node,
    /// Its peer, the payee.
    c: Node,
    /// A2's ledger.
    la: ChannelId,
    /// C's ledger.
    lc: ChannelId,
}

/// A second hub joined to `net`'s hub by a ledger with the shortest window a node accepts
/// (opened by the second hub), a peer C of it, and a payer A2 of the first hub whose ledger's
/// window is longer by [`htlc::vchan::CHAIN_REACTION_SECS`] (as the first hub of a chain
/// requires, ADR 0026); every side holds as much as a peer's deposit, and A2 knows the second
/// hub's rules.
async fn second_hub(net: &LocalNet, dir: &std::path::Path) -> Result<Chain, LocalNetError> {
    let policy = htlc::vchan::VirtualPolicy::default();
    let keys = || htlc::sig::Keys::from_signer(&alloy::signers::local::PrivateKeySigner::random());
    let mid_window = htlc::forward::MIN_CHALLENGE_DURATION_SECS;
    let start = |name: &str, o: crate::node::NodeOptions| -> Result<Node, LocalNetError> {
        let store = crate::store::Store::open(&dir.join(name))?;
        Ok(Node::start(keys(), store, o)?)
    };
    let hub2 = start(
        "hub-2",
        crate::node::NodeOptions {
            virtual_policy: Some(policy),
            challenge_duration: mid_window,
            ..crate::node::NodeOptions::default()
        },
    )?;
    let addr = hub2.listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let c = start("peer-c", crate::node::NodeOptions::default())?;
    let a = start(
        "peer-a2",
        crate::node::NodeOptions {
            challenge_duration: mid_window + htlc::vchan::CHAIN_REACTION_SECS,
            ..crate::node::NodeOptions::default()
        },
    )?;
    let each = Amount(1_000_000_000_000_000_000_000);
    let twice = Amount(2 * each.0);
    let mut ledgers = Vec::with_capacity(3);
    for (n, to, to_addr) in [
        (&hub2, &net.hub, net.hub_addr),
        (&c, &hub2, addr),
        (&a, &net.hub, net.hub_addr),
    ] {
        n.connect(to_addr, Some(to.address())).await?;
        let id = n.open_channel(to.address(), twice).await?;
        n.transfer(id, each).await?;
        let mut events = to.subscribe();
        until(to, &mut events, id, |s| s.balances[1] == each).await?;
        ledgers.push(id);
    }
    a.set_virtual_policy(hub2.address(), policy).await?;
    Ok(Chain {
        a,
        hub: hub2,
        c,
        la: ledgers[2],
        lc: ledgers[1],
    })
}
