//! A seeded generator of realistic synthetic networks, for tests, benchmarks and the simulator.
//!
//! Topology: a few large hubs start fully connected; every later node joins with a handful of
//! channels to existing nodes picked by preferential attachment (probability proportional to
//! their channel count, Barabási–Albert), which yields the scale-free degree distribution of real
//! payment-channel networks: most peers have one to three channels, a few hubs have thousands.
//! The number of channels a joining node opens is uniform around `channels_per_node`.
//!
//! Capacities are heavy-tailed (Pareto with tail index `capacity_tail`, between `min_capacity`
//! and `max_capacity`), ten times larger on channels of a hub. Policies are drawn per node (the
//! side that sends sets the policy): base fee, proportional fee (log-uniform, hubs cheaper),
//! expiry delta from a few common values, HTLC limits; a small fraction of directions is disabled
//! and a fraction of channels is virtual. The same config and seed always give the same graph.

use alloy::primitives::{Address, B256, keccak256};
use htlc::{Amount, ChannelId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::graph::{Channel, ChannelGraph, ChannelKind, GraphError, NodeId, Policy};

/// Parameters of the generator. Amounts are in wei.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeneratorConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Number of large hubs (the fully connected core).
    pub hubs: usize,
    /// Average number of channels a joining node opens (16,000 nodes at 3.77 give ~60,000).
    pub channels_per_node: f64,
    /// Smallest channel capacity.
    pub min_capacity: Amount,
    /// Largest channel capacity.
    pub max_capacity: Amount,
    /// Pareto tail index of capacities (smaller: heavier tail).
    pub capacity_tail: f64,
    /// Fraction of channels that are virtual.
    pub virtual_fraction: f64,
    /// Fraction of directions that are disabled.
    pub disabled_fraction: f64,
    /// Seed of the random generator.
    pub seed: u64,
}

impl GeneratorConfig {
    /// A Lightning-like network of `nodes` nodes: one hub per thousand nodes (at least 4), about
    /// 3.77 channels per joining node, capacities 0.01–100 ETH with tail index 1.2, 5 % virtual
    /// channels, 1 % disabled directions.
    pub fn new(nodes: usize, seed: u64) -> Self {
        GeneratorConfig {
            nodes,
            hubs: (nodes / 1000).clamp(4, 200).min(nodes),
            channels_per_node: 3.77,
            min_capacity: Amount(10_000_000_000_000_000),
            max_capacity: Amount(100_000_000_000_000_000_000),
            capacity_tail: 1.2,
            virtual_fraction: 0.05,
            disabled_fraction: 0.01,
            seed,
        }
    }
}

/// The address of node `index` in a network generated with `seed`.
pub fn node_address(seed: u64, index: usize) -> NodeId {
    let mut pre = [0u8; 24];
    pre[..8].copy_from_slice(&seed.to_be_bytes());
    pre[8..16].copy_from_slice(&(index as u64).to_be_bytes());
    pre[16..].copy_from_slice(b"vhubnode");
    Address::from_word(keccak256(pre))
}

fn channel_id(seed: u64, index: usize) -> ChannelId {
    let mut pre = [0u8; 24];
    pre[..8].copy_from_slice(&seed.to_be_bytes());
    pre[8..16].copy_from_slice(&(index as u64).to_be_bytes());
    pre[16..].copy_from_slice(b"vhubchan");
    ChannelId(B256::from(keccak256(pre)))
}

/// What a node charges when it sends over any of its channels.
#[derive(Clone, Copy)]
struct Profile {
    base_fee: u128,
    fee_ppm: u32,
    expiry_delta: u64,
    htlc_min: u128,
}

fn profile(rng: &mut ChaCha8Rng, is_hub: bool) -> Profile {
    const BASE_FEES: [u128; 4] = [0, 10_000_000_000, 100_000_000_000, 1_000_000_000_000];
    const DELTAS: [u64; 5] = [1800, 3600, 7200, 14_400, 86_400];
    // Log-uniform proportional fee: hubs 1..100 ppm, others 1..3000 ppm.
    let max_log: f64 = if is_hub { 100f64.ln() } else { 3000f64.ln() };
    let fee_ppm = rng.random_range(0.0..max_log).exp() as u32;
    Profile {
        base_fee: BASE_FEES[rng.random_range(0..BASE_FEES.len())],
        fee_ppm,
        expiry_delta: DELTAS[rng.random_range(0..DELTAS.len())],
        htlc_min: if rng.random_bool(0.9) {
            1
        } else {
            1_000_000_000
        },
    }
}

