//! The node's part in gossip (module [`crate::node::gossip`], ADR 0027): announcing its own
//! hub-to-hub channels, believing others' once the chain shows them funded, keeping policies
//! current, relaying what it newly believes, and handing its whole table to a peer that
//! connects (a new node catches up from one hub).
//!
//! ```text
//!  H1                                H2                                 peers of H2
//!  | channel funded: AnnounceSig --->| channel funded: AnnounceSig --> H1
//!  |   (both sides, numbered)        | both signatures: believe (own channel, funded),
//!  |                                 | sign our PolicyUpdate; relay -----> Gossip(Announce),
//!  |                                 |                                     Gossip(Policy)
//!  |                                 |           a stranger's Announce: check the signatures,
//!  |                                 |           ask the chain (queries), believe if held > 0
//! ```
//!
//! Who may send what: `AnnounceSig` only the channel's peer, for a funded channel; gossip
//! frames only a peer with a funded channel (a stranger's are dropped without a write). Only a
//! node that announces ([`super::Config::announce`]: a hub) relays and serves the table.

use super::{Node, Pending};
use crate::Amount;
use crate::ids::{ChannelId, Expiry};
use crate::node::gossip::{
    Announcement, GossipChannel, GossipMsg, MAX_PENDING, MAX_PENDING_PER_PEER,
    MIN_UPDATE_INTERVAL_SECS, PolicyUpdate, REFRESH_SECS, STALE_SECS,
};
use crate::node::message::{Body, ErrorCode, Frame};
use crate::node::records::Write;
use crate::sig::recover_key;
use crate::state::ChannelParams;
use alloy::primitives::{Address, Signature};
use std::collections::BTreeSet;

impl Node {
    /// Our own funded channel `id` may be announced: send the peer our signature of it and our
    /// policy for it (once the peer's come back, both of us hold the announcement).
    pub(super) fn announce_own(&mut self, now: Expiry, id: ChannelId, p: &mut Pending) {
        if !self.config.announce {
            return;
        }
        let Some(e) = self.channels.get(&id) else {
            return;
        };
        if !e.funded || e.concluded || e.via.is_some() || self.book.gossip.contains_key(&id) {
            return;
        }
        let (peer, params) = (e.peer, e.machine.snapshot().params().clone());
        let sig = Announcement::sign(&params, &self.keys);
        let policy = PolicyUpdate::sign(id, self.config.policy, now.0, &self.keys);
        self.send(
            peer,
            Body::AnnounceSig {
                channel_id: id,
                sig,
                policy: Box::new(policy),
            },
            p,
        );
    }

    /// Announce our funded channel `id` (channels opened on chain are announced when seen
    /// funded; this is for channels added co-signed, without an opening).
    pub fn announce_channel(&mut self, now: Expiry, id: ChannelId) -> super::Output {
        let mut p = Pending::default();
        self.announce_own(now, id, &mut p);
        self.finish(now, p)
    }

    /// The peer's signature announcing our channel `id`. Returns false if refused.
    pub(super) fn on_announce_sig(
        &mut self,
        now: Expiry,
        from: Address,
        seq: u64,
        (id, sig, theirs): (ChannelId, Signature, PolicyUpdate),
        p: &mut Pending,
    ) -> bool {
        let Some(e) = self.channels.get(&id).filter(|e| e.peer == from) else {
            let detail = format!("no channel {id}");
            return self.refuse(from, seq, ErrorCode::UnknownChannel, detail, p);
        };
        if !self.config.announce || !e.funded || e.concluded || self.book.gossip.contains_key(&id) {
            // We do not announce (a client), or already did: nothing to do.
            return true;
        }
        let s = e.machine.snapshot();
        let params = s.params().clone();
        let digest = crate::node::gossip::announcement_digest(&params);
        if let Err(err) = recover_key(digest, &sig, from) {
            return self.refuse(from, seq, ErrorCode::Protocol, err.to_string(), p);
        }
        let ours = Announcement::sign(&params, &self.keys);
        let me = s.me().index();
        let mut sigs = [sig; 2];
        sigs[me] = ours;
        let ann = Announcement { params, sigs };
        let Ok(keys) = ann.check() else {
            return true;
        };
        let capacity = if self.config.on_chain {
            s.holdings()
        } else {
            Amount::MAX
        };
        let our_sig = ann.sigs[me];
        let ours = PolicyUpdate::sign(id, self.config.policy, now.0, &self.keys);
        let mut record = GossipChannel {
            ann: ann.clone(),
            keys,
            capacity,
            policies: [None, None],
        };
        record.policies[me] = Some(ours.clone());
        // The peer's policy for its direction, checked like any update.
        let theirs = (theirs.channel_id == id && theirs.node == from)
            .then(|| theirs.check(&record, now.0).ok().map(|side| (side, theirs)))
            .flatten();
        if let Some((side, u)) = &theirs {
            record.policies[*side] = Some(u.clone());
        }
        self.write(
            p,
            Write::Gossip {
                id,
                record: Some(Box::new(record)),
            },
        );
        self.relay(GossipMsg::Announce(Box::new(ann)), None, p);
        self.relay(GossipMsg::Policy(Box::new(ours.clone())), None, p);
        if let Some((_, u)) = theirs {
            self.relay(GossipMsg::Policy(Box::new(u)), None, p);
        }
        // Ours again: the peer may have had ours before it saw the channel funded, and ignored
        // it then (one that has the announcement already ignores this one).
        self.send(
            from,
            Body::AnnounceSig {
                channel_id: id,
                sig: our_sig,
                policy: Box::new(ours),
            },
            p,
        );
        true
    }

