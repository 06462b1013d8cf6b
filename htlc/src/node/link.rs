//! The ordered link to one peer: sequence numbers, acknowledgements, duplicates, re-sending.
//!
//! ```text
//!  we                                     peer
//!   | Msg{seq: n}   (stored in the outbox   |
//!   |--------------  with the state change) >|  Inbox::classify(n): Process
//!   |                                        |  ... effects persisted with `recv = n` ...
//!   |<--------------------------- Ack{n}     |  Inbox::received(n)
//!   |  Outbox::on_ack(n): delete 1..=n       |
//!   |                                        |
//!   | (reconnect) every stored frame again   |  classify: Duplicate{ack}: ack, nothing else
//! ```
//!
//! Every sequenced frame is written to the durable outbox in the same batch as the state change
//! that produced it, and re-sent in order on every reconnect until the peer acknowledges it
//! (rule 2). The receiver processes each sequence number once: a repeat is acknowledged and
//! ignored, a gap is refused (the sender re-sends from its outbox). A peer with no channel
//! (a stranger) leaves no durable counter behind, so it may skip ahead.
//!
//! Both halves are counters only: what the frames hold, and where they are stored, is the
//! caller's business.

use std::ops::{Range, RangeInclusive};

/// What to do with an incoming sequenced message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// New and next in order: process it, persist its effects with the counter, then call
    /// [`Inbox::received`] and acknowledge it.
    Process,
    /// Processed already (a re-send after a reconnect): acknowledge `ack`, change nothing.
    Duplicate {
        /// The last sequence number processed.
        ack: u64,
    },
    /// A message is missing before it: refuse it; the peer re-sends from its outbox.
    Gap {
        /// The sequence number expected.
        expected: u64,
    },
}

/// The receiving half: the last sequence number processed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inbox {
    last: u64,
}

impl Inbox {
    /// An inbox that has processed every message up to `last` (0: none).
    pub fn new(last: u64) -> Inbox {
        Inbox { last }
    }

    /// The last sequence number processed.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Classify message `seq`. `may_skip` is true for a peer that has no durable counter with
    /// us (a stranger): it may start anywhere above what we saw.
    pub fn classify(&self, seq: u64, may_skip: bool) -> Inbound {
        if seq <= self.last {
            Inbound::Duplicate { ack: self.last }
        } else if seq == self.last.saturating_add(1) || may_skip {
            Inbound::Process
        } else {
            Inbound::Gap {
                expected: self.last.saturating_add(1),
            }
        }
    }

    /// Message `seq` was processed and its effects persisted. Never moves backwards.
    pub fn received(&mut self, seq: u64) {
        self.last = self.last.max(seq);
    }
}

/// The sending half: the next sequence number and how far the peer acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outbox {
    next_send: u64,
    acked: u64,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox::restore(1, None)
    }
}

impl Outbox {
    /// The outbox as stored: `next_send` is the next sequence number to give (1 for a new
    /// peer), `first_stored` the lowest sequence number still stored unacknowledged, if any.
    pub fn restore(next_send: u64, first_stored: Option<u64>) -> Outbox {
        let next_send = next_send.max(1);
        let first = first_stored.unwrap_or(next_send).min(next_send);
        Outbox {
            next_send,
            acked: first.saturating_sub(1),
        }
    }

    /// The sequence numbers `count` new messages get. They are ours only once the batch that
    /// stores them is committed: then call [`Outbox::sent`] with the range's end.
    pub fn numbers(&self, count: usize) -> Range<u64> {
        let count = u64::try_from(count).unwrap_or(u64::MAX);
        self.next_send..self.next_send.saturating_add(count)
    }

    /// The messages below `next_send` are stored (their batch committed).
    pub fn sent(&mut self, next_send: u64) {
        self.next_send = self.next_send.max(next_send);
    }

    /// The next sequence number to give.
    pub fn next_send(&self) -> u64 {
        self.next_send
    }

