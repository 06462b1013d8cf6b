//! What a node concludes from what the chain shows: when a channel is funded, when to add its
//! collateral, and when a close registered on chain must be challenged.

use crate::amount::Amount;
use crate::ids::{HtlcId, Side};
use crate::state::{ChannelParams, ChannelState, Lock};
use crate::update::{SignedState, Snapshot};
use serde::{Deserialize, Serialize};

/// What the node adds to channels peers open with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CollateralPolicy {
    /// Our deposit into each channel a peer opened and funded (zero: none).
    pub collateral: Amount,
    /// What the peer must have deposited first (rule 10, issue 12 attack 2: collateral follows
    /// only a real deposit of the peer's).
    pub min_peer_deposit: Amount,
}

/// What the chain's figures mean for a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Funding {
    /// The adjudicator now holds the opening state's total: the channel is funded.
    pub newly_funded: bool,
    /// Deposit this much of ours (with a credit of it to follow).
    pub add_collateral: Option<Amount>,
}

/// What the chain's holdings `held` and per-participant `deposited` totals mean for a channel
/// with record `snap`, funded already or not (`was_funded`). Collateral is added once, when a
/// channel the peer opened (we are B) becomes funded, and only if the opening credits the
/// peer at least the minimum and the chain shows the peer deposited it.
pub fn funding(
    snap: &Snapshot,
    was_funded: bool,
    held: Amount,
    deposited: [Amount; 2],
    policy: CollateralPolicy,
) -> Funding {
    let total = snap.latest().state.total().unwrap_or(Amount::MAX);
    let newly_funded = !was_funded && held >= total;
    let peer = snap.me().other().index();
    let min = policy.min_peer_deposit;
    let peer_paid =
        !min.is_zero() && snap.latest().state.balances[peer] >= min && deposited[peer] >= min;
    let add = newly_funded && !policy.collateral.is_zero() && snap.me() == Side::B && peer_paid;
    Funding {
        newly_funded,
        add_collateral: add.then_some(policy.collateral),
    }
}

/// Whether a close registered on chain at `registered` must be answered with our latest
/// co-signed state (rule 8): ours is newer. An opening the peer never countersigned has nothing
/// to answer with.
pub fn must_challenge(snap: &Snapshot, registered: u64) -> bool {
    !snap.awaiting_countersignature() && snap.latest().state.version > registered
}

/// Key prefix of intents in the `chain` column family.
pub const INTENT_PREFIX: &[u8] = b"intent/";

/// A transaction the node has decided to send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Intent {
    /// Deposit `amount` into a channel that holds `expected_held`.
    Deposit {
        /// The channel.
        params: ChannelParams,
        /// Holdings before this deposit.
        expected_held: Amount,
        /// Amount deposited.
        amount: Amount,
        /// Whether the deposit is a top-up to be credited to us by a co-signed update once it
        /// is on chain (the opening deposit is already in the opening state).
        credit: bool,
    },
    /// Pay out a co-signed final state.
    CooperativeClose {
        /// The channel.
        params: ChannelParams,
        /// The final state with both signatures.
        state: SignedState,
        /// Not sent before this unix time (node clock): the side that proposed the close pays
        /// it out at once (0), the other only if nobody did within a grace period, so the two
        /// do not both pay gas for one payout.
        not_before: u64,
    },
    /// Answer a dispute registered with an older state: register our later co-signed one
    /// (rule 8: newer state wins).
    Challenge {
        /// The channel.
        params: ChannelParams,
        /// Our latest co-signed state.
        state: SignedState,
    },
    /// Register the preimage of the peer's lock `id` in the secret registry: the peer did not
    /// settle it off chain and its on-chain deadline has come (rule 12). One registration is
    /// global: it settles the lock in any dispute of the channel.
    RegisterSecret {
        /// The channel holding the lock.
        params: ChannelParams,
        /// The peer's lock.
        id: HtlcId,
        /// Its preimage.
        preimage: crate::ids::Preimage,
    },
    /// Start a dispute with our latest co-signed state: the peer does not settle off chain
    /// what we can claim (rule 12). Done once any dispute of the channel is on chain (an older
    /// one is challenged as the watcher reports it).
    Close {
        /// The channel.
        params: ChannelParams,
        /// Our latest co-signed state.
        state: SignedState,
    },
    /// Pay out the disputed state once its challenge window is over. Superseded (and done) if
    /// a later state is registered first: the node then writes the conclusion of that one.
    Conclude {
        /// The channel.
        params: ChannelParams,
        /// The state registered on chain (its fingerprint must match).
        state: ChannelState,
        /// Not sent before the chain's clock reaches this (unix seconds): the window's end,
        /// plus a grace for side B so that A and B do not both pay gas for one payout.
        not_before: u64,
    },
    /// Settle a lock of the concluded state that pays us: the peer's lock whose preimage is
    /// registered in time, or our own lock refunded after its expiry (rule 12). Sent only once
    /// the registry and the chain's clock say it pays us; done once resolved or once it is
    /// clear it never will pay us (the peer revealed our lock's preimage in time: the peer
    /// unlocks it, and the node has settled upstream with that preimage).
    Unlock {
        /// The channel.
        params: ChannelParams,
        /// The concluded state.
        state: ChannelState,
        /// The lock to settle.
        lock: HtlcId,
        /// Our side of the channel.
        me: Side,
    },
    /// Withdraw what the adjudicator owes us in `asset` and could not pay (our account refused
    /// the payout, a token blocked us): sent to `to`.
    Claim {
        /// The asset (`Address::ZERO`: ETH).
        asset: alloy::primitives::Address,
        /// Where the withdrawal goes.
        to: alloy::primitives::Address,
    },
    /// Split a virtual channel's guarantee in a concluded ledger state by the virtual
    /// channel's outcome (ADR 0026); see [`Resolution`].
    ResolveGuarantee(Box<Resolution>),
    /// Start a virtual channel's dispute from its guarantee in a ledger state registered on
    /// chain (`disputeVirtual`): its opening as funded, which its parties replace with their
    /// latest co-signed state. The hub's way to a recorded outcome when neither party
    /// registers one (ADR 0026). Done once the virtual channel is disputed, by anyone.
    DisputeVirtual(Box<VirtualDispute>),
}

