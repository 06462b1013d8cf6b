//! Operations a party proposes on a channel state, and the validation both sides run on them.
//!
//! Who may propose what (the proposer is `by`), and what the counterparty must have agreed to
//! first (rule 11: only I move my money):
//!
//! | operation          | proposer           | effect on the state                                  | the counterparty signs it only if |
//! |--------------------|--------------------|------------------------------------------------------|-----------------------------------|
//! | `AddHtlc`          | the payer (sender) | balance(by) -= amount; lock added                    | valid (it moves only the payer's money) |
//! | `FulfillHtlc`      | the lock's receiver| lock removed; balance(receiver) += amount            | the preimage opens it before expiry (the agreed outcome of a lock it offered) |
//! | `FailHtlc`         | the lock's receiver| lock removed; balance(sender) += amount              | valid |
//! | `ExpireHtlc`       | the lock's sender  | after expiry only: lock removed; refunded to sender  | it does not know the preimage (else it claims, on chain if need be) |
//! | `AddGuarantee`     | either             | both balances fund a virtual channel                 | it agreed to this exact guarantee (`Channel::agree`) |
//! | `RemoveGuarantee`  | either             | guarantee split back to the balances, sum exact      | it agreed to this exact split (`Channel::agree`) |
//! | `Transfer`         | the payer          | balance(by) -= amount; balance(other) += amount      | valid |
//! | `Deposit`          | the depositor      | balance(by) += amount                                | the chain shows `by` deposited it and it is not credited yet ([`Deposits`]) |
//! | `Close`            | either, last op    | final flag; requires no locks and no guarantees      | valid |
//!
//! The arithmetic validity of every row is checked here ([`apply_batch`]); the agreement
//! column that needs the counterparty's own knowledge (agreements, known preimages) is checked
//! by the update machine before it calls [`apply_batch`] (`htlc::update`).
//!
//! Every operation but `Deposit` moves value between buckets of the same state and never creates
//! or destroys any, so conservation (rule 1) holds by construction; `Deposit` (a top-up) raises
//! the total by exactly its amount, only for what its proposer deposited and was not yet
//! credited for, and never above what the adjudicator holds. [`apply_batch`] re-checks both.

use crate::amount::Amount;
use crate::failure::FailureReason;
use crate::ids::{ChannelId, Expiry, Hashlock, HtlcId, Preimage, Side};
use crate::state::{ChannelState, Guarantee, Lock};
use serde::{Deserialize, Serialize};

/// One operation of a proposed update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Offer an HTLC paid by the proposer.
    AddHtlc {
        /// The new lock's id: of the proposer's parity (A even, B odd), above all it used before.
        id: HtlcId,
        /// Amount locked.
        amount: Amount,
        /// `sha256(preimage)`.
        hashlock: Hashlock,
        /// Time after which the lock can only be refunded.
        expiry: Expiry,
    },
    /// Claim a lock offered by the other side, revealing its preimage.
    FulfillHtlc {
        /// The lock.
        id: HtlcId,
        /// Its preimage.
        preimage: Preimage,
    },
    /// Give up a lock offered by the other side, returning its amount.
    FailHtlc {
        /// The lock.
        id: HtlcId,
        /// Why, for the payer.
        reason: FailureReason,
    },
    /// Take back one's own lock after its expiry.
    ExpireHtlc {
        /// The lock.
        id: HtlcId,
    },
    /// Lock collateral from both balances for a virtual channel.
    AddGuarantee(Guarantee),
    /// Release a guarantee, split as the virtual channel's final state says.
    RemoveGuarantee {
        /// The virtual channel whose guarantee ends.
        virtual_channel: ChannelId,
        /// Paid back to A.
        to_a: Amount,
        /// Paid back to B.
        to_b: Amount,
    },
    /// Pay the other side directly.
    Transfer {
        /// Amount paid.
        amount: Amount,
    },
    /// Make this the final state (cooperative close).
    Close,
    /// Credit the proposer with an amount it deposited on chain (a top-up).
    Deposit {
        /// Amount deposited.
        amount: Amount,
    },
}

