//! What nodes say to each other: the numbered messages of a link ([`Body`]), the frames that
//! carry them ([`Frame`]), and the codes of a refusal ([`ErrorCode`]).
//!
//! The variants are encoded by index (postcard on the hub's wire and in its outbox), so they
//! are only ever added at the end.

use crate::amount::Amount;
use crate::forward::ForwardPolicy;
use crate::ids::{ChannelId, Hashlock, HtlcId};
use crate::msg::Message;
use crate::onion::{ErrorPacket, Packet};
use crate::state::ChannelParams;
use crate::update::SignedState;
use crate::vchan::{VirtualPolicy, VirtualTerms};
use alloy::primitives::{Address, Signature};
use secp256k1::PublicKey;
use serde::{Deserialize, Serialize};

/// Why a frame or message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The frame's payload did not decode.
    Malformed,
    /// The frame's version is not supported.
    UnsupportedVersion,
    /// The frame exceeded the maximum size.
    TooLarge,
    /// The peer has not authenticated yet, or its proof was wrong.
    Unauthenticated,
    /// A message out of sequence.
    OutOfOrder,
    /// The message names a channel this peer does not have.
    UnknownChannel,
    /// The message was refused by the channel's protocol machine.
    Protocol,
    /// The peer sends too fast, or leaves too much waiting.
    RateLimited,
    /// The message is for a channel not yet seen funded on chain: the receiver reads the
    /// chain now and says `Funded` once it sees the deposits; the sender proposes again then.
    NotFunded,
}

