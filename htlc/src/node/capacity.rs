//! What a channel can carry out, and when its offered locks expire: the questions a node asks
//! of a channel, answered once here for the hub, the relay and the simulator.

use crate::amount::Amount;
use crate::forward::{ForwardPolicy, ON_CHAIN_CLAIM_SECS, OutgoingChannel};
use crate::ids::{Expiry, HtlcId, Preimage};
use crate::ops::Op;
use crate::update::{Channel, Snapshot};

impl Snapshot {
    /// The channel as an outgoing hop under `policy`: our free balance, its locks and their
    /// value, against its limits. Every lock counts toward the limits, ours and the peer's,
    /// as [`crate::ops::apply_batch`] counts them (a lock total that overflows reads as full).
    pub fn outgoing(&self, policy: ForwardPolicy) -> OutgoingChannel {
        let st = &self.latest.state;
        OutgoingChannel {
            policy,
            available: st.balances[self.me.index()],
            pending_locks: st.locks.len(),
            max_pending_locks: self.limits.max_pending_locks,
            in_flight: st.locks_total().unwrap_or(Amount::MAX),
            max_in_flight: self.limits.max_in_flight,
            latest_expiry: self.limits.latest_expiry,
        }
    }

    /// Whether the channel may take a new outgoing lock at all: not closed, not on chain.
    pub fn can_offer(&self) -> bool {
        !self.latest.state.is_final && !self.frozen
    }

    /// Our free balance in the latest co-signed state.
    pub fn free_balance(&self) -> Amount {
        self.latest.state.balances[self.me.index()]
    }

    fn expiry_queued(&self, id: HtlcId) -> bool {
        self.queue
            .iter()
            .chain(self.pending.iter().flat_map(|p| p.ops.iter()))
            .any(|q| matches!(q.op, Op::ExpireHtlc { id: i } if i == id))
    }

    /// Locks we offered whose expiry has passed at `now` and whose removal is not queued or
    /// proposed yet: take each back with [`Channel::expire_htlc`].
    pub fn expired_offers(&self, now: Expiry) -> Vec<HtlcId> {
        if self.latest.state.is_final {
            return Vec::new();
        }
        self.latest
            .state
            .locks
            .iter()
            .filter(|l| l.sender == self.me && l.expiry <= now && !self.expiry_queued(l.id))
            .map(|l| l.id)
            .collect()
    }

    /// When the next lock we offered expires and is due to be taken back (`None`: none): the
    /// node's timer for this channel, so nothing has to scan channels on a clock tick.
    pub fn next_timeout(&self) -> Option<Expiry> {
        if self.latest.state.is_final {
            return None;
        }
        self.latest
            .state
            .locks
            .iter()
            .filter(|l| l.sender == self.me && !self.expiry_queued(l.id))
            .map(|l| l.expiry)
            .min()
    }
}

impl Snapshot {
    /// The peer's locks we hold the preimage of and it has not settled off chain, each with
    /// the time by which the preimage must go on chain ([`ON_CHAIN_CLAIM_SECS`] before its
    /// expiry), earliest first.
    pub fn claim_deadlines(&self) -> Vec<(HtlcId, Preimage, Expiry)> {
        if self.latest.state.is_final {
            return Vec::new();
        }
        let mut due: Vec<_> = self
            .claims
            .iter()
            .filter_map(|(id, p)| {
                let l = self.latest.state.lock(*id)?;
                (l.sender != self.me).then(|| {
                    (
                        *id,
                        *p,
                        Expiry(l.expiry.0.saturating_sub(ON_CHAIN_CLAIM_SECS)),
                    )
                })
            })
            .collect();
        due.sort_by_key(|(_, _, at)| *at);
        due
    }