/// Bounds a channel enforces on its states (rule 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Maximum number of pending locks in a state.
    pub max_pending_locks: usize,
    /// Maximum total value of pending locks.
    pub max_in_flight: Amount,
    /// Smallest HTLC accepted.
    pub min_htlc: Amount,
    /// Maximum number of operations in one update.
    pub max_ops_per_update: usize,
    /// Maximum number of guarantees in a state.
    pub max_guarantees: usize,
    /// Longest time ahead (seconds from now) a new lock may expire: bounds how long a lock can
    /// hold the channel's slots and value (rule 10, jamming).
    pub max_expiry_secs: u64,
    /// Latest chain time a lock may expire at, whatever the time now: a virtual channel's end
    /// (its guarantees settle every lock by then on chain, ADR 0026); `u64::MAX` for ledgers.
    pub latest_expiry: Expiry,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending_locks: 483,
            max_in_flight: Amount::MAX,
            min_htlc: Amount(1),
            max_ops_per_update: 1024,
            max_guarantees: 64,
            max_expiry_secs: u64::MAX,
            latest_expiry: Expiry(u64::MAX),
        }
    }
}

/// Why an operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OpError {
    /// No pending lock has this id.
    #[error("unknown lock {0:?}")]
    UnknownLock(HtlcId),
    /// The preimage does not open the lock's hashlock.
    #[error("preimage does not match the hashlock")]
    BadPreimage,
    /// The lock's expiry has passed: it can no longer be fulfilled.
    #[error("lock has expired")]
    LockExpired,
    /// The lock's expiry has not passed yet: it cannot be expired.
    #[error("lock has not expired yet")]
    NotExpired,
    /// The expiry of a new lock is already in the past.
    #[error("expiry is in the past")]
    ExpiryInPast,
    /// This side may not perform this operation on this lock (e.g. fulfilling its own offer).
    #[error("operation not allowed for this side")]
    WrongSide,
    /// The lock id is below the proposer's next id (reused or out of order) or of the other
    /// side's parity.
    #[error("unexpected lock id {got:?}, expected at least {expected:?} of the same parity")]
    BadLockId {
        /// The id proposed.
        got: HtlcId,
        /// The smallest id the proposer may use next.
        expected: HtlcId,
    },
    /// The payer's balance cannot cover the amount.
    #[error("insufficient balance")]
    InsufficientBalance,
    /// Amount arithmetic overflowed.
    #[error("amount overflow")]
    Overflow,
    /// Zero amount, or an amount below the minimum HTLC.
    #[error("amount below minimum")]
    AmountBelowMinimum,
    /// The state already holds the maximum number of pending locks.
    #[error("too many pending locks")]
    TooManyLocks,
    /// The pending locks would exceed the maximum in-flight value.
    #[error("in-flight value over the limit")]
    InFlightOverLimit,
    /// The state already holds the maximum number of guarantees.
    #[error("too many guarantees")]
    TooManyGuarantees,
    /// A guarantee for this virtual channel already exists.
    #[error("duplicate guarantee")]
    DuplicateGuarantee,
    /// No guarantee exists for this virtual channel.
    #[error("unknown guarantee")]
    UnknownGuarantee,
    /// A guarantee's split does not sum to what it locked.
    #[error("guarantee split does not match the locked amount")]
    GuaranteeMismatch,
    /// The channel is final: nothing may follow the close.
    #[error("channel is closed")]
    ChannelClosed,
    /// Close requires no pending locks and no guarantees.
    #[error("cannot close with pending locks or guarantees")]
    CloseWithPending,
    /// The update holds more operations than allowed.
    #[error("too many operations in one update")]
    TooManyOps,
    /// Conservation would break (never expected: every operation preserves it).
    #[error("conservation violated")]
    Conservation,
    /// A top-up the chain does not (yet) show the proposer deposited, or already credited.
    #[error("deposit not held on chain for the proposer")]
    DepositNotOnChain,
    /// A new lock expiring further ahead than the channel's limit.
    #[error("expiry too far in the future")]
    ExpiryTooFar,
    /// A guarantee operation the counterparty did not agree to (rule 11).
    #[error("operation not agreed by the counterparty")]
    NotAgreed,
    /// The counterparty knows the preimage of the lock: it claims it, so it may not expire.
    #[error("the receiver knows the preimage and claims the lock")]
    ClaimPending,
    /// The channel is disputed or concluded on chain: it takes no new lock, guarantee or
    /// deposit (rule 12).
    #[error("channel is disputed or concluded on chain")]
    ChannelFrozen,
}

impl From<crate::amount::AmountOverflow> for OpError {
    fn from(_: crate::amount::AmountOverflow) -> Self {
        OpError::Overflow
    }
}

