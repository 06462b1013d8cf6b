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
    MAX_VIRTUAL_PER_NODE, MIN_UPDATE_INTERVAL_SECS, PolicyUpdate, REFRESH_SECS, STALE_SECS,
    virtual_announcement_digest,
};
use crate::node::message::{Body, ErrorCode, Frame};
use crate::node::records::Write;
use crate::node::records::{VirtualPhase, VirtualRole};
use crate::sig::recover_key;
use crate::state::ChannelParams;
use alloy::primitives::{Address, Signature};
use std::collections::BTreeSet;

impl Node {
    /// Our own funded channel `id` may be announced: send the peer our signature of it and our
    /// policy for it (once the peer's come back, both of us hold the announcement). A virtual
    /// channel of ours (open, we a party) is announced the same way, its signature binding its
    /// value and end, over its hub unless we have a session with the other party.
    pub(super) fn announce_own(&mut self, now: Expiry, id: ChannelId, p: &mut Pending) {
        if !self.config.announce {
            return;
        }
        let Some(e) = self.channels.get(&id) else {
            return;
        };
        if !e.funded || e.concluded || self.book.gossip.contains_key(&id) {
            return;
        }
        let (peer, params, virt) = (e.peer, e.machine.snapshot().params().clone(), e.via);
        let (sig, via) = match virt {
            None => (Announcement::sign(&params, &self.keys), None),
            Some(_) => {
                let Some((capacity, until)) = self.virtual_ad(id) else {
                    return;
                };
                let d = virtual_announcement_digest(&params, capacity, until);
                (self.keys.sign_digest(d), self.relay_hub(id, peer))
            }
        };
        let policy = PolicyUpdate::sign(id, self.config.policy, now.0, &self.keys);
        self.send_via(
            via,
            peer,
            Body::AnnounceSig {
                channel_id: id,
                sig,
                policy: Box::new(policy),
            },
            p,
        );
    }

    /// A virtual channel of ours we may announce (open, we one of its parties): its value and
    /// end, the figures both parties sign.
    fn virtual_ad(&self, id: ChannelId) -> Option<(Amount, u64)> {
        let r = self.book.virtuals.get(&id)?;
        if r.role == VirtualRole::Hub || r.phase != VirtualPhase::Open {
            return None;
        }
        Some((r.terms.value().ok()?, r.terms.expires_at.0))
    }

    /// Announce our funded channel `id` (channels opened on chain are announced when seen
    /// funded; this is for channels added co-signed, without an opening).
    pub fn announce_channel(&mut self, now: Expiry, id: ChannelId) -> super::Output {
        let mut p = Pending::default();
        self.announce_own(now, id, &mut p);
        self.finish(now, p)
    }

