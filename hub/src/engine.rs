//! The node's pump: QUIC sessions in, channel machines driven, effects persisted and sent.
//!
//! * **Reliable delivery.** Every [`Body`] we send is numbered per peer and written to the
//!   durable outbox in the same synced batch as the state change that produced it (rule 2).
//!   It is sent when a session is up and re-sent, in order, on every reconnect until the peer
//!   acknowledges it. The receiver processes sequence numbers in order, ignores (and re-acks)
//!   duplicates, refuses gaps, and persists its receive counter in the same batch as the
//!   message's effects, so a crash at any point neither loses nor repeats a message.
//! * **Isolation.** A peer may only touch channels whose counterparty it has proven to be.
//!   Frames that are malformed, oversized, out of sequence or refused by a channel's machine
//!   get a typed error back and change nothing. Reading is rate limited per peer (back pressure).

use crate::error::{NodeError, Stage};
use crate::events::NodeEvent;
use crate::node::{ChannelRecord, Node, awaiting_acceptance};
use crate::session::{WRITE_QUEUE, Writer, meta_key};
use crate::store::{Batch, Cf};
use crate::transport::{self, Session};
use crate::wire::{self, Body, ErrorCode, Frame};
use alloy::primitives::{Address, U256};
use htlc::node::admission::{RouteRefusal, admit_open, admit_route};
use htlc::node::link::Inbound;
use htlc::{Amount, Channel, ChannelId, ChannelParams, Effect, Event};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc};
use tracing::{Instrument, debug, info, info_span, warn};

/// Unacknowledged frames in a peer's outbox beyond which its refusals are no longer written
/// (rule 10: a peer that never acknowledges cannot grow our disk with them).
const MAX_DURABLE_BACKLOG: u64 = 1024;

/// Seconds a stranger's session may last without opening a channel (rule 10: connection
/// slots are for peers, not for idle keys).
const STRANGER_SESSION: std::time::Duration = std::time::Duration::from_secs(30);