/// The smallest lock id each side may use next (A even, B odd; gaps allowed, reuse never), part
/// of a channel's persisted record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextIds(pub [u64; 2]);

impl Default for NextIds {
    fn default() -> Self {
        NextIds([0, 1])
    }
}

impl NextIds {
    /// The smallest id `side` may use next.
    pub fn next(&self, side: Side) -> HtlcId {
        HtlcId(self.0[side.index()])
    }

    /// Check that `side` may use `id` and move past it.
    fn take(&mut self, side: Side, id: HtlcId) -> Result<(), OpError> {
        let slot = &mut self.0[side.index()];
        if id.0 < *slot || id.0 % 2 != side.index() as u64 {
            return Err(OpError::BadLockId {
                got: id,
                expected: HtlcId(*slot),
            });
        }
        *slot = id.0.checked_add(2).ok_or(OpError::Overflow)?;
        Ok(())
    }
}

/// What deposits a co-signed update may credit: the chain's view of the channel as the validating
/// side has seen it (rule 11: a credit goes only to whoever the chain says deposited it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposits {
    /// What the adjudicator holds for the channel: the state's total never exceeds it.
    pub holdings: Amount,
    /// Per participant (A, B): what it deposited on chain and no co-signed state credits yet.
    pub uncredited: [Amount; 2],
}

impl Deposits {
    /// No deposit can be credited (the total may still stay as it is, up to `holdings`).
    pub fn none(holdings: Amount) -> Self {
        Deposits {
            holdings,
            uncredited: [Amount::ZERO; 2],
        }
    }
}

fn remove_lock(state: &mut ChannelState, id: HtlcId) -> Result<Lock, OpError> {
    let pos = state
        .locks
        .iter()
        .position(|l| l.id == id)
        .ok_or(OpError::UnknownLock(id))?;
    Ok(state.locks.remove(pos))
}

fn credit(state: &mut ChannelState, side: Side, amount: Amount) -> Result<(), OpError> {
    let b = &mut state.balances[side.index()];
    *b = b.checked_add(amount)?;
    Ok(())
}

fn debit(state: &mut ChannelState, side: Side, amount: Amount) -> Result<(), OpError> {
    let b = &mut state.balances[side.index()];
    *b = b
        .checked_sub(amount)
        .map_err(|_| OpError::InsufficientBalance)?;
    Ok(())
}

