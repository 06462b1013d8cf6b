//! What a run reports: one record per payment, the summary, the balance samples, the
//! depletion table — and their renderings (text, JSON, CSV), all deterministic: sorted maps,
//! fixed formats, no wall-clock time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;

use htlc::{Amount, FailureReason, Hashlock};
use router::NoRouteReason;
use serde::Serialize;

use crate::sim::config::Unit;

/// Why a payment failed in the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FinalFailure {
    /// Its last attempt's HTLC failed with this reason and no further route was found or allowed.
    Htlc(FailureReason),
    /// No route was ever found.
    NoRoute(NoRouteReason),
    /// The route search gave up (too many labels).
    SearchTooLarge,
}

/// The snake-case name of an HTLC failure reason (as in LDK's and BOLT 4's vocabulary).
pub fn reason_name(r: FailureReason) -> &'static str {
    match r {
        FailureReason::FeeInsufficient => "fee_insufficient",
        FailureReason::ExpiryTooSoon => "expiry_too_soon",
        FailureReason::ExpiryTooFar => "expiry_too_far",
        FailureReason::IncorrectExpiryDelta => "incorrect_expiry_delta",
        FailureReason::AmountBelowMinimum => "amount_below_minimum",
        FailureReason::TemporaryChannelFailure => "temporary_channel_failure",
        FailureReason::UnknownNextPeer => "unknown_next_peer",
        FailureReason::IncorrectPaymentDetails => "incorrect_payment_details",
        FailureReason::FinalExpiryTooSoon => "final_expiry_too_soon",
        FailureReason::InvalidOnion => "invalid_onion",
        FailureReason::MppTimeout => "mpp_timeout",
    }
}

impl FinalFailure {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            FinalFailure::Htlc(r) => reason_name(r),
            FinalFailure::NoRoute(NoRouteReason::PayerHasNoUsableChannel) => {
                "no_route_payer_has_no_usable_channel"
            }
            FinalFailure::NoRoute(NoRouteReason::PayeeHasNoUsableChannel) => {
                "no_route_payee_has_no_usable_channel"
            }
            FinalFailure::NoRoute(NoRouteReason::NoPathWithinLimits) => "no_route_within_limits",
            FinalFailure::SearchTooLarge => "route_search_too_large",
        }
    }
}

/// How a payment ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PaymentOutcome {
    /// The payee was paid and the preimage reached the payer.
    Succeeded,
    /// It failed.
    Failed(FinalFailure),
}

/// One payment, as the per-payment CSV shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PaymentRecord {
    /// Dispatch order, from 0.
    pub id: u64,
    /// Paying node index.
    pub source: u32,
    /// Paid node index.
    pub destination: u32,
    /// Amount the destination receives.
    pub amount: Amount,
    /// The payment's hashlock (`sha256` of its preimage).
    pub hashlock: Hashlock,
    /// Virtual dispatch time, ms.
    pub dispatched_ms: u64,
    /// Virtual time it ended, ms.
    pub completed_ms: u64,
    /// HTLCs the payer offered (one per attempt that left it).
    pub htlcs: u32,
    /// Routing attempts.
    pub attempts: u32,
    /// Hops of the route that succeeded (0 if it failed).
    pub hops: u32,
    /// Fees the payer paid (0 if it failed).
    pub fees: Amount,
    /// How it ended.
    pub outcome: PaymentOutcome,
}

/// Payments by amount decade.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BucketRow {
    /// The decade's range in the display unit, `[low, high)`.
    pub range: String,
    /// `floor(log10(amount))` in base units.
    pub decade: u32,
    /// Payments.
    pub payments: u64,
    /// Of which succeeded.
    pub succeeded: u64,
    /// `succeeded / payments`.
    pub success_rate: f64,
}

/// One hub's results.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HubRow {
    /// How the hub is shown (alias or address).
    pub node: String,
    /// Its total on its sides of its channels at the start.
    pub collateral: Amount,
    /// HTLCs it forwarded in payments that succeeded.
    pub forwarded: u64,
    /// Their volume (what it sent on).
    pub forwarded_volume: Amount,
    /// Fees it earned.
    pub fees_earned: Amount,
    /// Fees it paid as a payer.
    pub fees_paid: Amount,
    /// Payments that tried a route through it.
    pub payments_via: u64,
    /// Of which succeeded (by any route).
    pub succeeded_via: u64,
    /// `succeeded_via / payments_via` (1 when none tried).
    pub success_rate_via: f64,
    /// Its funds locked in HTLCs it offered, times the time locked: amount · seconds.
    pub locked_amount_secs: u128,
}

