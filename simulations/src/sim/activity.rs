//! Payments to dispatch, in virtual time: explicit flows (SimLN's `activity`) and random activity
//! (Poisson arrivals, log-normal amounts, capacity-weighted ends), merged into one stream.
//!
//! Every flow draws from its own seeded ChaCha stream, so a flow's payments do not depend on the
//! other flows, on the network's liquidity or on anything the run does: two runs of the same
//! scenario with different hub fees or collateral dispatch exactly the same payments.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use htlc::Amount;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal};

use crate::sim::error::{SimError, invalid};
use crate::sim::scenario::{Flow, RandomActivity};

/// Seconds in the month of `capacity_multiplier` (30 days).
pub const MONTH_SECS: f64 = 30.0 * 24.0 * 3600.0;

/// One payment to dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaymentRequest {
    /// Virtual time, milliseconds from the start.
    pub at_ms: u64,
    /// Paying node index.
    pub source: u32,
    /// Paid node index.
    pub destination: u32,
    /// Amount the destination receives.
    pub amount: Amount,
}

/// A flow's random stream and progress.
#[derive(Debug)]
struct FlowState {
    rng: ChaCha8Rng,
    kind: FlowKind,
    sent: u64,
}

#[derive(Debug)]
enum FlowKind {
    Explicit(Flow),
    Random(RandomState),
}

#[derive(Debug)]
struct RandomState {
    /// Cumulative node capacities (weights of sources and destinations).
    cumulative: Vec<u128>,
    total: u128,
    gap_secs: Exp<f64>,
    mean_gap_secs: f64,
    amount: LogNormal<f64>,
}

/// The merged stream of payments (see the module documentation).
#[derive(Debug)]
pub struct ActivityStream {
    flows: Vec<FlowState>,
    /// (next time, flow index) of every flow with payments left.
    next: BinaryHeap<Reverse<(u64, u32)>>,
    end_ms: Option<u64>,
    max_payments: Option<u64>,
    emitted: u64,
}

fn flow_rng(seed: u64, flow: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // One independent stream per flow.
    rng.set_stream(flow as u64 + 1);
    rng
}

impl RandomState {
    fn new(r: &RandomActivity, node_capacity: &[u128]) -> Result<RandomState, SimError> {
        let mut cumulative = Vec::with_capacity(node_capacity.len());
        let mut total: u128 = 0;
        for c in node_capacity {
            total = total.checked_add(*c).ok_or(SimError::Overflow)?;
            cumulative.push(total);
        }
        if node_capacity.iter().filter(|c| **c > 0).count() < 2 {
            return Err(invalid(
                "random_activity",
                "needs at least two nodes with capacity",
            ));
        }
        // Every node sends multiplier × capacity per month: payments per second over all nodes.
        let rate =
            r.capacity_multiplier * total as f64 / (r.expected_payment.0 as f64 * MONTH_SECS);
        let gap_secs = Exp::new(rate).map_err(|e| {
            invalid(
                "random_activity",
                format!("payment rate {rate} per second is unusable: {e}"),
            )
        })?;
        // Mean of a log-normal is exp(mu + sigma^2 / 2): this mu makes it the expected amount.
        let sigma = r.amount_sigma;
        let mu = (r.expected_payment.0 as f64).ln() - sigma * sigma / 2.0;
        let amount = LogNormal::new(mu, sigma)
            .map_err(|e| invalid("random_activity.amount_sigma", format!("unusable: {e}")))?;
        Ok(RandomState {
            cumulative,
            total,
            gap_secs,
            mean_gap_secs: 1.0 / rate,
            amount,
        })
    }

    /// A node drawn in proportion to its capacity.
    fn pick(&self, rng: &mut ChaCha8Rng) -> u32 {
        let x = rng.random_range(0..self.total);
        // The first node whose cumulative capacity exceeds x: never past the end since x < total.
        self.cumulative.partition_point(|c| *c <= x) as u32
    }
}

fn secs_to_ms(s: f64) -> u64 {
    // Saturating float to integer conversion; gaps are finite and positive.
    (s * 1000.0).round().max(1.0) as u64
}

