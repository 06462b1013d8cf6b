//! The node: its state (channels, sessions, store, options) and how it starts and stops.
//!
//! Hubs and peers run the same code; a hub also listens. Everything the node decides is in
//! the machine `htlc::node::Node` it holds; the rest of this crate pumps it: `pump` carries a
//! step's output to the store, the sessions, the events and the chain; `engine` moves QUIC
//! frames in, `payments` and `onchain` turn the operator's commands and the chain's events
//! into steps, `session` keeps each peer's live writer, `persist` maps records to RocksDB.
//!
//! * **Concurrency.** One task per session reads that peer's frames and hands all those
//!   buffered to the node machine as one step; steps are short (CPU only) and taken one at a
//!   time under the machine's lock, and the store's group commit shares fsyncs among them.
//! * **Isolation.** A peer may only touch channels whose counterparty it has proven to be.

use crate::error::NodeError;
use crate::events::NodeEvent;
use crate::session::Sessions;
use crate::store::Store;
use crate::wire;
use alloy::primitives::{Address, B256};
use htlc::ops::Limits;
use htlc::sig::Keys;
use htlc::{Amount, ChannelId, ChannelParams, SignedState};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use tokio::sync::{broadcast, oneshot};
use tracing::info;

/// Engine settings.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Chain id channels must be on.
    pub chain_id: u64,
    /// Adjudicator channels must use.
    pub adjudicator: Address,
    /// Bounds of every channel's states.
    pub limits: Limits,
    /// Largest frame accepted.
    pub max_frame: usize,
    /// Frames per second read from one peer.
    pub frames_per_second: u32,
    /// Ledger channels one peer may hold with us.
    pub max_channels_per_peer: usize,
    /// Challenge window of the channels we open, seconds.
    pub challenge_duration: u64,
    /// The chain, for deposits and payouts. Without it channels are off-chain only and count
    /// as funded from the start (tests and simulations).
    pub chain: Option<contracts::ChainClient>,
    /// Collateral we add on chain to every channel a peer opens with us, once the peer's
    /// deposit is seen (inbound liquidity for the peer; 0: none).
    pub collateral: Amount,
    /// Whether we submit the cooperative close ourselves as soon as a final state is co-signed
    /// (the peer may do it too; the second submission is recognised as done).
    pub auto_settle: bool,
    /// How often stored chain intents that failed are sent again.
    pub chain_retry: std::time::Duration,
    /// How often the chain is polled for the adjudicator's events.
    pub chain_poll: std::time::Duration,
    /// Our forwarding policy (a hub announces it to the peers whose channels it accepts).
    pub policy: htlc::forward::ForwardPolicy,
    /// Whether we reveal preimages for our invoices (false only to test a payee that never
    /// does).
    pub reveal_preimages: bool,
    /// How often our expired HTLC locks are looked for and taken back.
    pub expiry_check: std::time::Duration,
    /// After a cooperative close the peer proposed, how long to let the peer pay it out on
    /// chain before doing it ourselves (the proposer pays at once).
    pub close_grace: std::time::Duration,
    /// The clock HTLC expiries are measured with.
    pub clock: crate::clock::Clock,
    /// Assets a channel may hold (`Address::ZERO` is ETH): opens in any other asset are refused
    /// and payments are forwarded only within one asset (issue 12, attack 4).
    pub assets: Vec<Address>,
    /// Smallest opening deposit a peer must bring to a channel it opens with us (at least 1
    /// wei: an empty channel is refused, and our collateral follows only a real deposit).
    pub min_peer_deposit: Amount,
    /// Most QUIC connections served at once, handshakes included; more are refused.
    pub max_connections: usize,
    /// The bearer token the HTTP API requires (random unless set; `hub serve` keeps it in a
    /// file only the operator can read).
    pub api_token: String,
    /// Seconds after which a channel a peer opened but never funded (or that we proposed and
    /// the peer never countersigned) is deleted (rule 10: abandoned openings cost nothing).
    pub abandon_after_secs: u64,
    /// New connections accepted per second, in all; more are refused before any TLS work.
    pub handshakes_per_second: u32,
    /// Frames per second read from all strangers (keys without a channel) together: fresh
    /// keys cannot buy themselves more of the node than this.
    pub stranger_frames_per_second: u32,
    /// Serve as a watchtower watching at most this many channels (`None`: not a tower).
    pub tower: Option<usize>,
    /// Watchtowers we hand the latest state of each channel to.
    pub towers: Vec<Address>,
    /// Where payouts the adjudicator could not deliver to us are withdrawn to (`None`: our
    /// own address).
    pub withdraw_to: Option<Address>,
    /// Serve virtual channels between our peers under these rules (`None`: refuse to).
    pub virtual_policy: Option<htlc::vchan::VirtualPolicy>,
    /// The most of our own money a virtual channel offered to us may lock (default none).
    pub virtual_max_own: Amount,
    /// A party closes each virtual channel this long before its end; a hub takes one its
    /// parties left open on chain this long after it (default 600 s).
    pub virtual_end_margin: std::time::Duration,
    /// Announce our channels with other hubs, relay gossip and serve it to peers (a hub's).
    pub announce: bool,
}

