//! Liquidity scoring: what we know of each direction's liquidity, how outcomes teach us more,
//! how that knowledge fades, and how it turns into a penalty added to a route's cost.
//!
//! The model is LDK's probabilistic scorer, simplified. Each direction has bounds `[lower,
//! upper]` on the amount it can send; with nothing else known the amount is taken as uniform
//! over the bounds, so sending `x` succeeds with probability
//!
//! ```text
//! p(x) = 1                                        if x <= lower
//!        (upper + 1 - x) / (upper + 1 - lower)    if lower < x <= upper
//!        0                                        if x > upper (never routed)
//! ```
//!
//! A failure of `x` proves `liquidity < x` (the upper bound falls to `x - 1`), a success proves
//! `liquidity >= x` (the lower bound rises to `x`, and the opposite direction can send at most
//! `capacity - x`). Knowledge decays: after each half-life the lower bound halves toward 0 and
//! the gap between the upper bound and the capacity halves toward 0.
//!
//! The penalty of a hop is `base_penalty + base_penalty_ppm · x` plus `(liquidity_penalty +
//! liquidity_penalty_ppm · x) · min(-log2 p(x), max_uncertainty_bits)`. It is computed in
//! fixed point (`-log2` with 16 fractional bits, by a piecewise-linear approximation), so it is
//! deterministic across machines, cheap in the search's inner loop, and — what the search's
//! correctness relies on — **non-decreasing in the amount**.

use htlc::{Amount, ChannelId, Side};
use serde::{Deserialize, Serialize};

use crate::fixed::log2_fixed;
use crate::graph::{ChannelGraph, GraphError, Knowledge, LiquidityBounds};
use crate::route::Route;

/// Fixed-point scale of `-log2 p`: 16 fractional bits.
const LOG_ONE: u32 = 1 << 16;

/// How routes are priced beyond their fees; all amounts in the asset's smallest unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoringParams {
    /// Flat penalty per hop (prefers shorter routes when fees are equal).
    pub base_penalty: Amount,
    /// Per-hop penalty in parts per million of the amount the hop carries.
    pub base_penalty_ppm: u32,
    /// Penalty per bit of uncertainty (`-log2` of the success probability).
    pub liquidity_penalty: Amount,
    /// Penalty per bit of uncertainty, in parts per million of the amount the hop carries.
    pub liquidity_penalty_ppm: u32,
    /// Cap on the uncertainty charged for one hop, in bits (8 bits: probabilities below 1/256
    /// cost the same as 1/256).
    pub max_uncertainty_bits: u32,
}

impl Default for ScoringParams {
    /// Defaults sized for ETH amounts in wei: 1 µETH per hop plus 50 ppm, and 3 µETH plus 60 ppm
    /// per bit of uncertainty (LDK's defaults converted to bits and to ether).
    fn default() -> Self {
        ScoringParams {
            base_penalty: Amount(1_000_000_000_000),
            base_penalty_ppm: 50,
            liquidity_penalty: Amount(3_000_000_000_000),
            liquidity_penalty_ppm: 60,
            max_uncertainty_bits: 8,
        }
    }
}

impl ScoringParams {
    /// Parameters that price nothing but fees (every penalty zero).
    pub fn fees_only() -> Self {
        ScoringParams {
            base_penalty: Amount::ZERO,
            base_penalty_ppm: 0,
            liquidity_penalty: Amount::ZERO,
            liquidity_penalty_ppm: 0,
            max_uncertainty_bits: 0,
        }
    }

    /// The probability that a direction with these bounds can send `amount` more on top of
    /// `in_flight` already routed over it by the same payment (informational; the penalty uses
    /// the fixed-point form).
    pub fn success_probability(
        &self,
        bounds: LiquidityBounds,
        amount: Amount,
        in_flight: Amount,
    ) -> f64 {
        let x = amount.0.saturating_add(in_flight.0);
        if x <= bounds.lower.0 {
            1.0
        } else if x > bounds.upper.0 {
            0.0
        } else {
            // Lossy float conversion is fine here: the value is only reported, never compared.
            let num = (bounds.upper.0 - x) as f64 + 1.0;
            let den = (bounds.upper.0 - bounds.lower.0) as f64 + 1.0;
            num / den
        }
    }

    /// The penalty for a hop carrying `amount` (with `in_flight` already routed over the same
    /// direction by other parts of the payment), or `None` if the bounds rule it out.
    pub fn hop_penalty(
        &self,
        bounds: LiquidityBounds,
        amount: Amount,
        in_flight: Amount,
    ) -> Option<Amount> {
        let x = amount.0.checked_add(in_flight.0)?;
        if x > bounds.upper.0 {
            return None;
        }
        Some(Amount(self.penalty(
            amount.0,
            x,
            bounds.lower.0,
            bounds.upper.0,
        )))
    }

