//! QUIC sessions in: frames read, rate limited and handed to the node machine, a session's
//! buffered frames together as one step; and the operator's channel commands.
//!
//! * **Reliable delivery** is the machine's (`htlc::node::link`): every message it sends is
//!   numbered and stored in the step's batch, re-sent in order on every reconnect
//!   ([`Node::install`] queues the outbox behind every step not yet durable), processed once.
//! * **Isolation.** The machine refuses what a peer may not do; here frames that are
//!   malformed or oversized get a typed error and change nothing, reading is rate limited per
//!   peer (back pressure), and strangers share one budget and a short session.

use crate::error::NodeError;
use crate::events::NodeEvent;
use crate::node::Node;
use crate::pump::Done;
use crate::session::{WRITE_QUEUE, Writer};
use crate::transport::{self, Session};
use crate::wire::{self, ErrorCode, Frame};
use alloy::primitives::{Address, U256};
use htlc::node::ChainEvent;
use htlc::{Amount, Channel, ChannelId, ChannelParams};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

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
                recv,
                ..
            } = session;
            let generation = self.inner.sessions.next_generation();
            // Room for the whole backlog the session starts with, and the usual queue after it.
            let backlog = usize::try_from(self.read(|m| m.backlog(peer))).unwrap_or(usize::MAX);
            let (sender, mut rx) =
                mpsc::channel::<Vec<u8>>(WRITE_QUEUE.saturating_add(backlog).min(1 << 20));
            let tx = Writer::new(sender, conn.clone());
            let writer = tokio::spawn(async move {
                // Frames queued together leave in one write of the stream (one wake-up of the
                // connection, and as few packets as they fit in), in their order.
                let mut out = Vec::with_capacity(WRITE_COALESCE);
                while let Some(bytes) = rx.recv().await {
                    out.clear();
                    out.extend_from_slice(&bytes);
                    while out.len() < WRITE_COALESCE {
                        match rx.try_recv() {
                            Ok(more) => out.extend_from_slice(&more),
                            Err(_) => break,
                        }
                    }
                    if send.write_all(&out).await.is_err() {
                        break;
                    }
                }
                // Let the last frames (an error that ends the session) reach the peer before
                // the connection is closed, a second at most.
                if send.finish().is_ok() {
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), send.stopped())
                        .await;
                }
            });
            if let Err(e) = self.install(peer, generation, tx.clone()).await {
                warn!(error = %e, "cannot resume session");
                // `install` told the machine the session was up.
                self.inner
                    .machine
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .set_reachable(peer, false);
                conn.close(2u32.into(), b"store");
                return;
            }
            self.inner.emit(NodeEvent::Connected { peer });
            if let Some(r) = ready {
                let _ = r.send(());
            }
            info!("session up");
            let (frames_tx, mut frames) = mpsc::channel::<Frame>(MAX_FRAMES_PER_STEP);
            let reader = tokio::spawn(self.clone().read_frames(peer, recv, tx.clone(), frames_tx));
            // Every frame already read is handed to the machine in one step; a few steps may
            // be in flight to the disk while the next frames are read (they are written and
            // answered in order).
            let mut in_flight = std::collections::VecDeque::new();
            'session: while let Some(first) = frames.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_FRAMES_PER_STEP {
                    match frames.try_recv() {
                        Ok(f) => batch.push(f),
                        Err(_) => break,
                    }
                }
                match self.on_frames(peer, batch, &tx).await {
                    Ok(Some(done)) => in_flight.push_back(done),
                    Ok(None) => {}
                    Err(e) => {
                        warn!(error = %e, "stopping session");
                        break;
                    }
                }
                while in_flight.len() > MAX_STEPS_IN_FLIGHT {
                    if let Some(done) = in_flight.pop_front()
                        && let Err(e) = Done::wait(done).await
                    {
                        warn!(error = %e, "stopping session");
                        break 'session;
                    }
                }
            }
            reader.abort();
            // Unreachable first (a forward to it fails fast from now), then off the live map.
            self.inner
                .machine
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .set_reachable(peer, false);
            self.inner.sessions.remove(peer, generation);
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

    /// Attach a new session's writer once every step queued before is durable, with the
    /// peer's unacknowledged messages queued first (re-sent in order).
    async fn install(&self, peer: Address, generation: u64, tx: Writer) -> Result<(), NodeError> {
        let sessions = Arc::downgrade(&self.inner);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        {
            let mut m = self.inner.machine.lock().unwrap_or_else(|p| p.into_inner());
            m.set_reachable(peer, true);
            let resend: Vec<Vec<u8>> = m
                .connected(peer)
                .transmits
                .into_iter()
                .filter_map(|(_, f)| wire::encode(&Frame::from(f)).ok())
                .collect();
            debug!(frames = resend.len(), "re-sending outbox");
            // Behind every queued step: what it numbered is on disk by then.
            self.inner
                .store
                .submit(crate::store::Batch::new(), move |r| {
                    if let Some(inner) = sessions.upgrade() {
                        if r.is_ok() {
                            inner.sessions.install(peer, generation, tx, resend);
                        }
                        drop(inner);
                    }
                    let _ = done_tx.send(r);
                });
        }
        match done_rx.await {
            Ok(r) => Ok(r?),
            Err(_) => Err(NodeError::Stopped),
        }
    }

    /// Read `peer`'s frames into `out` until the stream ends, under the rate limits.
    async fn read_frames(
        self,
        peer: Address,
        recv: quinn::RecvStream,
        tx: Writer,
        out: mpsc::Sender<Frame>,
    ) {
        // Frames that arrived together are read from the buffer, not from the connection
        // one by one (two reads per frame otherwise, each taking the connection's lock).
        let mut recv = tokio::io::BufReader::with_capacity(READ_BUFFER, recv);
        let rate = NonZeroU32::new(self.inner.opts.frames_per_second).unwrap_or(NonZeroU32::MIN);
        let limiter = governor::RateLimiter::direct(governor::Quota::per_second(rate));
        let stranger_until = tokio::time::Instant::now() + STRANGER_SESSION;
        // A peer with a channel stays known for the session (no look at the machine per
        // frame once it has one).
        let mut known = false;
        loop {
            // Back pressure: a peer that sends too fast is read more slowly, and strangers
            // share one budget, however many keys they make.
            limiter.until_ready().await;
            known = known || self.has_channel(peer);
            let stranger = !known;
            if stranger {
                self.inner.strangers.until_ready().await;
            }
            let read = wire::read_frame(&mut recv, self.inner.opts.max_frame);
            let next = if stranger {
                match tokio::time::timeout_at(stranger_until, read).await {
                    Ok(r) => r,
                    Err(_) => {
                        info!("a stranger's session ends: no channel opened in time");
                        return;
                    }
                }
            } else {
                read.await
            };
            match next {
                Ok(None) => return,
                Ok(Some(frame)) => {
                    if out.send(frame).await.is_err() {
                        return;
                    }
                }
                // The connection went away: a normal end, nothing to answer.
                Err(wire::WireError::Io(why)) => {
                    info!(%why, "the peer's stream ended");
                    return;
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
                        return;
                    }
                }
            }
        }
    }

    /// Whether a session with `peer` is up.
    pub async fn is_connected(&self, peer: Address) -> bool {
        self.inner.sessions.is_connected(peer)
    }

    /// Hand `peer`'s frames to the machine as one step. A proposal that credits a deposit
    /// is preceded by the chain's figures for its channel (rule 11: looked up, never taken
    /// from the peer's word).
    async fn on_frames(
        &self,
        peer: Address,
        frames: Vec<Frame>,
        tx: &Writer,
    ) -> Result<Option<Done>, NodeError> {
        let mut decided = Vec::with_capacity(frames.len());
        for f in frames {
            match f {
                Frame::Msg { seq, body } => decided.push(htlc::node::Frame::Msg { seq, body }),
                Frame::Ack { seq } => decided.push(htlc::node::Frame::Ack { seq }),
                Frame::Gossip(msg) => decided.push(htlc::node::Frame::Gossip(msg)),
                Frame::Error { code, detail } => {
                    decided.push(htlc::node::Frame::Error { code, detail })
                }
                Frame::Auth { .. } => tx.send_now(&Frame::Error {
                    code: ErrorCode::Protocol,
                    detail: "already authenticated".into(),
                }),
            }
        }
        if decided.is_empty() {
            return Ok(None);
        }
        // One look at the machine for the whole batch: the channels whose top-up needs the
        // chain's figures, and which route instructions are on the peer's own channels (their
        // onion layers are peeled below, in the session's task, outside the machine's lock:
        // two scalar multiplications each; the machine uses each only for the packet it was
        // peeled from, and refuses instructions for channels not the peer's unpeeled).
        let (wanted, owned): (Vec<ChannelId>, Vec<bool>) = self.read(|m| {
            let wanted = decided
                .iter()
                .filter_map(|f| m.wants_chain_figures(peer, f))
                .collect();
            let owned = decided
                .iter()
                .map(|f| match f {
                    htlc::node::Frame::Msg {
                        body: wire::Body::Route { channel_id, .. },
                        ..
                    } => m.peer_of(*channel_id) == Some(peer),
                    _ => false,
                })
                .collect();
            (wanted, owned)
        });
        let mut figures = Vec::new();
        if let Some(chain) = &self.inner.opts.chain {
            for id in wanted {
                let Some(params) = self.channel_params(id).await else {
                    continue;
                };
                match (chain.holdings(id).await, chain.deposits(&params).await) {
                    (Ok(held), Ok(deposited)) => figures.push((id, held, deposited)),
                    (Err(e), _) | (_, Err(e)) => {
                        warn!(error = %e, "cannot read the deposits; the top-up will be refused")
                    }
                }
            }
        }
        let peeled: Vec<htlc::node::PeeledAhead> = decided
            .iter()
            .zip(owned)
            .filter(|(_, owned)| *owned)
            .filter_map(|(f, _)| htlc::node::PeeledAhead::of(&self.inner.keys, f))
            .collect();
        crate::failpoint::point("before_process");
        let now = self.now();
        let done = self.step(|m| {
            let mut out = htlc::node::Output::default();
            for (channel_id, held, deposited) in figures {
                out.extend(m.handle_chain(
                    now,
                    ChainEvent::Holdings {
                        channel_id,
                        held,
                        deposited,
                    },
                ));
            }
            out.extend(m.handle_frames_peeled(now, peer, decided, peeled));
            Ok::<_, NodeError>(out)
        })?;
        Ok(Some(done))
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
        let mut events = self.subscribe();
        let now = self.now();
        self.step_wait(|m| m.open_channel(now, peer, params, deposit))
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

    /// Open a virtual channel with `peer` over `hub` (ADR 0026): we put in `deposit` from our
    /// ledger with the hub (plus its opening fee); the peer starts at zero. Returns once our
    /// side of it carries payments (our leg locks its guarantee and the peer signed the
    /// opening), or the hub's or the peer's refusal.
    pub async fn open_virtual(
        &self,
        hub: Address,
        peer: Address,
        deposit: Amount,
        lifetime_secs: u64,
    ) -> Result<ChannelId, NodeError> {
        self.open_virtual_over(&[hub], peer, deposit, lifetime_secs)
            .await
    }

    /// As [`Node::open_virtual`], over the chain of `hubs` (the first our peer, the last
    /// `peer`'s, each joined to the next by a ledger): every ledger on the path locks the
    /// guarantee and each hub gets its opening fee, by the rules it announced to us (the
    /// first hub's with its channel; the others' given by [`Node::set_virtual_policy`]).
    pub async fn open_virtual_over(
        &self,
        hubs: &[Address],
        peer: Address,
        deposit: Amount,
        lifetime_secs: u64,
    ) -> Result<ChannelId, NodeError> {
        let Some(&hub) = hubs.first() else {
            return Err(htlc::node::CommandError::Protocol(
                htlc::update::ProtocolError::InvalidState("a virtual channel needs a hub"),
            )
            .into());
        };
        if !self.is_connected(hub).await {
            return Err(NodeError::NotConnected(hub));
        }
        let nonce = U256::from(rand::random::<u64>());
        let mut events = self.subscribe();
        let now = self.now();
        self.step_wait(|m| m.open_virtual_over(now, hubs, peer, deposit, nonce, lifetime_secs))
            .await?;
        let id = self
            .read(|m| {
                m.virtuals()
                    .find(|(_, r)| {
                        r.terms.params.nonce == nonce && r.terms.params.participants[1] == peer
                    })
                    .map(|(id, _)| *id)
            })
            .ok_or(NodeError::Stopped)?;
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(NodeEvent::VirtualOpened { channel_id, .. }) if channel_id == id => {
                        return Ok(id);
                    }
                    Ok(NodeEvent::RefusedByPeer {
                        peer: p,
                        code,
                        detail,
                    }) if p == hub => return Err(NodeError::RefusedByPeer { code, detail }),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return Err(NodeError::Stopped);
                    }
                }
            }
        };
        match tokio::time::timeout(VIRTUAL_OPEN_TIMEOUT, wait).await {
            Ok(result) => result,
            Err(_) => Err(NodeError::NotReady {
                channel: id,
                stage: crate::error::Stage::NotFunded,
            }),
        }
    }

    /// Take `hub`'s rules for virtual channels (fees and limits) as announced: a hub further
    /// along a virtual channel's path than our own announces them to its peers only, and an
    /// opener pays every hub of the path by them.
    pub async fn set_virtual_policy(
        &self,
        hub: Address,
        policy: htlc::vchan::VirtualPolicy,
    ) -> Result<(), NodeError> {
        self.step_wait(|m| Ok::<_, NodeError>(m.set_virtual_policy(hub, policy)))
            .await
    }

    /// The virtual channels we take part in (as a party or as their hub).
    pub fn virtual_channels(&self) -> Vec<(ChannelId, htlc::node::records::VirtualRecord)> {
        self.read(|m| m.virtuals().map(|(id, r)| (*id, r.clone())).collect())
    }

    /// Delete a channel we proposed that the peer never countersigned (nothing of it exists on
    /// chain or at the peer). A channel that may hold money is never deleted.
    async fn forget_unopened(&self, id: ChannelId) -> Result<(), NodeError> {
        let awaiting = self.read(|m| {
            m.channel(id)
                .is_some_and(|c| c.snapshot().awaiting_countersignature())
        });
        if awaiting {
            self.step_wait(|m| m.forget(id)).await?;
            info!(channel = %id, "abandoned opening forgotten");
        }
        Ok(())
    }

    /// Delete openings left too long: channels a peer opened with us and never funded (once
    /// the chain confirms it holds nothing for them), and channels we proposed that the peer
    /// never countersigned.
    pub(crate) async fn collect_abandoned(&self) -> Result<(), NodeError> {
        let abandoned = self.read(|m| m.abandoned(self.now()));
        for id in abandoned.unanswered {
            self.forget_unopened(id).await?;
        }
        for id in abandoned.unfunded {
            // The chain has the last word: a deposit seen now makes the channel funded.
            if let Err(e) = self.check_funding(id).await {
                warn!(channel = %id, error = %e, "cannot read the chain; not collecting");
                continue;
            }
            let empty = self.read(|m| {
                m.channel_record(id).is_some_and(|r| {
                    !r.funded && r.snapshot.deposited().iter().all(|d| d.is_zero())
                })
            });
            if empty {
                self.step_wait(|m| m.forget(id)).await?;
                info!(channel = %id, "unfunded opening forgotten");
            }
        }
        Ok(())
    }

    /// Tell `peer` our forwarding policy and key, so it may route payments through us (a
    /// party forwarding over its virtual channels announces itself this way).
    pub async fn announce_policy(&self, peer: Address) -> Result<(), NodeError> {
        let now = self.now();
        self.step_wait(|m| Ok::<_, NodeError>(m.announce_policy(now, peer)))
            .await
    }

    /// Pay `amount` directly to the counterparty of `id` (one signed update).
    pub async fn transfer(&self, id: ChannelId, amount: Amount) -> Result<(), NodeError> {
        let now = self.now();
        self.step_wait(|m| m.transfer(now, id, amount)).await
    }

    /// Queue the cooperative close of `id`.
    pub async fn close(&self, id: ChannelId) -> Result<(), NodeError> {
        let now = self.now();
        self.step_wait(|m| m.close(now, id)).await
    }

    /// Close channel `id` on chain with our latest co-signed state, without the peer: the
    /// payout follows after the challenge window (see `htlc::node::Node::force_close`).
    pub async fn force_close(&self, id: ChannelId) -> Result<(), NodeError> {
        let now = self.now();
        self.step_wait(|m| m.force_close(now, id)).await
    }

    /// Queue operations on a channel and propose them.
    pub async fn with_channel(
        &self,
        id: ChannelId,
        f: impl FnOnce(&mut Channel),
    ) -> Result<(), NodeError> {
        let now = self.now();
        self.step_wait(|m| m.command(now, id, f)).await
    }
}

/// How long [`Node::open_virtual`] waits for the hub and the peer.
pub const VIRTUAL_OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Frames of one session handed to the machine in one step, at most.
const MAX_FRAMES_PER_STEP: usize = 256;

/// Steps of one session queued to the disk before its next frames wait for them.
const MAX_STEPS_IN_FLIGHT: usize = 4;

/// Bytes of queued frames a session's writer gathers into one write of its stream, at most
/// (more wait for the next write; a frame larger than this is written alone).
const WRITE_COALESCE: usize = 64 * 1024;

/// Bytes a session's reader takes from its stream at a time (the frames in them are then
/// read from memory). QUIC's flow control bounds what a peer can have in flight anyway.
const READ_BUFFER: usize = 64 * 1024;
