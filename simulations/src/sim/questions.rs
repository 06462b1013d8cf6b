//! The operator's questions, each answered by comparing runs of the same scenario (same seed,
//! hence exactly the same payments dispatched) that differ in one thing:
//!
//! - [`collateral_for`]: how much collateral a hub needs for a target success rate (a search
//!   over a multiplier of its collateral);
//! - which channels deplete first and when: [`crate::sim::RunOutput::depletion`] of one run;
//! - [`fee_sweep`]: what a fee change does to the hub's revenue and to success;
//! - [`virtual_channel_savings`]: what opening a virtual channel between two busy peers saves.

use std::collections::BTreeMap;

use htlc::Amount;
use serde::Serialize;

use crate::sim::engine::{Collect, Discard, RunOptions};
use crate::sim::error::{SimError, invalid};
use crate::sim::report::{PaymentOutcome, PaymentRecord, RunOutput};
use crate::sim::scenario::{Collateral, Scenario, VirtualChannel};
use crate::sim::{Protocol, run};

/// What success rate the collateral search aims at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Measure {
    /// All payments of the run.
    Overall,
    /// Payments that tried a route through the hub.
    ViaHub,
}

/// One run of the collateral search.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CollateralTrial {
    /// Factor on the hub's collateral as the scenario gives it.
    pub multiplier: f64,
    /// The hub's total collateral in that run.
    pub collateral: Amount,
    /// Overall success rate.
    pub success_rate: f64,
    /// Success rate of payments that tried the hub.
    pub success_rate_via_hub: f64,
    /// The hub's fee revenue.
    pub fees_earned: Amount,
}

impl CollateralTrial {
    fn rate(&self, m: Measure) -> f64 {
        match m {
            Measure::Overall => self.success_rate,
            Measure::ViaHub => self.success_rate_via_hub,
        }
    }
}

/// The answer of [`collateral_for`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CollateralAnswer {
    /// The hub.
    pub hub: String,
    /// The target success rate.
    pub target: f64,
    /// What the target applies to.
    pub measure: Measure,
    /// Every run, by multiplier.
    pub trials: Vec<CollateralTrial>,
    /// The smallest collateral found that meets the target (`None`: not even at the largest
    /// multiplier tried).
    pub answer: Option<CollateralTrial>,
}

/// The scenario with the hub's collateral scaled by `m` (on top of what it configures).
fn with_collateral(base: &Scenario, hub: u32, m: f64) -> Scenario {
    let mut s = base.clone();
    let h = s.hub_mut(hub);
    h.collateral = match h.collateral {
        Collateral::AsNetwork => Collateral::Multiplier(m),
        Collateral::Multiplier(x) => Collateral::Multiplier(x * m),
        // Saturating float conversion of a finite product.
        Collateral::Total(t) => Collateral::Total(Amount((t.0 as f64 * m) as u128)),
    };
    s
}

fn hub_row_index(s: &Scenario, hub: u32) -> Result<usize, SimError> {
    s.hubs
        .iter()
        .position(|h| h.node == hub)
        .ok_or(SimError::Internal("hub missing from its scenario"))
}

fn trial(
    base: &Scenario,
    hub: u32,
    m: f64,
    protocol: Protocol,
    options: RunOptions,
) -> Result<CollateralTrial, SimError> {
    let s = with_collateral(base, hub, m);
    let out = run(&s, protocol, options, &mut Discard)?;
    let hi = hub_row_index(&s, hub)?;
    let row = out
        .summary
        .hubs
        .get(hi)
        .ok_or(SimError::Internal("hub missing from its summary"))?;
    Ok(CollateralTrial {
        multiplier: m,
        collateral: row.collateral,
        success_rate: out.summary.success_rate,
        success_rate_via_hub: row.success_rate_via,
        fees_earned: row.fees_earned,
    })
}

/// What [`collateral_for`] searches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CollateralSearch {
    /// The hub (node index).
    pub hub: u32,
    /// The success rate to reach, in `(0, 1]`.
    pub target: f64,
    /// What it applies to.
    pub measure: Measure,
    /// The largest multiplier tried.
    pub max_multiplier: f64,
    /// Bisection steps once the answer is bracketed.
    pub steps: u32,
}