/// A numbered message of a link, delivered once and in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// An update-protocol message for one channel.
    Channel(Message),
    /// Liveness probe; answered by an ack like any message.
    Ping,
    /// Ask to open a ledger channel: the parameters, the opening balances, and the opener's
    /// signature on the opening state (version 0).
    OpenChannel {
        /// Channel parameters (participants: opener, then the receiver).
        params: ChannelParams,
        /// Opening balances of A and B.
        balances: [Amount; 2],
        /// The opener's signature on the opening state.
        sig: Signature,
    },
    /// The receiver's signature on the opening state: the channel exists (funding follows).
    ChannelAccepted {
        /// The channel.
        channel_id: ChannelId,
        /// The receiver's signature on the opening state.
        sig: Signature,
    },
    /// We deposited our share of a channel's opening balances on chain: check and start using
    /// it.
    Funded {
        /// The channel.
        channel_id: ChannelId,
    },
    /// A message was well-formed and in sequence but refused; nothing changed.
    Refused {
        /// Sequence number of the refused message.
        seq: u64,
        /// Why.
        code: ErrorCode,
        /// Detail for logs.
        detail: String,
    },
    /// The hub's forwarding policy, sent to a peer whose channel it accepted (the peer routes
    /// with it, as with a BOLT 11 route hint).
    HubPolicy {
        /// Fees, expiry delta and HTLC limits of the hub's outgoing channels.
        policy: ForwardPolicy,
        /// The hub's public key (payers build its onion layer with it); its address must be
        /// the sender's.
        key: PublicKey,
    },
    /// The onion for the HTLC with `hashlock` that the sender offers on `channel_id`: our
    /// layer says what to do with it (forward, or: we are the payee). Sent before the HTLC
    /// itself; acted on once the HTLC is committed (ADR 0027).
    Route {
        /// The channel the incoming HTLC arrives on.
        channel_id: ChannelId,
        /// The HTLC's hashlock (the onion's MACs are bound to it).
        hashlock: Hashlock,
        /// The HTLC's id (several HTLCs of one hashlock, the parts of a multi-path payment,
        /// may cross one channel).
        htlc: HtlcId,
        /// The packet, our layer outermost.
        onion: Box<Packet>,
    },
    /// Our signature announcing channel `channel_id` (both participants' make the channel's
    /// announcement: module `gossip`).
    AnnounceSig {
        /// The channel (ours with the receiver).
        channel_id: ChannelId,
        /// The sender's signature over its announcement digest.
        sig: Signature,
        /// The sender's policy for its direction of the channel.
        policy: Box<crate::node::gossip::PolicyUpdate>,
    },
    /// The failure packet for our HTLC `htlc` on `channel_id`, which the sender is failing:
    /// sent before the failure's update; the payer reads which node failed and why.
    RouteFailed {
        /// The channel of the failed HTLC.
        channel_id: ChannelId,
        /// The HTLC (ours, offered to the sender).
        htlc: HtlcId,
        /// The packet, wrapped by every node on the way back.
        packet: ErrorPacket,
    },
    /// To a watchtower: the latest co-signed state of one of the sender's channels, to be
    /// answered on chain if the counterparty closes with an older one (module `tower`).
    Watch {
        /// The channel.
        params: Box<ChannelParams>,
        /// Its latest co-signed state.
        state: Box<SignedState>,
    },
    /// The hub's rules for virtual channels over it (sent with [`Body::HubPolicy`]).
    HubVirtualPolicy {
        /// Fees and limits.
        policy: VirtualPolicy,
    },
    /// To a hub: open virtual channel `terms` over our ledger `ledger` with the hub. From V's
    /// A, or from the previous hub of a chain (which stands for V's A on `ledger`). Our
    /// proposal of that ledger's guarantee (and the opening fees) follows in the same flight
    /// (ADR 0026).
    VirtualOpen {
        /// Our ledger with the hub that locks the guarantee.
        ledger: ChannelId,
        /// The virtual channel.
        terms: Box<VirtualTerms>,
        /// A's signature on its opening state.
        sig: Signature,
        /// The hubs after the receiver toward B, each with the opening fee A pays it (the
        /// receiver passes them on with its own leg's guarantee); empty: B is its peer.
        onward: Vec<(Address, Amount)>,
    },
    /// From the hub to the virtual channel's B: A asks to open `terms`; the hub's proposal of
    /// `ledger`'s guarantee follows in the same flight.
    VirtualOffer {
        /// The ledger between the hub and B that locks the guarantee.
        ledger: ChannelId,
        /// The virtual channel.
        terms: Box<VirtualTerms>,
        /// A's signature on its opening state.
        sig: Signature,
    },
    /// From B to the hub: B accepts, with its signature on the opening state.
    VirtualAccept {
        /// The virtual channel.
        channel_id: ChannelId,
        /// B's signature on the opening state.
        sig: Signature,
    },
    /// From a hub toward A (to A, or to the previous hub of a chain): B accepted; its
    /// signature on the opening state.
    VirtualAccepted {
        /// The virtual channel.
        channel_id: ChannelId,
        /// B's signature on the opening state.
        sig: Signature,
    },
    /// To the hub: pass this update-protocol message of a virtual channel over the hub to its
    /// other party `to`.
    Relay {
        /// The virtual channel's other party.
        to: Address,
        /// The message, signed by us where the protocol signs.
        msg: Message,
    },
    /// From a hub: a virtual channel's message its party `from` sent over the hub (to the
    /// other party, or to the next hub of a chain, which passes it on the same way).
    Relayed {
        /// Who sent it.
        from: Address,
        /// The message.
        msg: Message,
    },
    /// A virtual channel's party's forwarding policy for its direction of the channel, signed
    /// (the hub that relays it cannot change it), with its key: the other party may then route
    /// through it. Sent only over the hub, inside [`Body::RelayRoute`].
    PartyPolicy {
        /// The signed policy; `channel_id` is the virtual channel, `node` the party.
        update: Box<crate::node::gossip::PolicyUpdate>,
        /// The party's public key (payers build its layer with it); its address is `node`.
        key: PublicKey,
    },
    /// To the hub: pass this route instruction or failure packet (a [`Body::Route`] or
    /// [`Body::RouteFailed`] on a virtual channel) to the channel's other party `to`: an HTLC
    /// inside a virtual channel is one hop of a route (ADR 0026).
    RelayRoute {
        /// The virtual channel's other party.
        to: Address,
        /// The `Route` or `RouteFailed` body.
        body: Box<Body>,
    },
    /// From a hub: a virtual channel's route instruction or failure packet its party `from`
    /// sent over the hub (to the other party, or to the next hub of a chain, which passes it
    /// on the same way).
    RelayedRoute {
        /// Who sent it.
        from: Address,
        /// The `Route` or `RouteFailed` body.
        body: Box<Body>,
    },
    /// To a hub: a virtual channel's final state, signed by both its parties; our proposal
    /// releasing our leg's guarantee by it follows (ADR 0026). A hub of a chain passes it on
    /// to its neighbouring hubs, before it proposes anything by it.
    VirtualClose {
        /// The final state.
        final_state: Box<SignedState>,
    },
}

/// What travels on a link once both ends know each other.
// Frames go once from the decoder to the node; boxing the body would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// A numbered message; the receiver processes numbers in order and acknowledges each.
    Msg {
        /// Its number on this link, from 1.
        seq: u64,
        /// What it says.
        body: Body,
    },
    /// Every message up to `seq` was processed and its effects persisted.
    Ack {
        /// The last number processed.
        seq: u64,
    },
    /// Gossip, unnumbered and best effort (module `gossip`).
    Gossip(Box<crate::node::gossip::GossipMsg>),
    /// A refusal that is not numbered: a gap, or an answer to a peer we keep nothing for.
    Error {
        /// What was wrong.
        code: ErrorCode,
        /// Detail for logs.
        detail: String,
    },
}
