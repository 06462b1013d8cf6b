//! Messages of the two-party update protocol.
//!
//! ```text
//!  proposer                                   counterparty
//!     | Propose{version v, ops, sig_p(S_v)}  ----> |  validate ops on latest co-signed state,
//!     |                                            |  verify sig_p, persist S_v + both sigs
//!     | <---- Accept{v, sig_c(S_v)}                |  (or Reject{v, reason}: nothing changes)
//!  verify sig_c, persist S_v + both sigs
//! ```
//!
//! `S_v` is never sent: both sides compute it from the operations, so a disagreement shows up as
//! a signature that does not verify.

use crate::ids::ChannelId;
use crate::ops::{Op, OpError};
use alloy::primitives::Signature;
use serde::{Deserialize, Serialize};

/// A message of the update protocol, for one channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A batch of operations and the proposer's signature on the resulting state.
    Propose {
        /// The channel.
        channel_id: ChannelId,
        /// Version of the resulting state.
        version: u64,
        /// The operations, applied in order on the latest co-signed state.
        ops: Vec<Op>,
        /// The proposer's signature on the resulting state.
        sig: Signature,
    },
    /// The counterparty's signature on the proposed state: it is now co-signed.
    Accept {
        /// The channel.
        channel_id: ChannelId,
        /// Version accepted.
        version: u64,
        /// The counterparty's signature on the state of that version.
        sig: Signature,
    },
    /// The proposal was refused; the latest co-signed state stays as it was.
    Reject {
        /// The channel.
        channel_id: ChannelId,
        /// Version refused.
        version: u64,
        /// Why.
        reason: RejectReason,
    },
}

impl Message {
    /// The channel this message is for.
    pub fn channel_id(&self) -> ChannelId {
        match self {
            Message::Propose { channel_id, .. }
            | Message::Accept { channel_id, .. }
            | Message::Reject { channel_id, .. } => *channel_id,
        }
    }
}

/// Why a proposal was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RejectReason {
    /// Both sides proposed at once; see ADR 0003. The leader (A) re-proposes, the follower waits.
    #[error("concurrent proposals")]
    Conflict,
    /// The version is not above every version the counterparty has signed, or jumps too far.
    #[error("bad version; the next acceptable version is {min}")]
    BadVersion {
        /// The lowest version the counterparty would accept.
        min: u64,
    },
    /// An operation is invalid.
    #[error("operation {index} invalid: {error}")]
    InvalidOp {
        /// Position of the operation in the batch.
        index: usize,
        /// What is wrong with it.
        error: OpError,
    },
    /// The proposer's signature does not verify on the state the operations produce.
    #[error("bad signature")]
    BadSignature,
}