/// A direction of a channel that depleted or refused HTLCs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DepletionRow {
    /// The channel id.
    pub channel: String,
    /// The sending node (alias or address).
    pub from: String,
    /// The receiving node.
    pub to: String,
    /// The channel's capacity.
    pub capacity: Amount,
    /// Virtual seconds when the sender's free balance first fell below the threshold.
    pub depleted_at_secs: Option<f64>,
    /// HTLCs the direction refused for lack of liquidity (or lock slots).
    pub failures: u64,
}

/// The whole summary (rendered by [`Summary::to_text`] and as JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Nodes in the network.
    pub nodes: usize,
    /// Channels, virtual ones included.
    pub channels: usize,
    /// Of which virtual.
    pub virtual_channels: usize,
    /// The run's seed.
    pub seed: u64,
    /// Directions whose expiry delta was raised to the protocol minimum.
    pub raised_expiry_deltas: usize,
    /// Virtual seconds from the start to the end of the last payment.
    pub virtual_secs: f64,
    /// Payments dispatched.
    pub payments: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// `succeeded / payments`.
    pub success_rate: f64,
    /// By amount decade, ascending.
    pub by_amount: Vec<BucketRow>,
    /// Why payments failed in the end.
    pub failure_reasons: BTreeMap<String, u64>,
    /// Every HTLC refusal of every attempt, by reason.
    pub htlc_failures: BTreeMap<String, u64>,
    /// Routing attempts per payment.
    pub avg_attempts: f64,
    /// HTLCs offered by the payer per payment.
    pub avg_htlcs: f64,
    /// Hops per successful payment.
    pub avg_hops: f64,
    /// Amount delivered by successful payments.
    pub volume: Amount,
    /// Fees paid by all payers.
    pub fees_paid: Amount,
    /// Per hub, in scenario order.
    pub hubs: Vec<HubRow>,
    /// All funds locked in HTLCs times the time locked: amount · seconds.
    pub locked_amount_secs: u128,
    /// Channel updates committed (each a co-signed state in the protocol).
    pub channel_updates: u64,
    /// Display unit.
    pub unit: Unit,
}

/// Balance samples over time (for the balance CSV and the plots).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Samples {
    /// Sample times, virtual ms.
    pub times_ms: Vec<u64>,
    /// Payments that succeeded since the previous sample.
    pub window_succeeded: Vec<u64>,
    /// Payments that failed since the previous sample.
    pub window_failed: Vec<u64>,
    /// Per hub (scenario order), its fees earned so far at each sample.
    pub hub_fees: Vec<Vec<u128>>,
    /// Fees paid by all payers so far, at each sample.
    pub total_fees: Vec<u128>,
    /// Hub labels, scenario order.
    pub hub_names: Vec<String>,
    /// The tracked channels.
    pub channels: Vec<TrackedChannel>,
}

/// A channel whose balances are sampled.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrackedChannel {
    /// Channel id.
    pub id: String,
    /// Node of side A (alias or address).
    pub node_a: String,
    /// Node of side B.
    pub node_b: String,
    /// Hub owning it, if sampled for a hub: its index in [`Samples::hub_names`] and side.
    pub hub: Option<(usize, usize)>,
    /// Capacity (free of guarantees).
    pub capacity: u128,
    /// Per sample: balance of A, balance of B, value locked in HTLCs.
    pub points: Vec<[u128; 3]>,
}

/// Everything a run produced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunOutput {
    /// The summary.
    pub summary: Summary,
    /// Samples over time.
    pub samples: Samples,
    /// Directions that depleted or refused HTLCs, earliest depletion first.
    pub depletion: Vec<DepletionRow>,
}

/// `10^k` in the display unit for a base-unit decade `k`, e.g. `0.001` for `k = 15` in ETH.
fn decade_label(k: u32, decimals: u32) -> String {
    let e = i64::from(k) - i64::from(decimals);
    match e {
        0..=6 => format!("1{}", "0".repeat(e as usize)),
        -6..=-1 => format!("0.{}1", "0".repeat((-e - 1) as usize)),
        _ => format!("1e{e}"),
    }
}