    /// When the node must next look at this channel: the next of our locks to take back, or
    /// the next claim to take on chain, whichever comes first.
    pub fn next_deadline(&self) -> Option<Expiry> {
        let claim = self.claim_deadlines().first().map(|(_, _, at)| *at);
        match (self.next_timeout(), claim) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Channel {
    /// [`Snapshot::outgoing`] of this channel.
    pub fn outgoing(&self, policy: ForwardPolicy) -> OutgoingChannel {
        self.snapshot().outgoing(policy)
    }

    /// Queue the removal of every lock we offered that expired at `now`; returns how many.
    pub fn expire_due(&mut self, now: Expiry) -> usize {
        let due = self.snapshot().expired_offers(now);
        for id in &due {
            self.expire_htlc(*id);
        }
        due.len()
    }
}

#[cfg(test)]
mod tests {
    use crate::ids::{Expiry, Preimage};
    use crate::ops::Limits;
    use crate::state::ChannelState;
    use crate::update::{Channel, Effect, SignedState, sign_state};
    use crate::{Amount, forward::ForwardPolicy};

    fn pair() -> (Channel, Channel) {
        let (a, b) = (
            super::super::fixtures::keys(1),
            super::super::fixtures::keys(2),
        );
        let params = super::super::fixtures::params(&a, &b, 1);
        let state = ChannelState::opening(params.id(), [Amount(1_000), Amount(500)]);
        let sigs = [
            sign_state(&params, &a, &state).unwrap(),
            sign_state(&params, &b, &state).unwrap(),
        ];
        let s = SignedState { state, sigs };
        let limits = Limits {
            max_pending_locks: 3,
            ..Limits::default()
        };
        (
            Channel::from_cosigned(params.clone(), a, limits, s.clone()).unwrap(),
            Channel::from_cosigned(params, b, limits, s).unwrap(),
        )
    }

    /// Deliver everything between the two until both are quiet.
    fn settle(a: &mut Channel, b: &mut Channel, now: Expiry) {
        let mut inbox: Vec<(bool, Effect)> = a
            .propose(now)
            .unwrap()
            .into_iter()
            .map(|e| (true, e))
            .collect();
        while let Some((from_a, e)) = inbox.pop() {
            if let Effect::Send(m) = e {
                let to = if from_a { &mut *b } else { &mut *a };
                inbox.extend(to.handle(m, now).unwrap().into_iter().map(|e| (!from_a, e)));
            }
        }
    }

    #[test]
    fn outgoing_counts_every_lock_and_timeouts_follow_our_offers() {
        let (mut a, mut b) = pair();
        let now = Expiry(10_000);
        let h = Preimage([7; 32]).hashlock();
        a.offer_htlc(Amount(100), h, Expiry(20_000));
        a.offer_htlc(Amount(50), h, Expiry(15_000));
        settle(&mut a, &mut b, now);
        b.offer_htlc(Amount(30), h, Expiry(12_000));
        settle(&mut b, &mut a, now);
        let out = a.outgoing(ForwardPolicy::default());
        assert_eq!(out.available, Amount(850));
        assert_eq!(out.pending_locks, 3, "the peer's lock counts too");
        assert_eq!(out.in_flight, Amount(180));
        assert_eq!(out.max_pending_locks, 3);
        // Only our own offers time out for us: the peer's lock (12_000) is not ours to expire.
        assert_eq!(a.snapshot().next_timeout(), Some(Expiry(15_000)));
        assert_eq!(b.snapshot().next_timeout(), Some(Expiry(12_000)));
        assert!(a.snapshot().expired_offers(Expiry(14_999)).is_empty());
        assert_eq!(a.expire_due(Expiry(15_000)), 1);
        // Queued: neither due again nor the next timeout.
        assert!(a.snapshot().expired_offers(Expiry(15_000)).is_empty());
        assert_eq!(a.snapshot().next_timeout(), Some(Expiry(20_000)));
        settle(&mut a, &mut b, Expiry(15_000));
        assert_eq!(a.latest().state.locks.len(), 2);
        assert_eq!(a.snapshot().free_balance(), Amount(900));
        assert!(a.snapshot().can_offer());
    }
}
