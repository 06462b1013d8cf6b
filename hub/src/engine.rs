//! The node engine: channels, sessions and reliable delivery. Hubs and peers run the same code;
//! a hub also listens.
//!
//! * **Reliable delivery.** Every [`Body`] we send is numbered per peer and written to the
//!   durable outbox in the same synced batch as the state change that produced it (rule 2).
//!   It is sent when a session is up and re-sent, in order, on every reconnect until the peer
//!   acknowledges it. The receiver processes sequence numbers in order, ignores (and re-acks)
//!   duplicates, refuses gaps, and persists its receive counter in the same batch as the
//!   message's effects, so a crash at any point neither loses nor repeats a message.
//! * **Concurrency.** One task per session reads and processes that peer's frames in order.
//!   Each channel has its own lock, so different peers' channels progress in parallel; the
//!   store's group commit shares fsyncs among them. There is no global loop.
//! * **Isolation.** A peer may only touch channels whose counterparty it has proven to be.
//!   Frames that are malformed, oversized, out of sequence or refused by a channel's machine
//!   get a typed error back and change nothing. Reading is rate limited per peer (back pressure).

use crate::store::{Batch, Cf, Store, StoreError};
use crate::transport::{self, Session};
use crate::wire::{self, Body, ErrorCode, Frame};
use alloy::primitives::{Address, U256};
use htlc::node::link::{Inbound, Inbox, Outbox};
use htlc::ops::Limits;
use htlc::sig::Keys;
use htlc::update::sign_state;
use htlc::{Amount, Channel, ChannelId, ChannelParams, ChannelState, Effect, Event, SignedState};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use tokio::sync::{Mutex, broadcast, mpsc};
use tracing::{Instrument, debug, info, info_span, warn};

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
            clock: crate::clock::Clock::system(),
            assets: vec![Address::ZERO],
            min_peer_deposit: Amount(1),
            max_connections: 10_000,
            api_token: new_api_token(),
            abandon_after_secs: 24 * 3600,
            handshakes_per_second: 100,
            stranger_frames_per_second: 1000,
        }
    }
}

