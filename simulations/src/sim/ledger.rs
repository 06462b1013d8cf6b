//! The truth of the simulation: every channel's state, changed only by the protocol core.
//!
//! [`Ledger`] is what the engine asks of the channels: offer an HTLC (the payer's first hop),
//! forward one (a node's decision between an incoming and an outgoing HTLC), settle one
//! (fulfill or fail it, [`Settle`]); what both ledgers do alike (which lock, who receives it,
//! fulfill and fail, the network's total) is the trait's own. Two implementations:
//!
//! - [`FastLedger`] (the default): one `htlc::ChannelState` per channel, changed only by
//!   `htlc::ops::apply_batch`, which validates every operation (balances, lock limits, in-flight
//!   limits, preimages, expiries) and re-checks conservation — without signatures.
//! - `sim::signed::SignedLedger`: two real `htlc::Channel` machines per channel,
//!   every update signed and verified, the forwarding decision taken by
//!   `htlc::forward::decide` on the `CommittedHtlc` the machine hands out. Slow; it exists to
//!   show the fast ledger predicts exactly what the real machines do (see ADR 0020).

use htlc::forward::{ForwardPolicy, NextHop};
use htlc::ids::{Expiry, Hashlock, HtlcId, Preimage};
use htlc::ops::{Limits, NextIds, Op, OpError, apply_batch};
use htlc::{Amount, ChannelState, FailureReason, Lock, Side};

use crate::sim::error::SimError;
use crate::sim::world::World;

/// A forwarding outcome: the new lock's id, or why the node refused.
pub type Offered = Result<HtlcId, FailureReason>;

/// How the receiver of a lock settles it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// It claims the lock with its preimage.
    Fulfill(Preimage),
    /// It fails the lock back to its sender, for this reason.
    Fail(FailureReason),
}

impl Settle {
    /// The operation that settles lock `id` so.
    fn op(self, id: HtlcId) -> Op {
        match self {
            Settle::Fulfill(preimage) => Op::FulfillHtlc { id, preimage },
            Settle::Fail(reason) => Op::FailHtlc { id, reason },
        }
    }
}

/// What the engine asks of the channels (see the module documentation). Channel arguments are
/// indices into [`World::chans`].
pub trait Ledger: Sized {
    /// Opens every channel of the world at its opening balances and locks its guarantees.
    fn open(world: &World, seed: u64) -> Result<Self, SimError>;

    /// The payer offers an HTLC on its own channel `ch` (it pays, no fee, no decision).
    fn offer(
        &mut self,
        ch: u32,
        by: Side,
        amount: Amount,
        hashlock: Hashlock,
        expiry: Expiry,
        now: Expiry,
    ) -> Result<Offered, SimError>;

    /// The receiver of lock `incoming` on channel `incoming.0` forwards it over `out`, where it
    /// is side `by`, as `next` under `policy`.
    fn forward(
        &mut self,
        incoming: (u32, HtlcId),
        out: u32,
        by: Side,
        policy: &ForwardPolicy,
        next: NextHop,
        now: Expiry,
    ) -> Result<Offered, SimError>;

    /// The receiver of lock `id` on `ch` settles it: claims it or fails it back, as `how` says.
    fn settle(&mut self, ch: u32, id: HtlcId, how: Settle, now: Expiry) -> Result<(), SimError>;

    /// The receiver of lock `id` on `ch` claims it with its preimage.
    fn fulfill(
        &mut self,
        ch: u32,
        id: HtlcId,
        preimage: Preimage,
        now: Expiry,
    ) -> Result<(), SimError> {
        self.settle(ch, id, Settle::Fulfill(preimage), now)
    }

    /// The receiver of lock `id` on `ch` fails it back to its sender.
    fn fail(
        &mut self,
        ch: u32,
        id: HtlcId,
        reason: FailureReason,
        now: Expiry,
    ) -> Result<(), SimError> {
        self.settle(ch, id, Settle::Fail(reason), now)
    }

    /// The current state of channel `ch`.
    fn state(&self, ch: u32) -> Option<&ChannelState>;

    /// Number of channels.
    fn len(&self) -> usize;

    /// Whether there are no channels.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Committed updates so far (each is one co-signed state in the real protocol).
    fn updates(&self) -> u64;

    /// Lock `id` on channel `ch`.
    fn lock(&self, ch: u32, id: HtlcId) -> Result<&Lock, SimError> {
        self.state(ch)
            .and_then(|s| s.lock(id))
            .ok_or(SimError::Op(OpError::UnknownLock(id)))
    }

    /// The side that receives lock `id` on `ch` (the one that may fulfill or fail it).
    fn receiver(&self, ch: u32, id: HtlcId) -> Result<Side, SimError> {
        self.lock(ch, id).map(|l| l.sender.other())
    }

