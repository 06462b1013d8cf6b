//! What a node concludes from what the chain shows: when a channel is funded, when to add its
//! collateral, and when a close registered on chain must be challenged.

use crate::amount::Amount;
use crate::ids::Side;
use crate::update::Snapshot;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::opening;
    use crate::ops::Limits;

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
