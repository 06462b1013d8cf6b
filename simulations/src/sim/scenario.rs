//! A validated scenario: the network built, every node reference resolved, every value checked.

use htlc::Amount;
use htlc::forward::DEFAULT_MAX_EXPIRY_HORIZON_SECS;
use router::io::SimLnOptions;
use router::{ChannelKind, NodeId};

use crate::sim::config::{
    FlowFile, NetworkSource, RawAmount, RawAmountRange, ScenarioFile, SecsRange, SimParams,
};
use crate::sim::error::{SimError, invalid};
use crate::sim::network::{Network, NetworkKind};

/// An explicit flow: `count` payments (or until the run ends) from `source` to `destination`.
#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    /// Paying node index.
    pub source: u32,
    /// Paid node index.
    pub destination: u32,
    /// Milliseconds between payments, drawn uniformly in `[min, max]`.
    pub interval_ms: [u64; 2],
    /// Amount, drawn uniformly in `[min, max]`.
    pub amount: [Amount; 2],
    /// Milliseconds from the start to the first payment.
    pub start_ms: u64,
    /// Payments in the flow (`None`: until the run ends).
    pub count: Option<u64>,
}

/// Random activity (see [`crate::sim::config`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RandomActivity {
    /// Mean payment amount.
    pub expected_payment: Amount,
    /// Times its capacity each node sends per 30-day month.
    pub capacity_multiplier: f64,
    /// Sigma of the log-normal amount distribution.
    pub amount_sigma: f64,
}

/// How much a hub puts into its channels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Collateral {
    /// As the network gives it.
    AsNetwork,
    /// Its side of every channel times this factor.
    Multiplier(f64),
    /// This total over its sides, spread in proportion to what they hold as given.
    Total(Amount),
}

/// A hub: a node whose policy and collateral the operator sets.
#[derive(Clone, Debug, PartialEq)]
pub struct Hub {
    /// Node index.
    pub node: u32,
    /// Flat fee set on all its channels, if set.
    pub base_fee: Option<Amount>,
    /// Proportional fee set on all its channels, if set.
    pub fee_ppm: Option<u32>,
    /// Expiry delta set on all its channels, if set.
    pub expiry_delta: Option<u64>,
    /// Its collateral.
    pub collateral: Collateral,
}

/// A virtual channel opened at the start, funded by guarantees along a path of ledger channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualChannel {
    /// The two peers (side A, side B).
    pub between: [u32; 2],
    /// Intermediaries in order from side A (`None`: the router's cheapest path).
    pub via: Option<Vec<u32>>,
    /// Balances of A and B in the virtual channel.
    pub fund: [Amount; 2],
}

/// Everything a run needs, validated.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Seed of every random draw.
    pub seed: u64,
    /// The network.
    pub network: Network,
    /// Explicit flows.
    pub flows: Vec<Flow>,
    /// Random activity.
    pub random: Option<RandomActivity>,
    /// Hubs, in the order given.
    pub hubs: Vec<Hub>,
    /// Virtual channels opened at the start.
    pub virtual_channels: Vec<VirtualChannel>,
    /// Simulation parameters.
    pub params: SimParams,
}

fn ms(secs: f64, field: &str) -> Result<u64, SimError> {
    if !(secs.is_finite() && (0.0..1e12).contains(&secs)) {
        return Err(invalid(
            field,
            format!("must be a number of seconds between 0 and 1e12, got {secs}"),
        ));
    }
    // Finite and below 1e15 ms: the rounded value fits u64 exactly.
    Ok((secs * 1000.0).round() as u64)
}

fn range_ms(r: SecsRange, field: &str) -> Result<[u64; 2], SimError> {
    let (lo, hi) = match r {
        SecsRange::One(v) => (v, v),
        SecsRange::Range([a, b]) => (a, b),
    };
    let (lo, hi) = (ms(lo, field)?, ms(hi, field)?);
    if lo == 0 {
        return Err(invalid(field, "must be at least 1 ms"));
    }
    if lo > hi {
        return Err(invalid(field, "range minimum is above its maximum"));
    }
    Ok([lo, hi])
}

