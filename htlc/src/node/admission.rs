//! What a node lets a peer start: a channel the peer opens with it, and a route instruction
//! the peer leaves for an HTLC to come. Each refusal is typed; the pump sends it back and
//! changes nothing.

use crate::amount::Amount;
use crate::forward::{MAX_CHALLENGE_DURATION_SECS, MIN_CHALLENGE_DURATION_SECS, NextHop};
use crate::ids::{Expiry, Hashlock};
use crate::node::records::{Route, RouteHop};
use crate::onion::{HopPayload, OnionError, Peeled};
use crate::state::ChannelParams;
use alloy::primitives::{Address, B256};

/// What the node accepts in a channel a peer opens with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenPolicy {
    /// The chain channels must be on.
    pub chain_id: u64,
    /// The adjudicator channels must use.
    pub adjudicator: Address,
    /// Assets accepted (`Address::ZERO` is ETH).
    pub assets: Vec<Address>,
    /// The least the opener must deposit (rule 10: a channel costs its opener something).
    pub min_peer_deposit: Amount,
    /// Channels one peer may hold with us (rule 10).
    pub max_channels_per_peer: usize,
}

/// Why a peer's channel opening is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenRefusal {
    /// The participants are not `[opener, us]`.
    #[error("participants must be [opener, us]")]
    NotOurs,
    /// Another chain or adjudicator.
    #[error("wrong chain or adjudicator")]
    WrongChain,
    /// An asset the node does not take.
    #[error("asset {asset} is not accepted here (accepted: {accepted:?})")]
    Asset {
        /// The asset asked for.
        asset: Address,
        /// What is accepted.
        accepted: Vec<Address>,
    },
    /// Rule 12: a window too short to get a challenge in would let a stale close win; a longer
    /// one than the maximum locks funds for longer than anyone expects.
    #[error(
        "challenge window of {secs} s out of range ({MIN_CHALLENGE_DURATION_SECS}..={MAX_CHALLENGE_DURATION_SECS} s)"
    )]
    ChallengeWindow {
        /// The window asked for.
        secs: u64,
    },
    /// The opener deposits less than the minimum.
    #[error("an opening deposit of at least {min} wei is required")]
    DepositTooSmall {
        /// The minimum.
        min: Amount,
    },
    /// The opener assigns us a deposit: we fund our side only when we choose to.
    #[error("the opener cannot assign us a deposit")]
    DepositForUs,
    /// The channel exists already.
    #[error("channel exists")]
    Exists,
    /// The peer holds as many channels with us as it may.
    #[error("peer already has {count} channels")]
    TooMany {
        /// How many it holds.
        count: usize,
    },
}

/// Whether to accept the channel `params` that `peer` opens with us (`me`) with opening
/// `balances`, given whether that channel `exists` already and how many channels the peer
/// holds with us.
pub fn admit_open(
    policy: &OpenPolicy,
    (peer, me): (Address, Address),
    params: &ChannelParams,
    balances: [Amount; 2],
    (exists, peer_channels): (bool, usize),
) -> Result<(), OpenRefusal> {
    if params.participants != [peer, me] {
        return Err(OpenRefusal::NotOurs);
    }
    if params.chain_id != policy.chain_id || params.adjudicator != policy.adjudicator {
        return Err(OpenRefusal::WrongChain);
    }
    if !policy.assets.contains(&params.asset) {
        return Err(OpenRefusal::Asset {
            asset: params.asset,
            accepted: policy.assets.clone(),
        });
    }
    if !(MIN_CHALLENGE_DURATION_SECS..=MAX_CHALLENGE_DURATION_SECS)
        .contains(&params.challenge_duration)
    {
        return Err(OpenRefusal::ChallengeWindow {
            secs: params.challenge_duration,
        });
    }
    let min = policy.min_peer_deposit.max(Amount(1));
    if balances[0] < min {
        return Err(OpenRefusal::DepositTooSmall { min });
    }
    if !balances[1].is_zero() {
        return Err(OpenRefusal::DepositForUs);
    }
    if exists {
        return Err(OpenRefusal::Exists);
    }
    if peer_channels >= policy.max_channels_per_peer {
        return Err(OpenRefusal::TooMany {
            count: peer_channels,
        });
    }
    Ok(())
}

