//! Gossip: what hubs tell each other (and their clients) about the channels payments may cross.
//!
//! - A [`Announcement`] is a hub-to-hub channel signed by both its participants (each signs
//!   [`announcement_digest`] of the channel's parameters; their public keys, the onion keys of
//!   the route, are recovered from the signatures). A node believes one only once the chain
//!   shows the adjudicator holding funds for that channel (the capacity), so keys that signed
//!   for a channel that was never funded cannot add edges.
//! - A [`PolicyUpdate`] is one participant's forwarding policy for its direction of an
//!   announced channel, signed and timestamped: a newer one replaces an older one, one from the
//!   future is refused, and a node accepts at most one per direction per
//!   [`MIN_UPDATE_INTERVAL_SECS`] (rate limit); a disabled policy takes the edge out of routing
//!   (what a hub sends when it closes the channel).
//! - Entries whose both directions were not refreshed for [`STALE_SECS`] are pruned; a hub
//!   refreshes its own every [`REFRESH_SECS`].
//!
//! - A virtual channel between two announcing nodes (hubs joined over a third, ADR 0026) is
//!   announced too ([`GossipMsg::AnnounceVirtual`]): both parties sign
//!   [`virtual_announcement_digest`], which binds its capacity and its end. No chain read can
//!   show it (it is funded by guarantees, not by the adjudicator's holdings), so a node
//!   believes one only when both parties are nodes it already believes on chain (each a
//!   participant of a believed ledger announcement, or its own peer), at most
//!   [`MAX_VIRTUAL_PER_NODE`] per party, and only until its end.
//!
//! Everything here is a pure check; the node decides when to ask the chain, store and relay
//! (ADR 0027).

use crate::Amount;
use crate::forward::ForwardPolicy;
use crate::ids::ChannelId;
use crate::sig::{Keys, SignatureError};
use crate::state::ChannelParams;
use alloy::primitives::{Address, B256, Signature, keccak256};
use secp256k1::PublicKey;
use serde::{Deserialize, Serialize};

/// A policy update older than this is stale; a channel whose both directions are stale is
/// pruned (two weeks, as in the Lightning Network).
pub const STALE_SECS: u64 = 14 * 24 * 3600;
/// A hub signs its policies afresh this often, so they never go stale while it runs.
pub const REFRESH_SECS: u64 = 7 * 24 * 3600;
/// The least time between two accepted updates of one direction (a flood of updates from one
/// hub is dropped, not relayed).
pub const MIN_UPDATE_INTERVAL_SECS: u64 = 10;
/// How far ahead of our clock an update's timestamp may be.
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;
/// The most announcements a node keeps waiting for their chain check.
pub const MAX_PENDING: usize = 1_000;
/// The most of them one peer may have waiting (each costs us a chain read; a peer can sign
/// announcements of channels between keys of its own that were never funded).
pub const MAX_PENDING_PER_PEER: usize = 16;

/// The most virtual channels of one node a node believes (a party's keys back no on-chain
/// funds for them: this bounds what one funded node can add to everyone's graph).
pub const MAX_VIRTUAL_PER_NODE: usize = 16;

/// A hub-to-hub channel, signed by both participants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The channel's parameters (its id is theirs).
    pub params: ChannelParams,
    /// A's and B's signatures over [`announcement_digest`].
    pub sigs: [Signature; 2],
}

/// One participant's policy for its direction of an announced channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyUpdate {
    /// The channel.
    pub channel_id: ChannelId,
    /// The participant whose outgoing direction this is.
    pub node: Address,
    /// Its policy (a disabled one takes the direction out of routing).
    pub policy: ForwardPolicy,
    /// When it was signed (unix seconds); a newer one replaces it.
    pub timestamp: u64,
    /// The node's signature over [`PolicyUpdate::digest`].
    pub sig: Signature,
}

/// What a node knows of an announced channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipChannel {
    /// The announcement.
    pub ann: Announcement,
    /// The participants' public keys (recovered from the announcement).
    pub keys: [PublicKey; 2],
    /// What the adjudicator holds for it, as the chain showed.
    pub capacity: Amount,
    /// A's and B's latest policies.
    pub policies: [Option<PolicyUpdate>; 2],
    /// A virtual channel's end (chain time, seconds): it is believed until then, its
    /// capacity as both parties signed it ([`virtual_announcement_digest`]). `None`: a
    /// ledger, its capacity read on chain.
    pub virtual_until: Option<u64>,
}

impl GossipChannel {
    /// The latest update time of either direction (0 if none).
    pub fn last_update(&self) -> u64 {
        self.policies
            .iter()
            .flatten()
            .map(|u| u.timestamp)
            .max()
            .unwrap_or(0)
    }
}