/// Searches the smallest multiplier of the hub's collateral at which the success rate
/// (`measure`) reaches `target`: doubling (or halving, if the scenario already meets it) from
/// 1, then `steps` bisections between the last multiplier that failed and the first that
/// passed.
pub fn collateral_for(
    scenario: &Scenario,
    search: &CollateralSearch,
    protocol: Protocol,
    options: RunOptions,
) -> Result<CollateralAnswer, SimError> {
    let CollateralSearch {
        hub,
        target,
        measure,
        max_multiplier,
        steps,
    } = *search;
    if !(target.is_finite() && target > 0.0 && target <= 1.0) {
        return Err(invalid(
            "target",
            format!("must be in (0, 1], got {target}"),
        ));
    }
    if !(max_multiplier.is_finite() && (1.0..=1e6).contains(&max_multiplier)) {
        return Err(invalid(
            "max_multiplier",
            format!("must be in [1, 1e6], got {max_multiplier}"),
        ));
    }
    let mut trials = vec![trial(scenario, hub, 1.0, protocol, options)?];
    let first_ok = trials.first().is_some_and(|t| t.rate(measure) >= target);
    // (failing, passing) multipliers bracketing the answer.
    let mut bracket: Option<(f64, f64)> = None;
    if first_ok {
        let mut m = 1.0;
        loop {
            let lower = m / 2.0;
            if lower < 1.0 / 64.0 {
                bracket = Some((0.0, m));
                break;
            }
            let t = trial(scenario, hub, lower, protocol, options)?;
            let ok = t.rate(measure) >= target;
            trials.push(t);
            if ok {
                m = lower;
            } else {
                bracket = Some((lower, m));
                break;
            }
        }
    } else {
        let mut m = 1.0;
        while m < max_multiplier {
            let upper = (m * 2.0).min(max_multiplier);
            let t = trial(scenario, hub, upper, protocol, options)?;
            let ok = t.rate(measure) >= target;
            trials.push(t);
            if ok {
                bracket = Some((m, upper));
                break;
            }
            m = upper;
        }
    }
    if let Some((mut lo, mut hi)) = bracket {
        for _ in 0..steps {
            if lo <= 0.0 {
                break;
            }
            let mid = (lo + hi) / 2.0;
            let t = trial(scenario, hub, mid, protocol, options)?;
            let ok = t.rate(measure) >= target;
            trials.push(t);
            if ok {
                hi = mid;
            } else {
                lo = mid;
            }
        }
    }
    trials.sort_by(|a, b| a.multiplier.total_cmp(&b.multiplier));
    let answer = trials.iter().find(|t| t.rate(measure) >= target).cloned();
    Ok(CollateralAnswer {
        hub: scenario.network.label(hub),
        target,
        measure,
        trials,
        answer,
    })
}

/// One fee setting of [`fee_sweep`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeeTrial {
    /// The hub's flat fee (`None`: as the network or scenario gives it).
    pub base_fee: Option<Amount>,
    /// The hub's proportional fee (`None`: as given).
    pub fee_ppm: Option<u32>,
    /// The hub's fee revenue.
    pub fees_earned: Amount,
    /// HTLCs it forwarded in successful payments.
    pub forwarded: u64,
    /// Their volume.
    pub forwarded_volume: Amount,
    /// Payments that tried a route through it.
    pub payments_via: u64,
    /// Success rate of those.
    pub success_rate_via_hub: f64,
    /// Overall success rate.
    pub success_rate: f64,
    /// Fees paid by all payers.
    pub fees_paid: Amount,
}

/// Runs the scenario as given, then once per fee setting of `hub` (flat fee, proportional
/// fee; `None` keeps the given one), and reports the hub's revenue and the success rates.
pub fn fee_sweep(
    scenario: &Scenario,
    hub: u32,
    settings: &[(Option<Amount>, Option<u32>)],
    protocol: Protocol,
    options: RunOptions,
) -> Result<Vec<FeeTrial>, SimError> {
    let mut base = scenario.clone();
    base.hub_mut(hub);
    let hi = hub_row_index(&base, hub)?;
    let mut out = Vec::with_capacity(settings.len() + 1);
    let given = base
        .hubs
        .get(hi)
        .map(|h| (h.base_fee, h.fee_ppm))
        .unwrap_or_default();
    for &(base_fee, fee_ppm) in std::iter::once(&given).chain(settings) {
        let mut s = base.clone();
        let h = s.hub_mut(hub);
        h.base_fee = base_fee.or(h.base_fee);
        h.fee_ppm = fee_ppm.or(h.fee_ppm);
        let (bf, fp) = (h.base_fee, h.fee_ppm);
        let r = run(&s, protocol, options, &mut Discard)?;
        let row = r
            .summary
            .hubs
            .get(hi)
            .ok_or(SimError::Internal("hub missing from its summary"))?;
        out.push(FeeTrial {
            base_fee: bf,
            fee_ppm: fp,
            fees_earned: row.fees_earned,
            forwarded: row.forwarded,
            forwarded_volume: row.forwarded_volume,
            payments_via: row.payments_via,
            success_rate_via_hub: row.success_rate_via,
            success_rate: r.summary.success_rate,
            fees_paid: r.summary.fees_paid,
        });
    }
    Ok(out)
}

