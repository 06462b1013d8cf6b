//! Why an HTLC failed: the reason travels back to the payer so its scorer can learn (LDK's
//! taxonomy, trimmed to what a hub of this design can produce).

use serde::{Deserialize, Serialize};

/// The reason an HTLC was failed, sent back toward the payer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum FailureReason {
    /// The fee left by the incoming HTLC is below the outgoing channel's policy.
    #[error("fee insufficient")]
    FeeInsufficient,
    /// The outgoing expiry leaves too little time before it passes to claim on chain.
    #[error("expiry too soon")]
    ExpiryTooSoon,
    /// The outgoing expiry is further away than the hub is willing to lock funds for.
    #[error("expiry too far")]
    ExpiryTooFar,
    /// `incoming_expiry - outgoing_expiry` is below the outgoing channel's expiry delta.
    #[error("incorrect expiry delta")]
    IncorrectExpiryDelta,
    /// The amount is below the outgoing channel's minimum HTLC.
    #[error("amount below minimum")]
    AmountBelowMinimum,
    /// The outgoing channel cannot carry the HTLC now (liquidity, lock slots, disabled, limits).
    #[error("temporary channel failure")]
    TemporaryChannelFailure,
    /// The hub has no channel to the requested next hop.
    #[error("unknown next peer")]
    UnknownNextPeer,
    /// The payee does not know the payment (no invoice for this hashlock, wrong amount).
    #[error("incorrect or unknown payment details")]
    IncorrectPaymentDetails,
    /// The payee's invoice expired, or the final hop's expiry is too close.
    #[error("final expiry too soon")]
    FinalExpiryTooSoon,
    /// The next node could not read its onion layer (its MAC failed or it did not decode); the
    /// node before it reports this, since only the payer and the reader share the layer's key.
    #[error("invalid onion")]
    InvalidOnion,
    /// The payee held parts of a multi-path payment that never added up to the invoice in
    /// time: every part is failed back.
    #[error("multi-path payment timed out")]
    MppTimeout,
}

impl FailureReason {
    /// Compact wire code of this reason.
    pub fn code(self) -> u16 {
        match self {
            FailureReason::FeeInsufficient => 1,
            FailureReason::ExpiryTooSoon => 2,
            FailureReason::ExpiryTooFar => 3,
            FailureReason::IncorrectExpiryDelta => 4,
            FailureReason::AmountBelowMinimum => 5,
            FailureReason::TemporaryChannelFailure => 6,
            FailureReason::UnknownNextPeer => 7,
            FailureReason::IncorrectPaymentDetails => 8,
            FailureReason::FinalExpiryTooSoon => 9,
            FailureReason::InvalidOnion => 10,
            FailureReason::MppTimeout => 11,
        }
    }

    /// The reason with this wire code, if any.
    pub fn from_code(code: u16) -> Option<Self> {
        Some(match code {
            1 => FailureReason::FeeInsufficient,
            2 => FailureReason::ExpiryTooSoon,
            3 => FailureReason::ExpiryTooFar,
            4 => FailureReason::IncorrectExpiryDelta,
            5 => FailureReason::AmountBelowMinimum,
            6 => FailureReason::TemporaryChannelFailure,
            7 => FailureReason::UnknownNextPeer,
            8 => FailureReason::IncorrectPaymentDetails,
            9 => FailureReason::FinalExpiryTooSoon,
            10 => FailureReason::InvalidOnion,
            11 => FailureReason::MppTimeout,
            _ => return None,
        })
    }

    /// Whether the failure says something about a channel's liquidity (the scorer learns from it)
    /// rather than about the payment's parameters.
    pub fn is_liquidity(self) -> bool {
        matches!(self, FailureReason::TemporaryChannelFailure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 0..20 {
            if let Some(r) = FailureReason::from_code(code) {
                assert_eq!(r.code(), code);
            }
        }
        assert_eq!(FailureReason::from_code(0), None);
        assert_eq!(
            FailureReason::from_code(9),
            Some(FailureReason::FinalExpiryTooSoon)
        );
    }
}