/// A gossip message, sent unnumbered (best effort: a node that missed one catches up from a
/// full copy on its next connection).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipMsg {
    /// A channel announcement.
    Announce(Box<Announcement>),
    /// A policy update.
    Policy(Box<PolicyUpdate>),
    /// A virtual channel between two announcing nodes: its announcement's signatures are over
    /// [`virtual_announcement_digest`] of these figures.
    AnnounceVirtual {
        /// The parameters and both parties' signatures.
        ann: Box<Announcement>,
        /// Its value, as both parties signed it.
        capacity: Amount,
        /// Its end (chain time, seconds).
        until: u64,
    },
}

/// Why a gossip message is not believed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GossipError {
    /// A signature is malformed or by someone other than the participant.
    #[error("bad signature: {0}")]
    Signature(#[from] SignatureError),
    /// The update is for a channel we do not believe in.
    #[error("unknown channel")]
    UnknownChannel,
    /// The update's node is not a participant.
    #[error("not a participant of the channel")]
    NotParticipant,
    /// An update no newer than the one we hold.
    #[error("stale update")]
    Stale,
    /// An update from too far in the future.
    #[error("update from the future")]
    Future,
    /// An update too soon after the last accepted one.
    #[error("rate limited")]
    RateLimited,
    /// A virtual channel past its end.
    #[error("virtual channel past its end")]
    Ended,
}

/// The digest each participant signs to announce channel `params`.
pub fn announcement_digest(params: &ChannelParams) -> B256 {
    keccak256(
        [
            b"vhub channel announcement".as_slice(),
            params.id().0.as_slice(),
        ]
        .concat(),
    )
}

/// The digest each party signs to announce virtual channel `params` of value `capacity`,
/// ending at `until` (a relay can change neither).
pub fn virtual_announcement_digest(params: &ChannelParams, capacity: Amount, until: u64) -> B256 {
    keccak256(
        [
            b"vhub virtual channel announcement".as_slice(),
            params.id().0.as_slice(),
            &capacity.0.to_be_bytes(),
            &until.to_be_bytes(),
        ]
        .concat(),
    )
}

impl Announcement {
    /// Our signature for announcing `params` (the peer's comes in its `AnnounceSig`).
    pub fn sign(params: &ChannelParams, keys: &Keys) -> Signature {
        keys.sign_digest(announcement_digest(params))
    }

    /// Check both signatures against the participants; returns their public keys.
    pub fn check(&self) -> Result<[PublicKey; 2], GossipError> {
        self.check_digest(announcement_digest(&self.params))
    }

    /// Check both signatures of a virtual channel's announcement of `capacity` until `until`;
    /// returns the parties' public keys.
    pub fn check_virtual(
        &self,
        capacity: Amount,
        until: u64,
    ) -> Result<[PublicKey; 2], GossipError> {
        self.check_digest(virtual_announcement_digest(&self.params, capacity, until))
    }

    fn check_digest(&self, d: B256) -> Result<[PublicKey; 2], GossipError> {
        let mut keys = Vec::with_capacity(2);
        for (sig, who) in self.sigs.iter().zip(self.params.participants) {
            keys.push(crate::sig::recover_key(d, sig, who)?);
        }
        Ok([keys[0], keys[1]])
    }
}

impl GossipChannel {
    /// What relays it: its announcement, as a ledger's or a virtual channel's.
    pub fn announce_msg(&self) -> GossipMsg {
        match self.virtual_until {
            Some(until) => GossipMsg::AnnounceVirtual {
                ann: Box::new(self.ann.clone()),
                capacity: self.capacity,
                until,
            },
            None => GossipMsg::Announce(Box::new(self.ann.clone())),
        }
    }
}

impl PolicyUpdate {
    /// The digest its node signs.
    pub fn digest(
        channel_id: ChannelId,
        node: Address,
        policy: &ForwardPolicy,
        timestamp: u64,
    ) -> B256 {
        // Postcard of plain fields cannot fail.
        let policy = postcard::to_allocvec(policy).unwrap_or_default();
        keccak256(
            [
                b"vhub policy update".as_slice(),
                channel_id.0.as_slice(),
                node.as_slice(),
                &timestamp.to_be_bytes(),
                &policy,
            ]
            .concat(),
        )
    }

    /// Our signed update of `policy` for `channel_id` at `timestamp`.
    pub fn sign(
        channel_id: ChannelId,
        policy: ForwardPolicy,
        timestamp: u64,
        keys: &Keys,
    ) -> PolicyUpdate {
        let node = keys.address();
        let sig = keys.sign_digest(Self::digest(channel_id, node, &policy, timestamp));
        PolicyUpdate {
            channel_id,
            node,
            policy,
            timestamp,
            sig,
        }
    }

