//! The node as one machine: every channel, peer link and payment record of a node, driven by
//! inputs and drained of outputs, with no I/O (the model is quinn-proto's `Connection`).
//!
//! Inputs: a peer's frames ([`Node::handle_frames`], all those a session has buffered at
//! once), the time ([`Node::handle_timeout`], when [`Node::poll_timeout`] says), a session
//! coming up ([`Node::connected`]), and the operator's commands ([`Node::pay`],
//! [`Node::add_invoice`], [`Node::transfer`], [`Node::close`], [`Node::add_channel`]).
//! Each returns one [`Output`]: the records to write as one atomic batch, then the frames
//! to send, then the events to tell. The caller writes the batch durably before it sends a
//! frame of it (rule 2); the node never reads a clock, a socket, a disk or a random source.
//!
//! ```text
//!  frames ──┐                                   ┌─► Output.writes    1. persist (one batch)
//!  time ────┼─► handle_* ─► channel machines ──►├─► Output.transmits  2. send
//!  command ─┘        ▲        │ events          └─► Output.events     3. tell
//!                    └─ payment reactions (claim, forward, fail, settle upstream),
//!                       carried out in the same step and the same batch
//! ```
//!
//! A step's payment reactions run inside the step: the HTLC that arrives, the decision on
//! it and the lock offered downstream land in one batch, so a crash leaves either all of it
//! or none (and the peer re-sends what we did not acknowledge). [`Node::resume`] after a
//! restart decides again what an older store left undecided.

use crate::forward::{ForwardPolicy, NextHop};
use crate::ids::{ChannelId, Expiry, Hashlock, HtlcId};
use crate::msg::Message;
use crate::node::admission::{RouteRefusal, admit_route};
use crate::node::link::{Inbound, Inbox, Outbox};
use crate::node::payment::{
    ForwardRecord, HtlcPlan, InvoiceTerms, Known, PaymentStatus, PlanError, Step, Upstream,
    on_committed, outcomes,
};
use crate::node::records::{Book, ChannelRecord, LinkRecord, Payment, Records, Route, Write};
use crate::node::timers::Timers;
use crate::sig::Keys;
use crate::update::{
    Channel, CommittedHtlc, Effect, Event, MAX_CONSECUTIVE_REJECTS, ProtocolError,
};
use crate::{Amount, FailureReason, Op, OpError, Side, SignedState};
use alloy::primitives::{Address, B256};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// What one node says to another inside a numbered, acknowledged frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A channel machine's message.
    Channel(Message),
    /// The payer's instruction for the HTLC it is about to lock on `channel`.
    Route {
        /// The channel the HTLC comes on.
        channel: ChannelId,
        /// Its hashlock.
        hashlock: Hashlock,
        /// Who to forward it to.
        next_peer: Address,
        /// Amount and expiry of the outgoing HTLC.
        next: NextHop,
    },
    /// We refused the peer's message `seq`; nothing changed.
    Refused {
        /// Its number.
        seq: u64,
        /// Why.
        detail: String,
    },
}

/// What travels on a link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// A numbered message; the receiver processes numbers in order and acknowledges each.
    Msg {
        /// Its number on this link.
        seq: u64,
        /// What it says.
        body: Body,
    },
    /// Every message up to `seq` was processed.
    Ack {
        /// The last number processed.
        seq: u64,
    },
    /// An answer that is not numbered: a gap, or a refusal to a peer we keep nothing for.
    Error {
        /// Why.
        detail: String,
    },
}

