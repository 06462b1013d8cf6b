//! The run's accounts: running totals ([`Stats`]), per node and per hub; locked liquidity;
//! HTLC refusals and channel depletion; and the periodic samples of fees and of the tracked
//! channels' balances.

use std::collections::BTreeMap;

use htlc::{Amount, FailureReason, Side};
use router::Route;

use super::Engine;
use super::payment::Payment;
use super::queue::Event;
use crate::sim::error::SimError;
use crate::sim::ledger::Ledger;
use crate::sim::report::{PaymentOutcome, Samples, TrackedChannel, decade, reason_name};
use crate::sim::scenario::Scenario;
use crate::sim::world::{self, World};

/// Running totals for the summary.
#[derive(Clone, Debug, Default)]
pub(super) struct Stats {
    pub(super) payments: u64,
    pub(super) succeeded: u64,
    pub(super) attempts: u64,
    pub(super) htlcs: u64,
    pub(super) hops: u64,
    pub(super) volume: u128,
    pub(super) fees_paid: u128,
    /// Per amount decade: payments, succeeded.
    pub(super) buckets: BTreeMap<u32, (u64, u64)>,
    pub(super) final_failures: BTreeMap<&'static str, u64>,
    pub(super) htlc_failures: BTreeMap<&'static str, u64>,
    pub(super) locked_ms: u128,
    window_ok: u64,
    window_failed: u64,
    pub(super) last_event_ms: u64,
}

/// `x * f` rounded down for `f` in `[0, 1]`.
pub(super) fn fraction_of(x: u128, f: f64) -> u128 {
    let p = (f.clamp(0.0, 1.0) * 1e9).round() as u128;
    (x / 1_000_000_000) * p + (x % 1_000_000_000) * p / 1_000_000_000
}

