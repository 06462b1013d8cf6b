//! What a [`super::Node`] writes, and what it is restored from: one [`Write`] per record that
//! changes, grouped by the node into one atomic batch per step, and [`Records`], everything
//! those writes leave on disk.
//!
//! The node keeps its payment book as a [`Book`] and changes it only through
//! [`Book::apply`], the same function a store applies the writes with: what the node reads
//! is what it wrote.

use crate::Amount;
use crate::forward::{ForwardPolicy, NextHop};
use crate::ids::{ChannelId, Expiry, Hashlock, HtlcId, Preimage};
use crate::msg::Message;
use crate::node::invoice::Invoice;
use crate::node::message::Body;
use crate::node::payment::{ForwardRecord, PaymentStatus};
use crate::onion::Packet;
use crate::state::ChannelState;
use crate::update::{SignedState, Snapshot};
use crate::vchan::{VirtualPolicy, VirtualTerms};
use alloy::primitives::{Address, B256, Signature};
use secp256k1::PublicKey;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// A channel as the node stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    /// The counterparty.
    pub peer: Address,
    /// Whether the opening deposits are seen on chain (at once without a chain).
    pub funded: bool,
    /// Whether the channel was paid out on chain.
    #[serde(default)]
    pub concluded: bool,
    /// When the channel was proposed (unix seconds): an opening left unfunded or
    /// uncountersigned too long is collected.
    #[serde(default)]
    pub opened_at: u64,
    /// The channel machine's durable state.
    pub snapshot: Snapshot,
}

/// A channel's record borrowed from the machine: encoded exactly as [`ChannelRecord`] (same
/// fields, same order), so the store writes it at every step without copying the channel's
/// state (its queue of operations grows while a proposal is out).
#[derive(Debug, Serialize)]
pub struct ChannelRecordRef<'a> {
    /// As [`ChannelRecord::peer`].
    pub peer: Address,
    /// As [`ChannelRecord::funded`].
    pub funded: bool,
    /// As [`ChannelRecord::concluded`].
    pub concluded: bool,
    /// As [`ChannelRecord::opened_at`].
    pub opened_at: u64,
    /// As [`ChannelRecord::snapshot`].
    pub snapshot: &'a Snapshot,
}

impl ChannelRecord {
    /// Whether we proposed the channel and the peer has not countersigned its opening yet.
    pub fn awaiting_acceptance(&self) -> bool {
        self.snapshot.awaiting_countersignature()
    }
}

/// One peer link as stored: how far we processed its messages, and ours it has not
/// acknowledged yet (re-sent, in order, on every reconnect).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    /// The last of its sequence numbers we processed.
    pub received: u64,
    /// The sequence number our next message gets (1 on a new link).
    pub next_send: u64,
    /// Our messages it has not acknowledged, by sequence number.
    pub unacked: BTreeMap<u64, Body>,
}

impl Default for LinkRecord {
    fn default() -> Self {
        LinkRecord {
            received: 0,
            next_send: 1,
            unacked: BTreeMap::new(),
        }
    }
}

/// The payer's instruction for an HTLC about to be locked to us on a channel, as we read it
/// from our onion layer (kept until that HTLC is decided, or collected after
/// [`super::Config::route_ttl_secs`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The HTLC's hashlock (the onion's MACs are bound to it; an HTLC with this id but
    /// another hashlock does not get this instruction).
    pub hashlock: Hashlock,
    /// What our layer says.
    pub hop: RouteHop,
    /// The secret our layer shares with the payer: the key of a failure we send back
    /// (zero for an unreadable layer: the node before us reports that failure).
    pub secret: B256,
    /// When it was stored (unix seconds).
    pub stored_at: u64,
}

/// What one node's onion layer told it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteHop {
    /// Offer `next` to `next_peer`, handing it `onion` (its layer and those after it).
    Forward {
        /// Who to forward to.
        next_peer: Address,
        /// Amount and expiry of the outgoing HTLC.
        next: NextHop,
        /// The packet for the next node.
        onion: Box<Packet>,
    },
    /// We are the payee: what the payer sent us.
    Final {
        /// The HTLC's amount as the payer priced it (the last hub may not keep more).
        amount: Amount,
        /// The HTLC's expiry as the payer set it.
        expiry: Expiry,
        /// The whole payment's amount.
        total: Amount,
    },
    /// The layer did not read (MAC or instruction): its HTLC is failed with
    /// [`crate::FailureReason::InvalidOnion`].
    Unreadable,
}