/// What the payments between two peers cost, in one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PairStats {
    /// Payments between them (both directions).
    pub payments: u64,
    /// Of which succeeded.
    pub succeeded: u64,
    /// Fees they paid.
    pub fees_paid: Amount,
    /// Hops of their successful payments, added up (each hop is an HTLC added and settled).
    pub hops: u64,
    /// Volume each way: first peer to second, second to first.
    pub volume: [Amount; 2],
    /// Largest payment each way.
    pub largest: [Amount; 2],
}

/// Network-wide figures of one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunFigures {
    /// Overall success rate.
    pub success_rate: f64,
    /// Fees paid by all payers.
    pub fees_paid: Amount,
    /// Funds locked in HTLCs times the time locked (amount · s).
    pub locked_amount_secs: u128,
    /// Channel updates committed.
    pub channel_updates: u64,
}

impl RunFigures {
    fn of(o: &RunOutput) -> RunFigures {
        RunFigures {
            success_rate: o.summary.success_rate,
            fees_paid: o.summary.fees_paid,
            locked_amount_secs: o.summary.locked_amount_secs,
            channel_updates: o.summary.channel_updates,
        }
    }
}

/// The answer of [`virtual_channel_savings`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VirtualAnswer {
    /// The two peers.
    pub peers: [String; 2],
    /// Their balances in the virtual channel (each also locked as a guarantee by every
    /// intermediary of the funding path).
    pub fund: [Amount; 2],
    /// The pair's payments without the virtual channel.
    pub before: PairStats,
    /// With it.
    pub after: PairStats,
    /// The whole network without it.
    pub network_before: RunFigures,
    /// With it.
    pub network_after: RunFigures,
    /// What opening and closing it costs, by the protocol's own rules.
    pub cost: VirtualCost,
}

/// What a virtual channel costs to open and close over a path of hubs (ADR 0026), with the
/// product's rules: each hub's opening fee (`htlc::vchan::VirtualPolicy`), the co-signed
/// updates the open and the close take, and the gas of the happy path (none: both are off
/// chain) and of the virtually-funded sad exit (contracts/GAS.md).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VirtualCost {
    /// Hubs between the two peers.
    pub hubs: usize,
    /// Opening fees, all hubs together (paid by the first peer with its leg's guarantee).
    pub open_fee: Amount,
    /// Co-signed updates to open: one per ledger leg (its guarantee) and the opening state.
    pub open_updates: u64,
    /// Co-signed updates to close: the final state and one release per ledger leg.
    pub close_updates: u64,
    /// Gas of the open and the close when everyone cooperates.
    pub happy_gas: u64,
    /// Gas of the sad exit as measured for one ledger leg: its close, the virtual channel's
    /// close, its conclude and its `resolveGuarantee` (contracts/GAS.md); the virtual close is
    /// paid once per channel, the rest once per leg that goes on chain.
    pub sad_exit_gas: u64,
    /// Fees the pair saved (without minus with) less the opening fees; negative: a loss.
    pub net_saving: i128,
}

/// Gas of the virtually-funded sad exit measured in `contracts/GAS.md` (ledger close, virtual
/// close, ledger conclude, `resolveGuarantee`), ETH.
pub const VIRTUAL_SAD_EXIT_GAS: u64 = 338_206;

impl VirtualCost {
    /// The cost of a virtual channel of value `value` over `hubs` hubs, each charging by
    /// `policy`, that changed the pair's fees from `before` to `after`.
    pub fn of(
        hubs: usize,
        value: Amount,
        policy: &htlc::vchan::VirtualPolicy,
        before: Amount,
        after: Amount,
    ) -> Result<VirtualCost, SimError> {
        let each = policy.fee(value)?;
        let mut open_fee = Amount::ZERO;
        for _ in 0..hubs {
            open_fee = open_fee.checked_add(each)?;
        }
        let legs = hubs as u64 + 1;
        let saved = i128::try_from(before.0).unwrap_or(i128::MAX)
            - i128::try_from(after.0).unwrap_or(i128::MAX);
        Ok(VirtualCost {
            hubs,
            open_fee,
            open_updates: legs + 1,
            close_updates: legs + 1,
            happy_gas: 0,
            sad_exit_gas: VIRTUAL_SAD_EXIT_GAS,
            net_saving: saved.saturating_sub(i128::try_from(open_fee.0).unwrap_or(i128::MAX)),
        })
    }
}

