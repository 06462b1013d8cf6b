//! The scenario file: network, activity, hubs and simulation parameters, as JSON.
//!
//! A SimLN simulation file (`sim_network` plus `activity`) is a valid scenario as it is; the
//! other keys are ours. Every key but the network is optional.
//!
//! ```json
//! {
//!   "seed": 42,
//!   "network": {"file": "network.json"},
//!   "activity": [{"source": "alice", "destination": "0x…", "interval_secs": [1, 5],
//!                 "amount_msat": 2000000, "start_secs": 0, "count": 100}],
//!   "random_activity": {"expected_payment": 1000000000000000, "capacity_multiplier": 2.0},
//!   "hubs": [{"node": "#0", "base_fee": 1000, "fee_ppm": 100, "collateral_multiplier": 2.0}],
//!   "virtual_channels": [{"between": ["#17", "#42"], "fund_a": 5000, "fund_b": 5000}],
//!   "simulation": {"duration_secs": 86400, "hop_latency_ms": 100, "max_attempts": 10}
//! }
//! ```
//!
//! - `network` (exactly one of): `{"file": PATH}` (our router JSON or a SimLN file, read by the
//!   caller, relative to the scenario), `{"inline": {...}}` (the same, inline), `{"generate":
//!   {"nodes": N, "seed": S, ...}}` (router's scale-free generator) — or a top-level
//!   `sim_network` array as in SimLN.
//! - Node references: a `0x` address, a SimLN 33-byte public key (hex), a SimLN alias, a name
//!   given in the scenario's `aliases` (`{"hub1": "0x…"}`), or `#N` for node `N` of a
//!   generated network.
//! - Amounts are integers in the network's base unit (wei for our networks, msat for SimLN
//!   ones); `amount_msat` is multiplied by `simulation.amount_per_msat`. Amounts above 2^53 can
//!   be written as strings (`"20000000000000000000"`). A flow's amount and interval may be a
//!   range `[min, max]`, drawn uniformly.
//! - `activity` flows: `source`, `destination`, `interval_secs`, `amount` or `amount_msat`,
//!   optional `start_secs` (default 0) and `count` (default: until the run ends).
//! - `random_activity`: Poisson arrivals where every node sends `capacity_multiplier` times its
//!   capacity per 30-day month, in payments log-normal around `expected_payment` (`amount_sigma`,
//!   default 1.0, is the log-normal's sigma; the mean is `expected_payment`), to destinations
//!   drawn in proportion to their capacity. SimLN's defaults: multiplier 2.0.
//! - `hubs`: `node`, and optionally the fee policy the hub sets on all its channels (`base_fee`,
//!   `fee_ppm`, `expiry_delta`) and its collateral: `collateral_multiplier` scales its side of
//!   every channel it has, or `collateral` sets the total of its sides (spread over its channels
//!   in proportion to what they hold).
//! - `virtual_channels`: opened at the start, funded by guarantees in the ledger channels of a
//!   path between the two peers (`via`: the intermediaries in order; default: the router's
//!   cheapest path), `fund_a` / `fund_b` on each side.
//! - `simulation`: see [`SimParams`] for every field and its default.

use std::fmt;

use htlc::Amount;
use htlc::forward::{DEFAULT_MAX_EXPIRY_HORIZON_SECS, MIN_OUTGOING_EXPIRY_SECS};
use router::ScoringParams;
use router::io::SimLnChannel;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::sim::error::{SimError, invalid};

/// An amount as written in a scenario: an integer (or integral float below 2^53, or a decimal
/// string), possibly negative, checked later so that a bad sign gets its own error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawAmount(pub i128);

struct RawAmountVisitor;