    /// The penalty for carrying `amount` when `total` (amount plus in-flight, `<= upper`) must fit
    /// in bounds `[lower, upper]`. Non-decreasing in `amount` and in `total`.
    #[inline]
    pub(crate) fn penalty(&self, amount: u128, total: u128, lower: u128, upper: u128) -> u128 {
        let log_width = log2_fixed(upper.saturating_sub(lower).saturating_add(1));
        self.penalty_with(self.parts(amount), total, lower, upper, log_width)
    }

    /// The parts of the penalty that depend only on the amount a hop carries: the base penalty
    /// and the penalty per bit of uncertainty (computed once per label by the search).
    #[inline]
    pub(crate) fn parts(&self, amount: u128) -> PenaltyParts {
        PenaltyParts {
            base: self
                .base_penalty
                .0
                .saturating_add(Amount(amount).ppm(self.base_penalty_ppm).0),
            per_bit: self
                .liquidity_penalty
                .0
                .saturating_add(Amount(amount).ppm(self.liquidity_penalty_ppm).0),
        }
    }

    /// The penalty from its amount-dependent `parts`, for `total` within `[lower, upper]` whose
    /// width has `log_width = log2_fixed(upper - lower + 1)`.
    #[inline]
    pub(crate) fn penalty_with(
        &self,
        parts: PenaltyParts,
        total: u128,
        lower: u128,
        upper: u128,
        log_width: u32,
    ) -> u128 {
        if total <= lower {
            return parts.base;
        }
        // lower < total <= upper, so upper - total + 1 >= 1 and it is at most the width; the
        // log is non-decreasing, so the difference is not negative.
        let num = upper.saturating_sub(total).saturating_add(1);
        let bits = log_width
            .saturating_sub(log2_fixed(num))
            .min(self.max_uncertainty_bits.saturating_mul(LOG_ONE));
        if bits == 0 {
            return parts.base;
        }
        parts
            .base
            .saturating_add(parts.per_bit.saturating_mul(u128::from(bits)) >> 16)
    }
}

/// The amount-dependent parts of a hop's penalty (see [`ScoringParams::parts`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PenaltyParts {
    /// `base_penalty + base_penalty_ppm * amount`.
    pub(crate) base: u128,
    /// `liquidity_penalty + liquidity_penalty_ppm * amount`, per bit (16.16 fixed point).
    pub(crate) per_bit: u128,
}

/// `x · 2^(-elapsed/half_life)`, rounded down and never above `x`.
fn decay(x: u128, elapsed: u64, half_life: u64) -> u128 {
    if x == 0 || elapsed == 0 {
        return x;
    }
    if half_life == 0 {
        return 0;
    }
    let halvings = elapsed / half_life;
    if halvings >= 128 {
        return 0;
    }
    let shifted = x >> halvings;
    let rem = elapsed % half_life;
    if rem == 0 {
        return shifted;
    }
    // Fractional part of a halving in floating point; clamped so rounding never tightens.
    let factor = (-(rem as f64) / (half_life as f64)).exp2();
    let scaled = (shifted as f64 * factor) as u128;
    scaled.min(shifted)
}

impl Knowledge {
    /// The bounds this knowledge implies at `now`, for a channel of `capacity`.
    fn at(&self, capacity: u128, now: u64, half_life: u64) -> (u128, u128) {
        let elapsed = now.saturating_sub(self.learned_at);
        let lower = decay(self.lower.0.min(capacity), elapsed, half_life);
        let gap = capacity.saturating_sub(self.upper.0);
        let upper = capacity - decay(gap, elapsed, half_life);
        (lower.min(upper), upper)
    }
}

impl ChannelGraph {
    /// The current liquidity bounds of the direction of `id` offered by `side`.
    pub fn liquidity(&self, id: &ChannelId, side: Side) -> Result<LiquidityBounds, GraphError> {
        let e = self.edge_of(id, side)?;
        let w = self.hot(e).ok_or(GraphError::UnknownChannel(*id))?;
        Ok(LiquidityBounds {
            lower: Amount(w.liq_lower),
            upper: Amount(w.liq_upper),
        })
    }

    /// The knowledge recorded for the direction of `id` offered by `side`, if any.
    pub fn knowledge(&self, id: &ChannelId, side: Side) -> Result<Option<Knowledge>, GraphError> {
        let slot = self.slot_index(id)?;
        Ok(self.slot(slot).and_then(|s| s.knowledge[side.index()]))
    }