    /// Rule 1 over the whole network: the sum of every channel's balances, locks and guarantees.
    fn total(&self) -> Result<Amount, SimError> {
        let mut sum = Amount::ZERO;
        for ch in 0..self.len() {
            let s = self
                .state(ch as u32)
                .ok_or(SimError::Internal("channel index out of range"))?;
            sum = sum.checked_add(s.total()?)?;
        }
        Ok(sum)
    }
}

/// The failure reason a hub sends back when the protocol refuses to add an HTLC to its
/// outgoing channel: the same classification `htlc::forward::decide` makes of the same
/// conditions (no room, no lock slot, in-flight limit: temporary channel failure). Any other
/// refusal means the simulator built a bad operation: an internal error.
pub fn refusal(e: OpError) -> Result<FailureReason, SimError> {
    match e {
        OpError::InsufficientBalance
        | OpError::TooManyLocks
        | OpError::InFlightOverLimit
        | OpError::ChannelClosed => Ok(FailureReason::TemporaryChannelFailure),
        OpError::AmountBelowMinimum => Ok(FailureReason::AmountBelowMinimum),
        OpError::ExpiryInPast => Ok(FailureReason::ExpiryTooSoon),
        other => Err(SimError::Op(other)),
    }
}

/// One channel of the [`FastLedger`].
#[derive(Clone, Debug)]
struct FastChannel {
    state: ChannelState,
    ids: NextIds,
    limits: Limits,
    holdings: Amount,
}

/// Channel states changed only by `htlc::ops::apply_batch` (see the module documentation).
#[derive(Clone, Debug)]
pub struct FastLedger {
    chans: Vec<FastChannel>,
    updates: u64,
}

impl FastLedger {
    /// Applies `ops` proposed by `by` on channel `ch` as one update.
    fn apply(&mut self, ch: u32, ops: &[Op], by: Side, now: Expiry) -> Result<(), OpError> {
        let Some(c) = self.chans.get_mut(ch as usize) else {
            return Err(OpError::UnknownLock(HtlcId(u64::MAX)));
        };
        apply_batch(
            &mut c.state,
            &mut c.ids,
            ops,
            by,
            now,
            &c.limits,
            htlc::Deposits::none(c.holdings),
        )
        .map_err(|(_, e)| e)?;
        // The real protocol co-signs each update at the next version.
        c.state.version = c.state.version.saturating_add(1);
        self.updates += 1;
        Ok(())
    }
}

impl Ledger for FastLedger {
    fn open(world: &World, _seed: u64) -> Result<Self, SimError> {
        let chans: Vec<FastChannel> = world
            .chans
            .iter()
            .map(|c| {
                let state = ChannelState::opening(c.id, c.opening);
                let holdings = state.total()?;
                Ok(FastChannel {
                    state,
                    ids: NextIds::default(),
                    limits: c.limits,
                    holdings,
                })
            })
            .collect::<Result<_, SimError>>()?;
        let mut ledger = FastLedger { chans, updates: 0 };
        for (ch, g) in &world.guarantees {
            ledger.apply(*ch, &[Op::AddGuarantee(*g)], Side::A, Expiry(0))?;
        }
        Ok(ledger)
    }

    fn offer(
        &mut self,
        ch: u32,
        by: Side,
        amount: Amount,
        hashlock: Hashlock,
        expiry: Expiry,
        now: Expiry,
    ) -> Result<Offered, SimError> {
        let id = self
            .chans
            .get(ch as usize)
            .ok_or(SimError::Internal("channel index out of range"))?
            .ids
            .next(by);
        let op = Op::AddHtlc {
            id,
            amount,
            hashlock,
            expiry,
        };
        match self.apply(ch, &[op], by, now) {
            Ok(()) => Ok(Ok(id)),
            Err(e) => refusal(e).map(Err),
        }
    }

    fn forward(
        &mut self,
        incoming: (u32, HtlcId),
        out: u32,
        by: Side,
        policy: &ForwardPolicy,
        next: NextHop,
        now: Expiry,
    ) -> Result<Offered, SimError> {
        let lock = *self.lock(incoming.0, incoming.1)?;
        // The route was priced by the router over the same policies, so `decide`'s policy
        // checks (fee, expiry delta, HTLC limits, enabled) hold by construction (ADR 0020);
        // what can fail is the outgoing channel's room, which apply_batch checks.
        let _ = policy;
        self.offer(out, by, next.amount, lock.hashlock, next.expiry, now)
    }

    fn settle(&mut self, ch: u32, id: HtlcId, how: Settle, now: Expiry) -> Result<(), SimError> {
        let by = self.receiver(ch, id)?;
        Ok(self.apply(ch, &[how.op(id)], by, now)?)
    }

    fn state(&self, ch: u32) -> Option<&ChannelState> {
        self.chans.get(ch as usize).map(|c| &c.state)
    }

    fn len(&self) -> usize {
        self.chans.len()
    }

    fn updates(&self) -> u64 {
        self.updates
    }
}