impl<'de> Visitor<'de> for RawAmountVisitor {
    type Value = RawAmount;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer amount (or a string of digits)")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawAmount, E> {
        Ok(RawAmount(i128::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawAmount, E> {
        Ok(RawAmount(i128::from(v)))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawAmount, E> {
        Ok(RawAmount(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawAmount, E> {
        i128::try_from(v)
            .map(RawAmount)
            .map_err(|_| E::custom("amount too large"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawAmount, E> {
        // 2^53: every integer up to it is exact in a float; above, write the amount as a string.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if v.fract() == 0.0 && v.abs() <= EXACT {
            // Integral and within ±2^53: the conversion is exact.
            Ok(RawAmount(v as i128))
        } else {
            Err(E::custom(format!(
                "amount {v} is not an exact integer (write amounts above 2^53 as strings)"
            )))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawAmount, E> {
        v.trim()
            .parse::<i128>()
            .map(RawAmount)
            .map_err(|_| E::custom(format!("amount {v:?} is not an integer")))
    }
}

impl<'de> Deserialize<'de> for RawAmount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawAmountVisitor)
    }
}

impl RawAmount {
    /// The amount if it is positive, else [`SimError::NonPositiveAmount`] naming `field`.
    pub fn positive(self, field: &str) -> Result<Amount, SimError> {
        if self.0 <= 0 {
            return Err(SimError::NonPositiveAmount {
                field: field.to_owned(),
                value: self.0,
            });
        }
        // Positive i128 always fits u128.
        Ok(Amount(self.0.unsigned_abs()))
    }
}

/// One amount, or a range `[min, max]` drawn uniformly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawAmountRange {
    /// Smallest.
    pub lo: RawAmount,
    /// Largest.
    pub hi: RawAmount,
}

struct RangeVisitor;

impl<'de> Visitor<'de> for RangeVisitor {
    type Value = RawAmountRange;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an amount or a range [min, max]")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawAmountRange, E> {
        RawAmountVisitor.visit_i64(v).map(RawAmountRange::one)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawAmountRange, E> {
        RawAmountVisitor.visit_u64(v).map(RawAmountRange::one)
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawAmountRange, E> {
        RawAmountVisitor.visit_i128(v).map(RawAmountRange::one)
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawAmountRange, E> {
        RawAmountVisitor.visit_u128(v).map(RawAmountRange::one)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawAmountRange, E> {
        RawAmountVisitor.visit_f64(v).map(RawAmountRange::one)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawAmountRange, E> {
        RawAmountVisitor.visit_str(v).map(RawAmountRange::one)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawAmountRange, A::Error> {
        let lo: RawAmount = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let hi: RawAmount = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        if seq.next_element::<RawAmount>()?.is_some() {
            return Err(de::Error::invalid_length(3, &self));
        }
        Ok(RawAmountRange { lo, hi })
    }
}

impl<'de> Deserialize<'de> for RawAmountRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RangeVisitor)
    }
}

impl RawAmountRange {
    fn one(a: RawAmount) -> Self {
        RawAmountRange { lo: a, hi: a }
    }
}

/// Seconds, or a range `[min, max]` drawn uniformly.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SecsRange {
    /// A fixed value.
    One(f64),
    /// A uniform range.
    Range([f64; 2]),
}

/// Where the network comes from.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NetworkSource {
    /// A file (our router JSON or a SimLN file) that the caller reads and supplies.
    File(String),
    /// The same, inline.
    Inline(serde_json::Value),
    /// The router's seeded scale-free generator.
    Generate(GenerateFile),
}

/// Parameters of a generated network (defaults: `router::GeneratorConfig::new`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateFile {
    /// Number of nodes.
    pub nodes: usize,
    /// Generator seed (default 1).
    #[serde(default = "one")]
    pub seed: u64,
    /// Number of fully connected hubs (default: one per thousand nodes, at least 4).
    #[serde(default)]
    pub hubs: Option<usize>,
    /// Average channels a joining node opens (default 3.77).
    #[serde(default)]
    pub channels_per_node: Option<f64>,
    /// Smallest capacity (default 0.01 ETH in wei).
    #[serde(default)]
    pub min_capacity: Option<RawAmount>,
    /// Largest capacity (default 100 ETH in wei).
    #[serde(default)]
    pub max_capacity: Option<RawAmount>,
    /// Pareto tail index of capacities (default 1.2).
    #[serde(default)]
    pub capacity_tail: Option<f64>,
    /// Fraction of virtual channels (default 0.05).
    #[serde(default)]
    pub virtual_fraction: Option<f64>,
    /// Fraction of disabled directions (default 0.01).
    #[serde(default)]
    pub disabled_fraction: Option<f64>,
}

fn one() -> u64 {
    1
}

/// One explicit flow of payments, as in SimLN's `activity`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowFile {
    /// Paying node.
    pub source: String,
    /// Paid node.
    pub destination: String,
    /// Seconds between payments.
    pub interval_secs: SecsRange,
    /// Amount in base units.
    #[serde(default)]
    pub amount: Option<RawAmountRange>,
    /// Amount in msat (SimLN), times `amount_per_msat`.
    #[serde(default)]
    pub amount_msat: Option<RawAmountRange>,
    /// Seconds from the start of the run to the first payment (default 0).
    #[serde(default)]
    pub start_secs: Option<f64>,
    /// Number of payments (default: until the run ends).
    #[serde(default)]
    pub count: Option<u64>,
}

/// Random activity (see the module documentation).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomFile {
    /// Mean payment amount, base units.
    pub expected_payment: RawAmount,
    /// Times its capacity each node sends per 30-day month (default 2.0, as SimLN).
    #[serde(default)]
    pub capacity_multiplier: Option<f64>,
    /// Sigma of the log-normal amounts (default 1.0).
    #[serde(default)]
    pub amount_sigma: Option<f64>,
}

/// A hub: a node whose policy and collateral the operator sets.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubFile {
    /// The hub's node.
    pub node: String,
    /// Flat fee on every channel the hub forwards over.
    #[serde(default)]
    pub base_fee: Option<RawAmount>,
    /// Proportional fee, millionths.
    #[serde(default)]
    pub fee_ppm: Option<u32>,
    /// Expiry delta, seconds.
    #[serde(default)]
    pub expiry_delta: Option<u64>,
    /// Total collateral over the hub's sides of its channels.
    #[serde(default)]
    pub collateral: Option<RawAmount>,
    /// Factor on the hub's side of each of its channels.
    #[serde(default)]
    pub collateral_multiplier: Option<f64>,
}

/// A virtual channel to open at the start of the run.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualFile {
    /// The two peers.
    pub between: [String; 2],
    /// Intermediaries, in order from the first peer (default: the router's cheapest path).
    #[serde(default)]
    pub via: Option<Vec<String>>,
    /// The first peer's balance in the virtual channel.
    pub fund_a: RawAmount,
    /// The second peer's balance in the virtual channel.
    pub fund_b: RawAmount,
}

/// Display unit of amounts in reports and plots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    /// Its name (`ETH`, `sat`).
    pub name: String,
    /// Base units per display unit, as a power of ten (18 for wei → ETH, 3 for msat → sat).
    pub decimals: u32,
}

