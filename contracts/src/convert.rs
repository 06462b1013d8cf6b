//! Conversions from the protocol core's types (`htlc`) to the adjudicator's ABI types.
//!
//! Nothing here hashes or re-derives anything: the typed state comes from
//! [`htlc::eip712::typed_state`], lock leaves and proofs from [`htlc::ChannelState`]. These
//! functions only move fields between identically laid-out structs.

use crate::bindings::Adjudicator;
use alloy::primitives::{B256, Signature, U256};
use htlc::eip712::typed;
use htlc::{AmountOverflow, ChannelParams, ChannelState, Lock, Side};

/// The on-chain parameters of a channel. Chain id and adjudicator are implicit on chain
/// (`block.chainid`, `address(this)`); [`crate::ChainClient`] checks them before sending.
pub fn params(p: &ChannelParams) -> Adjudicator::Params {
    Adjudicator::Params {
        participantA: p.participants[0],
        participantB: p.participants[1],
        asset: p.asset,
        challengeDuration: p.challenge_duration,
        nonce: p.nonce,
    }
}

/// The ABI form of an EIP-712 typed state produced by `htlc` (same fields, same order).
pub fn typed_state(t: &typed::State) -> Adjudicator::State {
    Adjudicator::State {
        channelId: t.channelId,
        version: t.version,
        balanceA: t.balanceA,
        balanceB: t.balanceB,
        locksRoot: t.locksRoot,
        locksTotal: t.locksTotal,
        guarantees: t
            .guarantees
            .iter()
            .map(|g| Adjudicator::Guarantee {
                virtualChannelId: g.virtualChannelId,
                fromA: g.fromA,
                fromB: g.fromB,
                crossed: g.crossed,
                locksUntil: g.locksUntil,
            })
            .collect(),
        isFinal: t.isFinal,
    }
}

/// The ABI form of a channel state; fails only if its lock or guarantee sums overflow.
pub fn state(s: &ChannelState) -> Result<Adjudicator::State, AmountOverflow> {
    Ok(typed_state(&htlc::eip712::typed_state(s)?))
}

/// The ABI form of a pending lock (the fields of [`Lock::leaf`]).
pub fn lock(l: &Lock) -> Adjudicator::Lock {
    Adjudicator::Lock {
        id: l.id.0,
        amount: U256::from(l.amount.0),
        hashlock: l.hashlock.0,
        expiry: l.expiry.0,
        sender: match l.sender {
            Side::A => 0,
            Side::B => 1,
        },
    }
}

/// A virtual channel's state as an event shows it with its `locks` (the recorded outcome of
/// `VirtualOutcome`; a `Disputed` state read with none, whole only if it holds none), in the
/// core's types: `None` if a field does not fit them (an amount above
/// `u128`, a sender other than 0 or 1, guarantees inside it) or the locks do not hash to the
/// state's root or add up to its total (the adjudicator refuses both).
pub fn resolved_virtual_state(
    state: &Adjudicator::State,
    locks: &[Adjudicator::Lock],
) -> Option<ChannelState> {
    let amount = |x: U256| u128::try_from(x).ok().map(htlc::Amount);
    if !state.guarantees.is_empty() {
        return None;
    }
    let locks = locks
        .iter()
        .map(|l| {
            Some(Lock {
                id: htlc::HtlcId(l.id),
                amount: amount(l.amount)?,
                hashlock: htlc::Hashlock(l.hashlock),
                expiry: htlc::Expiry(l.expiry),
                sender: match l.sender {
                    0 => Side::A,
                    1 => Side::B,
                    _ => return None,
                },
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let s = ChannelState {
        channel_id: htlc::ChannelId(state.channelId),
        version: state.version,
        balances: [amount(state.balanceA)?, amount(state.balanceB)?],
        locks,
        guarantees: Vec::new(),
        is_final: state.isFinal,
    };
    let total = s.locks_total().ok()?;
    (s.locks_root() == state.locksRoot && U256::from(total.0) == state.locksTotal).then_some(s)
}

/// A virtual channel's state as a `Disputed` or `LocksWithheld` event shows it when it holds
/// locks the event does not list: the state without them, and their root and total. `None` if
/// it holds no locks (it reads whole: [`resolved_virtual_state`]), holds guarantees, or an
/// amount does not fit the core's types.
pub fn withheld_virtual_state(
    state: &Adjudicator::State,
) -> Option<(ChannelState, htlc::node::chain::WithheldLocks)> {
    let amount = |x: U256| u128::try_from(x).ok().map(htlc::Amount);
    if !state.guarantees.is_empty() || state.locksTotal.is_zero() {
        return None;
    }
    let s = ChannelState {
        channel_id: htlc::ChannelId(state.channelId),
        version: state.version,
        balances: [amount(state.balanceA)?, amount(state.balanceB)?],
        locks: Vec::new(),
        guarantees: Vec::new(),
        is_final: state.isFinal,
    };
    let locks = htlc::node::chain::WithheldLocks {
        root: state.locksRoot,
        total: amount(state.locksTotal)?,
    };
    Some((s, locks))
}

/// The ABI form of `s` with withheld `locks` (their root and total in place of its own, which
/// has none): the state as the chain registered it.
pub fn withheld_state(
    s: &ChannelState,
    locks: &htlc::node::chain::WithheldLocks,
) -> Result<Adjudicator::State, AmountOverflow> {
    let mut out = state(s)?;
    out.locksRoot = locks.root;
    out.locksTotal = U256::from(locks.total.0);
    Ok(out)
}

/// The ABI form of a signature: `r`, `s` and `v` ∈ {27, 28}.
pub fn sig(s: &Signature) -> Adjudicator::Sig {
    Adjudicator::Sig {
        r: B256::from(s.r().to_be_bytes::<32>()),
        s: B256::from(s.s().to_be_bytes::<32>()),
        v: if s.v() { 28 } else { 27 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::B256;

    /// A state with locks, as the chain shows it (root and total), reads back without them and
    /// converts back to exactly what the chain registered; a lock-free one is not "withheld".
    #[test]
    fn a_withheld_virtual_state_round_trips_to_the_registered_one() {
        let id = htlc::ChannelId(B256::repeat_byte(3));
        let lock = |n: u64, sender| Lock {
            id: htlc::HtlcId(n),
            amount: htlc::Amount(100 + u128::from(n)),
            hashlock: htlc::Hashlock(B256::repeat_byte(n as u8)),
            expiry: htlc::Expiry(1_000 + n),
            sender,
        };
        let full = ChannelState {
            version: 9,
            locks: vec![lock(0, Side::A), lock(1, Side::B)],
            ..ChannelState::opening(id, [htlc::Amount(5), htlc::Amount(7)])
        };
        let shown = state(&full).unwrap();
        let (read, locks) = withheld_virtual_state(&shown).unwrap();
        assert!(read.locks.is_empty());
        assert_eq!((read.version, read.balances), (9, full.balances));
        assert_eq!(locks.total, htlc::Amount(201));
        assert_eq!(locks.root, full.locks_root());
        assert_eq!(withheld_state(&read, &locks).unwrap(), shown);
        // Whole without locks: read by `resolved_virtual_state`, not here.
        let plain = state(&ChannelState {
            locks: Vec::new(),
            ..full
        })
        .unwrap();
        assert!(withheld_virtual_state(&plain).is_none());
        assert!(resolved_virtual_state(&plain, &[]).is_some());
    }
}
