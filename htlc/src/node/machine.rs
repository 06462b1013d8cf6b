//! The node as one machine: every channel, peer link and payment record of a node, driven by
//! inputs and drained of outputs, with no I/O (the model is quinn-proto's `Connection`).
//!
//! Inputs: a peer's frames ([`Node::handle_frames`], all those a session has buffered at
//! once), the time ([`Node::handle_timeout`], when [`Node::poll_timeout`] says), what the
//! chain shows ([`Node::handle_chain`]), a session coming up ([`Node::connected`]), and the
//! operator's commands ([`Node::open_channel`], [`Node::pay`], [`Node::add_invoice`],
//! [`Node::transfer`], [`Node::close`], ...). Each returns one [`Output`]: the records to
//! write as one atomic batch (chain intents among them), then the frames to send, then the
//! events to tell, and the chain figures the node wants read. The caller writes the batch
//! durably before it sends a frame of it (rule 2); the node never reads a clock, a socket, a
//! disk, the chain or a random source.
//!
//! ```text
//!  frames ──┐                                    ┌─► writes + intents  1. persist (one batch)
//!  time ────┤                                    ├─► transmits         2. send
//!  chain ───┼─► handle_* ─► channel machines ───►├─► events            3. tell
//!  command ─┘        ▲        │ events           └─► queries           4. read the chain
//!                    └─ payment reactions (claim, forward, fail, settle upstream),
//!                       carried out in the same step and the same batch
//! ```
//!
//! Who may do what (rule 10, issue 12): a peer without a channel (a stranger) may only open
//! one; its refusals are unnumbered and cost us no write. A peer touches only its own
//! channels; another's channel reads as unknown. A channel takes updates only once funded,
//! and a top-up is credited only up to what the chain shows (the caller hands the figures in
//! first, see [`Node::wants_chain_figures`]).
//!
//! A step's payment reactions run inside the step: the HTLC that arrives, the decision on
//! it and the lock offered downstream land in one batch, so a crash leaves either all of it
//! or none (and the peer re-sends what we did not acknowledge). Every channel a step touches
//! proposes once, at the end, so the locks a step decides ride one signed update.
//! [`Node::resume`] after a restart decides again what an older store left undecided.

use crate::forward::ForwardPolicy;
use crate::ids::{ChannelId, Expiry, Hashlock, HtlcId, Preimage, Side};
use crate::msg::Message;
use crate::node::admission::{
    OpenPolicy, OpenRefusal, RouteRefusal, admit_open, admit_route, read_layer,
};
use crate::node::chain::{CollateralPolicy, Intent, funding, must_challenge, state_at, unlocks};
use crate::node::invoice::Invoice;
use crate::node::link::{Inbound, Inbox, Outbox};
use crate::node::message::{Body, ErrorCode, Frame};
use crate::node::payment::{
    ForwardRecord, HtlcPlan, InvoiceTerms, Known, PaymentStatus, PlanError, RoutePlan, Step,
    Upstream, on_committed, outcomes,
};
use crate::node::records::{
    Book, ChannelRecord, InvoiceRecord, LinkRecord, PaymentRecord, Records, RouteHop, Write,
};
use crate::node::timers::Timers;
use crate::node::tower::{self, TowerPolicy};
use crate::onion::{ErrorPacket, Hop as OnionHop, HopPayload};
use crate::sig::Keys;
use crate::state::ChannelParams;
use crate::update::{
    Channel, CommittedHtlc, Effect, Event, MAX_CONSECUTIVE_REJECTS, ProtocolError,
};
use crate::vchan::VirtualPolicy;
use crate::{Amount, FailureReason, Limits, Op, OpError};
use alloy::primitives::{Address, B256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

/// What the node tells its operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// A channel's opening is co-signed (by the peer's acceptance, or by our own).
    ChannelOpened {
        /// Which channel.
        channel_id: ChannelId,
        /// With whom.
        peer: Address,
    },
    /// A state of a channel was co-signed.
    Committed {
        /// Which channel.
        channel_id: ChannelId,
        /// Its version.
        version: u64,
    },
    /// The final state of a channel is co-signed.
    Closed {
        /// Which channel.
        channel_id: ChannelId,
    },
    /// We refused a message of `peer`; nothing changed.
    Refused {
        /// Whose.
        peer: Address,
        /// Why.
        code: ErrorCode,
    },
    /// A channel's opening deposits are on chain.
    Funded {
        /// Which channel.
        channel_id: ChannelId,
    },
    /// The credit of a deposit of ours was proposed.
    ToppedUp {
        /// Which channel.
        channel_id: ChannelId,
        /// How much.
        amount: Amount,
    },
    /// A channel was paid out on chain.
    Concluded {
        /// Which channel.
        channel_id: ChannelId,
        /// To A.
        to_a: Amount,
        /// To B.
        to_b: Amount,
    },
    /// A stale state registered on chain is answered with ours.
    Challenged {
        /// Which channel.
        channel_id: ChannelId,
        /// The version registered.
        disputed: u64,
        /// Ours.
        ours: u64,
    },
    /// A payment of ours ended paid.
    PaymentSucceeded {
        /// Its id.
        id: B256,
        /// The fees it cost.
        fee: Amount,
    },
    /// A payment of ours ended unpaid (`None`: nobody answered before it expired).
    PaymentFailed {
        /// Its id.
        id: B256,
        /// The failing node's reason.
        reason: Option<FailureReason>,
    },
    /// We revealed the preimage of an invoice of ours.
    PaymentReceived {
        /// The invoice's hashlock.
        hashlock: Hashlock,
        /// What the lock carried.
        amount: Amount,
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
    /// We hold a paying HTLC without revealing ([`Config::reveal_preimages`] is off).
    Holding {
        /// The invoice's hashlock.
        hashlock: Hashlock,
    },
    /// `peer` refused a message of ours, or reported an error.
    RefusedByPeer {
        /// Who.
        peer: Address,
        /// Its code.
        code: ErrorCode,
        /// What it said.
        detail: String,
    },
    /// The peer of a channel keeps refusing our proposals: go to the chain.
    PeerStuck {
        /// Which channel.
        channel_id: ChannelId,
    },
    /// The peer has not settled locks whose preimage we know, and their on-chain deadline
    /// ([`crate::forward::ON_CHAIN_CLAIM_SECS`] before expiry) has come: the step writes the
    /// intents to register their preimages on chain (the channel's close there follows).
    MustClaimOnChain {
        /// Which channel.
        channel_id: ChannelId,
        /// The peer's locks to claim.
        locks: Vec<HtlcId>,
        /// The earliest of their deadlines.
        deadline: Expiry,
    },
    /// A virtual channel we take part in carries payments: our leg (every leg, for its hub)
    /// locks its guarantee and both parties signed its opening.
    VirtualOpened {
        /// The virtual channel.
        channel_id: ChannelId,
        /// The other party (its A, for its hub).
        peer: Address,
    },
    /// A virtual channel's guarantees are released by its final state: on our leg (every
    /// leg, for its hub).
    VirtualSettled {
        /// The virtual channel.
        channel_id: ChannelId,
    },
    /// A virtual channel outlived its end without being settled: we closed `ledger`, which
    /// still locks its guarantee, on chain to settle it there (the hub after the margin, its
    /// parties not having closed it; a party after twice the margin, the hub not having
    /// settled it).
    VirtualExpired {
        /// The virtual channel.
        channel_id: ChannelId,
        /// Our ledger going on chain.
        ledger: ChannelId,
    },
    /// Hub of a chain: the next hub neither completed nor refused our release of the leg we
    /// share within [`Config::virtual_chain_patience_secs`]; we took `ledger`, that leg, to
    /// chain (A's release stays held until it ends there).
    VirtualReleaseStalled {
        /// The virtual channel.
        channel_id: ChannelId,
        /// Our ledger with the next hub, going on chain.
        ledger: ChannelId,
    },
    /// An operation we queued on a channel will never take effect.
    OpDropped {
        /// Which channel.
        channel_id: ChannelId,
        /// The operation.
        op: Op,
        /// Why.
        error: OpError,
    },
}

/// What a step produced, to be carried out in this order: write, send, tell, read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Records to write as one atomic, synced batch.
    pub writes: Vec<Write>,
    /// Frames to send once the batch is durable (those to a peer without a session may be
    /// dropped: numbered ones go again with [`Node::connected`]).
    pub transmits: Vec<(Address, Frame)>,
    /// What to tell the operator.
    pub events: Vec<NodeEvent>,
    /// Channels whose holdings and deposits the node wants read from the chain and handed in
    /// with [`ChainEvent::Holdings`].
    pub queries: Vec<ChannelId>,
}

impl Output {
    /// Whether the step changed nothing and has nothing to send, tell or read.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
            && self.transmits.is_empty()
            && self.events.is_empty()
            && self.queries.is_empty()
    }

    /// Append the output of a later step: the two are carried out as one.
    pub fn extend(&mut self, later: Output) {
        self.writes.extend(later.writes);
        self.transmits.extend(later.transmits);
        self.events.extend(later.events);
        self.queries.extend(later.queries);
    }

    /// The chain intents among the writes.
    pub fn intents(&self) -> impl Iterator<Item = &Intent> {
        self.writes.iter().filter_map(|w| match w {
            Write::Intent(i) => Some(&**i),
            _ => None,
        })
    }
}

/// What the chain shows, handed in by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainEvent {
    /// What the adjudicator holds for a channel and what each participant deposited.
    Holdings {
        /// Which channel.
        channel_id: ChannelId,
        /// Its holdings.
        held: Amount,
        /// A's and B's deposits.
        deposited: [Amount; 2],
    },
    /// A virtual channel's state as the chain shows it: registered by a close or challenge (an
    /// event shows only a state without locks or guarantees whole, it carries their roots), or
    /// presented with its locks by a `resolveGuarantee` (read from its transaction; the
    /// adjudicator then recorded it as the outcome; `finalizes_at` 0). A virtual channel's hub
    /// settles its legs by it (ADR 0026).
    Registered {
        /// Which channel.
        channel_id: ChannelId,
        /// The state registered.
        state: Box<crate::ChannelState>,
        /// When its challenge window ends (chain time, unix seconds).
        finalizes_at: u64,
    },
    /// A virtual channel's state with locks was registered on chain (its dispute; with
    /// `finalizes_at` 0, the outcome `resolveGuaranteeWithheld` recorded), shown without them:
    /// `state` carries no locks, `locks` their root and total.
    RegisteredWithheld {
        /// Which virtual channel.
        channel_id: ChannelId,
        /// The state registered, without its locks.
        state: Box<crate::ChannelState>,
        /// Its locks' root and total.
        locks: crate::node::chain::WithheldLocks,
        /// When its challenge window ends (chain time, unix seconds); 0: recorded.
        finalizes_at: u64,
    },
    /// A close was registered with `version` (or a challenge replaced it).
    Disputed {
        /// Which channel.
        channel_id: ChannelId,
        /// The version registered.
        version: u64,
        /// When its challenge window ends (chain time, unix seconds).
        finalizes_at: u64,
        /// The virtual channels whose guarantees the registered state holds (a ledger's: a
        /// hub of a chain tells by it whether the next hub registered the release it signed).
        guaranteed: Vec<ChannelId>,
    },
    /// The channel was paid out.
    Concluded {
        /// Which channel.
        channel_id: ChannelId,
        /// The version paid out.
        version: u64,
        /// To A.
        to_a: Amount,
        /// To B.
        to_b: Amount,
    },
    /// An intent of ours is in effect on chain (a deposit landed, a close paid out).
    Landed(Box<Intent>),
    /// The adjudicator could not pay `to` its payout in `asset` and keeps it claimable.
    PayoutDeferred {
        /// Who is owed.
        to: Address,
        /// The asset.
        asset: Address,
    },
    /// A preimage was registered in the secret registry at chain time `at` (rule 5: a lock we
    /// offered whose preimage is public in time can be claimed from us on chain, so the lock
    /// it pays for upstream is settled with it at once).
    Revealed {
        /// The preimage.
        preimage: Preimage,
        /// When it was registered (chain time, unix seconds).
        at: u64,
    },
}