impl ActivityStream {
    /// The stream of a scenario's flows and random activity; `node_capacity` weights the random
    /// activity's sources and destinations.
    pub fn new(
        flows: &[Flow],
        random: Option<&RandomActivity>,
        node_capacity: &[u128],
        seed: u64,
        end_ms: Option<u64>,
        max_payments: Option<u64>,
    ) -> Result<ActivityStream, SimError> {
        let mut states = Vec::with_capacity(flows.len() + 1);
        let mut next = BinaryHeap::new();
        for (i, f) in flows.iter().enumerate() {
            if f.count != Some(0) {
                next.push(Reverse((f.start_ms, i as u32)));
            }
            states.push(FlowState {
                rng: flow_rng(seed, i),
                kind: FlowKind::Explicit(f.clone()),
                sent: 0,
            });
        }
        if let Some(r) = random {
            let i = states.len();
            let mut st = FlowState {
                rng: flow_rng(seed, i),
                kind: FlowKind::Random(RandomState::new(r, node_capacity)?),
                sent: 0,
            };
            let first = match &st.kind {
                FlowKind::Random(rs) => secs_to_ms(rs.gap_secs.sample(&mut st.rng)),
                FlowKind::Explicit(_) => 0,
            };
            next.push(Reverse((first, i as u32)));
            states.push(st);
        }
        let mut s = ActivityStream {
            flows: states,
            next,
            end_ms,
            max_payments,
            emitted: 0,
        };
        s.trim();
        Ok(s)
    }

    /// Drops flows whose next payment falls after the end.
    fn trim(&mut self) {
        if let Some(end) = self.end_ms {
            while let Some(Reverse((t, _))) = self.next.peek() {
                if *t < end {
                    break;
                }
                self.next.pop();
            }
        }
        if self.max_payments.is_some_and(|m| self.emitted >= m) {
            self.next.clear();
        }
    }

    /// Time of the next payment, if any is left.
    pub fn peek_time(&self) -> Option<u64> {
        self.next.peek().map(|Reverse((t, _))| *t)
    }

    /// Whether no payment is left.
    pub fn is_done(&self) -> bool {
        self.next.is_empty()
    }

    /// Payments dispatched so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// The next payment if it is due strictly before `limit_ms`.
    pub fn next_before(&mut self, limit_ms: u64) -> Option<PaymentRequest> {
        let &Reverse((at_ms, fi)) = self.next.peek()?;
        if at_ms >= limit_ms {
            return None;
        }
        self.next.pop();
        let flow = self.flows.get_mut(fi as usize)?;
        flow.sent += 1;
        let (req, gap_ms, more) = match &flow.kind {
            FlowKind::Explicit(f) => {
                let amount = if f.amount[0] == f.amount[1] {
                    f.amount[0]
                } else {
                    Amount(flow.rng.random_range(f.amount[0].0..=f.amount[1].0))
                };
                let gap = if f.interval_ms[0] == f.interval_ms[1] {
                    f.interval_ms[0]
                } else {
                    flow.rng.random_range(f.interval_ms[0]..=f.interval_ms[1])
                };
                let req = PaymentRequest {
                    at_ms,
                    source: f.source,
                    destination: f.destination,
                    amount,
                };
                (req, gap, f.count.is_none_or(|c| flow.sent < c))
            }
            FlowKind::Random(r) => {
                let source = r.pick(&mut flow.rng);
                let mut destination = r.pick(&mut flow.rng);
                while destination == source {
                    // At least two nodes have capacity, so another draw ends this quickly.
                    destination = r.pick(&mut flow.rng);
                }
                let x: f64 = r.amount.sample(&mut flow.rng);
                // Saturating conversion; at least one base unit.
                let amount = Amount((x.round() as u128).max(1));
                let gap = secs_to_ms(r.gap_secs.sample(&mut flow.rng));
                let req = PaymentRequest {
                    at_ms,
                    source,
                    destination,
                    amount,
                };
                (req, gap, true)
            }
        };
        if more {
            self.next.push(Reverse((at_ms.saturating_add(gap_ms), fi)));
        }
        self.emitted += 1;
        self.trim();
        Some(req)
    }

    /// When the last payment is expected (for sampling intervals): the end if given, else the
    /// last payment of every counted flow, else the expected time of `max_payments`.
    pub fn expected_end_ms(&self) -> u64 {
        if let Some(end) = self.end_ms {
            return end;
        }
        let mut end = 0u64;
        let mut rate_per_ms = 0.0;
        for f in &self.flows {
            match &f.kind {
                FlowKind::Explicit(fl) => {
                    if let Some(c) = fl.count {
                        let mean_gap = (fl.interval_ms[0] + fl.interval_ms[1]) / 2;
                        end = end.max(fl.start_ms.saturating_add(mean_gap.saturating_mul(c)));
                    }
                    rate_per_ms += 2.0 / (fl.interval_ms[0] + fl.interval_ms[1]).max(1) as f64;
                }
                FlowKind::Random(r) => rate_per_ms += 1.0 / (r.mean_gap_secs * 1000.0),
            }
        }
        if let Some(m) = self.max_payments
            && rate_per_ms > 0.0
        {
            // Saturating conversion of a finite positive estimate.
            let t = (m as f64 / rate_per_ms) as u64;
            end = if end == 0 { t } else { end.min(t) };
        }
        end.max(1000)
    }
}
