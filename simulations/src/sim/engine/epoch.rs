//! Knowledge epochs and admission: what payers learned reaches the router's graph (at each
//! epoch's end, or at once), learned liquidity decays, and payments are admitted from the
//! activity with the route queries of their first attempts.

use std::sync::Arc;

use htlc::forward::DEFAULT_MAX_EXPIRY_HORIZON_SECS;
use router::{ChannelGraph, RouteLimits, RouteQuery};

use super::Engine;
use super::learn::{self, Learn};
use super::payment::Payment;
use super::queue::Event;
use crate::sim::activity::PaymentRequest;
use crate::sim::error::SimError;
use crate::sim::ledger::Ledger;

impl<L: Ledger> Engine<'_, L> {
    /// Epoch boundary: applies what was learned, decays when due, admits the payments due
    /// before the next boundary and starts searching their first routes.
    pub(super) fn on_epoch(&mut self) -> Result<(), SimError> {
        self.end_batch()?;
        let now = self.now_secs();
        let learned = std::mem::take(&mut self.learned);
        let graph = self.graph_mut()?;
        for l in learned {
            learn::apply(graph, l)?;
        }
        if self.now_ms >= self.next_decay_ms {
            self.graph_mut()?.decay_liquidity(now);
            self.next_decay_ms = self.now_ms.saturating_add(self.decay_interval_ms());
        }
        let end = self.now_ms.saturating_add(self.epoch_ms());
        let mut queries: Vec<RouteQuery> = Vec::new();
        while let Some(req) = self.activity.next_before(end) {
            let at = req.at_ms;
            let slot = self.admit(req);
            queries.push(self.query(slot)?);
            let index = queries.len() - 1;
            if let Some(p) = self.payments.get_mut(slot) {
                p.batch_index = Some(index);
            }
            self.queue.push(at, Event::Dispatch { slot });
        }
        self.start_batch(queries);
        if self.busy() {
            self.queue.push(end, Event::Epoch);
        }
        Ok(())
    }

    /// Immediate mode: decays learned liquidity, and schedules the next decay while busy.
    pub(super) fn on_decay(&mut self) -> Result<(), SimError> {
        let now = self.now_secs();
        self.graph_mut()?.decay_liquidity(now);
        if self.busy() {
            let next = self.now_ms.saturating_add(self.decay_interval_ms());
            self.queue.push(next, Event::Decay);
        }
        Ok(())
    }

    /// The graph, to change it (only between epochs, when no worker holds it).
    fn graph_mut(&mut self) -> Result<&mut ChannelGraph, SimError> {
        Arc::get_mut(&mut self.graph).ok_or(SimError::Internal("graph changed during an epoch"))
    }

    /// Applies what a payer learned: at once in immediate mode, else at the epoch's end.
    pub(super) fn learn(&mut self, l: Learn) -> Result<(), SimError> {
        if self.epoch_ms() == 0 {
            learn::apply(self.graph_mut()?, l)
        } else {
            self.learned.push(l);
            Ok(())
        }
    }

    /// Creates the payment of a request and returns its slot.
    fn admit(&mut self, req: PaymentRequest) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.payments
            .insert(Payment::new(id, req, self.scenario.seed))
    }

    /// Immediate mode: admits the next request and schedules its dispatch.
    pub(super) fn pull_one(&mut self) -> Result<(), SimError> {
        if let Some(req) = self.activity.next_before(u64::MAX) {
            let at = req.at_ms;
            let slot = self.admit(req);
            self.queue.push(at, Event::Dispatch { slot });
        }
        Ok(())
    }

    /// The address of node `n`.
    fn address(&self, n: u32) -> Result<router::NodeId, SimError> {
        self.scenario
            .network
            .node(n)
            .ok_or(SimError::Internal("node index out of range"))
    }

    /// The route query of the payment in `slot`'s next attempt (avoiding what failed it).
    pub(super) fn query(&self, slot: u32) -> Result<RouteQuery, SimError> {
        let p = self.payments.get(slot)?;
        Ok(RouteQuery {
            payer: self.address(p.req.source)?,
            payee: self.address(p.req.destination)?,
            amount: p.req.amount,
            final_expiry_delta: self.params.final_expiry_delta_secs,
            limits: RouteLimits {
                max_hops: self.params.max_hops,
                max_total_expiry_delta: DEFAULT_MAX_EXPIRY_HORIZON_SECS,
                max_fee: self.params.max_fee_ppm.map(|ppm| p.req.amount.ppm(ppm)),
            },
            excluded: p.excluded.clone(),
            excluded_nodes: Vec::new(),
        })
    }
}
