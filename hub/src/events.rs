//! What the node tells its application (and its metrics): a leaf module, so anything may
//! listen without depending on the node.

use crate::wire::ErrorCode;
use alloy::primitives::Address;
use htlc::{Amount, ChannelId};

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
    /// A virtual channel we take part in carries payments (ADR 0026).
    VirtualOpened {
        /// The virtual channel.
        channel_id: ChannelId,
        /// The other party (its A, for its hub).
        peer: Address,
    },
    /// A virtual channel outlived its end without being settled (the hub: its parties did not
    /// close it; a party: the hub did not settle it); our `ledger` that locks its guarantee
    /// goes on chain to settle it there (ADR 0026).
    VirtualExpired {
        /// The virtual channel.
        channel_id: ChannelId,
        /// Our ledger closed on chain.
        ledger: ChannelId,
    },
    /// Hub of a chain: the next hub neither completed nor refused our release of the leg we
    /// share in time; our `ledger` with it goes on chain (ADR 0026).
    VirtualReleaseStalled {
        /// The virtual channel.
        channel_id: ChannelId,
        /// Our ledger with the next hub, closed on chain.
        ledger: ChannelId,
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
    /// The chain watcher failed (the chain or the store) and starts again from its stored
    /// cursor after `retry_in_ms` (doubling up to 30 s while it keeps failing).
    WatcherRestarting {
        /// What failed.
        error: String,
        /// Milliseconds until it starts again.
        retry_in_ms: u64,
    },
    /// The block the watcher last read is no longer on the chain: a reorganisation deeper
    /// than the confirmations it waits for. It reads again from block `from` and re-checks
    /// every channel's deposits.
    ChainReorganised {
        /// The first block read again.
        from: u64,
    },
    /// A chain intent can never take effect and was dropped (operator attention needed).
    IntentDropped {
        /// The channel (none for a claim of deferred payouts).
        channel_id: Option<ChannelId>,
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
    /// A session with a peer ended.
    Disconnected {
        /// The peer.
        peer: Address,
        /// The peer closed it (a clean shutdown or a newer session), rather than the
        /// connection timing out or our side ending it.
        by_peer: bool,
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

impl NodeEvent {
    /// The event the operator sees for what the node machine reports, if any (the rest is
    /// logged only).
    pub fn from_decided(ev: htlc::node::NodeEvent) -> Option<NodeEvent> {
        use htlc::node::NodeEvent as D;
        Some(match ev {
            D::ChannelOpened { channel_id, peer } => NodeEvent::ChannelOpened { channel_id, peer },
            D::VirtualOpened { channel_id, peer } => NodeEvent::VirtualOpened { channel_id, peer },
            D::VirtualExpired { channel_id, ledger } => {
                NodeEvent::VirtualExpired { channel_id, ledger }
            }
            D::VirtualReleaseStalled { channel_id, ledger } => {
                NodeEvent::VirtualReleaseStalled { channel_id, ledger }
            }
            D::Committed {
                channel_id,
                version,
            } => NodeEvent::Committed {
                channel_id,
                version,
            },
            D::Closed { channel_id } => NodeEvent::Closed { channel_id },
            D::Refused { peer, code } => NodeEvent::Refused { peer, code },
            D::Funded { channel_id } => NodeEvent::Funded { channel_id },
            D::ToppedUp { channel_id, amount } => NodeEvent::ToppedUp { channel_id, amount },
            D::Concluded {
                channel_id,
                to_a,
                to_b,
            } => NodeEvent::Concluded {
                channel_id,
                to_a,
                to_b,
            },
            D::Challenged {
                channel_id,
                disputed,
                ours,
            } => NodeEvent::Challenged {
                channel_id,
                disputed,
                ours,
            },
            D::PaymentSucceeded { id, fee } => NodeEvent::PaymentSucceeded { id, fee },
            D::PaymentFailed { id, reason } => NodeEvent::PaymentFailed { id, reason },
            D::PaymentReceived { hashlock, amount } => {
                NodeEvent::PaymentReceived { hashlock, amount }
            }
            D::Forwarded {
                in_channel,
                out_channel,
                fee,
            } => NodeEvent::Forwarded {
                in_channel,
                out_channel,
                fee,
            },
            D::Holding { hashlock } => NodeEvent::Holding { hashlock },
            D::RefusedByPeer { peer, code, detail } => {
                NodeEvent::RefusedByPeer { peer, code, detail }
            }
            D::ForwardFailed { .. }
            | D::PeerStuck { .. }
            | D::OpDropped { .. }
            | D::VirtualSettled { .. }
            | D::MustClaimOnChain { .. } => return None,
        })
    }
}
