//! A payment's life hop by hop: each node receives the HTLC and forwards it (or refuses); the
//! payee fulfills; the fulfillment, or the refusal, travels back hop by hop to the payer, who
//! then succeeds, or learns and retries.

use htlc::forward::{ForwardPolicy, NextHop};
use htlc::ids::HtlcId;
use htlc::{Amount, Side};
use router::DirectedChannel;

use super::learn::Learn;
use super::queue::Event;
use super::{Engine, Observer};
use crate::sim::error::SimError;
use crate::sim::ledger::{Ledger, Settle};
use crate::sim::report::{FinalFailure, PaymentOutcome};

/// The lock an attempt holds on one hop.
#[derive(Clone, Copy, Debug)]
struct Held {
    /// World channel index.
    ch: u32,
    /// Lock id.
    id: HtlcId,
    /// Virtual ms it was added.
    since: u64,
    /// Node index of its sender.
    sender: u32,
    amount: Amount,
}

impl<L: Ledger> Engine<'_, L> {
    /// The HTLC on `hop` is committed at its receiver: the payee fulfills; another node
    /// forwards it on the next hop, or refuses and fails it back.
    pub(super) fn on_arrive(&mut self, slot: u32, hop: usize) -> Result<(), SimError> {
        let at = self.now_ms;
        let next_at = at.saturating_add(self.latency());
        let a = self.payments.attempt(slot)?;
        let hop8 = u8::try_from(hop).map_err(|_| SimError::Internal("hop index above 255"))?;
        if hop + 1 == a.route.hops.len() {
            // The payee knows the preimage: it fulfills.
            self.queue.push(next_at, Event::Settle { slot, hop: hop8 });
            return Ok(());
        }
        let (Some(h), Some(&ch_in), Some(&ch_out), Some(&exp), Some(&(in_id, _))) = (
            a.route.hops.get(hop + 1),
            a.chans.get(hop),
            a.chans.get(hop + 1),
            a.expiries.get(hop + 1),
            a.locks.get(hop),
        ) else {
            return Err(SimError::Internal("hop index outside the route"));
        };
        let (by, amount, dir_channel) = (h.from_side, h.amount, h.channel);
        let policy = self.forward_policy(&dir_channel, by)?;
        let next = NextHop {
            amount,
            expiry: exp,
        };
        let now = self.now();
        match self
            .ledger
            .forward((ch_in, in_id), ch_out, by, &policy, next, now)?
        {
            Ok(id) => {
                self.check_depletion(ch_out, by)?;
                if let Some(a) = self.payments.get_mut(slot).and_then(|p| p.attempt.as_mut()) {
                    a.locks.push((id, at));
                }
                self.queue.push(
                    next_at,
                    Event::Arrive {
                        slot,
                        hop: hop8.saturating_add(1),
                    },
                );
            }
            Err(reason) => {
                self.count_refusal(ch_out, by, reason);
                if let Some(a) = self.payments.get_mut(slot).and_then(|p| p.attempt.as_mut()) {
                    a.failure = Some((reason, hop + 1));
                }
                self.queue
                    .push(next_at, Event::FailBack { slot, hop: hop8 });
            }
        }
        Ok(())
    }

    /// The forwarding policy of a direction as the protocol core takes it.
    fn forward_policy(
        &self,
        channel: &htlc::ChannelId,
        side: Side,
    ) -> Result<ForwardPolicy, SimError> {
        let c = self
            .graph
            .channel(channel)
            .ok_or(SimError::Internal("route over a channel not in the graph"))?;
        Ok(ForwardPolicy::from(*c.policy(side)))
    }

    /// The lock the attempt of the payment in `slot` holds on `hop`.
    fn held(&self, slot: u32, hop: usize) -> Result<Held, SimError> {
        let a = self.payments.attempt(slot)?;
        let (Some(&ch), Some(&(id, since)), Some(h)) =
            (a.chans.get(hop), a.locks.get(hop), a.route.hops.get(hop))
        else {
            return Err(SimError::Internal("hop index outside the route"));
        };
        let sender = self
            .scenario
            .network
            .node_index(h.from)
            .ok_or(SimError::Internal("route node not in the network"))?;
        Ok(Held {
            ch,
            id,
            since,
            sender,
            amount: h.amount,
        })
    }

    /// The receiver of `hop` settles its lock `held` as `how`, which ends its locked time; short
    /// of the payer, the same step (`back`) is scheduled one hop back. Whether it has reached
    /// the payer.
    fn settle_hop(
        &mut self,
        hop: usize,
        held: Held,
        how: Settle,
        back: impl FnOnce(u8) -> Event,
    ) -> Result<bool, SimError> {
        let now = self.now();
        self.ledger.settle(held.ch, held.id, how, now)?;
        self.unlock_accounting(held.sender, held.amount, held.since);
        if hop == 0 {
            return Ok(true);
        }
        let at = self.now_ms.saturating_add(self.latency());
        let hop8 = u8::try_from(hop - 1).map_err(|_| SimError::Internal("hop above 255"))?;
        self.queue.push(at, back(hop8));
        Ok(false)
    }

    /// The receiver of `hop` fulfills it; at the payer, the payment succeeded.
    pub(super) fn on_settle(
        &mut self,
        slot: u32,
        hop: usize,
        obs: &mut dyn Observer,
    ) -> Result<(), SimError> {
        let held = self.held(slot, hop)?;
        let preimage = self.payments.get(slot)?.preimage;
        let how = Settle::Fulfill(preimage);
        if !self.settle_hop(hop, held, how, |hop| Event::Settle { slot, hop })? {
            return Ok(());
        }
        // The preimage reached the payer: the payment succeeded.
        let p = self.payments.get(slot)?;
        let route = self.payments.attempt(slot)?.route.clone();
        let payer = p.req.source;
        self.credit_success(&route, payer)?;
        let now_secs = self.now_secs();
        self.learn(Learn::Success(route, now_secs))?;
        self.finish_payment(slot, PaymentOutcome::Succeeded, obs)
    }

    /// The receiver of `hop` fails it back; at the payer, the payment learns, excludes the
    /// direction that refused and retries (or fails, out of attempts).
    pub(super) fn on_fail_back(
        &mut self,
        slot: u32,
        hop: usize,
        obs: &mut dyn Observer,
    ) -> Result<(), SimError> {
        let held = self.held(slot, hop)?;
        let (reason, failed_hop) =
            self.payments
                .attempt(slot)?
                .failure
                .ok_or(SimError::Internal(
                    "failing back an attempt that did not fail",
                ))?;
        let how = Settle::Fail(reason);
        if !self.settle_hop(hop, held, how, |hop| Event::FailBack { slot, hop })? {
            return Ok(());
        }
        // The failure reached the payer: learn, exclude the direction, retry.
        let p = self
            .payments
            .get_mut(slot)
            .ok_or(SimError::Internal("event for a finished payment"))?;
        let a = p
            .attempt
            .take()
            .ok_or(SimError::Internal("event for a payment with no attempt"))?;
        let dir = a
            .route
            .hops
            .get(failed_hop)
            .map(|h| DirectedChannel {
                channel: h.channel,
                from: h.from_side,
            })
            .ok_or(SimError::Internal("failed hop outside the route"))?;
        p.excluded.push(dir);
        p.last_failure = Some(reason);
        let attempts = p.attempts;
        if reason.is_liquidity() {
            let now_secs = self.now_secs();
            self.learn(Learn::Failure(a.route, failed_hop, now_secs))?;
        }
        if attempts >= self.params.max_attempts {
            return self.finish_payment(
                slot,
                PaymentOutcome::Failed(FinalFailure::Htlc(reason)),
                obs,
            );
        }
        self.start_attempt(slot, obs)
    }
}
