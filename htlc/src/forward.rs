//! The hub's forwarding decision, a pure function (rules 3–7 of DESIGN.md).
//!
//! Given a committed incoming HTLC, the next hop the payer asked for and the state of the
//! outgoing channel, [`decide`] either returns the HTLC to offer on the outgoing channel or the
//! [`FailureReason`] to send back. It reads nothing and changes nothing.

use crate::amount::Amount;
use crate::failure::FailureReason;
use crate::ids::{Expiry, Hashlock};
use crate::update::CommittedHtlc;
use serde::{Deserialize, Serialize};

/// Ethereum slot time, seconds.
pub const BLOCK_TIME_SECS: u64 = 12;
/// Blocks we allow for a transaction to be included under congestion (with fee bumping).
pub const INCLUSION_BLOCKS: u64 = 25;
/// Blocks until a transaction is final (two epochs), so a reorg cannot undo a reveal.
pub const FINALITY_BLOCKS: u64 = 64;
/// Time for the hub to notice and react (watcher polling, a restart), seconds.
pub const REACTION_GRACE_SECS: u64 = 600;

/// Smallest expiry delta a hub may configure (rule 6).
///
/// Derivation: downstream may reveal the preimage (off chain, or in the secret registry) at the
/// last moment before the outgoing lock's expiry. From then the hub must get the preimage
/// registered on chain before the *incoming* lock's expiry if upstream does not settle off chain:
/// notice it (grace), get a registration included (inclusion) and final (finality). The secret
/// registry is global, so one registration before the incoming expiry settles the upstream lock.
/// `12 * (25 + 64) + 600 = 1668` s, about 28 minutes.
pub const MIN_EXPIRY_DELTA_SECS: u64 =
    BLOCK_TIME_SECS * (INCLUSION_BLOCKS + FINALITY_BLOCKS) + REACTION_GRACE_SECS;
const _: () =
    assert!(MIN_EXPIRY_DELTA_SECS >= BLOCK_TIME_SECS * FINALITY_BLOCKS + REACTION_GRACE_SECS);
const _: () = assert!(MIN_EXPIRY_DELTA_SECS == 1668);

/// Seconds before a peer's lock expires by which a node that knows its preimage and was not
/// paid off chain must have its registration of the preimage sent: inclusion and finality
/// (rule 12). The reaction grace of [`MIN_EXPIRY_DELTA_SECS`] is spent before this point, by
/// the peer that did not settle. `12 * (25 + 64) = 1068` s.
pub const ON_CHAIN_CLAIM_SECS: u64 = BLOCK_TIME_SECS * (INCLUSION_BLOCKS + FINALITY_BLOCKS);
const _: () = assert!(ON_CHAIN_CLAIM_SECS < MIN_EXPIRY_DELTA_SECS);

/// An outgoing lock must leave at least this long before it expires, so the next hop (which may
/// be the payee) can itself claim on chain: the same derivation as [`MIN_EXPIRY_DELTA_SECS`].
pub const MIN_OUTGOING_EXPIRY_SECS: u64 = MIN_EXPIRY_DELTA_SECS;

/// Shortest challenge window a node accepts for a channel (rule 12).
///
/// Derivation: the peer may register a stale state at any moment; from then the node must
/// notice it (grace), get its challenge included (inclusion) and final (finality) before the
/// window ends, the same race as a preimage registration. `12 * (25 + 64) + 600 = 1668` s.
pub const MIN_CHALLENGE_DURATION_SECS: u64 =
    BLOCK_TIME_SECS * (INCLUSION_BLOCKS + FINALITY_BLOCKS) + REACTION_GRACE_SECS;
const _: () = assert!(MIN_CHALLENGE_DURATION_SECS == MIN_EXPIRY_DELTA_SECS);

/// Longest challenge window a node accepts: a longer one locks the funds for longer after a
/// close than anyone expects (the adjudicator's own bound is higher).
pub const MAX_CHALLENGE_DURATION_SECS: u64 = 30 * 24 * 3600;
const _: () = assert!(MAX_CHALLENGE_DURATION_SECS > 100 * MIN_CHALLENGE_DURATION_SECS);

/// Default horizon: funds are not locked longer than two weeks.
pub const DEFAULT_MAX_EXPIRY_HORIZON_SECS: u64 = 14 * 24 * 3600;
const _: () = assert!(DEFAULT_MAX_EXPIRY_HORIZON_SECS > 20 * MIN_EXPIRY_DELTA_SECS);

