//! Payment steps: what a node does with a peer's HTLC once it is committed, what it does with
//! the outcome of an HTLC it offered, and how a payer prices a payment through one hub.
//!
//! ```text
//!  HtlcReceived(h) ──► on_committed(h, known, now)
//!     Known::Invoice  ──► payee_accepts? ── yes ──► Step::Claim(preimage)   (fulfil upstream)
//!                                         └─ no ──► Step::Fail(reason)
//!     Known::Route    ──► forward::decide ──► Step::Forward(fwd) | Step::Fail(reason)
//!     Known::Unreadable ─► Step::Fail(InvalidOnion)
//!     Known::Nothing  ──► Step::Fail(IncorrectPaymentDetails | UnknownNextPeer)
//!
//!  event of the outgoing channel ──► outcomes(ev) ──► ForwardRecord::learn (persist it with
//!  the state that taught it: rules 4, 5) ──► ForwardRecord::upstream ──► fulfil or fail the
//!  incoming HTLC
//! ```
//!
//! Rule 3 holds by construction: [`on_committed`] takes a [`CommittedHtlc`], which only the
//! channel machine hands out for a co-signed, persisted lock. Rule 4: the upstream failure comes
//! only from an outcome the outgoing channel reports once a co-signed state removed the lock
//! (or the offer never took effect). Rule 5: the preimage is learned from the event the machine
//! raises with the state that revealed it, and used upstream after that is persisted.

use crate::amount::Amount;
use crate::failure::FailureReason;
use crate::forward::{
    Forward, ForwardPolicy, MIN_EXPIRY_DELTA_SECS, MIN_OUTGOING_EXPIRY_SECS, NextHop,
    OutgoingChannel, decide,
};
use crate::ids::{ChannelId, Expiry, HtlcId, Preimage};
use crate::onion::ErrorPacket;
use crate::ops::Op;
use crate::state::Lock;
use crate::update::{CommittedHtlc, Event};
use alloy::primitives::B256;
use serde::{Deserialize, Serialize};

/// Seconds a payee holds the first part of a multi-path payment waiting for the rest; then
/// every part is failed back ([`FailureReason::MppTimeout`]).
pub const MPP_TIMEOUT_SECS: u64 = 60;

/// The payee's terms for one hashlock (its invoice).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceTerms {
    /// The least the HTLC must carry.
    pub amount: Amount,
    /// After this, the payee refuses the payment.
    pub expires_at: Expiry,
    /// The preimage the payee reveals to claim.
    pub preimage: Preimage,
    /// Paid already: a second HTLC for the same invoice is refused.
    pub paid: bool,
    /// The amount and expiry the payer's onion says this HTLC carries. `None` (no readable
    /// instruction came with it) is refused: without it the last hub could keep more than
    /// its fee, or shorten the payee's time to claim.
    pub sent: Option<(Amount, Expiry)>,
}

/// What the node knows about the hashlock of a committed incoming HTLC.
#[derive(Clone, Copy, Debug)]
pub enum Known<'a> {
    /// We are the payee: our invoice.
    Invoice(&'a InvoiceTerms),
    /// We are a hub: the payer's instruction, and our best outgoing channel to the next peer in
    /// the incoming channel's asset (`None`: we have none).
    Route {
        /// What the payer asked us to offer.
        next: &'a NextHop,
        /// The outgoing channel, as [`crate::Snapshot::outgoing`] describes it.
        outgoing: Option<&'a OutgoingChannel>,
        /// The incoming channel is disputed or concluded on chain: it is collected from only
        /// on chain, so nothing is forwarded from it.
        incoming_frozen: bool,
    },
    /// Our onion layer for it did not read.
    Unreadable,
    /// Neither. `we_opened` says whether we opened the channel it came on: then the sender is
    /// our hub and we are a payee that does not know the payment; else we are a hub that was
    /// not told where to forward.
    Nothing {
        /// We are participant A of the incoming channel.
        we_opened: bool,
    },
}

/// What to do with a committed incoming HTLC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Reveal the preimage: fulfil the HTLC (and mark the invoice paid in the same batch).
    Claim(Preimage),
    /// Offer this HTLC on the outgoing channel (and record the forward in the same batch).
    Forward(Forward),
    /// Fail the HTLC back with this reason.
    Fail(FailureReason),
}

