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

/// The ABI form of a signature: `r`, `s` and `v` ∈ {27, 28}.
pub fn sig(s: &Signature) -> Adjudicator::Sig {
    Adjudicator::Sig {
        r: B256::from(s.r().to_be_bytes::<32>()),
        s: B256::from(s.s().to_be_bytes::<32>()),
        v: if s.v() { 28 } else { 27 },
    }
}
