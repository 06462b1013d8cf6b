//! The network harness (`hub net`, issue 16): a topology of hubs and peers on a local chain,
//! every channel funded, a payment workload routed across the hubs, and at the end every
//! channel closed with each on-chain payout checked against its final co-signed state.
//!
//! Every node is a real `hub serve` process with its own configuration, key, RocksDB and log
//! (`node<i>.log` in the run's directory), talking QUIC over loopback, on anvil with the
//! contracts deployed. The harness drives them only through their HTTP APIs (`POST /connect`,
//! `/open`, `/invoice`, `/pay`, `/close`; `GET /channels`, `/gossip`), as an operator would, and
//! reads the payouts from the adjudicator's `Concluded` events. Nodes 1..=hubs are the hubs,
//! the rest their clients (client `p` belongs to hub `p % hubs`).
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
//! workload = "random"     # random: any client pays any other; across: a client of the first
//!                         # hub pays a client of the last (the route crosses every hub of a line)
//! ```

use crate::api::{ChannelInfo, GossipInfo, PaymentInfo};
use crate::api_client::{ApiClient, ApiClientError};
use alloy::primitives::{Address, B256};
use contracts::bindings::Adjudicator::AdjudicatorEvents;
use contracts::events::EventKind;
use htlc::ChannelId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
    /// Who pays whom.
    #[serde(default)]
    pub workload: Workload,
}

/// Who pays whom in the workload.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// A random client pays another random client.
    #[default]
    Random,
    /// A client of the first hub pays a client of the last hub.
    Across,
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
    /// A node's process could not be started or set up.
    #[error("node {node}: {reason} (its log: {log})")]
    Process {
        /// The node's index.
        node: usize,
        /// What went wrong.
        reason: String,
        /// Its log file.
        log: PathBuf,
    },
    /// A node's API refused or failed a request.
    #[error("node {node}: {source}")]
    Api {
        /// The node's index.
        node: usize,
        /// The failure.
        source: ApiClientError,
    },
    /// The chain failed.
    #[error("chain: {0}")]
    Chain(#[from] contracts::ChainError),
    /// A file of the run could not be written.
    #[error("{0}")]
    Io(String),
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
        if t.workload == Workload::Across && t.hubs == 1 && t.peers_per_hub < 2 {
            return Err(NetError::Invalid(
                "workload \"across\" on one hub needs two peers on it".into(),
            ));
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
    /// Routes tried by the succeeded and failed payments together.
    pub attempts: usize,
    /// Median latency of the succeeded ones (the payer's `POST /pay` until its outcome), ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Succeeded payments per second of the workload's wall time.
    pub per_second: f64,
    /// Fees paid by the payers of succeeded payments, wei.
    pub fees: u128,
    /// Channels closed and paid out on chain exactly as their final states say.
    pub channels_paid_out: usize,
}

/// How the harness runs.
#[derive(Clone, Debug)]
pub struct NetOptions {
    /// The `hub` binary each node runs as (`hub serve --config …`).
    pub hub_exe: PathBuf,
    /// Print progress.
    pub verbose: bool,
    /// The nodes' `RUST_LOG` (their logs go to `node<i>.log`).
    pub log: String,
}

/// One node: a `hub serve` process, killed on drop.
struct Proc {
    child: Child,
    index: usize,
    addr: SocketAddr,
    address: Address,
    api: ApiClient,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Already asked to stop (SIGTERM) at the end of a run, or the run failed: no node
        // outlives the harness.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn err(&self, source: ApiClientError) -> NetError {
        NetError::Api {
            node: self.index,
            source,
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, NetError> {
        self.api.get(path).await.map_err(|e| self.err(e))
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, NetError> {
        self.api.post(path, body).await.map_err(|e| self.err(e))
    }

    async fn channels(&self) -> Result<Vec<ChannelInfo>, NetError> {
        self.get("/channels").await
    }

    async fn channel(&self, id: ChannelId) -> Result<Option<ChannelInfo>, NetError> {
        Ok(self.channels().await?.into_iter().find(|c| c.id == id))
    }
}

/// What every node's configuration shares.
struct Common<'a> {
    dir: &'a Path,
    rpc: String,
    chain_id: u64,
    adjudicator: Address,
    opts: &'a NetOptions,
}

/// Write node `i`'s key and configuration, start it, and wait for its banner.
async fn spawn(
    c: &Common<'_>,
    i: usize,
    key: &[u8],
    hub: Option<usize>,
    t: &Topology,
) -> Result<Proc, NetError> {
    let log = c.dir.join(format!("node{i}.log"));
    let fail = |reason: String| NetError::Process {
        node: i,
        reason,
        log: log.clone(),
    };
    let key_file = c.dir.join(format!("node{i}.key"));
    let data = c.dir.join(format!("node{i}"));
    let cfg = c.dir.join(format!("node{i}.toml"));
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\nkey_file = {:?}\ndata_dir = {:?}\n\
         chain_rpc = {:?}\nchain_id = {}\nadjudicator = \"{}\"\nannounce = {}\n",
        key_file.display().to_string(),
        data.display().to_string(),
        c.rpc,
        c.chain_id,
        c.adjudicator,
        hub.is_some(),
    );
    if let Some(h) = hub {
        text += &format!(
            "[policy]\nbase_fee = {}\nfee_ppm = 100\n",
            1_000 * (h as u128 + 1)
        );
    }
    text += &format!(
        "[funding]\ncollateral = \"{}\"\nmin_peer_deposit = \"1\"\nchain_poll_ms = 50\n\
         chain_retry_secs = 1\nclose_grace_secs = 1\n",
        if hub.is_some() { t.deposit } else { 0 },
    );
    std::fs::write(&key_file, alloy::primitives::hex::encode(key))
        .and_then(|()| std::fs::write(&cfg, text))
        .map_err(|e| NetError::Io(format!("writing node {i}'s configuration: {e}")))?;
    let log_file = std::fs::File::create(&log).map_err(|e| fail(e.to_string()))?;
    let mut child = Command::new(&c.opts.hub_exe)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", &c.opts.log)
        .env_remove("VHUB_CRASH_AT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(|e| fail(format!("cannot run {}: {e}", c.opts.hub_exe.display())))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        return Err(fail("no stdout".into()));
    };
    // Two lines: `node <address> listening on <addr>`, then `api on http://<addr>`.
    let banner = tokio::task::spawn_blocking(move || {
        let mut r = BufReader::new(stdout);
        let mut lines = [String::new(), String::new()];
        for l in &mut lines {
            if r.read_line(l).ok()? == 0 {
                return None;
            }
        }
        let last = |s: &str| s.trim().rsplit(' ').next().map(str::to_string);
        let addr: SocketAddr = last(&lines[0])?.parse().ok()?;
        let address: Address = lines[0].split_whitespace().nth(1)?.parse().ok()?;
        let api: SocketAddr = last(&lines[1])?
            .trim_start_matches("http://")
            .parse()
            .ok()?;
        // The rest of stdout is not read: the node prints nothing more there.
        Some((addr, address, api))
    })
    .await
    .ok()
    .flatten();
    let Some((addr, address, api_addr)) = banner else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(fail("exited before it was ready".into()));
    };
    let token = std::fs::read_to_string(data.join("api.token"))
        .map_err(|e| fail(format!("no API token: {e}")))?;
    let api = ApiClient::new(api_addr, token.trim(), Duration::from_secs(180))
        .map_err(|e| fail(e.to_string()))?;
    Ok(Proc {
        child,
        index: i,
        addr,
        address,
        api,
    })
}

