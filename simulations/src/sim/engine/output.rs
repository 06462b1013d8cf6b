//! The end of a run: the last sample, and the [`RunOutput`] assembled from the accounts (the
//! summary with its per-hub rows, the samples, the depleted channel directions).

use htlc::{Amount, Side};
use router::ChannelKind;

use super::{Engine, Observer};
use crate::sim::error::SimError;
use crate::sim::ledger::Ledger;
use crate::sim::report::{BucketRow, DepletionRow, HubRow, RunOutput, Summary, ratio};

impl<L: Ledger> Engine<'_, L> {
    /// Takes the last sample and builds the output.
    pub(super) fn finish(mut self, obs: &mut dyn Observer) -> Result<RunOutput, SimError> {
        self.end_batch()?;
        if self.payments.in_flight() > 0 {
            return Err(SimError::Internal(
                "the event queue ran dry with payments in flight",
            ));
        }
        if self
            .samples
            .times_ms
            .last()
            .is_none_or(|t| *t < self.now_ms)
        {
            self.sample()?;
        }
        obs.progress(self.progress());
        let net = &self.scenario.network;
        let unit = &self.params.unit;
        let st = &self.stats;
        let hubs = self.hub_rows();
        let summary = Summary {
            nodes: net.nodes.len(),
            channels: self.world.chans.len(),
            virtual_channels: self
                .world
                .chans
                .iter()
                .filter(|c| c.kind == ChannelKind::Virtual)
                .count(),
            seed: self.scenario.seed,
            raised_expiry_deltas: self.world.raised_deltas,
            virtual_secs: st.last_event_ms as f64 / 1000.0,
            payments: st.payments,
            succeeded: st.succeeded,
            failed: st.payments - st.succeeded,
            success_rate: ratio(st.succeeded, st.payments, 1.0),
            by_amount: st
                .buckets
                .iter()
                .map(|(k, (n, ok))| BucketRow::new(*k, *n, *ok, unit))
                .collect(),
            failure_reasons: st
                .final_failures
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            htlc_failures: st
                .htlc_failures
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            avg_attempts: ratio(st.attempts, st.payments, 0.0),
            avg_htlcs: ratio(st.htlcs, st.payments, 0.0),
            avg_hops: ratio(st.hops, st.succeeded, 0.0),
            volume: Amount(st.volume),
            fees_paid: Amount(st.fees_paid),
            hubs,
            locked_amount_secs: st.locked_ms / 1000,
            channel_updates: self.ledger.updates(),
            unit: unit.clone(),
        };
        let depletion = self.depletion_rows();
        Ok(RunOutput {
            summary,
            samples: self.samples,
            depletion,
        })
    }

    /// A row per hub: what it forwarded, earned, paid and held locked.
    fn hub_rows(&self) -> Vec<HubRow> {
        let net = &self.scenario.network;
        self.world
            .hubs
            .iter()
            .enumerate()
            .map(|(hi, &h)| {
                let at = |v: &Vec<u128>| v.get(h as usize).copied().unwrap_or(0);
                let (via, ok) = self.hub_via.get(hi).copied().unwrap_or((0, 0));
                HubRow {
                    node: net.label(h),
                    collateral: self
                        .world
                        .hub_collateral
                        .get(hi)
                        .copied()
                        .unwrap_or_default(),
                    forwarded: self.node_forwarded.get(h as usize).copied().unwrap_or(0),
                    forwarded_volume: Amount(at(&self.node_forwarded_volume)),
                    fees_earned: Amount(at(&self.node_fees_earned)),
                    fees_paid: Amount(at(&self.node_fees_paid)),
                    payments_via: via,
                    succeeded_via: ok,
                    success_rate_via: ratio(ok, via, 1.0),
                    locked_amount_secs: at(&self.node_locked_ms) / 1000,
                }
            })
            .collect()
    }

    /// A row per channel direction that depleted or refused an HTLC: earliest depleted first,
    /// then most refusals.
    fn depletion_rows(&self) -> Vec<DepletionRow> {
        let net = &self.scenario.network;
        let mut depletion: Vec<DepletionRow> = Vec::new();
        for (ci, c) in self.world.chans.iter().enumerate() {
            for side in [Side::A, Side::B] {
                let at = self.depleted_at.get(ci).and_then(|d| d[side.index()]);
                let failures = self.refusals.get(ci).map_or(0, |r| r[side.index()]);
                if at.is_none() && failures == 0 {
                    continue;
                }
                depletion.push(DepletionRow {
                    channel: format!("{}", c.id),
                    from: net.label(c.nodes[side.index()]),
                    to: net.label(c.nodes[side.other().index()]),
                    capacity: c.capacity,
                    depleted_at_secs: at.map(|ms| ms as f64 / 1000.0),
                    failures,
                });
            }
        }
        depletion.sort_by(|x, y| {
            let key =
                |r: &DepletionRow| r.depleted_at_secs.map_or(u64::MAX, |t| (t * 1000.0) as u64);
            key(x)
                .cmp(&key(y))
                .then(y.failures.cmp(&x.failures))
                .then(x.channel.cmp(&y.channel))
                .then(x.from.cmp(&y.from))
        });
        depletion
    }
}