/// What the node tells its operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// A state of `channel` was co-signed.
    Committed {
        /// Which channel.
        channel: ChannelId,
        /// Its version.
        version: u64,
    },
    /// The final state of `channel` is co-signed: pay it out on chain.
    Closed {
        /// Which channel.
        channel: ChannelId,
        /// The final state.
        state: SignedState,
    },
    /// The peer of `channel` keeps refusing our proposals: go to the chain.
    PeerStuck {
        /// Which channel.
        channel: ChannelId,
    },
    /// We revealed the preimage of an invoice of ours.
    PaymentReceived {
        /// The invoice's hashlock.
        hashlock: Hashlock,
        /// What the lock carried.
        amount: Amount,
    },
    /// We hold a paying HTLC without revealing ([`Config::reveal_preimages`] is off).
    Holding {
        /// The invoice's hashlock.
        hashlock: Hashlock,
    },
    /// A forward settled on both sides.
    Forwarded {
        /// Incoming channel.
        in_channel: ChannelId,
        /// Outgoing channel.
        out_channel: ChannelId,
        /// What it earned.
        fee: Amount,
    },
    /// A forward failed back upstream.
    ForwardFailed {
        /// Incoming channel.
        in_channel: ChannelId,
        /// Why.
        reason: FailureReason,
    },
    /// A payment of ours ended paid.
    PaymentSucceeded {
        /// Its id.
        id: B256,
        /// Proof of payment.
        preimage: crate::Preimage,
    },
    /// A payment of ours ended unpaid (`None`: nobody answered before it expired).
    PaymentFailed {
        /// Its id.
        id: B256,
        /// The failing node's reason.
        reason: Option<FailureReason>,
    },
    /// An operation we queued on `channel` will never take effect.
    OpDropped {
        /// Which channel.
        channel: ChannelId,
        /// The operation.
        op: Op,
        /// Why.
        error: OpError,
    },
    /// We refused a message of `peer`.
    Refused {
        /// Whose.
        peer: Address,
        /// Why.
        detail: String,
    },
    /// `peer` refused a message of ours, or reported an error.
    RefusedByPeer {
        /// Who.
        peer: Address,
        /// What it said.
        detail: String,
    },
}

/// What a step produced, to be carried out in this order: write, send, tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Records to write as one atomic batch, synced if any [`Write::needs_sync`].
    pub writes: Vec<Write>,
    /// Frames to send once the batch is durable (those to a peer without a session may be
    /// dropped: numbered ones are re-sent by [`Node::connected`]).
    pub transmits: Vec<(Address, Frame)>,
    /// What to tell the operator.
    pub events: Vec<NodeEvent>,
}

impl Output {
    /// Whether the step changed nothing and has nothing to send or tell.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.transmits.is_empty() && self.events.is_empty()
    }

    /// Whether the batch must be synced before the frames leave.
    pub fn needs_sync(&self) -> bool {
        self.writes.iter().any(Write::needs_sync)
    }
}

/// A node's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// What we charge and require to forward.
    pub policy: ForwardPolicy,
    /// Route instructions a peer may leave waiting per channel (rule 10).
    pub max_routes_per_channel: usize,
    /// Seconds a route instruction waits for its HTLC before it is collected.
    pub route_ttl_secs: u64,
    /// Whether we reveal preimages of our invoices (off only to test holding payees).
    pub reveal_preimages: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: ForwardPolicy::default(),
            max_routes_per_channel: crate::Limits::default().max_pending_locks,
            route_ttl_secs: 600,
            reveal_preimages: true,
        }
    }
}

/// A payment to make: `amount` to `payee`, through our channel with `hub`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayOrder {
    /// The payment's id: paying the same id again does nothing.
    pub id: B256,
    /// The node our channel leads to (the payee itself for a direct payment).
    pub hub: Address,
    /// Who is paid.
    pub payee: Address,
    /// The payee's hashlock.
    pub hashlock: Hashlock,
    /// What the payee receives.
    pub amount: Amount,
    /// Seconds the payee's lock must leave before it expires.
    pub final_expiry_delta: u64,
    /// The hub's announced policy.
    pub policy: ForwardPolicy,
}

/// A command the node refuses; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No such channel.
    #[error("no channel {0}")]
    UnknownChannel(ChannelId),
    /// A channel with this id exists already.
    #[error("channel {0} exists already")]
    ChannelExists(ChannelId),
    /// No open channel with this peer can carry the payment.
    #[error("no open channel with {0}")]
    NoChannel(Address),
    /// The payment cannot be planned.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The channel machine refused.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// A payment reaction waiting inside a step.
#[derive(Clone, Debug)]
enum Reaction {
    /// A peer's HTLC is committed: claim, forward or fail it.
    Received(CommittedHtlc),
    /// An HTLC we offered on this channel ended: settle upstream.
    Outcome(ChannelId, HtlcId),
}

#[derive(Default)]
struct Pending {
    out: Output,
    touched: BTreeSet<ChannelId>,
    /// Channels with operations queued in this step, proposed once at its end (so that
    /// every lock a step decides rides one signed update per channel).
    to_propose: BTreeSet<ChannelId>,
    reactions: VecDeque<Reaction>,
}

struct Entry {
    peer: Address,
    machine: Channel,
}

#[derive(Default)]
struct Link {
    inbox: Inbox,
    outbox: Outbox,
    unacked: BTreeMap<u64, Body>,
}