/// The resolution of a virtual channel's guarantee in a concluded ledger state by the virtual
/// channel's outcome: its co-signed final state (`sigs` given), or the state of its finalized
/// on-chain dispute (`sigs` `None`). Sent once the chain's clock reaches `not_before` (the
/// virtual channel's window end, or its last lock's expiry); done once the guarantee is
/// resolved, by us or anyone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// The ledger channel.
    pub ledger: ChannelParams,
    /// Its concluded state, holding the guarantee.
    pub ledger_state: ChannelState,
    /// The virtual channel.
    pub virt: ChannelParams,
    /// Its outcome.
    pub virt_state: ChannelState,
    /// Both parties' signatures on a final outcome; `None` for a disputed one.
    pub sigs: Option<[alloy::primitives::Signature; 2]>,
    /// Not sent before the chain's clock reaches this (unix seconds).
    pub not_before: u64,
    /// The outcome's locks are not known to us (`virt_state` carries none): resolved by the
    /// adjudicator's `resolveGuaranteeWithheld` with the root and total the chain showed,
    /// once the grace after the guarantee's `locks_until` is over (ADR 0026).
    pub withheld: Option<WithheldLocks>,
}

/// The locks of a virtual channel's state registered on chain, as the chain shows them: their
/// root and total, not the locks themselves (only its parties hold those).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithheldLocks {
    /// The locks' Merkle root (ADR 0002).
    pub root: alloy::primitives::B256,
    /// Their total.
    pub total: crate::Amount,
}

/// What [`Intent::DisputeVirtual`] sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualDispute {
    /// The ledger channel.
    pub ledger: ChannelParams,
    /// Its state registered on chain, holding the guarantee.
    pub ledger_state: ChannelState,
    /// The virtual channel.
    pub virt: ChannelParams,
}

/// Whether settling `lock` on chain pays `me`, given when its preimage was registered (if it
/// was) and the chain's clock `chain_now`; `None` while it cannot be settled yet (not revealed,
/// not expired). Mirrors the adjudicator: a lock goes to its receiver if its preimage was
/// registered at or before its expiry, and back to its sender once it expired without that.
pub fn unlock_pays(
    lock: &Lock,
    me: Side,
    revealed_at: Option<u64>,
    chain_now: u64,
) -> Option<bool> {
    let revealed = match revealed_at {
        Some(t) if t <= lock.expiry.0 => true,
        _ if chain_now > lock.expiry.0 => false,
        _ => return None,
    };
    Some((lock.sender != me) == revealed)
}