/// The `simulation` section as written (every field optional).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulationFile {
    /// See [`SimParams::duration_secs`].
    #[serde(default)]
    pub duration_secs: Option<u64>,
    /// See [`SimParams::max_payments`].
    #[serde(default)]
    pub max_payments: Option<u64>,
    /// See [`SimParams::hop_latency_ms`].
    #[serde(default)]
    pub hop_latency_ms: Option<u64>,
    /// See [`SimParams::max_attempts`].
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// See [`SimParams::final_expiry_delta_secs`].
    #[serde(default)]
    pub final_expiry_delta_secs: Option<u64>,
    /// See [`SimParams::max_hops`].
    #[serde(default)]
    pub max_hops: Option<u8>,
    /// See [`SimParams::max_fee_ppm`].
    #[serde(default)]
    pub max_fee_ppm: Option<u32>,
    /// See [`SimParams::initial_balance_a`].
    #[serde(default)]
    pub initial_balance_a: Option<f64>,
    /// See [`SimParams::sample_interval_secs`].
    #[serde(default)]
    pub sample_interval_secs: Option<u64>,
    /// See [`SimParams::decay_interval_secs`].
    #[serde(default)]
    pub decay_interval_secs: Option<u64>,
    /// See [`SimParams::knowledge_epoch_secs`].
    #[serde(default)]
    pub knowledge_epoch_secs: Option<u64>,
    /// See [`SimParams::depletion_threshold`].
    #[serde(default)]
    pub depletion_threshold: Option<f64>,
    /// See [`SimParams::half_life_secs`].
    #[serde(default)]
    pub half_life_secs: Option<u64>,
    /// See [`SimParams::scoring`].
    #[serde(default)]
    pub scoring: Option<ScoringParams>,
    /// See [`SimParams::amount_per_msat`].
    #[serde(default)]
    pub amount_per_msat: Option<u64>,
    /// See [`SimParams::seconds_per_block`].
    #[serde(default)]
    pub seconds_per_block: Option<u64>,
    /// See [`SimParams::max_pending_htlcs`].
    #[serde(default)]
    pub max_pending_htlcs: Option<usize>,
    /// See [`SimParams::unit`].
    #[serde(default)]
    pub unit: Option<Unit>,
    /// See [`SimParams::tracked_channels`].
    #[serde(default)]
    pub tracked_channels: Option<usize>,
}

