//! The network a scenario runs on: the router's graph plus what the simulator needs beside it
//! (a dense, sorted numbering of nodes and channels, SimLN aliases and HTLC-count limits).
//!
//! Everything here reads from strings or values; the caller reads files.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use alloy::primitives::Address;
use router::generate::node_address;
use router::io::{self, SimLnChannel, SimLnOptions};
use router::{Amount, ChannelGraph, ChannelId, ChannelKind, GeneratorConfig, NodeId};

use crate::sim::config::{GenerateFile, RawAmount};
use crate::sim::error::{SimError, invalid};

/// Where a network came from (it decides how `#N` references and default units work).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkKind {
    /// Our router JSON.
    Router,
    /// A SimLN `sim_network` list (amounts in msat times `amount_per_msat`).
    SimLn,
    /// The router's generator with this seed (`#N` is node `N`).
    Generated {
        /// Generator seed.
        seed: u64,
    },
}

/// One channel, numbered densely in id order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelSpec {
    /// The channel id (the router's).
    pub id: ChannelId,
    /// Ledger or virtual.
    pub kind: ChannelKind,
    /// Node indices of sides A and B.
    pub nodes: [u32; 2],
    /// Capacity as the network gives it.
    pub capacity: Amount,
    /// Most pending HTLCs in the channel (SimLN's `max_htlc_count`, the smaller of the two).
    pub max_pending_locks: Option<usize>,
    /// Most value in flight in the channel (SimLN: the two sides' `max_in_flight_msat` added).
    pub max_in_flight: Option<Amount>,
}

/// A network ready to simulate (before hub policies and collateral are applied).
#[derive(Clone, Debug)]
pub struct Network {
    /// The router's graph: channels, policies, learned liquidity.
    pub graph: ChannelGraph,
    /// Every node, sorted by address; a node's index is its position.
    pub nodes: Vec<NodeId>,
    /// Every channel, sorted by id; a channel's index is its position.
    pub channels: Vec<ChannelSpec>,
    /// Alias of each node, where the network gives one.
    pub names: Vec<Option<String>>,
    /// Where it came from.
    pub kind: NetworkKind,
    index: HashMap<NodeId, u32>,
    aliases: BTreeMap<String, u32>,
}

/// Per-side HTLC limits SimLN gives and the router does not keep.
#[derive(Clone, Copy)]
struct SimLnLimits {
    max_pending_locks: usize,
    max_in_flight: Amount,
}

