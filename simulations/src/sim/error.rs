//! The simulator's typed errors: what was wrong with the input, or (never expected) an internal
//! invariant that broke. Nothing in the library panics on input; everything lands here.

use htlc::ops::OpError;
use router::io::GraphFileError;
use router::{GraphError, RouteError};

/// A scenario, network or activity description was refused, or a run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario is not valid JSON, or not in the expected shape (the message names the
    /// field and position).
    #[error("scenario JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The network file or inline network was refused by the router's reader.
    #[error("network: {0}")]
    Network(#[from] GraphFileError),
    /// A graph update was refused (for example a hub policy the router finds invalid).
    #[error("network graph: {0}")]
    Graph(#[from] GraphError),
    /// The scenario names a network file but none was supplied (the caller reads the file).
    #[error("the scenario names network file {0:?} but its contents were not supplied")]
    MissingNetworkFile(String),
    /// The scenario has no network, or more than one.
    #[error(
        "the scenario must give exactly one network: `network` (file, inline or generate) or `sim_network`"
    )]
    NetworkChoice,
    /// The network has no channels.
    #[error("the network has no channels")]
    EmptyNetwork,
    /// A node reference (address, SimLN public key, alias or `#index`) matches no node.
    #[error("{context}: unknown node {reference:?}")]
    UnknownNode {
        /// The reference as written.
        reference: String,
        /// Where it was written.
        context: String,
    },
    /// An amount that is zero or negative where a positive one is required.
    #[error("{field}: amount must be positive, got {value}")]
    NonPositiveAmount {
        /// The field.
        field: String,
        /// The value given.
        value: i128,
    },
    /// A configuration value out of its allowed range.
    #[error("{field}: {reason}")]
    InvalidValue {
        /// The field.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The activity would never end (a flow without `count` and no duration or payment limit).
    #[error(
        "the activity never ends: give simulation.duration_secs or simulation.max_payments, or a count for every flow"
    )]
    Unbounded,
    /// The scenario describes no payments at all.
    #[error("the scenario has no activity: give `activity` flows or `random_activity`")]
    NoActivity,
    /// A virtual channel could not be funded along its path.
    #[error("virtual channel: {0}")]
    VirtualChannel(String),
    /// Drawing a plot failed.
    #[error("plot: {0}")]
    Plot(String),
    /// A route the router returned could not be used as the simulator expected (never expected:
    /// the router vouches for its routes).
    #[error("internal: route: {0}")]
    Route(#[from] RouteError),
    /// A protocol operation that the simulator's own bookkeeping guarantees valid was refused
    /// (never expected; it would mean the ledger and the simulator disagree).
    #[error("internal: channel operation refused: {0}")]
    Op(#[from] OpError),
    /// A protocol machine refused a message the simulator delivered in order (never expected).
    #[error("internal: protocol: {0}")]
    Protocol(#[from] htlc::ProtocolError),
    /// An amount sum overflowed `u128`.
    #[error("amount arithmetic overflowed")]
    Overflow,
    /// Any other broken internal invariant (never expected).
    #[error("internal: {0}")]
    Internal(&'static str),
}

impl From<htlc::AmountOverflow> for SimError {
    fn from(_: htlc::AmountOverflow) -> Self {
        SimError::Overflow
    }
}

/// `field: reason` as an [`SimError::InvalidValue`].
pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> SimError {
    SimError::InvalidValue {
        field: field.to_owned(),
        reason: reason.into(),
    }
}
