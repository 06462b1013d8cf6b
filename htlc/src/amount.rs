//! Amounts of the channel's asset, in its smallest unit (wei for ETH), with checked arithmetic.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount of the channel's asset in its smallest unit (wei for ETH, base units for an ERC-20).
///
/// Off chain every amount fits `u128` (3.4e38 wei, far above all ether in existence); the
/// contract stores `uint256`. All arithmetic is checked: there is no operator overloading, so an
/// overflow can only surface as [`AmountOverflow`], never wrap silently.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Amount(pub u128);

/// An arithmetic operation on amounts would overflow or underflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("amount arithmetic overflowed")]
pub struct AmountOverflow;

impl Amount {
    /// Zero.
    pub const ZERO: Amount = Amount(0);
    /// The largest representable amount.
    pub const MAX: Amount = Amount(u128::MAX);

    /// `self + rhs`, or an error on overflow.
    pub fn checked_add(self, rhs: Amount) -> Result<Amount, AmountOverflow> {
        self.0.checked_add(rhs.0).map(Amount).ok_or(AmountOverflow)
    }

    /// `self - rhs`, or an error if `rhs > self`.
    pub fn checked_sub(self, rhs: Amount) -> Result<Amount, AmountOverflow> {
        self.0.checked_sub(rhs.0).map(Amount).ok_or(AmountOverflow)
    }

    /// Sum of an iterator of amounts, or an error on overflow.
    pub fn checked_sum<I: IntoIterator<Item = Amount>>(items: I) -> Result<Amount, AmountOverflow> {
        items
            .into_iter()
            .try_fold(Amount::ZERO, |acc, a| acc.checked_add(a))
    }

    /// The proportional part `self * ppm / 1_000_000`, rounded down, computed without overflow
    /// for every `u128` amount and `u32` rate.
    pub fn ppm(self, ppm: u32) -> Amount {
        // Amounts that fit u64 (nearly all): the divisions by the constant compile to
        // multiplications. r < 1e6 and ppm < 2^32, so r * ppm < 2^52 fits u64, and
        // q * ppm < 2^96 fits u128. The router prices every edge with this.
        if let Ok(a) = u64::try_from(self.0) {
            let (q, r) = (a / 1_000_000, a % 1_000_000);
            return Amount(
                u128::from(q) * u128::from(ppm) + u128::from(r * u64::from(ppm) / 1_000_000),
            );
        }
        // (q * 1e6 + r) * ppm / 1e6 = q * ppm + r * ppm / 1e6; q * ppm <= u128::MAX / 1e6 * 2^32
        // can still overflow for amounts near u128::MAX, so saturate: a saturated fee makes the
        // forwarding check fail closed rather than pass.
        let q = self.0 / 1_000_000;
        let r = self.0 % 1_000_000;
        let whole = q.saturating_mul(u128::from(ppm));
        // r < 1e6 and ppm < 2^32 so r * ppm < 2^52: cannot overflow.
        let frac = r * u128::from(ppm) / 1_000_000;
        Amount(whole.saturating_add(frac))
    }

    /// Whether the amount is zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u128> for Amount {
    fn from(v: u128) -> Self {
        Amount(v)
    }
}

impl From<u64> for Amount {
    fn from(v: u64) -> Self {
        Amount(u128::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn overflow_is_an_error() {
        assert_eq!(Amount::MAX.checked_add(Amount(1)), Err(AmountOverflow));
        assert_eq!(Amount(1).checked_sub(Amount(2)), Err(AmountOverflow));
        assert_eq!(
            Amount::checked_sum([Amount::MAX, Amount(1)]),
            Err(AmountOverflow)
        );
    }

    proptest! {
        #![proptest_config(testkit::config(256))]

        #[test]
        fn ppm_matches_wide_arithmetic(a in any::<u64>(), ppm in any::<u32>()) {
            let exact = u128::from(a) * u128::from(ppm) / 1_000_000;
            prop_assert_eq!(Amount::from(a).ppm(ppm), Amount(exact));
        }

        /// Every amount: exact, or `u128::MAX` where the exact value does not fit (never a
        /// wrapped, small fee).
        #[test]
        fn ppm_above_u64_is_exact_or_saturates(a in any::<u128>(), ppm in any::<u32>()) {
            use alloy::primitives::U256;
            let exact = U256::from(a) * U256::from(ppm) / U256::from(1_000_000u64);
            let want = u128::try_from(exact).unwrap_or(u128::MAX);
            prop_assert_eq!(Amount(a).ppm(ppm), Amount(want));
        }
    }
}