/// Generates a network (see the module documentation).
pub fn generate(config: &GeneratorConfig) -> Result<ChannelGraph, GraphError> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let n = config.nodes;
    let hubs = config.hubs.min(n);
    let expected_channels = (n as f64 * config.channels_per_node) as usize + hubs * hubs / 2;
    let mut graph = ChannelGraph::with_capacity(n, expected_channels);
    let ids: Vec<NodeId> = (0..n).map(|i| node_address(config.seed, i)).collect();
    let profiles: Vec<Profile> = (0..n).map(|i| profile(&mut rng, i < hubs)).collect();
    for id in &ids {
        graph.add_node(*id)?;
    }
    // Every channel end appears once in `ends`: sampling it uniformly is sampling a node with
    // probability proportional to its degree.
    let mut ends: Vec<u32> = Vec::with_capacity(expected_channels * 2);
    let mut count = 0usize;
    let mut add = |graph: &mut ChannelGraph,
                   rng: &mut ChaCha8Rng,
                   ends: &mut Vec<u32>,
                   a: usize,
                   b: usize|
     -> Result<(), GraphError> {
        let (Some(&node_a), Some(&node_b), Some(pa), Some(pb)) =
            (ids.get(a), ids.get(b), profiles.get(a), profiles.get(b))
        else {
            return Ok(());
        };
        let capacity = capacity(rng, config, a < hubs || b < hubs);
        let policy = |p: &Profile, rng: &mut ChaCha8Rng| Policy {
            base_fee: Amount(p.base_fee),
            fee_ppm: p.fee_ppm,
            expiry_delta: p.expiry_delta,
            htlc_min: Amount(p.htlc_min.min(capacity)),
            htlc_max: Amount(if rng.random_bool(0.8) {
                capacity
            } else {
                (capacity / 2).max(p.htlc_min)
            }),
            enabled: !rng.random_bool(config.disabled_fraction.clamp(0.0, 1.0)),
        };
        let policy_a = policy(pa, rng);
        let policy_b = policy(pb, rng);
        let kind = if rng.random_bool(config.virtual_fraction.clamp(0.0, 1.0)) {
            ChannelKind::Virtual
        } else {
            ChannelKind::Ledger
        };
        graph.add_channel(Channel {
            id: channel_id(config.seed, count),
            kind,
            node_a,
            node_b,
            capacity: Amount(capacity),
            policy_a,
            policy_b,
        })?;
        count += 1;
        ends.push(a as u32);
        ends.push(b as u32);
        Ok(())
    };
    for a in 0..hubs {
        for b in a + 1..hubs {
            add(&mut graph, &mut rng, &mut ends, a, b)?;
        }
    }
    let spread = (2.0 * config.channels_per_node - 1.0).max(1.0);
    let mut picked: Vec<usize> = Vec::new();
    for node in hubs.max(1)..n {
        let want = (rng.random_range(0.0..spread) as usize + 1).min(node);
        picked.clear();
        // Preferential attachment, distinct targets; a few uniform picks keep it connected when
        // `ends` is still empty (no hubs).
        let mut tries = 0;
        while picked.len() < want && tries < want * 20 {
            tries += 1;
            let t = if ends.is_empty() || rng.random_bool(0.05) {
                rng.random_range(0..node)
            } else {
                ends[rng.random_range(0..ends.len())] as usize
            };
            if !picked.contains(&t) {
                picked.push(t);
            }
        }
        for &t in &picked {
            add(&mut graph, &mut rng, &mut ends, node, t)?;
        }
    }
    Ok(graph)
}

/// A heavy-tailed capacity: Pareto between the configured bounds, ×10 next to a hub.
fn capacity(rng: &mut ChaCha8Rng, config: &GeneratorConfig, hub: bool) -> u128 {
    let u: f64 = rng.random_range(0.0..1.0);
    let factor = (1.0 - u).powf(-1.0 / config.capacity_tail.max(0.1));
    let factor = if hub { factor * 10.0 } else { factor };
    let min = config.min_capacity.0.max(1);
    let max = config.max_capacity.0.max(min);
    // Float to integer conversion saturates, and the clamp keeps it in bounds.
    ((min as f64 * factor) as u128).clamp(min, max)
}
