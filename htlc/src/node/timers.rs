//! The node's timers: per channel, when the next lock it offered expires and must be taken
//! back ([`crate::Snapshot::next_timeout`]). The pump sets a channel's timer whenever its
//! record changes and visits only the channels that are due, never scanning them all.

use crate::ids::{ChannelId, Expiry};
use std::collections::{BTreeSet, HashMap};

/// Next timeout per channel, ordered by time.
#[derive(Clone, Debug, Default)]
pub struct Timers {
    at: HashMap<ChannelId, Expiry>,
    order: BTreeSet<(Expiry, ChannelId)>,
}

impl Timers {
    /// Set (or, with `None`, clear) the timer of `channel`.
    pub fn set(&mut self, channel: ChannelId, at: Option<Expiry>) {
        if let Some(old) = self.at.remove(&channel) {
            self.order.remove(&(old, channel));
        }
        if let Some(t) = at {
            self.at.insert(channel, t);
            self.order.insert((t, channel));
        }
    }

    /// The channels whose timer is at or before `now`, earliest first. They stay set until
    /// [`Timers::set`] moves them (a removal the peer refused is tried again on the next visit).
    pub fn due(&self, now: Expiry) -> Vec<ChannelId> {
        self.order
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, c)| *c)
            .collect()
    }

    /// The earliest timer, if any: when the pump should wake next.
    pub fn next(&self) -> Option<Expiry> {
        self.order.first().map(|(t, _)| *t)
    }

    /// How many channels have a timer.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Whether no channel has a timer.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::B256;

    #[test]
    fn set_move_clear_and_due_in_order() {
        let c = |b| ChannelId(B256::repeat_byte(b));
        let mut t = Timers::default();
        assert_eq!(t.next(), None);
        t.set(c(1), Some(Expiry(30)));
        t.set(c(2), Some(Expiry(10)));
        t.set(c(3), Some(Expiry(20)));
        assert_eq!(t.next(), Some(Expiry(10)));
        assert_eq!(t.due(Expiry(20)), vec![c(2), c(3)]);
        // Moving a timer replaces it; clearing removes it.
        t.set(c(2), Some(Expiry(40)));
        t.set(c(3), None);
        assert_eq!(t.due(Expiry(35)), vec![c(1)]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.next(), Some(Expiry(30)));
        t.set(c(1), None);
        t.set(c(2), None);
        assert!(t.is_empty());
        assert!(t.due(Expiry(u64::MAX)).is_empty());
    }
}