/// The scenario file as written (see the module documentation).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Seed of every random draw of the run (default 1).
    #[serde(default)]
    pub seed: Option<u64>,
    /// The network.
    #[serde(default)]
    pub network: Option<NetworkSource>,
    /// SimLN's inline channel list (instead of `network`).
    #[serde(default)]
    pub sim_network: Option<Vec<SimLnChannel>>,
    /// Explicit flows.
    #[serde(default)]
    pub activity: Vec<FlowFile>,
    /// Random activity.
    #[serde(default)]
    pub random_activity: Option<RandomFile>,
    /// Hubs.
    #[serde(default)]
    pub hubs: Vec<HubFile>,
    /// Virtual channels opened at the start.
    #[serde(default)]
    pub virtual_channels: Vec<VirtualFile>,
    /// Names for nodes, usable wherever a node is referenced: name → address, key or `#N`.
    #[serde(default)]
    pub aliases: std::collections::BTreeMap<String, String>,
    /// Simulation parameters.
    #[serde(default)]
    pub simulation: SimulationFile,
}

impl ScenarioFile {
    /// Parses a scenario (see the module documentation).
    pub fn from_json_str(text: &str) -> Result<ScenarioFile, SimError> {
        Ok(serde_json::from_str(text)?)
    }

    /// The network file the caller must read and pass to [`crate::sim::Scenario::build`], if
    /// the scenario names one.
    pub fn network_file(&self) -> Option<&str> {
        match &self.network {
            Some(NetworkSource::File(p)) => Some(p),
            _ => None,
        }
    }
}

/// Validated simulation parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimParams {
    /// Virtual seconds during which payments are dispatched (payments in flight then finish).
    /// `None`: until every flow's count is sent or `max_payments` is reached.
    pub duration_secs: Option<u64>,
    /// Most payments dispatched in all (default: no limit).
    pub max_payments: Option<u64>,
    /// Time for one HTLC update to be committed between two neighbours (default 100 ms): an
    /// HTLC is added, fulfilled or failed one hop per latency.
    pub hop_latency_ms: u64,
    /// Most attempts per payment, first included (default 10): a failed attempt is retried on
    /// the next cheapest route that avoids every direction that failed.
    pub max_attempts: u32,
    /// Expiry delta of the payee's HTLC (default 3600 s; at least the protocol's minimum, 1668 s).
    pub final_expiry_delta_secs: u64,
    /// Most hops per route (default 20).
    pub max_hops: u8,
    /// Fee limit in millionths of the amount (default 50,000: 5 %; 1,000,000 or more in the
    /// file: no limit).
    pub max_fee_ppm: Option<u32>,
    /// Fraction of every channel's capacity on side A at the start (default 0.5).
    pub initial_balance_a: f64,
    /// Virtual seconds between balance samples (default: a hundredth of the expected run).
    pub sample_interval_secs: Option<u64>,
    /// Virtual seconds between decays of learned liquidity (default 900).
    pub decay_interval_secs: u64,
    /// Routing knowledge is refreshed every so many virtual seconds (default 60): what payments
    /// learn is applied to the router's scorer at the end of each epoch, so routes within an
    /// epoch depend only on the graph as it was at its start, and are computed in parallel.
    /// 0: learn at once and route one payment at a time.
    pub knowledge_epoch_secs: u64,
    /// A direction counts as depleted when its sender's free balance falls below this fraction
    /// of the capacity (default 0.05).
    pub depletion_threshold: f64,
    /// Half-life of learned liquidity (default: the router's, 6 hours).
    pub half_life_secs: Option<u64>,
    /// The scorer's penalties (default: the router's, sized for wei; for SimLN networks in msat,
    /// one sized for msat).
    pub scoring: ScoringParams,
    /// Base units per SimLN msat (default 1).
    pub amount_per_msat: u64,
    /// Seconds per SimLN block, for `cltv_expiry_delta` (default 600).
    pub seconds_per_block: u64,
    /// Most pending HTLCs per channel where the network does not say (default 483).
    pub max_pending_htlcs: usize,
    /// Display unit (default ETH for our networks, sat for SimLN ones).
    pub unit: Unit,
    /// Channels whose balances are sampled when there are no hubs (default 16; every channel
    /// of a network with at most 64).
    pub tracked_channels: usize,
}

/// Scoring sized for msat amounts (SimLN networks): 500 msat per hop plus 50 ppm, 10,000 msat
/// plus 60 ppm per bit of uncertainty.
pub fn msat_scoring() -> ScoringParams {
    ScoringParams {
        base_penalty: Amount(500),
        base_penalty_ppm: 50,
        liquidity_penalty: Amount(10_000),
        liquidity_penalty_ppm: 60,
        max_uncertainty_bits: 8,
    }
}

