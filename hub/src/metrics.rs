//! Prometheus metrics of a node: payments attempted / succeeded / failed by reason, payment
//! latency, forwards and fees earned, liquidity and pending HTLCs per channel, store writes.
//!
//! Counters are updated where the node emits its events (`node::Inner::emit`), so
//! they never miss one (a broadcast subscriber could lag and drop some). Per-channel gauges are
//! read from the channels when `/metrics` is scraped.

use crate::events::NodeEvent;
use alloy::primitives::B256;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::HashMap;
use std::time::Instant;

/// Latency buckets of a payment, seconds (1 ms … 60 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];

/// Latency buckets of one synced store write, seconds (50 µs … 1 s).
pub const STORE_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
];

/// The node's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    attempted: IntCounter,
    succeeded: IntCounter,
    failed: IntCounterVec,
    latency: Histogram,
    received: IntCounter,
    forwarded: IntCounter,
    /// Fees earned, wei (a counter of integer wei; 2^63 wei is 9.2 ETH per scrape interval).
    fees: IntCounter,
    pub(crate) balance: GaugeVec,
    pub(crate) pending: IntGaugeVec,
    intents: IntGaugeVec,
    disputed: prometheus::IntGauge,
    watched: prometheus::IntGauge,
    in_flight_fee: prometheus::Gauge,
    next_claim: prometheus::IntGauge,
    watcher_restarts: IntCounter,
    reorgs: IntCounter,
    intents_dropped: IntCounter,
    challenges: IntCounter,
    store_batches: IntCounter,
    store_syncs: IntCounter,
    store_unsynced: IntCounter,
    updates: IntCounter,
    virtual_channels: IntGaugeVec,
    virtual_served: prometheus::Gauge,
    virtual_held: prometheus::IntGauge,
    virtual_opened: IntCounter,
    virtual_expired: IntCounter,
    virtual_stalled: IntCounter,
    started: std::sync::Mutex<HashMap<B256, Instant>>,
}

/// What the virtual-channel gauges show, read from the node's records at a scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VirtualGauges {
    /// Virtual channels by (role, phase) label pair.
    pub by_role_phase: Vec<(String, String, i64)>,
    /// Hub: the value of the virtual channels we serve that are not settled or failed (what
    /// our collateral stands for), ether.
    pub served_ether: f64,
    /// Hub: virtual channels with a party's release held (waiting for the other side's).
    pub held: i64,
}

/// A metric could not be created or registered (a programming error, reported, not hidden).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