/// Whether the payee accepts `lock` under `terms` at `now`: the amount covers the invoice, the
/// invoice is unpaid and unexpired, and the lock leaves time to claim on chain.
pub fn payee_accepts(lock: &Lock, terms: &InvoiceTerms, now: Expiry) -> Result<(), FailureReason> {
    if terms.paid || lock.amount < terms.amount {
        return Err(FailureReason::IncorrectPaymentDetails);
    }
    if terms.expires_at <= now || lock.expiry.0 < now.0.saturating_add(MIN_OUTGOING_EXPIRY_SECS) {
        return Err(FailureReason::FinalExpiryTooSoon);
    }
    if lock.hashlock != terms.preimage.hashlock() {
        return Err(FailureReason::IncorrectPaymentDetails);
    }
    match terms.sent {
        Some((amount, expiry)) if lock.amount >= amount && lock.expiry >= expiry => Ok(()),
        _ => Err(FailureReason::IncorrectPaymentDetails),
    }
}

/// Decide what to do with the committed incoming HTLC `h`, given what we know of its hashlock.
pub fn on_committed(h: &CommittedHtlc, known: Known<'_>, now: Expiry) -> Step {
    let step = match known {
        Known::Invoice(terms) => {
            payee_accepts(h.lock(), terms, now).map(|()| Step::Claim(terms.preimage))
        }
        Known::Route {
            incoming_frozen: true,
            ..
        } => Err(FailureReason::TemporaryChannelFailure),
        Known::Route { next, outgoing, .. } => decide(h, next, outgoing, now).map(Step::Forward),
        Known::Unreadable => Err(FailureReason::InvalidOnion),
        Known::Nothing { we_opened: true } => Err(FailureReason::IncorrectPaymentDetails),
        Known::Nothing { we_opened: false } => Err(FailureReason::UnknownNextPeer),
    };
    step.unwrap_or_else(Step::Fail)
}

/// How an HTLC we offered ended, as the channel it left on reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The peer revealed the preimage.
    Fulfilled(Preimage),
    /// A co-signed state removed it with this reason, or the offer never took effect.
    Failed(FailureReason),
    /// We took it back after its expiry.
    Expired,
}

impl Outcome {
    /// The failure to send upstream for it, if it is one (an expiry reads as a temporary
    /// failure of the channel it left on).
    pub fn failure(self) -> Option<FailureReason> {
        match self {
            Outcome::Fulfilled(_) => None,
            Outcome::Failed(r) => Some(r),
            Outcome::Expired => Some(FailureReason::TemporaryChannelFailure),
        }
    }
}