    /// Sets the bounds of a direction outright (for example a hub's exact view of its own
    /// channel: `lower == upper == balance`), as learned at `now`.
    pub fn set_liquidity(
        &mut self,
        id: &ChannelId,
        side: Side,
        bounds: LiquidityBounds,
        now: u64,
    ) -> Result<(), GraphError> {
        let slot = self.slot_index(id)?;
        let cap = self.capacity_of(slot, id)?;
        if bounds.lower > bounds.upper {
            return Err(GraphError::InvalidLiquidity {
                channel: *id,
                reason: "lower bound above upper bound",
            });
        }
        if bounds.upper.0 > cap {
            return Err(GraphError::InvalidLiquidity {
                channel: *id,
                reason: "upper bound above capacity",
            });
        }
        self.store(slot, side, bounds.lower.0, bounds.upper.0, now);
        Ok(())
    }

    /// Records that the direction of `id` offered by `side` failed to forward `amount` for lack
    /// of liquidity at `now`: its upper bound falls to `amount - 1`.
    pub fn record_failure(
        &mut self,
        id: &ChannelId,
        side: Side,
        amount: Amount,
        now: u64,
    ) -> Result<(), GraphError> {
        let slot = self.slot_index(id)?;
        let (mut lower, upper) = self.current(slot, id, side, now)?;
        let upper = upper.min(amount.0.saturating_sub(1));
        if lower > upper {
            // What we knew was stale: the lower bound no longer holds.
            lower = 0;
        }
        self.store(slot, side, lower, upper, now);
        Ok(())
    }

    /// Records that the direction of `id` offered by `side` forwarded `amount` at `now`: its
    /// lower bound rises to `amount`, and the opposite direction can send at most `capacity -
    /// amount`.
    pub fn record_success(
        &mut self,
        id: &ChannelId,
        side: Side,
        amount: Amount,
        now: u64,
    ) -> Result<(), GraphError> {
        let slot = self.slot_index(id)?;
        let cap = self.capacity_of(slot, id)?;
        if amount.0 > cap {
            return Err(GraphError::InvalidLiquidity {
                channel: *id,
                reason: "forwarded amount above capacity",
            });
        }
        let (lower, mut upper) = self.current(slot, id, side, now)?;
        let lower = lower.max(amount.0);
        if lower > upper {
            // Stale upper bound: it forwarded more than we thought possible.
            upper = cap;
        }
        self.store(slot, side, lower, upper, now);
        let other = side.other();
        let (mut o_lower, o_upper) = self.current(slot, id, other, now)?;
        let o_upper = o_upper.min(cap - amount.0);
        if o_lower > o_upper {
            o_lower = 0;
        }
        self.store(slot, other, o_lower, o_upper, now);
        Ok(())
    }

    /// Learns from a route that failed at hop `failed_hop` for lack of liquidity: the hops before
    /// it forwarded their amounts, the failed one could not.
    pub fn record_route_failure(
        &mut self,
        route: &Route,
        failed_hop: usize,
        now: u64,
    ) -> Result<(), GraphError> {
        for hop in route.hops.iter().take(failed_hop) {
            self.record_success(&hop.channel, hop.from_side, hop.amount, now)?;
        }
        if let Some(hop) = route.hops.get(failed_hop) {
            self.record_failure(&hop.channel, hop.from_side, hop.amount, now)?;
        }
        Ok(())
    }

    /// Learns from a route whose every hop forwarded its amount.
    pub fn record_route_success(&mut self, route: &Route, now: u64) -> Result<(), GraphError> {
        for hop in &route.hops {
            self.record_success(&hop.channel, hop.from_side, hop.amount, now)?;
        }
        Ok(())
    }

    /// Lets learned knowledge fade: recomputes every learned direction's bounds at `now`, and
    /// forgets knowledge that has decayed back to `[0, capacity]`. Call it periodically (every
    /// minute is plenty); the search reads the bounds as of the last call.
    pub fn decay_liquidity(&mut self, now: u64) {
        let half_life_secs = self.half_life_secs;
        let mut learned: Vec<u32> = self.learned.iter().copied().collect();
        learned.sort_unstable();
        for slot_ix in learned {
            let Some(slot) = self.slot(slot_ix) else {
                self.learned.remove(&slot_ix);
                continue;
            };
            let cap = slot.channel.capacity.0;
            let (edges, knowledge) = (slot.edges, slot.knowledge);
            let mut remaining = [None, None];
            for side in [Side::A, Side::B] {
                let Some(k) = knowledge[side.index()] else {
                    continue;
                };
                let (lower, upper) = k.at(cap, now, half_life_secs);
                self.update_hot(edges[side.index()], |w| w.set_bounds(lower, upper));
                if lower > 0 || upper < cap {
                    remaining[side.index()] = Some(k);
                }
            }
            if let Some(slot) = self.slot_mut(slot_ix) {
                slot.knowledge = remaining;
            }
            if remaining == [None, None] {
                self.learned.remove(&slot_ix);
            }
        }
    }