/// A hub's policy for one outgoing channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardPolicy {
    /// Flat fee per forwarded HTLC.
    pub base_fee: Amount,
    /// Proportional fee in millionths of the forwarded amount.
    pub fee_ppm: u32,
    /// Required `incoming_expiry - outgoing_expiry`, at least [`MIN_EXPIRY_DELTA_SECS`].
    pub expiry_delta: u64,
    /// Smallest HTLC forwarded.
    pub min_htlc: Amount,
    /// Largest HTLC forwarded.
    pub max_htlc: Amount,
    /// Longest time ahead an outgoing lock may expire.
    pub max_expiry_horizon: u64,
    /// Whether the channel forwards at all.
    pub enabled: bool,
}

impl Default for ForwardPolicy {
    fn default() -> Self {
        ForwardPolicy {
            base_fee: Amount(1_000),
            fee_ppm: 100,
            expiry_delta: 3600,
            min_htlc: Amount(1),
            max_htlc: Amount::MAX,
            max_expiry_horizon: DEFAULT_MAX_EXPIRY_HORIZON_SECS,
            enabled: true,
        }
    }
}

impl ForwardPolicy {
    /// The fee this policy charges for forwarding `outgoing`: `base + ppm * outgoing / 1e6`.
    pub fn fee(&self, outgoing: Amount) -> Result<Amount, crate::AmountOverflow> {
        self.base_fee.checked_add(outgoing.ppm(self.fee_ppm))
    }
}

/// What the outgoing channel can take right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutgoingChannel {
    /// The hub's policy on it.
    pub policy: ForwardPolicy,
    /// The hub's free balance in it.
    pub available: Amount,
    /// Locks pending in it.
    pub pending_locks: usize,
    /// Its maximum number of pending locks.
    pub max_pending_locks: usize,
    /// Value of the locks pending in it.
    pub in_flight: Amount,
    /// Its maximum in-flight value.
    pub max_in_flight: Amount,
    /// The latest a lock in it may expire (a virtual channel's end; `u64::MAX` for ledgers).
    pub latest_expiry: Expiry,
}

/// The payer's instruction for the next hop (what it asked the hub to offer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextHop {
    /// Amount to offer on the outgoing channel.
    pub amount: Amount,
    /// Expiry of the outgoing lock.
    pub expiry: Expiry,
}

/// The HTLC to offer on the outgoing channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    /// Amount.
    pub amount: Amount,
    /// Same hashlock as the incoming lock.
    pub hashlock: Hashlock,
    /// Expiry.
    pub expiry: Expiry,
    /// The fee the hub earns: incoming − outgoing.
    pub fee: Amount,
}