/// The outcomes of our HTLCs that one machine event reports.
pub fn outcomes(ev: &Event) -> Vec<(HtlcId, Outcome)> {
    match ev {
        Event::PreimageLearned { id, preimage } => vec![(*id, Outcome::Fulfilled(*preimage))],
        Event::OpDropped {
            op: Op::AddHtlc { id, .. },
            ..
        } => vec![(*id, Outcome::Failed(FailureReason::TemporaryChannelFailure))],
        Event::Committed { ops, .. } => ops
            .iter()
            .filter_map(|op| match op {
                Op::FailHtlc { id, reason } => Some((*id, Outcome::Failed(*reason))),
                Op::ExpireHtlc { id } => Some((*id, Outcome::Expired)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether a machine event moves a payment: a received HTLC, or an outcome of one we offered.
pub fn concerns_payments(e: &Event) -> bool {
    matches!(e, Event::HtlcReceived(_)) || !outcomes(e).is_empty()
}

/// What to do to the incoming HTLC of a forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// Fulfil it with the preimage learned downstream.
    Fulfill(Preimage),
    /// Fail it with the downstream reason.
    Fail(FailureReason),
}

/// A hub's record of one forward: the incoming and outgoing HTLC, and how the outgoing one
/// ended once known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardRecord {
    /// Incoming channel.
    pub in_channel: ChannelId,
    /// Incoming HTLC id.
    pub in_id: HtlcId,
    /// Outgoing channel.
    pub out_channel: ChannelId,
    /// Outgoing HTLC id.
    pub out_id: HtlcId,
    /// Fee earned if it settles.
    pub fee: Amount,
    /// The preimage, learned downstream (rule 5: persisted before it is used upstream).
    pub preimage: Option<Preimage>,
    /// Why the outgoing HTLC ended without the preimage, once a co-signed state removed it
    /// (rule 4: only then is the incoming one failed).
    pub failure: Option<FailureReason>,
    /// Settled or failed on both sides.
    pub done: bool,
    /// The onion secret we share with the payer (the key of our layer of a failure).
    pub secret: B256,
    /// The failure packet the next node sent back, to wrap and pass upstream.
    pub error: Option<ErrorPacket>,
}

impl ForwardRecord {
    /// A new forward of incoming `(in_channel, in_id)` as `fwd`, offered as `out_id`.
    pub fn new(
        (in_channel, in_id): (ChannelId, HtlcId),
        (out_channel, out_id): (ChannelId, HtlcId),
        fwd: &Forward,
        secret: B256,
    ) -> ForwardRecord {
        ForwardRecord {
            in_channel,
            in_id,
            out_channel,
            out_id,
            fee: fwd.fee,
            preimage: None,
            failure: None,
            done: false,
            secret,
            error: None,
        }
    }

    /// Learn how the outgoing HTLC ended. The first outcome wins (a lock ends once); returns
    /// whether the record changed (then persist it with the state that taught it).
    pub fn learn(&mut self, outcome: Outcome) -> bool {
        if self.preimage.is_some() || self.failure.is_some() {
            return false;
        }
        match outcome {
            Outcome::Fulfilled(p) => self.preimage = Some(p),
            o => self.failure = o.failure(),
        }
        true
    }

    /// What to do upstream now: nothing while the outgoing HTLC is open or once done.
    pub fn upstream(&self) -> Option<Upstream> {
        if self.done {
            return None;
        }
        match (self.preimage, self.failure) {
            (Some(p), _) => Some(Upstream::Fulfill(p)),
            (None, Some(r)) => Some(Upstream::Fail(r)),
            (None, None) => None,
        }
    }
}

/// Where a payment stands, for its payer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentStatus {
    /// The HTLC is offered or locked; no answer yet.
    Pending,
    /// The payee revealed the preimage: paid.
    Succeeded {
        /// Proof of payment.
        preimage: Preimage,
    },
    /// Failed back, with the reason the failing node gave.
    Failed {
        /// Why.
        reason: FailureReason,
    },
    /// Nobody answered before the HTLC expired; it was taken back.
    Expired,
}

impl PaymentStatus {
    /// The status after the payment's HTLC ended with `outcome`. A payment ends once: an
    /// ended status never changes (`None`).
    pub fn after(&self, outcome: Outcome) -> Option<PaymentStatus> {
        if *self != PaymentStatus::Pending {
            return None;
        }
        Some(match outcome {
            Outcome::Fulfilled(preimage) => PaymentStatus::Succeeded { preimage },
            Outcome::Failed(reason) => PaymentStatus::Failed { reason },
            Outcome::Expired => PaymentStatus::Expired,
        })
    }
}

/// The HTLC a payer locks toward its hub for one payment, and what it asks the hub to offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HtlcPlan {
    /// Amount locked toward the hub (the payee's amount plus the hub's fee).
    pub sent: Amount,
    /// Expiry of the payer's HTLC.
    pub expiry: Expiry,
    /// What the hub is to offer the payee.
    pub next: NextHop,
}

/// Why a payment cannot be planned through a hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The hub does not forward (its policy is disabled).
    #[error("cannot pay through the hub: it does not forward")]
    Disabled,
    /// The amount is outside the hub's HTLC bounds.
    #[error("cannot pay {amount} through the hub: it forwards from {min} to {max}")]
    OutOfBounds {
        /// The payee's amount.
        amount: Amount,
        /// The hub's smallest HTLC.
        min: Amount,
        /// The hub's largest HTLC.
        max: Amount,
    },
    /// Our channel does not hold enough.
    #[error(
        "cannot pay {amount}: {needed} needed with the hub's fee, {available} free in our channel"
    )]
    Insufficient {
        /// The payee's amount.
        amount: Amount,
        /// Amount plus fee.
        needed: Amount,
        /// Our free balance toward the hub.
        available: Amount,
    },
    /// The payee's HTLC would leave too little time to claim on chain.
    #[error(
        "cannot pay with {secs} s on the payee's HTLC: at least {min} s are needed to claim on chain"
    )]
    ExpiryTooSoon {
        /// The payee's asked delta.
        secs: u64,
        /// The least.
        min: u64,
    },
    /// The payee's HTLC would expire further ahead than the hub locks funds for.
    #[error(
        "cannot pay with {secs} s on the payee's HTLC: the hub locks funds for at most {max} s"
    )]
    ExpiryTooFar {
        /// The payee's asked delta.
        secs: u64,
        /// The hub's horizon.
        max: u64,
    },
    /// The amount, fee or expiry overflows.
    #[error("cannot pay {amount} through the hub: amount or expiry overflows")]
    Overflow {
        /// The payee's amount.
        amount: Amount,
    },
}