    /// Whether to accept this update for `channel` at `now`: signed by a participant, newer
    /// than what we hold by at least the rate limit, not from the future. Returns the
    /// participant's index.
    pub fn check(&self, channel: &GossipChannel, now: u64) -> Result<usize, GossipError> {
        let side = channel
            .ann
            .params
            .participants
            .iter()
            .position(|p| *p == self.node)
            .ok_or(GossipError::NotParticipant)?;
        let d = Self::digest(self.channel_id, self.node, &self.policy, self.timestamp);
        crate::sig::verify(d, &self.sig, self.node)?;
        if self.timestamp > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(GossipError::Future);
        }
        if let Some(held) = &channel.policies[side] {
            if self.timestamp <= held.timestamp {
                return Err(GossipError::Stale);
            }
            if self.timestamp < held.timestamp.saturating_add(MIN_UPDATE_INTERVAL_SECS) {
                return Err(GossipError::RateLimited);
            }
        }
        Ok(side)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::fixtures::{keys, params};

    fn channel() -> (GossipChannel, Keys, Keys) {
        let (a, b) = (keys(1), keys(2));
        let p = params(&a, &b, 1);
        let ann = Announcement {
            sigs: [Announcement::sign(&p, &a), Announcement::sign(&p, &b)],
            params: p,
        };
        let ks = ann.check().unwrap();
        assert_eq!(ks, [a.public_key(), b.public_key()]);
        (
            GossipChannel {
                ann,
                keys: ks,
                capacity: Amount(10),
                policies: [None, None],
                virtual_until: None,
            },
            a,
            b,
        )
    }

    #[test]
    fn an_announcement_needs_both_participants() {
        let (c, a, _) = channel();
        let mut forged = c.ann.clone();
        forged.sigs[1] = Announcement::sign(&forged.params, &keys(9));
        assert!(matches!(
            forged.check(),
            Err(GossipError::Signature(SignatureError::WrongSigner { .. }))
        ));
        let mut swapped = c.ann.clone();
        swapped.sigs = [swapped.sigs[1], swapped.sigs[0]];
        assert!(swapped.check().is_err());
        // A signature for another channel does not carry over.
        let mut other = c.ann.clone();
        other.params.nonce = alloy::primitives::U256::from(2);
        assert!(other.check().is_err());
        let _ = a;
    }

    #[test]
    fn a_virtual_announcement_binds_its_capacity_and_end() {
        let (a, b) = (keys(1), keys(2));
        let p = params(&a, &b, 7);
        let d = virtual_announcement_digest(&p, Amount(500), 9_000);
        let ann = Announcement {
            sigs: [a.sign_digest(d), b.sign_digest(d)],
            params: p,
        };
        assert_eq!(
            ann.check_virtual(Amount(500), 9_000),
            Ok([a.public_key(), b.public_key()])
        );
        // A relay that raises the capacity or moves the end breaks both signatures.
        assert!(ann.check_virtual(Amount(501), 9_000).is_err());
        assert!(ann.check_virtual(Amount(500), 9_001).is_err());
        // Nor does it pass as a ledger's announcement, or a ledger's as a virtual channel's.
        assert!(ann.check().is_err());
        let (c, _, _) = channel();
        assert!(c.ann.check_virtual(Amount(10), 9_000).is_err());
    }

    #[test]
    fn policy_updates_are_signed_newer_not_future_and_rate_limited() {
        let (mut c, a, b) = channel();
        let id = c.ann.params.id();
        let u = PolicyUpdate::sign(id, ForwardPolicy::default(), 1_000, &a);
        assert_eq!(u.check(&c, 1_000), Ok(0));
        assert_eq!(
            PolicyUpdate::sign(id, ForwardPolicy::default(), 1_000, &b).check(&c, 1_000),
            Ok(1)
        );
        assert_eq!(
            PolicyUpdate::sign(id, ForwardPolicy::default(), 1_000, &keys(9)).check(&c, 1_000),
            Err(GossipError::NotParticipant)
        );
        // Signed by another key for A's direction.
        let mut forged = u.clone();
        forged.policy.base_fee = Amount(0);
        assert!(matches!(
            forged.check(&c, 1_000),
            Err(GossipError::Signature(_))
        ));
        let future = PolicyUpdate::sign(id, ForwardPolicy::default(), 2_000, &a);
        assert_eq!(future.check(&c, 1_000), Err(GossipError::Future));
        c.policies[0] = Some(u);
        let same = PolicyUpdate::sign(id, ForwardPolicy::default(), 1_000, &a);
        assert_eq!(same.check(&c, 1_000), Err(GossipError::Stale));
        let soon = PolicyUpdate::sign(id, ForwardPolicy::default(), 1_005, &a);
        assert_eq!(soon.check(&c, 1_010), Err(GossipError::RateLimited));
        let later = PolicyUpdate::sign(id, ForwardPolicy::default(), 1_010, &a);
        assert_eq!(later.check(&c, 1_010), Ok(0));
    }
}