impl NodeOptions {
    /// What this node accepts in a channel a peer opens with it.
    pub fn open_policy(&self) -> htlc::node::admission::OpenPolicy {
        htlc::node::admission::OpenPolicy {
            chain_id: self.chain_id,
            adjudicator: self.adjudicator,
            assets: self.assets.clone(),
            min_peer_deposit: self.min_peer_deposit,
            max_channels_per_peer: self.max_channels_per_peer,
        }
    }
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            chain_id: 31337,
            adjudicator: Address::ZERO,
            limits: Limits::default(),
            max_frame: wire::DEFAULT_MAX_FRAME,
            frames_per_second: 2000,
            max_channels_per_peer: 16,
            challenge_duration: 3600,
            chain: None,
            collateral: Amount::ZERO,
            auto_settle: true,
            chain_retry: std::time::Duration::from_secs(5),
            chain_poll: std::time::Duration::from_millis(500),
            policy: htlc::forward::ForwardPolicy::default(),
            reveal_preimages: true,
            expiry_check: std::time::Duration::from_secs(1),
            close_grace: std::time::Duration::from_secs(120),
            clock: crate::clock::Clock::system(),
            assets: vec![Address::ZERO],
            min_peer_deposit: Amount(1),
            max_connections: 10_000,
            api_token: new_api_token(),
            abandon_after_secs: 24 * 3600,
            handshakes_per_second: 100,
            stranger_frames_per_second: 1000,
            tower: None,
            towers: Vec::new(),
            withdraw_to: None,
            virtual_policy: None,
            virtual_max_own: Amount::ZERO,
            virtual_end_margin: std::time::Duration::from_secs(600),
            announce: false,
        }
    }
}

impl NodeOptions {
    /// The node machine's settings under these options.
    pub fn machine_config(&self) -> htlc::node::Config {
        htlc::node::Config {
            policy: self.policy,
            limits: self.limits,
            open: self.open_policy(),
            collateral: htlc::node::chain::CollateralPolicy {
                collateral: self.collateral,
                min_peer_deposit: self.min_peer_deposit,
            },
            on_chain: self.chain.is_some(),
            auto_settle: self.auto_settle && self.chain.is_some(),
            close_grace_secs: self.close_grace.as_secs(),
            route_ttl_secs: ROUTE_INSTRUCTION_TTL_SECS,
            abandon_after_secs: self.abandon_after_secs,
            max_durable_backlog: MAX_DURABLE_BACKLOG,
            reveal_preimages: self.reveal_preimages,
            tower: self
                .tower
                .map(|max_watched| htlc::node::tower::TowerPolicy {
                    max_watched,
                    chain_id: self.chain_id,
                    adjudicator: self.adjudicator,
                }),
            towers: self.towers.clone(),
            withdraw_to: self.withdraw_to,
            virtual_policy: self.virtual_policy,
            virtual_max_own: self.virtual_max_own,
            virtual_hold_secs: VIRTUAL_HOLD_SECS,
            virtual_chain_patience_secs: VIRTUAL_CHAIN_PATIENCE_SECS,
            virtual_end_margin_secs: self.virtual_end_margin.as_secs(),
            announce: self.announce,
            forward_only_to_reachable: true,
        }
    }
}

pub use htlc::node::records::ChannelRecord;