fn amount_range(r: RawAmountRange, field: &str, scale: u128) -> Result<[Amount; 2], SimError> {
    let lo = r.lo.positive(field)?;
    let hi = r.hi.positive(field)?;
    if lo > hi {
        return Err(invalid(field, "range minimum is above its maximum"));
    }
    let scaled = |a: Amount| {
        a.0.checked_mul(scale)
            .map(Amount)
            .ok_or_else(|| invalid(field, "amount overflows after scaling by amount_per_msat"))
    };
    Ok([scaled(lo)?, scaled(hi)?])
}

fn non_negative(a: RawAmount, field: &str) -> Result<Amount, SimError> {
    if a.0 < 0 {
        return Err(SimError::NonPositiveAmount {
            field: field.to_owned(),
            value: a.0,
        });
    }
    Ok(Amount(a.0.unsigned_abs()))
}

impl Scenario {
    /// Parses and validates a scenario; `network_text` is the contents of the network file it
    /// names, if any (see [`ScenarioFile::network_file`]).
    pub fn from_json_str(text: &str, network_text: Option<&str>) -> Result<Scenario, SimError> {
        Scenario::build(ScenarioFile::from_json_str(text)?, network_text)
    }

    /// Validates a parsed scenario.
    pub fn build(file: ScenarioFile, network_text: Option<&str>) -> Result<Scenario, SimError> {
        let amount_per_msat = file.simulation.amount_per_msat.unwrap_or(1);
        if amount_per_msat == 0 {
            return Err(invalid("simulation.amount_per_msat", "must be at least 1"));
        }
        let options = SimLnOptions {
            amount_per_msat: u128::from(amount_per_msat),
            seconds_per_block: file.simulation.seconds_per_block.unwrap_or(600),
            kind: ChannelKind::Ledger,
        };
        let mut network = match (&file.network, &file.sim_network) {
            (None, Some(list)) => Network::from_sim_ln(list, &options)?,
            (Some(NetworkSource::File(path)), None) => {
                let text =
                    network_text.ok_or_else(|| SimError::MissingNetworkFile(path.clone()))?;
                Network::from_json_str(text, &options)?
            }
            (Some(NetworkSource::Inline(v)), None) => {
                Network::from_json_value(v.clone(), &options)?
            }
            (Some(NetworkSource::Generate(g)), None) => {
                Network::generate(&Network::generator_config(g)?)?
            }
            _ => return Err(SimError::NetworkChoice),
        };
        for (alias, reference) in &file.aliases {
            network.add_alias(alias, reference)?;
        }
        let params = SimParams::from_file(&file.simulation, network.kind == NetworkKind::SimLn)?;

        let flows = file
            .activity
            .iter()
            .enumerate()
            .map(|(i, f)| flow(&network, f, i, u128::from(params.amount_per_msat)))
            .collect::<Result<Vec<_>, _>>()?;

        let random = match &file.random_activity {
            None => None,
            Some(r) => {
                let capacity_multiplier = r.capacity_multiplier.unwrap_or(2.0);
                if !(capacity_multiplier.is_finite()
                    && capacity_multiplier > 0.0
                    && capacity_multiplier <= 1e6)
                {
                    return Err(invalid(
                        "random_activity.capacity_multiplier",
                        format!("must be in (0, 1e6], got {capacity_multiplier}"),
                    ));
                }
                let amount_sigma = r.amount_sigma.unwrap_or(1.0);
                if !(amount_sigma.is_finite() && (0.0..=10.0).contains(&amount_sigma)) {
                    return Err(invalid(
                        "random_activity.amount_sigma",
                        format!("must be in [0, 10], got {amount_sigma}"),
                    ));
                }
                Some(RandomActivity {
                    expected_payment: r
                        .expected_payment
                        .positive("random_activity.expected_payment")?,
                    capacity_multiplier,
                    amount_sigma,
                })
            }
        };
        if flows.is_empty() && random.is_none() {
            return Err(SimError::NoActivity);
        }
        let bounded = params.duration_secs.is_some() || params.max_payments.is_some();
        if !bounded && (random.is_some() || flows.iter().any(|f| f.count.is_none())) {
            return Err(SimError::Unbounded);
        }

        let mut hubs: Vec<Hub> = Vec::with_capacity(file.hubs.len());
        for (i, h) in file.hubs.iter().enumerate() {
            let field = |f: &str| format!("hubs[{i}].{f}");
            let node = network.resolve(&h.node, &field("node"))?;
            if hubs.iter().any(|x| x.node == node) {
                return Err(invalid(&field("node"), "the same hub is listed twice"));
            }
            let collateral = match (h.collateral, h.collateral_multiplier) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        &field("collateral"),
                        "give collateral or collateral_multiplier, not both",
                    ));
                }
                (Some(c), None) => Collateral::Total(c.positive(&field("collateral"))?),
                (None, Some(m)) => {
                    if !(m.is_finite() && m > 0.0 && m <= 1e6) {
                        return Err(invalid(
                            &field("collateral_multiplier"),
                            format!("must be in (0, 1e6], got {m}"),
                        ));
                    }
                    Collateral::Multiplier(m)
                }
                (None, None) => Collateral::AsNetwork,
            };
            if let Some(d) = h.expiry_delta
                && d > DEFAULT_MAX_EXPIRY_HORIZON_SECS / 2
            {
                return Err(invalid(
                    &field("expiry_delta"),
                    format!("must be at most {} s", DEFAULT_MAX_EXPIRY_HORIZON_SECS / 2),
                ));
            }
            hubs.push(Hub {
                node,
                base_fee: h
                    .base_fee
                    .map(|a| non_negative(a, &field("base_fee")))
                    .transpose()?,
                fee_ppm: h.fee_ppm,
                expiry_delta: h.expiry_delta,
                collateral,
            });
        }

        let mut virtual_channels = Vec::with_capacity(file.virtual_channels.len());
        for (i, v) in file.virtual_channels.iter().enumerate() {
            let field = |f: &str| format!("virtual_channels[{i}].{f}");
            let a = network.resolve(&v.between[0], &field("between"))?;
            let b = network.resolve(&v.between[1], &field("between"))?;
            if a == b {
                return Err(invalid(
                    &field("between"),
                    "the two peers are the same node",
                ));
            }
            let via = v
                .via
                .as_ref()
                .map(|list| {
                    list.iter()
                        .map(|r| network.resolve(r, &field("via")))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
            let fund = [
                non_negative(v.fund_a, &field("fund_a"))?,
                non_negative(v.fund_b, &field("fund_b"))?,
            ];
            if fund[0].checked_add(fund[1])?.is_zero() {
                return Err(SimError::NonPositiveAmount {
                    field: field("fund_a + fund_b"),
                    value: 0,
                });
            }
            virtual_channels.push(VirtualChannel {
                between: [a, b],
                via,
                fund,
            });
        }

        Ok(Scenario {
            seed: file.seed.unwrap_or(1),
            network,
            flows,
            random,
            hubs,
            virtual_channels,
            params,
        })
    }

    /// The hub entry of `node`, added with the network's policy and collateral if absent.
    pub fn hub_mut(&mut self, node: u32) -> &mut Hub {
        let pos = match self.hubs.iter().position(|h| h.node == node) {
            Some(p) => p,
            None => {
                self.hubs.push(Hub {
                    node,
                    base_fee: None,
                    fee_ppm: None,
                    expiry_delta: None,
                    collateral: Collateral::AsNetwork,
                });
                self.hubs.len() - 1
            }
        };
        // `pos` is an index of `hubs`: found by `position` or just pushed.
        &mut self.hubs[pos]
    }

    /// The address of node `i`.
    pub fn address(&self, i: u32) -> Option<NodeId> {
        self.network.node(i)
    }
}

fn flow(network: &Network, f: &FlowFile, i: usize, per_msat: u128) -> Result<Flow, SimError> {
    let field = |x: &str| format!("activity[{i}].{x}");
    let source = network.resolve(&f.source, &field("source"))?;
    let destination = network.resolve(&f.destination, &field("destination"))?;
    if source == destination {
        return Err(invalid(
            &field("destination"),
            "is the same node as the source",
        ));
    }
    let amount = match (f.amount, f.amount_msat) {
        (Some(a), None) => amount_range(a, &field("amount"), 1)?,
        (None, Some(a)) => amount_range(a, &field("amount_msat"), per_msat)?,
        _ => {
            return Err(invalid(
                &field("amount"),
                "give exactly one of amount and amount_msat",
            ));
        }
    };
    Ok(Flow {
        source,
        destination,
        interval_ms: range_ms(f.interval_secs, &field("interval_secs"))?,
        amount,
        start_ms: ms(f.start_secs.unwrap_or(0.0), &field("start_secs"))?,
        count: f.count,
    })
}
