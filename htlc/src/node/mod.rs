//! What a node decides, beside the channel machine: the ordered link to each peer, what to do
//! with a committed HTLC and with the outcome of one it offered, what a channel can carry out,
//! and when a lock it offered must be taken back.
//!
//! These are the protocol rules the hub, the in-process relay and the simulator share: each of
//! them drives [`crate::Channel`] machines and calls these functions, and none of them decides
//! a payment step on its own. Like the channel machine they do no I/O: they take state and
//! return what to do, and the caller persists, sends and schedules it (rule 2: persisted
//! before anything leaves).
//!
//! ```text
//!  peer frame ──► link::Inbound ──► Channel::handle ──► Effect::Event(HtlcReceived)
//!                                                           │
//!                      payment::on_committed (invoice? instruction? nothing?)
//!                       │ Claim(preimage)    │ Forward(out)          │ Fail(reason)
//!                       ▼                    ▼                       ▼
//!            Channel::fulfill_htlc   out Channel::offer_htlc   Channel::fail_htlc
//!
//!  out Channel events ──► payment::outcomes ──► ForwardRecord::learn ──► upstream step
//! ```
//!
//! | module | holds |
//! |---|---|
//! | [`machine`] | the node itself: every channel, link and payment record, inputs in, outputs out |
//! | [`message`] | what nodes say to each other: bodies, frames, refusal codes |
//! | [`invoice`] | what a payee hands its payer |
//! | [`records`] | what the node writes, and what it is restored from |
//! | [`admission`] | what a peer may open with the node, and which route instructions it may leave |
//! | [`opening`] | the opening handshake: propose, accept, countersign |
//! | [`link`] | sequence numbers, acknowledgements, duplicates and what to re-send on one peer link |
//! | [`payment`] | the payee's acceptance rule, the forwarding step, failure reasons, outcomes |
//! | [`chain`] | what the chain's figures mean: funded, collateral, challenge |
//! | [`capacity`] | what a channel can carry out under a policy, and its next lock expiry |
//! | [`gossip`] | announcements of hub-to-hub channels and their policies: what is believed |
//! | [`timers`] | per channel, when the next offered lock must be taken back |
//! | [`tower`] | the watchtower: which states it keeps for its clients, when it challenges |

pub mod admission;
pub mod capacity;
pub mod chain;
pub mod gossip;
pub mod invoice;
pub mod link;
pub mod machine;
pub mod message;
pub mod opening;
pub mod payment;
pub mod records;
pub mod timers;
pub mod tower;

pub use machine::{
    Abandoned, ChainEvent, CommandError, Config, Node, NodeEvent, NotReady, Output, PeeledAhead,
};
pub use message::{Body, ErrorCode, Frame};
pub use records::{Records, Write};

/// Fixtures shared by this module's unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::sig::Keys;
    use crate::state::ChannelParams;
    use alloy::primitives::{Address, U256};

    /// The test key made of `byte`.
    pub(crate) fn keys(byte: u8) -> Keys {
        Keys::from_bytes([byte; 32]).expect("a valid test scalar")
    }

    /// An ETH channel between `a` (A) and `b` (B) on a test chain, with `nonce`.
    pub(crate) fn params(a: &Keys, b: &Keys, nonce: u64) -> ChannelParams {
        ChannelParams {
            chain_id: 1,
            adjudicator: Address::repeat_byte(0xAD),
            participants: [a.address(), b.address()],
            asset: Address::ZERO,
            challenge_duration: 3600,
            nonce: U256::from(nonce),
        }
    }
}