/// Poll `f` every 20 ms until it holds, at most until `deadline`.
async fn until<F, Fut>(deadline: Instant, what: &'static str, mut f: F) -> Result<(), NetError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, NetError>>,
{
    loop {
        if f().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(NetError::Timeout(what));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Build `t` on a fresh local chain in `dir` (node configurations, keys, databases and logs),
/// run its workload (printing progress when asked), close every channel and check every payout.
pub async fn run(t: &Topology, dir: PathBuf, opts: &NetOptions) -> Result<NetReport, NetError> {
    let edges = t.edges()?;
    let peers = t.hubs * t.peers_per_hub;
    let nodes = t.hubs + peers;
    std::fs::create_dir_all(&dir).map_err(|e| NetError::Io(e.to_string()))?;
    let devnet = contracts::Devnet::start_with(contracts::devnet::DevnetOptions {
        accounts: Some(nodes + 1),
        ..Default::default()
    })
    .await?;
    let say = |s: String| {
        if opts.verbose {
            println!("{s}");
        }
    };
    say(format!(
        "chain {} (adjudicator {}); hubs {}, hub-to-hub channels {}, peers {peers}; \
         every node a `hub serve` process (configurations and logs in {})",
        devnet.endpoint(),
        devnet.deployment().adjudicator,
        t.hubs,
        edges.len(),
        dir.display()
    ));
    let common = Common {
        dir: &dir,
        rpc: devnet.endpoint().to_string(),
        chain_id: devnet.chain_id(),
        adjudicator: devnet.deployment().adjudicator,
        opts,
    };
    // Node i is dev account i (account 0 deployed the contracts).
    let mut procs: Vec<Proc> = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let signer = devnet
            .signer(1 + i)
            .ok_or(NetError::Invalid("no such dev account".into()))?;
        let key = signer.to_bytes();
        let hub = (i < t.hubs).then_some(i);
        procs.push(spawn(&common, i, key.as_slice(), hub, t).await?);
    }
    let hub_of = |p: usize| p % t.hubs; // client p is node hubs + p
    // Every channel: (opener, acceptor). Hubs' channels first, then each client's to its hub.
    let mut links: Vec<(usize, usize)> = edges.clone();
    links.extend((0..peers).map(|p| (t.hubs + p, hub_of(p))));
    for &(a, b) in &links {
        let (pa, pb) = (&procs[a], &procs[b]);
        let _: serde_json::Value = pa
            .post(
                "/connect",
                serde_json::json!({"addr": pb.addr, "address": pb.address}),
            )
            .await?;
    }
    // Opens run in parallel across openers (each its own chain account), in order per opener.
    let mut channels: Vec<(usize, ChannelId)> = Vec::with_capacity(links.len());
    {
        let mut by_opener: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &(a, b) in &links {
            by_opener.entry(a).or_default().push(b);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (a, bs) in by_opener {
            let api = procs[a].api.clone();
            let to: Vec<Address> = bs.iter().map(|&b| procs[b].address).collect();
            let deposit = t.deposit;
            tasks.spawn(async move {
                let mut ids = Vec::new();
                for hub in to {
                    let v: serde_json::Value = api
                        .post(
                            "/open",
                            serde_json::json!({"hub": hub, "deposit": deposit.to_string()}),
                        )
                        .await
                        .map_err(|source| NetError::Api { node: a, source })?;
                    let id: ChannelId = v
                        .get("channel")
                        .and_then(|c| serde_json::from_value(c.clone()).ok())
                        .ok_or(NetError::Invalid("the open's reply has no channel".into()))?;
                    ids.push((a, id));
                }
                Ok::<_, NetError>(ids)
            });
        }
        while let Some(r) = tasks.join_next().await {
            let ids = r.map_err(|e| NetError::Io(e.to_string()))??;
            channels.extend(ids);
        }
        channels.sort();
    }
    // Funded (collateral credited) and the map known to every client.
    let deadline = Instant::now() + Duration::from_secs(120);
    for &(opener, id) in &channels {
        let p = &procs[opener];
        until(deadline, "every channel to be funded", || async {
            Ok(p.channel(id)
                .await?
                .is_some_and(|c| c.funded && c.theirs.0 == t.deposit))
        })
        .await?;
    }
    for p in &procs[t.hubs..] {
        until(deadline, "gossip to reach every client", || async {
            let g: Vec<GossipInfo> = p.get("/gossip").await?;
            Ok(g.len() == edges.len() && g.iter().all(|c| c.policies.iter().all(Option::is_some)))
        })
        .await?;
    }
    say(format!(
        "{} channels funded on chain; every client knows the {} hub-to-hub channels",
        channels.len(),
        edges.len()
    ));

    let mut report = workload(t, &procs, opts.verbose).await?;

    // Close everything; each payout on chain must be the final state's.
    let mut finals: BTreeMap<ChannelId, [u128; 2]> = BTreeMap::new();
    for &(opener, id) in &channels {
        let p = &procs[opener];
        until(
            Instant::now() + Duration::from_secs(60),
            "locks to clear before closing",
            || async { Ok(p.channel(id).await?.is_some_and(|c| c.htlcs.is_empty())) },
        )
        .await?;
        let _: serde_json::Value = p
            .post("/close", serde_json::json!({ "channel": id }))
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for &(opener, id) in &channels {
        let p = &procs[opener];
        until(deadline, "every channel to be paid out", || async {
            Ok(p.channel(id).await?.is_some_and(|c| c.concluded))
        })
        .await?;
        let c = p
            .channel(id)
            .await?
            .ok_or(NetError::Payout(id, "the opener forgot it".into()))?;
        // The opener is participant A.
        finals.insert(id, [c.ours.0, c.theirs.0]);
    }
    let mut paid: BTreeMap<ChannelId, [u128; 2]> = BTreeMap::new();
    let client = devnet.client(0).await?;
    for ev in client.events(0).poll().await? {
        if let EventKind::Adjudicator(AdjudicatorEvents::Concluded(c)) = ev.kind {
            let amount = |v: alloy::primitives::U256| u128::try_from(v).unwrap_or(u128::MAX);
            paid.insert(ChannelId(c.channelId), [amount(c.toA), amount(c.toB)]);
        }
    }
    for (id, want) in &finals {
        match paid.get(id) {
            Some(got) if got == want => report.channels_paid_out += 1,
            Some(got) => {
                return Err(NetError::Payout(
                    *id,
                    format!("paid {got:?} on chain, its final state says {want:?}"),
                ));
            }
            None => return Err(NetError::Payout(*id, "no payout on chain".into())),
        }
    }
    say(format!(
        "{} channels closed; every payout on chain is exactly its final state",
        report.channels_paid_out
    ));
    // Stop every node cleanly (SIGTERM) before the chain goes away; drop kills stragglers.
    for p in &procs {
        let _ = Command::new("kill")
            .args(["-TERM", &p.child.id().to_string()])
            .status();
    }
    for p in &mut procs {
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(procs);
    Ok(report)
}

/// The payment workload: random payer and payee among the clients (or across the line),
/// `concurrency` payments at a time, each with up to three routes.
async fn workload(t: &Topology, procs: &[Proc], verbose: bool) -> Result<NetReport, NetError> {
    let peers = t.hubs * t.peers_per_hub;
    let clients: Vec<usize> = (0..peers).collect();
    let (payers, payees): (Vec<usize>, Vec<usize>) = match t.workload {
        Workload::Random => (clients.clone(), clients),
        Workload::Across => (
            clients
                .iter()
                .copied()
                .filter(|p| p % t.hubs == 0)
                .collect(),
            clients
                .iter()
                .copied()
                .filter(|p| p % t.hubs == t.hubs - 1)
                .collect(),
        ),
    };
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
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..batch {
            let from = payers[rng.random_range(0..payers.len())];
            let mut to = payees[rng.random_range(0..payees.len())];
            if to == from {
                // Only possible with one client list: take the next client.
                to = (to + 1) % peers;
            }
            let amount = rng.random_range(1_000_000_000..=t.max_amount);
            let (payer, payee) = (&procs[t.hubs + from], &procs[t.hubs + to]);
            let (payer_api, payee_api) = (payer.api.clone(), payee.api.clone());
            let (payer_i, payee_i) = (payer.index, payee.index);
            let hub = procs[to % t.hubs].address;
            let id = B256::from(alloy::primitives::U256::from(k + 1));
            k += 1;
            tasks.spawn(async move {
                let v: serde_json::Value = payee_api
                    .post(
                        "/invoice",
                        serde_json::json!({"amount": amount.to_string(), "hub": hub, "valid_secs": 3600}),
                    )
                    .await
                    .map_err(|source| NetError::Api { node: payee_i, source })?;
                let inv = v
                    .get("invoice")
                    .and_then(|i| i.as_str())
                    .ok_or(NetError::Invalid("the invoice reply has no invoice".into()))?
                    .to_string();
                let started = Instant::now();
                // A failed payment is an outcome, not an error of the harness.
                let p: Result<PaymentInfo, _> = payer_api
                    .post(
                        "/pay",
                        serde_json::json!({"invoice": inv, "id": id, "attempts": 3}),
                    )
                    .await;
                let p = p.map_err(|e| format!("payment {id} by node {payer_i}: {e}"));
                Ok::<_, NetError>((started.elapsed(), p))
            });
        }
        while let Some(r) = tasks.join_next().await {
            let (lat, p) = r.map_err(|e| NetError::Io(e.to_string()))??;
            match p {
                Ok(p) => {
                    report.attempts += p.attempts;
                    if p.status == "succeeded" {
                        report.succeeded += 1;
                        report.fees += p.fee.0;
                        latencies.push(lat);
                    } else if verbose {
                        println!(
                            "payment {} {} after {} routes: {}",
                            p.id,
                            p.status,
                            p.attempts,
                            p.reason.as_deref().unwrap_or("no reason given")
                        );
                    }
                }
                Err(e) if verbose => println!("{e}"),
                Err(_) => {}
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
    report.per_second = report.succeeded as f64 / t0.elapsed().as_secs_f64().max(1e-9);
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    report.p50_ms = pct(0.5);
    report.p99_ms = pct(0.99);
    if verbose {
        println!(
            "{}/{} succeeded ({} routes tried); p50 {:.1} ms, p99 {:.1} ms; {:.0} payments/s; fees {} wei",
            report.succeeded,
            report.payments,
            report.attempts,
            report.p50_ms,
            report.p99_ms,
            report.per_second,
            report.fees
        );
    }
    Ok(report)
}
