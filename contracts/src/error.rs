//! Errors of the chain client, with reverts decoded into the contracts' custom errors.

use crate::bindings::Adjudicator::AdjudicatorErrors;
use alloy::primitives::{Address, Bytes, TxHash, U256};
use alloy::sol_types::{Panic, Revert as RevertString, SolError, SolInterface};
use htlc::{AmountOverflow, ChannelId, HtlcId};
use std::fmt;

/// Why a call or transaction was reverted by the EVM, decoded from its revert data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revert {
    /// One of the adjudicator's custom errors (see `sol/Adjudicator.sol`), with its arguments.
    Adjudicator(AdjudicatorErrors),
    /// `Error(string)`: a `require` message (from a token, for instance).
    Message(String),
    /// `Panic(uint256)`: an assertion, arithmetic or array-bounds failure.
    Panic(U256),
    /// Revert data that matches none of the above (empty for a bare `revert()`).
    Unknown(Bytes),
}

impl Revert {
    /// Decode revert data.
    pub fn decode(data: &[u8]) -> Self {
        if let Ok(e) = AdjudicatorErrors::abi_decode(data) {
            return Revert::Adjudicator(e);
        }
        if let Ok(r) = RevertString::abi_decode(data) {
            return Revert::Message(r.reason);
        }
        if let Ok(p) = Panic::abi_decode(data) {
            return Revert::Panic(p.code);
        }
        Revert::Unknown(Bytes::copy_from_slice(data))
    }

    /// The adjudicator's custom error, if that is what this is.
    pub fn adjudicator(&self) -> Option<&AdjudicatorErrors> {
        match self {
            Revert::Adjudicator(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for Revert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The Debug form names the error and every argument, e.g.
            // `StaleVersion(StaleVersion { submitted: 3, recorded: 5 })`.
            Revert::Adjudicator(e) => write!(f, "Adjudicator.{e:?}"),
            Revert::Message(m) => write!(f, "Error({m:?})"),
            Revert::Panic(code) => write!(f, "Panic({code:#x})"),
            Revert::Unknown(data) if data.is_empty() => write!(f, "revert without data"),
            Revert::Unknown(data) => write!(f, "unknown revert data {data}"),
        }
    }
}

/// Everything that can go wrong talking to the chain.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The node refused the call or transaction because the EVM reverted (seen when the call is
    /// simulated or its gas estimated, before anything is broadcast).
    #[error("reverted: {0}")]
    Reverted(Revert),
    /// The transaction was mined but failed (it passed simulation, then the chain changed).
    #[error("transaction {0} was mined but reverted")]
    Failed(TxHash),
    /// No receipt even at the highest fee the policy allows; the transaction may still land.
    #[error("transaction with nonce {nonce} not mined even at {max_fee} wei per gas")]
    Stuck {
        /// Its nonce.
        nonce: u64,
        /// The last fee offered.
        max_fee: u128,
    },
    /// The nonce was used by a transaction that is not one of this send's attempts.
    #[error("nonce {nonce} was used by another transaction")]
    Replaced {
        /// The nonce.
        nonce: u64,
    },
    /// The channel's parameters name another chain than the node's.
    #[error("channel parameters are for chain {params}, the node is on chain {node}")]
    WrongChain {
        /// Chain id in the parameters.
        params: u64,
        /// Chain id the node reports.
        node: u64,
    },
    /// The channel's parameters name another adjudicator than this client's.
    #[error("channel parameters name adjudicator {params}, this client uses {client}")]
    WrongAdjudicator {
        /// Adjudicator in the parameters.
        params: Address,
        /// Adjudicator of this client.
        client: Address,
    },
    /// The state belongs to another channel than the parameters identify.
    #[error("state is for channel {state}, the parameters identify {params}")]
    WrongChannel {
        /// Channel id inside the state.
        state: ChannelId,
        /// Channel id of the parameters.
        params: ChannelId,
    },
    /// No pending lock with this id in the state.
    #[error("no pending lock {0:?} in the state")]
    NoSuchLock(HtlcId),
    /// No guarantee for this virtual channel in the ledger state.
    #[error("no guarantee for virtual channel {0} in the ledger state")]
    NoSuchGuarantee(ChannelId),
    /// A state's amounts overflow (no state `htlc` accepts can do this).
    #[error(transparent)]
    Amount(#[from] AmountOverflow),
    /// An on-chain amount does not fit the off-chain `u128`.
    #[error("on-chain amount {0} does not fit an off-chain amount")]
    AmountTooLarge(U256),
    /// A contract call failed without revert data (ABI decoding, no code at the address, ...).
    #[error("contract call failed: {0}")]
    Contract(alloy::contract::Error),
    /// The RPC transport failed or the node answered with an error.
    #[error("rpc: {0}")]
    Rpc(alloy::transports::TransportError),
    /// Waiting for a transaction's receipt failed.
    #[error("waiting for the transaction: {0}")]
    Pending(#[from] alloy::providers::PendingTransactionError),
    /// A log of the watched contracts could not be decoded.
    #[error("undecodable log: {0}")]
    Decode(#[from] alloy::sol_types::Error),
    /// No anvil binary at this path (run `scripts/setup.sh`, or set `VHUB_ANVIL`).
    #[error("anvil not found at {0} (run scripts/setup.sh or set VHUB_ANVIL)")]
    AnvilNotFound(std::path::PathBuf),
    /// The local anvil node could not be started.
    #[error("anvil: {0}")]
    Anvil(#[from] alloy::node_bindings::NodeError),
}

impl ChainError {
    /// The decoded revert, if the EVM reverted.
    pub fn revert(&self) -> Option<&Revert> {
        match self {
            ChainError::Reverted(r) => Some(r),
            _ => None,
        }
    }

    /// The adjudicator's custom error, if the adjudicator reverted with one.
    pub fn adjudicator_error(&self) -> Option<&AdjudicatorErrors> {
        self.revert().and_then(Revert::adjudicator)
    }

    /// Whether the adjudicator reverted with the custom error `E`.
    pub fn is<E: SolError>(&self) -> bool {
        self.adjudicator_error()
            .is_some_and(|e| e.selector() == E::SELECTOR)
    }
}

impl From<alloy::contract::Error> for ChainError {
    fn from(e: alloy::contract::Error) -> Self {
        match e.as_revert_data() {
            Some(data) => ChainError::Reverted(Revert::decode(&data)),
            None => ChainError::Contract(e),
        }
    }
}

impl From<alloy::transports::TransportError> for ChainError {
    fn from(e: alloy::transports::TransportError) -> Self {
        match e.as_error_resp().and_then(|r| r.as_revert_data()) {
            Some(data) => ChainError::Reverted(Revert::decode(&data)),
            None => ChainError::Rpc(e),
        }
    }
}
