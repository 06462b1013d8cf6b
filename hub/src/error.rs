//! The node's error type: what went wrong in a request or a step, typed by where it failed.

use crate::store::StoreError;
use crate::transport;
use htlc::ChannelId;

/// Node errors.
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
    /// A chain transaction failed (its own message says where: "chain: ...", "store: ...").
    #[error(transparent)]
    Tx(#[from] crate::chain::TxError),
    /// A peer's channel opening is refused.
    #[error("open refused: {0}")]
    Open(#[from] htlc::node::admission::OpenRefusal),
    /// A payment cannot be made through the hub as asked.
    #[error(transparent)]
    Plan(#[from] htlc::node::payment::PlanError),
    /// A frame could not be encoded.
    #[error("wire: {0}")]
    Wire(#[from] crate::wire::WireError),
    /// A payment or invoice request that cannot be carried out.
    #[error("{0}")]
    Pay(#[from] PayError),
    /// The channel is not at the stage the request needs.
    #[error("channel {channel}: {stage}")]
    NotReady {
        /// The channel.
        channel: ChannelId,
        /// What it still lacks.
        stage: Stage,
    },
    /// An amount of zero where a positive one is needed.
    #[error("a positive amount is needed")]
    ZeroAmount,
    /// An amount overflows.
    #[error("amount overflows")]
    Overflow,
    /// The peer refused what we asked of it.
    #[error("the peer refused ({code:?}): {detail}")]
    RefusedByPeer {
        /// Its error code.
        code: crate::wire::ErrorCode,
        /// Its explanation.
        detail: String,
    },
    /// No session with this peer is up.
    #[error("not connected to {0} (connect to it first: [[connect]] in the config)")]
    NotConnected(alloy::primitives::Address),
    /// The node is stopping.
    #[error("node stopped")]
    Stopped,
    /// A socket could not be bound or read.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The store was written by a newer hub.
    #[error(transparent)]
    Schema(#[from] crate::persist::SchemaError),
    /// A command the node machine refused for another reason.
    #[error("{0}")]
    Command(htlc::node::CommandError),
    /// The node's metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] crate::metrics::MetricsError),
}

impl From<htlc::node::CommandError> for NodeError {
    fn from(e: htlc::node::CommandError) -> NodeError {
        use htlc::node::CommandError as C;
        match e {
            C::UnknownChannel(id) => NodeError::UnknownChannel(id),
            C::NotReady(channel, why) => NodeError::NotReady {
                channel,
                stage: match why {
                    htlc::node::NotReady::AwaitingCountersignature => {
                        Stage::AwaitingCountersignature
                    }
                    htlc::node::NotReady::NotFunded => Stage::NotFunded,
                },
            },
            C::ZeroAmount => NodeError::ZeroAmount,
            C::NoChannel(hub) => PayError::NoChannel(hub).into(),
            C::NoPolicy(hub) => PayError::NoPolicy(hub).into(),
            C::Expired => PayError::Expired.into(),
            C::OwnInvoice => PayError::OwnInvoice.into(),
            C::Plan(e) => NodeError::Plan(e),
            C::Protocol(htlc::ProtocolError::Overflow) => NodeError::Overflow,
            C::Protocol(e) => NodeError::Protocol(e),
            e @ (C::ChannelExists(_)
            | C::NotAbandoned(_)
            | C::NoNodeKey(_)
            | C::LifetimeTooShort { .. }
            | C::Onion(_)
            | C::PlanMismatch { .. }
            | C::PartsMismatch { .. }
            | C::ForeignInvoice) => NodeError::Command(e),
        }
    }
}

/// What a channel still lacks for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Stage {
    /// We opened it and the peer has not countersigned the opening state.
    #[error("the peer has not countersigned the opening yet")]
    AwaitingCountersignature,
    /// Its opening deposits are not seen on chain yet.
    #[error("the channel is not funded yet")]
    NotFunded,
    /// The adjudicator does not hold the opening deposits.
    #[error("the adjudicator does not hold the opening deposits")]
    DepositsMissing,
    /// Its final state is not co-signed yet.
    #[error("the channel's final state is not co-signed yet")]
    NotFinal,
}

/// Why a payment or an invoice cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayError {
    /// The invoice expired.
    #[error("the invoice has expired")]
    Expired,
    /// Paying ourselves.
    #[error("cannot pay our own invoice")]
    OwnInvoice,
    /// No policy known from the invoice's hub: we have never had a channel with it.
    #[error("no channel with hub {0} (no policy known)")]
    NoPolicy(alloy::primitives::Address),
    /// No open, funded channel with the invoice's hub.
    #[error("no open channel with hub {0}")]
    NoChannel(alloy::primitives::Address),
    /// The invoice's hub is not ours and the known network has no route to it.
    #[error("{0}")]
    NoRoute(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_one_prefix() {
        let e = NodeError::from(crate::chain::TxError::Stale("token refuses".into()));
        assert_eq!(e.to_string(), "intent can no longer apply: token refuses");
        let e = NodeError::from(crate::chain::TxError::NoChain);
        assert_eq!(e.to_string(), "no chain configured");
    }
}