    /// A gossip frame from `from`: believe, stash or drop it (never refused with a write: gossip
    /// is best effort, and a stranger's is dropped).
    pub(super) fn on_gossip(
        &mut self,
        now: Expiry,
        from: Address,
        msg: GossipMsg,
        p: &mut Pending,
    ) {
        if !self.has_funded_channel(from) {
            return;
        }
        match msg {
            GossipMsg::Announce(ann) => {
                let id = ann.params.id();
                let from_peer = self
                    .pending_gossip
                    .values()
                    .filter(|(by, _)| *by == from)
                    .count();
                if self.book.gossip.contains_key(&id)
                    || self.pending_gossip.contains_key(&id)
                    || self.channels.contains_key(&id)
                    || self.pending_gossip.len() >= MAX_PENDING
                    || from_peer >= MAX_PENDING_PER_PEER
                {
                    return;
                }
                let Ok(keys) = ann.check() else {
                    return;
                };
                let record = GossipChannel {
                    ann: *ann,
                    keys,
                    capacity: Amount::ZERO,
                    policies: [None, None],
                };
                if self.config.on_chain {
                    // Believed once the chain shows the adjudicator holding funds for it.
                    self.pending_gossip.insert(id, (from, record));
                    p.out.queries.push(id);
                } else {
                    self.believe(
                        now,
                        GossipChannel {
                            capacity: Amount::MAX,
                            ..record
                        },
                        p,
                    );
                }
            }
            GossipMsg::Policy(u) => {
                let id = u.channel_id;
                if let Some(c) = self.book.gossip.get(&id)
                    && let Ok(side) = u.check(c, now.0)
                {
                    let mut c = c.clone();
                    c.policies[side] = Some((*u).clone());
                    self.write(
                        p,
                        Write::Gossip {
                            id,
                            record: Some(Box::new(c)),
                        },
                    );
                    // Each accepted update has the chain looked at again: a channel paid out
                    // since is pruned, a grown one gets its new capacity.
                    if self.config.on_chain && !self.channels.contains_key(&id) {
                        p.out.queries.push(id);
                    }
                    self.relay(GossipMsg::Policy(u), Some(from), p);
                } else if let Some((_, c)) = self.pending_gossip.get_mut(&id)
                    && let Ok(side) = u.check(c, now.0)
                {
                    c.policies[side] = Some(*u);
                }
            }
        }
    }

    /// The chain's holdings for a channel we were told about: believed if funded.
    pub(super) fn on_gossip_holdings(
        &mut self,
        now: Expiry,
        id: ChannelId,
        held: Amount,
        p: &mut Pending,
    ) {
        let Some((_, record)) = self.pending_gossip.remove(&id) else {
            // A believed channel checked again: pruned once paid out, else its capacity kept
            // current.
            if let Some(c) = self.book.gossip.get(&id)
                && c.capacity != held
            {
                let record = (!held.is_zero()).then(|| {
                    Box::new(GossipChannel {
                        capacity: held,
                        ..c.clone()
                    })
                });
                self.write(p, Write::Gossip { id, record });
            }
            return;
        };
        if held.is_zero() {
            return;
        }
        self.believe(
            now,
            GossipChannel {
                capacity: held,
                ..record
            },
            p,
        );
    }

    /// Keep `record` (its stashed policies checked again) and relay it.
    fn believe(&mut self, now: Expiry, mut record: GossipChannel, p: &mut Pending) {
        let id = record.ann.params.id();
        let stashed = std::mem::take(&mut record.policies);
        for u in stashed.into_iter().flatten() {
            if let Ok(side) = u.check(&record, now.0) {
                record.policies[side] = Some(u);
            }
        }
        self.relay(GossipMsg::Announce(Box::new(record.ann.clone())), None, p);
        for u in record.policies.iter().flatten() {
            self.relay(GossipMsg::Policy(Box::new(u.clone())), None, p);
        }
        self.write(
            p,
            Write::Gossip {
                id,
                record: Some(Box::new(record)),
            },
        );
    }