impl Node {
    /// Listen for peers on `addr`; returns the bound address. Sessions run until the process
    /// ends.
    pub fn listen(&self, addr: SocketAddr) -> Result<SocketAddr, NodeError> {
        let endpoint = transport::server(addr)?;
        let local = endpoint
            .local_addr()
            .map_err(|source| NodeError::Listen { addr, source })?;
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
        let ep_id = self.keep_endpoint(&endpoint);
        let session = match transport::connect(
            &endpoint,
            addr,
            &self.inner.keys,
            expect,
            self.inner.opts.max_frame,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                // A failed dial leaves no socket behind (a hub down for hours is dialled often).
                self.forget_endpoint(ep_id);
                return Err(e.into());
            }
        };
        let peer = session.peer;
        let node = self.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _endpoint = endpoint;
            node.run_session_notify(session, Some(ready_tx)).await;
            node.forget_endpoint(ep_id);
        });
        let _ = ready_rx.await;
        Ok(peer)
    }

    /// Keep a session with the hub `address` at `addr` up until shutdown: dial now, and again
    /// (every `retry`) whenever it is down. Failures are logged, never fatal.
    ///
    /// A session that ends is dialled again at once, then with a backoff doubling from 100 ms up
    /// to `retry` while the hub does not answer (a restarting hub is back within a second).
    pub fn keep_connected(&self, addr: SocketAddr, address: Address, retry: std::time::Duration) {
        let node = self.clone();
        let mut stop = self.inner.stopping.subscribe();
        let mut events = self.subscribe();
        let first = std::time::Duration::from_millis(100).min(retry);
        // A session that lasted this long was healthy: the next redial is immediate.
        const STABLE: std::time::Duration = std::time::Duration::from_secs(5);
        tokio::spawn(async move {
            let mut backoff = first;
            let mut up_since: Option<tokio::time::Instant> = None;
            let mut pause = std::time::Duration::ZERO;
            loop {
                // After a session that ended quickly (a flapping link, or another process with
                // our key replacing us), wait before dialling again.
                if !pause.is_zero() {
                    tokio::select! {
                        biased;
                        _ = stop.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                if *stop.borrow() {
                    return;
                }
                let wait = if node.is_connected(address).await {
                    retry
                } else {
                    match node.connect(addr, Some(address)).await {
                        Ok(_) => {
                            info!(%addr, hub = %address, "connected");
                            up_since = Some(tokio::time::Instant::now());
                            retry
                        }
                        Err(e) => {
                            warn!(%addr, hub = %address, error = %e, retry_in = ?backoff, "cannot connect");
                            let w = backoff;
                            backoff = (backoff * 2).min(retry);
                            w
                        }
                    }
                };
                // Wake at the next try, or at once when the session ends.
                let sleep = tokio::time::sleep(wait);
                tokio::pin!(sleep);
                pause = std::time::Duration::ZERO;
                loop {
                    tokio::select! {
                        biased;
                        _ = stop.wait_for(|s| *s) => return,
                        _ = &mut sleep => break,
                        ev = events.recv() => match ev {
                            Ok(NodeEvent::Disconnected { peer, .. }) if peer == address => {
                                if up_since.take().is_some_and(|t| t.elapsed() >= STABLE) {
                                    backoff = first;
                                } else {
                                    pause = backoff;
                                    backoff = (backoff * 2).min(retry);
                                }
                                break;
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                            _ => {}
                        },
                    }
                }
            }
        });
    }

    /// Register an endpoint so that [`Node::shutdown`] closes it; returns its id. An endpoint
    /// made once the node is stopping is closed at once.
    fn keep_endpoint(&self, endpoint: &quinn::Endpoint) -> u64 {
        let id = self.inner.sessions.next_generation();
        let mut eps = self
            .inner
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *self.inner.stopping.borrow() {
            endpoint.close(0u32.into(), b"shutdown");
        } else {
            eps.push((id, endpoint.clone()));
        }
        id
    }

    /// An endpoint's session ended (or never began): stop holding it.
    fn forget_endpoint(&self, id: u64) {
        self.inner
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(i, _)| *i != id);
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
            let generation = self.inner.sessions.next_generation();
            let (sender, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
            let tx = Writer::new(sender, conn.clone());
            let writer = tokio::spawn(async move {
                while let Some(bytes) = rx.recv().await {
                    if send.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                let _ = send.finish();
            });
            if let Err(e) = self
                .inner
                .sessions
                .install(
                    &self.inner.store,
                    peer,
                    generation,
                    tx.clone(),
                    conn.clone(),
                )
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
                    // The connection went away: a normal end, nothing to answer.
                    Err(wire::WireError::Io(why)) => {
                        info!(%why, "the peer's stream ended");
                        break;
                    }
                    Err(e) => {
                        warn!(error = %e, "bad frame");
                        self.inner.emit(NodeEvent::Refused {
                            peer,
                            code: e.code(),
                        });
                        tx.send_now(&Frame::Error {
                            code: e.code(),
                            detail: e.to_string(),
                        });
                        if !e.recoverable() {
                            break;
                        }
                    }
                }
            }
            self.inner
                .sessions
                .remove(&self.inner.store, peer, generation, || {
                    !self.has_channel(peer)
                })
                .await;
            drop(tx);
            let _ = writer.await;
            let by_peer = matches!(
                conn.close_reason(),
                Some(quinn::ConnectionError::ApplicationClosed(_))
                    | Some(quinn::ConnectionError::ConnectionClosed(_))
            );
            conn.close(0u32.into(), b"bye");
            info!(by_peer, "session down");
            self.inner.emit(NodeEvent::Disconnected { peer, by_peer });
        }
        .instrument(span)
        .await
    }

    /// Number the bodies, add them to the outbox in `batch`, commit it durably, then hand them
    /// to the live session if any (see [`crate::session`]).
    pub(crate) async fn commit_and_send(
        &self,
        peer: Address,
        batch: Batch,
        bodies: Vec<Body>,
    ) -> Result<(), NodeError> {
        self.inner
            .sessions
            .commit_and_send(&self.inner.store, peer, batch, bodies)
            .await
    }

    /// Whether a session with `peer` is up.
    pub async fn is_connected(&self, peer: Address) -> bool {
        self.inner.sessions.is_connected(peer).await
    }

    async fn on_frame(&self, peer: Address, frame: Frame, tx: &Writer) -> Result<(), NodeError> {
        let store = &self.inner.store;
        match frame {
            Frame::Ack { seq } => self.inner.sessions.on_ack(store, peer, seq),
            Frame::Msg { seq, body } => {
                // The refused messages of a peer without a funded channel leave no durable
                // counter (nothing is written for it), so after our restart it may
                // legitimately be ahead of what we stored: it may skip.
                let may_skip = !self.has_funded_channel(peer);
                match self.inner.sessions.classify(store, peer, seq, may_skip)? {
                    Inbound::Process => {}
                    Inbound::Duplicate { ack } => {
                        debug!(seq, "duplicate ignored");
                        tx.send_now(&Frame::Ack { seq: ack });
                        return Ok(());
                    }
                    Inbound::Gap { expected } => {
                        warn!(seq, expected, "out of order");
                        self.inner.emit(NodeEvent::Refused {
                            peer,
                            code: ErrorCode::OutOfOrder,
                        });
                        tx.send_now(&Frame::Error {
                            code: ErrorCode::OutOfOrder,
                            detail: format!("expected {expected}, got {seq}"),
                        });
                        return Ok(());
                    }
                }
                crate::failpoint::point("before_process");
                self.on_message(peer, seq, body).await?;
                self.inner.sessions.received(peer, seq);
                tx.send_now(&Frame::Ack { seq });
                Ok(())
            }
            Frame::Error { code, detail } => {
                warn!(?code, %detail, "peer reported an error");
                self.inner
                    .emit(NodeEvent::RefusedByPeer { peer, code, detail });
                Ok(())
            }
            Frame::Auth { .. } => {
                tx.send_now(&Frame::Error {
                    code: ErrorCode::Protocol,
                    detail: "already authenticated".into(),
                });
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
                let waiting = (
                    self.route_instructions(channel_id)?,
                    self.inner.opts.limits.max_pending_locks,
                );
                if let Err(e) = admit_route(peer, owned, next_peer, &next, waiting) {
                    let code = match e {
                        RouteRefusal::Invalid => ErrorCode::UnknownChannel,
                        RouteRefusal::TooMany => ErrorCode::RateLimited,
                    };
                    let detail = format!("channel {channel_id}: {e}");
                    return self.refuse(peer, batch, refuse(code, detail)).await;
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
                    let params = rec.snapshot.params().clone();
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
                match rec.snapshot.countersigned(self.inner.keys.clone(), sig) {
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
        if !self.has_funded_channel(peer)
            || self.inner.sessions.backlog(peer) >= MAX_DURABLE_BACKLOG
        {
            if let Body::Refused { code, detail, .. } = body {
                self.inner
                    .sessions
                    .send_unsequenced(&self.inner.store, peer, &Frame::Error { code, detail })
                    .await;
            }
            return Ok(());
        }
        self.commit_and_send(peer, batch, vec![body]).await
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
        let id = params.id();
        let peer_channels = self
            .inner
            .per_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .map_or(0, Vec::len);
        admit_open(
            &o.open_policy(),
            (peer, self.address()),
            params,
            balances,
            (self.inner.channel(id).is_some(), peer_channels),
        )?;
        let (machine, ours) = htlc::node::opening::accept(
            params.clone(),
            self.inner.keys.clone(),
            o.limits,
            balances,
            sig,
        )?;
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
        // The opening waits for the peer's countersignature: with no session up it would wait
        // without end and leave a record behind.
        if !self.is_connected(peer).await {
            return Err(NodeError::NotConnected(peer));
        }
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
        let (snapshot, sig) =
            htlc::node::opening::propose(params.clone(), &self.inner.keys, o.limits, deposit)
                .map_err(|e| match e {
                    htlc::ProtocolError::Overflow => NodeError::Overflow,
                    e => NodeError::Protocol(e),
                })?;
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
                balances: [deposit, Amount::ZERO],
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
                    return Err(NodeError::RefusedByPeer { code, detail });
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err(NodeError::Stopped);
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
                    old && !r.funded && r.snapshot.me() == htlc::Side::B,
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
                    !r.funded && r.snapshot.deposited().iter().all(|d| d.is_zero())
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
            return Err(NodeError::NotReady {
                channel: id,
                stage: Stage::AwaitingCountersignature,
            });
        }
        if !rec.funded {
            return Err(NodeError::NotReady {
                channel: id,
                stage: Stage::NotFunded,
            });
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
                Effect::Persist => {}
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
            // The side that proposed the close pays it out; the other watches, and pays it out
            // only if the chain shows no payout after the grace period.
            let me = new.snapshot.me();
            let ours = events.iter().any(|e| {
                matches!(e, Event::Committed { proposer, ops, .. }
                    if *proposer == me && ops.contains(&htlc::Op::Close))
            });
            let not_before = if ours {
                0
            } else {
                self.now()
                    .0
                    .saturating_add(self.inner.opts.close_grace.as_secs())
            };
            let intent = crate::chain::Intent::CooperativeClose {
                params: new.snapshot.params().clone(),
                state: new.snapshot.latest().clone(),
                not_before,
            };
            batch.put(Cf::Chain, &intent.key(), &intent)?;
        }
        // If this fails nothing was sent and the in-memory record is unchanged.
        self.commit_and_send(peer, batch, bodies).await?;
        self.inner.timers().set(id, new.snapshot.next_timeout());
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