/// The payee's record of an invoice of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceRecord {
    /// The invoice handed out.
    pub invoice: Invoice,
    /// Its preimage, revealed to claim.
    pub preimage: Preimage,
    /// Paid already: a second HTLC for it is refused.
    pub paid: bool,
}

/// The payer's record of one payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// The payment id (paying the same id twice pays once).
    pub id: B256,
    /// The invoice paid.
    pub invoice: Invoice,
    /// What this HTLC delivers to the payee: the invoice's amount, or one part's of a
    /// multi-path payment.
    pub amount: Amount,
    /// What we locked: the amount and the fees.
    pub sent: Amount,
    /// The channel the HTLC left on.
    pub channel: ChannelId,
    /// Our HTLC's id in it.
    pub htlc: HtlcId,
    /// Where it stands.
    pub status: PaymentStatus,
    /// The nodes after us on the route, in order (the payee last).
    pub path: Vec<Address>,
    /// The onion secrets shared with each node of `path`: the keys to read a failure.
    pub secrets: Vec<B256>,
    /// The node a failure came from and its reason, as its onion MAC proves (`None` while
    /// pending, on success, or when no node's MAC held).
    pub failed_at: Option<(Address, crate::FailureReason)>,
}

impl PaymentRecord {
    /// The fees paid (or to be paid) on the way.
    pub fn fee(&self) -> Amount {
        Amount(self.sent.0.saturating_sub(self.amount.0))
    }
}

/// One record that changes. The node hands a step's writes over together: the caller writes
/// them as one atomic, synced batch before it sends any frame of that step (rule 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// A channel's record changed: write [`super::Node::channel_record`] of `id` as it is
    /// when the step returns (read before the next input; the write carries no copy of it).
    Channel {
        /// Which.
        id: ChannelId,
    },
    /// An opening that never took effect is forgotten: delete its record.
    ForgetChannel {
        /// Which.
        id: ChannelId,
    },
    /// A message of ours numbered `seq` for `peer`: store [`super::Node::unacked`] of it until
    /// acknowledged (none: acknowledged in the same step, store nothing), and count `seq + 1`
    /// as the link's next number.
    Sent {
        /// To whom.
        peer: Address,
        /// Its number.
        seq: u64,
    },
    /// The peer acknowledged these of our messages: delete them.
    Acked {
        /// Whose.
        peer: Address,
        /// Which.
        seqs: RangeInclusive<u64>,
    },
    /// We processed the peer's message `seq` (its effects are in the same batch).
    Received {
        /// Whose.
        peer: Address,
        /// Its number.
        seq: u64,
    },
    /// A route instruction stored (`Some`) or used up / collected (`None`).
    Route {
        /// The channel its HTLC comes on, and the HTLC's id.
        key: (ChannelId, HtlcId),
        /// The instruction.
        route: Option<Route>,
    },
    /// A forward's record, keyed by its outgoing HTLC.
    Forward {
        /// The outgoing channel and HTLC.
        out: (ChannelId, HtlcId),
        /// The record.
        record: ForwardRecord,
    },
    /// An incoming HTLC was forwarded as `out` (decided once, never again after a restart).
    ForwardedIn {
        /// The incoming channel and HTLC.
        incoming: (ChannelId, HtlcId),
        /// The outgoing channel and HTLC.
        out: (ChannelId, HtlcId),
    },
    /// An invoice of ours.
    Invoice {
        /// Its hashlock.
        hashlock: Hashlock,
        /// Its record.
        record: Box<InvoiceRecord>,
    },
    /// A payment of ours.
    Payment {
        /// Its record.
        record: Box<PaymentRecord>,
    },
    /// The forwarding policy a hub announced to us.
    Policy {
        /// The hub.
        peer: Address,
        /// Its policy.
        policy: ForwardPolicy,
    },
    /// A channel announced to us and believed (`Some`), or pruned (`None`).
    Gossip {
        /// The channel.
        id: ChannelId,
        /// What we know of it.
        record: Option<Box<crate::node::gossip::GossipChannel>>,
    },
    /// A node's public key (its onion key; its address derives from it).
    NodeKey {
        /// The node.
        node: Address,
        /// Its key.
        key: PublicKey,
    },
    /// A transaction to send: store it in the same batch (the chain's sender executes it).
    Intent(Box<crate::node::chain::Intent>),
    /// A channel a watchtower watches (`Some`: its latest state) or no longer does (`None`).
    Watched {
        /// The channel.
        id: ChannelId,
        /// What is kept for it.
        record: Option<Box<crate::node::tower::Watched>>,
    },
    /// A virtual channel we take part in (as a party or as its hub).
    Virtual {
        /// The virtual channel.
        id: ChannelId,
        /// Its record.
        record: Box<VirtualRecord>,
    },
    /// A hub's rules for virtual channels, as it announced them.
    VirtualPolicy {
        /// The hub.
        peer: Address,
        /// Its rules.
        policy: VirtualPolicy,
    },
    /// The date of the newest signed policy a virtual channel's party sent us over its hub
    /// (an older one is refused, also after a restart).
    PartyPolicyAt {
        /// The party.
        peer: Address,
        /// The policy's date (unix seconds).
        timestamp: u64,
    },
}