/// The state of `snap` registered on chain at `version`: our latest co-signed one, or our own
/// proposal in flight (the peer may register it with its countersignature we never received).
/// Older co-signed states are never the final one: the node challenges them.
pub fn state_at(snap: &Snapshot, version: u64) -> Option<&ChannelState> {
    if snap.latest().state.version == version {
        return Some(&snap.latest().state);
    }
    snap.pending()
        .map(|p| &p.state)
        .filter(|s| s.version == version)
}

/// The intents that settle the concluded `state` for us: one [`Intent::Unlock`] per lock that
/// may pay us (each is sent once the chain decides it does).
pub fn unlocks(snap: &Snapshot, state: &ChannelState) -> Vec<Intent> {
    let me = snap.me();
    state
        .locks
        .iter()
        .filter(|l| {
            // The peer's lock pays us only with a preimage we know; ours, only back at expiry.
            l.sender == me || snap.claims.iter().any(|(id, _)| *id == l.id)
        })
        .map(|l| Intent::Unlock {
            params: snap.params().clone(),
            state: state.clone(),
            lock: l.id,
            me,
        })
        .collect()
}

impl Intent {
    /// The key of this intent in the `chain` column family: one per channel, purpose and
    /// distinguishing number (expected holdings for deposits, version for challenges).
    pub fn key(&self) -> Vec<u8> {
        if let Intent::Claim { asset, .. } = self {
            let mut k = INTENT_PREFIX.to_vec();
            k.extend_from_slice(b"claim/");
            k.extend_from_slice(asset.as_slice());
            return k;
        }
        let (tag, params, n): (&str, &ChannelParams, u128) = match self {
            Intent::Deposit {
                params,
                expected_held,
                ..
            } => ("deposit/", params, expected_held.0),
            Intent::CooperativeClose { params, .. } => ("close/", params, 0),
            Intent::Challenge { params, state } => {
                ("challenge/", params, u128::from(state.state.version))
            }
            Intent::RegisterSecret { params, id, .. } => ("secret/", params, u128::from(id.0)),
            Intent::Close { params, .. } => ("dispute/", params, 0),
            Intent::Conclude { params, state, .. } => {
                ("conclude/", params, u128::from(state.version))
            }
            Intent::Unlock { params, lock, .. } => ("unlock/", params, u128::from(lock.0)),
            Intent::DisputeVirtual(d) => {
                let (ledger, id) = (&d.ledger, d.virt.id().0);
                let mut n = [0u8; 16];
                n.copy_from_slice(&id[..16]);
                ("vdispute/", ledger, u128::from_be_bytes(n))
            }
            // One per virtual state: a later registration writes its own, and the older one
            // is dropped as soon as the chain refuses it (never deleting the newer one).
            Intent::ResolveGuarantee(r) => {
                let (ledger, id) = (&r.ledger, r.virt.id().0);
                let mut n = [0u8; 8];
                n.copy_from_slice(&id[..8]);
                let n =
                    (u128::from(u64::from_be_bytes(n)) << 64) | u128::from(r.virt_state.version);
                ("resolve/", ledger, n)
            }
            // Handled above: a claim is per asset, not per channel.
            Intent::Claim { .. } => return INTENT_PREFIX.to_vec(),
        };
        let mut k = INTENT_PREFIX.to_vec();
        k.extend_from_slice(tag.as_bytes());
        k.extend_from_slice(params.id().0.as_slice());
        k.extend_from_slice(&n.to_be_bytes());
        k
    }