/// The channels whose balances are sampled: each hub's largest `per_hub`, or (no hubs) every
/// channel of a small network, else the `per_hub` largest.
pub(super) fn tracked_channels(world: &World, per_hub: usize) -> Vec<u32> {
    let by_size = |mut v: Vec<u32>| {
        v.sort_by(|a, b| {
            let (ca, cb) = (world.chans.get(*a as usize), world.chans.get(*b as usize));
            let key = |c: Option<&world::ChanInfo>| c.map(|c| (c.capacity, c.id));
            key(cb)
                .map(|k| k.0)
                .cmp(&key(ca).map(|k| k.0))
                .then(key(ca).map(|k| k.1).cmp(&key(cb).map(|k| k.1)))
        });
        v
    };
    if world.hubs.is_empty() {
        let all: Vec<u32> = (0..world.chans.len() as u32).collect();
        if all.len() <= 64 {
            return all;
        }
        let mut v = by_size(all);
        v.truncate(per_hub);
        return v;
    }
    let mut out: Vec<u32> = Vec::new();
    for h in &world.hubs {
        let mine: Vec<u32> = world
            .chans
            .iter()
            .enumerate()
            .filter(|(_, c)| c.nodes.contains(h))
            .map(|(i, _)| i as u32)
            .collect();
        for c in by_size(mine).into_iter().take(per_hub) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

/// The samples of a run before its first sample: a series per hub and per `tracked` channel.
pub(super) fn no_samples(scenario: &Scenario, world: &World, tracked: &[u32]) -> Samples {
    Samples {
        hub_fees: vec![Vec::new(); world.hubs.len()],
        hub_names: world
            .hubs
            .iter()
            .map(|h| scenario.network.label(*h))
            .collect(),
        channels: tracked
            .iter()
            .filter_map(|&c| world.chans.get(c as usize).map(|ch| (c, ch)))
            .map(|(_, ch)| TrackedChannel {
                id: format!("{}", ch.id),
                node_a: scenario.network.label(ch.nodes[0]),
                node_b: scenario.network.label(ch.nodes[1]),
                hub: world.hubs.iter().enumerate().find_map(|(hi, h)| {
                    ch.nodes.iter().position(|n| n == h).map(|side| (hi, side))
                }),
                capacity: ch.capacity.0,
                points: Vec::new(),
            })
            .collect(),
        ..Samples::default()
    }
}

impl<L: Ledger> Engine<'_, L> {
    /// Sampling time: samples, and schedules the next sample while busy.
    pub(super) fn on_sample(&mut self) -> Result<(), SimError> {
        self.sample()?;
        if self.busy() {
            let next = self.now_ms.saturating_add(self.sample_ms);
            self.queue.push(next, Event::Sample);
        }
        Ok(())
    }

    /// Records the success and failures of the window now ending, the fees so far and the
    /// tracked channels' balances.
    pub(super) fn sample(&mut self) -> Result<(), SimError> {
        let s = &mut self.samples;
        s.times_ms.push(self.now_ms);
        s.window_succeeded
            .push(std::mem::take(&mut self.stats.window_ok));
        s.window_failed
            .push(std::mem::take(&mut self.stats.window_failed));
        s.total_fees.push(self.stats.fees_paid);
        for (hi, h) in self.world.hubs.iter().enumerate() {
            let fees = self.node_fees_earned.get(*h as usize).copied().unwrap_or(0);
            if let Some(series) = s.hub_fees.get_mut(hi) {
                series.push(fees);
            }
        }
        for (tc, &ch) in s.channels.iter_mut().zip(&self.tracked) {
            let st = self
                .ledger
                .state(ch)
                .ok_or(SimError::Internal("channel index out of range"))?;
            tc.points
                .push([st.balances[0].0, st.balances[1].0, st.locks_total()?.0]);
        }
        Ok(())
    }

    /// Removes the lock of `hop` from the accounting of locked liquidity.
    pub(super) fn unlock_accounting(&mut self, a_sender: u32, amount: Amount, since: u64) {
        let held = u128::from(self.now_ms.saturating_sub(since));
        let v = amount.0.saturating_mul(held);
        self.stats.locked_ms = self.stats.locked_ms.saturating_add(v);
        if let Some(x) = self.node_locked_ms.get_mut(a_sender as usize) {
            *x = x.saturating_add(v);
        }
    }

    /// Counts a refusal to add an HTLC on `side` of channel `ch`.
    pub(super) fn count_refusal(&mut self, ch: u32, side: Side, reason: FailureReason) {
        *self
            .stats
            .htlc_failures
            .entry(reason_name(reason))
            .or_insert(0) += 1;
        if let Some(r) = self.refusals.get_mut(ch as usize) {
            r[side.index()] += 1;
        }
    }

    /// Notes when `side` of channel `ch` first falls below its depletion floor.
    pub(super) fn check_depletion(&mut self, ch: u32, side: Side) -> Result<(), SimError> {
        let balance = self
            .ledger
            .state(ch)
            .ok_or(SimError::Internal("channel index out of range"))?
            .balances[side.index()];
        let floor = self.depletion_floor.get(ch as usize).copied().unwrap_or(0);
        if balance.0 < floor
            && let Some(d) = self.depleted_at.get_mut(ch as usize)
            && d[side.index()].is_none()
        {
            d[side.index()] = Some(self.now_ms);
        }
        Ok(())
    }

    /// Credits a successful `route` of `payer`: fees earned and volume forwarded by each
    /// intermediary, fees paid by the payer.
    pub(super) fn credit_success(&mut self, route: &Route, payer: u32) -> Result<(), SimError> {
        for h in route.hops.iter().skip(1) {
            let Some(n) = self.scenario.network.node_index(h.from) else {
                return Err(SimError::Internal("route node not in the network"));
            };
            if let Some(x) = self.node_fees_earned.get_mut(n as usize) {
                *x = x.saturating_add(h.fee.0);
            }
            if let Some(x) = self.node_forwarded.get_mut(n as usize) {
                *x += 1;
            }
            if let Some(x) = self.node_forwarded_volume.get_mut(n as usize) {
                *x = x.saturating_add(h.amount.0);
            }
        }
        let fees = route.fees();
        if let Some(x) = self.node_fees_paid.get_mut(payer as usize) {
            *x = x.saturating_add(fees.0);
        }
        self.stats.fees_paid = self.stats.fees_paid.saturating_add(fees.0);
        self.stats.hops += route.hops.len() as u64;
        Ok(())
    }

    /// Counts a finished payment: in the totals, its amount's decade, the sampling window and
    /// each hub it went through.
    pub(super) fn count_payment(&mut self, p: &Payment, outcome: PaymentOutcome) {
        let ok = outcome == PaymentOutcome::Succeeded;
        let s = &mut self.stats;
        s.payments += 1;
        s.attempts += u64::from(p.attempts);
        s.htlcs += u64::from(p.htlcs);
        let bucket = s.buckets.entry(decade(p.req.amount)).or_insert((0, 0));
        bucket.0 += 1;
        if ok {
            bucket.1 += 1;
            s.succeeded += 1;
            s.window_ok += 1;
            s.volume = s.volume.saturating_add(p.req.amount.0);
        } else {
            s.window_failed += 1;
        }
        if let PaymentOutcome::Failed(f) = outcome {
            *s.final_failures.entry(f.name()).or_insert(0) += 1;
        }
        s.last_event_ms = self.now_ms;
        for h in &p.via_hubs {
            if let Some(v) = self.hub_via.get_mut(usize::from(*h)) {
                v.0 += 1;
                if ok {
                    v.1 += 1;
                }
            }
        }
    }
}