/// Price a payment of `amount` to a payee that wants `final_expiry_delta` seconds on its HTLC,
/// through a hub with `policy`, from a channel with `available` free: the exact inputs the
/// hub's [`decide`] accepts (its fee, its delta raised to the protocol minimum, the payee's
/// expiry within the claim window and the hub's horizon), or why it would refuse.
pub fn plan(
    amount: Amount,
    final_expiry_delta: u64,
    policy: &ForwardPolicy,
    available: Amount,
    now: Expiry,
) -> Result<HtlcPlan, PlanError> {
    let route = plan_route(
        amount,
        final_expiry_delta,
        std::slice::from_ref(policy),
        available,
        now,
    )?;
    let next = route
        .hops
        .first()
        .copied()
        .ok_or(PlanError::Overflow { amount })?;
    Ok(HtlcPlan {
        sent: route.sent,
        expiry: route.expiry,
        next,
    })
}

/// A payment priced over a chain of hubs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePlan {
    /// Amount locked toward the first hub (the payee's amount plus every hub's fee).
    pub sent: Amount,
    /// Expiry of the payer's HTLC.
    pub expiry: Expiry,
    /// What each hub is to offer the node after it, in route order (the last is the payee's
    /// HTLC).
    pub hops: Vec<NextHop>,
}

impl From<HtlcPlan> for RoutePlan {
    fn from(p: HtlcPlan) -> RoutePlan {
        RoutePlan {
            sent: p.sent,
            expiry: p.expiry,
            hops: vec![p.next],
        }
    }
}

/// Price a payment of `amount` over hubs with `policies` (in route order, the payer's hub
/// first), backward from the payee: each hub's fee on what it forwards and its expiry delta
/// (raised to the protocol minimum), every hub's bounds and horizon checked as its
/// [`decide`] will check them. An empty `policies` pays the payee directly.
pub fn plan_route(
    amount: Amount,
    final_expiry_delta: u64,
    policies: &[ForwardPolicy],
    available: Amount,
    now: Expiry,
) -> Result<RoutePlan, PlanError> {
    let overflow = PlanError::Overflow { amount };
    if final_expiry_delta < MIN_OUTGOING_EXPIRY_SECS {
        return Err(PlanError::ExpiryTooSoon {
            secs: final_expiry_delta,
            min: MIN_OUTGOING_EXPIRY_SECS,
        });
    }
    let (mut out_amount, mut out_expiry) = (
        amount,
        now.0.checked_add(final_expiry_delta).ok_or(overflow)?,
    );
    let mut hops = Vec::with_capacity(policies.len());
    for policy in policies.iter().rev() {
        if !policy.enabled {
            return Err(PlanError::Disabled);
        }
        if out_amount.is_zero() || out_amount < policy.min_htlc || out_amount > policy.max_htlc {
            return Err(PlanError::OutOfBounds {
                amount: out_amount,
                min: policy.min_htlc.max(Amount(1)),
                max: policy.max_htlc,
            });
        }
        let ahead = out_expiry.saturating_sub(now.0);
        if ahead > policy.max_expiry_horizon {
            return Err(PlanError::ExpiryTooFar {
                secs: ahead,
                max: policy.max_expiry_horizon,
            });
        }
        hops.push(NextHop {
            amount: out_amount,
            expiry: Expiry(out_expiry),
        });
        out_amount = policy
            .fee(out_amount)
            .and_then(|fee| out_amount.checked_add(fee))
            .map_err(|_| overflow)?;
        out_expiry = out_expiry
            .checked_add(policy.expiry_delta.max(MIN_EXPIRY_DELTA_SECS))
            .ok_or(overflow)?;
    }
    hops.reverse();
    if amount.is_zero() {
        return Err(PlanError::OutOfBounds {
            amount,
            min: Amount(1),
            max: Amount::MAX,
        });
    }
    if out_amount > available {
        return Err(PlanError::Insufficient {
            amount,
            needed: out_amount,
            available,
        });
    }
    Ok(RoutePlan {
        sent: out_amount,
        expiry: Expiry(out_expiry),
        hops,
    })
}

#[cfg(test)]
#[path = "payment_tests.rs"]
mod tests;