    /// Send `msg` to every peer we hold a funded channel with (but `except`), if we relay.
    fn relay(&mut self, msg: GossipMsg, except: Option<Address>, p: &mut Pending) {
        if !self.config.announce {
            return;
        }
        let peers: BTreeSet<Address> = self
            .channels
            .values()
            .filter(|e| e.funded && !e.concluded && e.via.is_none())
            .map(|e| e.peer)
            .filter(|peer| Some(*peer) != except)
            .collect();
        for peer in peers {
            p.out
                .transmits
                .push((peer, Frame::Gossip(Box::new(msg.clone()))));
        }
    }

    /// Our whole table, for a peer that just connected (if we serve one).
    pub(super) fn gossip_table(&self, peer: Address) -> Vec<(Address, Frame)> {
        if !self.config.announce || !self.has_funded_channel(peer) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for c in self.book.gossip.values() {
            out.push((
                peer,
                Frame::Gossip(Box::new(GossipMsg::Announce(Box::new(c.ann.clone())))),
            ));
            for u in c.policies.iter().flatten() {
                out.push((
                    peer,
                    Frame::Gossip(Box::new(GossipMsg::Policy(Box::new(u.clone())))),
                ));
            }
        }
        out
    }

    /// Prune stale channels, refresh our own policies before they go stale, and tell the
    /// network (a disabled policy) when a channel of ours we announced is closed.
    pub(super) fn gossip_timeout(&mut self, now: Expiry, p: &mut Pending) {
        let me = self.address();
        let mut writes = Vec::new();
        let mut relays = Vec::new();
        for (id, c) in &self.book.gossip {
            let side = c.ann.params.participants.iter().position(|x| *x == me);
            match side {
                Some(side) => {
                    let closed = self.channels.get(id).is_none_or(|e| e.concluded);
                    let held = c.policies[side].as_ref();
                    let due = held.is_none_or(|u| {
                        u.timestamp.saturating_add(REFRESH_SECS) <= now.0
                            || (closed && u.policy.enabled)
                    });
                    if due && held.is_none_or(|u| u.timestamp < now.0) {
                        let mut policy = self.config.policy;
                        policy.enabled &= !closed;
                        let u = PolicyUpdate::sign(*id, policy, now.0, &self.keys);
                        let mut c = c.clone();
                        c.policies[side] = Some(u.clone());
                        writes.push((*id, Some(c)));
                        relays.push(u);
                    }
                }
                None if c.last_update().saturating_add(STALE_SECS) <= now.0 => {
                    writes.push((*id, None));
                }
                None => {}
            }
        }
        for (id, record) in writes {
            let record = record.map(Box::new);
            self.write(p, Write::Gossip { id, record });
        }
        for u in relays {
            self.relay(GossipMsg::Policy(Box::new(u)), None, p);
        }
    }

    /// Change our forwarding policy: it applies to the next HTLC we decide, and every channel of
    /// ours we announced gets a signed update relayed to the network.
    pub fn update_policy(
        &mut self,
        now: Expiry,
        policy: crate::forward::ForwardPolicy,
    ) -> super::Output {
        let mut p = Pending::default();
        self.config.policy = policy;
        let me = self.address();
        let ours: Vec<(ChannelId, usize)> = self
            .book
            .gossip
            .iter()
            .filter_map(|(id, c)| {
                let side = c.ann.params.participants.iter().position(|x| *x == me)?;
                Some((*id, side))
            })
            .collect();
        for (id, side) in ours {
            let Some(mut c) = self.book.gossip.get(&id).cloned() else {
                continue;
            };
            // Past the receivers' rate limit, even for two changes within it (a few seconds
            // ahead of our clock at most, well within their skew allowance).
            let at = c.policies[side].as_ref().map_or(now.0, |u| {
                now.0
                    .max(u.timestamp.saturating_add(MIN_UPDATE_INTERVAL_SECS))
            });
            let u = PolicyUpdate::sign(id, policy, at, &self.keys);
            c.policies[side] = Some(u.clone());
            self.write(
                &mut p,
                Write::Gossip {
                    id,
                    record: Some(Box::new(c)),
                },
            );
            self.relay(GossipMsg::Policy(Box::new(u)), None, &mut p);
        }
        self.finish(now, p)
    }

    /// The parameters of a channel whose chain figures the caller should read: ours, or one
    /// announced to us (waiting for its first check, or checked again on a policy update).
    pub fn query_params(&self, id: ChannelId) -> Option<ChannelParams> {
        self.channels
            .get(&id)
            .map(|e| e.machine.snapshot().params().clone())
            .or_else(|| {
                self.pending_gossip
                    .get(&id)
                    .map(|(_, c)| c.ann.params.clone())
            })
            .or_else(|| self.book.gossip.get(&id).map(|c| c.ann.params.clone()))
    }
}
