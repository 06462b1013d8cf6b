//! Virtual channels (ADR 0026): the terms of a virtual channel, the guarantee each ledger on its
//! path locks for it, how a guarantee splits for an outcome (the adjudicator's rule, mirrored),
//! the check a peer makes of its own leg, and the hub's rules for admitting one.
//!
//! A virtual channel V between A and B over hub H is an ordinary two-party channel (its own
//! [`ChannelParams`], the same update machine) that holds nothing on chain: the ledgers (A, H)
//! and (H, B) each lock a [`Guarantee`] of V's whole value for it. The hub stands for V's B on
//! the first and for V's A on the second, so whatever V's outcome `[vA, vB]`, it gets `vB` back
//! on one and `vA` on the other: exactly what it locked.
//!
//! Pure functions of plain data; nothing here signs, and nothing here decides to take part in a
//! virtual channel: the node does, and it agrees to a peer's guarantee operation only after the
//! checks below passed (rule 11).

use crate::amount::{Amount, AmountOverflow};
use crate::ids::{ChannelId, Expiry, Side};
use crate::ops::Limits;
use crate::state::{ChannelParams, ChannelState, Guarantee};
use alloy::primitives::Address;
use serde::{Deserialize, Serialize};

/// What a virtual channel is: its parameters, its opening balances and the end of its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualTerms {
    /// V's own parameters: participants [A, B], the ledgers' chain, adjudicator and asset.
    pub params: ChannelParams,
    /// V's opening balances [A's, B's]: what each guarantee locks, in total.
    pub opening: [Amount; 2],
    /// Chain time (seconds) by which V must be closed; the hub closes it then.
    pub expires_at: Expiry,
}

impl VirtualTerms {
    /// V's channel id.
    pub fn id(&self) -> ChannelId {
        self.params.id()
    }

    /// V's whole value: what every guarantee for it locks.
    pub fn value(&self) -> Result<Amount, AmountOverflow> {
        self.opening[0].checked_add(self.opening[1])
    }

    /// V's opening state (version 0), the one its parties sign first and the one a dispute
    /// from a guarantee registers.
    pub fn opening_state(&self) -> ChannelState {
        ChannelState::opening(self.id(), self.opening)
    }

    /// The bounds V's own states get: the node's `limits`, and no lock expiring after V's end
    /// (every guarantee settles V's locks by then on chain: [`Guarantee::locks_until`]).
    pub fn limits(&self, limits: Limits) -> Limits {
        Limits {
            latest_expiry: self.expires_at.min(limits.latest_expiry),
            ..limits
        }
    }

    /// The guarantee a ledger locks for V when its side `side_for_a` stands for V's A: that
    /// side gives V's A's opening balance, the other side V's B's.
    pub fn guarantee(&self, side_for_a: Side) -> Guarantee {
        let (from_a, from_b) = match side_for_a {
            Side::A => (self.opening[0], self.opening[1]),
            Side::B => (self.opening[1], self.opening[0]),
        };
        Guarantee {
            virtual_channel: self.id(),
            from_a,
            from_b,
            crossed: side_for_a == Side::B,
            locks_until: self.expires_at,
        }
    }
}

/// How a guarantee splits between its ledger's sides [A's, B's] when V's A ends with
/// `virtual_a`: the side standing for V's A gets `min(virtual_a, total)`, the other the rest
/// (the adjudicator's `_splitGuarantee`).
pub fn split(g: &Guarantee, virtual_a: Amount) -> Result<[Amount; 2], AmountOverflow> {
    let total = g.total()?;
    let for_a = virtual_a.min(total);
    let for_b = Amount(total.0 - for_a.0);
    Ok(match g.ledger_side_for(Side::A) {
        Side::A => [for_a, for_b],
        Side::B => [for_b, for_a],
    })
}