/// A node's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// What we charge and require to forward (announced to peers whose channel we accept).
    pub policy: ForwardPolicy,
    /// Limits of the channels we open and accept; their lock slots also bound the route
    /// instructions a peer may leave waiting per channel (rule 10).
    pub limits: Limits,
    /// What a peer may open with us.
    pub open: OpenPolicy,
    /// What we add to channels peers open with us.
    pub collateral: CollateralPolicy,
    /// Whether channels must be seen funded on chain before they carry updates (without a
    /// chain they are funded at once).
    pub on_chain: bool,
    /// Whether a co-signed final state is paid out on chain by an intent of ours.
    pub auto_settle: bool,
    /// Seconds the side that did not propose a close waits before it pays it out itself.
    pub close_grace_secs: u64,
    /// Seconds a route instruction waits for its HTLC before it is collected.
    pub route_ttl_secs: u64,
    /// Seconds an opening may stay uncountersigned or unfunded before it is collected.
    pub abandon_after_secs: u64,
    /// Unacknowledged messages to a peer beyond which its refusals are no longer written.
    pub max_durable_backlog: u64,
    /// Whether we reveal preimages of our invoices (off only to test holding payees).
    pub reveal_preimages: bool,
    /// Serve as a watchtower: keep clients' latest states and answer stale closes of their
    /// channels (module `tower`). `None`: refuse [`Body::Watch`].
    pub tower: Option<TowerPolicy>,
    /// Watchtowers we hand the latest co-signed state of each of our channels to.
    pub towers: Vec<Address>,
    /// Where payouts the adjudicator could not deliver to us are withdrawn to (`None`: our
    /// own address again).
    pub withdraw_to: Option<Address>,
    /// Serve virtual channels between our peers under these rules (a hub's; announced to
    /// peers whose channel we accept). `None`: refuse to.
    pub virtual_policy: Option<VirtualPolicy>,
    /// The most of our own money a virtual channel offered to us (as its B) may lock on our
    /// ledger: by default none, we only receive.
    pub virtual_max_own: Amount,
    /// Hub: seconds a party's release of a virtual channel's leg is held waiting for the other
    /// party's; then every release of it is refused (it settles on chain).
    pub virtual_hold_secs: u64,
    /// Hub of a chain, not the last: seconds we wait, holding A's release, for the next hub to
    /// complete or refuse our own release toward it; then we take our ledger with that hub to
    /// chain (ADR 0026). Longer than the next hub's own hold ([`Config::virtual_hold_secs`]).
    pub virtual_chain_patience_secs: u64,
    /// A party: seconds before a virtual channel's end at which we close it (its final state,
    /// then the release of both legs). Hub: seconds after the end at which a channel its
    /// parties have not closed goes on chain: we close our ledgers that still lock its
    /// guarantee, and settle it there (ADR 0026).
    pub virtual_end_margin_secs: u64,
    /// Announce our channels with other announcing nodes (hub-to-hub channels), relay gossip
    /// and serve the table to peers (a hub's; module `gossip`).
    pub announce: bool,
    /// Forward to a peer known to be away (its session ended, as [`Node::set_reachable`]
    /// says) never: the HTLC fails at once (temporary channel failure) and the payer routes
    /// around it, instead of waiting locked until the peer returns or the HTLC expires. A peer
    /// not heard of since we started (after a restart, before it reconnects) is tried.
    pub forward_only_to_reachable: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy: ForwardPolicy::default(),
            limits: Limits::default(),
            open: OpenPolicy {
                chain_id: 1,
                adjudicator: Address::ZERO,
                assets: vec![Address::ZERO],
                min_peer_deposit: Amount::ZERO,
                max_channels_per_peer: 4,
            },
            collateral: CollateralPolicy {
                collateral: Amount::ZERO,
                min_peer_deposit: Amount::ZERO,
            },
            on_chain: false,
            auto_settle: false,
            close_grace_secs: 120,
            route_ttl_secs: 600,
            abandon_after_secs: 3600,
            max_durable_backlog: 1024,
            reveal_preimages: true,
            tower: None,
            towers: Vec::new(),
            withdraw_to: None,
            virtual_policy: None,
            virtual_max_own: Amount::ZERO,
            virtual_hold_secs: 60,
            virtual_chain_patience_secs: 600,
            virtual_end_margin_secs: 600,
            announce: false,
            forward_only_to_reachable: false,
        }
    }
}

/// The id of part `k` of multi-path payment `id`.
pub fn part_id(id: B256, k: usize) -> B256 {
    alloy::primitives::keccak256([id.as_slice(), b"part", &(k as u64).to_be_bytes()].concat())
}

/// One payment decided but not yet made (see `Node::prepare_payment`).
struct Prepared {
    first: Address,
    channel: ChannelId,
    available: Amount,
    amount: Amount,
    plan: RoutePlan,
    path: Vec<Address>,
    packet: crate::onion::Packet,
    secrets: Vec<B256>,
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
    /// The channel cannot take updates yet.
    #[error("channel {0}: {1}")]
    NotReady(ChannelId, NotReady),
    /// A zero amount.
    #[error("the amount must be above zero")]
    ZeroAmount,
    /// No open channel with this peer can carry it.
    #[error("no open channel with {0}")]
    NoChannel(Address),
    /// The hub never announced its policy to us.
    #[error("hub {0} announced no policy")]
    NoPolicy(Address),
    /// A virtual channel's lifetime within our closing margin: we would close it at once.
    #[error(
        "a virtual channel must live longer than our closing margin of {margin} s, not {lifetime} s"
    )]
    LifetimeTooShort {
        /// The lifetime asked for, seconds.
        lifetime: u64,
        /// [`Config::virtual_end_margin_secs`].
        margin: u64,
    },
    /// No public key is known for a node on the route (it announces it with its policy).
    #[error("no onion key known for {0}")]
    NoNodeKey(Address),
    /// The route's onion could not be built.
    #[error(transparent)]
    Onion(#[from] crate::onion::OnionError),
    /// The parts of a multi-path payment do not add up to the invoice.
    #[error("the parts add up to {parts}, the invoice asks {invoice}")]
    PartsMismatch {
        /// What the parts deliver together.
        parts: Amount,
        /// The invoice's amount.
        invoice: Amount,
    },
    /// A plan does not have one hop per hub of the route.
    #[error("the plan has {plan} hops for a route of {route} hubs")]
    PlanMismatch {
        /// Hops in the plan.
        plan: usize,
        /// Hubs on the route.
        route: usize,
    },
    /// The invoice expired.
    #[error("the invoice expired")]
    Expired,
    /// The invoice is our own.
    #[error("the invoice is our own")]
    OwnInvoice,
    /// An invoice to be added is not ours (its payee or key is another node's).
    #[error("the invoice names another payee")]
    ForeignInvoice,
    /// The channel may hold money: it is never forgotten.
    #[error("channel {0} may hold money: not forgotten")]
    NotAbandoned(ChannelId),
    /// The payment cannot be planned.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The channel machine refused.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// What a channel still lacks for a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// We opened it and the peer has not countersigned the opening state.
    #[error("the peer has not countersigned the opening yet")]
    AwaitingCountersignature,
    /// Its opening deposits are not seen on chain yet.
    #[error("the channel is not funded yet")]
    NotFunded,
}

/// A payment reaction waiting inside a step.
#[derive(Clone, Debug)]
enum Reaction {
    /// A peer's HTLC is committed: claim, forward or fail it.
    Received(CommittedHtlc),
    /// An HTLC we offered on this channel ended: settle upstream.
    Outcome(ChannelId, HtlcId),
    /// A hub of a chain: the next hub completed our release of a virtual channel's leg
    /// toward it; countersign the release we hold toward A (module `virtuals`).
    ReleaseHeld(ChannelId),
    /// A hub of a chain: our release of virtual channel `.1`'s leg on ledger `.0` was refused
    /// and a later state is co-signed there; let go of the release we hold toward A.
    InnerReleaseDead(ChannelId, ChannelId),
    /// A virtual channel of ours (a party) opened: announce it if we announce (module
    /// `gossip_steps`).
    AnnounceVirtual(ChannelId),
}

#[derive(Default)]
struct Pending {
    out: Output,
    touched: BTreeSet<ChannelId>,
    /// Channels with operations queued in this step, proposed once at its end.
    to_propose: BTreeSet<ChannelId>,
    reactions: VecDeque<Reaction>,
    /// Final states co-signed in this step, to pay out once the step's events are all seen.
    closes: Vec<(ChannelId, crate::SignedState)>,
    /// Channels whose close we proposed.
    closed_by_us: BTreeSet<ChannelId>,
}

struct Entry {
    peer: Address,
    /// The hub a virtual channel's messages travel over (`None`: a ledger, direct).
    via: Option<Address>,
    funded: bool,
    /// The peer refused our proposal as not yet funded: send it again when it says `Funded`.
    resend_on_funded: bool,
    concluded: bool,
    opened_at: u64,
    machine: Channel,
}

impl Entry {
    fn awaiting_acceptance(&self) -> bool {
        self.machine.snapshot().awaiting_countersignature()
    }
}

#[derive(Default)]
struct Link {
    inbox: Inbox,
    /// The last number whose processing was written (what a restart resumes from).
    durable: u64,
    outbox: Outbox,
    unacked: BTreeMap<u64, Body>,
}

/// Openings left too long ([`Node::abandoned`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Abandoned {
    /// Channels we proposed that the peer never countersigned: forget them.
    pub unanswered: Vec<ChannelId>,
    /// Channels a peer opened with us and never funded: forget them once the chain confirms
    /// it holds nothing for them.
    pub unfunded: Vec<ChannelId>,
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
    /// Claims reported as due on chain since the start (reported again after a restart).
    claims_reported: HashSet<(ChannelId, HtlcId)>,
    /// The version of each channel's state last handed to our watchtowers (in memory: after a
    /// restart the latest is handed over again).
    watch_sent: HashMap<ChannelId, u64>,
    /// Peers with a session up (as the caller says): a virtual channel's messages go to its
    /// other party directly when it is here, over the hub otherwise.
    reachable: HashMap<Address, u32>,
    /// Announcements waiting for the chain to show their channel funded (in memory: a lost
    /// one comes again with the next copy of a hub's table).
    /// Each waits with the peer that told us (a peer may keep only a few waiting: each costs a
    /// chain read).
    pending_gossip: BTreeMap<ChannelId, (Address, crate::node::gossip::GossipChannel)>,
    /// Payee: parts of multi-path payments held until they add up to the invoice, by
    /// hashlock: each part's channel, HTLC, amount and when it came (in memory: after a
    /// restart `resume` decides the committed parts again and they are held anew).
    parts: BTreeMap<Hashlock, Vec<(ChannelId, HtlcId, Amount, u64)>>,
    /// Onion layers peeled before this step, outside the caller's lock
    /// ([`Node::handle_frames_peeled`]); used by the route instructions they were peeled
    /// from and emptied at the end of the step.
    prepeeled: Vec<PeeledAhead>,
}

/// An onion layer peeled ahead of a step: the packet and hashlock it was peeled for, and what
/// [`Keys::peel`] gave. Peeling is a pure function of our key and these two, so a caller may do
/// it outside the lock it steps the machine under (two of a payment's scalar multiplications).
#[derive(Debug)]
pub struct PeeledAhead {
    /// The packet as it came.
    pub onion: Box<crate::onion::Packet>,
    /// The HTLC's hashlock it was peeled against.
    pub hashlock: alloy::primitives::B256,
    /// The layer.
    pub layer: Result<crate::onion::Peeled, crate::onion::OnionError>,
}

