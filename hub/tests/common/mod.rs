//! Shared fixtures of the hub's integration tests: temporary directories, the real `hub`
//! binary as a child process (killed on drop), waiting helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use htlc::ChannelId;
use hub::events::NodeEvent;
use hub::node::{ChannelRecord, Node, NodeOptions};
use hub::store::{Cf, Store};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::sync::broadcast;

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);
impl TempDir {
    /// A fresh directory tagged `tag`.
    pub fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!(
            "vhub-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// A loopback address with an OS-assigned port.
pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// The hub process; killed on drop so no test leaves one behind.
pub struct HubProc {
    pub child: Child,
    pub addr: SocketAddr,
}
impl Drop for HubProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
impl HubProc {
    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

/// Start the real `hub serve` on `cfg`, optionally armed to abort at a crash point, and wait for
/// its banner.
pub fn start_hub(cfg: &Path, crash_at: Option<&str>) -> HubProc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hub"));
    cmd.args(["serve", "--config"])
        .arg(cfg)
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("VHUB_TEST_HUB_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        });
    cmd.env(
        "RUST_LOG",
        std::env::var("VHUB_TEST_HUB_LOG").unwrap_or_else(|_| "warn".into()),
    );
    match crash_at {
        Some(spec) => cmd.env("VHUB_CRASH_AT", spec),
        None => cmd.env_remove("VHUB_CRASH_AT"),
    };
    let mut child = cmd.spawn().expect("hub binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected hub banner {line:?}"));
    HubProc { child, addr }
}

/// Read the hub's record of a channel from its database (after it stopped).
pub fn hub_record(data: &Path, id: ChannelId) -> Option<ChannelRecord> {
    let store = Store::open(data).unwrap();
    store.get(Cf::Channels, id.0.as_slice()).unwrap()
}

/// Wait (up to 30 s) for an event matching `f`.
pub async fn wait_for(
    rx: &mut broadcast::Receiver<NodeEvent>,
    f: impl Fn(&NodeEvent) -> bool,
) -> NodeEvent {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match rx.recv().await {
                Ok(ev) if f(&ev) => return ev,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("event in time")
}

/// Wait (up to 30 s) until `f` holds for the node's latest co-signed state of `id`.
pub async fn wait_state(n: &Node, id: ChannelId, f: impl Fn(&htlc::SignedState) -> bool) {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if n.channel(id).await.is_some_and(|s| f(&s)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("state reached in time")
}

/// Reopen a store whose previous node is shutting down (its writer may take a moment).
pub async fn reopen(dir: &Path) -> Store {
    for _ in 0..200 {
        if let Ok(s) = Store::open(dir) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("store did not reopen");
}

pub mod adversary;
#[allow(dead_code)]
pub mod proxy;

/// Number of entries in each column family of a store (what a test compares before and after
/// an attack: a stranger must not make the node write).
pub fn store_entries(store: &Store) -> Vec<(Cf, usize)> {
    [Cf::Meta, Cf::Outbox, Cf::Channels, Cf::Locks, Cf::Chain]
        .into_iter()
        .map(|cf| (cf, store.scan_raw(cf, &[]).unwrap().len()))
        .collect()
}

/// Write the real hub's configuration into `dir` for `net`: account 1's key, a `data`
/// directory, and `funding` (the lines of its `[funding]` section). Returns its path.
#[allow(dead_code)]
pub fn write_hub_config(dir: &Path, net: &contracts::Devnet, funding: &str) -> std::path::PathBuf {
    let key = net.signer(1).unwrap().credential().to_bytes();
    std::fs::write(dir.join("hub.key"), alloy::primitives::hex::encode(key)).unwrap();
    let cfg = dir.join("hub.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nkey_file = \"hub.key\"\ndata_dir = \"data\"\n\
         chain_rpc = \"{}\"\nchain_id = {}\nadjudicator = \"{}\"\n\n[funding]\n{funding}",
        net.endpoint(),
        net.chain_id(),
        net.deployment().adjudicator
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// What the adjudicator paid each address out of channel `id` with `participants` [A, B]
/// (conclusions, unlocks and guarantee resolutions), read from its events.
pub async fn payouts(
    client: &contracts::ChainClient,
    id: htlc::ChannelId,
    participants: [alloy::primitives::Address; 2],
) -> std::collections::HashMap<alloy::primitives::Address, u128> {
    use contracts::EventKind;
    use contracts::bindings::Adjudicator::AdjudicatorEvents as E;
    let mut w = client.events(0);
    let mut paid = std::collections::HashMap::new();
    loop {
        let events = w.poll().await.unwrap();
        if events.is_empty() {
            break;
        }
        for ev in events {
            let EventKind::Adjudicator(ev) = ev.kind else {
                continue;
            };
            let (a, b) = match ev {
                E::Concluded(c) if c.channelId == id.0 => (c.toA, c.toB),
                E::GuaranteeResolved(g) if g.channelId == id.0 => (g.toA, g.toB),
                E::LockResolved(l) if l.channelId == id.0 => {
                    *paid.entry(l.to).or_insert(0u128) += l.amount.to::<u128>();
                    continue;
                }
                _ => continue,
            };
            *paid.entry(participants[0]).or_insert(0u128) += a.to::<u128>();
            *paid.entry(participants[1]).or_insert(0u128) += b.to::<u128>();
        }
    }
    paid
}

/// Start a node on `net` as dev account `i` with its database in `dir`: the chain polled every
/// 10 ms and its events every 50 ms, failed sends retried after 500 ms, a close the peer
/// proposed paid out after 1 s; `tune` edits the options before the start.
pub async fn chain_node(
    net: &contracts::Devnet,
    i: usize,
    dir: &Path,
    tune: impl FnOnce(&mut NodeOptions),
) -> Node {
    let client = net.client(i).await.unwrap();
    client.set_poll_interval(Duration::from_millis(10));
    let mut o = NodeOptions {
        chain_id: net.chain_id(),
        adjudicator: net.deployment().adjudicator,
        chain: Some(client),
        chain_poll: Duration::from_millis(50),
        chain_retry: Duration::from_millis(500),
        close_grace: Duration::from_secs(1),
        ..NodeOptions::default()
    };
    tune(&mut o);
    Node::start(
        htlc::sig::Keys::from_signer(net.signer(i).unwrap()),
        Store::open(dir).unwrap(),
        o,
    )
    .unwrap()
}

/// [`start_hub`] from async code (it blocks until the banner), unarmed.
pub async fn restart_hub(cfg: &Path) -> HubProc {
    let cfg = cfg.to_path_buf();
    tokio::task::spawn_blocking(move || start_hub(&cfg, None))
        .await
        .unwrap()
}

/// Wait (60 s at most) for channel `id`'s payout on chain among `events`: what it paid to A
/// and to B.
pub async fn concluded(
    events: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
    id: ChannelId,
) -> [htlc::Amount; 2] {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(NodeEvent::Concluded {
                channel_id,
                to_a,
                to_b,
            }) = events.recv().await
                && channel_id == id
            {
                return [to_a, to_b];
            }
        }
    })
    .await
    .expect("the ledger is paid out on chain")
}
