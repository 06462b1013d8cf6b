//! Fixed-point helpers of the scorer (a leaf: it uses nothing else of the crate).

/// `log2(x)` in fixed point with 16 fractional bits, for `x >= 1`, by linear interpolation
/// between powers of two (Mitchell's approximation, error below 0.09 bit). Non-decreasing in `x`.
#[inline]
pub(crate) fn log2_fixed(x: u128) -> u32 {
    if x == 0 {
        return 0;
    }
    let k = 127 - x.leading_zeros();
    // The 16 bits after the leading one: the linear part of the mantissa.
    let frac = if k >= 16 {
        (x >> (k - 16)) as u32 & 0xFFFF
    } else {
        (x << (16 - k)) as u32 & 0xFFFF
    };
    (k << 16) | frac
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(testkit::config(256))]

        #[test]
        fn log2_is_monotone_and_close(x in 1u128.., y in 1u128..) {
            let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
            prop_assert!(log2_fixed(lo) <= log2_fixed(hi));
            let exact = (x as f64).log2();
            let approx = f64::from(log2_fixed(x)) / 65536.0;
            prop_assert!((exact - approx).abs() < 0.1, "{exact} vs {approx}");
        }
    }
}