    /// The peer's signature announcing our channel `id`, received on `link` (the peer itself;
    /// for a virtual channel, its hub relaying it). Returns false if refused.
    pub(super) fn on_announce_sig(
        &mut self,
        now: Expiry,
        (from, link): (Address, Address),
        seq: u64,
        (id, sig, theirs): (ChannelId, Signature, PolicyUpdate),
        p: &mut Pending,
    ) -> bool {
        let Some(e) = self
            .channels
            .get(&id)
            .filter(|e| e.peer == from && (link == from || e.via == Some(link)))
        else {
            let detail = format!("no channel {id}");
            return self.refuse(link, seq, ErrorCode::UnknownChannel, detail, p);
        };
        if !self.config.announce || !e.funded || e.concluded || self.book.gossip.contains_key(&id) {
            // We do not announce (a client), or already did: nothing to do.
            return true;
        }
        let virt = e.via.is_some();
        let s = e.machine.snapshot();
        let params = s.params().clone();
        let me = s.me().index();
        let ad = if virt {
            // Not open (or we are its hub): nothing to announce.
            let Some(ad) = self.virtual_ad(id) else {
                return true;
            };
            Some(ad)
        } else {
            None
        };
        let digest = match ad {
            Some((capacity, until)) => virtual_announcement_digest(&params, capacity, until),
            None => crate::node::gossip::announcement_digest(&params),
        };
        if let Err(err) = recover_key(digest, &sig, from) {
            return self.refuse(link, seq, ErrorCode::Protocol, err.to_string(), p);
        }
        let mut sigs = [sig; 2];
        sigs[me] = self.keys.sign_digest(digest);
        let ann = Announcement { params, sigs };
        let checked = match ad {
            Some((capacity, until)) => ann.check_virtual(capacity, until),
            None => ann.check(),
        };
        let Ok(keys) = checked else {
            return true;
        };
        let capacity = match ad {
            Some((capacity, _)) => capacity,
            None if self.config.on_chain => s.holdings(),
            None => Amount::MAX,
        };
        let our_sig = ann.sigs[me];
        let ours = PolicyUpdate::sign(id, self.config.policy, now.0, &self.keys);
        let mut record = GossipChannel {
            ann: ann.clone(),
            keys,
            capacity,
            policies: [None, None],
            virtual_until: ad.map(|(_, until)| until),
        };
        record.policies[me] = Some(ours.clone());
        // The peer's policy for its direction, checked like any update.
        let theirs = (theirs.channel_id == id && theirs.node == from)
            .then(|| theirs.check(&record, now.0).ok().map(|side| (side, theirs)))
            .flatten();
        if let Some((side, u)) = &theirs {
            record.policies[*side] = Some(u.clone());
        }
        let announce = record.announce_msg();
        self.write(
            p,
            Write::Gossip {
                id,
                record: Some(Box::new(record)),
            },
        );
        self.relay(announce, None, p);
        self.relay(GossipMsg::Policy(Box::new(ours.clone())), None, p);
        if let Some((_, u)) = theirs {
            self.relay(GossipMsg::Policy(Box::new(u)), None, p);
        }
        // Ours again: the peer may have had ours before it saw the channel funded, and ignored
        // it then (one that has the announcement already ignores this one).
        let via = if virt { self.relay_hub(id, from) } else { None };
        self.send_via(
            via,
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

    /// Whether `node` is one whose funds we have seen on chain: ourselves, a peer of a funded
    /// ledger of ours, or a participant of a ledger announcement we believe.
    fn known_on_chain(&self, node: Address) -> bool {
        node == self.address()
            || self
                .channels
                .values()
                .any(|e| e.peer == node && e.funded && e.via.is_none())
            || self
                .book
                .gossip
                .values()
                .any(|c| c.virtual_until.is_none() && c.ann.params.participants.contains(&node))
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
                    virtual_until: None,
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
            GossipMsg::AnnounceVirtual {
                ann,
                capacity,
                until,
            } => {
                // No chain read shows a virtual channel: believed only between nodes whose
                // funds we have seen on chain, a bounded number per node, until its end.
                let id = ann.params.id();
                let parties = ann.params.participants;
                let virtual_of = |node: Address| {
                    self.book
                        .gossip
                        .values()
                        .filter(|c| {
                            c.virtual_until.is_some() && c.ann.params.participants.contains(&node)
                        })
                        .count()
                };
                if self.book.gossip.contains_key(&id)
                    || self.channels.contains_key(&id)
                    || self.pending_gossip.contains_key(&id)
                    || until <= now.0
                    || parties
                        .iter()
                        .any(|n| virtual_of(*n) >= MAX_VIRTUAL_PER_NODE)
                {
                    return;
                }
                let Ok(keys) = ann.check_virtual(capacity, until) else {
                    return;
                };
                let record = GossipChannel {
                    ann: *ann,
                    keys,
                    capacity,
                    policies: [None, None],
                    virtual_until: Some(until),
                };
                let from_peer = self
                    .pending_gossip
                    .values()
                    .filter(|(by, _)| *by == from)
                    .count();
                if parties.iter().all(|n| self.known_on_chain(*n)) {
                    self.believe(now, record, p);
                } else if self.pending_gossip.len() < MAX_PENDING
                    && from_peer < MAX_PENDING_PER_PEER
                {
                    // Its parties' ledgers may still be on their way (a table handed over in
                    // one go, in no particular order): it waits for them, in memory, and is
                    // believed once they are (`believe`).
                    self.pending_gossip.insert(id, (from, record));
                }
            }
            GossipMsg::Policy(u) => {
                let id = u.channel_id;
                if let Some(c) = self.book.gossip.get(&id)
                    && let Ok(side) = u.check(c, now.0)
                {
                    let mut c = c.clone();
                    let ledger = c.virtual_until.is_none();
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
                    if self.config.on_chain && !self.channels.contains_key(&id) && ledger {
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
                && c.virtual_until.is_none()
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

    /// Keep `record` (its stashed policies checked again) and relay it; a ledger believed may
    /// make waiting virtual channels' parties known, which are then believed too.
    fn believe(&mut self, now: Expiry, record: GossipChannel, p: &mut Pending) {
        let ledger = record.virtual_until.is_none();
        self.keep(now, record, p);
        if !ledger {
            return;
        }
        let ready: Vec<ChannelId> = self
            .pending_gossip
            .iter()
            .filter(|(_, (_, c))| {
                c.virtual_until.is_some()
                    && c.ann
                        .params
                        .participants
                        .iter()
                        .all(|n| self.known_on_chain(*n))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            let Some((_, v)) = self.pending_gossip.remove(&id) else {
                continue;
            };
            let full = |n: &Address| {
                self.book
                    .gossip
                    .values()
                    .filter(|c| c.virtual_until.is_some() && c.ann.params.participants.contains(n))
                    .count()
                    >= MAX_VIRTUAL_PER_NODE
            };
            let live = v.virtual_until.is_some_and(|u| u > now.0);
            if live && !v.ann.params.participants.iter().any(full) {
                self.keep(now, v, p);
            }
        }
    }

    /// Write `record` (its stashed policies checked again) and relay it.
    fn keep(&mut self, now: Expiry, mut record: GossipChannel, p: &mut Pending) {
        let id = record.ann.params.id();
        let stashed = std::mem::take(&mut record.policies);
        for u in stashed.into_iter().flatten() {
            if let Ok(side) = u.check(&record, now.0) {
                record.policies[side] = Some(u);
            }
        }
        self.relay(record.announce_msg(), None, p);
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
            out.push((peer, Frame::Gossip(Box::new(c.announce_msg()))));
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
            if c.virtual_until.is_some_and(|until| until <= now.0) {
                // A virtual channel past its end carries nothing more.
                writes.push((*id, None));
                continue;
            }
            let side = c.ann.params.participants.iter().position(|x| *x == me);
            match side {
                Some(side) => {
                    let closed = if c.virtual_until.is_some() {
                        self.book
                            .virtuals
                            .get(id)
                            .is_none_or(|r| r.phase != VirtualPhase::Open)
                    } else {
                        self.channels.get(id).is_none_or(|e| e.concluded)
                    };
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