/// Decide whether to forward `incoming` as `next`. `outgoing` is `None` when the hub has no
/// channel to the requested next hop. Taking a [`CommittedHtlc`] makes rule 3 hold by
/// construction: only a co-signed, persisted incoming lock can be forwarded.
pub fn decide(
    incoming: &CommittedHtlc,
    next: &NextHop,
    outgoing: Option<&OutgoingChannel>,
    now: Expiry,
) -> Result<Forward, FailureReason> {
    let lock = incoming.lock();
    let out = outgoing.ok_or(FailureReason::UnknownNextPeer)?;
    let policy = &out.policy;
    if !policy.enabled {
        return Err(FailureReason::TemporaryChannelFailure);
    }
    if next.amount.is_zero() || next.amount < policy.min_htlc {
        return Err(FailureReason::AmountBelowMinimum);
    }
    if next.amount > policy.max_htlc {
        return Err(FailureReason::TemporaryChannelFailure);
    }
    // Rule 7: incoming - outgoing >= base + ppm * outgoing / 1e6, in checked arithmetic; an
    // outgoing amount above the incoming one is a negative fee and fails here too.
    let fee = lock
        .amount
        .checked_sub(next.amount)
        .map_err(|_| FailureReason::FeeInsufficient)?;
    let required = policy
        .fee(next.amount)
        .map_err(|_| FailureReason::FeeInsufficient)?;
    if fee < required {
        return Err(FailureReason::FeeInsufficient);
    }
    // Rule 6: incoming_expiry >= outgoing_expiry + delta, the outgoing one far enough ahead
    // for the next hop to claim on chain, and not so far that funds sit locked for long.
    let delta = policy.expiry_delta.max(MIN_EXPIRY_DELTA_SECS);
    match next.expiry.0.checked_add(delta) {
        Some(needed) if lock.expiry.0 >= needed => {}
        _ => return Err(FailureReason::IncorrectExpiryDelta),
    }
    if next.expiry.0 < now.0.saturating_add(MIN_OUTGOING_EXPIRY_SECS) {
        return Err(FailureReason::ExpiryTooSoon);
    }
    if next.expiry.0 > now.0.saturating_add(policy.max_expiry_horizon)
        || next.expiry > out.latest_expiry
    {
        return Err(FailureReason::ExpiryTooFar);
    }
    // Rule 10 on the outgoing channel: liquidity, lock slots, in-flight value.
    let in_flight_after = out
        .in_flight
        .checked_add(next.amount)
        .map_err(|_| FailureReason::TemporaryChannelFailure)?;
    if next.amount > out.available
        || out.pending_locks >= out.max_pending_locks
        || in_flight_after > out.max_in_flight
    {
        return Err(FailureReason::TemporaryChannelFailure);
    }
    Ok(Forward {
        amount: next.amount,
        hashlock: lock.hashlock,
        expiry: next.expiry,
        fee,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ChannelId, HtlcId, Preimage, Side};
    use crate::state::Lock;
    use alloy::primitives::B256;
    use proptest::prelude::*;

    const NOW: Expiry = Expiry(1_000_000);

    fn incoming(amount: u128, expiry: u64) -> CommittedHtlc {
        CommittedHtlc::new(
            ChannelId(B256::ZERO),
            1,
            Lock {
                id: HtlcId(0),
                amount: Amount(amount),
                hashlock: Preimage([1; 32]).hashlock(),
                expiry: Expiry(expiry),
                sender: Side::A,
            },
        )
    }

    fn channel(policy: ForwardPolicy) -> OutgoingChannel {
        OutgoingChannel {
            policy,
            available: Amount(1_000_000),
            pending_locks: 0,
            max_pending_locks: 10,
            in_flight: Amount(0),
            max_in_flight: Amount(2_000_000),
            latest_expiry: Expiry(u64::MAX),
        }
    }

    fn policy() -> ForwardPolicy {
        ForwardPolicy {
            base_fee: Amount(10),
            fee_ppm: 1_000,
            expiry_delta: 3_600,
            ..ForwardPolicy::default()
        }
    }

    fn ok_case() -> (CommittedHtlc, NextHop) {
        // fee = 10 + 100_000 * 1000 / 1e6 = 110
        let out_expiry = NOW.0 + 7_200;
        (
            incoming(100_110, out_expiry + 3_600),
            NextHop {
                amount: Amount(100_000),
                expiry: Expiry(out_expiry),
            },
        )
    }

    #[test]
    fn forwards_with_exact_fee_and_delta() {
        let (inc, next) = ok_case();
        let f = decide(&inc, &next, Some(&channel(policy())), NOW).unwrap();
        assert_eq!(f.fee, Amount(110));
        assert_eq!(f.hashlock, inc.lock().hashlock);
    }

    #[test]
    fn each_failure_reason() {
        let (inc, next) = ok_case();
        let ch = channel(policy());
        let fail = |inc: &CommittedHtlc, next: &NextHop, ch: Option<&OutgoingChannel>| {
            decide(inc, next, ch, NOW).unwrap_err()
        };
        assert_eq!(fail(&inc, &next, None), FailureReason::UnknownNextPeer);
        // One unit short of the fee.
        let short = incoming(100_109, inc.lock().expiry.0);
        assert_eq!(
            fail(&short, &next, Some(&ch)),
            FailureReason::FeeInsufficient
        );
        // Negative fee.
        let neg = incoming(99_999, inc.lock().expiry.0);
        assert_eq!(fail(&neg, &next, Some(&ch)), FailureReason::FeeInsufficient);
        // One second short of the delta.
        let tight = incoming(100_110, inc.lock().expiry.0 - 1);
        assert_eq!(
            fail(&tight, &next, Some(&ch)),
            FailureReason::IncorrectExpiryDelta
        );
        // Outgoing expiry too soon / too far.
        let soon = NextHop {
            expiry: Expiry(NOW.0 + MIN_OUTGOING_EXPIRY_SECS - 1),
            ..next
        };
        let inc_soon = incoming(100_110, soon.expiry.0 + 3_600);
        assert_eq!(
            fail(&inc_soon, &soon, Some(&ch)),
            FailureReason::ExpiryTooSoon
        );
        let far = NextHop {
            expiry: Expiry(NOW.0 + DEFAULT_MAX_EXPIRY_HORIZON_SECS + 1),
            ..next
        };
        let inc_far = incoming(100_110, far.expiry.0 + 3_600);
        assert_eq!(fail(&inc_far, &far, Some(&ch)), FailureReason::ExpiryTooFar);
        // Past what the outgoing channel takes (a virtual channel's end), however near.
        let ends = OutgoingChannel {
            latest_expiry: Expiry(next.expiry.0 - 1),
            ..channel(policy())
        };
        let inc_ok = incoming(100_110, next.expiry.0 + 3_600);
        assert_eq!(
            fail(&inc_ok, &next, Some(&ends)),
            FailureReason::ExpiryTooFar
        );
        let fits = OutgoingChannel {
            latest_expiry: next.expiry,
            ..channel(policy())
        };
        assert!(decide(&inc_ok, &next, Some(&fits), NOW).is_ok());
        // Below minimum.
        let min = channel(ForwardPolicy {
            min_htlc: Amount(100_001),
            ..policy()
        });
        assert_eq!(
            fail(&inc, &next, Some(&min)),
            FailureReason::AmountBelowMinimum
        );
        // Liquidity, lock slots, in-flight, disabled, above maximum: temporary failures.
        for broken in [
            OutgoingChannel {
                available: Amount(99_999),
                ..ch
            },
            OutgoingChannel {
                pending_locks: 10,
                ..ch
            },
            OutgoingChannel {
                in_flight: Amount(1_900_001),
                ..ch
            },
            channel(ForwardPolicy {
                enabled: false,
                ..policy()
            }),
            channel(ForwardPolicy {
                max_htlc: Amount(99_999),
                ..policy()
            }),
        ] {
            assert_eq!(
                fail(&inc, &next, Some(&broken)),
                FailureReason::TemporaryChannelFailure
            );
        }
    }

    #[test]
    fn configured_delta_below_the_safe_minimum_is_raised() {
        let (_, next) = ok_case();
        let ch = channel(ForwardPolicy {
            expiry_delta: 10,
            ..policy()
        });
        let inc = incoming(100_110, next.expiry.0 + 10);
        assert_eq!(
            decide(&inc, &next, Some(&ch), NOW).unwrap_err(),
            FailureReason::IncorrectExpiryDelta
        );
    }

    proptest! {
        #![proptest_config(testkit::config(256))]

        /// Whatever the inputs, a forward satisfies rules 6 and 7 exactly, and any input that
        /// satisfies them (with room in the channel) is forwarded.
        #[test]
        fn forward_iff_rules_hold(
            amount in 1u128..10_000_000, extra in 0u128..20_000, base in 0u128..5_000,
            ppm in 0u32..50_000, delta in 0u64..10_000, out_ttl in 0u64..2_000_000, slack in 0u64..8_000,
        ) {
            let pol = ForwardPolicy { base_fee: Amount(base), fee_ppm: ppm, expiry_delta: delta, ..ForwardPolicy::default() };
            let ch = OutgoingChannel { available: Amount::MAX, max_in_flight: Amount::MAX, ..channel(pol) };
            let next = NextHop { amount: Amount(amount), expiry: Expiry(NOW.0 + out_ttl) };
            let inc = incoming(amount + extra, NOW.0 + out_ttl + slack);
            let fee_ok = extra >= base + amount * u128::from(ppm) / 1_000_000;
            let delta_ok = slack >= delta.max(MIN_EXPIRY_DELTA_SECS);
            let window_ok = (MIN_OUTGOING_EXPIRY_SECS..=DEFAULT_MAX_EXPIRY_HORIZON_SECS).contains(&out_ttl);
            let r = decide(&inc, &next, Some(&ch), NOW);
            prop_assert_eq!(r.is_ok(), fee_ok && delta_ok && window_ok);
            if let Ok(f) = r {
                prop_assert_eq!(f.fee, Amount(extra));
                prop_assert!(inc.lock().expiry.0 >= f.expiry.0 + delta);
            }
        }
    }
}