/// One node: its channels, links and payment records (see the module doc).
pub struct Node {
    keys: Keys,
    config: Config,
    channels: BTreeMap<ChannelId, Entry>,
    by_peer: HashMap<Address, Vec<ChannelId>>,
    links: HashMap<Address, Link>,
    book: Book,
    /// Our payments by their HTLC: (channel, id) → payment id.
    paylocks: HashMap<(ChannelId, HtlcId), B256>,
    timers: Timers,
}

impl Node {
    /// A node with nothing yet.
    pub fn new(keys: Keys, config: Config) -> Node {
        Node {
            keys,
            config,
            channels: BTreeMap::new(),
            by_peer: HashMap::new(),
            links: HashMap::new(),
            book: Book::default(),
            paylocks: HashMap::new(),
            timers: Timers::default(),
        }
    }

    /// The node as its writes left it. Call [`Node::resume`] next.
    pub fn restore(keys: Keys, config: Config, records: Records) -> Result<Node, ProtocolError> {
        let mut node = Node::new(keys, config);
        for (id, rec) in records.channels {
            let machine = Channel::restore(rec.snapshot, node.keys.clone())?;
            node.timers.set(id, machine.snapshot().next_timeout());
            node.insert(id, rec.peer, machine);
        }
        for (peer, l) in records.links {
            let first = l.unacked.keys().next().copied();
            node.links.insert(
                peer,
                Link {
                    inbox: Inbox::new(l.received),
                    outbox: Outbox::restore(l.next_send, first),
                    unacked: l.unacked,
                },
            );
        }
        node.paylocks = records
            .book
            .payments
            .iter()
            .map(|(id, p)| ((p.channel, p.htlc), *id))
            .collect();
        node.book = records.book;
        Ok(node)
    }

    /// Our address.
    pub fn address(&self) -> Address {
        self.keys.address()
    }

    /// The machine of channel `id`.
    pub fn channel(&self, id: ChannelId) -> Option<&Channel> {
        self.channels.get(&id).map(|e| &e.machine)
    }