/// Why a virtual channel, or a leg of one, is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum VirtualError {
    /// V's parameters name another chain, adjudicator or asset than the ledger's.
    #[error("virtual channel on another chain, adjudicator or asset than its ledgers")]
    Mismatch,
    /// V's participants are not the ledgers' peers (A on the first, B on the second; another
    /// hub, neither of them, where the path goes on), or the hub is one of them.
    #[error("virtual channel participants do not match the path")]
    WrongParticipants,
    /// V's value is zero or above the hub's limit.
    #[error("virtual channel value {value} out of bounds (max {max})")]
    Value {
        /// What V would lock.
        value: Amount,
        /// The hub's limit.
        max: Amount,
    },
    /// V's life has ended already or lasts beyond the hub's limit.
    #[error("virtual channel lifetime out of bounds")]
    Lifetime,
    /// V's challenge window is longer than the hub allows (it bounds how long its guarantee
    /// can wait for V's dispute).
    #[error("virtual channel challenge window too long")]
    Window,
    /// The hub does not serve virtual channels whose next hop toward B is another hub
    /// ([`VirtualPolicy::toward_hubs`]).
    #[error("this hub serves no virtual channel toward another hub")]
    TowardHubs,
    /// Toward a next hub, the ledger's challenge window must end [`CHAIN_REACTION_SECS`]
    /// before the window of the ledger toward A (seconds).
    #[error(
        "the ledger toward the next hub has a challenge window of {toward_next} s; it must be at most the ledger toward A's {toward_a} s less {CHAIN_REACTION_SECS} s"
    )]
    ChainWindows {
        /// The ledger toward A's window.
        toward_a: u64,
        /// The ledger toward the next hub's window.
        toward_next: u64,
    },
    /// The guarantee proposed for a leg does not lock V's opening with the right orientation.
    #[error("guarantee does not match the virtual channel's opening")]
    WrongGuarantee,
    /// A final state of V that cannot release a guarantee off chain: not final, or with locks.
    #[error("not a final state without locks")]
    NotFinal,
    /// Amounts overflow.
    #[error("amount overflow")]
    Overflow,
}

impl From<AmountOverflow> for VirtualError {
    fn from(_: AmountOverflow) -> Self {
        VirtualError::Overflow
    }
}

/// The hub's rules for virtual channels over it (its collateral is at stake).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualPolicy {
    /// Flat fee for opening, paid by the opener on its ledger in the open's update.
    pub open_fee_base: Amount,
    /// Proportional fee for opening, millionths of V's value.
    pub open_fee_ppm: u32,
    /// Largest value of one virtual channel.
    pub max_value: Amount,
    /// Longest life of one virtual channel, seconds.
    pub max_lifetime_secs: u64,
    /// Longest challenge window of a virtual channel, seconds.
    pub max_window_secs: u64,
    /// Serve as a hub of a chain whose next hop toward V's B is another hub. Such a hub signs
    /// its release toward the next hub first, so it takes on a duty: to answer a dispute of
    /// its ledger toward A within [`CHAIN_REACTION_SECS`] (ADR 0026), with its ledgers toward
    /// other hubs opened with a window that much shorter. Off unless the operator chooses it
    /// (the last hub of a chain needs nothing).
    pub toward_hubs: bool,
}

impl Default for VirtualPolicy {
    fn default() -> Self {
        VirtualPolicy {
            open_fee_base: Amount(1_000_000_000),
            open_fee_ppm: 100,
            max_value: Amount(100_000_000_000_000_000_000),
            max_lifetime_secs: 30 * 86_400,
            max_window_secs: 86_400,
            toward_hubs: false,
        }
    }
}

impl VirtualPolicy {
    /// The opening fee for a virtual channel of `value`.
    pub fn fee(&self, value: Amount) -> Result<Amount, AmountOverflow> {
        let prop = value
            .0
            .checked_mul(u128::from(self.open_fee_ppm))
            .ok_or(AmountOverflow)?
            / 1_000_000;
        self.open_fee_base.checked_add(Amount(prop))
    }
}

