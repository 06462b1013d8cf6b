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

/// An outgoing lock must leave at least this long before it expires, so the next hop (which may
/// be the payee) can itself claim on chain: the same derivation as [`MIN_EXPIRY_DELTA_SECS`].
pub const MIN_OUTGOING_EXPIRY_SECS: u64 = MIN_EXPIRY_DELTA_SECS;

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
    if next.expiry.0 > now.0.saturating_add(policy.max_expiry_horizon) {
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