fn apply_one(
    state: &mut ChannelState,
    ids: &mut NextIds,
    op: &Op,
    by: Side,
    now: Expiry,
    limits: &Limits,
    room: &mut [Amount; 2],
) -> Result<(), OpError> {
    match *op {
        Op::AddHtlc {
            id,
            amount,
            hashlock,
            expiry,
        } => {
            ids.take(by, id)?;
            if amount.is_zero() || amount < limits.min_htlc {
                return Err(OpError::AmountBelowMinimum);
            }
            if expiry <= now {
                return Err(OpError::ExpiryInPast);
            }
            if expiry.0 > now.0.saturating_add(limits.max_expiry_secs)
                || expiry > limits.latest_expiry
            {
                return Err(OpError::ExpiryTooFar);
            }
            if state.locks.len() >= limits.max_pending_locks {
                return Err(OpError::TooManyLocks);
            }
            if state.locks_total()?.checked_add(amount)? > limits.max_in_flight {
                return Err(OpError::InFlightOverLimit);
            }
            debit(state, by, amount)?;
            // Ids grow per side, not across sides: insert in id order (the locks root needs it).
            let lock = Lock {
                id,
                amount,
                hashlock,
                expiry,
                sender: by,
            };
            let pos = state.locks.partition_point(|l| l.id < id);
            state.locks.insert(pos, lock);
        }
        Op::FulfillHtlc { id, preimage } => {
            let lock = *state.lock(id).ok_or(OpError::UnknownLock(id))?;
            if lock.sender == by {
                return Err(OpError::WrongSide);
            }
            if !lock.hashlock.is_opened_by(&preimage) {
                return Err(OpError::BadPreimage);
            }
            if now >= lock.expiry {
                return Err(OpError::LockExpired);
            }
            remove_lock(state, id)?;
            credit(state, by, lock.amount)?;
        }
        Op::FailHtlc { id, .. } => {
            let lock = *state.lock(id).ok_or(OpError::UnknownLock(id))?;
            if lock.sender == by {
                return Err(OpError::WrongSide);
            }
            remove_lock(state, id)?;
            credit(state, lock.sender, lock.amount)?;
        }
        Op::ExpireHtlc { id } => {
            let lock = *state.lock(id).ok_or(OpError::UnknownLock(id))?;
            if lock.sender != by {
                return Err(OpError::WrongSide);
            }
            if now < lock.expiry {
                return Err(OpError::NotExpired);
            }
            remove_lock(state, id)?;
            credit(state, by, lock.amount)?;
        }
        Op::AddGuarantee(g) => {
            if state.guarantees.len() >= limits.max_guarantees {
                return Err(OpError::TooManyGuarantees);
            }
            let pos = state
                .guarantees
                .binary_search_by(|x| x.virtual_channel.cmp(&g.virtual_channel));
            let Err(pos) = pos else {
                return Err(OpError::DuplicateGuarantee);
            };
            if g.from_a.checked_add(g.from_b)?.is_zero() {
                return Err(OpError::AmountBelowMinimum);
            }
            debit(state, Side::A, g.from_a)?;
            debit(state, Side::B, g.from_b)?;
            state.guarantees.insert(pos, g);
        }
        Op::RemoveGuarantee {
            virtual_channel,
            to_a,
            to_b,
        } => {
            let pos = state
                .guarantees
                .binary_search_by(|x| x.virtual_channel.cmp(&virtual_channel))
                .map_err(|_| OpError::UnknownGuarantee)?;
            let g = state.guarantees[pos];
            if to_a.checked_add(to_b)? != g.from_a.checked_add(g.from_b)? {
                return Err(OpError::GuaranteeMismatch);
            }
            state.guarantees.remove(pos);
            credit(state, Side::A, to_a)?;
            credit(state, Side::B, to_b)?;
        }
        Op::Transfer { amount } => {
            if amount.is_zero() {
                return Err(OpError::AmountBelowMinimum);
            }
            debit(state, by, amount)?;
            credit(state, by.other(), amount)?;
        }
        Op::Deposit { amount } => {
            if amount.is_zero() {
                return Err(OpError::AmountBelowMinimum);
            }
            let left = &mut room[by.index()];
            *left = left
                .checked_sub(amount)
                .map_err(|_| OpError::DepositNotOnChain)?;
            credit(state, by, amount)?;
        }
        Op::Close => {
            if !state.locks.is_empty() || !state.guarantees.is_empty() {
                return Err(OpError::CloseWithPending);
            }
            state.is_final = true;
        }
    }
    Ok(())
}

/// Apply a whole batch proposed by `by`; on the first invalid operation returns its index and
/// reason and leaves `state` and `ids` untouched. `deposits` is what the chain is seen to hold:
/// a `Deposit` credits `by` only from what `by` deposited and was not credited for, and the
/// total never grows beyond the holdings.
pub fn apply_batch(
    state: &mut ChannelState,
    ids: &mut NextIds,
    ops: &[Op],
    by: Side,
    now: Expiry,
    limits: &Limits,
    deposits: Deposits,
) -> Result<(), (usize, OpError)> {
    let holdings = deposits.holdings;
    let mut room = deposits.uncredited;
    if ops.len() > limits.max_ops_per_update {
        return Err((limits.max_ops_per_update, OpError::TooManyOps));
    }
    let before = state.total().map_err(|e| (0, e.into()))?;
    // One copy for the whole batch: operations mutate it freely and it is dropped on error.
    let mut next = state.clone();
    let mut next_ids = *ids;
    for (i, op) in ops.iter().enumerate() {
        if next.is_final {
            return Err((i, OpError::ChannelClosed));
        }
        apply_one(&mut next, &mut next_ids, op, by, now, limits, &mut room).map_err(|e| (i, e))?;
    }
    let deposited = Amount::checked_sum(ops.iter().map(|op| match op {
        Op::Deposit { amount } => *amount,
        _ => Amount::ZERO,
    }))
    .map_err(|e| (ops.len(), e.into()))?;
    let after = next.total().map_err(|e| (ops.len(), e.into()))?;
    let expected = before
        .checked_add(deposited)
        .map_err(|e| (ops.len(), e.into()))?;
    if after != expected {
        return Err((ops.len(), OpError::Conservation));
    }
    if !deposited.is_zero() && after > holdings {
        let index = ops
            .iter()
            .rposition(|op| matches!(op, Op::Deposit { .. }))
            .unwrap_or(ops.len());
        return Err((index, OpError::DepositNotOnChain));
    }
    *state = next;
    *ids = next_ids;
    Ok(())
}
