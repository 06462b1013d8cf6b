//! What a run reports as it goes: [`Progress`], and the [`Observer`] that receives it with each
//! finished payment's record ([`Discard`] keeps nothing, [`Collect`] keeps the records).

use crate::sim::report::PaymentRecord;

/// How far a run has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Payments dispatched.
    pub dispatched: u64,
    /// Payments finished.
    pub completed: u64,
    /// Virtual time, ms.
    pub virtual_ms: u64,
    /// When the activity is expected to end, virtual ms.
    pub expected_end_ms: u64,
    /// The payment limit, if any.
    pub max_payments: Option<u64>,
}

/// Receives what a run produces as it goes (the binary writes it out; tests collect it).
pub trait Observer {
    /// A payment finished.
    fn payment(&mut self, _record: &PaymentRecord) {}
    /// Progress, every few thousand payments and at the end.
    fn progress(&mut self, _progress: Progress) {}
}

/// An observer that keeps nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl Observer for Discard {}

/// An observer that keeps every payment record, in completion order.
#[derive(Clone, Debug, Default)]
pub struct Collect {
    /// The records.
    pub records: Vec<PaymentRecord>,
}

impl Observer for Collect {
    fn payment(&mut self, record: &PaymentRecord) {
        self.records.push(record.clone());
    }
}