impl Network {
    /// A network from a router graph (aliases optional, by address).
    fn from_graph(
        graph: ChannelGraph,
        kind: NetworkKind,
        aliases: &BTreeMap<String, NodeId>,
        limits: &HashMap<ChannelId, SimLnLimits>,
    ) -> Result<Network, SimError> {
        if graph.channel_count() == 0 {
            return Err(SimError::EmptyNetwork);
        }
        let mut nodes: Vec<NodeId> = graph.nodes().collect();
        nodes.sort_unstable();
        let index: HashMap<NodeId, u32> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, i as u32))
            .collect();
        let mut channels = Vec::with_capacity(graph.channel_count());
        for c in graph.channels() {
            let (Some(&a), Some(&b)) = (index.get(&c.node_a), index.get(&c.node_b)) else {
                return Err(SimError::Internal(
                    "graph channel with a node not in the graph",
                ));
            };
            let lim = limits.get(&c.id);
            channels.push(ChannelSpec {
                id: c.id,
                kind: c.kind,
                nodes: [a, b],
                capacity: c.capacity,
                max_pending_locks: lim.map(|l| l.max_pending_locks),
                max_in_flight: lim.map(|l| l.max_in_flight),
            });
        }
        channels.sort_unstable_by_key(|c| c.id);
        let mut names = vec![None; nodes.len()];
        let mut alias_index = BTreeMap::new();
        for (alias, node) in aliases {
            if let Some(&i) = index.get(node) {
                if let Some(slot) = names.get_mut(i as usize) {
                    *slot = Some(alias.clone());
                }
                alias_index.insert(alias.clone(), i);
            }
        }
        Ok(Network {
            graph,
            nodes,
            channels,
            names,
            kind,
            index,
            aliases: alias_index,
        })
    }

    /// Parses a network: our router JSON, or a SimLN file / bare `sim_network` array.
    pub fn from_json_str(text: &str, options: &SimLnOptions) -> Result<Network, SimError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(io::GraphFileError::from)?;
        Network::from_json_value(value, options)
    }

    /// As [`Network::from_json_str`], from a parsed value.
    pub fn from_json_value(
        value: serde_json::Value,
        options: &SimLnOptions,
    ) -> Result<Network, SimError> {
        if value.is_array() {
            let channels: Vec<SimLnChannel> =
                serde_json::from_value(value).map_err(io::GraphFileError::from)?;
            return Network::from_sim_ln(&channels, options);
        }
        if let Some(list) = value.get("sim_network") {
            let channels: Vec<SimLnChannel> =
                serde_json::from_value(list.clone()).map_err(io::GraphFileError::from)?;
            return Network::from_sim_ln(&channels, options);
        }
        let file: io::GraphFile =
            serde_json::from_value(value).map_err(io::GraphFileError::from)?;
        let graph = io::from_graph_file(file)?;
        Network::from_graph(
            graph,
            NetworkKind::Router,
            &BTreeMap::new(),
            &HashMap::new(),
        )
    }

    /// A network from SimLN's channel list (the router converts channels and policies; the
    /// aliases and HTLC-count limits are kept here).
    pub fn from_sim_ln(
        channels: &[SimLnChannel],
        options: &SimLnOptions,
    ) -> Result<Network, SimError> {
        let mut graph = ChannelGraph::with_capacity(channels.len(), channels.len());
        io::add_sim_ln_channels(&mut graph, channels, options)?;
        let mut aliases = BTreeMap::new();
        let mut limits = HashMap::new();
        for c in channels {
            for p in [&c.node_1, &c.node_2] {
                if let Some(alias) = &p.alias {
                    aliases.insert(alias.clone(), io::sim_ln_node_id(&p.pubkey)?);
                }
            }
            let count = c.node_1.max_htlc_count.min(c.node_2.max_htlc_count);
            let in_flight = u128::from(c.node_1.max_in_flight_msat)
                .saturating_add(u128::from(c.node_2.max_in_flight_msat))
                .saturating_mul(options.amount_per_msat);
            limits.insert(
                io::scid_channel_id(c.scid),
                SimLnLimits {
                    max_pending_locks: usize::try_from(count).unwrap_or(usize::MAX),
                    max_in_flight: Amount(in_flight),
                },
            );
        }
        Network::from_graph(graph, NetworkKind::SimLn, &aliases, &limits)
    }

    /// A network from the router's generator.
    pub fn generate(config: &GeneratorConfig) -> Result<Network, SimError> {
        let graph = router::generate(config)?;
        Network::from_graph(
            graph,
            NetworkKind::Generated { seed: config.seed },
            &BTreeMap::new(),
            &HashMap::new(),
        )
    }

    /// The generator configuration a scenario's `generate` section describes.
    pub fn generator_config(g: &GenerateFile) -> Result<GeneratorConfig, SimError> {
        if g.nodes < 2 {
            return Err(invalid("network.generate.nodes", "must be at least 2"));
        }
        let mut c = GeneratorConfig::new(g.nodes, g.seed);
        if let Some(h) = g.hubs {
            if h == 0 || h > g.nodes {
                return Err(invalid(
                    "network.generate.hubs",
                    format!("must be between 1 and the node count {}", g.nodes),
                ));
            }
            c.hubs = h;
        }
        if let Some(v) = g.channels_per_node {
            if !(v.is_finite() && (1.0..=1000.0).contains(&v)) {
                return Err(invalid(
                    "network.generate.channels_per_node",
                    format!("must be between 1 and 1000, got {v}"),
                ));
            }
            c.channels_per_node = v;
        }
        let amount = |a: Option<RawAmount>, field: &str, default: Amount| match a {
            Some(a) => a.positive(field),
            None => Ok(default),
        };
        c.min_capacity = amount(
            g.min_capacity,
            "network.generate.min_capacity",
            c.min_capacity,
        )?;
        c.max_capacity = amount(
            g.max_capacity,
            "network.generate.max_capacity",
            c.max_capacity,
        )?;
        if c.min_capacity > c.max_capacity {
            return Err(invalid(
                "network.generate.min_capacity",
                "must not be above max_capacity",
            ));
        }
        if let Some(t) = g.capacity_tail {
            if !(t.is_finite() && t > 0.0) {
                return Err(invalid(
                    "network.generate.capacity_tail",
                    format!("must be positive, got {t}"),
                ));
            }
            c.capacity_tail = t;
        }
        for (v, field, slot) in [
            (
                g.virtual_fraction,
                "network.generate.virtual_fraction",
                &mut c.virtual_fraction,
            ),
            (
                g.disabled_fraction,
                "network.generate.disabled_fraction",
                &mut c.disabled_fraction,
            ),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                    return Err(invalid(field, format!("must be in [0, 1], got {v}")));
                }
                *slot = v;
            }
        }
        Ok(c)
    }

    /// Names node `reference` (resolved as by [`Network::resolve`]) `alias` as well.
    pub fn add_alias(&mut self, alias: &str, reference: &str) -> Result<(), SimError> {
        let i = self.resolve(reference, &format!("aliases.{alias}"))?;
        if let Some(slot) = self.names.get_mut(i as usize) {
            *slot = Some(alias.to_owned());
        }
        self.aliases.insert(alias.to_owned(), i);
        Ok(())
    }

    /// The index of a node.
    pub fn node_index(&self, node: NodeId) -> Option<u32> {
        self.index.get(&node).copied()
    }

    /// The address of node `i`.
    pub fn node(&self, i: u32) -> Option<NodeId> {
        self.nodes.get(i as usize).copied()
    }

    /// Resolves a node reference: a `0x` address, a SimLN public key, an alias, or `#N` (node
    /// `N` of a generated network). `context` names where it was written, for the error.
    pub fn resolve(&self, reference: &str, context: &str) -> Result<u32, SimError> {
        let unknown = || SimError::UnknownNode {
            reference: reference.to_owned(),
            context: context.to_owned(),
        };
        let r = reference.trim();
        if let Some(n) = r.strip_prefix('#') {
            let NetworkKind::Generated { seed } = self.kind else {
                return Err(SimError::UnknownNode {
                    reference: reference.to_owned(),
                    context: format!("{context} (#N names nodes of generated networks only)"),
                });
            };
            let i: usize = n.parse().map_err(|_| unknown())?;
            return self.node_index(node_address(seed, i)).ok_or_else(unknown);
        }
        if let Some(&i) = self.aliases.get(r) {
            return Ok(i);
        }
        let hex = r.strip_prefix("0x").unwrap_or(r);
        let id = match hex.len() {
            40 => Address::from_str(r).map_err(|_| unknown())?,
            66 => io::sim_ln_node_id(r).map_err(|_| unknown())?,
            _ => return Err(unknown()),
        };
        self.node_index(id).ok_or_else(unknown)
    }

    /// How a node is shown: its alias, else its address.
    pub fn label(&self, i: u32) -> String {
        match self.names.get(i as usize) {
            Some(Some(alias)) => alias.clone(),
            _ => self
                .nodes
                .get(i as usize)
                .map_or_else(|| format!("#{i}"), |a| format!("{a:#x}")),
        }
    }

    /// The address of a node, lowercase hex.
    pub fn address(&self, i: u32) -> String {
        self.nodes
            .get(i as usize)
            .map_or_else(|| format!("#{i}"), |a| format!("{a:#x}"))
    }
}
