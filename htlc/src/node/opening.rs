//! The opening handshake: the opener (A) signs the opening state and waits for the peer's
//! countersignature; the peer, once it admits the channel ([`super::admission::admit_open`]),
//! countersigns.
//!
//! ```text
//!  A (opener)                                   B
//!   | propose: snapshot with A's signature and   |
//!   | a placeholder for B's (persisted)          |
//!   |---- OpenChannel{params, balances, sigA} -->|  admit_open, then accept:
//!   |                                            |  co-signed machine (persisted)
//!   |<------------- ChannelAccepted{sigB} -------|
//!   | countersigned: the machine, once sigB      |
//!   | verifies (persisted)                       |
//! ```
//!
//! Until B countersigns, A's record holds a placeholder signature (r = s = 0) that never
//! verifies, so it can never pass for a real one, and the channel takes no update.

use crate::amount::Amount;
use crate::ids::Side;
use crate::ops::{Limits, NextIds};
use crate::sig::Keys;
use crate::state::{ChannelParams, ChannelState};
use crate::update::{Channel, ProtocolError, SignedState, Snapshot, sign_state};
use alloy::primitives::{Signature, U256};
use std::collections::VecDeque;

/// Stands for the counterparty's signature while an opening awaits it.
fn placeholder() -> Signature {
    Signature::new(U256::ZERO, U256::ZERO, false)
}

/// Our opening proposal as A, depositing `deposit` (the peer starts at zero): the record to
/// persist, and our signature to send.
pub fn propose(
    params: ChannelParams,
    keys: &Keys,
    limits: Limits,
    deposit: Amount,
) -> Result<(Snapshot, Signature), ProtocolError> {
    if params.participants[0] != keys.address() {
        return Err(ProtocolError::InvalidState("the opener is participant A"));
    }
    let balances = [deposit, Amount::ZERO];
    let state = ChannelState::opening(params.id(), balances);
    state.total().map_err(|_| ProtocolError::Overflow)?;
    let sig = sign_state(&params, keys, &state)?;
    let snap = Snapshot {
        me: Side::A,
        limits,
        latest: SignedState {
            state,
            sigs: [sig, placeholder()],
        },
        next_ids: NextIds::default(),
        version_floor: 0,
        pending: None,
        queue: VecDeque::new(),
        alloc_id: 0,
        await_leader: false,
        doomed: Vec::new(),
        rejects_in_row: 0,
        holdings: deposit,
        deposited: [Amount::ZERO; 2],
        credited: balances,
        agreed: Vec::new(),
        claims: Vec::new(),
        frozen: false,
        params,
    };
    Ok((snap, sig))
}

impl Snapshot {
    /// Whether this is an opening we proposed that the peer has not countersigned yet.
    pub fn awaiting_countersignature(&self) -> bool {
        self.latest.sigs[self.me.other().index()] == placeholder()
    }

    /// The peer's countersignature `sig` on this proposed opening: the co-signed machine, if
    /// `sig` verifies. Nothing changes otherwise.
    pub fn countersigned(&self, keys: Keys, sig: Signature) -> Result<Channel, ProtocolError> {
        if !self.awaiting_countersignature() {
            return Err(ProtocolError::InvalidState(
                "not awaiting a countersignature",
            ));
        }
        let mut signed = self.latest.clone();
        signed.sigs[self.me.other().index()] = sig;
        Channel::from_cosigned(self.params.clone(), keys, self.limits, signed)
    }
}

/// Accept a peer's opening with `balances` and its signature `theirs`: the co-signed machine
/// and our countersignature. Call only after admitting the channel.
pub fn accept(
    params: ChannelParams,
    keys: Keys,
    limits: Limits,
    balances: [Amount; 2],
    theirs: Signature,
) -> Result<(Channel, Signature), ProtocolError> {
    let state = ChannelState::opening(params.id(), balances);
    let ours = sign_state(&params, &keys, &state)?;
    let me = params
        .side_of(keys.address())
        .ok_or(ProtocolError::InvalidState("our key is not a participant"))?;
    let mut sigs = [theirs; 2];
    sigs[me.index()] = ours;
    let machine = Channel::from_cosigned(params, keys, limits, SignedState { state, sigs })?;
    Ok((machine, ours))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_accept_countersign_and_forgeries() {
        use super::super::fixtures::keys;
        let (a, b, c) = (keys(1), keys(2), keys(3));
        let p = super::super::fixtures::params(&a, &b, 7);
        let (snap, sig_a) = propose(p.clone(), &a, Limits::default(), Amount(500)).unwrap();
        assert!(snap.awaiting_countersignature());
        // Only A may propose.
        assert!(propose(p.clone(), &b, Limits::default(), Amount(1)).is_err());
        // B countersigns.
        let (mb, sig_b) = accept(
            p.clone(),
            b.clone(),
            Limits::default(),
            [Amount(500), Amount::ZERO],
            sig_a,
        )
        .unwrap();
        assert!(!mb.snapshot().awaiting_countersignature());
        // A forged or wrong countersignature changes nothing.
        let forged = sign_state(&p, &c, &snap.latest().state).unwrap();
        assert!(snap.countersigned(a.clone(), forged).is_err());
        assert!(snap.countersigned(a.clone(), placeholder()).is_err());
        assert!(snap.awaiting_countersignature());
        let ma = snap.countersigned(a.clone(), sig_b).unwrap();
        assert_eq!(ma.latest(), mb.latest());
        assert!(!ma.snapshot().awaiting_countersignature());
        // Not twice.
        assert!(ma.snapshot().countersigned(a, sig_b).is_err());
        // B accepting with balances A did not sign: A's signature does not verify.
        assert!(accept(p, b, Limits::default(), [Amount(501), Amount::ZERO], sig_a).is_err());
    }
}
