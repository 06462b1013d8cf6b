//! # contracts — the chain side of vhub
//!
//! The Solidity [`Adjudicator`](bindings::Adjudicator) (deposits of many two-party channels in
//! ETH or ERC-20; cooperative close; unilateral close with a challenge window; challenge;
//! conclude; HTLC locks settled against the [`SecretRegistry`](bindings::SecretRegistry);
//! guarantees for virtual channels), its sources in `sol/`, the artifacts `scripts/compile.sh`
//! compiles with the pinned solc into `artifacts/` (committed, checked by CI), the alloy
//! bindings generated from those artifacts, a deploy helper, a local [`devnet`], and the
//! [`ChainClient`] the hub uses, with an [`EventWatcher`] for its watchtower.
//!
//! What this crate must never do:
//! - re-implement the state format: channel ids, lock leaves, Merkle proofs and EIP-712 digests
//!   come from `htlc` (ADR 0002); the contract mirrors them and the tests prove they agree;
//! - sign states or hold channel policy: signatures are made by `htlc` and passed in;
//! - hide a revert: every refusal comes back as a [`Revert`] decoded to the contract's custom
//!   error;
//! - panic on input from the chain or the caller.

pub mod bindings;
pub mod client;
pub mod convert;
pub mod deploy;
pub mod devnet;
pub mod error;
pub mod events;

pub use client::{ChainClient, OnChainChannel, Phase, TxOutcome, TxPolicy, http_provider};
pub use deploy::Deployment;
pub use devnet::Devnet;
pub use error::{ChainError, Revert};
pub use events::{ChainEvent, EventKind, EventWatcher};