    /// The peer acknowledges everything up to `seq`: the stored frames to delete, if any. An
    /// acknowledgement beyond what we sent covers only what we sent, and one below what was
    /// acknowledged already changes nothing: a bogus ack costs nothing.
    pub fn on_ack(&mut self, seq: u64) -> Option<RangeInclusive<u64>> {
        let last_sent = self.next_send.saturating_sub(1);
        let to = seq.min(last_sent);
        if to <= self.acked {
            return None;
        }
        let from = self.acked.saturating_add(1);
        self.acked = to;
        Some(from..=to)
    }

    /// Frames sent and not yet acknowledged.
    pub fn backlog(&self) -> u64 {
        self.next_send.saturating_sub(1).saturating_sub(self.acked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn inbox_processes_in_order_acks_repeats_and_refuses_gaps() {
        let mut i = Inbox::new(0);
        assert_eq!(i.classify(1, false), Inbound::Process);
        i.received(1);
        assert_eq!(i.classify(1, false), Inbound::Duplicate { ack: 1 });
        assert_eq!(i.classify(3, false), Inbound::Gap { expected: 2 });
        // A stranger may start anywhere above.
        assert_eq!(i.classify(7, true), Inbound::Process);
        i.received(7);
        i.received(2); // never backwards
        assert_eq!(i.last(), 7);
        assert_eq!(i.classify(u64::MAX, false), Inbound::Gap { expected: 8 });
    }

    #[test]
    fn outbox_numbers_acks_and_backlog() {
        let mut o = Outbox::default();
        assert_eq!(o.numbers(3), 1..4);
        // Not committed yet: nothing to acknowledge.
        assert_eq!(o.on_ack(2), None);
        o.sent(4);
        assert_eq!(o.backlog(), 3);
        assert_eq!(o.on_ack(2), Some(1..=2));
        assert_eq!(o.on_ack(2), None);
        assert_eq!(o.on_ack(1), None);
        // Beyond what we sent: only what we sent.
        assert_eq!(o.on_ack(u64::MAX), Some(3..=3));
        assert_eq!(o.backlog(), 0);
        assert_eq!(o.numbers(0), 4..4);
    }

    #[test]
    fn restored_outbox_acknowledges_only_what_is_no_longer_stored() {
        // Frames 5..=9 stored, next is 10.
        let mut o = Outbox::restore(10, Some(5));
        assert_eq!(o.backlog(), 5);
        assert_eq!(o.on_ack(4), None);
        assert_eq!(o.on_ack(6), Some(5..=6));
        // Nothing stored: everything before next_send was acknowledged.
        let o = Outbox::restore(10, None);
        assert_eq!(o.backlog(), 0);
        // A fresh peer.
        assert_eq!(Outbox::restore(0, None).numbers(1), 1..2);
    }

    proptest! {
        #![proptest_config(testkit::config(256))]

        /// Whatever acks arrive, in any order: each sequence number sent is deleted exactly
        /// once, only once sent, and the backlog is what remains.
        #[test]
        fn every_sent_frame_is_deleted_once(
            sends in proptest::collection::vec(0usize..4, 1..20),
            acks in proptest::collection::vec(0u64..100, 0..40),
        ) {
            let mut o = Outbox::default();
            let mut deleted = std::collections::BTreeSet::new();
            let mut acks = acks.into_iter();
            for n in sends {
                let r = o.numbers(n);
                o.sent(r.end);
                if let Some(range) = acks.next().and_then(|a| o.on_ack(a)) {
                    for s in range {
                        prop_assert!(s < o.next_send());
                        prop_assert!(deleted.insert(s), "frame {} deleted twice", s);
                    }
                }
            }
            let sent = o.next_send() - 1;
            prop_assert_eq!(o.backlog(), sent - deleted.len() as u64);
            prop_assert!(deleted.iter().copied().eq(1..=deleted.len() as u64));
        }
    }
}
