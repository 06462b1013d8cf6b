//! The payer's side of a payment's life: each attempt starts with a route and the HTLC the payer
//! offers on its own channel (retrying at once while that channel refuses); the payment ends in
//! a [`PaymentRecord`] handed to the observer.

use htlc::Amount;
use router::{DirectedChannel, RouteError};

use super::learn::Learn;
use super::payment::Attempt;
use super::queue::Event;
use super::{Engine, Observer};
use crate::sim::error::SimError;
use crate::sim::ledger::Ledger;
use crate::sim::report::{FinalFailure, PaymentOutcome, PaymentRecord};

impl<L: Ledger> Engine<'_, L> {
    /// Starts the next attempt of a payment (retrying at once while the payer's own first hop
    /// refuses).
    pub(super) fn start_attempt(
        &mut self,
        slot: u32,
        obs: &mut dyn Observer,
    ) -> Result<(), SimError> {
        loop {
            let batch_index = self.payments.get_mut(slot).and_then(|p| {
                p.attempts += 1;
                p.batch_index.take()
            });
            let route = match batch_index {
                Some(i) => self.batch_route(i)?,
                None => {
                    let q = self.query(slot)?;
                    self.finder.find_route(&self.graph, &q)
                }
            };
            let route = match route {
                Ok(r) => r,
                Err(e) => {
                    let p = self.payments.get(slot)?;
                    let failure = match (p.last_failure, e) {
                        (Some(r), _) => FinalFailure::Htlc(r),
                        (None, RouteError::NoRoute { reason, .. }) => FinalFailure::NoRoute(reason),
                        (None, RouteError::SearchTooLarge(_)) => FinalFailure::SearchTooLarge,
                        (None, other) => return Err(SimError::Route(other)),
                    };
                    return self.finish_payment(slot, PaymentOutcome::Failed(failure), obs);
                }
            };
            let chans = route
                .hops
                .iter()
                .map(|h| {
                    self.world
                        .chan_index
                        .get(&h.channel)
                        .copied()
                        .ok_or(SimError::Internal("route over a channel not in the world"))
                })
                .collect::<Result<Vec<u32>, _>>()?;
            let expiries = route.expiries(self.now())?;
            let (Some(first), Some(&ch0), Some(&exp0)) =
                (route.hops.first(), chans.first(), expiries.first())
            else {
                return Err(SimError::Internal("empty route"));
            };
            let (by, amount) = (first.from_side, first.amount);
            // Hubs on the route, as intermediaries.
            let hubs: Vec<u16> = route
                .hops
                .iter()
                .skip(1)
                .filter_map(|h| {
                    self.scenario
                        .network
                        .node_index(h.from)
                        .and_then(|n| self.hub_of.get(n as usize).copied().flatten())
                })
                .collect();
            let (hashlock, now) = (self.payments.get(slot)?.hashlock, self.now());
            match self.ledger.offer(ch0, by, amount, hashlock, exp0, now)? {
                Ok(id) => {
                    self.check_depletion(ch0, by)?;
                    let at = self.now_ms;
                    let p = self
                        .payments
                        .get_mut(slot)
                        .ok_or(SimError::Internal("event for a finished payment"))?;
                    p.htlcs += 1;
                    for h in hubs {
                        if !p.via_hubs.contains(&h) {
                            p.via_hubs.push(h);
                        }
                    }
                    p.attempt = Some(Attempt {
                        route,
                        chans,
                        expiries,
                        locks: vec![(id, at)],
                        failure: None,
                    });
                    let next = at.saturating_add(self.latency());
                    self.queue.push(next, Event::Arrive { slot, hop: 0 });
                    return Ok(());
                }
                Err(reason) => {
                    // The payer's own channel refused: nothing was sent; learn and retry.
                    self.count_refusal(ch0, by, reason);
                    let now_secs = self.now_secs();
                    let first_dir = DirectedChannel {
                        channel: first.channel,
                        from: by,
                    };
                    if reason.is_liquidity() {
                        self.learn(Learn::Failure(route, 0, now_secs))?;
                    }
                    let max = self.params.max_attempts;
                    let p = self
                        .payments
                        .get_mut(slot)
                        .ok_or(SimError::Internal("event for a finished payment"))?;
                    p.last_failure = Some(reason);
                    p.excluded.push(first_dir);
                    if p.attempts >= max {
                        let f = PaymentOutcome::Failed(FinalFailure::Htlc(reason));
                        return self.finish_payment(slot, f, obs);
                    }
                }
            }
        }
    }

    /// Ends the payment in `slot` with `outcome`: frees its slot, counts it and hands its record
    /// to the observer.
    pub(super) fn finish_payment(
        &mut self,
        slot: u32,
        outcome: PaymentOutcome,
        obs: &mut dyn Observer,
    ) -> Result<(), SimError> {
        let p = self.payments.remove(slot)?;
        let ok = outcome == PaymentOutcome::Succeeded;
        let (hops, fees) = match (&p.attempt, ok) {
            (Some(a), true) => (a.route.hops.len() as u32, a.route.fees()),
            _ => (0, Amount::ZERO),
        };
        let record = PaymentRecord {
            id: p.id,
            source: p.req.source,
            destination: p.req.destination,
            amount: p.req.amount,
            hashlock: p.hashlock,
            dispatched_ms: p.req.at_ms,
            completed_ms: self.now_ms,
            htlcs: p.htlcs,
            attempts: p.attempts,
            hops,
            fees,
            outcome,
        };
        self.count_payment(&p, outcome);
        obs.payment(&record);
        self.completed += 1;
        if self.completed.is_multiple_of(4096) {
            obs.progress(self.progress());
        }
        Ok(())
    }
}