/// The two legs of a virtual channel over one hub, as the hub admitted it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Legs {
    /// The guarantee on the ledger with V's A (A stands for V's A, the hub for V's B).
    pub toward_a: Guarantee,
    /// The guarantee on the ledger with V's B (the hub stands for V's A, B for V's B).
    pub toward_b: Guarantee,
    /// The opening fee A pays the hub.
    pub fee: Amount,
}

/// How much shorter a hub's ledger toward the next hub of a chain must be in its challenge
/// window than its ledger toward A, seconds: the time the hub has, once A's ledger is disputed,
/// to take the next hub's ledger to chain, learn there (final) whether the next hub completed
/// the release it signed, and answer A's dispute with A's release if it did (ADR 0026).
///
/// Derivation: two of rule 12's races one after the other, each noticing, inclusion and
/// finality ([`crate::forward::MIN_CHALLENGE_DURATION_SECS`], 1,668 s): our close of the next
/// ledger, then our answer to A's dispute after the next hub's registration is final.
pub const CHAIN_REACTION_SECS: u64 = 2 * crate::forward::MIN_CHALLENGE_DURATION_SECS;

/// The adjudicator's `WITHHELD_GRACE`: from a guarantee's `locks_until` plus this, a virtual
/// state registered with locks nobody supplied is resolved without them (its locked total to
/// the hub's side). Two of the longest ledger windows a node accepts
/// ([`crate::forward::MAX_CHALLENGE_DURATION_SECS`]) and four days: time for an honest party to
/// conclude its own ledger and resolve with the locks it holds (ADR 0026).
pub const WITHHELD_GRACE_SECS: u64 = 64 * 86_400;
const _: () =
    assert!(WITHHELD_GRACE_SECS >= 2 * crate::forward::MAX_CHALLENGE_DURATION_SECS + 4 * 86_400);

/// Where a hub stands on a virtual channel's path of hubs (ADR 0026).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The ledger toward V's A is with V's A itself (otherwise with the previous hub).
    pub first: bool,
    /// The ledger toward V's B is with V's B itself (otherwise with the next hub).
    pub last: bool,
}

/// The hub's check of a request to open `terms` from the peer of `ledger_a` to the peer of
/// `ledger_b`, at chain time `now`, as the only hub of the path: the path, its rules, and the
/// guarantee each leg locks.
pub fn admit(
    policy: &VirtualPolicy,
    hub: Address,
    terms: &VirtualTerms,
    ledger_a: &ChannelParams,
    ledger_b: &ChannelParams,
    now: Expiry,
) -> Result<Legs, VirtualError> {
    let only = Position {
        first: true,
        last: true,
    };
    admit_hop(policy, hub, terms, (ledger_a, ledger_b), only, now)
}

/// As [`admit`], for a hub at `position` on a path of hubs: a ledger toward a neighbouring
/// hub has that hub (neither of V's parties) as its other participant, each hub's two
/// neighbours differ, and every leg locks the same guarantee, oriented by which side stands
/// for V's A.
pub fn admit_hop(
    policy: &VirtualPolicy,
    hub: Address,
    terms: &VirtualTerms,
    (ledger_a, ledger_b): (&ChannelParams, &ChannelParams),
    position: Position,
    now: Expiry,
) -> Result<Legs, VirtualError> {
    let v = &terms.params;
    for l in [ledger_a, ledger_b] {
        if l.chain_id != v.chain_id || l.adjudicator != v.adjudicator || l.asset != v.asset {
            return Err(VirtualError::Mismatch);
        }
    }
    let hub_a = ledger_a
        .side_of(hub)
        .ok_or(VirtualError::WrongParticipants)?;
    let hub_b = ledger_b
        .side_of(hub)
        .ok_or(VirtualError::WrongParticipants)?;
    let (a, b) = (v.participants[0], v.participants[1]);
    if a == hub || b == hub || a == b {
        return Err(VirtualError::WrongParticipants);
    }
    let (prev, next) = (
        ledger_a.participant(hub_a.other()),
        ledger_b.participant(hub_b.other()),
    );
    let party_or_hub = |peer: Address, party: Address, is_party: bool| {
        if is_party {
            peer == party
        } else {
            peer != a && peer != b
        }
    };
    if prev == next
        || !party_or_hub(prev, a, position.first)
        || !party_or_hub(next, b, position.last)
    {
        return Err(VirtualError::WrongParticipants);
    }
    if !position.last {
        if !policy.toward_hubs {
            return Err(VirtualError::TowardHubs);
        }
        let (toward_a, toward_next) = (ledger_a.challenge_duration, ledger_b.challenge_duration);
        if toward_next.saturating_add(CHAIN_REACTION_SECS) > toward_a {
            return Err(VirtualError::ChainWindows {
                toward_a,
                toward_next,
            });
        }
    }
    let value = terms.value()?;
    if value == Amount::ZERO || value > policy.max_value {
        return Err(VirtualError::Value {
            value,
            max: policy.max_value,
        });
    }
    if terms.expires_at <= now || terms.expires_at.0 - now.0 > policy.max_lifetime_secs {
        return Err(VirtualError::Lifetime);
    }
    if v.challenge_duration > policy.max_window_secs {
        return Err(VirtualError::Window);
    }
    Ok(Legs {
        toward_a: terms.guarantee(hub_a.other()),
        toward_b: terms.guarantee(hub_b),
        fee: policy.fee(value)?,
    })
}