    /// The channel the intent is about (a claim is about none).
    pub fn params(&self) -> Option<&ChannelParams> {
        match self {
            Intent::Deposit { params, .. }
            | Intent::CooperativeClose { params, .. }
            | Intent::Challenge { params, .. }
            | Intent::RegisterSecret { params, .. }
            | Intent::Close { params, .. }
            | Intent::Conclude { params, .. }
            | Intent::Unlock { params, .. } => Some(params),
            Intent::ResolveGuarantee(r) => Some(&r.ledger),
            Intent::DisputeVirtual(d) => Some(&d.ledger),
            Intent::Claim { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Expiry, Preimage};
    use crate::node::opening;
    use crate::ops::Limits;
    use proptest::prelude::*;

    fn lock(sender: Side, expiry: u64) -> Lock {
        Lock {
            id: HtlcId(1),
            amount: Amount(10),
            hashlock: Preimage([1; 32]).hashlock(),
            expiry: Expiry(expiry),
            sender,
        }
    }

    #[test]
    fn unlock_pays_the_receiver_if_revealed_in_time_else_the_sender_after_expiry() {
        let incoming = lock(Side::A, 100);
        // We are B, the receiver.
        assert_eq!(unlock_pays(&incoming, Side::B, Some(100), 50), Some(true));
        assert_eq!(unlock_pays(&incoming, Side::B, Some(101), 200), Some(false));
        assert_eq!(unlock_pays(&incoming, Side::B, None, 100), None);
        assert_eq!(unlock_pays(&incoming, Side::B, None, 101), Some(false));
        // The sender's view is the mirror.
        assert_eq!(unlock_pays(&incoming, Side::A, Some(100), 50), Some(false));
        assert_eq!(unlock_pays(&incoming, Side::A, None, 101), Some(true));
        // Revealed too late, still before expiry cannot happen on chain; after, it refunds.
        assert_eq!(unlock_pays(&incoming, Side::A, Some(150), 150), Some(true));
    }

    proptest! {
        /// Once decided, a lock pays exactly one side; undecided only while unrevealed and
        /// not expired.
        #[test]
        fn a_decided_lock_pays_exactly_one_side(
            sender in prop_oneof![Just(Side::A), Just(Side::B)],
            expiry in 0u64..1_000,
            revealed in proptest::option::of(0u64..1_000),
            now in 0u64..1_000,
        ) {
            let l = lock(sender, expiry);
            let (a, b) = (
                unlock_pays(&l, Side::A, revealed, now),
                unlock_pays(&l, Side::B, revealed, now),
            );
            match (a, b) {
                (Some(x), Some(y)) => prop_assert_ne!(x, y),
                (None, None) => prop_assert!(
                    revealed.is_none_or(|t| t > expiry) && now <= expiry
                ),
                _ => prop_assert!(false, "the two sides disagree on whether it is decided"),
            }
        }
    }

    #[test]
    fn funding_collateral_and_challenges() {
        let (a, b) = (
            super::super::fixtures::keys(1),
            super::super::fixtures::keys(2),
        );
        let params = super::super::fixtures::params(&a, &b, 1);
        let (proposed, sig) =
            opening::propose(params.clone(), &a, Limits::default(), Amount(500)).unwrap();
        let (hub, _) = opening::accept(
            params,
            b,
            Limits::default(),
            [Amount(500), Amount::ZERO],
            sig,
        )
        .unwrap();
        let hub = hub.snapshot();
        let pol = CollateralPolicy {
            collateral: Amount(1_000),
            min_peer_deposit: Amount(500),
        };
        let paid = [Amount(500), Amount::ZERO];
        // Funded with the peer's deposit: collateral once.
        assert_eq!(
            funding(hub, false, Amount(500), paid, pol),
            Funding {
                newly_funded: true,
                add_collateral: Some(Amount(1_000))
            }
        );
        // Not yet held, or funded already: nothing.
        assert!(!funding(hub, false, Amount(499), paid, pol).newly_funded);
        assert_eq!(
            funding(hub, true, Amount(500), paid, pol).add_collateral,
            None
        );
        // Held, but the chain does not show the peer deposited it (someone else did).
        let other = [Amount(499), Amount::ZERO];
        assert_eq!(
            funding(hub, false, Amount(500), other, pol),
            Funding {
                newly_funded: true,
                add_collateral: None
            }
        );
        // An opening below the minimum, no collateral configured, or a zero minimum: none.
        let high = CollateralPolicy {
            min_peer_deposit: Amount(501),
            ..pol
        };
        assert_eq!(
            funding(hub, false, Amount(500), paid, high).add_collateral,
            None
        );
        let none = CollateralPolicy {
            collateral: Amount::ZERO,
            ..pol
        };
        assert_eq!(
            funding(hub, false, Amount(500), paid, none).add_collateral,
            None
        );
        let zero = CollateralPolicy {
            min_peer_deposit: Amount::ZERO,
            ..pol
        };
        assert_eq!(
            funding(hub, false, Amount(500), paid, zero).add_collateral,
            None
        );
        // The opener (A) never adds collateral to its own channel.
        assert_eq!(
            funding(&proposed, false, Amount(500), paid, pol).add_collateral,
            None
        );
        // Challenges: only a newer co-signed state answers a close.
        assert!(!must_challenge(hub, 0));
        assert!(!must_challenge(&proposed, 0));
    }
}
