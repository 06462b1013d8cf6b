//! The timed event queue: [`Event`]s ordered by `(virtual ms, insertion number)`, so that events
//! due at the same time are processed in the order they were scheduled.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// What happens at a point of virtual time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// Knowledge epoch boundary: apply learning, decay, pull the epoch's payments.
    Epoch,
    /// Immediate mode: decay learned liquidity.
    Decay,
    /// Sample balances.
    Sample,
    /// A payment is due.
    Dispatch { slot: u32 },
    /// The HTLC on `hop` is committed at its receiver.
    Arrive { slot: u32, hop: u8 },
    /// The receiver of `hop` fulfills it.
    Settle { slot: u32, hop: u8 },
    /// The receiver of `hop` fails it.
    FailBack { slot: u32, hop: u8 },
}

/// An event and when it is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    at: u64,
    seq: u64,
    event: Event,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // `seq` is unique, so the order is total and never reaches `event`.
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The events still to happen, earliest (then first scheduled) first.
#[derive(Debug, Default)]
pub(super) struct Queue {
    heap: BinaryHeap<Reverse<Entry>>,
    /// Insertion number of the last event pushed.
    seq: u64,
}

impl Queue {
    /// Schedules `event` at virtual ms `at`.
    pub(super) fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            event,
        }));
    }

    /// Takes the next event and when it is due.
    pub(super) fn pop(&mut self) -> Option<(u64, Event)> {
        self.heap.pop().map(|Reverse(e)| (e.at, e.event))
    }
}
