//! # htlc — the protocol core of the vhub routing hub
//!
//! Sans-I/O: amounts, ids, hashlocks, channel states, EIP-712 signed updates, the HTLC
//! lifecycle, virtual-channel guarantees and the hub's forwarding decision. Inputs go in, effects
//! come out; the caller carries them to disk, network and chain.
//!
//! This crate must never do I/O (no tokio, no sockets, no files, no clocks: time is an input),
//! never panic on input from a peer, and never produce a state that breaks conservation (rule 1
//! of DESIGN.md) or sign one it has not first handed to the caller to persist (rule 2).

pub mod amount;
pub mod eip712;
pub mod failure;
pub mod forward;
pub mod ids;
pub mod msg;
pub mod node;
pub mod onion;
pub mod ops;
pub mod sig;
pub mod state;
pub mod update;
pub mod vchan;

pub use amount::{Amount, AmountOverflow};
pub use failure::FailureReason;
pub use ids::{ChannelId, Expiry, Hashlock, HtlcId, Preimage, Side};
pub use msg::{Message, RejectReason};
pub use ops::{Deposits, Limits, Op, OpError};
pub use state::{ChannelParams, ChannelState, Guarantee, Lock};
pub use update::{Channel, CommittedHtlc, Effect, Event, ProtocolError, SignedState, Snapshot};