/// Engine errors.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Storage failed: the node must stop, nothing was sent.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// No such channel.
    #[error("unknown channel {0}")]
    UnknownChannel(ChannelId),
    /// The channel's machine refused.
    #[error("protocol: {0}")]
    Protocol(#[from] htlc::ProtocolError),
    /// A transport failure.
    #[error("transport: {0}")]
    Transport(#[from] transport::TransportError),
    /// A chain transaction failed.
    #[error("chain: {0}")]
    Tx(#[from] crate::chain::TxError),
    /// A payment cannot be made through the hub as asked.
    #[error(transparent)]
    Plan(#[from] htlc::node::payment::PlanError),
    /// The request is invalid.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// What the node tells its application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// A channel exists (both signatures on its opening state).
    ChannelOpened {
        /// The channel.
        channel_id: ChannelId,
        /// The counterparty.
        peer: Address,
    },
    /// A new co-signed state of a channel.
    Committed {
        /// The channel.
        channel_id: ChannelId,
        /// Its version.
        version: u64,
    },
    /// A channel's final state is co-signed.
    Closed {
        /// The channel.
        channel_id: ChannelId,
    },
    /// A peer's frame was refused (logged too).
    Refused {
        /// The peer.
        peer: Address,
        /// Why.
        code: ErrorCode,
    },
    /// A channel's deposits are on chain: it may be used.
    Funded {
        /// The channel.
        channel_id: ChannelId,
    },
    /// A top-up we deposited on chain is credited to us by a co-signed update (proposed).
    ToppedUp {
        /// The channel.
        channel_id: ChannelId,
        /// What was deposited.
        amount: Amount,
    },
    /// A channel was paid out on chain.
    Concluded {
        /// The channel.
        channel_id: ChannelId,
        /// Paid to A.
        to_a: Amount,
        /// Paid to B.
        to_b: Amount,
    },
    /// Someone registered an older state on chain; we answered with our latest (rule 8).
    Challenged {
        /// The channel.
        channel_id: ChannelId,
        /// Version they registered.
        disputed: u64,
        /// Version we answered with.
        ours: u64,
    },
    /// A payment of ours was paid: the payee revealed the preimage.
    PaymentSucceeded {
        /// The payment id.
        id: alloy::primitives::B256,
        /// Fee paid to the hub.
        fee: Amount,
    },
    /// A payment of ours failed back (`reason` as the failing node gave it) or expired
    /// (`None`). Nothing was paid.
    PaymentFailed {
        /// The payment id.
        id: alloy::primitives::B256,
        /// Why, if a node said.
        reason: Option<htlc::FailureReason>,
    },
    /// An invoice of ours was paid.
    PaymentReceived {
        /// Its hashlock.
        hashlock: htlc::Hashlock,
        /// Amount received.
        amount: Amount,
    },
    /// We (a hub) settled a forwarded payment on both sides and earned `fee`.
    Forwarded {
        /// Where it came in.
        in_channel: ChannelId,
        /// Where it went out.
        out_channel: ChannelId,
        /// Fee earned.
        fee: Amount,
    },
    /// A chain intent can never take effect and was dropped (operator attention needed).
    IntentDropped {
        /// The channel.
        channel_id: ChannelId,
        /// Why.
        reason: String,
    },
    /// We hold an HTLC paying our invoice without revealing (only with
    /// `NodeOptions::reveal_preimages` off, to test a payee that never reveals).
    Holding {
        /// Its hashlock.
        hashlock: htlc::Hashlock,
    },
    /// A session with a peer is up.
    Connected {
        /// The peer.
        peer: Address,
    },
    /// The peer refused a message of ours (an open, a route instruction, ...).
    RefusedByPeer {
        /// The peer.
        peer: Address,
        /// Its reason code.
        code: ErrorCode,
        /// Its explanation.
        detail: String,
    },
}

/// The persisted record of one channel.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChannelRecord {
    /// The counterparty.
    pub peer: Address,
    /// Whether the opening deposits are seen on chain (always true without a chain).
    pub funded: bool,
    /// Whether the channel was paid out on chain.
    #[serde(default)]
    pub concluded: bool,
    /// When the channel was proposed (unix seconds, node clock): an opening left unfunded or
    /// uncountersigned for `NodeOptions::abandon_after_secs` is collected.
    #[serde(default)]
    pub opened_at: u64,
    /// The machine.
    pub snapshot: htlc::Snapshot,
}

fn outbox_key(peer: Address, seq: u64) -> Vec<u8> {
    let mut k = peer.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The sequence number in an outbox key.
fn outbox_seq(key: &[u8]) -> Option<u64> {
    key.get(20..28)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

pub(crate) fn meta_key(kind: &str, peer: Address) -> Vec<u8> {
    let mut k = kind.as_bytes().to_vec();
    k.extend_from_slice(peer.as_slice());
    k
}

/// Unacknowledged frames in a peer's outbox beyond which its refusals are no longer written
/// (rule 10: a peer that never acknowledges cannot grow our disk with them).
const MAX_DURABLE_BACKLOG: u64 = 1024;

/// Longest a reconnecting peer may take to accept its backlog before it is disconnected.
const RESEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Seconds a stranger's session may last without opening a channel (rule 10: connection
/// slots are for peers, not for idle keys).
const STRANGER_SESSION: std::time::Duration = std::time::Duration::from_secs(30);

/// Frames queued for one session's stream, at most (rule 10).
const WRITE_QUEUE: usize = 4096;

/// The queue of encoded frames to one session's QUIC stream. It is bounded: a peer that does
/// not read what we send fills it and is disconnected (everything sequenced is in the durable
/// outbox and is re-sent when it comes back), so it cannot make us buffer without limit.
#[derive(Clone)]
struct Writer {
    tx: mpsc::Sender<Vec<u8>>,
    conn: quinn::Connection,
}

impl Writer {
    /// Queue a frame; a full queue disconnects the peer.
    fn push(&self, bytes: Vec<u8>) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(bytes) {
            warn!("the peer does not read what we send: disconnecting it");
            self.conn.close(4u32.into(), b"not reading");
        }
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The outbound side of one peer: the live session's writer (and its connection, closed when a newer session of the same key replaces it), if any.
#[derive(Default)]
struct Link {
    writer: Option<(u64, Writer)>,
    conn: Option<quinn::Connection>,
}

pub(crate) struct Inner {
    pub(crate) keys: Keys,
    pub(crate) store: Store,
    pub(crate) opts: NodeOptions,
    pub(crate) channels: std::sync::Mutex<HashMap<ChannelId, Arc<Mutex<ChannelRecord>>>>,
    /// Channels per counterparty: bounds them (rule 10) and finds a peer's channels without
    /// locking every other channel.
    pub(crate) per_peer: std::sync::Mutex<HashMap<Address, Vec<ChannelId>>>,
    links: std::sync::Mutex<HashMap<Address, Arc<Mutex<Link>>>>,
    /// Per peer, the last inbound sequence number processed.
    recv: std::sync::Mutex<HashMap<Address, Inbox>>,
    /// Per peer, the outbox counters: the next sequence number, and how far the peer
    /// acknowledged, so an acknowledgement deletes exactly the frames it covers, by key,
    /// without scanning the outbox (whose deleted entries RocksDB would walk again each time).
    outbox: std::sync::Mutex<HashMap<Address, Outbox>>,
    pub(crate) events: broadcast::Sender<NodeEvent>,
    generation: std::sync::atomic::AtomicU64,
    /// Sends chain intents one at a time (with a chain only).
    pub(crate) submitter: Option<crate::chain::Submitter>,
    /// Wakes the chain task: an intent was stored.
    pub(crate) chain_kick: tokio::sync::Notify,
    /// Serialises top-up credits (check and queue under one lock).
    pub(crate) credit_lock: Mutex<()>,
    /// Serialises payments (the check for a repeated payment id and its HTLC).
    pub(crate) pay_lock: Mutex<()>,
    /// Frames read from strangers, all together (`NodeOptions::stranger_frames_per_second`).
    strangers: governor::DefaultDirectRateLimiter,
    /// Peers that have (or had) a funded channel with us: known without locking any channel
    /// record, so a refusal can be decided while a record is held.
    pub(crate) funded_peers: std::sync::Mutex<std::collections::HashSet<Address>>,
    /// Set by [`Node::shutdown`]: background tasks end.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
    /// Every endpoint we listen or dial on, closed by [`Node::shutdown`].
    endpoints: std::sync::Mutex<Vec<quinn::Endpoint>>,
    /// Prometheus metrics.
    pub(crate) metrics: crate::metrics::Metrics,
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
        let mut channels = HashMap::new();
        let mut per_peer = HashMap::new();
        let mut funded_peers = std::collections::HashSet::new();
        for (_, rec) in store.scan::<ChannelRecord>(Cf::Channels, &[])? {
            let id = rec.snapshot.latest.state.channel_id;
            if rec.funded {
                funded_peers.insert(rec.peer);
            }
            per_peer.entry(rec.peer).or_insert_with(Vec::new).push(id);
            channels.insert(id, Arc::new(Mutex::new(rec)));
        }
        info!(channels = channels.len(), address = %keys.address(), "node started");
        let submitter = opts
            .chain
            .clone()
            .map(|c| crate::chain::Submitter::new(store.clone(), c));
        let metrics = crate::metrics::Metrics::new(&store.stats().sync_seconds)
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        let node_stranger_rate = opts.stranger_frames_per_second;
        let node = Node {
            inner: Arc::new(Inner {
                metrics,
                keys,
                store,
                opts,
                channels: std::sync::Mutex::new(channels),
                per_peer: std::sync::Mutex::new(per_peer),
                links: std::sync::Mutex::new(HashMap::new()),
                recv: std::sync::Mutex::new(HashMap::new()),
                outbox: std::sync::Mutex::new(HashMap::new()),
                events,
                generation: std::sync::atomic::AtomicU64::new(0),
                endpoints: std::sync::Mutex::new(Vec::new()),
                submitter,
                chain_kick: tokio::sync::Notify::new(),
                credit_lock: Mutex::new(()),
                pay_lock: Mutex::new(()),
                funded_peers: std::sync::Mutex::new(funded_peers),
                strangers: governor::RateLimiter::direct(governor::Quota::per_second(
                    NonZeroU32::new(node_stranger_rate).unwrap_or(NonZeroU32::MIN),
                )),
                stopping: tokio::sync::watch::Sender::new(false),
            }),
        };
        if node.inner.submitter.is_some() {
            node.spawn_chain_tasks()?;
        }
        node.spawn_payment_tasks();
        Ok(node)
    }

    /// The parameters of a channel (chain, adjudicator, participants, nonce).
    pub async fn channel_params(&self, id: ChannelId) -> Option<ChannelParams> {
        let rec = self.inner.channel(id)?;
        let rec = rec.lock().await;
        Some(rec.snapshot.params.clone())
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

    /// Subscribe to events.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    /// The latest co-signed state of a channel.
    pub async fn channel(&self, id: ChannelId) -> Option<SignedState> {
        let rec = self.inner.channel(id)?;
        let rec = rec.lock().await;
        Some(rec.snapshot.latest.clone())
    }

    /// Ids of every channel.
    pub fn channel_ids(&self) -> Vec<ChannelId> {
        let map = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.keys().copied().collect()
    }

    /// Listen for peers on `addr`; returns the bound address. Sessions run until the process
    /// ends.
    pub fn listen(&self, addr: SocketAddr) -> Result<SocketAddr, NodeError> {
        let endpoint = transport::server(addr)?;
        let local = endpoint
            .local_addr()
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        self.keep_endpoint(&endpoint);
        let node = self.clone();
        // Rule 10: at most `max_connections` connections at once, handshakes included (each
        // holds a permit until its session ends); more are refused before any work is done.
        let permits = Arc::new(tokio::sync::Semaphore::new(
            self.inner.opts.max_connections.max(1),
        ));
        let handshakes = governor::RateLimiter::direct(governor::Quota::per_second(
            NonZeroU32::new(self.inner.opts.handshakes_per_second).unwrap_or(NonZeroU32::MIN),
        ));
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                if handshakes.check().is_err() {
                    debug!(remote = %incoming.remote_address(), "connection refused: handshake rate");
                    incoming.refuse();
                    continue;
                }
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    warn!(remote = %incoming.remote_address(), "connection refused: at the limit");
                    incoming.refuse();
                    continue;
                };
                let node = node.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match transport::accept(incoming, &node.inner.keys, node.inner.opts.max_frame)
                        .await
                    {
                        Ok(session) => node.run_session(session).await,
                        Err(e) => warn!(error = %e, "handshake refused"),
                    }
                });
            }
        });
        info!(%local, "listening");
        Ok(local)
    }

    /// Connect to a peer (a hub) and keep the session in the background. Returns once the
    /// session is authenticated and the outbox has been re-sent.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expect: Option<Address>,
    ) -> Result<Address, NodeError> {
        let bind: SocketAddr = if addr.is_ipv4() {
            SocketAddr::from(([127, 0, 0, 1], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let endpoint = transport::client(bind)?;
        self.keep_endpoint(&endpoint);
        let session = transport::connect(
            &endpoint,
            addr,
            &self.inner.keys,
            expect,
            self.inner.opts.max_frame,
        )
        .await?;
        let peer = session.peer;
        let node = self.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _endpoint = endpoint;
            node.run_session_notify(session, Some(ready_tx)).await;
        });
        let _ = ready_rx.await;
        Ok(peer)
    }

    /// Whether a session with `peer` is up.
    pub async fn is_connected(&self, peer: Address) -> bool {
        let link = {
            let links = self.inner.links.lock().unwrap_or_else(|p| p.into_inner());
            links.get(&peer).cloned()
        };
        match link {
            Some(l) => l
                .lock()
                .await
                .writer
                .as_ref()
                .is_some_and(|(_, tx)| !tx.is_closed()),
            None => false,
        }
    }

    /// Keep a session with the hub `address` at `addr` up until shutdown: dial now, and again
    /// (every `retry`) whenever it is down. Failures are logged, never fatal.
    pub fn keep_connected(&self, addr: SocketAddr, address: Address, retry: std::time::Duration) {
        let node = self.clone();
        let mut stop = self.inner.stopping.subscribe();
        tokio::spawn(async move {
            loop {
                if !node.is_connected(address).await {
                    match node.connect(addr, Some(address)).await {
                        Ok(_) => info!(%addr, hub = %address, "connected"),
                        Err(e) => {
                            warn!(%addr, hub = %address, error = %e, "cannot connect; will retry")
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
    }

    fn keep_endpoint(&self, endpoint: &quinn::Endpoint) {
        let mut eps = self
            .inner
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        eps.push(endpoint.clone());
    }

    /// Close every connection and endpoint; session tasks end and release the node.
    pub fn shutdown(&self) {
        let eps = std::mem::take(
            &mut *self
                .inner
                .endpoints
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for ep in eps {
            ep.close(0u32.into(), b"shutdown");
        }
        self.inner.stopping.send_replace(true);
    }

    async fn run_session(&self, session: Session) {
        self.run_session_notify(session, None).await
    }

    async fn run_session_notify(
        &self,
        session: Session,
        ready: Option<tokio::sync::oneshot::Sender<()>>,
    ) {
        let peer = session.peer;
        let span = info_span!("peer", %peer);
        async move {
            let Session {
                conn,
                mut send,
                mut recv,
                ..
            } = session;
            let generation = self
                .inner
                .generation
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (sender, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
            let tx = Writer {
                tx: sender,
                conn: conn.clone(),
            };
            let writer = tokio::spawn(async move {
                while let Some(bytes) = rx.recv().await {
                    if send.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                let _ = send.finish();
            });
            if let Err(e) = self
                .install_link(peer, generation, tx.clone(), conn.clone())
                .await
            {
                warn!(error = %e, "cannot resume session");
                conn.close(2u32.into(), b"store");
                return;
            }
            self.inner.emit(NodeEvent::Connected { peer });
            if let Some(r) = ready {
                let _ = r.send(());
            }
            info!("session up");
            let rate =
                NonZeroU32::new(self.inner.opts.frames_per_second).unwrap_or(NonZeroU32::MIN);
            let limiter = governor::RateLimiter::direct(governor::Quota::per_second(rate));
            let stranger_until = tokio::time::Instant::now() + STRANGER_SESSION;
            loop {
                // Back pressure: a peer that sends too fast is read more slowly, and strangers
                // share one budget, however many keys they make.
                limiter.until_ready().await;
                let stranger = !self.has_channel(peer);
                if stranger {
                    self.inner.strangers.until_ready().await;
                }
                let read = wire::read_frame(&mut recv, self.inner.opts.max_frame);
                let next = if stranger {
                    match tokio::time::timeout_at(stranger_until, read).await {
                        Ok(r) => r,
                        Err(_) => {
                            info!("a stranger's session ends: no channel opened in time");
                            break;
                        }
                    }
                } else {
                    read.await
                };
                match next {
                    Ok(None) => break,
                    Ok(Some(frame)) => {
                        if let Err(e) = self.on_frame(peer, frame, &tx).await {
                            warn!(error = %e, "stopping session");
                            break;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "bad frame");
                        self.inner.emit(NodeEvent::Refused {
                            peer,
                            code: e.code(),
                        });
                        let reply = Frame::Error {
                            code: e.code(),
                            detail: e.to_string(),
                        };
                        if let Ok(bytes) = wire::encode(&reply) {
                            tx.push(bytes);
                        }
                        if !e.recoverable() {
                            break;
                        }
                    }
                }
            }
            self.remove_link(peer, generation).await;
            drop(tx);
            let _ = writer.await;
            conn.close(0u32.into(), b"bye");
            info!("session down");
        }
        .instrument(span)
        .await
    }

    fn link(&self, peer: Address) -> Result<Arc<Mutex<Link>>, NodeError> {
        let mut links = self.inner.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = links.get(&peer) {
            return Ok(l.clone());
        }
        self.outbox(peer)?;
        let l = Arc::new(Mutex::new(Link::default()));
        links.insert(peer, l.clone());
        Ok(l)
    }

    /// The peer's outbox counters, restored from the store the first time.
    fn outbox(&self, peer: Address) -> Result<Outbox, NodeError> {
        if let Some(o) = self
            .inner
            .outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
        {
            return Ok(*o);
        }
        let next_send = self
            .inner
            .store
            .get::<u64>(Cf::Meta, &meta_key("send", peer))?
            .unwrap_or(1);
        let first_stored = self
            .inner
            .store
            .scan_raw(Cf::Outbox, peer.as_slice())?
            .first()
            .and_then(|(k, _)| outbox_seq(k));
        let mut map = self.inner.outbox.lock().unwrap_or_else(|p| p.into_inner());
        Ok(*map
            .entry(peer)
            .or_insert_with(|| Outbox::restore(next_send, first_stored)))
    }

    /// Attach a session's writer, re-sending the outbox first, under the link's lock so no new
    /// frame can overtake the re-sent ones. One session per key (rule 10): an older session of
    /// the same peer is closed, so a key never holds two sessions and two rate limits.
    async fn install_link(
        &self,
        peer: Address,
        generation: u64,
        tx: Writer,
        conn: quinn::Connection,
    ) -> Result<(), NodeError> {
        let link = self.link(peer)?;
        let mut link = link.lock().await;
        if let Some(old) = link.conn.take() {
            info!("a newer session of this peer replaces the old one");
            old.close(3u32.into(), b"replaced by a newer session");
        }
        link.conn = Some(conn);
        let pending = self.inner.store.scan_raw(Cf::Outbox, peer.as_slice())?;
        debug!(frames = pending.len(), "re-sending outbox");
        // The backlog may exceed the queue: wait for room (the peer reads it as it comes), but
        // not for ever with the link locked: a peer that does not read is disconnected.
        let resend = async {
            for (_, bytes) in pending {
                if tx.tx.send(bytes).await.is_err() {
                    break;
                }
            }
        };
        if tokio::time::timeout(RESEND_TIMEOUT, resend).await.is_err() {
            warn!("the peer does not read its backlog: disconnecting it");
            tx.conn.close(4u32.into(), b"not reading");
        }
        link.writer = Some((generation, tx));
        Ok(())
    }

    async fn remove_link(&self, peer: Address, generation: u64) {
        if let Ok(link) = self.link(peer) {
            let mut link = link.lock().await;
            if link.writer.as_ref().is_some_and(|(g, _)| *g == generation) {
                link.writer = None;
                link.conn = None;
                // A stranger leaves nothing behind in memory either (issue 12, attack 8).
                if !self.has_channel(peer) {
                    self.inner
                        .links
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&peer);
                    self.inner
                        .recv
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&peer);
                    self.inner
                        .outbox
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&peer);
                }
            }
        }
    }

    /// Number the bodies, add them to the outbox in `batch`, commit it durably, then hand them
    /// to the live session if any. The link stays locked throughout so frames go out in order.
    pub(crate) async fn commit_and_send(
        &self,
        peer: Address,
        mut batch: Batch,
        bodies: Vec<Body>,
    ) -> Result<(), NodeError> {
        let link = self.link(peer)?;
        let link = link.lock().await;
        // Only this function gives sequence numbers, under the link's lock: the numbers read
        // here are still the next ones when the batch is committed.
        let seqs = self.outbox(peer)?.numbers(bodies.len());
        let mut frames = Vec::with_capacity(bodies.len());
        for (seq, body) in seqs.clone().zip(bodies) {
            let bytes = wire::encode(&Frame::Msg { seq, body })
                .map_err(|e| NodeError::Invalid(e.to_string()))?;
            batch.put_raw(Cf::Outbox, &outbox_key(peer, seq), bytes.clone());
            frames.push(bytes);
        }
        if !seqs.is_empty() {
            batch.put(Cf::Meta, &meta_key("send", peer), &seqs.end)?;
        }
        crate::failpoint::point("before_commit");
        self.inner.store.commit(batch).await?;
        crate::failpoint::point("after_commit");
        self.inner
            .outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(peer)
            .or_insert_with(|| Outbox::restore(seqs.end, None))
            .sent(seqs.end);
        if let Some((_, tx)) = &link.writer {
            for f in frames {
                tx.push(f);
            }
        }
        crate::failpoint::point("after_send");
        Ok(())
    }

    /// The peer's inbox counter, restored from the store the first time.
    fn inbox(&self, peer: Address) -> Result<Inbox, NodeError> {
        let mut recv = self.inner.recv.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = recv.get(&peer) {
            return Ok(*i);
        }
        let last = self
            .inner
            .store
            .get::<u64>(Cf::Meta, &meta_key("recv", peer))?
            .unwrap_or(0);
        Ok(*recv.entry(peer).or_insert(Inbox::new(last)))
    }

    fn send_now(tx: &Writer, frame: &Frame) {
        if let Ok(bytes) = wire::encode(frame) {
            tx.push(bytes);
        }
    }

    async fn on_frame(&self, peer: Address, frame: Frame, tx: &Writer) -> Result<(), NodeError> {
        match frame {
            Frame::Ack { seq } => {
                self.link(peer)?; // sets up the peer's outbox counters
                let Some(done) = self
                    .inner
                    .outbox
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&peer)
                    .and_then(|o| o.on_ack(seq))
                else {
                    return Ok(());
                };
                let mut batch = Batch::new();
                for s in done {
                    batch.delete(Cf::Outbox, &outbox_key(peer, s));
                }
                // A lost delete only re-sends a frame the peer ignores as a duplicate.
                self.inner.store.write_unsynced(batch)?;
                Ok(())
            }
            Frame::Msg { seq, body } => {
                // A stranger's refused messages leave no durable counter (nothing is written
                // for it), so it may legitimately skip ahead after a reconnect.
                match self.inbox(peer)?.classify(seq, !self.has_channel(peer)) {
                    Inbound::Process => {}
                    Inbound::Duplicate { ack } => {
                        debug!(seq, "duplicate ignored");
                        Self::send_now(tx, &Frame::Ack { seq: ack });
                        return Ok(());
                    }
                    Inbound::Gap { expected } => {
                        warn!(seq, expected, "out of order");
                        self.inner.emit(NodeEvent::Refused {
                            peer,
                            code: ErrorCode::OutOfOrder,
                        });
                        Self::send_now(
                            tx,
                            &Frame::Error {
                                code: ErrorCode::OutOfOrder,
                                detail: format!("expected {expected}, got {seq}"),
                            },
                        );
                        return Ok(());
                    }
                }
                crate::failpoint::point("before_process");
                self.on_message(peer, seq, body).await?;
                self.inner
                    .recv
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(peer)
                    .or_default()
                    .received(seq);
                Self::send_now(tx, &Frame::Ack { seq });
                Ok(())
            }
            Frame::Error { code, detail } => {
                warn!(?code, %detail, "peer reported an error");
                self.inner
                    .emit(NodeEvent::RefusedByPeer { peer, code, detail });
                Ok(())
            }
            Frame::Auth { .. } => {
                Self::send_now(
                    tx,
                    &Frame::Error {
                        code: ErrorCode::Protocol,
                        detail: "already authenticated".into(),
                    },
                );
                Ok(())
            }
        }
    }

    /// Process message `seq` from `peer`: its effects, the outbox entries of our replies and the
    /// new receive counter land in one batch.
    async fn on_message(&self, peer: Address, seq: u64, body: Body) -> Result<(), NodeError> {
        let mut batch = Batch::new();
        batch.put(Cf::Meta, &meta_key("recv", peer), &seq)?;
        let refuse = |code: ErrorCode, detail: String| Body::Refused { seq, code, detail };
        // A stranger (no channel with us) may only open one: anything else is refused without
        // a write (issue 12, attack 8).
        if !self.has_channel(peer) && !matches!(body, Body::OpenChannel { .. }) {
            return self
                .refuse(
                    peer,
                    batch,
                    refuse(
                        ErrorCode::UnknownChannel,
                        "no channel with this peer".into(),
                    ),
                )
                .await;
        }
        match body {
            Body::Funded { channel_id } => {
                let owned = match self.inner.channel(channel_id) {
                    Some(rec) => rec.lock().await.peer == peer,
                    None => false,
                };
                if !owned {
                    return self
                        .refuse(
                            peer,
                            batch,
                            refuse(
                                ErrorCode::UnknownChannel,
                                format!("no channel {channel_id}"),
                            ),
                        )
                        .await;
                }
                // The holdings are read from the chain, never taken from the peer's word. The
                // receive counter moves only after the check, so a crash repeats it.
                if let Err(e) = self.check_funding(channel_id).await {
                    warn!(error = %e, channel = %channel_id, "cannot check funding; the watcher will");
                }
                self.inner.store.commit(batch).await?;
                Ok(())
            }
            Body::HubPolicy { policy } => {
                batch.put(Cf::Meta, &meta_key("policy", peer), &policy)?;
                self.inner.store.commit(batch).await?;
                Ok(())
            }
            Body::Route {
                channel_id,
                hashlock,
                next_peer,
                next,
            } => {
                let owned = match self.inner.channel(channel_id) {
                    Some(rec) => rec.lock().await.peer == peer,
                    None => false,
                };
                if !owned || next_peer == peer || next.amount.is_zero() {
                    let detail = format!("no route instruction for channel {channel_id} accepted");
                    return self
                        .refuse(peer, batch, refuse(ErrorCode::UnknownChannel, detail))
                        .await;
                }
                // Rule 10: no more instructions waiting than the channel has lock slots (each
                // is deleted when its HTLC is forwarded or failed).
                if self.route_instructions(channel_id)? >= self.inner.opts.limits.max_pending_locks
                {
                    let detail = "too many route instructions waiting for their HTLCs".into();
                    return self
                        .refuse(peer, batch, refuse(ErrorCode::RateLimited, detail))
                        .await;
                }
                let instr = crate::payments::RouteInstr {
                    next_peer,
                    next,
                    stored_at: self.now().0,
                };
                batch.put(
                    Cf::Locks,
                    &crate::payments::route_key(channel_id, hashlock),
                    &instr,
                )?;
                self.inner.store.commit(batch).await?;
                Ok(())
            }
            Body::Ping | Body::Refused { .. } => {
                self.commit_and_send(peer, batch, vec![]).await?;
                if let Body::Refused { code, detail, .. } = body {
                    warn!(?code, %detail, "peer refused our message");
                    self.inner
                        .emit(NodeEvent::RefusedByPeer { peer, code, detail });
                }
                Ok(())
            }
            Body::Channel(msg) => {
                let id = msg.channel_id();
                let Some(rec) = self.inner.channel(id) else {
                    return self
                        .refuse(
                            peer,
                            batch,
                            refuse(ErrorCode::UnknownChannel, format!("no channel {id}")),
                        )
                        .await;
                };
                let mut rec = rec.lock().await;
                if rec.peer != peer || awaiting_acceptance(&rec) {
                    // Another peer's channel: same answer as an unknown one, nothing revealed.
                    return self
                        .refuse(
                            peer,
                            batch,
                            refuse(ErrorCode::UnknownChannel, format!("no channel {id}")),
                        )
                        .await;
                }
                if !rec.funded {
                    return self
                        .refuse(
                            peer,
                            batch,
                            refuse(ErrorCode::Protocol, format!("channel {id} is not funded")),
                        )
                        .await;
                }
                let mut machine = Channel::restore(rec.snapshot.clone(), self.inner.keys.clone())?;
                // A top-up is credited only to its depositor, up to what the chain shows it
                // deposited (rule 11): look it up, never take the peer's word.
                if let htlc::Message::Propose { ops, .. } = &msg
                    && ops.iter().any(|op| matches!(op, htlc::Op::Deposit { .. }))
                    && let Some(chain) = &self.inner.opts.chain
                {
                    let params = rec.snapshot.params.clone();
                    match (chain.holdings(id).await, chain.deposits(&params).await) {
                        (Ok(h), Ok(d)) => {
                            machine.observe_holdings(h);
                            for side in [htlc::Side::A, htlc::Side::B] {
                                machine.observe_deposits(side, d[side.index()]);
                            }
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            warn!(error = %e, "cannot read the deposits; the top-up will be refused")
                        }
                    }
                }
                match machine.handle(msg, self.now()) {
                    Ok(effects) => {
                        self.carry(peer, &mut rec, machine, effects, batch)
                            .instrument(info_span!("channel", %id))
                            .await
                    }
                    Err(e) => {
                        warn!(channel = %id, error = %e, "message refused by the channel");
                        self.refuse(peer, batch, refuse(ErrorCode::Protocol, e.to_string()))
                            .await
                    }
                }
            }
            Body::OpenChannel {
                params,
                balances,
                sig,
            } => match self.accept_open(peer, &params, balances, sig) {
                Ok((rec, our_sig)) => {
                    let id = params.id();
                    batch.put(Cf::Channels, id.0.as_slice(), &rec)?;
                    self.commit_and_send(
                        peer,
                        batch,
                        vec![
                            Body::HubPolicy {
                                policy: self.inner.opts.policy,
                            },
                            Body::ChannelAccepted {
                                channel_id: id,
                                sig: our_sig,
                            },
                        ],
                    )
                    .await?;
                    self.insert_channel(id, rec);
                    info!(channel = %id, "channel opened by peer");
                    self.inner.emit(NodeEvent::ChannelOpened {
                        channel_id: id,
                        peer,
                    });
                    Ok(())
                }
                Err(e) => {
                    warn!(error = %e, "open refused");
                    self.refuse(peer, batch, refuse(ErrorCode::Protocol, e.to_string()))
                        .await
                }
            },
            Body::ChannelAccepted { channel_id, sig } => {
                let Some(rec) = self.inner.channel(channel_id) else {
                    return self
                        .refuse(
                            peer,
                            batch,
                            refuse(
                                ErrorCode::UnknownChannel,
                                format!("no channel {channel_id}"),
                            ),
                        )
                        .await;
                };
                let mut rec = rec.lock().await;
                if rec.peer != peer || !awaiting_acceptance(&rec) {
                    return self
                        .refuse(
                            peer,
                            batch,
                            refuse(ErrorCode::UnknownChannel, "not awaiting acceptance".into()),
                        )
                        .await;
                }
                let mut signed = rec.snapshot.latest.clone();
                signed.sigs[rec.snapshot.me.other().index()] = sig;
                match Channel::from_cosigned(
                    rec.snapshot.params.clone(),
                    self.inner.keys.clone(),
                    rec.snapshot.limits,
                    signed,
                ) {
                    Ok(machine) => {
                        let new = ChannelRecord {
                            peer,
                            funded: rec.funded,
                            concluded: rec.concluded,
                            opened_at: rec.opened_at,
                            snapshot: machine.snapshot().clone(),
                        };
                        batch.put(Cf::Channels, channel_id.0.as_slice(), &new)?;
                        self.commit_and_send(peer, batch, vec![]).await?;
                        *rec = new;
                        let _ = self
                            .inner
                            .events
                            .send(NodeEvent::ChannelOpened { channel_id, peer });
                        Ok(())
                    }
                    Err(e) => {
                        self.refuse(peer, batch, refuse(ErrorCode::Protocol, e.to_string()))
                            .await
                    }
                }
            }
        }
    }

    /// Refuse a peer's message. For a peer with a funded channel the refusal is sequenced and
    /// durable like every message; for a stranger (no funded channel) nothing is written: the
    /// refusal goes out as an unsequenced error frame, so a fresh key cannot make us write to
    /// disk (issue 12, attack 8).
    async fn refuse(&self, peer: Address, batch: Batch, body: Body) -> Result<(), NodeError> {
        if let Body::Refused { code, .. } = &body {
            self.inner.emit(NodeEvent::Refused { peer, code: *code });
        }
        // A peer that does not acknowledge what we send cannot grow our outbox with refusals
        // either: beyond a backlog they go out unsequenced too.
        if !self.has_funded_channel(peer).await || self.backlog(peer) >= MAX_DURABLE_BACKLOG {
            if let Body::Refused { code, detail, .. } = body {
                self.send_unsequenced(peer, &Frame::Error { code, detail })
                    .await;
            }
            return Ok(());
        }
        self.commit_and_send(peer, batch, vec![body]).await
    }

    /// Frames in the peer's outbox it has not acknowledged.
    fn backlog(&self, peer: Address) -> u64 {
        let outbox = self.inner.outbox.lock().unwrap_or_else(|p| p.into_inner());
        outbox.get(&peer).map_or(0, Outbox::backlog)
    }

    /// Whether `peer` holds any channel record with us (even one not yet funded).
    fn has_channel(&self, peer: Address) -> bool {
        self.inner
            .per_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .is_some_and(|ids| !ids.is_empty())
    }

    /// Whether `peer` has (or had) a channel with us whose deposits are on chain. Locks no
    /// channel record: callers may hold one.
    async fn has_funded_channel(&self, peer: Address) -> bool {
        self.inner
            .funded_peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&peer)
    }

    /// Send a frame outside the sequenced, durable stream (lost if no session is up).
    async fn send_unsequenced(&self, peer: Address, frame: &Frame) {
        let Ok(link) = self.link(peer) else {
            return;
        };
        let link = link.lock().await;
        if let Some((_, tx)) = &link.writer {
            Self::send_now(tx, frame);
        }
    }

    fn insert_channel(&self, id: ChannelId, rec: ChannelRecord) {
        if rec.funded {
            self.inner.mark_funded(rec.peer);
        }
        {
            let mut counts = self
                .inner
                .per_peer
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            counts.entry(rec.peer).or_default().push(id);
        }
        let mut map = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.insert(id, Arc::new(Mutex::new(rec)));
    }

    fn accept_open(
        &self,
        peer: Address,
        params: &ChannelParams,
        balances: [Amount; 2],
        sig: alloy::primitives::Signature,
    ) -> Result<(ChannelRecord, alloy::primitives::Signature), NodeError> {
        let o = &self.inner.opts;
        let me = self.address();
        if params.participants != [peer, me] {
            return Err(NodeError::Invalid(
                "participants must be [opener, us]".into(),
            ));
        }
        if params.chain_id != o.chain_id || params.adjudicator != o.adjudicator {
            return Err(NodeError::Invalid("wrong chain or adjudicator".into()));
        }
        if !o.assets.contains(&params.asset) {
            return Err(NodeError::Invalid(format!(
                "asset {} is not accepted here (accepted: {:?})",
                params.asset, o.assets
            )));
        }
        // Rule 12: a window too short to get a challenge in would let a stale close win.
        use htlc::forward::{MAX_CHALLENGE_DURATION_SECS, MIN_CHALLENGE_DURATION_SECS};
        if !(MIN_CHALLENGE_DURATION_SECS..=MAX_CHALLENGE_DURATION_SECS)
            .contains(&params.challenge_duration)
        {
            return Err(NodeError::Invalid(format!(
                "challenge window of {} s out of range ({MIN_CHALLENGE_DURATION_SECS}..={MAX_CHALLENGE_DURATION_SECS} s)",
                params.challenge_duration
            )));
        }
        if balances[0] < o.min_peer_deposit.max(Amount(1)) {
            return Err(NodeError::Invalid(format!(
                "an opening deposit of at least {} wei is required",
                o.min_peer_deposit.max(Amount(1))
            )));
        }
        let id = params.id();
        if self.inner.channel(id).is_some() {
            return Err(NodeError::Invalid("channel exists".into()));
        }
        let count = {
            let counts = self
                .inner
                .per_peer
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            counts.get(&peer).map_or(0, Vec::len)
        };
        if count >= o.max_channels_per_peer {
            return Err(NodeError::Invalid(format!(
                "peer already has {count} channels"
            )));
        }
        if !balances[1].is_zero() {
            // We only fund our side when we choose to (collateral is added by a later top-up).
            return Err(NodeError::Invalid(
                "the opener cannot assign us a deposit".into(),
            ));
        }
        let state = ChannelState::opening(id, balances);
        let ours = sign_state(params, &self.inner.keys, &state)?;
        let signed = SignedState {
            state,
            sigs: [sig, ours],
        };
        let machine =
            Channel::from_cosigned(params.clone(), self.inner.keys.clone(), o.limits, signed)?;
        Ok((
            ChannelRecord {
                peer,
                funded: o.chain.is_none(),
                concluded: false,
                opened_at: self.now().0,
                snapshot: machine.snapshot().clone(),
            },
            ours,
        ))
    }

    /// Open an ETH channel with a connected peer: we are A and fund `deposit`; the peer starts
    /// at 0. Returns once the peer has countersigned the opening state.
    pub async fn open_channel(
        &self,
        peer: Address,
        deposit: Amount,
    ) -> Result<ChannelId, NodeError> {
        self.open_channel_in(peer, Address::ZERO, deposit).await
    }

    /// As [`Node::open_channel`], in `asset` (`Address::ZERO` is ETH, else an ERC-20 token). If
    /// the peer refuses, the channel is forgotten and the peer's reason returned.
    pub async fn open_channel_in(
        &self,
        peer: Address,
        asset: Address,
        deposit: Amount,
    ) -> Result<ChannelId, NodeError> {
        let o = &self.inner.opts;
        let params = ChannelParams {
            chain_id: o.chain_id,
            adjudicator: o.adjudicator,
            participants: [self.address(), peer],
            asset,
            challenge_duration: o.challenge_duration,
            nonce: U256::from(rand::random::<u64>()),
        };
        let id = params.id();
        let balances = [deposit, Amount::ZERO];
        let state = ChannelState::opening(id, balances);
        state
            .total()
            .map_err(|_| NodeError::Invalid("deposit overflows".into()))?;
        let sig = sign_state(&params, &self.inner.keys, &state)?;
        // Until the peer countersigns, the record holds a placeholder for its signature.
        let snapshot = htlc::Snapshot {
            params: params.clone(),
            me: htlc::Side::A,
            limits: o.limits,
            latest: SignedState {
                state,
                sigs: [sig, sig_placeholder()],
            },
            next_ids: htlc::ops::NextIds::default(),
            version_floor: 0,
            pending: None,
            queue: Default::default(),
            alloc_id: 0,
            await_leader: false,
            doomed: Vec::new(),
            rejects_in_row: 0,
            holdings: balances[0],
            deposited: [Amount::ZERO; 2],
            credited: balances,
            agreed: Vec::new(),
            claims: Vec::new(),
            frozen: false,
        };
        let rec = ChannelRecord {
            peer,
            funded: o.chain.is_none(),
            concluded: false,
            opened_at: self.now().0,
            snapshot,
        };
        let mut events = self.subscribe();
        let mut batch = Batch::new();
        batch.put(Cf::Channels, id.0.as_slice(), &rec)?;
        self.insert_channel(id, rec);
        self.commit_and_send(
            peer,
            batch,
            vec![Body::OpenChannel {
                params,
                balances,
                sig,
            }],
        )
        .await?;
        loop {
            match events.recv().await {
                Ok(NodeEvent::ChannelOpened { channel_id, .. }) if channel_id == id => {
                    return Ok(id);
                }
                Ok(NodeEvent::RefusedByPeer {
                    peer: p,
                    code,
                    detail,
                }) if p == peer => {
                    self.forget_unopened(id).await?;
                    return Err(NodeError::Invalid(format!(
                        "the peer refused the channel ({code:?}): {detail}"
                    )));
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(NodeError::Invalid("node stopped".into()));
                }
            }
        }
    }

    /// Delete a channel we proposed that the peer never countersigned (nothing of it exists on
    /// chain or at the peer).
    async fn forget_unopened(&self, id: ChannelId) -> Result<(), NodeError> {
        self.forget_if(id, awaiting_acceptance).await
    }

    /// Delete channel `id` if `abandoned` holds for its record (checked under its lock).
    pub(crate) async fn forget_if(
        &self,
        id: ChannelId,
        abandoned: impl Fn(&ChannelRecord) -> bool,
    ) -> Result<(), NodeError> {
        let Some(rec) = self.inner.channel(id) else {
            return Ok(());
        };
        let r = rec.lock().await;
        if !abandoned(&r) {
            return Ok(());
        }
        let mut batch = Batch::new();
        batch.delete(Cf::Channels, id.0.as_slice());
        self.inner.store.commit(batch).await?;
        self.inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(ids) = self
            .inner
            .per_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&r.peer)
        {
            ids.retain(|c| *c != id);
        }
        info!(channel = %id, "abandoned opening forgotten");
        Ok(())
    }

    /// Delete openings left too long: channels a peer opened with us and never funded (once
    /// the chain confirms it holds nothing for them), and channels we proposed that the peer
    /// never countersigned.
    pub(crate) async fn collect_abandoned(&self) -> Result<(), NodeError> {
        let cutoff = self
            .now()
            .0
            .saturating_sub(self.inner.opts.abandon_after_secs);
        for id in self.channel_ids() {
            let Some(rec) = self.inner.channel(id) else {
                continue;
            };
            let (stale, unfunded_theirs) = {
                let r = rec.lock().await;
                let old = r.opened_at < cutoff;
                (
                    old && awaiting_acceptance(&r),
                    old && !r.funded && r.snapshot.me == htlc::Side::B,
                )
            };
            if stale {
                self.forget_unopened(id).await?;
            } else if unfunded_theirs {
                // The chain has the last word: a deposit seen now makes the channel funded.
                if let Err(e) = self.check_funding(id).await {
                    warn!(channel = %id, error = %e, "cannot read the chain; not collecting");
                    continue;
                }
                self.forget_if(id, |r| {
                    !r.funded && r.snapshot.deposited.iter().all(|d| d.is_zero())
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Pay `amount` directly to the counterparty of `id` (one signed update).
    pub async fn transfer(&self, id: ChannelId, amount: Amount) -> Result<(), NodeError> {
        self.with_channel(id, |m| m.transfer(amount)).await
    }

    /// Queue the cooperative close of `id`.
    pub async fn close(&self, id: ChannelId) -> Result<(), NodeError> {
        self.with_channel(id, |m| m.close()).await
    }

    /// Queue operations on a channel and propose them.
    pub async fn with_channel(
        &self,
        id: ChannelId,
        f: impl FnOnce(&mut Channel),
    ) -> Result<(), NodeError> {
        self.with_channel_in(id, f, Batch::new()).await
    }

    /// As [`Node::with_channel`], adding the writes of `batch` to the same atomic commit.
    pub(crate) async fn with_channel_in(
        &self,
        id: ChannelId,
        f: impl FnOnce(&mut Channel),
        batch: Batch,
    ) -> Result<(), NodeError> {
        self.with_channel_do(id, batch, |m, _| {
            f(m);
            Ok(())
        })
        .await
    }

    /// Queue operations on a channel with `f`, which may also add writes to the batch that
    /// persists the result (atomically with the new snapshot), and propose them. Returns what `f`
    /// returned; nothing is written if `f` fails.
    pub(crate) async fn with_channel_do<R>(
        &self,
        id: ChannelId,
        mut batch: Batch,
        f: impl FnOnce(&mut Channel, &mut Batch) -> Result<R, NodeError>,
    ) -> Result<R, NodeError> {
        let rec = self
            .inner
            .channel(id)
            .ok_or(NodeError::UnknownChannel(id))?;
        let mut rec = rec.lock().await;
        if awaiting_acceptance(&rec) {
            return Err(NodeError::Invalid(
                "the peer has not countersigned the opening yet".into(),
            ));
        }
        if !rec.funded {
            return Err(NodeError::Invalid("the channel is not funded yet".into()));
        }
        let mut machine = Channel::restore(rec.snapshot.clone(), self.inner.keys.clone())?;
        let out = f(&mut machine, &mut batch)?;
        let effects = machine.propose(self.now())?;
        let peer = rec.peer;
        self.carry(peer, &mut rec, machine, effects, batch)
            .instrument(info_span!("channel", %id))
            .await?;
        Ok(out)
    }

    /// Carry out a machine's effects: one batch with the snapshot and the outbox entries of
    /// every message, committed before anything is sent; then the events.
    async fn carry(
        &self,
        peer: Address,
        rec: &mut ChannelRecord,
        machine: Channel,
        effects: Vec<Effect>,
        mut batch: Batch,
    ) -> Result<(), NodeError> {
        let id = machine.id();
        let mut bodies = Vec::new();
        let mut events = Vec::new();
        for e in effects {
            match e {
                // The machine's current snapshot supersedes every earlier one in this list.
                Effect::Persist(_) => {}
                Effect::Send(m) => bodies.push(Body::Channel(m)),
                Effect::Event(ev) => events.push(ev),
            }
        }
        let new = ChannelRecord {
            peer,
            funded: rec.funded,
            concluded: rec.concluded,
            opened_at: rec.opened_at,
            snapshot: machine.snapshot().clone(),
        };
        batch.put(Cf::Channels, id.0.as_slice(), &new)?;
        // Rule 5: preimages learned here are persisted with the state that taught them.
        self.persist_payment_facts(id, &events, &mut batch)?;
        // A co-signed final state: pay it out on chain, durably decided in the same batch.
        let closed = events.iter().any(|e| matches!(e, Event::Closed(_)));
        let settle = closed && self.inner.opts.auto_settle && self.inner.submitter.is_some();
        if settle {
            let intent = crate::chain::Intent::CooperativeClose {
                params: new.snapshot.params.clone(),
                state: new.snapshot.latest.clone(),
            };
            batch.put(Cf::Chain, &intent.key(), &intent)?;
        }
        // If this fails nothing was sent and the in-memory record is unchanged.
        self.commit_and_send(peer, batch, bodies).await?;
        *rec = new;
        let htlc_events: Vec<Event> = events
            .iter()
            .filter(|e| htlc::node::payment::concerns_payments(e))
            .cloned()
            .collect();
        for ev in events {
            match ev {
                Event::Committed { version, .. } => {
                    debug!(version, "state co-signed");
                    self.inner.emit(NodeEvent::Committed {
                        channel_id: id,
                        version,
                    });
                }
                Event::Closed(_) => {
                    self.inner.emit(NodeEvent::Closed { channel_id: id });
                    if settle {
                        self.inner.chain_kick.notify_one();
                    }
                }
                _ => {}
            }
        }
        if !htlc_events.is_empty() {
            // Other channels are locked by what follows: never while holding this one.
            tokio::spawn(self.on_htlc_events(id, htlc_events));
        }
        Ok(())
    }
}

impl Inner {
    /// Remember that `peer` has a funded channel with us.
    pub(crate) fn mark_funded(&self, peer: Address) {
        self.funded_peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer);
    }

    /// Tell the application (and the metrics) what happened.
    pub(crate) fn emit(&self, ev: NodeEvent) {
        self.metrics.on_event(&ev);
        // No subscriber is not an error: events are also in the store and the logs.
        let _ = self.events.send(ev);
    }

    pub(crate) fn channel(&self, id: ChannelId) -> Option<Arc<Mutex<ChannelRecord>>> {
        let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&id).cloned()
    }
}

/// A fresh random API token: 32 bytes as hex.
pub fn new_api_token() -> String {
    alloy::primitives::hex::encode(rand::random::<[u8; 32]>())
}

/// Stands for the counterparty's signature while an opening awaits it (r = s = 0 never
/// verifies, so it can never be mistaken for a real one).
fn sig_placeholder() -> alloy::primitives::Signature {
    alloy::primitives::Signature::new(U256::ZERO, U256::ZERO, false)
}

/// Whether a channel we opened still waits for the peer's signature on its opening state.
pub(crate) fn awaiting_acceptance(rec: &ChannelRecord) -> bool {
    rec.snapshot.latest.sigs[rec.snapshot.me.other().index()] == sig_placeholder()
}