    fn capacity_of(&self, slot: u32, id: &ChannelId) -> Result<u128, GraphError> {
        self.slot(slot)
            .map(|s| s.channel.capacity.0)
            .ok_or(GraphError::UnknownChannel(*id))
    }

    /// The bounds of a direction at `now`: its knowledge decayed, or `[0, capacity]`.
    fn current(
        &self,
        slot: u32,
        id: &ChannelId,
        side: Side,
        now: u64,
    ) -> Result<(u128, u128), GraphError> {
        let half_life = self.half_life_secs;
        let s = self.slot(slot).ok_or(GraphError::UnknownChannel(*id))?;
        let cap = s.channel.capacity.0;
        Ok(match s.knowledge[side.index()] {
            Some(k) => k.at(cap, now, half_life),
            None => (0, cap),
        })
    }

    /// Stores knowledge `[lower, upper]` (with `lower <= upper <= capacity`) learned at `now`.
    fn store(&mut self, slot_ix: u32, side: Side, lower: u128, upper: u128, now: u64) {
        let Some(slot) = self.slot_mut(slot_ix) else {
            return;
        };
        slot.knowledge[side.index()] = Some(Knowledge {
            lower: Amount(lower),
            upper: Amount(upper),
            learned_at: now,
        });
        let edge = slot.edges[side.index()];
        self.update_hot(edge, |w| w.set_bounds(lower, upper));
        self.learned.insert(slot_ix);
    }

    /// Restores knowledge read from a graph file, decayed to the bounds it implies at
    /// `learned_at` (that is, exactly as recorded).
    pub(crate) fn restore_knowledge(
        &mut self,
        id: &ChannelId,
        side: Side,
        k: Knowledge,
    ) -> Result<(), GraphError> {
        self.set_liquidity(
            id,
            side,
            LiquidityBounds {
                lower: k.lower,
                upper: k.upper,
            },
            k.learned_at,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(testkit::config(256))]

        #[test]
        fn penalty_is_monotone_in_amount(
            lower in 0u128..1_000_000, width in 0u128..1_000_000,
            a in 0u128..2_000_000, b in 0u128..2_000_000, in_flight in 0u128..1000,
        ) {
            let p = ScoringParams::default();
            let upper = lower + width;
            let (a, b) = if a <= b { (a, b) } else { (b, a) };
            if b + in_flight <= upper {
                let pa = p.penalty(a, a + in_flight, lower, upper);
                let pb = p.penalty(b, b + in_flight, lower, upper);
                prop_assert!(pa <= pb);
            }
        }

        #[test]
        fn decay_only_loosens(x in any::<u128>(), elapsed in any::<u64>(), hl in 1u64..1_000_000) {
            let d = decay(x, elapsed, hl);
            prop_assert!(d <= x);
            if elapsed >= hl { prop_assert!(d <= x / 2 + 1); }
        }
    }

    #[test]
    fn probability_shape() {
        let p = ScoringParams::default();
        let b = LiquidityBounds {
            lower: Amount(100),
            upper: Amount(1099),
        };
        assert_eq!(p.success_probability(b, Amount(100), Amount::ZERO), 1.0);
        assert_eq!(p.success_probability(b, Amount(1100), Amount::ZERO), 0.0);
        assert!((p.success_probability(b, Amount(600), Amount::ZERO) - 0.5).abs() < 1e-9);
        assert_eq!(p.hop_penalty(b, Amount(1100), Amount::ZERO), None);
        let certain = p.hop_penalty(b, Amount(100), Amount::ZERO).unwrap();
        let half = p.hop_penalty(b, Amount(600), Amount::ZERO).unwrap();
        // Half the probability costs one bit of uncertainty (within the approximation).
        let bit = p.liquidity_penalty.0;
        assert!(half.0 - certain.0 >= bit * 9 / 10 && half.0 - certain.0 <= bit * 11 / 10);
    }

    #[test]
    fn decay_halves() {
        assert_eq!(decay(1000, 3600, 3600), 500);
        assert_eq!(decay(1000, 7200, 3600), 250);
        assert_eq!(decay(1000, 0, 3600), 1000);
        let half_hl = decay(1_000_000, 1800, 3600);
        assert!((707_000..=707_200).contains(&half_hl), "{half_hl}");
    }
}