/// Our part in a virtual channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VirtualRole {
    /// We are its A: we asked the hub to open it.
    Opener,
    /// We are its B: the hub offered it to us.
    Acceptor,
    /// We are the hub between its parties.
    Hub,
}

/// Where a virtual channel stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VirtualPhase {
    /// Asked for; not every leg locks its guarantee yet.
    Opening,
    /// Every leg we see locks its guarantee: it carries payments.
    Open,
    /// Its final state is co-signed; the guarantees are being released.
    Closed,
    /// Our leg's guarantee (every leg's, for its hub) is released by the final state.
    Settled,
    /// The open did not complete and never will (the leg's guarantee was refused).
    Failed,
}

/// A virtual channel as the node stores it (ADR 0026).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualRecord {
    /// Its terms.
    pub terms: VirtualTerms,
    /// Our part.
    pub role: VirtualRole,
    /// The hub that relays it to us (our neighbour on its path; ourselves as one of its hubs).
    pub hub: Address,
    /// The ledgers that lock its guarantee, as we see them: a party's own ledger with its hub;
    /// a hub's two, toward A then toward B (with V's party, or the neighbouring hub of a chain).
    pub ledgers: Vec<ChannelId>,
    /// The parties' signatures on its opening state, as far as we hold them.
    pub opening_sigs: [Option<Signature>; 2],
    /// Where it stands.
    pub phase: VirtualPhase,
    /// The final state (signed by both parties) that releases its guarantees, fixed the first
    /// time a party hands it to us: every leg is released by this one, never by another.
    pub outcome: Option<SignedState>,
    /// Hub: each party's proposal releasing its leg, held (validated, not countersigned) until
    /// every leg's is here; then all are countersigned at once (ADR 0026). By leg, as
    /// `ledgers`.
    pub held: Vec<Option<Message>>,
    /// Hub: when the first of them was held (unix seconds); past
    /// [`super::Config::virtual_hold_secs`] every release is refused and no leg is released
    /// off chain. A hub of a chain whose own release toward the next hub is out refuses
    /// nothing: past [`super::Config::virtual_chain_patience_secs`] it takes that ledger to
    /// chain instead.
    pub held_since: Option<u64>,
    /// A party: our ledger's state concluded on chain while it held this channel's guarantee
    /// (the guarantee is then resolved on chain by the channel's outcome).
    pub ledger_concluded: Option<ChannelState>,
    /// A party: the end of this channel's on-chain dispute window, as last registered.
    pub disputed_until: Option<u64>,
    /// Hub: each leg's ledger state concluded on chain while holding the guarantee, by leg.
    pub concluded_legs: Vec<Option<ChannelState>>,
    /// Hub: the state registered on chain for this channel and the end of its window; a window
    /// end of 0 marks the outcome the adjudicator recorded (the `VirtualOutcome` of the first
    /// resolution), which replaces a final state handed to us and which nothing replaces.
    pub registered: Option<(ChannelState, u64)>,
    /// Hub (or a party, once recorded so): the state in `registered` was shown without its
    /// locks, these being their root and total; resolved by `resolveGuaranteeWithheld` after
    /// its grace unless someone records the outcome with the locks first (ADR 0026).
    pub withheld: Option<crate::node::chain::WithheldLocks>,
    /// Hub: the hubs after us toward B, each with the opening fee A pays it (passed on with
    /// the guarantee of our leg toward the next one); empty when B is our peer.
    pub onward: Vec<(Address, Amount)>,
}