fn fraction(field: &str, v: f64, lo_open: bool) -> Result<f64, SimError> {
    let ok = v.is_finite() && v <= 1.0 && if lo_open { v > 0.0 } else { v >= 0.0 };
    if ok {
        Ok(v)
    } else {
        let range = if lo_open { "(0, 1]" } else { "[0, 1]" };
        Err(invalid(field, format!("must be in {range}, got {v}")))
    }
}

impl SimParams {
    /// Validates the `simulation` section; `sim_ln` selects the msat defaults.
    pub fn from_file(f: &SimulationFile, sim_ln: bool) -> Result<SimParams, SimError> {
        let final_expiry = f.final_expiry_delta_secs.unwrap_or(3600);
        if final_expiry < MIN_OUTGOING_EXPIRY_SECS {
            return Err(invalid(
                "simulation.final_expiry_delta_secs",
                format!(
                    "must be at least {MIN_OUTGOING_EXPIRY_SECS} s (htlc::forward::MIN_OUTGOING_EXPIRY_SECS), got {final_expiry}"
                ),
            ));
        }
        if final_expiry > DEFAULT_MAX_EXPIRY_HORIZON_SECS {
            return Err(invalid(
                "simulation.final_expiry_delta_secs",
                format!("must be at most {DEFAULT_MAX_EXPIRY_HORIZON_SECS} s, got {final_expiry}"),
            ));
        }
        let max_attempts = f.max_attempts.unwrap_or(10);
        if max_attempts == 0 {
            return Err(invalid("simulation.max_attempts", "must be at least 1"));
        }
        let max_hops = f.max_hops.unwrap_or(20);
        if max_hops == 0 {
            return Err(invalid("simulation.max_hops", "must be at least 1"));
        }
        if f.duration_secs == Some(0) {
            return Err(invalid("simulation.duration_secs", "must be at least 1"));
        }
        if f.max_payments == Some(0) {
            return Err(invalid("simulation.max_payments", "must be at least 1"));
        }
        if f.sample_interval_secs == Some(0) {
            return Err(invalid(
                "simulation.sample_interval_secs",
                "must be at least 1",
            ));
        }
        let decay = f.decay_interval_secs.unwrap_or(900);
        if decay == 0 {
            return Err(invalid(
                "simulation.decay_interval_secs",
                "must be at least 1",
            ));
        }
        let amount_per_msat = f.amount_per_msat.unwrap_or(1);
        if amount_per_msat == 0 {
            return Err(invalid("simulation.amount_per_msat", "must be at least 1"));
        }
        let max_pending_htlcs = f.max_pending_htlcs.unwrap_or(483);
        if max_pending_htlcs == 0 {
            return Err(invalid(
                "simulation.max_pending_htlcs",
                "must be at least 1",
            ));
        }
        if f.half_life_secs == Some(0) {
            return Err(invalid("simulation.half_life_secs", "must be at least 1"));
        }
        let unit = match &f.unit {
            Some(u) if u.decimals > 38 => {
                return Err(invalid("simulation.unit.decimals", "must be at most 38"));
            }
            Some(u) => u.clone(),
            None if sim_ln && amount_per_msat == 1 => Unit {
                name: "sat".into(),
                decimals: 3,
            },
            None if sim_ln => Unit {
                name: "units".into(),
                decimals: 0,
            },
            None => Unit {
                name: "ETH".into(),
                decimals: 18,
            },
        };
        Ok(SimParams {
            duration_secs: f.duration_secs,
            max_payments: f.max_payments,
            hop_latency_ms: f.hop_latency_ms.unwrap_or(100),
            max_attempts,
            final_expiry_delta_secs: final_expiry,
            max_hops,
            max_fee_ppm: Some(f.max_fee_ppm.unwrap_or(50_000)).filter(|p| *p < 1_000_000),
            initial_balance_a: fraction(
                "simulation.initial_balance_a",
                f.initial_balance_a.unwrap_or(0.5),
                false,
            )?,
            sample_interval_secs: f.sample_interval_secs,
            decay_interval_secs: decay,
            knowledge_epoch_secs: f.knowledge_epoch_secs.unwrap_or(60),
            depletion_threshold: fraction(
                "simulation.depletion_threshold",
                f.depletion_threshold.unwrap_or(0.05),
                false,
            )?,
            half_life_secs: f.half_life_secs,
            scoring: f.scoring.unwrap_or(if sim_ln {
                msat_scoring()
            } else {
                ScoringParams::default()
            }),
            amount_per_msat,
            seconds_per_block: f.seconds_per_block.unwrap_or(600),
            max_pending_htlcs,
            unit,
            tracked_channels: f.tracked_channels.unwrap_or(16),
        })
    }
}
