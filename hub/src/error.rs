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
    /// A chain transaction failed.
    #[error("chain: {0}")]
    Tx(#[from] crate::chain::TxError),
    /// A payment cannot be made through the hub as asked.
    #[error(transparent)]
    Plan(#[from] htlc::node::payment::PlanError),
    /// A frame could not be encoded.
    #[error("wire: {0}")]
    Wire(#[from] crate::wire::WireError),
    /// The request is invalid.
    #[error("invalid request: {0}")]
    Invalid(String),
}
