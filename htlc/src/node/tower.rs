//! The watchtower: a node that keeps, for channels of its clients, the latest co-signed state
//! each client handed it, and answers a stale close of such a channel on chain while the
//! client is offline (rule 8: the newer co-signed state wins).
//!
//! A tower is the same [`super::Node`] as a hub or a peer, with [`TowerPolicy`] set: it admits
//! [`super::Body::Watch`] from anyone (a client needs no channel with it), keeps one state per
//! channel, and its chain watcher and sender are the node's own. What it decides is here; the
//! node writes it ([`super::Write::Watched`]) and sends its challenges as intents.
//!
//! What a tower must never do: take a state whose signatures are not both participants', take
//! one from a key that is not a participant, replace a state by an older one, or hold more
//! channels than its policy allows.
//!
//! Message sequence (client C, counterparty X, tower T):
//!
//! ```text
//!  C ──Watch{params, v5}──► T      (after each co-signed update; T keeps the highest version)
//!  C goes offline
//!  X ──close(v3)──► chain ──Disputed(v3)──► T ──challenge(v5)──► chain
//! ```

use crate::eip712::DomainSeparator;
use crate::ids::Side;
use crate::node::chain::Intent;
use crate::sig::verify;
use crate::state::ChannelParams;
use crate::update::SignedState;
use alloy::primitives::Address;
use serde::{Deserialize, Serialize};

/// What a tower accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TowerPolicy {
    /// Channels watched at most, all clients together.
    pub max_watched: usize,
    /// The chain channels must be on.
    pub chain_id: u64,
    /// The adjudicator channels must use.
    pub adjudicator: Address,
}

/// A channel a tower watches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watched {
    /// The participant that handed it over.
    pub client: Address,
    /// The channel.
    pub params: ChannelParams,
    /// The latest co-signed state it handed over.
    pub state: SignedState,
}

/// Why a tower refused a state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchRefusal {
    /// This node is not a watchtower.
    #[error("this node is not a watchtower")]
    NotATower,
    /// The sender is not a participant of the channel.
    #[error("only a participant may hand over a channel's state")]
    NotAParticipant,
    /// Another chain or adjudicator.
    #[error("the channel is on another chain or adjudicator")]
    WrongDeployment,
    /// The state is of another channel.
    #[error("the state is of another channel")]
    WrongChannel,
    /// A signature is missing or wrong.
    #[error("the state is not signed by both participants")]
    BadSignature,
    /// The tower is full.
    #[error("the watchtower watches {0} channels already")]
    Full(usize),
}

/// Whether to keep `state` of `params`, handed over by `from`, given what is kept for the
/// channel (`kept`) and how many channels are watched (`watched`). `Ok(false)`: valid, but
/// not newer than what is kept (nothing to write).
pub fn admit(
    policy: Option<TowerPolicy>,
    from: Address,
    params: &ChannelParams,
    state: &SignedState,
    kept: Option<&Watched>,
    watched: usize,
) -> Result<bool, WatchRefusal> {
    let policy = policy.ok_or(WatchRefusal::NotATower)?;
    if params.side_of(from).is_none() {
        return Err(WatchRefusal::NotAParticipant);
    }
    if params.chain_id != policy.chain_id || params.adjudicator != policy.adjudicator {
        return Err(WatchRefusal::WrongDeployment);
    }
    if state.state.channel_id != params.id() {
        return Err(WatchRefusal::WrongChannel);
    }
    let digest = DomainSeparator::new(params)
        .digest(&state.state)
        .map_err(|_| WatchRefusal::BadSignature)?;
    for side in [Side::A, Side::B] {
        verify(digest, &state.sigs[side.index()], params.participant(side))
            .map_err(|_| WatchRefusal::BadSignature)?;
    }
    match kept {
        Some(k) => Ok(k.state.state.version < state.state.version),
        None if watched >= policy.max_watched => Err(WatchRefusal::Full(watched)),
        None => Ok(true),
    }
}

/// The answer to a close registered on chain at `registered` for a watched channel: a
/// challenge with the kept state if it is newer.
pub fn answer(w: &Watched, registered: u64) -> Option<Intent> {
    (w.state.state.version > registered).then(|| Intent::Challenge {
        params: w.params.clone(),
        state: w.state.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Amount;
    use crate::node::fixtures::{keys, params};
    use crate::state::ChannelState;
    use crate::update::sign_state;

    fn signed(p: &ChannelParams, a: u8, b: u8, version: u64) -> SignedState {
        let mut state = ChannelState::opening(p.id(), [Amount(100), Amount::ZERO]);
        state.version = version;
        SignedState {
            sigs: [
                sign_state(p, &keys(a), &state).unwrap(),
                sign_state(p, &keys(b), &state).unwrap(),
            ],
            state,
        }
    }

    #[test]
    fn a_tower_keeps_only_valid_newer_states_of_participants_up_to_its_size() {
        let p = params(&keys(1), &keys(2), 1);
        let policy = Some(TowerPolicy {
            max_watched: 1,
            chain_id: p.chain_id,
            adjudicator: p.adjudicator,
        });
        let client = keys(1).address();
        let v3 = signed(&p, 1, 2, 3);
        assert_eq!(admit(policy, client, &p, &v3, None, 0), Ok(true));
        assert_eq!(
            admit(None, client, &p, &v3, None, 0),
            Err(WatchRefusal::NotATower)
        );
        assert_eq!(
            admit(policy, keys(9).address(), &p, &v3, None, 0),
            Err(WatchRefusal::NotAParticipant)
        );
        // One signature by a stranger.
        let forged = signed(&p, 1, 9, 4);
        assert_eq!(
            admit(policy, client, &p, &forged, None, 0),
            Err(WatchRefusal::BadSignature)
        );
        // Another channel's state, another deployment.
        let other = params(&keys(1), &keys(2), 2);
        assert_eq!(
            admit(policy, client, &p, &signed(&other, 1, 2, 3), None, 0),
            Err(WatchRefusal::WrongChannel)
        );
        let mut elsewhere = p.clone();
        elsewhere.chain_id = 99;
        assert_eq!(
            admit(policy, client, &elsewhere, &v3, None, 0),
            Err(WatchRefusal::WrongDeployment)
        );
        // Full for a new channel, but a kept one still takes newer states, never older.
        assert_eq!(
            admit(policy, client, &p, &v3, None, 1),
            Err(WatchRefusal::Full(1))
        );
        let kept = Watched {
            client,
            params: p.clone(),
            state: v3.clone(),
        };
        assert_eq!(
            admit(policy, client, &p, &signed(&p, 1, 2, 4), Some(&kept), 1),
            Ok(true)
        );
        assert_eq!(
            admit(policy, client, &p, &signed(&p, 1, 2, 2), Some(&kept), 1),
            Ok(false)
        );
        // A close older than the kept state is answered; one at it or newer is not.
        assert!(matches!(answer(&kept, 2), Some(Intent::Challenge { state, .. }) if state == v3));
        assert_eq!(answer(&kept, 3), None);
    }
}