fn counter(r: &Registry, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// Create the metrics; `store_sync` is the store's own write-latency histogram.
    pub fn new(store_sync: &Histogram) -> Result<Metrics, MetricsError> {
        let registry = Registry::new_custom(Some("vhub".into()), None)?;
        let r = &registry;
        let failed = IntCounterVec::new(
            Opts::new(
                "payments_failed_total",
                "Payments of ours that failed, by reason",
            ),
            &["reason"],
        )?;
        r.register(Box::new(failed.clone()))?;
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "payment_latency_seconds",
                "From sending a payment's HTLC to its outcome",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        r.register(Box::new(latency.clone()))?;
        let balance = GaugeVec::new(
            Opts::new(
                "channel_balance_ether",
                "Balance per channel and side (ours / theirs), ether (exact wei in the API)",
            ),
            &["channel", "side"],
        )?;
        r.register(Box::new(balance.clone()))?;
        let pending = IntGaugeVec::new(
            Opts::new("channel_pending_htlcs", "Pending HTLC locks per channel"),
            &["channel"],
        )?;
        r.register(Box::new(pending.clone()))?;
        r.register(Box::new(store_sync.clone()))?;
        let intents = IntGaugeVec::new(
            Opts::new(
                "chain_intents_pending",
                "Transactions decided and not yet seen in effect, by kind",
            ),
            &["kind"],
        )?;
        r.register(Box::new(intents.clone()))?;
        let int_gauge = |name: &str, help: &str| -> Result<prometheus::IntGauge, MetricsError> {
            let g = prometheus::IntGauge::new(name, help)?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let disputed = int_gauge(
            "channels_disputed",
            "Channels disputed on chain, not yet paid out",
        )?;
        let watched = int_gauge(
            "watched_channels",
            "Channels watched for clients (a tower's)",
        )?;
        let next_claim = int_gauge(
            "next_claim_deadline_seconds",
            "Unix time of the next lock to claim on chain if its peer does not settle it (0: none)",
        )?;
        let in_flight_fee = prometheus::Gauge::new(
            "tx_in_flight_max_fee_gwei",
            "Highest fee per gas offered for the transaction waiting to be mined (0: none)",
        )?;
        r.register(Box::new(in_flight_fee.clone()))?;
        let virtual_channels = IntGaugeVec::new(
            Opts::new(
                "virtual_channels",
                "Virtual channels we take part in, by our role and their phase",
            ),
            &["role", "phase"],
        )?;
        r.register(Box::new(virtual_channels.clone()))?;
        let virtual_served = prometheus::Gauge::new(
            "virtual_value_served_ether",
            "Hub: value of the virtual channels we serve not yet settled, ether (what our \
             collateral stands for)",
        )?;
        r.register(Box::new(virtual_served.clone()))?;
        let virtual_held = int_gauge(
            "virtual_releases_held",
            "Hub: virtual channels with a party's release held, waiting for the other side's",
        )?;
        Ok(Metrics {
            virtual_channels,
            virtual_served,
            virtual_held,
            virtual_opened: counter(
                r,
                "virtual_opened_total",
                "Virtual channels seen open (as a party or as a hub)",
            )?,
            virtual_expired: counter(
                r,
                "virtual_expired_total",
                "Hub: ledgers taken to chain because a virtual channel outlived its end",
            )?,
            virtual_stalled: counter(
                r,
                "virtual_release_stalled_total",
                "Hub of a chain: ledgers taken to chain because the next hub neither completed \
                 nor refused our release",
            )?,
            intents,
            disputed,
            watched,
            in_flight_fee,
            next_claim,
            watcher_restarts: counter(
                r,
                "chain_watcher_restarts_total",
                "Times the chain watcher failed and was restarted",
            )?,
            reorgs: counter(
                r,
                "chain_reorgs_total",
                "Reorganisations deeper than the confirmations, detected",
            )?,
            intents_dropped: counter(
                r,
                "chain_intents_dropped_total",
                "Intents that could never take effect, reported and dropped",
            )?,
            challenges: counter(
                r,
                "challenges_total",
                "Stale closes answered with a newer state",
            )?,
            attempted: counter(r, "payments_attempted_total", "Payments of ours sent")?,
            succeeded: counter(r, "payments_succeeded_total", "Payments of ours paid")?,
            received: counter(r, "payments_received_total", "Invoices of ours paid")?,
            forwarded: counter(r, "forwards_settled_total", "Forwarded payments settled")?,
            fees: counter(r, "fees_earned_wei_total", "Forwarding fees earned, wei")?,
            store_batches: counter(r, "store_batches_total", "Batches committed to the store")?,
            store_syncs: counter(r, "store_syncs_total", "Synced writes (group commits)")?,
            store_unsynced: counter(
                r,
                "store_unsynced_writes_total",
                "Writes left unsynced: groups of invoices not yet paid only (ADR 0030)",
            )?,
            updates: counter(
                r,
                "updates_committed_total",
                "Co-signed channel states (one signature pair may carry many HTLC operations)",
            )?,
            failed,
            latency,
            balance,
            pending,
            started: std::sync::Mutex::new(HashMap::new()),
            registry,
        })
    }

    /// A payment's HTLC was sent.
    pub fn payment_sent(&self, id: B256) {
        self.attempted.inc();
        let mut s = self.started.lock().unwrap_or_else(|p| p.into_inner());
        s.insert(id, Instant::now());
    }

    fn payment_ended(&self, id: &B256) {
        let mut s = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = s.remove(id) {
            self.latency.observe(t.elapsed().as_secs_f64());
        }
    }

    /// Account for an event the node emits.
    pub fn on_event(&self, ev: &NodeEvent) {
        match ev {
            NodeEvent::PaymentSucceeded { id, .. } => {
                self.succeeded.inc();
                self.payment_ended(id);
            }
            NodeEvent::PaymentFailed { id, reason } => {
                let label = reason.map_or_else(|| "Expired".to_string(), |r| format!("{r:?}"));
                self.failed.with_label_values(&[label.as_str()]).inc();
                self.payment_ended(id);
            }
            NodeEvent::PaymentReceived { .. } => self.received.inc(),
            NodeEvent::Committed { .. } => self.updates.inc(),
            NodeEvent::Forwarded { fee, .. } => {
                self.forwarded.inc();
                self.fees.inc_by(u64::try_from(fee.0).unwrap_or(u64::MAX));
            }
            NodeEvent::WatcherRestarting { .. } => self.watcher_restarts.inc(),
            NodeEvent::ChainReorganised { .. } => self.reorgs.inc(),
            NodeEvent::IntentDropped { .. } => self.intents_dropped.inc(),
            NodeEvent::Challenged { .. } => self.challenges.inc(),
            NodeEvent::VirtualOpened { .. } => self.virtual_opened.inc(),
            NodeEvent::VirtualExpired { .. } => self.virtual_expired.inc(),
            NodeEvent::VirtualReleaseStalled { .. } => self.virtual_stalled.inc(),
            _ => {}
        }
    }

    /// Set the on-chain gauges: the kinds of the intents pending, the channels disputed and
    /// watched, the next claim deadline and the fee offered for the transaction in flight.
    pub fn observe_chain(
        &self,
        kinds: &[String],
        disputed: usize,
        watched: usize,
        next_claim: Option<u64>,
        in_flight_max_fee: Option<u128>,
    ) {
        self.intents.reset();
        for k in kinds {
            self.intents.with_label_values(&[k.as_str()]).inc();
        }
        self.disputed
            .set(i64::try_from(disputed).unwrap_or(i64::MAX));
        self.watched.set(i64::try_from(watched).unwrap_or(i64::MAX));
        self.next_claim
            .set(next_claim.map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)));
        // u128 wei to f64 gwei rounds to the nearest representable value; a gauge needs no more.
        self.in_flight_fee
            .set(in_flight_max_fee.map_or(0.0, |f| f as f64 / 1e9));
    }

    /// Set the virtual-channel gauges.
    pub fn observe_virtual(&self, g: &VirtualGauges) {
        self.virtual_channels.reset();
        for (role, phase, n) in &g.by_role_phase {
            self.virtual_channels
                .with_label_values(&[role.as_str(), phase.as_str()])
                .set(*n);
        }
        self.virtual_served.set(g.served_ether);
        self.virtual_held.set(g.held);
    }

    /// Co-signed states committed so far.
    pub fn updates(&self) -> u64 {
        self.updates.get()
    }

    /// Bring the store counters up to the store's own figures.
    pub fn sync_store(&self, batches: u64, syncs: u64, unsynced: u64) {
        self.store_batches
            .inc_by(batches.saturating_sub(self.store_batches.get()));
        self.store_syncs
            .inc_by(syncs.saturating_sub(self.store_syncs.get()));
        self.store_unsynced
            .inc_by(unsynced.saturating_sub(self.store_unsynced.get()));
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec only fails on a metric family without a name or type, which
        // the registry refuses at registration; an empty reply would show up at once.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A wei amount in ether, as a gauge shows it (nearest `f64`; never saturated: 2^128 wei is
/// about 3.4e20 ether). Exact amounts are in the API, as decimal strings of wei.
pub fn ether(a: htlc::Amount) -> f64 {
    // u128 to f64 rounds to the nearest representable value; a gauge needs no more.
    a.0 as f64 / 1e18
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balances_above_2_pow_63_wei_show_in_ether() {
        let store_sync = Histogram::with_opts(HistogramOpts::new("s", "s")).unwrap();
        let m = Metrics::new(&store_sync).unwrap();
        let twelve_and_a_half = htlc::Amount(12_500_000_000_000_000_000);
        assert!(twelve_and_a_half.0 > i64::MAX as u128);
        m.balance
            .with_label_values(&["c", "ours"])
            .set(ether(twelve_and_a_half));
        m.balance
            .with_label_values(&["c", "theirs"])
            .set(ether(htlc::Amount::MAX));
        let text = m.render();
        assert!(
            text.contains("vhub_channel_balance_ether{channel=\"c\",side=\"ours\"} 12.5"),
            "{text}"
        );
        assert_eq!(ether(htlc::Amount(1)), 1e-18);
        assert!(ether(htlc::Amount::MAX) > 3.4e20);
    }
}