/// `floor(log10(a))` for `a >= 1`.
pub fn decade(a: Amount) -> u32 {
    a.0.checked_ilog10().unwrap_or(0)
}

/// An amount in the display unit with up to six decimals (rounded down), e.g. `0.001234 ETH`.
pub fn display_amount(a: u128, unit: &Unit) -> String {
    let scale = 10u128.checked_pow(unit.decimals).unwrap_or(u128::MAX);
    let whole = a / scale;
    let rest = a % scale;
    let shown = unit.decimals.min(6);
    let frac = if shown == 0 {
        String::new()
    } else {
        let div = 10u128.pow(unit.decimals - shown);
        let digits = format!("{:0width$}", rest / div, width = shown as usize);
        let trimmed = digits.trim_end_matches('0');
        if trimmed.is_empty() {
            String::new()
        } else {
            format!(".{trimmed}")
        }
    };
    if whole == 0 && frac.is_empty() && a > 0 {
        format!(
            "<0.{}1 {}",
            "0".repeat(shown.saturating_sub(1) as usize),
            unit.name
        )
    } else {
        format!("{whole}{frac} {}", unit.name)
    }
}

fn pct(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

/// `n / d`, or `default` when `d` is zero.
pub fn ratio(n: u64, d: u64, default: f64) -> f64 {
    if d == 0 { default } else { n as f64 / d as f64 }
}

impl BucketRow {
    /// A row for decade `k`.
    pub fn new(k: u32, payments: u64, succeeded: u64, unit: &Unit) -> BucketRow {
        BucketRow {
            range: format!(
                "{}–{}",
                decade_label(k, unit.decimals),
                decade_label(k + 1, unit.decimals)
            ),
            decade: k,
            payments,
            succeeded,
            success_rate: ratio(succeeded, payments, 1.0),
        }
    }
}

impl Summary {
    /// The summary as a plain-text report.
    pub fn to_text(&self) -> String {
        let u = &self.unit;
        let mut s = String::new();
        let amount = |a: u128| format!("{a} ({})", display_amount(a, u));
        // Writing to a String cannot fail.
        let _ = writeln!(
            s,
            "network      {} nodes, {} channels ({} virtual); seed {}",
            self.nodes, self.channels, self.virtual_channels, self.seed
        );
        let _ = writeln!(
            s,
            "payments     {} dispatched over {:.1} virtual s: {} succeeded, {} failed, success rate {}",
            self.payments,
            self.virtual_secs,
            self.succeeded,
            self.failed,
            pct(self.success_rate)
        );
        let _ = writeln!(
            s,
            "per payment  {:.3} attempts, {:.3} HTLCs; {:.3} hops per successful payment",
            self.avg_attempts, self.avg_htlcs, self.avg_hops
        );
        let _ = writeln!(s, "volume       {}", amount(self.volume.0));
        let _ = writeln!(s, "fees paid    {}", amount(self.fees_paid.0));
        let _ = writeln!(
            s,
            "locked×time  {} ·s in HTLCs",
            amount(self.locked_amount_secs)
        );
        let _ = writeln!(s, "updates      {} channel updates", self.channel_updates);
        if self.raised_expiry_deltas > 0 {
            let _ = writeln!(
                s,
                "note         {} directions had an expiry delta below the protocol minimum (1668 s) and were raised to it",
                self.raised_expiry_deltas
            );
        }
        let _ = writeln!(s, "\nsuccess by amount ({}):", u.name);
        let _ = writeln!(
            s,
            "  {:<24} {:>10} {:>10} {:>9}",
            "range", "payments", "succeeded", "rate"
        );
        for b in &self.by_amount {
            let _ = writeln!(
                s,
                "  {:<24} {:>10} {:>10} {:>9}",
                b.range,
                b.payments,
                b.succeeded,
                pct(b.success_rate)
            );
        }
        let _ = writeln!(s, "\nfailure reasons (final):");
        if self.failure_reasons.is_empty() {
            let _ = writeln!(s, "  none");
        }
        for (k, v) in &self.failure_reasons {
            let _ = writeln!(s, "  {k:<40} {v:>10}");
        }
        let _ = writeln!(s, "\nHTLC failures (all attempts):");
        if self.htlc_failures.is_empty() {
            let _ = writeln!(s, "  none");
        }
        for (k, v) in &self.htlc_failures {
            let _ = writeln!(s, "  {k:<40} {v:>10}");
        }
        for h in &self.hubs {
            let _ = writeln!(s, "\nhub {}", h.node);
            let _ = writeln!(s, "  collateral      {}", amount(h.collateral.0));
            let _ = writeln!(
                s,
                "  forwarded       {} HTLCs, {}",
                h.forwarded,
                amount(h.forwarded_volume.0)
            );
            let _ = writeln!(s, "  fees earned     {}", amount(h.fees_earned.0));
            let _ = writeln!(s, "  fees paid       {}", amount(h.fees_paid.0));
            let _ = writeln!(
                s,
                "  via the hub     {} payments, {} succeeded ({})",
                h.payments_via,
                h.succeeded_via,
                pct(h.success_rate_via)
            );
            let _ = writeln!(s, "  locked×time     {} ·s", amount(h.locked_amount_secs));
        }
        s
    }

    /// The summary as pretty JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}

/// The header of the per-payment CSV (SimLN's columns first).
pub const PAYMENTS_CSV_HEADER: &str = "source,destination,amount,hash,dispatch_time,htlc_count,outcome,failure_reason,completion_time,attempts,hops,fees,payment_id";

fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// One row of the per-payment CSV; `label` names node indices.
pub fn payment_csv_row(r: &PaymentRecord, label: &dyn Fn(u32) -> String) -> String {
    let (outcome, reason) = match r.outcome {
        PaymentOutcome::Succeeded => ("success", ""),
        PaymentOutcome::Failed(f) => ("failure", f.name()),
    };
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{}",
        csv_field(&label(r.source)),
        csv_field(&label(r.destination)),
        r.amount.0,
        r.hashlock.0,
        secs(r.dispatched_ms),
        r.htlcs,
        outcome,
        reason,
        secs(r.completed_ms),
        r.attempts,
        r.hops,
        r.fees.0,
        r.id
    )
}

/// A CSV field, quoted if it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Writes the per-payment CSV of `records`.
pub fn write_payments_csv<W: Write>(
    records: &[PaymentRecord],
    label: &dyn Fn(u32) -> String,
    mut w: W,
) -> std::io::Result<()> {
    writeln!(w, "{PAYMENTS_CSV_HEADER}")?;
    for r in records {
        writeln!(w, "{}", payment_csv_row(r, label))?;
    }
    w.flush()
}

/// Writes the per-channel balance time series: one row per tracked channel per sample.
pub fn write_balances_csv<W: Write>(samples: &Samples, mut w: W) -> std::io::Result<()> {
    writeln!(
        w,
        "time,channel,node_a,node_b,capacity,balance_a,balance_b,locked"
    )?;
    for (i, t) in samples.times_ms.iter().enumerate() {
        for c in &samples.channels {
            if let Some(p) = c.points.get(i) {
                writeln!(
                    w,
                    "{},{},{},{},{},{},{},{}",
                    secs(*t),
                    c.id,
                    csv_field(&c.node_a),
                    csv_field(&c.node_b),
                    c.capacity,
                    p[0],
                    p[1],
                    p[2]
                )?;
            }
        }
    }
    w.flush()
}

/// The depletion table as text: the `top` earliest depleted directions, then the directions
/// that refused most HTLCs without depleting.
pub fn depletion_text(rows: &[DepletionRow], top: usize, unit: &Unit) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<4} {:>12} {:>9}  {:<44} capacity",
        "rank", "depleted at", "refusals", "direction"
    );
    for (i, r) in rows.iter().take(top).enumerate() {
        let at = r
            .depleted_at_secs
            .map_or_else(|| "never".to_owned(), |t| format!("{t:.1} s"));
        let _ = writeln!(
            s,
            "{:<4} {:>12} {:>9}  {:<44} {}",
            i + 1,
            at,
            r.failures,
            format!("{} → {}", short(&r.from), short(&r.to)),
            display_amount(r.capacity.0, unit)
        );
    }
    if rows.is_empty() {
        let _ = writeln!(s, "no channel depleted and no HTLC was refused");
    }
    s
}

/// A long label shortened to `0x1234…abcd`.
pub fn short(label: &str) -> String {
    let n = label.chars().count();
    if n > 20 && label.starts_with("0x") {
        let head: String = label.chars().take(6).collect();
        let tail: String = label.chars().skip(n - 4).collect();
        format!("{head}…{tail}")
    } else {
        label.to_owned()
    }
}
