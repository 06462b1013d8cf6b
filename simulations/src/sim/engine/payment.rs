//! A payment in flight: the [`Payment`] (its request, preimage, attempts so far and what they
//! excluded), its current routing [`Attempt`], and [`Payments`], the slots that hold them while
//! the event queue refers to them.

use htlc::FailureReason;
use htlc::ids::{Expiry, Hashlock, HtlcId, Preimage};
use router::{DirectedChannel, Route};
use sha2::{Digest, Sha256};

use crate::sim::activity::PaymentRequest;
use crate::sim::error::SimError;

/// One routing attempt in flight.
#[derive(Clone, Debug)]
pub(super) struct Attempt {
    pub(super) route: Route,
    /// World channel index of each hop.
    pub(super) chans: Vec<u32>,
    /// Absolute expiry of each hop's HTLC.
    pub(super) expiries: Vec<Expiry>,
    /// Lock id and the virtual ms it was added, per hop locked so far.
    pub(super) locks: Vec<(HtlcId, u64)>,
    /// The refusal and the hop (index) that refused.
    pub(super) failure: Option<(FailureReason, usize)>,
}

/// A payment, from its admission to its record.
#[derive(Clone, Debug)]
pub(super) struct Payment {
    pub(super) id: u64,
    pub(super) req: PaymentRequest,
    pub(super) preimage: Preimage,
    pub(super) hashlock: Hashlock,
    pub(super) attempts: u32,
    pub(super) htlcs: u32,
    pub(super) excluded: Vec<DirectedChannel>,
    pub(super) attempt: Option<Attempt>,
    pub(super) last_failure: Option<FailureReason>,
    /// Index of its first attempt's route in the epoch's route batch.
    pub(super) batch_index: Option<usize>,
    /// Hubs (their positions) some attempt routed through.
    pub(super) via_hubs: Vec<u16>,
}

impl Payment {
    /// Payment number `id` of a run seeded with `seed`, not yet attempted; its preimage is
    /// derived from both.
    pub(super) fn new(id: u64, req: PaymentRequest, seed: u64) -> Self {
        let mut h = Sha256::new();
        h.update(b"vhub-sim-preimage");
        h.update(seed.to_be_bytes());
        h.update(id.to_be_bytes());
        let preimage = Preimage(h.finalize().into());
        Payment {
            id,
            req,
            hashlock: preimage.hashlock(),
            preimage,
            attempts: 0,
            htlcs: 0,
            excluded: Vec::new(),
            attempt: None,
            last_failure: None,
            batch_index: None,
            via_hubs: Vec::new(),
        }
    }
}

/// The payments in flight, each in a slot (the handle events carry); a finished payment's slot
/// is reused.
#[derive(Debug, Default)]
pub(super) struct Payments {
    slab: Vec<Option<Payment>>,
    free: Vec<u32>,
    in_flight: u64,
}

impl Payments {
    /// Puts `payment` in a free slot and returns the slot.
    pub(super) fn insert(&mut self, payment: Payment) -> u32 {
        self.in_flight += 1;
        match self.free.pop() {
            Some(slot) => {
                if let Some(s) = self.slab.get_mut(slot as usize) {
                    *s = Some(payment);
                }
                slot
            }
            None => {
                self.slab.push(Some(payment));
                (self.slab.len() - 1) as u32
            }
        }
    }

    /// Takes the payment out of `slot` (it finished) and frees the slot.
    pub(super) fn remove(&mut self, slot: u32) -> Result<Payment, SimError> {
        let p = self
            .slab
            .get_mut(slot as usize)
            .and_then(Option::take)
            .ok_or(SimError::Internal("finishing a finished payment"))?;
        self.free.push(slot);
        self.in_flight = self.in_flight.saturating_sub(1);
        Ok(p)
    }

    /// The payment in `slot`.
    pub(super) fn get(&self, slot: u32) -> Result<&Payment, SimError> {
        self.slab
            .get(slot as usize)
            .and_then(Option::as_ref)
            .ok_or(SimError::Internal("event for a finished payment"))
    }

    /// The payment in `slot`, to change it.
    pub(super) fn get_mut(&mut self, slot: u32) -> Option<&mut Payment> {
        self.slab.get_mut(slot as usize).and_then(Option::as_mut)
    }

    /// The attempt in flight of the payment in `slot`.
    pub(super) fn attempt(&self, slot: u32) -> Result<&Attempt, SimError> {
        self.get(slot)?
            .attempt
            .as_ref()
            .ok_or(SimError::Internal("event for a payment with no attempt"))
    }

    /// How many payments are in flight.
    pub(super) fn in_flight(&self) -> u64 {
        self.in_flight
    }
}