/// Statistics of the payments between `a` and `b` among `records`.
pub fn pair_stats(records: &[PaymentRecord], a: u32, b: u32) -> PairStats {
    let mut s = PairStats::default();
    for r in records {
        let dir = if r.source == a && r.destination == b {
            0
        } else if r.source == b && r.destination == a {
            1
        } else {
            continue;
        };
        s.payments += 1;
        s.volume[dir] = Amount(s.volume[dir].0.saturating_add(r.amount.0));
        s.largest[dir] = s.largest[dir].max(r.amount);
        if r.outcome == PaymentOutcome::Succeeded {
            s.succeeded += 1;
            s.hops += u64::from(r.hops);
            s.fees_paid = Amount(s.fees_paid.0.saturating_add(r.fees.0));
        }
    }
    s
}

/// The two peers exchanging the most payments that no channel of theirs joins directly (the
/// ones a virtual channel would help), as `(a, b)` with `a < b`; ties go to the smaller pair.
pub fn busiest_pair(scenario: &Scenario, records: &[PaymentRecord]) -> Option<(u32, u32)> {
    let mut counts: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for r in records {
        let key = (r.source.min(r.destination), r.source.max(r.destination));
        *counts.entry(key).or_insert(0) += 1;
    }
    let direct = |a: u32, b: u32| {
        scenario
            .network
            .channels
            .iter()
            .any(|c| c.nodes.contains(&a) && c.nodes.contains(&b))
    };
    let mut best: Option<((u32, u32), u64)> = None;
    for (&(a, b), &n) in &counts {
        if best.is_some_and(|(_, m)| m >= n) || direct(a, b) {
            continue;
        }
        best = Some(((a, b), n));
    }
    best.map(|(p, _)| p)
}

/// Runs the scenario, then again with a virtual channel between `pair` (default: the
/// [`busiest_pair`]), funded with `fund` (default: each side the volume it sent the other in
/// the first run, at least its largest payment, at most what the path can lock for it) through
/// `via` (default: the router's cheapest path), and compares the pair's payments and the
/// network's figures.
pub fn virtual_channel_savings(
    scenario: &Scenario,
    pair: Option<(u32, u32)>,
    fund: Option<[Amount; 2]>,
    via: Option<Vec<u32>>,
    policy: &htlc::vchan::VirtualPolicy,
    protocol: Protocol,
    options: RunOptions,
) -> Result<VirtualAnswer, SimError> {
    let mut collect = Collect::default();
    let before_run = run(scenario, protocol, options, &mut collect)?;
    let (a, b) = match pair {
        Some(p) => p,
        None => busiest_pair(scenario, &collect.records).ok_or_else(|| {
            invalid(
                "virtual channel",
                "no two peers without a direct channel exchanged payments",
            )
        })?,
    };
    if a == b {
        return Err(invalid(
            "virtual channel",
            "the two peers are the same node",
        ));
    }
    let before = pair_stats(&collect.records, a, b);
    let fund = match fund {
        Some(f) => f,
        None => {
            let max = crate::sim::world::fundable(scenario, [a, b], via.clone())?;
            [
                before.volume[0].max(before.largest[0]).min(max[0]),
                before.volume[1].max(before.largest[1]).min(max[1]),
            ]
        }
    };
    if fund[0].checked_add(fund[1])?.is_zero() {
        return Err(invalid(
            "virtual channel",
            "the two peers exchanged nothing: give the funding explicitly",
        ));
    }
    let (_, path) = crate::sim::world::funding_path(scenario, [a, b], via.clone())?;
    let mut with = scenario.clone();
    with.virtual_channels.push(VirtualChannel {
        between: [a, b],
        via,
        fund,
    });
    let mut collect_after = Collect::default();
    let after_run = run(&with, protocol, options, &mut collect_after)?;
    let after = pair_stats(&collect_after.records, a, b);
    let cost = VirtualCost::of(
        path.len().saturating_sub(1),
        fund[0].checked_add(fund[1])?,
        policy,
        before.fees_paid,
        after.fees_paid,
    )?;
    Ok(VirtualAnswer {
        peers: [scenario.network.label(a), scenario.network.label(b)],
        fund,
        before,
        after,
        network_before: RunFigures::of(&before_run),
        network_after: RunFigures::of(&after_run),
        cost,
    })
}