/// Why a route instruction is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteRefusal {
    /// Not a channel of this peer.
    #[error("no route instruction for this channel accepted")]
    Invalid,
    /// Rule 10: no more instructions waiting than the channel has lock slots (each is deleted
    /// when its HTLC is forwarded or failed, or collected after a while).
    #[error("too many route instructions waiting for their HTLCs")]
    TooMany,
}

/// Whether to read and store an onion that a peer leaves for its channel: `owned` says the
/// channel is the peer's, `waiting` how many of its instructions wait already, `max` its lock
/// slots. Checked before the onion is peeled (the peel costs an ECDH).
pub fn admit_route(owned: bool, (waiting, max): (usize, usize)) -> Result<(), RouteRefusal> {
    if !owned {
        return Err(RouteRefusal::Invalid);
    }
    if waiting >= max {
        return Err(RouteRefusal::TooMany);
    }
    Ok(())
}

/// What we keep of our onion layer for an HTLC `peer` is about to lock: its instruction, or
/// [`RouteHop::Unreadable`] when the layer does not read or asks the nonsensical (a zero
/// amount, a forward back to the sender). An unreadable layer's HTLC fails with
/// [`crate::FailureReason::InvalidOnion`]; with its secret when the MAC held (the payer reads
/// it from us), else without (the node before us reports it).
pub fn read_layer(
    peer: Address,
    hashlock: Hashlock,
    layer: Result<Peeled, OnionError>,
    now: Expiry,
) -> Route {
    let (hop, secret) = match layer {
        Err(_) => (RouteHop::Unreadable, B256::ZERO),
        Ok(Peeled {
            payload,
            next,
            secret,
        }) => {
            let hop = match (payload, next) {
                (
                    HopPayload::Forward {
                        next,
                        amount,
                        expiry,
                    },
                    Some(onion),
                ) if next != peer && !amount.is_zero() => RouteHop::Forward {
                    next_peer: next,
                    next: NextHop { amount, expiry },
                    onion: Box::new(onion),
                },
                (
                    HopPayload::Final {
                        amount,
                        expiry,
                        total,
                    },
                    None,
                ) => RouteHop::Final {
                    amount,
                    expiry,
                    total,
                },
                _ => RouteHop::Unreadable,
            };
            (hop, secret)
        }
    };
    Route {
        hashlock,
        hop,
        secret,
        stored_at: now.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Expiry, Hashlock};
    use alloy::primitives::U256;

    fn setup() -> (OpenPolicy, ChannelParams, Address, Address) {
        let (peer, me) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let policy = OpenPolicy {
            chain_id: 31337,
            adjudicator: Address::repeat_byte(0xAD),
            assets: vec![Address::ZERO],
            min_peer_deposit: Amount(100),
            max_channels_per_peer: 2,
        };
        let params = ChannelParams {
            chain_id: 31337,
            adjudicator: Address::repeat_byte(0xAD),
            participants: [peer, me],
            asset: Address::ZERO,
            challenge_duration: MIN_CHALLENGE_DURATION_SECS,
            nonce: U256::from(1),
        };
        (policy, params, peer, me)
    }

    #[test]
    fn each_open_refusal() {
        let (pol, params, peer, me) = setup();
        let ok = [Amount(100), Amount::ZERO];
        let admit = |p: &ChannelParams, b, e| admit_open(&pol, (peer, me), p, b, e);
        assert_eq!(admit(&params, ok, (false, 1)), Ok(()));
        let with = |f: &dyn Fn(&mut ChannelParams)| {
            let mut p = params.clone();
            f(&mut p);
            p
        };
        type Case = (ChannelParams, [Amount; 2], (bool, usize), OpenRefusal);
        let cases: Vec<Case> = vec![
            (
                with(&|p| p.participants = [me, peer]),
                ok,
                (false, 0),
                OpenRefusal::NotOurs,
            ),
            (
                with(&|p| p.participants = [peer, peer]),
                ok,
                (false, 0),
                OpenRefusal::NotOurs,
            ),
            (
                with(&|p| p.chain_id = 1),
                ok,
                (false, 0),
                OpenRefusal::WrongChain,
            ),
            (
                with(&|p| p.adjudicator = Address::ZERO),
                ok,
                (false, 0),
                OpenRefusal::WrongChain,
            ),
            (
                with(&|p| p.asset = Address::repeat_byte(9)),
                ok,
                (false, 0),
                OpenRefusal::Asset {
                    asset: Address::repeat_byte(9),
                    accepted: vec![Address::ZERO],
                },
            ),
            (
                with(&|p| p.challenge_duration = MIN_CHALLENGE_DURATION_SECS - 1),
                ok,
                (false, 0),
                OpenRefusal::ChallengeWindow {
                    secs: MIN_CHALLENGE_DURATION_SECS - 1,
                },
            ),
            (
                with(&|p| p.challenge_duration = MAX_CHALLENGE_DURATION_SECS + 1),
                ok,
                (false, 0),
                OpenRefusal::ChallengeWindow {
                    secs: MAX_CHALLENGE_DURATION_SECS + 1,
                },
            ),
            (
                params.clone(),
                [Amount(99), Amount::ZERO],
                (false, 0),
                OpenRefusal::DepositTooSmall { min: Amount(100) },
            ),
            (
                params.clone(),
                [Amount(100), Amount(1)],
                (false, 0),
                OpenRefusal::DepositForUs,
            ),
            (params.clone(), ok, (true, 0), OpenRefusal::Exists),
            (
                params.clone(),
                ok,
                (false, 2),
                OpenRefusal::TooMany { count: 2 },
            ),
        ];
        for (p, b, e, want) in cases {
            assert_eq!(admit(&p, b, e), Err(want.clone()), "{want}");
        }
        // A zero minimum still asks for something: a free channel costs the opener nothing.
        let free = OpenPolicy {
            min_peer_deposit: Amount::ZERO,
            ..pol.clone()
        };
        assert_eq!(
            admit_open(
                &free,
                (peer, me),
                &params,
                [Amount::ZERO, Amount::ZERO],
                (false, 0)
            ),
            Err(OpenRefusal::DepositTooSmall { min: Amount(1) })
        );
    }

    #[test]
    fn each_route_refusal() {
        assert_eq!(admit_route(true, (0, 1)), Ok(()));
        assert_eq!(admit_route(false, (0, 1)), Err(RouteRefusal::Invalid));
        assert_eq!(admit_route(true, (1, 1)), Err(RouteRefusal::TooMany));
    }

    /// A layer that reads is kept as it says; one that does not, or that asks for a zero
    /// amount or a loop back to the sender, is kept as unreadable (its HTLC will fail).
    #[test]
    fn each_layer_reading() {
        use crate::onion::{Packet, Sphinx};
        let (peer, next_peer) = (Address::repeat_byte(1), Address::repeat_byte(3));
        let secret = B256::repeat_byte(9);
        let packet = Packet::Sphinx(Sphinx {
            version: 0,
            ephemeral: vec![2; 33],
            routing: vec![],
            mac: B256::ZERO,
        });
        let fwd = |next, amount| Peeled {
            payload: HopPayload::Forward {
                next,
                amount: Amount(amount),
                expiry: Expiry(10),
            },
            next: Some(packet.clone()),
            secret,
        };
        let good = read_layer(peer, Hashlock(B256::ZERO), Ok(fwd(next_peer, 5)), Expiry(7));
        assert_eq!(good.secret, secret);
        assert_eq!(good.stored_at, 7);
        assert!(matches!(good.hop, RouteHop::Forward { next_peer: n, .. } if n == next_peer));
        for bad in [fwd(peer, 5), fwd(next_peer, 0)] {
            let r = read_layer(peer, Hashlock(B256::ZERO), Ok(bad), Expiry(7));
            assert_eq!((r.hop, r.secret), (RouteHop::Unreadable, secret));
        }
        let r = read_layer(
            peer,
            Hashlock(B256::ZERO),
            Err(OnionError::BadMac),
            Expiry(7),
        );
        assert_eq!((r.hop, r.secret), (RouteHop::Unreadable, B256::ZERO));
        let fin = Peeled {
            payload: HopPayload::Final {
                amount: Amount(4),
                expiry: Expiry(9),
                total: Amount(4),
            },
            next: None,
            secret,
        };
        assert!(matches!(
            read_layer(peer, Hashlock(B256::ZERO), Ok(fin), Expiry(7)).hop,
            RouteHop::Final {
                amount: Amount(4),
                ..
            }
        ));
    }
}