/// Unacknowledged frames in a peer's outbox beyond which its refusals are no longer written
/// (rule 10: a peer that never acknowledges cannot grow our disk with them).
pub const MAX_DURABLE_BACKLOG: u64 = 1024;

/// Seconds a hub holds one party's release of a virtual channel's leg waiting for the other's.
pub const VIRTUAL_HOLD_SECS: u64 = 60;

/// Seconds a hub of a chain waits for the next hub to complete or refuse its release of their
/// shared leg before taking that ledger to chain (ten of the next hub's holds).
pub const VIRTUAL_CHAIN_PATIENCE_SECS: u64 = 600;

/// Seconds a route instruction waits for its HTLC before it is deleted (the payer sends the
/// HTLC right after it; rule 10: a peer cannot pile them up).
pub const ROUTE_INSTRUCTION_TTL_SECS: u64 = 600;

pub(crate) struct Inner {
    pub(crate) keys: Keys,
    pub(crate) store: Store,
    pub(crate) opts: NodeOptions,
    /// The node machine: every channel, link and payment record. Locked for one step at a
    /// time (a step is CPU only); its output is queued to the store before the lock is let go,
    /// so steps are written, and their frames sent, in the order they were taken.
    pub(crate) machine: std::sync::Mutex<htlc::node::Node>,
    /// Set when a write of a step failed: memory is ahead of the disk, so the node takes no
    /// further step and stops (a restart resumes from the disk).
    pub(crate) poisoned: std::sync::atomic::AtomicBool,
    /// Every peer's live session writer.
    pub(crate) sessions: Sessions,
    pub(crate) events: broadcast::Sender<NodeEvent>,
    /// Who waits for which of our payments to end ([`Node::wait_settled`]): woken by the
    /// payment's outcome event, so a waiter does not read every other event of the node.
    pub(crate) settling: std::sync::Mutex<HashMap<B256, Vec<oneshot::Sender<()>>>>,
    /// Sends chain intents one at a time (with a chain only).
    pub(crate) submitter: Option<crate::chain::Submitter>,
    /// Wakes the chain task: an intent was stored.
    pub(crate) chain_kick: tokio::sync::Notify,
    /// Frames read from strangers, all together (`NodeOptions::stranger_frames_per_second`).
    pub(crate) strangers: governor::DefaultDirectRateLimiter,
    /// Set by [`Node::shutdown`]: background tasks end.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    /// Every endpoint we listen or dial on, closed by [`Node::shutdown`].
    pub(crate) endpoints: std::sync::Mutex<Vec<(u64, quinn::Endpoint)>>,
    /// Prometheus metrics.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Time steps held the machine's lock, microseconds in all (what bounds a node's rate
    /// when it nears the wall time).
    pub(crate) step_micros: std::sync::atomic::AtomicU64,
}

/// A hub or a peer: channels, sessions, storage.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