impl PeeledAhead {
    /// Peel `frame`'s onion if it carries a route instruction: `None` otherwise.
    pub fn of(keys: &Keys, frame: &Frame) -> Option<PeeledAhead> {
        let Frame::Msg {
            body: Body::Route {
                hashlock, onion, ..
            },
            ..
        } = frame
        else {
            return None;
        };
        Some(PeeledAhead {
            onion: onion.clone(),
            hashlock: hashlock.0,
            layer: keys.peel(onion, hashlock.0),
        })
    }
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
            claims_reported: HashSet::new(),
            watch_sent: HashMap::new(),
            reachable: HashMap::new(),
            pending_gossip: BTreeMap::new(),
            parts: BTreeMap::new(),
            prepeeled: Vec::new(),
        }
    }

    /// The node as its writes left it. Call [`Node::resume`] next.
    pub fn restore(keys: Keys, config: Config, records: Records) -> Result<Node, ProtocolError> {
        let mut node = Node::new(keys, config);
        for (id, rec) in records.channels {
            let machine = Channel::restore(rec.snapshot, node.keys.clone())?;
            node.timers.set(id, machine.snapshot().next_deadline());
            node.insert(
                id,
                Entry {
                    peer: rec.peer,
                    via: None,
                    funded: rec.funded,
                    resend_on_funded: false,
                    concluded: rec.concluded,
                    opened_at: rec.opened_at,
                    machine,
                },
            );
        }
        for (peer, l) in records.links {
            let first = l.unacked.keys().next().copied();
            node.links.insert(
                peer,
                Link {
                    inbox: Inbox::new(l.received),
                    durable: l.received,
                    outbox: Outbox::restore(l.next_send, first),
                    unacked: l.unacked,
                },
            );
        }
        node.paylocks = records
            .book
            .payments
            .values()
            .map(|p| ((p.channel, p.htlc), p.id))
            .collect();
        node.book = records.book;
        for (id, r) in &node.book.virtuals {
            if let Some(e) = node.channels.get_mut(id) {
                e.via = Some(r.hub);
            }
        }
        Ok(node)
    }

    // ---- what the node holds ----

    /// Our address.
    pub fn address(&self) -> Address {
        self.keys.address()
    }

    /// Our public key (payers build our onion layer with it).
    pub fn public_key(&self) -> secp256k1::PublicKey {
        self.keys.public_key()
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The machine of channel `id`.
    pub fn channel(&self, id: ChannelId) -> Option<&Channel> {
        self.channels.get(&id).map(|e| &e.machine)
    }

    /// Every channel's id, in order.
    pub fn channel_ids(&self) -> impl Iterator<Item = ChannelId> + '_ {
        self.channels.keys().copied()
    }

    /// The channels with `peer`.
    pub fn channels_with(&self, peer: Address) -> &[ChannelId] {
        self.by_peer.get(&peer).map_or(&[], Vec::as_slice)
    }

    /// The peer of channel `id`.
    pub fn peer_of(&self, id: ChannelId) -> Option<Address> {
        self.channels.get(&id).map(|e| e.peer)
    }

    /// The record of channel `id` as it stands, to write for a [`Write::Channel`].
    pub fn channel_record(&self, id: ChannelId) -> Option<ChannelRecord> {
        self.channels.get(&id).map(|e| ChannelRecord {
            peer: e.peer,
            funded: e.funded,
            concluded: e.concluded,
            opened_at: e.opened_at,
            snapshot: e.machine.snapshot().clone(),
        })
    }

    /// The record of channel `id` borrowed, to encode without a copy (encodes as
    /// [`Node::channel_record`]'s).
    pub fn channel_record_ref(
        &self,
        id: ChannelId,
    ) -> Option<crate::node::records::ChannelRecordRef<'_>> {
        self.channels
            .get(&id)
            .map(|e| crate::node::records::ChannelRecordRef {
                peer: e.peer,
                funded: e.funded,
                concluded: e.concluded,
                opened_at: e.opened_at,
                snapshot: e.machine.snapshot(),
            })
    }

    /// Our message `seq` to `peer`, if it is not acknowledged yet (to write for a
    /// [`Write::Sent`]).
    pub fn unacked(&self, peer: Address, seq: u64) -> Option<&Body> {
        self.links.get(&peer)?.unacked.get(&seq)
    }

    /// Messages of ours `peer` has not acknowledged yet.
    pub fn backlog(&self, peer: Address) -> u64 {
        self.links.get(&peer).map_or(0, |l| l.outbox.backlog())
    }

    /// The payment records.
    pub fn book(&self) -> &Book {
        &self.book
    }

    /// Payment `id`, if we made it.
    pub fn payment(&self, id: B256) -> Option<&PaymentRecord> {
        self.book.payments.get(&id)
    }

    /// Fees we earned as a hub (forwards settled on both sides) and how many forwards.
    pub fn fees_earned(&self) -> (Amount, usize) {
        self.book
            .forwards
            .values()
            .filter(|f| f.done && f.preimage.is_some())
            .fold((Amount::ZERO, 0), |(sum, n), f| {
                (Amount(sum.0.saturating_add(f.fee.0)), n + 1)
            })
    }

    /// When [`Node::handle_timeout`] is due next (`None`: nothing to wait for).
    pub fn poll_timeout(&self) -> Option<Expiry> {
        [
            self.timers.next(),
            self.next_hold_deadline(),
            self.next_virtual_end(),
            self.next_parts_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether `peer` has a channel with us (funded or not).
    pub fn has_channel(&self, peer: Address) -> bool {
        self.by_peer.get(&peer).is_some_and(|v| !v.is_empty())
    }

    /// Whether `peer` has a funded channel with us.
    pub fn has_funded_channel(&self, peer: Address) -> bool {
        self.by_peer.get(&peer).is_some_and(|v| {
            v.iter()
                .any(|id| self.channels.get(id).is_some_and(|e| e.funded))
        })
    }

    /// The channel whose chain figures must be handed in (with [`ChainEvent::Holdings`])
    /// before `frame` from `from` is handled: a proposal that credits a deposit is checked
    /// against the chain, never against the peer's word (rule 11).
    pub fn wants_chain_figures(&self, from: Address, frame: &Frame) -> Option<ChannelId> {
        let Frame::Msg {
            body:
                Body::Channel(Message::Propose {
                    channel_id, ops, ..
                }),
            ..
        } = frame
        else {
            return None;
        };
        let ours = self.peer_of(*channel_id) == Some(from);
        (ours && self.config.on_chain && ops.iter().any(|o| matches!(o, Op::Deposit { .. })))
            .then_some(*channel_id)
    }

    /// Openings left longer than [`Config::abandon_after_secs`] at `now`.
    pub fn abandoned(&self, now: Expiry) -> Abandoned {
        let cutoff = now.0.saturating_sub(self.config.abandon_after_secs);
        let mut a = Abandoned::default();
        for (id, e) in &self.channels {
            if e.opened_at >= cutoff || e.via.is_some() {
                continue;
            }
            if e.awaiting_acceptance() {
                a.unanswered.push(*id);
            } else if !e.funded && e.machine.me() == Side::B {
                a.unfunded.push(*id);
            }
        }
        a
    }

    /// Our open channel with `peer` (in `asset` if given) with the most free balance on our
    /// side: funded, countersigned, not concluded, final, frozen or stuck.
    pub fn best_channel_to(
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
            if !e.funded
                || e.concluded
                || e.awaiting_acceptance()
                || !s.can_offer()
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

    /// Everything the node would write if it wrote all of itself now: a node restored from
    /// its writes holds exactly this (the model test checks it after every step).
    pub fn records(&self) -> Records {
        Records {
            channels: self
                .channels
                .keys()
                .filter_map(|id| Some((*id, self.channel_record(*id)?)))
                .collect(),
            links: self
                .links
                .iter()
                .filter(|(_, l)| l.durable > 0 || l.outbox.next_send() > 1)
                .map(|(peer, l)| {
                    (
                        *peer,
                        LinkRecord {
                            received: l.durable,
                            next_send: l.outbox.next_send(),
                            unacked: l.unacked.clone(),
                        },
                    )
                })
                .collect(),
            book: self.book.clone(),
        }
    }

    /// When to look at channel `id` next: its next lock to take back, or its next claim
    /// deadline not yet reported.
    fn deadline(
        reported: &HashSet<(ChannelId, HtlcId)>,
        id: ChannelId,
        s: &crate::Snapshot,
    ) -> Option<Expiry> {
        let claim = s
            .claim_deadlines()
            .into_iter()
            .find(|(h, _, _)| !reported.contains(&(id, *h)))
            .map(|(_, _, at)| at);
        s.next_timeout().into_iter().chain(claim).min()
    }

    fn insert(&mut self, id: ChannelId, entry: Entry) {
        let peer = entry.peer;
        self.channels.insert(id, entry);
        let ids = self.by_peer.entry(peer).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }

    // ---- inputs ----

    /// Take a co-signed, funded channel with `peer` into the node (opened out of band).
    pub fn add_channel(&mut self, peer: Address, machine: Channel) -> Result<Output, CommandError> {
        let id = machine.id();
        if self.channels.contains_key(&id) {
            return Err(CommandError::ChannelExists(id));
        }
        self.insert(
            id,
            Entry {
                peer,
                via: None,
                funded: true,
                resend_on_funded: false,
                concluded: false,
                opened_at: 0,
                machine,
            },
        );
        let mut p = Pending::default();
        p.touched.insert(id);
        Ok(self.finish(Expiry(0), p))
    }

    /// A session with `peer` came up (`true`) or ended (`false`); the caller says so once
    /// each, for every session. The peer is reachable while any of its sessions is up (a new
    /// session may come up before the old one's end is told): the messages of a virtual
    /// channel with it then go to it directly, not over the hub, so the two parties pay each
    /// other while the hub is down (ADR 0026), and forwards to it are tried.
    pub fn set_reachable(&mut self, peer: Address, up: bool) {
        let n = self.reachable.entry(peer).or_insert(0);
        if up {
            *n = n.saturating_add(1);
        } else {
            // Kept at zero: known to be away (a peer not heard of since we started, say after
            // a restart before it reconnects, is not).
            *n = n.saturating_sub(1);
        }
    }

    /// Whether a session with `peer` is up.
    fn is_up(&self, peer: Address) -> bool {
        self.reachable.get(&peer).is_some_and(|n| *n > 0)
    }

    /// Whether `peer` had a session since we started and has none now.
    fn is_known_away(&self, peer: Address) -> bool {
        self.reachable.get(&peer) == Some(&0)
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
        out.transmits.extend(self.gossip_table(peer));
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

    /// As [`Node::handle_frames`], with the onion layers of the frames' route instructions
    /// already peeled ([`PeeledAhead::of`]): each is used only for the very packet and hashlock
    /// it was peeled from; a route instruction without one is peeled here. The output is the
    /// same as [`Node::handle_frames`]'s.
    pub fn handle_frames_peeled(
        &mut self,
        now: Expiry,
        from: Address,
        frames: impl IntoIterator<Item = Frame>,
        peeled: Vec<PeeledAhead>,
    ) -> Output {
        self.prepeeled = peeled;
        let out = self.handle_frames(now, from, frames);
        self.prepeeled.clear();
        out
    }

    /// Our layer of `onion` for `hashlock`: peeled ahead if it was, else now.
    fn peel(
        &mut self,
        onion: &crate::onion::Packet,
        hashlock: alloy::primitives::B256,
    ) -> Result<crate::onion::Peeled, crate::onion::OnionError> {
        match self
            .prepeeled
            .iter()
            .position(|a| a.hashlock == hashlock && *a.onion == *onion)
        {
            Some(i) => self.prepeeled.swap_remove(i).layer,
            None => self.keys.peel(onion, hashlock),
        }
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
            let s = e.machine.snapshot();
            let late: Vec<_> = s
                .claim_deadlines()
                .into_iter()
                .filter(|(h, _, at)| *at <= now && !self.claims_reported.contains(&(id, *h)))
                .collect();
            if !late.is_empty() {
                // The peer has not settled locks we can claim, and time is running out: the
                // preimages must go on chain now (rule 12).
                self.claims_reported
                    .extend(late.iter().map(|(h, _, _)| (id, *h)));
                for (lock, preimage, _) in &late {
                    let intent = Intent::RegisterSecret {
                        params: s.params().clone(),
                        id: *lock,
                        preimage: *preimage,
                    };
                    p.out.writes.push(Write::Intent(Box::new(intent)));
                }
                // And the channel goes on chain with our latest co-signed state, once; from now
                // on it takes no new lock (rule 12).
                if !s.frozen() {
                    let intent = Intent::Close {
                        params: s.params().clone(),
                        state: s.latest().clone(),
                    };
                    p.out.writes.push(Write::Intent(Box::new(intent)));
                    e.machine.freeze();
                    p.touched.insert(id);
                }
                p.out.events.push(NodeEvent::MustClaimOnChain {
                    channel_id: id,
                    locks: late.iter().map(|(h, _, _)| *h).collect(),
                    deadline: late[0].2,
                });
            }
            if e.funded && e.machine.expire_due(now) > 0 {
                p.to_propose.insert(id);
            } else {
                let next = Self::deadline(&self.claims_reported, id, e.machine.snapshot());
                self.timers.set(id, next);
            }
        }
        self.expire_holds(now, &mut p);
        self.end_virtuals(now, &mut p);
        self.expire_parts(now, &mut p);
        let cutoff = now.0.saturating_sub(self.config.route_ttl_secs);
        let stale: Vec<_> = self
            .book
            .routes
            .iter()
            .filter(|(_, r)| r.stored_at < cutoff)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            self.write(&mut p, Write::Route { key, route: None });
        }
        self.gossip_timeout(now, &mut p);
        self.finish(now, p)
    }

    /// After a restart: decide the incoming HTLCs no decision was recorded for, settle
    /// upstream the forwards whose outcome is known, and ask again for the credit of our
    /// deposits the peer has not co-signed.
    pub fn resume(&mut self, now: Expiry) -> Output {
        let mut p = Pending::default();
        for e in self.channels.values() {
            if !e.funded || e.awaiting_acceptance() || e.machine.latest().state.is_final {
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
        let ids: Vec<ChannelId> = self.channels.keys().copied().collect();
        for id in ids {
            self.claim_deposits(id, &mut p);
        }
        self.finish(now, p)
    }

    /// What the chain shows (see [`ChainEvent`]).
    pub fn handle_chain(&mut self, now: Expiry, ev: ChainEvent) -> Output {
        let mut p = Pending::default();
        match ev {
            ChainEvent::Holdings {
                channel_id, held, ..
            } if !self.channels.contains_key(&channel_id) => {
                self.on_gossip_holdings(now, channel_id, held, &mut p)
            }
            ChainEvent::Holdings {
                channel_id,
                held,
                deposited,
            } => self.observe(now, channel_id, (held, deposited), &mut p),
            ChainEvent::Disputed {
                channel_id,
                version,
                finalizes_at,
                guaranteed,
            } => self.disputed(
                now,
                channel_id,
                (version, finalizes_at),
                &guaranteed,
                &mut p,
            ),
            ChainEvent::Concluded {
                channel_id,
                version,
                to_a,
                to_b,
            } => {
                if self.book.watched.contains_key(&channel_id) {
                    // Paid out: nothing left to watch.
                    self.write(
                        &mut p,
                        Write::Watched {
                            id: channel_id,
                            record: None,
                        },
                    );
                }
                self.freeze(channel_id, &mut p);
                if let Some(e) = self.channels.get(&channel_id)
                    && !e.concluded
                    && let Some(state) = state_at(e.machine.snapshot(), version)
                {
                    // Every lock of the paid-out state that may pay us is settled on chain.
                    for intent in unlocks(e.machine.snapshot(), state) {
                        p.out.writes.push(Write::Intent(Box::new(intent)));
                    }
                    // And every virtual channel it still guarantees, by its outcome.
                    if !state.guarantees.is_empty() {
                        let state = state.clone();
                        self.on_ledger_concluded(channel_id, &state, &mut p);
                    }
                }
                self.conclude(channel_id, Some((to_a, to_b)), &mut p);
            }
            ChainEvent::Revealed { preimage, at } => self.revealed(preimage, at, &mut p),
            ChainEvent::Registered {
                channel_id,
                state,
                finalizes_at,
            } => self.on_virtual_registered(now, channel_id, *state, finalizes_at, &mut p),
            ChainEvent::RegisteredWithheld {
                channel_id,
                state,
                locks,
                finalizes_at,
            } => self.on_virtual_withheld(channel_id, *state, locks, finalizes_at, &mut p),
            ChainEvent::PayoutDeferred { to, asset } => {
                // Ours: withdraw it (to the configured address, or back to us).
                if to == self.address() {
                    let to = self.config.withdraw_to.unwrap_or(to);
                    let intent = Intent::Claim { asset, to };
                    p.out.writes.push(Write::Intent(Box::new(intent)));
                }
            }
            ChainEvent::Landed(intent) => match *intent {
                Intent::Deposit { params, .. } => {
                    let id = params.id();
                    p.out.queries.push(id);
                    self.claim_deposits(id, &mut p);
                }
                Intent::CooperativeClose { params, .. } => {
                    self.conclude(params.id(), None, &mut p);
                }
                Intent::Challenge { .. }
                | Intent::RegisterSecret { .. }
                | Intent::Close { .. }
                | Intent::Conclude { .. }
                | Intent::Unlock { .. }
                | Intent::ResolveGuarantee(_)
                | Intent::DisputeVirtual(_)
                | Intent::Claim { .. } => {}
            },
        }
        self.finish(now, p)
    }

    // ---- commands ----

    /// Open a channel with `peer` under `params` (we are A and fund `deposit`; the peer starts
    /// at 0): the opening state is signed and sent; the channel opens when the peer
    /// countersigns ([`NodeEvent::ChannelOpened`]).
    pub fn open_channel(
        &mut self,
        now: Expiry,
        peer: Address,
        params: ChannelParams,
        deposit: Amount,
    ) -> Result<Output, CommandError> {
        let id = params.id();
        if self.channels.contains_key(&id) {
            return Err(CommandError::ChannelExists(id));
        }
        let (snapshot, sig) =
            crate::node::opening::propose(params.clone(), &self.keys, self.config.limits, deposit)?;
        let machine = Channel::restore(snapshot, self.keys.clone())?;
        self.insert(
            id,
            Entry {
                peer,
                via: None,
                funded: !self.config.on_chain,
                resend_on_funded: false,
                concluded: false,
                opened_at: now.0,
                machine,
            },
        );
        let mut p = Pending::default();
        p.touched.insert(id);
        self.send(
            peer,
            Body::OpenChannel {
                params,
                balances: [deposit, Amount::ZERO],
                sig,
            },
            &mut p,
        );
        Ok(self.finish(now, p))
    }

    /// Forget channel `id`: only an opening the peer never countersigned, or one a peer
    /// opened with us that nobody funded (nothing of it can hold money).
    pub fn forget(&mut self, id: ChannelId) -> Result<Output, CommandError> {
        let e = self
            .channels
            .get(&id)
            .ok_or(CommandError::UnknownChannel(id))?;
        let empty = !e.funded
            && e.machine.me() == Side::B
            && e.machine.snapshot().deposited().iter().all(|d| d.is_zero());
        if !e.awaiting_acceptance() && !empty {
            return Err(CommandError::NotAbandoned(id));
        }
        let peer = e.peer;
        self.channels.remove(&id);
        self.timers.set(id, None);
        if let Some(ids) = self.by_peer.get_mut(&peer) {
            ids.retain(|c| *c != id);
        }
        Ok(Output {
            writes: vec![Write::ForgetChannel { id }],
            ..Output::default()
        })
    }

    /// Tell the peer of `id` that our opening deposit is on chain ([`Body::Funded`]): it
    /// reads the chain to check.
    pub fn announce_funded(&mut self, id: ChannelId) -> Result<Output, CommandError> {
        let peer = self.peer_of(id).ok_or(CommandError::UnknownChannel(id))?;
        let mut p = Pending::default();
        self.send(peer, Body::Funded { channel_id: id }, &mut p);
        Ok(p.out)
    }

    /// Ask again for the credit of our deposits that no peer has co-signed yet (a peer
    /// refuses while it has not seen them on chain).
    pub fn reclaim_deposits(&mut self, now: Expiry) -> Output {
        let mut p = Pending::default();
        let ids: Vec<ChannelId> = self.channels.keys().copied().collect();
        for id in ids {
            self.claim_deposits(id, &mut p);
        }
        self.finish(now, p)
    }

    /// Record the forwarding policy and public key `hub` announced out of band (in band they
    /// come with [`Body::HubPolicy`]). A key that is not `hub`'s is not recorded.
    pub fn set_policy(
        &mut self,
        hub: Address,
        policy: ForwardPolicy,
        key: secp256k1::PublicKey,
    ) -> Output {
        let mut p = Pending::default();
        self.write(&mut p, Write::Policy { peer: hub, policy });
        if crate::sig::address_of(&key) == hub {
            self.write(&mut p, Write::NodeKey { node: hub, key });
        }
        p.out
    }

    /// Make `invoice` with `preimage` ours: an HTLC with its hashlock is claimed if it pays it
    /// ([`crate::node::payment::payee_accepts`]). It must name a hub we have an open channel
    /// with, or paying it could only fail.
    pub fn add_invoice(
        &mut self,
        invoice: Invoice,
        preimage: Preimage,
    ) -> Result<Output, CommandError> {
        if invoice.amount.is_zero() {
            return Err(CommandError::ZeroAmount);
        }
        if invoice.payee != self.address() || invoice.payee_key != self.keys.public_key() {
            return Err(CommandError::ForeignInvoice);
        }
        if self.best_channel_to(invoice.hub, None).is_none() {
            return Err(CommandError::NoChannel(invoice.hub));
        }
        let mut p = Pending::default();
        let hashlock = preimage.hashlock();
        let record = InvoiceRecord {
            invoice,
            preimage,
            paid: false,
        };
        self.write(
            &mut p,
            Write::Invoice {
                hashlock,
                record: Box::new(record),
            },
        );
        Ok(p.out)
    }

    /// Pay `invoice` through its hub as payment `id`, priced with the policy the hub
    /// announced. Paying an id again changes nothing.
    pub fn pay(
        &mut self,
        now: Expiry,
        id: B256,
        invoice: &Invoice,
    ) -> Result<Output, CommandError> {
        let mut p = Pending::default();
        self.pay_in(now, id, invoice, None, &mut p)?;
        Ok(self.finish(now, p))
    }

    /// Pay every `(id, invoice)` in one step: their HTLCs ride one signed update per channel.
    /// Returns the step's output and, per payment, whether it was refused.
    pub fn pay_batch(
        &mut self,
        now: Expiry,
        orders: &[(B256, Invoice)],
    ) -> (Output, Vec<Result<(), CommandError>>) {
        let mut p = Pending::default();
        let results = orders
            .iter()
            .map(|(id, inv)| self.pay_in(now, *id, inv, None, &mut p))
            .collect();
        (self.finish(now, p), results)
    }

    /// Pay `invoice` as payment `id` with the amounts and expiries of `plan`, chosen by the
    /// caller (tests of the other nodes' checks). Paying an id again changes nothing.
    pub fn pay_planned(
        &mut self,
        now: Expiry,
        id: B256,
        invoice: &Invoice,
        plan: HtlcPlan,
    ) -> Result<Output, CommandError> {
        let mut p = Pending::default();
        self.pay_in(now, id, invoice, Some(plan), &mut p)?;
        Ok(self.finish(now, p))
    }

    /// Pay `invoice` as payment `id` over the hubs `hubs` (in order: the first is our peer,
    /// the last the invoice's hub), priced with the policies they announced and carried by an
    /// onion (each hub learns only its own instruction). Paying an id again changes nothing.
    pub fn pay_route(
        &mut self,
        now: Expiry,
        id: B256,
        invoice: &Invoice,
        hubs: &[Address],
    ) -> Result<Output, CommandError> {
        let mut p = Pending::default();
        self.pay_over(now, id, invoice, hubs, (invoice.amount, None), &mut p)?;
        Ok(self.finish(now, p))
    }

    /// Pay `invoice` in parts, each over its own hubs (`parts`: the hubs in order and the
    /// amount the part delivers), one HTLC each with the invoice's hashlock: the payee holds
    /// them until they add up to the invoice, then claims all (or fails all after
    /// [`crate::node::payment::MPP_TIMEOUT_SECS`]). Part `k` is payment `keccak(id ‖ k)`.
    /// Nothing is paid unless every part can be planned.
    pub fn pay_parts(
        &mut self,
        now: Expiry,
        id: B256,
        invoice: &Invoice,
        parts: &[(Vec<Address>, Amount)],
    ) -> Result<(Output, Vec<B256>), CommandError> {
        let total = parts
            .iter()
            .try_fold(Amount::ZERO, |acc, (_, a)| acc.checked_add(*a))
            .map_err(|_| CommandError::Protocol(ProtocolError::Overflow))?;
        if parts.iter().any(|(_, a)| a.is_zero()) {
            return Err(CommandError::ZeroAmount);
        }
        if total != invoice.amount {
            return Err(CommandError::PartsMismatch {
                parts: total,
                invoice: invoice.amount,
            });
        }
        // Every part is planned before any is paid; parts leaving on one channel must fit in
        // it together.
        let mut prepared = Vec::with_capacity(parts.len());
        let mut needed: BTreeMap<ChannelId, (Amount, Amount)> = BTreeMap::new();
        for (k, (hubs, amount)) in parts.iter().enumerate() {
            let pid = part_id(id, k);
            if self.book.payments.contains_key(&pid) {
                continue;
            }
            let prep = self.prepare_payment(now, pid, invoice, hubs, (*amount, None))?;
            let e = needed
                .entry(prep.channel)
                .or_insert((Amount::ZERO, prep.available));
            e.0 =
                e.0.checked_add(prep.plan.sent)
                    .map_err(|_| CommandError::Protocol(ProtocolError::Overflow))?;
            if e.0 > e.1 {
                return Err(CommandError::Plan(PlanError::Insufficient {
                    amount: invoice.amount,
                    needed: e.0,
                    available: e.1,
                }));
            }
            prepared.push((pid, prep));
        }
        let mut p = Pending::default();
        let ids = (0..parts.len()).map(|k| part_id(id, k)).collect();
        for (pid, prep) in prepared {
            self.commit_payment(pid, invoice, prep, &mut p)?;
        }
        Ok((self.finish(now, p), ids))
    }

    /// The policy `hub` forwards to `next` with: the one it announced for its channel with
    /// `next` (gossip), else the one it announced to us (its global policy: a hub announces the
    /// same on every channel, and the payee's channel with it is not announced).
    fn hop_policy(&self, hub: Address, next: Address) -> Option<ForwardPolicy> {
        let announced = self.book.gossip.values().find_map(|c| {
            let p = c.ann.params.participants;
            let side = p.iter().position(|x| *x == hub)?;
            (p[1 - side] == next).then_some(())?;
            c.policies[side].as_ref().map(|u| u.policy)
        });
        announced
            .or_else(|| self.book.policies.get(&hub).copied())
            .or_else(|| {
                self.book.gossip.values().find_map(|c| {
                    let side = c.ann.params.participants.iter().position(|x| *x == hub)?;
                    c.policies[side].as_ref().map(|u| u.policy)
                })
            })
    }

    /// A node's public key: announced to us with its policy, or from a channel announcement.
    fn node_key(&self, node: Address) -> Option<secp256k1::PublicKey> {
        self.book.node_keys.get(&node).copied().or_else(|| {
            self.book.gossip.values().find_map(|c| {
                let side = c.ann.params.participants.iter().position(|x| *x == node)?;
                Some(c.keys[side])
            })
        })
    }

    /// Queue one payment through the invoice's hub into step `p`.
    fn pay_in(
        &mut self,
        now: Expiry,
        id: B256,
        invoice: &Invoice,
        plan: Option<HtlcPlan>,
        p: &mut Pending,
    ) -> Result<(), CommandError> {
        let hubs: &[Address] = if invoice.payee == invoice.hub {
            &[]
        } else {
            std::slice::from_ref(&invoice.hub)
        };
        let plan = match (plan, hubs.is_empty()) {
            // Paying the hub itself: the plan's HTLC is the payee's.
            (Some(pl), true) => Some(RoutePlan {
                sent: pl.sent,
                expiry: pl.expiry,
                hops: Vec::new(),
            }),
            (pl, _) => pl.map(RoutePlan::from),
        };
        self.pay_over(now, id, invoice, hubs, (invoice.amount, plan), p)
    }

    /// Queue one payment over `hubs` into step `p`: the onion and the HTLC go out in the same
    /// step (one batch, the onion first on the link). Nothing changes if it fails.
    fn pay_over(
        &mut self,
        now: Expiry,
        id: B256,
        invoice: &Invoice,
        hubs: &[Address],
        (amount, plan): (Amount, Option<RoutePlan>),
        p: &mut Pending,
    ) -> Result<(), CommandError> {
        if self.book.payments.contains_key(&id) {
            return Ok(());
        }
        let prepared = self.prepare_payment(now, id, invoice, hubs, (amount, plan))?;
        self.commit_payment(id, invoice, prepared, p)
    }

    /// Everything about one payment that is decided before anything changes: the channel it
    /// leaves on, its price over `hubs`, and its onion.
    fn prepare_payment(
        &self,
        now: Expiry,
        id: B256,
        invoice: &Invoice,
        hubs: &[Address],
        (amount, plan): (Amount, Option<RoutePlan>),
    ) -> Result<Prepared, CommandError> {
        let first = hubs.first().copied().unwrap_or(invoice.payee);
        let (channel, available) = self
            .best_channel_to(first, None)
            .ok_or(CommandError::NoChannel(first))?;
        let plan = match plan {
            Some(plan) => plan,
            None => {
                if invoice.expires_at <= now.0 {
                    return Err(CommandError::Expired);
                }
                if invoice.payee == self.address() {
                    return Err(CommandError::OwnInvoice);
                }
                let policies = hubs
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        let next = hubs.get(i + 1).copied().unwrap_or(invoice.payee);
                        self.hop_policy(*h, next).ok_or(CommandError::NoPolicy(*h))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                crate::node::payment::plan_route(
                    amount,
                    invoice.final_expiry_delta,
                    &policies,
                    available,
                    now,
                )?
            }
        };
        if plan.hops.len() != hubs.len() {
            return Err(CommandError::PlanMismatch {
                plan: plan.hops.len(),
                route: hubs.len(),
            });
        }
        // The payee's HTLC: what the last hub offers, or ours when we pay it directly.
        let (last_amount, last_expiry) = plan
            .hops
            .last()
            .map_or((plan.sent, plan.expiry), |h| (h.amount, h.expiry));
        let mut path = hubs.to_vec();
        path.push(invoice.payee);
        let mut layers = Vec::with_capacity(path.len());
        for (i, node) in path.iter().enumerate() {
            let key = if i == hubs.len() {
                invoice.payee_key
            } else {
                self.node_key(*node).ok_or(CommandError::NoNodeKey(*node))?
            };
            let payload = match plan.hops.get(i) {
                Some(h) if i < hubs.len() => HopPayload::Forward {
                    next: path[i + 1],
                    amount: h.amount,
                    expiry: h.expiry,
                },
                // A whole payment names what this HTLC delivers as the total (so an underpaid
                // one is refused at once, not held as a part); a part names the invoice's.
                _ => HopPayload::Final {
                    amount: last_amount,
                    expiry: last_expiry,
                    total: if amount < invoice.amount {
                        invoice.amount
                    } else {
                        last_amount
                    },
                },
            };
            layers.push(OnionHop { node: key, payload });
        }
        let session = self.keys.onion_session(id)?;
        // Through at most one hub and paid whole, an onion hides nothing: the instruction
        // goes in the clear (ADR 0029); longer routes and every part of a multi-path payment
        // keep their onion.
        let (packet, secrets) = if hubs.len() <= 1 && amount >= invoice.amount {
            crate::onion::plain(&session, &layers)?
        } else {
            crate::onion::build(&session, &layers, invoice.hashlock.0)?
        };
        Ok(Prepared {
            first,
            channel,
            available,
            amount,
            plan,
            path,
            packet,
            secrets,
        })
    }

    /// Send a prepared payment's onion, offer its HTLC and record it, in step `p`.
    fn commit_payment(
        &mut self,
        id: B256,
        invoice: &Invoice,
        prepared: Prepared,
        p: &mut Pending,
    ) -> Result<(), CommandError> {
        let Prepared {
            first,
            channel,
            amount,
            plan,
            path,
            packet,
            secrets,
            ..
        } = prepared;
        let Some(e) = self.channels.get_mut(&channel) else {
            return Err(CommandError::UnknownChannel(channel));
        };
        let htlc = e
            .machine
            .offer_htlc(plan.sent, invoice.hashlock, plan.expiry);
        // The onion goes on the link now; the HTLC's update at the end of the step, after it.
        self.send_route(
            first,
            Body::Route {
                channel_id: channel,
                hashlock: invoice.hashlock,
                htlc,
                onion: Box::new(packet),
            },
            p,
        );
        self.paylocks.insert((channel, htlc), id);
        let record = PaymentRecord {
            id,
            invoice: invoice.clone(),
            amount,
            sent: plan.sent,
            channel,
            htlc,
            status: PaymentStatus::Pending,
            path,
            secrets,
            failed_at: None,
        };
        self.write(
            p,
            Write::Payment {
                record: Box::new(record),
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
        if amount.is_zero() {
            return Err(CommandError::ZeroAmount);
        }
        self.command(now, channel, |m| m.transfer(amount))
    }

    /// Propose the cooperative close of `channel`.
    pub fn close(&mut self, now: Expiry, channel: ChannelId) -> Result<Output, CommandError> {
        self.command(now, channel, Channel::close)
    }

    /// Close channel `id` on chain with our latest co-signed state, without the peer (it is
    /// gone, or refuses everything): the channel takes no new lock from now on, the dispute is
    /// paid out after its window and every lock of ours settled as the chain decides (the
    /// operator's `hub close --force`). A channel on chain already has nothing more to do.
    pub fn force_close(&mut self, now: Expiry, id: ChannelId) -> Result<Output, CommandError> {
        let e = self
            .channels
            .get_mut(&id)
            .ok_or(CommandError::UnknownChannel(id))?;
        if e.awaiting_acceptance() {
            return Err(CommandError::NotReady(
                id,
                NotReady::AwaitingCountersignature,
            ));
        }
        if !e.funded {
            return Err(CommandError::NotReady(id, NotReady::NotFunded));
        }
        let mut p = Pending::default();
        let s = e.machine.snapshot();
        if e.concluded || s.frozen() {
            return Ok(self.finish(now, p));
        }
        let intent = if s.latest().state.is_final {
            // Co-signed final: paid out at once, no window.
            Intent::CooperativeClose {
                params: s.params().clone(),
                state: s.latest().clone(),
                not_before: 0,
            }
        } else {
            Intent::Close {
                params: s.params().clone(),
                state: s.latest().clone(),
            }
        };
        p.out.writes.push(Write::Intent(Box::new(intent)));
        e.machine.freeze();
        p.touched.insert(id);
        Ok(self.finish(now, p))
    }

    /// Queue operations on a funded channel with `f` and propose them.
    pub fn command(
        &mut self,
        now: Expiry,
        channel: ChannelId,
        f: impl FnOnce(&mut Channel),
    ) -> Result<Output, CommandError> {
        let e = self
            .channels
            .get_mut(&channel)
            .ok_or(CommandError::UnknownChannel(channel))?;
        if e.awaiting_acceptance() {
            return Err(CommandError::NotReady(
                channel,
                NotReady::AwaitingCountersignature,
            ));
        }
        if !e.funded {
            return Err(CommandError::NotReady(channel, NotReady::NotFunded));
        }
        f(&mut e.machine);
        let mut p = Pending::default();
        if self.holding(channel) {
            // A party's release waits for our countersignature there (ADR 0026): this goes
            // out after it.
            p.touched.insert(channel);
            return Ok(self.finish(now, p));
        }
        let Some(e) = self.channels.get_mut(&channel) else {
            return Err(CommandError::UnknownChannel(channel));
        };
        let effects = e.machine.propose(now)?;
        self.carry(channel, effects, &mut p);
        Ok(self.finish(now, p))
    }

    // ---- the step ----

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

    /// Refuse `from`'s message `seq`. A peer with a funded channel gets a numbered, durable
    /// refusal; anyone else (and a peer that leaves too much unacknowledged) an unnumbered
    /// error, so a fresh key cannot make us write (rule 10). Returns whether it was durable.
    /// `from` refused a message of ours with `code`: if it had not seen a channel funded yet,
    /// our proposals to it in flight are made again when it says `Funded`.
    fn refused_unfunded(&mut self, from: Address, code: ErrorCode) {
        if code != ErrorCode::NotFunded {
            return;
        }
        for e in self.channels.values_mut() {
            if e.peer == from && e.machine.snapshot().pending().is_some() {
                e.resend_on_funded = true;
            }
        }
    }

    fn refuse(
        &mut self,
        from: Address,
        seq: u64,
        code: ErrorCode,
        detail: String,
        p: &mut Pending,
    ) -> bool {
        p.out.events.push(NodeEvent::Refused { peer: from, code });
        if self.has_funded_channel(from) && self.backlog(from) < self.config.max_durable_backlog {
            self.send(from, Body::Refused { seq, code, detail }, p);
            true
        } else {
            p.out.transmits.push((from, Frame::Error { code, detail }));
            false
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
            Frame::Gossip(msg) => self.on_gossip(now, from, *msg, p),
            Frame::Error { code, detail } => {
                self.refused_unfunded(from, code);
                p.out.events.push(NodeEvent::RefusedByPeer {
                    peer: from,
                    code,
                    detail,
                });
            }
            Frame::Msg { seq, body } => {
                // The refused messages of a peer without a funded channel leave no durable
                // counter, so after our restart it may be ahead of what we stored: it may skip.
                let may_skip = !self.has_funded_channel(from);
                let inbox = self.links.get(&from).map(|l| l.inbox).unwrap_or_default();
                match inbox.classify(seq, may_skip) {
                    Inbound::Duplicate { ack } => {
                        p.out.transmits.push((from, Frame::Ack { seq: ack }));
                    }
                    Inbound::Gap { expected } => {
                        let code = ErrorCode::OutOfOrder;
                        p.out.events.push(NodeEvent::Refused { peer: from, code });
                        p.out.transmits.push((
                            from,
                            Frame::Error {
                                code,
                                detail: format!("expected {expected}, got {seq}"),
                            },
                        ));
                    }
                    Inbound::Process => {
                        let durable = self.on_body(now, from, seq, body, p);
                        let has_channel = self.has_channel(from);
                        let link = self.links.entry(from).or_default();
                        link.inbox.received(seq);
                        if durable && has_channel {
                            link.durable = link.durable.max(seq);
                            p.out.writes.push(Write::Received { peer: from, seq });
                        }
                        p.out.transmits.push((from, Frame::Ack { seq }));
                    }
                }
            }
        }
    }

    /// Handle message `seq` of `from`; returns false if it was refused without a write.
    fn on_body(
        &mut self,
        now: Expiry,
        from: Address,
        seq: u64,
        body: Body,
        p: &mut Pending,
    ) -> bool {
        // A stranger (no channel with us) may only open one: anything else is refused
        // without a write (issue 12, attack 8).
        let tower_client = self.config.tower.is_some() && matches!(body, Body::Watch { .. });
        if !self.has_channel(from) && !matches!(body, Body::OpenChannel { .. }) && !tower_client {
            let detail = "no channel with this peer".to_string();
            return self.refuse(from, seq, ErrorCode::UnknownChannel, detail, p);
        }
        match body {
            Body::Ping => true,
            Body::Refused { code, detail, .. } => {
                self.refused_unfunded(from, code);
                p.out.events.push(NodeEvent::RefusedByPeer {
                    peer: from,
                    code,
                    detail,
                });
                true
            }
            Body::Watch { params, state } => {
                let id = params.id();
                let kept = self.book.watched.get(&id);
                let watched = self.book.watched.len();
                match tower::admit(self.config.tower, from, &params, &state, kept, watched) {
                    Ok(true) => {
                        let record = tower::Watched {
                            client: from,
                            params: *params,
                            state: *state,
                        };
                        self.write(
                            p,
                            Write::Watched {
                                id,
                                record: Some(Box::new(record)),
                            },
                        );
                        true
                    }
                    Ok(false) => true,
                    Err(e) => self.refuse(from, seq, ErrorCode::Protocol, e.to_string(), p),
                }
            }
            body @ (Body::HubPolicy { .. } | Body::Route { .. } | Body::RouteFailed { .. }) => {
                self.on_routing_body(now, from, from, seq, body, p)
            }
            Body::PartyPolicy { .. } => {
                let detail = "a party's policy comes only over the virtual channel's hub".into();
                self.refuse(from, seq, ErrorCode::Protocol, detail, p)
            }
            Body::Funded { channel_id } => {
                if self.peer_of(channel_id) != Some(from) {
                    let detail = format!("no channel {channel_id}");
                    return self.refuse(from, seq, ErrorCode::UnknownChannel, detail, p);
                }
                // The holdings are read from the chain, never taken from the peer's word.
                p.out.queries.push(channel_id);
                if let Some(e) = self.channels.get_mut(&channel_id)
                    && std::mem::take(&mut e.resend_on_funded)
                    && let Some(msg) = e.machine.pending_message()
                {
                    self.send(from, Body::Channel(msg), p);
                }
                // The peer now takes gossip from us (it drops what comes before it sees its
                // channel funded): our table, if we serve one and see the channel funded too.
                let table = self.gossip_table(from);
                p.out.transmits.extend(table);
                true
            }
            Body::AnnounceSig {
                channel_id,
                sig,
                policy,
            } => self.on_announce_sig(now, (from, from), seq, (channel_id, sig, *policy), p),
            Body::Channel(msg) => self.on_channel_msg(now, from, None, seq, msg, p),
            // A hub of a chain passes the next hub's relayed message on (module `virtuals`).
            Body::Relayed { from: party, msg } if self.serves_virtual(msg.channel_id()) => {
                match self.on_relay(from, party, None, msg, p) {
                    Ok(()) => true,
                    Err((code, detail)) => self.refuse(from, seq, code, detail, p),
                }
            }
            Body::Relayed { from: party, msg } => {
                self.on_channel_msg(now, party, Some(from), seq, msg, p)
            }
            Body::Relay { to, msg } => match self.on_relay(from, from, Some(to), msg, p) {
                Ok(()) => true,
                Err((code, detail)) => self.refuse(from, seq, code, detail, p),
            },
            Body::RelayRoute { to, body } => {
                match self.on_relay_route(from, from, Some(to), *body, p) {
                    Ok(()) => true,
                    Err((code, detail)) => self.refuse(from, seq, code, detail, p),
                }
            }
            Body::RelayedRoute { from: party, body }
                if Self::route_body_channel(&body).is_some_and(|c| self.serves_virtual(c)) =>
            {
                match self.on_relay_route(from, party, None, *body, p) {
                    Ok(()) => true,
                    Err((code, detail)) => self.refuse(from, seq, code, detail, p),
                }
            }
            Body::RelayedRoute { from: party, body } => {
                // Only a route instruction or failure packet on a virtual channel between us
                // and `party` whose hub is the sender, or `party`'s policy when we have such a
                // channel; then handled as if `party` sent it.
                let over = |e: &Entry| e.peer == party && e.via == Some(from);
                let ours = match &*body {
                    Body::Route { channel_id, .. } | Body::RouteFailed { channel_id, .. } => {
                        self.channels.get(channel_id).is_some_and(over)
                    }
                    Body::PartyPolicy { update, .. } => {
                        self.channels.get(&update.channel_id).is_some_and(over)
                    }
                    Body::AnnounceSig { channel_id, .. } => {
                        self.channels.get(channel_id).is_some_and(over)
                    }
                    _ => false,
                };
                if !ours {
                    let detail = "no virtual channel of ours with that party over you".into();
                    return self.refuse(from, seq, ErrorCode::UnknownChannel, detail, p);
                }
                if let Body::AnnounceSig {
                    channel_id,
                    sig,
                    policy,
                } = *body
                {
                    return self.on_announce_sig(
                        now,
                        (party, from),
                        seq,
                        (channel_id, sig, *policy),
                        p,
                    );
                }
                self.on_routing_body(now, party, from, seq, *body, p)
            }
            Body::HubVirtualPolicy { policy } => {
                self.write(p, Write::VirtualPolicy { peer: from, policy });
                true
            }
            Body::VirtualOpen {
                ledger,
                terms,
                sig,
                onward,
            } => match self.on_virtual_open(now, from, ledger, *terms, sig, onward, p) {
                Ok(()) => true,
                Err(detail) => self.refuse(from, seq, ErrorCode::Protocol, detail, p),
            },
            Body::VirtualOffer { ledger, terms, sig } => {
                match self.on_virtual_offer(now, from, ledger, *terms, sig, p) {
                    Ok(()) => true,
                    Err(detail) => self.refuse(from, seq, ErrorCode::Protocol, detail, p),
                }
            }
            Body::VirtualAccept { channel_id, sig } => {
                match self.on_virtual_accept(from, channel_id, sig, p) {
                    Ok(()) => true,
                    Err(detail) => self.refuse(from, seq, ErrorCode::Protocol, detail, p),
                }
            }
            Body::VirtualClose { final_state } => {
                match self.on_virtual_close(from, *final_state, p) {
                    Ok(()) => true,
                    Err(detail) => self.refuse(from, seq, ErrorCode::Protocol, detail, p),
                }
            }
            Body::VirtualAccepted { channel_id, sig } => {
                match self.on_virtual_accepted(now, from, channel_id, sig, p) {
                    Ok(()) => true,
                    Err(detail) => self.refuse(from, seq, ErrorCode::Protocol, detail, p),
                }
            }
            Body::OpenChannel {
                params,
                balances,
                sig,
            } => match self.accept_open(now, from, params, balances, sig, p) {
                Ok(()) => true,
                Err(detail) => self.refuse(from, seq, ErrorCode::Protocol, detail, p),
            },
            Body::ChannelAccepted { channel_id, sig } => {
                let Some(e) = self
                    .channels
                    .get_mut(&channel_id)
                    .filter(|e| e.peer == from && e.awaiting_acceptance())
                else {
                    let detail = format!("channel {channel_id} is not awaiting acceptance");
                    return self.refuse(from, seq, ErrorCode::UnknownChannel, detail, p);
                };
                match e.machine.snapshot().countersigned(self.keys.clone(), sig) {
                    Ok(machine) => {
                        e.machine = machine;
                        p.touched.insert(channel_id);
                        p.out.events.push(NodeEvent::ChannelOpened {
                            channel_id,
                            peer: from,
                        });
                        // Without a chain the channel is funded now on both sides: our gossip
                        // table to the peer (on chain it goes on the peer's `Funded`).
                        if !self.config.on_chain {
                            let table = self.gossip_table(from);
                            p.out.transmits.extend(table);
                        }
                        true
                    }
                    Err(err) => self.refuse(from, seq, ErrorCode::Protocol, err.to_string(), p),
                }
            }
        }
    }

    /// An update-protocol message of `peer` for one of our channels with it: sent on its own
    /// link (`via` = `None`), or relayed by the hub `via` of a virtual channel. Refusals go back
    /// on the link it came by.
    fn on_channel_msg(
        &mut self,
        now: Expiry,
        peer: Address,
        via: Option<Address>,
        seq: u64,
        msg: Message,
        p: &mut Pending,
    ) -> bool {
        let link = via.unwrap_or(peer);
        let id = msg.channel_id();
        // Another peer's channel gets the same answer as an unknown one; a virtual channel's
        // messages come only from its party, directly or over its own hub.
        let Some(e) = self.channels.get_mut(&id).filter(|e| {
            e.peer == peer && !e.awaiting_acceptance() && (via.is_none() || e.via == via)
        }) else {
            return self.refuse(
                link,
                seq,
                ErrorCode::UnknownChannel,
                format!("no channel {id}"),
                p,
            );
        };
        if !e.funded {
            if e.via.is_some() {
                let detail = format!("virtual channel {id} is not funded yet");
                return self.refuse(link, seq, ErrorCode::NotFunded, detail, p);
            }
            // Maybe the peer saw its deposit before we did: read the chain now; we
            // say `Funded` once we see it, and the peer proposes again.
            p.out.queries.push(id);
            let detail = format!("channel {id} is not funded");
            return self.refuse(link, seq, ErrorCode::NotFunded, detail, p);
        }
        if via.is_none() && self.hold_release(now, id, &msg, p) {
            return true;
        }
        // While we hold the peer's release on this ledger we take no other proposal of it
        // there: it could be the same release again (countersigned alone), or an update that
        // makes the held one stale (ADR 0026).
        if via.is_none() && matches!(msg, Message::Propose { .. }) && self.holding(id) {
            let detail = format!("channel {id}: your release is held; nothing else meanwhile");
            return self.refuse(link, seq, ErrorCode::Protocol, detail, p);
        }
        let Some(e) = self.channels.get_mut(&id) else {
            return true;
        };
        match e.machine.handle(msg, now) {
            Ok(effects) => {
                self.carry(id, effects, p);
                true
            }
            Err(err) => self.refuse(
                link,
                seq,
                ErrorCode::Protocol,
                format!("channel {id}: {err}"),
                p,
            ),
        }
    }

    /// A peer asks to open a channel: admit it (rule 10), countersign the opening, announce
    /// our policy.
    fn accept_open(
        &mut self,
        now: Expiry,
        from: Address,
        params: ChannelParams,
        balances: [Amount; 2],
        sig: alloy::primitives::Signature,
        p: &mut Pending,
    ) -> Result<(), String> {
        let id = params.id();
        let count = self.channels_with(from).len();
        admit_open(
            &self.config.open,
            (from, self.address()),
            &params,
            balances,
            (self.channels.contains_key(&id), count),
        )
        .map_err(|e: OpenRefusal| e.to_string())?;
        let (machine, ours) = crate::node::opening::accept(
            params,
            self.keys.clone(),
            self.config.limits,
            balances,
            sig,
        )
        .map_err(|e| e.to_string())?;
        self.insert(
            id,
            Entry {
                peer: from,
                via: None,
                funded: !self.config.on_chain,
                resend_on_funded: false,
                concluded: false,
                opened_at: now.0,
                machine,
            },
        );
        p.touched.insert(id);
        let (policy, key) = (self.config.policy, self.keys.public_key());
        self.send(from, Body::HubPolicy { policy, key }, p);
        if let Some(policy) = self.config.virtual_policy {
            self.send(from, Body::HubVirtualPolicy { policy }, p);
        }
        self.send(
            from,
            Body::ChannelAccepted {
                channel_id: id,
                sig: ours,
            },
            p,
        );
        p.out.events.push(NodeEvent::ChannelOpened {
            channel_id: id,
            peer: from,
        });
        // Without a chain the channel is funded at once (on both sides once the acceptance
        // arrives, just before these): our gossip table follows it. On chain it goes when the
        // peer says the channel is funded.
        if !self.config.on_chain {
            let table = self.gossip_table(from);
            p.out.transmits.extend(table);
        }
        Ok(())
    }

    /// Record what the chain shows for a channel: its holdings and each participant's
    /// deposits. Funded once they cover the opening state; our collateral added once, to a
    /// channel a peer opened and funded ([`funding`]).
    fn observe(
        &mut self,
        now: Expiry,
        id: ChannelId,
        (held, deposited): (Amount, [Amount; 2]),
        p: &mut Pending,
    ) {
        let Some(e) = self.channels.get_mut(&id) else {
            return;
        };
        let s = e.machine.snapshot();
        let news = held > s.holdings()
            || deposited[0] > s.deposited()[0]
            || deposited[1] > s.deposited()[1];
        if e.concluded || e.awaiting_acceptance() || (!news && e.funded) {
            return;
        }
        let decided = funding(s, e.funded, held, deposited, self.config.collateral);
        e.machine.observe_holdings(held);
        for side in [Side::A, Side::B] {
            e.machine.observe_deposits(side, deposited[side.index()]);
        }
        e.funded |= decided.newly_funded;
        p.touched.insert(id);
        let peer = e.peer;
        if decided.newly_funded {
            p.out.events.push(NodeEvent::Funded { channel_id: id });
        }
        if let Some(amount) = decided.add_collateral {
            let intent = Intent::Deposit {
                params: e.machine.snapshot().params().clone(),
                expected_held: held,
                amount,
                credit: true,
            };
            p.out.writes.push(Write::Intent(Box::new(intent)));
        }
        if decided.newly_funded {
            // The peer may have proposed before we saw the deposits (and was refused).
            self.send(peer, Body::Funded { channel_id: id }, p);
            self.announce_own(now, id, p);
            // A peer whose channel is now funded gets our gossip table (if we serve one).
            let table = self.gossip_table(peer);
            p.out.transmits.extend(table);
        }
    }

    /// Propose the credit of whatever we deposited into `id` that no co-signed state,
    /// proposal or queued operation credits yet. The peer co-signs it once it sees our
    /// deposit on chain; if it refused, this asks again (collateral is never left
    /// uncredited: issue 12, attack 2).
    fn claim_deposits(&mut self, id: ChannelId, p: &mut Pending) {
        let Some(e) = self.channels.get_mut(&id) else {
            return;
        };
        let s = e.machine.snapshot();
        if e.concluded
            || !e.funded
            || s.latest().state.is_final
            || s.frozen()
            || s.pending().is_some()
        {
            return;
        }
        let amount = s.uncredited_own();
        if amount.is_zero() {
            return;
        }
        e.machine.deposit(amount);
        p.to_propose.insert(id);
        p.out.events.push(NodeEvent::ToppedUp {
            channel_id: id,
            amount,
        });
    }

    /// A channel is disputed or concluded on chain: it takes no new lock, guarantee or
    /// deposit from now on (issue 12, attack 3; rule 12).
    /// A dispute of channel `id` is on chain at `version`, final at `finalizes_at`: the channel
    /// is frozen; an older state than ours is challenged (rule 8); otherwise the registered
    /// state is the one to pay out, so every preimage we hold for the peer's locks in it goes
    /// to the registry now (nothing settles them off chain any more), and its conclusion is
    /// written for the end of the window.
    fn disputed(
        &mut self,
        now: Expiry,
        id: ChannelId,
        (version, finalizes_at): (u64, u64),
        guaranteed: &[ChannelId],
        p: &mut Pending,
    ) {
        // A client's channel we watch: answered with the state it handed us (rule 8).
        if let Some(w) = self.book.watched.get(&id)
            && let Some(intent) = tower::answer(w, version)
        {
            p.out.writes.push(Write::Intent(Box::new(intent)));
            p.out.events.push(NodeEvent::Challenged {
                channel_id: id,
                disputed: version,
                ours: w.state.state.version,
            });
        }
        self.freeze(id, p);
        // A virtual channel we serve, disputed with a state older than the final one its
        // parties handed us: we answer with that one (its party may be away).
        if let Some(intent) = self.challenge_virtual(id, version) {
            p.out.writes.push(Write::Intent(Box::new(intent)));
        }
        // A leg of a virtual channel whose close we hold as a hub of a chain (ADR 0026).
        self.on_leg_disputed(now, id, version, guaranteed, p);
        let Some(e) = self.channels.get(&id) else {
            return;
        };
        let s = e.machine.snapshot();
        if must_challenge(s, version) {
            let ours = s.latest().state.version;
            let intent = Intent::Challenge {
                params: s.params().clone(),
                state: s.latest().clone(),
            };
            p.out.writes.push(Write::Intent(Box::new(intent)));
            p.out.events.push(NodeEvent::Challenged {
                channel_id: id,
                disputed: version,
                ours,
            });
            return;
        }
        let Some(state) = state_at(s, version) else {
            // Only a state we signed can be registered; one we no longer know has no payout
            // of ours to drive (the peer's conclusion pays us all the same).
            return;
        };
        for (lock, preimage) in &s.claims {
            if state.lock(*lock).is_some_and(|l| l.sender != s.me())
                && self.claims_reported.insert((id, *lock))
            {
                let intent = Intent::RegisterSecret {
                    params: s.params().clone(),
                    id: *lock,
                    preimage: *preimage,
                };
                p.out.writes.push(Write::Intent(Box::new(intent)));
            }
        }
        if e.via.is_some() {
            // A virtual channel holds nothing to pay out: its registered state settles the
            // guarantees on its ledgers once the window is over.
            self.on_virtual_disputed(id, finalizes_at, p);
            return;
        }
        let grace = match s.me() {
            Side::A => 0,
            Side::B => self.config.close_grace_secs,
        };
        let intent = Intent::Conclude {
            params: s.params().clone(),
            state: state.clone(),
            not_before: finalizes_at.saturating_add(grace),
        };
        p.out.writes.push(Write::Intent(Box::new(intent)));
    }

    /// `preimage` is public since `at`: every lock we offered under its hashlock that it
    /// unlocks (registered at or before the lock's expiry, the lock in a state the peer can
    /// enforce) is as good as fulfilled: learned like an off-chain fulfil, settled upstream
    /// in this step, and our own payment it pays for succeeds.
    fn revealed(&mut self, preimage: Preimage, at: u64, p: &mut Pending) {
        let hashlock = preimage.hashlock();
        let unlocks = |e: &Entry, id: HtlcId| {
            let s = e.machine.snapshot();
            let held = |st: &crate::ChannelState| {
                st.lock(id).is_some_and(|l| {
                    l.sender == s.me() && l.hashlock == hashlock && at <= l.expiry.0
                })
            };
            held(&s.latest().state) || s.pending().is_some_and(|pr| held(&pr.state))
        };
        let ours: Vec<(ChannelId, HtlcId)> = self
            .book
            .forwards
            .keys()
            .chain(self.paylocks.keys())
            .filter(|(ch, id)| self.channels.get(ch).is_some_and(|e| unlocks(e, *id)))
            .copied()
            .collect();
        for (ch, id) in ours {
            self.on_event(ch, Event::PreimageLearned { id, preimage }, p);
        }
    }

    fn freeze(&mut self, id: ChannelId, p: &mut Pending) {
        if let Some(e) = self.channels.get_mut(&id)
            && !e.machine.snapshot().frozen()
        {
            e.machine.freeze();
            p.touched.insert(id);
        }
    }

    fn conclude(&mut self, id: ChannelId, paid: Option<(Amount, Amount)>, p: &mut Pending) {
        let Some(e) = self.channels.get_mut(&id) else {
            return;
        };
        if e.concluded {
            return;
        }
        e.concluded = true;
        p.touched.insert(id);
        let b = e.machine.latest().state.balances;
        let (to_a, to_b) = paid.unwrap_or((b[0], b[1]));
        p.out.events.push(NodeEvent::Concluded {
            channel_id: id,
            to_a,
            to_b,
        });
    }

    /// Propose what channel `id` has queued, and carry out the effects.
    fn propose(&mut self, now: Expiry, id: ChannelId, p: &mut Pending) {
        if self.holding(id) {
            // A party's release waits for our countersignature there (ADR 0026): what we
            // queued goes out after it.
            p.touched.insert(id);
            return;
        }
        let Some(e) = self.channels.get_mut(&id) else {
            return;
        };
        p.touched.insert(id);
        match e.machine.propose(now) {
            Ok(effects) => self.carry(id, effects, p),
            // A peer that refuses everything: the queue waits, the operator is told (the
            // chain is the way out). A closed channel has nothing more to propose.
            Err(ProtocolError::PeerStuck(_)) => {
                p.out.events.push(NodeEvent::PeerStuck { channel_id: id })
            }
            Err(_) => {}
        }
    }

    /// A route instruction, failure packet or forwarding policy from `from`, which came over
    /// `link` (`from` itself, or the hub of our virtual channel with `from`, which relayed it):
    /// refusals go back over `link`.
    fn on_routing_body(
        &mut self,
        now: Expiry,
        from: Address,
        link: Address,
        seq: u64,
        body: Body,
        p: &mut Pending,
    ) -> bool {
        match body {
            Body::PartyPolicy { update, key } => {
                let digest = crate::node::gossip::PolicyUpdate::digest(
                    update.channel_id,
                    update.node,
                    &update.policy,
                    update.timestamp,
                );
                let newest = self.book.party_policy_at.get(&from).copied().unwrap_or(0);
                if update.node != from
                    || crate::sig::address_of(&key) != from
                    || crate::sig::verify(digest, &update.sig, from).is_err()
                {
                    let detail = "a party's policy not signed by that party".to_string();
                    return self.refuse(link, seq, ErrorCode::Protocol, detail, p);
                }
                if update.timestamp <= newest {
                    let detail = "an older policy of that party".to_string();
                    return self.refuse(link, seq, ErrorCode::Protocol, detail, p);
                }
                self.write(
                    p,
                    Write::PartyPolicyAt {
                        peer: from,
                        timestamp: update.timestamp,
                    },
                );
                self.write(
                    p,
                    Write::Policy {
                        peer: from,
                        policy: update.policy,
                    },
                );
                self.write(p, Write::NodeKey { node: from, key });
                true
            }
            Body::HubPolicy { policy, key } => {
                if crate::sig::address_of(&key) != from {
                    let detail = "the announced key is not the sender's".to_string();
                    return self.refuse(link, seq, ErrorCode::Protocol, detail, p);
                }
                self.write(p, Write::Policy { peer: from, policy });
                self.write(p, Write::NodeKey { node: from, key });
                true
            }
            Body::Route {
                channel_id,
                hashlock,
                htlc,
                onion,
            } => {
                let owned = self.peer_of(channel_id) == Some(from);
                let lo = (channel_id, HtlcId(0));
                let hi = (channel_id, HtlcId(u64::MAX));
                let waiting = self.book.routes.range(lo..=hi).count();
                let max = self.config.limits.max_pending_locks;
                match admit_route(owned, (waiting, max)) {
                    Ok(()) => {
                        let layer = self.peel(&onion, hashlock.0);
                        let route = read_layer(from, hashlock, layer, now);
                        let key = (channel_id, htlc);
                        self.write(
                            p,
                            Write::Route {
                                key,
                                route: Some(route),
                            },
                        );
                        true
                    }
                    Err(e) => {
                        let code = match e {
                            RouteRefusal::Invalid => ErrorCode::UnknownChannel,
                            RouteRefusal::TooMany => ErrorCode::RateLimited,
                        };
                        self.refuse(link, seq, code, format!("channel {channel_id}: {e}"), p)
                    }
                }
            }
            Body::RouteFailed {
                channel_id,
                htlc,
                packet,
            } => {
                if self.peer_of(channel_id) != Some(from) {
                    let detail = format!("no channel {channel_id}");
                    return self.refuse(link, seq, ErrorCode::UnknownChannel, detail, p);
                }
                // A failure packet has one size: a bigger one would be stored with the forward.
                if packet.0.len() != crate::onion::ERROR_LEN {
                    let detail = format!("a failure packet is {} bytes", crate::onion::ERROR_LEN);
                    return self.refuse(link, seq, ErrorCode::Protocol, detail, p);
                }
                self.on_route_failed((channel_id, htlc), packet, p);
                true
            }
            _ => {
                let detail = "not a routing message".to_string();
                self.refuse(link, seq, ErrorCode::Protocol, detail, p)
            }
        }
    }

    /// Send `peer` a route instruction or failure packet about one of our channels with it
    /// (`body` names the channel): over the hub when the channel is virtual and the peer is
    /// not reachable directly, the way the channel's own messages go ([`Node::carry`]).
    fn send_route(&mut self, peer: Address, body: Body, p: &mut Pending) {
        let channel = match &body {
            Body::Route { channel_id, .. } | Body::RouteFailed { channel_id, .. } => {
                Some(*channel_id)
            }
            _ => None,
        };
        let via = channel.and_then(|c| self.relay_hub(c, peer));
        self.send_via(via, peer, body, p);
    }

    /// The hub that carries what we send `peer` about channel `id`: the virtual channel's hub
    /// while `peer` has no session of its own with us; `None`: straight to `peer`.
    fn relay_hub(&self, id: ChannelId, peer: Address) -> Option<Address> {
        self.channels
            .get(&id)
            .and_then(|e| e.via)
            .filter(|_| !self.is_up(peer))
    }

    /// Send `body` to `peer`, inside a [`Body::RelayRoute`] over `via` if given.
    fn send_via(&mut self, via: Option<Address>, peer: Address, body: Body, p: &mut Pending) {
        match via {
            Some(hub) => {
                let relayed = Body::RelayRoute {
                    to: peer,
                    body: Box::new(body),
                };
                self.send(hub, relayed, p);
            }
            None => self.send(peer, body, p),
        }
    }

    /// Carry out channel `id`'s effects: its record is written at the end of the step, its
    /// messages are numbered and stored, its events recorded and reacted to.
    fn carry(&mut self, id: ChannelId, effects: Vec<Effect>, p: &mut Pending) {
        let Some(peer) = self.peer_of(id) else {
            return;
        };
        // A virtual channel's other party reachable directly gets its messages directly.
        let via = self.relay_hub(id, peer);
        p.touched.insert(id);
        for e in effects {
            match e {
                Effect::Persist => {}
                Effect::Send(msg) => match via {
                    Some(hub) => self.send(hub, Body::Relay { to: peer, msg }, p),
                    None => self.send(peer, Body::Channel(msg), p),
                },
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
                && let Some(mut status) = pay.status.after(o)
            {
                // The reason the failing node's MAC proves beats the one our peer passed on.
                if let (PaymentStatus::Failed { reason }, Some((_, proven))) =
                    (&mut status, pay.failed_at)
                {
                    *reason = proven;
                }
                p.out.events.push(match &status {
                    PaymentStatus::Succeeded { .. } => NodeEvent::PaymentSucceeded {
                        id: pid,
                        fee: pay.fee(),
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
                        record: Box::new(pay),
                    },
                );
            }
        }
        match ev {
            Event::HtlcReceived(h) => p.reactions.push_back(Reaction::Received(h)),
            Event::Committed {
                version,
                proposer,
                ops,
            } => {
                if ops.contains(&Op::Close) && self.channel(id).is_some_and(|c| c.me() == proposer)
                {
                    p.closed_by_us.insert(id);
                }
                if ops.iter().any(|o| matches!(o, Op::AddGuarantee(_))) {
                    self.on_guarantee_committed(id, proposer, &ops, p);
                }
                if ops.iter().any(|o| matches!(o, Op::RemoveGuarantee { .. })) {
                    self.on_release_committed(&ops, p);
                }
                p.out.events.push(NodeEvent::Committed {
                    channel_id: id,
                    version,
                });
            }
            Event::Closed(state) => {
                p.out.events.push(NodeEvent::Closed { channel_id: id });
                if self.channels.get(&id).is_some_and(|e| e.via.is_some()) {
                    self.on_virtual_final(id, state, p);
                } else {
                    p.closes.push((id, state));
                }
            }
            Event::PeerStuck => p.out.events.push(NodeEvent::PeerStuck { channel_id: id }),
            Event::OpDropped { op, error } => {
                if let Op::AddGuarantee(g) = &op {
                    // A virtual channel whose guarantee was refused never opens.
                    self.set_phase(
                        g.virtual_channel,
                        crate::node::records::VirtualPhase::Failed,
                        p,
                    );
                }
                if let Op::RemoveGuarantee {
                    virtual_channel, ..
                } = &op
                {
                    // Refused, and no longer completable (a later state is co-signed).
                    p.reactions
                        .push_back(Reaction::InnerReleaseDead(id, *virtual_channel));
                }
                p.out.events.push(NodeEvent::OpDropped {
                    channel_id: id,
                    op,
                    error,
                });
            }
            Event::PreimageLearned { .. } => {}
        }
    }

    /// A co-signed final state: pay it out on chain, decided in the same batch. The side that
    /// proposed the close pays it out at once; the other only after the grace period, if the
    /// chain shows no payout by then (the two do not both pay gas for one payout).
    fn settle_closes(&mut self, now: Expiry, p: &mut Pending) {
        for (id, state) in std::mem::take(&mut p.closes) {
            let Some(e) = self.channels.get(&id) else {
                continue;
            };
            if !self.config.auto_settle || e.concluded {
                continue;
            }
            let not_before = if p.closed_by_us.contains(&id) {
                0
            } else {
                now.0.saturating_add(self.config.close_grace_secs)
            };
            let intent = Intent::CooperativeClose {
                params: e.machine.snapshot().params().clone(),
                state,
                not_before,
            };
            p.out.writes.push(Write::Intent(Box::new(intent)));
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
        let invoice = self.book.invoices.get(&lock.hashlock).cloned();
        let route = self
            .book
            .routes
            .get(&(ch, lock.id))
            .filter(|r| r.hashlock == lock.hashlock)
            .cloned();
        let secret = route.as_ref().map_or(B256::ZERO, |r| r.secret);
        // Only a channel in the incoming channel's asset can carry it on (a payment received
        // in one token is never paid out in another: issue 12, attack 4).
        let out = match route.as_ref().map(|r| &r.hop) {
            Some(RouteHop::Forward { next_peer, .. }) if !frozen => self
                .best_channel_to(*next_peer, Some(asset))
                .and_then(|(id, _)| {
                    let mut o = self.channels.get(&id)?.machine.outgoing(self.config.policy);
                    // A peer that is away cannot take the HTLC now: it fails as a temporary
                    // channel failure, and the payer routes around it.
                    if self.config.forward_only_to_reachable && self.is_known_away(*next_peer) {
                        o.policy.enabled = false;
                    }
                    Some((id, o))
                }),
            _ => None,
        };
        // A part of a multi-path payment: checked like a whole one against what the payer
        // sent it, then held until the parts add up to the invoice.
        if let (
            Some(rec),
            Some(RouteHop::Final {
                amount,
                expiry,
                total,
            }),
        ) = (&invoice, route.as_ref().map(|r| &r.hop))
            && lock.amount < rec.invoice.amount
            && *total >= rec.invoice.amount
        {
            let terms = InvoiceTerms {
                amount: *amount,
                expires_at: Expiry(rec.invoice.expires_at),
                preimage: rec.preimage,
                paid: rec.paid,
                sent: Some((*amount, *expiry)),
            };
            match crate::node::payment::payee_accepts(&lock, &terms, now) {
                Ok(()) => self.hold_part(now, ch, &lock, rec.clone(), p),
                Err(reason) => {
                    let key = (ch, lock.id);
                    self.write(p, Write::Route { key, route: None });
                    self.fail_incoming(ch, lock.id, reason, (secret, None), p);
                }
            }
            return;
        }
        let terms = invoice.as_ref().map(|r| InvoiceTerms {
            amount: r.invoice.amount,
            expires_at: Expiry(r.invoice.expires_at),
            preimage: r.preimage,
            paid: r.paid,
            sent: match route.as_ref().map(|r| &r.hop) {
                Some(RouteHop::Final { amount, expiry, .. }) => Some((*amount, *expiry)),
                _ => None,
            },
        });
        let known = match (&terms, route.as_ref().map(|r| &r.hop)) {
            (_, Some(RouteHop::Unreadable)) => Known::Unreadable,
            (Some(t), _) => Known::Invoice(t),
            (None, Some(RouteHop::Forward { next, .. })) => Known::Route {
                next,
                outgoing: out.as_ref().map(|(_, o)| o),
                incoming_frozen: frozen,
            },
            // Told we are the payee of a payment we have no invoice for.
            (None, Some(RouteHop::Final { .. })) => Known::Nothing { we_opened: true },
            (None, None) => Known::Nothing { we_opened },
        };
        let step = on_committed(&h, known, now);
        // A payee holding its preimages decides again later (after a restart): it keeps the
        // instruction, which its decision then needs.
        if matches!(step, Step::Claim(_)) && !self.config.reveal_preimages {
            p.out.events.push(NodeEvent::Holding {
                hashlock: lock.hashlock,
            });
            return;
        }
        // The instruction is used up by this decision.
        if route.is_some() {
            self.write(
                p,
                Write::Route {
                    key: (ch, lock.id),
                    route: None,
                },
            );
        }
        let next_onion = match route.map(|r| r.hop) {
            Some(RouteHop::Forward { onion, .. }) => Some(onion),
            _ => None,
        };
        match (step, invoice, out, next_onion) {
            (Step::Claim(preimage), Some(record), _, _) => {
                if let Some(e) = self.channels.get_mut(&ch) {
                    e.machine.fulfill_htlc(lock.id, preimage);
                }
                self.mark_paid(record, lock.amount, p);
                p.to_propose.insert(ch);
            }
            (Step::Forward(fwd), _, Some((out_ch, _)), Some(onion)) => {
                let Some(next_peer) = self.peer_of(out_ch) else {
                    return;
                };
                let Some(oe) = self.channels.get_mut(&out_ch) else {
                    return;
                };
                let out_id = oe.machine.offer_htlc(fwd.amount, fwd.hashlock, fwd.expiry);
                // The next node's layer goes first on the link, then the HTLC's update.
                self.send_route(
                    next_peer,
                    Body::Route {
                        channel_id: out_ch,
                        hashlock: lock.hashlock,
                        htlc: out_id,
                        onion,
                    },
                    p,
                );
                let record = ForwardRecord::new((ch, lock.id), (out_ch, out_id), &fwd, secret);
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
            (Step::Fail(reason), _, _, _) => {
                self.fail_incoming(ch, lock.id, reason, (secret, None), p)
            }
            // `on_committed` claims only with an invoice and forwards only with a channel
            // (and a forward instruction always carries the next layer).
            (Step::Claim(_) | Step::Forward(_), _, _, _) => self.fail_incoming(
                ch,
                lock.id,
                FailureReason::TemporaryChannelFailure,
                (secret, None),
                p,
            ),
        }
    }

    /// Hold part `lock` (on `ch`) of the multi-path payment for `record`; once the held parts
    /// add up to the invoice, claim them all in this step and mark the invoice paid.
    fn hold_part(
        &mut self,
        now: Expiry,
        ch: ChannelId,
        lock: &crate::state::Lock,
        record: InvoiceRecord,
        p: &mut Pending,
    ) {
        let parts = self.parts.entry(lock.hashlock).or_default();
        if !parts.iter().any(|(c, i, ..)| *c == ch && *i == lock.id) {
            parts.push((ch, lock.id, lock.amount, now.0));
        }
        let sum = parts
            .iter()
            .try_fold(Amount::ZERO, |acc, part| acc.checked_add(part.2))
            .unwrap_or(Amount::MAX);
        if sum < record.invoice.amount {
            return;
        }
        if !self.config.reveal_preimages {
            p.out.events.push(NodeEvent::Holding {
                hashlock: lock.hashlock,
            });
            return;
        }
        for (c, id, _, _) in self.parts.remove(&lock.hashlock).unwrap_or_default() {
            if let Some(e) = self.channels.get_mut(&c) {
                e.machine.fulfill_htlc(id, record.preimage);
                p.to_propose.insert(c);
            }
            let key = (c, id);
            self.write(p, Write::Route { key, route: None });
        }
        self.mark_paid(record, sum, p);
    }

    /// Our invoice `record` is paid with `amount` (its HTLCs' claims are queued in this step):
    /// record it paid, so no second payment of it is taken, and tell.
    fn mark_paid(&mut self, record: InvoiceRecord, amount: Amount, p: &mut Pending) {
        let hashlock = record.invoice.hashlock;
        let paid = InvoiceRecord {
            paid: true,
            ..record
        };
        self.write(
            p,
            Write::Invoice {
                hashlock,
                record: Box::new(paid),
            },
        );
        p.out
            .events
            .push(NodeEvent::PaymentReceived { hashlock, amount });
    }

    /// Fail every part of a multi-path payment held longer than
    /// [`crate::node::payment::MPP_TIMEOUT_SECS`] without the rest arriving.
    fn expire_parts(&mut self, now: Expiry, p: &mut Pending) {
        let due: Vec<Hashlock> = self
            .parts
            .iter()
            .filter(|(_, v)| {
                v.iter().map(|x| x.3).min().is_some_and(|t| {
                    t.saturating_add(crate::node::payment::MPP_TIMEOUT_SECS) <= now.0
                })
            })
            .map(|(h, _)| *h)
            .collect();
        for h in due {
            for (c, id, _, _) in self.parts.remove(&h).unwrap_or_default() {
                let key = (c, id);
                let secret = self.book.routes.get(&key).map_or(B256::ZERO, |r| r.secret);
                self.write(p, Write::Route { key, route: None });
                self.fail_incoming(c, id, FailureReason::MppTimeout, (secret, None), p);
            }
        }
    }

    /// When the oldest held part of a multi-path payment times out.
    fn next_parts_deadline(&self) -> Option<Expiry> {
        self.parts
            .values()
            .flat_map(|v| v.iter().map(|x| x.3))
            .min()
            .map(|t| Expiry(t.saturating_add(crate::node::payment::MPP_TIMEOUT_SECS)))
    }

    /// Fail the incoming HTLC `id` on `ch` with `reason`, first sending the payer's failure
    /// packet upstream: the one from downstream wrapped in our layer, or our own made with the
    /// secret of our layer (none when our layer did not read: the node before us reports it).
    fn fail_incoming(
        &mut self,
        ch: ChannelId,
        id: HtlcId,
        reason: FailureReason,
        (secret, downstream): (B256, Option<ErrorPacket>),
        p: &mut Pending,
    ) {
        let packet = match downstream {
            _ if secret == B256::ZERO => None,
            Some(pkt) => Some(crate::onion::wrap(secret, pkt)),
            None => Some(crate::onion::fail(secret, reason)),
        };
        if let (Some(packet), Some(peer)) = (packet, self.peer_of(ch)) {
            let body = Body::RouteFailed {
                channel_id: ch,
                htlc: id,
                packet,
            };
            self.send_route(peer, body, p);
        }
        if let Some(e) = self.channels.get_mut(&ch) {
            e.machine.fail_htlc(id, reason);
            p.to_propose.insert(ch);
        }
    }

    /// The next node sent a failure packet for our HTLC `out`: keep it with the forward (to
    /// wrap and pass upstream when the HTLC's failure is co-signed), or, for our own payment,
    /// read which node failed and why.
    fn on_route_failed(&mut self, out: (ChannelId, HtlcId), packet: ErrorPacket, p: &mut Pending) {
        if let Some(f) = self.book.forwards.get(&out)
            && !f.done
            && f.error.is_none()
        {
            let record = ForwardRecord {
                error: Some(packet),
                ..f.clone()
            };
            self.write(p, Write::Forward { out, record });
            return;
        }
        if let Some(pid) = self.paylocks.get(&out).copied()
            && let Some(pay) = self.book.payments.get(&pid)
            && pay.status == PaymentStatus::Pending
            && pay.failed_at.is_none()
            && let Some((hop, reason)) = crate::onion::decode_error(&pay.secrets, &packet)
            && let Some(node) = pay.path.get(hop).copied()
        {
            let record = PaymentRecord {
                failed_at: Some((node, reason)),
                ..pay.clone()
            };
            self.write(
                p,
                Write::Payment {
                    record: Box::new(record),
                },
            );
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
        if !self.channels.contains_key(&f.in_channel) {
            return;
        }
        match up {
            Upstream::Fulfill(pre) => {
                if let Some(e) = self.channels.get_mut(&f.in_channel) {
                    e.machine.fulfill_htlc(f.in_id, pre);
                }
                p.out.events.push(NodeEvent::Forwarded {
                    in_channel: f.in_channel,
                    out_channel: f.out_channel,
                    fee: f.fee,
                });
            }
            Upstream::Fail(reason) => {
                let down = (f.secret, f.error.clone());
                self.fail_incoming(f.in_channel, f.in_id, reason, down, p);
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

    /// Hand the latest co-signed state of every channel the step touched to our watchtowers,
    /// once per version (they answer a stale close while we are away).
    fn hand_to_towers(&mut self, p: &mut Pending) {
        if self.config.towers.is_empty() {
            return;
        }
        let mut handed = Vec::new();
        for id in &p.touched {
            let Some(e) = self.channels.get(id) else {
                continue;
            };
            let s = e.machine.snapshot();
            let v = s.latest().state.version;
            if e.awaiting_acceptance() || self.watch_sent.get(id).is_some_and(|sent| *sent >= v) {
                continue;
            }
            handed.push((*id, v, s.params().clone(), s.latest().clone()));
        }
        for (id, v, params, state) in handed {
            self.watch_sent.insert(id, v);
            for tower in self.config.towers.clone() {
                let body = Body::Watch {
                    params: Box::new(params.clone()),
                    state: Box::new(state.clone()),
                };
                self.send(tower, body, p);
            }
        }
    }

    /// End a step: run its payment reactions, propose once on every channel they queued
    /// operations on, then write the record of every channel the step touched and set their
    /// timers.
    fn finish(&mut self, now: Expiry, mut p: Pending) -> Output {
        loop {
            while let Some(r) = p.reactions.pop_front() {
                match r {
                    Reaction::Received(h) => self.on_received(now, h, &mut p),
                    Reaction::Outcome(ch, id) => self.on_outcome(ch, id, &mut p),
                    Reaction::ReleaseHeld(id) => self.release_held(now, id, &mut p),
                    Reaction::AnnounceVirtual(id) => self.announce_own(now, id, &mut p),
                    Reaction::InnerReleaseDead(ledger, id) => {
                        self.inner_release_dead(now, ledger, id, &mut p)
                    }
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
        self.settle_closes(now, &mut p);
        self.hand_to_towers(&mut p);
        for id in std::mem::take(&mut p.touched) {
            let Some(e) = self.channels.get(&id) else {
                continue;
            };
            let next = Self::deadline(&self.claims_reported, id, e.machine.snapshot());
            self.timers.set(id, next);
            p.out.writes.push(Write::Channel { id });
        }
        p.out
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "multihop_tests.rs"]
mod multihop_tests;

#[path = "virtuals.rs"]
mod virtuals;

#[path = "gossip_steps.rs"]
mod gossip_steps;