/// A peer's check of its own leg: on `ledger`, where it is `me` and its counterparty the hub,
/// the guarantee for V must lock V's opening with `me` standing for `me`'s side of V.
pub fn check_leg(
    terms: &VirtualTerms,
    ledger: &ChannelParams,
    me: Address,
    g: &Guarantee,
) -> Result<(), VirtualError> {
    let v = &terms.params;
    if ledger.chain_id != v.chain_id
        || ledger.adjudicator != v.adjudicator
        || ledger.asset != v.asset
    {
        return Err(VirtualError::Mismatch);
    }
    let my_virtual = v.side_of(me).ok_or(VirtualError::WrongParticipants)?;
    let my_ledger = ledger.side_of(me).ok_or(VirtualError::WrongParticipants)?;
    let side_for_a = match my_virtual {
        Side::A => my_ledger,
        Side::B => my_ledger.other(),
    };
    if *g != terms.guarantee(side_for_a) {
        return Err(VirtualError::WrongGuarantee);
    }
    Ok(())
}

/// What a leg's guarantee pays its ledger sides [A's, B's] for V's final state, the amounts of
/// its off-chain release (`RemoveGuarantee`). Only a final state without locks releases a
/// guarantee off chain; any other outcome settles on chain.
pub fn release(g: &Guarantee, final_state: &ChannelState) -> Result<[Amount; 2], VirtualError> {
    if !final_state.is_final
        || !final_state.locks.is_empty()
        || !final_state.guarantees.is_empty()
        || final_state.channel_id != g.virtual_channel
    {
        return Err(VirtualError::NotFinal);
    }
    Ok(split(g, final_state.balances[0])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::U256;
    use proptest::prelude::*;

    fn addr(b: u8) -> Address {
        Address::repeat_byte(b)
    }

    fn params(participants: [Address; 2], nonce: u64) -> ChannelParams {
        ChannelParams {
            chain_id: 31337,
            adjudicator: addr(0xad),
            participants,
            asset: Address::ZERO,
            challenge_duration: 3600,
            nonce: U256::from(nonce),
        }
    }

    const A: u8 = 1;
    const H: u8 = 2;
    const B: u8 = 3;

    /// The ledgers (A, H) and (H, B) in either participant order.
    fn ledgers(a_first: bool, h_first: bool) -> (ChannelParams, ChannelParams) {
        let la = if a_first {
            [addr(A), addr(H)]
        } else {
            [addr(H), addr(A)]
        };
        let lb = if h_first {
            [addr(H), addr(B)]
        } else {
            [addr(B), addr(H)]
        };
        (params(la, 1), params(lb, 2))
    }

    fn terms(a: u128, b: u128) -> VirtualTerms {
        VirtualTerms {
            params: params([addr(A), addr(B)], 7),
            opening: [Amount(a), Amount(b)],
            expires_at: Expiry(10_000),
        }
    }

    fn side_amount(ledger: &ChannelParams, who: Address, paid: [Amount; 2]) -> Amount {
        paid[ledger.side_of(who).unwrap().index()]
    }

    proptest! {
        #![proptest_config(testkit::config(512))]

        /// Whatever V's outcome and whatever the ledgers' participant orders: A gets its V
        /// balance on its leg, B its V balance on its leg, and the hub exactly what it locked
        /// (V's value) over both, each leg paying out exactly what it locked.
        #[test]
        fn the_hub_gets_back_exactly_its_collateral(
            a in 0u128..1u128 << 100,
            b in 0u128..1u128 << 100,
            moved in any::<u128>(),
            a_first in any::<bool>(),
            h_first in any::<bool>(),
        ) {
            prop_assume!(a + b > 0);
            let t = terms(a, b);
            let (la, lb) = ledgers(a_first, h_first);
            let legs = admit(&VirtualPolicy { max_value: Amount::MAX, ..VirtualPolicy::default() },
                addr(H), &t, &la, &lb, Expiry(0)).unwrap();
            check_leg(&t, &la, addr(A), &legs.toward_a).unwrap();
            check_leg(&t, &lb, addr(B), &legs.toward_b).unwrap();
            let value = a + b;
            let va = moved % (value + 1);
            let fin = ChannelState { is_final: true, ..ChannelState::opening(t.id(), [Amount(va), Amount(value - va)]) };
            let pa = release(&legs.toward_a, &fin).unwrap();
            let pb = release(&legs.toward_b, &fin).unwrap();
            prop_assert_eq!(pa[0].0 + pa[1].0, value);
            prop_assert_eq!(pb[0].0 + pb[1].0, value);
            prop_assert_eq!(side_amount(&la, addr(A), pa), Amount(va));
            prop_assert_eq!(side_amount(&lb, addr(B), pb), Amount(value - va));
            prop_assert_eq!(side_amount(&la, addr(H), pa).0 + side_amount(&lb, addr(H), pb).0, value);
            // The hub locked on each leg what V's other side brings: b toward A, a toward B.
            let locked_by_hub = |l: &ChannelParams, g: &Guarantee| {
                [g.from_a, g.from_b][l.side_of(addr(H)).unwrap().index()].0
            };
            prop_assert_eq!(locked_by_hub(&la, &legs.toward_a) + locked_by_hub(&lb, &legs.toward_b), value);
        }

        /// Over a chain of hubs A - H1 - H2 - B, in any participant order on every ledger: each
        /// hub admits its hop, the parties' legs check, and whatever V's outcome each hub gets
        /// back exactly V's value over its two legs, A its V balance and B its.
        #[test]
        fn every_hub_of_a_chain_gets_back_exactly_its_collateral(
            a in 0u128..1u128 << 100,
            b in 0u128..1u128 << 100,
            moved in any::<u128>(),
            orders in any::<[bool; 3]>(),
        ) {
            prop_assume!(a + b > 0);
            const H2: u8 = 4;
            let t = terms(a, b);
            let pair = |x: u8, y: u8, flip: bool, n| {
                params(if flip { [addr(y), addr(x)] } else { [addr(x), addr(y)] }, n)
            };
            let l1 = pair(A, H, orders[0], 1);
            // The hubs' ledger answers sooner than the party's (`CHAIN_REACTION_SECS`).
            let l2 = ChannelParams { challenge_duration: 3600 - CHAIN_REACTION_SECS, ..pair(H, H2, orders[1], 2) };
            let l3 = pair(H2, B, orders[2], 3);
            let policy = VirtualPolicy { max_value: Amount::MAX, toward_hubs: true, ..VirtualPolicy::default() };
            let first = Position { first: true, last: false };
            let last = Position { first: false, last: true };
            let h1 = admit_hop(&policy, addr(H), &t, (&l1, &l2), first, Expiry(0)).unwrap();
            let h2 = admit_hop(&policy, addr(H2), &t, (&l2, &l3), last, Expiry(0)).unwrap();
            // Both hubs of the middle ledger lock the same guarantee on it.
            prop_assert_eq!(h1.toward_b, h2.toward_a);
            check_leg(&t, &l1, addr(A), &h1.toward_a).unwrap();
            check_leg(&t, &l3, addr(B), &h2.toward_b).unwrap();
            let value = a + b;
            let va = moved % (value + 1);
            let fin = ChannelState { is_final: true, ..ChannelState::opening(t.id(), [Amount(va), Amount(value - va)]) };
            let p1 = release(&h1.toward_a, &fin).unwrap();
            let p2 = release(&h1.toward_b, &fin).unwrap();
            let p3 = release(&h2.toward_b, &fin).unwrap();
            prop_assert_eq!(side_amount(&l1, addr(A), p1), Amount(va));
            prop_assert_eq!(side_amount(&l3, addr(B), p3), Amount(value - va));
            prop_assert_eq!(side_amount(&l1, addr(H), p1).0 + side_amount(&l2, addr(H), p2).0, value);
            prop_assert_eq!(side_amount(&l2, addr(H2), p2).0 + side_amount(&l3, addr(H2), p3).0, value);
        }

        /// A leg proposed with any other guarantee than the admitted one is refused by its peer.
        #[test]
        fn a_peer_refuses_a_leg_that_is_not_the_opening(
            a in 1u128..1000, b in 0u128..1000, da in 0u128..2, db in 0u128..2, flip in any::<bool>(),
        ) {
            let t = terms(a, b);
            let (la, _) = ledgers(true, true);
            let good = t.guarantee(Side::A);
            let bad = Guarantee {
                from_a: Amount(good.from_a.0 + da),
                from_b: Amount(good.from_b.0 + db),
                crossed: good.crossed ^ flip,
                ..good
            };
            prop_assume!(bad != good);
            prop_assert_eq!(check_leg(&t, &la, addr(A), &bad), Err(VirtualError::WrongGuarantee));
        }
    }

    #[test]
    fn a_hub_of_a_chain_checks_who_its_neighbours_are() {
        const H2: u8 = 4;
        let policy = VirtualPolicy {
            toward_hubs: true,
            ..VirtualPolicy::default()
        };
        let t = terms(600, 0);
        let now = Expiry(9_000);
        let (la, _) = ledgers(true, true);
        let toward_h2 = ChannelParams {
            challenge_duration: 3600 - CHAIN_REACTION_SECS,
            ..params([addr(H), addr(H2)], 2)
        };
        let (first, last, middle, only) = (
            Position {
                first: true,
                last: false,
            },
            Position {
                first: false,
                last: true,
            },
            Position {
                first: false,
                last: false,
            },
            Position {
                first: true,
                last: true,
            },
        );
        let ok = admit_hop(&policy, addr(H), &t, (&la, &toward_h2), first, now);
        assert!(ok.is_ok(), "{ok:?}");
        // The next hub's ledger must answer a window sooner than the party's.
        let slow = ChannelParams {
            challenge_duration: 3601 - CHAIN_REACTION_SECS,
            ..toward_h2.clone()
        };
        assert_eq!(
            admit_hop(&policy, addr(H), &t, (&la, &slow), first, now),
            Err(VirtualError::ChainWindows {
                toward_a: 3600,
                toward_next: 3601 - CHAIN_REACTION_SECS
            })
        );
        // Only a hub whose operator chose it serves a next hop that is a hub.
        let cautious = VirtualPolicy::default();
        assert_eq!(
            admit_hop(&cautious, addr(H), &t, (&la, &toward_h2), first, now),
            Err(VirtualError::TowardHubs)
        );
        for (l, position) in [((&la, &toward_h2), only), ((&la, &toward_h2), middle)] {
            assert_eq!(
                admit_hop(&policy, addr(H), &t, l, position, now),
                Err(VirtualError::WrongParticipants),
                "{position:?}"
            );
        }
        // A neighbouring "hub" that is V's B, or the same peer on both sides.
        let (_, lb) = ledgers(true, true);
        assert_eq!(
            admit_hop(&policy, addr(H), &t, (&la, &lb), first, now),
            Err(VirtualError::WrongParticipants)
        );
        let back = ChannelParams {
            challenge_duration: 1800,
            ..params([addr(H2), addr(H)], 3)
        };
        assert_eq!(
            admit_hop(&policy, addr(H), &t, (&back, &toward_h2), middle, now),
            Err(VirtualError::WrongParticipants)
        );
        let to_b = params([addr(B), addr(H2)], 4);
        assert!(admit_hop(&policy, addr(H2), &t, (&toward_h2, &to_b), last, now).is_ok());
        assert_eq!(
            admit_hop(&policy, addr(H2), &t, (&toward_h2, &to_b), only, now),
            Err(VirtualError::WrongParticipants)
        );
    }

    #[test]
    fn the_hub_refuses_what_its_rules_do_not_allow() {
        let policy = VirtualPolicy {
            max_value: Amount(1000),
            max_lifetime_secs: 100,
            max_window_secs: 3600,
            ..VirtualPolicy::default()
        };
        let (la, lb) = ledgers(true, true);
        let now = Expiry(9_950);
        assert!(admit(&policy, addr(H), &terms(600, 400), &la, &lb, now).is_ok());
        assert!(matches!(
            admit(&policy, addr(H), &terms(600, 401), &la, &lb, now),
            Err(VirtualError::Value { .. })
        ));
        assert!(matches!(
            admit(&policy, addr(H), &terms(0, 0), &la, &lb, now),
            Err(VirtualError::Value { .. })
        ));
        assert_eq!(
            admit(&policy, addr(H), &terms(1, 1), &la, &lb, Expiry(10_000)),
            Err(VirtualError::Lifetime)
        );
        assert_eq!(
            admit(&policy, addr(H), &terms(1, 1), &la, &lb, Expiry(9_899)),
            Err(VirtualError::Lifetime)
        );
        // The legs swapped: V's A is not the first ledger's peer.
        assert_eq!(
            admit(&policy, addr(H), &terms(1, 1), &lb, &la, now),
            Err(VirtualError::WrongParticipants)
        );
        // The hub as a participant of V.
        let mut t = terms(1, 1);
        t.params.participants[1] = addr(H);
        assert_eq!(
            admit(&policy, addr(H), &t, &la, &lb, now),
            Err(VirtualError::WrongParticipants)
        );
        // Another asset.
        let mut t = terms(1, 1);
        t.params.asset = addr(0x70);
        assert_eq!(
            admit(&policy, addr(H), &t, &la, &lb, now),
            Err(VirtualError::Mismatch)
        );
        let mut t = terms(1, 1);
        t.params.challenge_duration = 3601;
        assert_eq!(
            admit(&policy, addr(H), &t, &la, &lb, now),
            Err(VirtualError::Window)
        );
    }

    #[test]
    fn only_a_final_state_without_locks_releases_a_guarantee() {
        let t = terms(5, 5);
        let g = t.guarantee(Side::A);
        let open = t.opening_state();
        assert_eq!(release(&g, &open), Err(VirtualError::NotFinal));
        let fin = ChannelState {
            is_final: true,
            ..open.clone()
        };
        assert_eq!(release(&g, &fin), Ok([Amount(5), Amount(5)]));
        let other = ChannelState {
            channel_id: ChannelId(alloy::primitives::B256::repeat_byte(9)),
            ..fin
        };
        assert_eq!(release(&g, &other), Err(VirtualError::NotFinal));
    }

    #[test]
    fn the_fee_is_base_plus_proportional() {
        let p = VirtualPolicy {
            open_fee_base: Amount(10),
            open_fee_ppm: 1000,
            ..VirtualPolicy::default()
        };
        assert_eq!(p.fee(Amount(1_000_000)), Ok(Amount(1010)));
        assert_eq!(p.fee(Amount::MAX), Err(AmountOverflow));
    }
}