    /// Every channel's id, in order.
    pub fn channel_ids(&self) -> impl Iterator<Item = ChannelId> + '_ {
        self.channels.keys().copied()
    }

    /// Our message `seq` to `peer`, if it is not acknowledged yet (to write for a
    /// [`Write::Sent`]).
    pub fn unacked(&self, peer: Address, seq: u64) -> Option<&Body> {
        self.links.get(&peer)?.unacked.get(&seq)
    }

    /// The record of channel `id` as it stands, to write for a [`Write::Channel`].
    pub fn channel_record(&self, id: ChannelId) -> Option<ChannelRecord> {
        self.channels.get(&id).map(|e| ChannelRecord {
            peer: e.peer,
            snapshot: e.machine.snapshot().clone(),
        })
    }

    /// The peer of channel `id`.
    pub fn peer_of(&self, id: ChannelId) -> Option<Address> {
        self.channels.get(&id).map(|e| e.peer)
    }

    /// The payment records.
    pub fn book(&self) -> &Book {
        &self.book
    }

    /// Payment `id`, if we made it.
    pub fn payment(&self, id: B256) -> Option<&Payment> {
        self.book.payments.get(&id)
    }

    /// When [`Node::handle_timeout`] is due next (`None`: nothing to wait for).
    pub fn poll_timeout(&self) -> Option<Expiry> {
        self.timers.next()
    }

    /// Messages of ours `peer` has not acknowledged yet.
    pub fn backlog(&self, peer: Address) -> u64 {
        self.links.get(&peer).map_or(0, |l| l.outbox.backlog())
    }

    fn insert(&mut self, id: ChannelId, peer: Address, machine: Channel) {
        self.channels.insert(id, Entry { peer, machine });
        let ids = self.by_peer.entry(peer).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }

    fn has_channel(&self, peer: Address) -> bool {
        self.by_peer.get(&peer).is_some_and(|v| !v.is_empty())
    }

    /// Take a co-signed channel with `peer` into the node (its opening is done).
    pub fn add_channel(&mut self, peer: Address, machine: Channel) -> Result<Output, CommandError> {
        let id = machine.id();
        if self.channels.contains_key(&id) {
            return Err(CommandError::ChannelExists(id));
        }
        self.insert(id, peer, machine);
        let mut p = Pending::default();
        p.touched.insert(id);
        Ok(self.finish(Expiry(0), p))
    }

    /// A session with `peer` is up: every message it has not acknowledged goes out again,
    /// in order.
    pub fn connected(&self, peer: Address) -> Output {
        let mut out = Output::default();
        if let Some(l) = self.links.get(&peer) {
            for (seq, body) in &l.unacked {
                out.transmits.push((
                    peer,
                    Frame::Msg {
                        seq: *seq,
                        body: body.clone(),
                    },
                ));
            }
        }
        out
    }

    /// Handle every frame `from` sent that the session has buffered, as one step.
    pub fn handle_frames(
        &mut self,
        now: Expiry,
        from: Address,
        frames: impl IntoIterator<Item = Frame>,
    ) -> Output {
        let mut p = Pending::default();
        for f in frames {
            self.on_frame(now, from, f, &mut p);
        }
        self.finish(now, p)
    }

    /// Handle one frame from `from`.
    pub fn handle_frame(&mut self, now: Expiry, from: Address, frame: Frame) -> Output {
        self.handle_frames(now, from, [frame])
    }

    /// The time is `now`: take back every lock we offered that expired, and collect route
    /// instructions whose HTLC never came.
    pub fn handle_timeout(&mut self, now: Expiry) -> Output {
        let mut p = Pending::default();
        for id in self.timers.due(now) {
            let Some(e) = self.channels.get_mut(&id) else {
                self.timers.set(id, None);
                continue;
            };
            if e.machine.expire_due(now) > 0 {
                self.propose(now, id, &mut p);
            } else {
                self.timers.set(id, e.machine.snapshot().next_timeout());
            }
        }
        let cutoff = now.0.saturating_sub(self.config.route_ttl_secs);
        let stale: Vec<_> = self
            .book
            .routes
            .iter()
            .filter(|(_, r)| r.stored_at.0 < cutoff)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            self.write(&mut p, Write::Route { key, route: None });
        }
        self.finish(now, p)
    }

    /// After a restart: decide the incoming HTLCs no decision was recorded for, and settle
    /// upstream the forwards whose outcome is known.
    pub fn resume(&mut self, now: Expiry) -> Output {
        let mut p = Pending::default();
        for e in self.channels.values() {
            if e.machine.latest().state.is_final {
                continue;
            }
            for h in e.machine.received_htlcs() {
                p.reactions.push_back(Reaction::Received(h));
            }
        }
        for (key, f) in &self.book.forwards {
            if f.upstream().is_some() {
                p.reactions.push_back(Reaction::Outcome(key.0, key.1));
            }
        }
        self.finish(now, p)
    }

    /// Make an invoice of ours known: an HTLC with its hashlock is claimed if it pays
    /// `terms` ([`crate::node::payment::payee_accepts`]).
    pub fn add_invoice(&mut self, terms: InvoiceTerms) -> Output {
        let mut p = Pending::default();
        let hashlock = terms.preimage.hashlock();
        self.write(&mut p, Write::Invoice { hashlock, terms });
        self.finish(Expiry(0), p)
    }

    /// Pay `order`, priced with the hub's policy. Paying an id again changes nothing.
    pub fn pay(&mut self, now: Expiry, order: &PayOrder) -> Result<Output, CommandError> {
        let mut p = Pending::default();
        self.pay_in(now, order, None, &mut p)?;
        Ok(self.finish(now, p))
    }

    /// Pay every order of `orders` in one step: their HTLCs ride one signed update per
    /// channel. Returns the step's output and, per order, whether it was refused.
    pub fn pay_batch(
        &mut self,
        now: Expiry,
        orders: &[PayOrder],
    ) -> (Output, Vec<Result<(), CommandError>>) {
        let mut p = Pending::default();
        let results = orders
            .iter()
            .map(|o| self.pay_in(now, o, None, &mut p))
            .collect();
        (self.finish(now, p), results)
    }

    /// Pay `order` with the amounts and expiries of `plan`, chosen by the caller (tests of
    /// the other nodes' checks). Paying an id again changes nothing.
    pub fn pay_planned(
        &mut self,
        now: Expiry,
        order: &PayOrder,
        plan: HtlcPlan,
    ) -> Result<Output, CommandError> {
        let mut p = Pending::default();
        self.pay_in(now, order, Some(plan), &mut p)?;
        Ok(self.finish(now, p))
    }

    /// Queue one payment into step `p`: the route instruction and the HTLC go out in the same
    /// step (one batch, the instruction first on the link). Nothing changes if it fails.
    fn pay_in(
        &mut self,
        now: Expiry,
        order: &PayOrder,
        plan: Option<HtlcPlan>,
        p: &mut Pending,
    ) -> Result<(), CommandError> {
        if self.book.payments.contains_key(&order.id) {
            return Ok(());
        }
        let (channel, available) = self
            .best_channel_to(order.hub, None)
            .ok_or(CommandError::NoChannel(order.hub))?;
        let plan = match plan {
            Some(plan) => plan,
            None => crate::node::payment::plan(
                order.amount,
                order.final_expiry_delta,
                &order.policy,
                available,
                now,
            )?,
        };
        if order.payee != order.hub {
            self.send(
                order.hub,
                Body::Route {
                    channel,
                    hashlock: order.hashlock,
                    next_peer: order.payee,
                    next: plan.next,
                },
                p,
            );
        }
        let Some(e) = self.channels.get_mut(&channel) else {
            return Err(CommandError::UnknownChannel(channel));
        };
        let htlc = e.machine.offer_htlc(plan.sent, order.hashlock, plan.expiry);
        self.paylocks.insert((channel, htlc), order.id);
        let payment = Payment {
            hashlock: order.hashlock,
            amount: order.amount,
            sent: plan.sent,
            channel,
            htlc,
            status: PaymentStatus::Pending,
        };
        self.write(
            p,
            Write::Payment {
                id: order.id,
                payment,
            },
        );
        p.to_propose.insert(channel);
        Ok(())
    }

    /// Pay `amount` to the peer of `channel` directly (one signed update).
    pub fn transfer(
        &mut self,
        now: Expiry,
        channel: ChannelId,
        amount: Amount,
    ) -> Result<Output, CommandError> {
        self.command(now, channel, |m| m.transfer(amount))
    }

    /// Propose the cooperative close of `channel`.
    pub fn close(&mut self, now: Expiry, channel: ChannelId) -> Result<Output, CommandError> {
        self.command(now, channel, Channel::close)
    }

    fn command(
        &mut self,
        now: Expiry,
        channel: ChannelId,
        f: impl FnOnce(&mut Channel),
    ) -> Result<Output, CommandError> {
        let e = self
            .channels
            .get_mut(&channel)
            .ok_or(CommandError::UnknownChannel(channel))?;
        f(&mut e.machine);
        let effects = e.machine.propose(now)?;
        let mut p = Pending::default();
        self.carry(channel, effects, &mut p);
        Ok(self.finish(now, p))
    }

    /// Our open channel with `peer` (in `asset` if given) with the most free balance on our
    /// side: not final, not frozen, not stuck with a peer that refuses everything.
    fn best_channel_to(
        &self,
        peer: Address,
        asset: Option<Address>,
    ) -> Option<(ChannelId, Amount)> {
        let mut best: Option<(ChannelId, Amount)> = None;
        for id in self.by_peer.get(&peer)? {
            let Some(e) = self.channels.get(id) else {
                continue;
            };
            let s = e.machine.snapshot();
            if !s.can_offer()
                || s.rejects_in_row() >= MAX_CONSECUTIVE_REJECTS
                || asset.is_some_and(|a| a != s.params().asset)
            {
                continue;
            }
            let free = s.free_balance();
            if best.is_none_or(|(_, b)| free > b) {
                best = Some((*id, free));
            }
        }
        best
    }

    fn write(&mut self, p: &mut Pending, w: Write) {
        self.book.apply(&w);
        p.out.writes.push(w);
    }

    /// Number `body` on the link to `peer`, store it until acknowledged, and send it.
    fn send(&mut self, peer: Address, body: Body, p: &mut Pending) {
        let link = self.links.entry(peer).or_default();
        let seq = link.outbox.numbers(1).start;
        link.outbox.sent(seq.saturating_add(1));
        link.unacked.insert(seq, body.clone());
        p.out.writes.push(Write::Sent { peer, seq });
        p.out.transmits.push((peer, Frame::Msg { seq, body }));
    }

    /// Refuse `from`'s message `seq`. A peer with a channel gets a numbered, durable refusal;
    /// a stranger an unnumbered error, so a fresh key cannot make us write (rule 10).
    fn refuse(&mut self, from: Address, seq: u64, detail: String, p: &mut Pending) {
        p.out.events.push(NodeEvent::Refused {
            peer: from,
            detail: detail.clone(),
        });
        if self.has_channel(from) {
            self.send(from, Body::Refused { seq, detail }, p);
        } else {
            p.out.transmits.push((from, Frame::Error { detail }));
        }
    }

    fn on_frame(&mut self, now: Expiry, from: Address, frame: Frame, p: &mut Pending) {
        match frame {
            Frame::Ack { seq } => {
                if let Some(l) = self.links.get_mut(&from)
                    && let Some(seqs) = l.outbox.on_ack(seq)
                {
                    l.unacked.retain(|s, _| !seqs.contains(s));
                    p.out.writes.push(Write::Acked { peer: from, seqs });
                }
            }
            Frame::Error { detail } => {
                p.out
                    .events
                    .push(NodeEvent::RefusedByPeer { peer: from, detail });
            }
            Frame::Msg { seq, body } => {
                // A peer without a channel has no durable counter with us: it may skip.
                let stranger = !self.has_channel(from);
                let inbox = self.links.get(&from).map(|l| l.inbox).unwrap_or_default();
                match inbox.classify(seq, stranger) {
                    Inbound::Duplicate { ack } => {
                        p.out.transmits.push((from, Frame::Ack { seq: ack }));
                    }
                    Inbound::Gap { expected } => {
                        p.out.events.push(NodeEvent::Refused {
                            peer: from,
                            detail: format!("expected message {expected}, got {seq}"),
                        });
                        p.out.transmits.push((
                            from,
                            Frame::Error {
                                detail: format!("expected message {expected}, got {seq}"),
                            },
                        ));
                    }
                    Inbound::Process => {
                        self.on_body(now, from, seq, body, p);
                        self.links.entry(from).or_default().inbox.received(seq);
                        if self.has_channel(from) {
                            p.out.writes.push(Write::Received { peer: from, seq });
                        }
                        p.out.transmits.push((from, Frame::Ack { seq }));
                    }
                }
            }
        }
    }

    fn on_body(&mut self, now: Expiry, from: Address, seq: u64, body: Body, p: &mut Pending) {
        match body {
            Body::Route {
                channel,
                hashlock,
                next_peer,
                next,
            } => {
                let owned = self.peer_of(channel) == Some(from);
                let waiting = self
                    .book
                    .routes
                    .range(
                        (channel, Hashlock(B256::ZERO))
                            ..=(channel, Hashlock(B256::repeat_byte(0xff))),
                    )
                    .count();
                match admit_route(
                    from,
                    owned,
                    next_peer,
                    &next,
                    (waiting, self.config.max_routes_per_channel),
                ) {
                    Ok(()) => {
                        let route = Route {
                            next_peer,
                            next,
                            stored_at: now,
                        };
                        self.write(
                            p,
                            Write::Route {
                                key: (channel, hashlock),
                                route: Some(route),
                            },
                        );
                    }
                    Err(e @ (RouteRefusal::Invalid | RouteRefusal::TooMany)) => {
                        self.refuse(from, seq, format!("channel {channel}: {e}"), p)
                    }
                }
            }
            Body::Channel(msg) => {
                let id = msg.channel_id();
                // Another peer's channel gets the same answer as an unknown one.
                let Some(e) = self.channels.get_mut(&id).filter(|e| e.peer == from) else {
                    return self.refuse(from, seq, format!("no channel {id}"), p);
                };
                match e.machine.handle(msg, now) {
                    Ok(effects) => self.carry(id, effects, p),
                    Err(err) => self.refuse(from, seq, format!("channel {id}: {err}"), p),
                }
            }
            Body::Refused { detail, .. } => {
                p.out
                    .events
                    .push(NodeEvent::RefusedByPeer { peer: from, detail });
            }
        }
    }

    /// Propose what channel `id` has queued, and carry out the effects.
    fn propose(&mut self, now: Expiry, id: ChannelId, p: &mut Pending) {
        let Some(e) = self.channels.get_mut(&id) else {
            return;
        };
        p.touched.insert(id);
        match e.machine.propose(now) {
            Ok(effects) => self.carry(id, effects, p),
            // A closed channel, or a peer that refuses everything: the queue waits, and the
            // operator is told (the chain is the way out).
            Err(ProtocolError::PeerStuck(_)) => {
                p.out.events.push(NodeEvent::PeerStuck { channel: id })
            }
            Err(_) => {}
        }
    }

    /// Carry out channel `id`'s effects: its record is written at the end of the step, its
    /// messages are numbered and stored, its events recorded and reacted to.
    fn carry(&mut self, id: ChannelId, effects: Vec<Effect>, p: &mut Pending) {
        let Some(peer) = self.peer_of(id) else {
            return;
        };
        p.touched.insert(id);
        for e in effects {
            match e {
                Effect::Persist => {}
                Effect::Send(m) => self.send(peer, Body::Channel(m), p),
                Effect::Event(ev) => self.on_event(id, ev, p),
            }
        }
    }

    fn on_event(&mut self, id: ChannelId, ev: Event, p: &mut Pending) {
        // Rules 4 and 5: what the state taught is recorded in the batch that persists it;
        // acting on it upstream follows in the same step.
        for (hid, o) in outcomes(&ev) {
            if let Some(mut f) = self.book.forwards.get(&(id, hid)).cloned()
                && f.learn(o)
            {
                self.write(
                    p,
                    Write::Forward {
                        out: (id, hid),
                        record: f,
                    },
                );
                p.reactions.push_back(Reaction::Outcome(id, hid));
            }
            if let Some(pid) = self.paylocks.get(&(id, hid)).copied()
                && let Some(mut pay) = self.book.payments.get(&pid).cloned()
                && let Some(status) = pay.status.after(o)
            {
                p.out.events.push(match &status {
                    PaymentStatus::Succeeded { preimage } => NodeEvent::PaymentSucceeded {
                        id: pid,
                        preimage: *preimage,
                    },
                    PaymentStatus::Failed { reason } => NodeEvent::PaymentFailed {
                        id: pid,
                        reason: Some(*reason),
                    },
                    _ => NodeEvent::PaymentFailed {
                        id: pid,
                        reason: None,
                    },
                });
                pay.status = status;
                self.write(
                    p,
                    Write::Payment {
                        id: pid,
                        payment: pay,
                    },
                );
            }
        }
        match ev {
            Event::HtlcReceived(h) => p.reactions.push_back(Reaction::Received(h)),
            Event::Committed { version, .. } => p.out.events.push(NodeEvent::Committed {
                channel: id,
                version,
            }),
            Event::Closed(state) => p.out.events.push(NodeEvent::Closed { channel: id, state }),
            Event::PeerStuck => p.out.events.push(NodeEvent::PeerStuck { channel: id }),
            Event::OpDropped { op, error } => p.out.events.push(NodeEvent::OpDropped {
                channel: id,
                op,
                error,
            }),
            Event::PreimageLearned { .. } => {}
        }
    }

    /// A peer's HTLC is committed: gather what we know of its hashlock, let
    /// [`on_committed`] decide, and carry out the step (claim, forward or fail).
    fn on_received(&mut self, now: Expiry, h: CommittedHtlc, p: &mut Pending) {
        let (ch, lock) = (h.channel_id(), *h.lock());
        if self.book.forwarded_in.contains_key(&(ch, lock.id)) {
            return;
        }
        let Some(e) = self.channels.get(&ch) else {
            return;
        };
        let s = e.machine.snapshot();
        // Still the peer's lock in the latest state? (A decision may come after it ended.)
        if !s
            .latest()
            .state
            .locks
            .iter()
            .any(|l| l.id == lock.id && l.sender != s.me())
        {
            return;
        }
        let (asset, frozen, we_opened) = (s.params().asset, s.frozen(), s.me() == Side::A);
        let terms = self.book.invoices.get(&lock.hashlock).copied();
        let route = match terms {
            Some(_) => None,
            None => self.book.routes.get(&(ch, lock.hashlock)).copied(),
        };
        // Only a channel in the incoming channel's asset can carry it on.
        let out = match &route {
            Some(r) if !frozen => {
                self.best_channel_to(r.next_peer, Some(asset))
                    .and_then(|(id, _)| {
                        Some((
                            id,
                            self.channels.get(&id)?.machine.outgoing(self.config.policy),
                        ))
                    })
            }
            _ => None,
        };
        let known = match (&terms, &route) {
            (Some(t), _) => Known::Invoice(t),
            (None, Some(r)) => Known::Route {
                next: &r.next,
                outgoing: out.as_ref().map(|(_, o)| o),
                incoming_frozen: frozen,
            },
            (None, None) => Known::Nothing { we_opened },
        };
        let step = on_committed(&h, known, now);
        // The instruction is used up by this decision.
        if route.is_some() {
            self.write(
                p,
                Write::Route {
                    key: (ch, lock.hashlock),
                    route: None,
                },
            );
        }
        match (step, terms, out) {
            (Step::Claim(preimage), Some(t), _) => {
                if !self.config.reveal_preimages {
                    p.out.events.push(NodeEvent::Holding {
                        hashlock: lock.hashlock,
                    });
                    return;
                }
                if let Some(e) = self.channels.get_mut(&ch) {
                    e.machine.fulfill_htlc(lock.id, preimage);
                }
                self.write(
                    p,
                    Write::Invoice {
                        hashlock: lock.hashlock,
                        terms: InvoiceTerms { paid: true, ..t },
                    },
                );
                p.out.events.push(NodeEvent::PaymentReceived {
                    hashlock: lock.hashlock,
                    amount: lock.amount,
                });
                p.to_propose.insert(ch);
            }
            (Step::Forward(fwd), _, Some((out_ch, _))) => {
                let Some(oe) = self.channels.get_mut(&out_ch) else {
                    return;
                };
                let out_id = oe.machine.offer_htlc(fwd.amount, fwd.hashlock, fwd.expiry);
                let record = ForwardRecord::new((ch, lock.id), (out_ch, out_id), &fwd);
                self.write(
                    p,
                    Write::Forward {
                        out: (out_ch, out_id),
                        record,
                    },
                );
                self.write(
                    p,
                    Write::ForwardedIn {
                        incoming: (ch, lock.id),
                        out: (out_ch, out_id),
                    },
                );
                p.to_propose.insert(out_ch);
            }
            (Step::Fail(reason), _, _) => self.fail_incoming(ch, lock.id, reason, p),
            // `on_committed` claims only with an invoice and forwards only with a channel.
            (Step::Claim(_) | Step::Forward(_), _, _) => {
                self.fail_incoming(ch, lock.id, FailureReason::TemporaryChannelFailure, p)
            }
        }
    }

    fn fail_incoming(&mut self, ch: ChannelId, id: HtlcId, reason: FailureReason, p: &mut Pending) {
        if let Some(e) = self.channels.get_mut(&ch) {
            e.machine.fail_htlc(id, reason);
            p.to_propose.insert(ch);
        }
    }

    /// An HTLC we offered on `ch` ended: settle or fail the incoming HTLC it was forwarded
    /// for, marking the forward done in the same batch.
    fn on_outcome(&mut self, ch: ChannelId, id: HtlcId, p: &mut Pending) {
        let Some(f) = self.book.forwards.get(&(ch, id)).cloned() else {
            return;
        };
        let Some(up) = f.upstream() else {
            return;
        };
        let Some(e) = self.channels.get_mut(&f.in_channel) else {
            return;
        };
        match up {
            Upstream::Fulfill(pre) => {
                e.machine.fulfill_htlc(f.in_id, pre);
                p.out.events.push(NodeEvent::Forwarded {
                    in_channel: f.in_channel,
                    out_channel: f.out_channel,
                    fee: f.fee,
                });
            }
            Upstream::Fail(reason) => {
                e.machine.fail_htlc(f.in_id, reason);
                p.out.events.push(NodeEvent::ForwardFailed {
                    in_channel: f.in_channel,
                    reason,
                });
            }
        }
        let in_channel = f.in_channel;
        self.write(
            p,
            Write::Forward {
                out: (ch, id),
                record: ForwardRecord { done: true, ..f },
            },
        );
        p.to_propose.insert(in_channel);
    }

    /// End a step: run its payment reactions, then write the record of every channel it
    /// touched and set their timers.
    fn finish(&mut self, now: Expiry, mut p: Pending) -> Output {
        loop {
            while let Some(r) = p.reactions.pop_front() {
                match r {
                    Reaction::Received(h) => self.on_received(now, h, &mut p),
                    Reaction::Outcome(ch, id) => self.on_outcome(ch, id, &mut p),
                }
            }
            // A proposal may drop an offer, whose failure is a reaction again.
            let due = std::mem::take(&mut p.to_propose);
            if due.is_empty() {
                break;
            }
            for id in due {
                self.propose(now, id, &mut p);
            }
        }
        for id in std::mem::take(&mut p.touched) {
            let Some(e) = self.channels.get(&id) else {
                continue;
            };
            self.timers.set(id, e.machine.snapshot().next_timeout());
            p.out.writes.push(Write::Channel { id });
        }
        p.out
    }

    /// Everything the node would write if it wrote all of itself now (a test's check that
    /// its writes are complete: a node restored from its writes equals this).
    pub fn records(&self) -> Records {
        Records {
            channels: self
                .channels
                .iter()
                .map(|(id, e)| {
                    (
                        *id,
                        ChannelRecord {
                            peer: e.peer,
                            snapshot: e.machine.snapshot().clone(),
                        },
                    )
                })
                .collect(),
            links: self
                .links
                .iter()
                .filter(|(peer, _)| self.has_channel(**peer))
                .map(|(peer, l)| {
                    (
                        *peer,
                        LinkRecord {
                            received: l.inbox.last(),
                            next_send: l.outbox.next_send(),
                            unacked: l.unacked.clone(),
                        },
                    )
                })
                .collect(),
            book: self.book.clone(),
        }
    }
}