impl Node {
    /// Start a node on an opened store, restoring every channel it holds.
    pub fn start(keys: Keys, store: Store, opts: NodeOptions) -> Result<Node, NodeError> {
        let (events, _) = broadcast::channel(4096);
        crate::persist::check_schema(&store)?;
        let records = crate::persist::load(&store)?;
        let channels = records.channels.len();
        let machine = htlc::node::Node::restore(keys.clone(), opts.machine_config(), records)?;
        info!(channels, address = %keys.address(), "node started");
        let submitter = opts
            .chain
            .clone()
            .map(|c| crate::chain::Submitter::new(store.clone(), c));
        let metrics = crate::metrics::Metrics::new(&store.stats().sync_seconds)?;
        let node_stranger_rate = opts.stranger_frames_per_second;
        let node = Node {
            inner: Arc::new(Inner {
                metrics,
                keys,
                store,
                opts,
                machine: std::sync::Mutex::new(machine),
                poisoned: std::sync::atomic::AtomicBool::new(false),
                sessions: Sessions::default(),
                events,
                endpoints: std::sync::Mutex::new(Vec::new()),
                submitter,
                chain_kick: tokio::sync::Notify::new(),
                settling: std::sync::Mutex::new(HashMap::new()),
                strangers: governor::RateLimiter::direct(governor::Quota::per_second(
                    NonZeroU32::new(node_stranger_rate).unwrap_or(NonZeroU32::MIN),
                )),
                stopping: tokio::sync::watch::Sender::new(false),
                step_micros: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        if node.inner.submitter.is_some() {
            node.spawn_chain_tasks()?;
        }
        node.spawn_payment_tasks();
        Ok(node)
    }

    /// Time steps have held the node machine's lock so far, microseconds.
    pub fn step_micros(&self) -> u64 {
        self.inner
            .step_micros
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Read the node machine (never across an await).
    pub(crate) fn read<R>(&self, f: impl FnOnce(&htlc::node::Node) -> R) -> R {
        f(&self.inner.machine.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The record of a channel as it stands.
    pub fn channel_record(&self, id: ChannelId) -> Option<ChannelRecord> {
        self.read(|m| m.channel_record(id))
    }

    /// The parameters of a channel (chain, adjudicator, participants, nonce).
    pub async fn channel_params(&self, id: ChannelId) -> Option<ChannelParams> {
        self.read(|m| m.channel(id).map(|c| c.snapshot().params().clone()))
    }

    /// Now, by the node's clock.
    pub fn now(&self) -> htlc::Expiry {
        self.inner.opts.clock.now()
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// Our address.
    pub fn address(&self) -> Address {
        self.inner.keys.address()
    }

    /// Our public key (payers build our onion layer with it).
    pub fn public_key(&self) -> secp256k1::PublicKey {
        self.inner.keys.public_key()
    }

    /// Subscribe to events.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// What this watchtower keeps for a client's channel, if it watches it.
    pub fn watched(&self, id: ChannelId) -> Option<htlc::node::tower::Watched> {
        self.read(|m| m.book().watched.get(&id).cloned())
    }

    /// How many channels this watchtower watches.
    pub fn watched_count(&self) -> usize {
        self.read(|m| m.book().watched.len())
    }

    /// The latest co-signed state of a channel.
    pub async fn channel(&self, id: ChannelId) -> Option<SignedState> {
        self.read(|m| m.channel(id).map(|c| c.latest().clone()))
    }

    /// Ids of every channel.
    pub fn channel_ids(&self) -> Vec<ChannelId> {
        self.read(|m| m.channel_ids().collect())
    }

    /// Close every connection and endpoint; session tasks end and release the node.
    pub fn shutdown(&self) {
        self.close_endpoints();
    }

    /// As [`Node::shutdown`], then wait (a second at most) until the endpoints have told every
    /// peer the connection is closed, so peers reconnect at once instead of waiting for an
    /// idle timeout. A process that is about to exit calls this.
    pub async fn stop(&self) {
        for ep in self.close_endpoints() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), ep.wait_idle()).await;
        }
    }

    pub(crate) fn close_endpoints(&self) -> Vec<quinn::Endpoint> {
        // Under the list's lock, so no endpoint registered concurrently is missed: one made
        // after this sees `stopping` and is closed at once (`Node::keep_endpoint`).
        let mut list = self
            .inner
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.inner.stopping.send_replace(true);
        let eps = std::mem::take(&mut *list);
        drop(list);
        let eps: Vec<quinn::Endpoint> = eps.into_iter().map(|(_, ep)| ep).collect();
        for ep in &eps {
            ep.close(0u32.into(), b"shutdown");
        }
        eps
    }

    /// Whether `peer` holds any channel record with us (even one not yet funded).
    pub(crate) fn has_channel(&self, peer: Address) -> bool {
        self.read(|m| m.has_channel(peer))
    }
}

impl Inner {
    /// Tell the application (and the metrics) what happened.
    pub(crate) fn emit(&self, ev: NodeEvent) {
        self.metrics.on_event(&ev);
        if let NodeEvent::PaymentSucceeded { id, .. } | NodeEvent::PaymentFailed { id, .. } = &ev {
            let woken = self.settling().remove(id);
            for w in woken.into_iter().flatten() {
                let _ = w.send(());
            }
        }
        // No subscriber is not an error: events are also in the store and the logs.
        let _ = self.events.send(ev);
    }

    /// The waiters for our payments' outcomes.
    pub(crate) fn settling(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<B256, Vec<oneshot::Sender<()>>>> {
        self.settling.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A fresh random API token: 32 bytes as hex.
pub fn new_api_token() -> String {
    alloy::primitives::hex::encode(rand::random::<[u8; 32]>())
}