/// The payment records of a node: routes, forwards, invoices, payments, hubs' policies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Book {
    /// Route instructions waiting for their HTLC.
    pub routes: BTreeMap<(ChannelId, HtlcId), Route>,
    /// Forwards by outgoing HTLC.
    pub forwards: BTreeMap<(ChannelId, HtlcId), ForwardRecord>,
    /// Incoming HTLCs forwarded, with their outgoing HTLC.
    pub forwarded_in: BTreeMap<(ChannelId, HtlcId), (ChannelId, HtlcId)>,
    /// Our invoices.
    pub invoices: BTreeMap<Hashlock, InvoiceRecord>,
    /// Our payments by id.
    pub payments: BTreeMap<B256, PaymentRecord>,
    /// Policies hubs announced to us.
    pub policies: BTreeMap<Address, ForwardPolicy>,
    /// Public keys of the nodes we may route through, checked against their addresses.
    pub node_keys: BTreeMap<Address, PublicKey>,
    /// Announced channels we believe, with their policies (module `gossip`).
    pub gossip: BTreeMap<ChannelId, crate::node::gossip::GossipChannel>,
    /// Channels watched for clients (a watchtower's).
    pub watched: BTreeMap<ChannelId, crate::node::tower::Watched>,
    /// Virtual channels we take part in.
    pub virtuals: BTreeMap<ChannelId, VirtualRecord>,
    /// The date of the newest signed policy of each virtual channel's party we took.
    pub party_policy_at: BTreeMap<Address, u64>,
    /// Rules for virtual channels hubs announced to us.
    pub virtual_policies: BTreeMap<Address, VirtualPolicy>,
}

impl Book {
    /// Apply a write to the book (writes of channels, links and intents do not touch it).
    pub fn apply(&mut self, w: &Write) {
        match w {
            Write::Route { key, route } => match route {
                Some(r) => {
                    self.routes.insert(*key, r.clone());
                }
                None => {
                    self.routes.remove(key);
                }
            },
            Write::Forward { out, record } => {
                self.forwards.insert(*out, record.clone());
            }
            Write::ForwardedIn { incoming, out } => {
                self.forwarded_in.insert(*incoming, *out);
            }
            Write::Invoice { hashlock, record } => {
                self.invoices.insert(*hashlock, (**record).clone());
            }
            Write::Payment { record } => {
                self.payments.insert(record.id, (**record).clone());
            }
            Write::Policy { peer, policy } => {
                self.policies.insert(*peer, *policy);
            }
            Write::NodeKey { node, key } => {
                self.node_keys.insert(*node, *key);
            }
            Write::Gossip { id, record } => match record {
                Some(c) => {
                    self.gossip.insert(*id, (**c).clone());
                }
                None => {
                    self.gossip.remove(id);
                }
            },
            Write::Watched { id, record } => match record {
                Some(w) => {
                    self.watched.insert(*id, (**w).clone());
                }
                None => {
                    self.watched.remove(id);
                }
            },
            Write::Virtual { id, record } => {
                self.virtuals.insert(*id, (**record).clone());
            }
            Write::PartyPolicyAt { peer, timestamp } => {
                self.party_policy_at.insert(*peer, *timestamp);
            }
            Write::VirtualPolicy { peer, policy } => {
                self.virtual_policies.insert(*peer, *policy);
            }
            Write::Channel { .. }
            | Write::ForgetChannel { .. }
            | Write::Sent { .. }
            | Write::Acked { .. }
            | Write::Received { .. }
            | Write::Intent(_) => {}
        }
    }
}

/// Everything a node's writes leave on disk: what [`super::Node::restore`] starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    /// Channels by id.
    pub channels: BTreeMap<ChannelId, ChannelRecord>,
    /// Links by peer.
    pub links: BTreeMap<Address, LinkRecord>,
    /// The payment records.
    pub book: Book,
}

impl Records {
    /// Apply one write of `node`'s latest step, as a store does (intents are the chain
    /// sender's, not part of the node's records).
    pub fn apply(&mut self, w: &Write, node: &super::Node) {
        match w {
            Write::Channel { id } => {
                if let Some(record) = node.channel_record(*id) {
                    self.channels.insert(*id, record);
                }
            }
            Write::ForgetChannel { id } => {
                self.channels.remove(id);
            }
            Write::Sent { peer, seq } => {
                let l = self.links.entry(*peer).or_default();
                l.next_send = l.next_send.max(seq.saturating_add(1));
                if let Some(body) = node.unacked(*peer, *seq) {
                    l.unacked.insert(*seq, body.clone());
                }
            }
            Write::Acked { peer, seqs } => {
                if let Some(l) = self.links.get_mut(peer) {
                    l.unacked.retain(|s, _| !seqs.contains(s));
                }
            }
            Write::Received { peer, seq } => {
                let l = self.links.entry(*peer).or_default();
                l.received = l.received.max(*seq);
            }
            w => self.book.apply(w),
        }
    }

    /// Apply the writes of `node`'s latest step in order.
    pub fn apply_all<'a>(&mut self, ws: impl IntoIterator<Item = &'a Write>, node: &super::Node) {
        for w in ws {
            self.apply(w, node);
        }
    }
}
