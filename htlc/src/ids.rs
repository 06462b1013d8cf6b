//! Identifiers and small value types: sides, HTLC ids, hashlocks, preimages, expiries.

use alloy::primitives::B256;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Which of the two participants of a channel: A (index 0) or B (index 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Side {
    /// Participant A, index 0 (the channel's leader when both sides propose at once).
    A,
    /// Participant B, index 1.
    B,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// Index into two-element arrays (`A` = 0, `B` = 1); also the on-chain `sender` encoding.
    pub fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

/// A channel id: `keccak256` over the channel's parameters (see [`crate::ChannelParams::id`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChannelId(pub B256);

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The id of an HTLC lock inside one channel. Ids are allocated by the offering side from its own
/// counter (A uses even ids, B odd ids), so both sides can add locks without colliding, and an id
/// is never reused in the life of a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HtlcId(pub u64);

/// Point in time, in unix seconds, compared with the chain's `block.timestamp`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Expiry(pub u64);

/// A 32-byte secret whose sha256 is a [`Hashlock`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Preimage(pub [u8; 32]);

impl Preimage {
    /// The hashlock this preimage opens: `sha256(preimage)`.
    pub fn hashlock(&self) -> Hashlock {
        Hashlock(B256::from_slice(&Sha256::digest(self.0)))
    }
}

impl fmt::Debug for Preimage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret in logs; print what it opens instead.
        write!(f, "Preimage(opens {})", self.hashlock().0)
    }
}

/// `sha256(preimage)`: the condition of an HTLC lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hashlock(pub B256);

impl Hashlock {
    /// Whether `preimage` opens this lock.
    pub fn is_opened_by(&self, preimage: &Preimage) -> bool {
        preimage.hashlock() == *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashlock_is_sha256_of_preimage() {
        // sha256 of 32 zero bytes, a well-known constant.
        let h = Preimage([0u8; 32]).hashlock();
        assert_eq!(
            format!("{}", h.0),
            "0x66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        assert!(h.is_opened_by(&Preimage([0u8; 32])));
        assert!(!h.is_opened_by(&Preimage([1u8; 32])));
    }
}
