//! The world at the start of a run: the router's graph with the hubs' policies, every channel's
//! opening balances and limits, and the guarantees that fund the virtual channels.
//!
//! Pure: it reads a [`Scenario`] and returns a [`World`]; the ledger then opens the channels
//! from it (through `htlc`, so the guarantees are locked by the protocol's own operation).

use std::collections::HashMap;

use alloy::primitives::keccak256;
use htlc::forward::MIN_EXPIRY_DELTA_SECS;
use htlc::ops::Limits;
use htlc::{Amount, ChannelId, Guarantee, Side};
use router::{Channel, ChannelGraph, ChannelKind, PathFinder, Policy, RouteQuery, ScoringParams};

use crate::sim::error::SimError;
use crate::sim::scenario::{Collateral, Scenario, VirtualChannel};

/// One channel of the world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChanInfo {
    /// Its id in the router's graph.
    pub id: ChannelId,
    /// Ledger or virtual.
    pub kind: ChannelKind,
    /// Node indices of sides A and B.
    pub nodes: [u32; 2],
    /// What can move in it: its total minus the guarantees it locks (the router's capacity).
    pub capacity: Amount,
    /// Balances of A and B when it opens (before any guarantee is locked).
    pub opening: [Amount; 2],
    /// Bounds the channel enforces (rule 10).
    pub limits: Limits,
}

impl ChanInfo {
    /// The side of node `n`, if it is a participant.
    pub fn side_of(&self, n: u32) -> Option<Side> {
        if self.nodes[0] == n {
            Some(Side::A)
        } else if self.nodes[1] == n {
            Some(Side::B)
        } else {
            None
        }
    }
}

/// The start of a run (see the module documentation).
#[derive(Clone, Debug)]
pub struct World {
    /// The router's graph as the run starts.
    pub graph: ChannelGraph,
    /// Every channel: the network's in id order, then the virtual channels of the scenario.
    pub chans: Vec<ChanInfo>,
    /// Channel id → index in `chans`.
    pub chan_index: HashMap<ChannelId, u32>,
    /// Guarantees to lock once the channels are open, in order: (channel index, guarantee).
    pub guarantees: Vec<(u32, Guarantee)>,
    /// Hub node indices, in scenario order.
    pub hubs: Vec<u32>,
    /// Each hub's total on its sides of its channels at the start.
    pub hub_collateral: Vec<Amount>,
    /// Each node's total capacity (sum over its channels), the weight of random activity.
    pub node_capacity: Vec<u128>,
    /// Directions whose expiry delta was below the protocol minimum and was raised to it.
    pub raised_deltas: usize,
}

/// `x * f` rounded down, for `f` in `[0, 1e6]` with nine decimals of precision, in integers.
fn scale(x: u128, f: f64) -> Result<u128, SimError> {
    const ONE: u128 = 1_000_000_000;
    // f is validated to [0, 1e6], so f * 1e9 <= 1e15 fits exactly enough in u128.
    let p = (f * 1e9).round() as u128;
    let whole = (x / ONE).checked_mul(p).ok_or(SimError::Overflow)?;
    let frac = (x % ONE) * p / ONE;
    whole.checked_add(frac).ok_or(SimError::Overflow)
}

/// The id of the `i`-th virtual channel of a scenario between nodes `a` and `b`.
pub fn virtual_channel_id(i: usize, a: &[u8], b: &[u8]) -> ChannelId {
    let mut pre = Vec::with_capacity(24 + a.len() + b.len());
    pre.extend_from_slice(b"vhub-sim-virtual");
    pre.extend_from_slice(&(i as u64).to_be_bytes());
    pre.extend_from_slice(a);
    pre.extend_from_slice(b);
    ChannelId(keccak256(pre))
}

/// Builds the world of a scenario (see the module documentation).
pub fn build(scenario: &Scenario) -> Result<World, SimError> {
    let net = &scenario.network;
    let params = &scenario.params;
    let mut graph = net.graph.clone();
    if let Some(h) = params.half_life_secs {
        graph.set_half_life_secs(h);
    }

    // A hub raises any expiry delta below the protocol minimum to it (`forward::decide` uses
    // `max(policy.expiry_delta, MIN_EXPIRY_DELTA_SECS)`), so the router must price that.
    let mut raised_deltas = 0;
    for spec in &net.channels {
        for side in [Side::A, Side::B] {
            let Some(ch) = graph.channel(&spec.id) else {
                return Err(SimError::Internal("network channel missing from its graph"));
            };
            let mut policy = *ch.policy(side);
            if policy.expiry_delta < MIN_EXPIRY_DELTA_SECS {
                policy.expiry_delta = MIN_EXPIRY_DELTA_SECS;
                graph.set_policy(&spec.id, side, policy)?;
                raised_deltas += 1;
            }
        }
    }

    // Hub policies on every channel of the hub, on the hub's side.
    for hub in &scenario.hubs {
        for spec in net.channels.iter().filter(|c| c.nodes.contains(&hub.node)) {
            let side = if spec.nodes[0] == hub.node {
                Side::A
            } else {
                Side::B
            };
            let Some(ch) = graph.channel(&spec.id) else {
                return Err(SimError::Internal("network channel missing from its graph"));
            };
            let mut policy = *ch.policy(side);
            if let Some(f) = hub.base_fee {
                policy.base_fee = f;
            }
            if let Some(p) = hub.fee_ppm {
                policy.fee_ppm = p;
            }
            if let Some(d) = hub.expiry_delta {
                policy.expiry_delta = d.max(MIN_EXPIRY_DELTA_SECS);
            }
            graph.set_policy(&spec.id, side, policy)?;
        }
    }

    // Opening balances: the configured split, then each hub's collateral on its sides.
    let mut opening: Vec<[u128; 2]> = Vec::with_capacity(net.channels.len());
    for spec in &net.channels {
        let a = scale(spec.capacity.0, params.initial_balance_a)?;
        opening.push([a, spec.capacity.0 - a.min(spec.capacity.0)]);
    }
    let mut hub_collateral = Vec::with_capacity(scenario.hubs.len());
    for hub in &scenario.hubs {
        let mine: Vec<(usize, usize)> = net
            .channels
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                c.nodes
                    .iter()
                    .position(|n| *n == hub.node)
                    .map(|side| (i, side))
            })
            .collect();
        match hub.collateral {
            Collateral::AsNetwork => {}
            Collateral::Multiplier(m) => {
                for &(i, side) in &mine {
                    if let Some(b) = opening.get_mut(i).and_then(|o| o.get_mut(side)) {
                        *b = scale(*b, m)?;
                    }
                }
            }
            Collateral::Total(total) => {
                let weight = |i: usize, side: usize| {
                    opening
                        .get(i)
                        .and_then(|o| o.get(side))
                        .copied()
                        .unwrap_or(0)
                };
                let mut base: u128 = mine.iter().map(|&(i, s)| weight(i, s)).sum();
                let caps: Vec<u128> = mine
                    .iter()
                    .map(|&(i, s)| {
                        if base == 0 {
                            net.channels.get(i).map_or(0, |c| c.capacity.0)
                        } else {
                            weight(i, s)
                        }
                    })
                    .collect();
                if base == 0 {
                    base = caps.iter().sum();
                }
                if base > 0 {
                    // Shares in proportion to the weights (float, then the rounding remainder
                    // to the largest channel so the sum is exact).
                    let mut shares: Vec<u128> = caps
                        .iter()
                        .map(|w| (*w as f64 / base as f64 * total.0 as f64) as u128)
                        .collect();
                    let sum: u128 = shares.iter().sum();
                    let largest = caps
                        .iter()
                        .enumerate()
                        .max_by_key(|(k, w)| (**w, usize::MAX - *k))
                        .map(|(k, _)| k);
                    if let Some(s) = largest.and_then(|k| shares.get_mut(k)) {
                        *s = if sum <= total.0 {
                            s.saturating_add(total.0 - sum)
                        } else {
                            s.saturating_sub(sum - total.0)
                        };
                    }
                    for (&(i, side), share) in mine.iter().zip(shares) {
                        if let Some(b) = opening.get_mut(i).and_then(|o| o.get_mut(side)) {
                            *b = share;
                        }
                    }
                }
            }
        }
        let sum: u128 = mine
            .iter()
            .map(|&(i, s)| opening.get(i).and_then(|o| o.get(s)).copied().unwrap_or(0))
            .try_fold(0u128, |acc, x| acc.checked_add(x))
            .ok_or(SimError::Overflow)?;
        hub_collateral.push(Amount(sum));
    }

    let mut chans = Vec::with_capacity(net.channels.len() + scenario.virtual_channels.len());
    for (spec, o) in net.channels.iter().zip(&opening) {
        let total = o[0].checked_add(o[1]).ok_or(SimError::Overflow)?;
        if total != spec.capacity.0 {
            graph.set_capacity(&spec.id, Amount(total))?;
        }
        chans.push(ChanInfo {
            id: spec.id,
            kind: spec.kind,
            nodes: spec.nodes,
            capacity: Amount(total),
            opening: [Amount(o[0]), Amount(o[1])],
            limits: Limits {
                max_pending_locks: spec.max_pending_locks.unwrap_or(params.max_pending_htlcs),
                max_in_flight: spec.max_in_flight.unwrap_or(Amount::MAX),
                ..Limits::default()
            },
        });
    }
    let mut chan_index: HashMap<ChannelId, u32> = chans
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id, i as u32))
        .collect();

    // Virtual channels: guarantees along the path, then the channel itself.
    let mut guarantees = Vec::new();
    let mut free: Vec<[u128; 2]> = opening.clone();
    for (vi, vc) in scenario.virtual_channels.iter().enumerate() {
        let path = virtual_path(scenario, &graph, &chans, &chan_index, vc, vi)?;
        let mut node = vc.between[0];
        for &ci in &path {
            let Some(info) = chans.get(ci as usize) else {
                return Err(SimError::Internal(
                    "virtual channel path outside the channel list",
                ));
            };
            let Some(side) = info.side_of(node) else {
                return Err(SimError::Internal("virtual channel path is not connected"));
            };
            let next = info.nodes[side.other().index()];
            let (a_share, b_share) = match side {
                Side::A => (vc.fund[0], vc.fund[1]),
                Side::B => (vc.fund[1], vc.fund[0]),
            };
            let f = free.get_mut(ci as usize).ok_or(SimError::Internal(
                "virtual channel path outside the channel list",
            ))?;
            for (s, need) in [(Side::A, a_share), (Side::B, b_share)] {
                let have = f[s.index()];
                if have < need.0 {
                    return Err(SimError::VirtualChannel(format!(
                        "virtual_channels[{vi}]: node {} has {} in channel {} but the guarantee needs {}",
                        scenario.network.label(info.nodes[s.index()]),
                        have,
                        info.id,
                        need.0
                    )));
                }
                f[s.index()] = have - need.0;
            }
            let locked = a_share.checked_add(b_share)?;
            let capacity = info.capacity.checked_sub(locked)?;
            let (id, vid) = (info.id, virtual_id(scenario, vc, vi));
            graph.set_capacity(&id, capacity)?;
            if let Some(c) = chans.get_mut(ci as usize) {
                c.capacity = capacity;
            }
            guarantees.push((
                ci,
                Guarantee {
                    virtual_channel: vid,
                    from_a: a_share,
                    from_b: b_share,
                    // The node nearer the virtual channel's A stands for it on this ledger.
                    crossed: side == Side::B,
                    // The simulator settles no locks inside virtual channels on chain.
                    locks_until: htlc::Expiry(u64::MAX),
                },
            ));
            node = next;
        }
        if node != vc.between[1] {
            return Err(SimError::VirtualChannel(format!(
                "virtual_channels[{vi}]: the path does not end at the second peer"
            )));
        }
        let id = virtual_id(scenario, vc, vi);
        let capacity = vc.fund[0].checked_add(vc.fund[1])?;
        let policy = Policy {
            base_fee: Amount::ZERO,
            fee_ppm: 0,
            expiry_delta: MIN_EXPIRY_DELTA_SECS,
            htlc_min: Amount(1),
            htlc_max: capacity,
            enabled: true,
        };
        let (Some(node_a), Some(node_b)) = (
            scenario.address(vc.between[0]),
            scenario.address(vc.between[1]),
        ) else {
            return Err(SimError::Internal(
                "virtual channel peer outside the node list",
            ));
        };
        graph.add_channel(Channel {
            id,
            kind: ChannelKind::Virtual,
            node_a,
            node_b,
            capacity,
            policy_a: policy,
            policy_b: policy,
        })?;
        chan_index.insert(id, chans.len() as u32);
        chans.push(ChanInfo {
            id,
            kind: ChannelKind::Virtual,
            nodes: vc.between,
            capacity,
            opening: vc.fund,
            limits: Limits {
                max_pending_locks: params.max_pending_htlcs,
                ..Limits::default()
            },
        });
    }

    let mut node_capacity = vec![0u128; net.nodes.len()];
    for c in &chans {
        for n in c.nodes {
            if let Some(x) = node_capacity.get_mut(n as usize) {
                *x = x.saturating_add(c.capacity.0);
            }
        }
    }

    Ok(World {
        graph,
        chans,
        chan_index,
        guarantees,
        hubs: scenario.hubs.iter().map(|h| h.node).collect(),
        hub_collateral,
        node_capacity,
        raised_deltas,
    })
}

/// The most each peer could put into a virtual channel between `between` funded through
/// `via` (default: the router's cheapest path): on every ledger channel of the path, the free
/// balance of the node that would lock that peer's share (after the scenario's own virtual
/// channels are funded).
pub fn fundable(
    scenario: &Scenario,
    between: [u32; 2],
    via: Option<Vec<u32>>,
) -> Result<[Amount; 2], SimError> {
    let (w, path) = funding_path(scenario, between, via)?;
    let mut max = [u128::MAX; 2];
    let mut node = between[0];
    for ci in path {
        let info = w.chans.get(ci as usize).ok_or(SimError::Internal(
            "virtual channel path outside the channel list",
        ))?;
        let side = info
            .side_of(node)
            .ok_or(SimError::Internal("virtual channel path is not connected"))?;
        let mut free = [info.opening[0].0, info.opening[1].0];
        for (_, g) in w.guarantees.iter().filter(|(c, _)| *c == ci) {
            free[0] = free[0].saturating_sub(g.from_a.0);
            free[1] = free[1].saturating_sub(g.from_b.0);
        }
        max[0] = max[0].min(free[side.index()]);
        max[1] = max[1].min(free[side.other().index()]);
        node = info.nodes[side.other().index()];
    }
    Ok([Amount(max[0]), Amount(max[1])])
}

/// The world and the ledger channels (indices) that would lock a virtual channel between
/// `between` funded through `via` (default: the router's cheapest path), from the first peer.
pub fn funding_path(
    scenario: &Scenario,
    between: [u32; 2],
    via: Option<Vec<u32>>,
) -> Result<(World, Vec<u32>), SimError> {
    let w = build(scenario)?;
    let vc = VirtualChannel {
        between,
        via,
        fund: [Amount::ZERO, Amount(1)],
    };
    let vi = scenario.virtual_channels.len();
    let path = virtual_path(scenario, &w.graph, &w.chans, &w.chan_index, &vc, vi)?;
    Ok((w, path))
}

fn virtual_id(scenario: &Scenario, vc: &VirtualChannel, i: usize) -> ChannelId {
    let a = scenario.address(vc.between[0]).unwrap_or_default();
    let b = scenario.address(vc.between[1]).unwrap_or_default();
    virtual_channel_id(i, a.as_slice(), b.as_slice())
}

/// The ledger channels (indices) a virtual channel's guarantees are locked in, from its first
/// peer to its second.
fn virtual_path(
    scenario: &Scenario,
    graph: &ChannelGraph,
    chans: &[ChanInfo],
    chan_index: &HashMap<ChannelId, u32>,
    vc: &VirtualChannel,
    vi: usize,
) -> Result<Vec<u32>, SimError> {
    let err = |m: String| SimError::VirtualChannel(format!("virtual_channels[{vi}]: {m}"));
    match &vc.via {
        Some(via) => {
            let mut nodes = vec![vc.between[0]];
            nodes.extend_from_slice(via);
            nodes.push(vc.between[1]);
            let mut path = Vec::with_capacity(nodes.len() - 1);
            for w in nodes.windows(2) {
                let (u, v) = (w[0], w[1]);
                // The largest ledger channel between u and v (ties: the smallest id).
                let best = chans
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| {
                        c.kind == ChannelKind::Ledger
                            && c.side_of(u).is_some()
                            && c.side_of(v).is_some()
                    })
                    .max_by(|(_, x), (_, y)| x.capacity.cmp(&y.capacity).then(y.id.cmp(&x.id)))
                    .map(|(i, _)| i as u32);
                match best {
                    Some(i) => path.push(i),
                    None => {
                        return Err(err(format!(
                            "no ledger channel between {} and {}",
                            scenario.network.label(u),
                            scenario.network.label(v)
                        )));
                    }
                }
            }
            Ok(path)
        }
        None => {
            let (Some(a), Some(b)) = (
                scenario.address(vc.between[0]),
                scenario.address(vc.between[1]),
            ) else {
                return Err(SimError::Internal(
                    "virtual channel peer outside the node list",
                ));
            };
            // Any path will do: whether its balances can lock the guarantees is checked below,
            // with an error that says where they fall short.
            let mut query = RouteQuery::new(a, b, Amount(1), MIN_EXPIRY_DELTA_SECS);
            // Guarantees are locked in ledger channels only.
            for c in chans.iter().filter(|c| c.kind == ChannelKind::Virtual) {
                query.exclude_channel(c.id);
            }
            let mut finder = PathFinder::new(ScoringParams::fees_only());
            let route = finder
                .find_route(graph, &query)
                .map_err(|e| err(format!("no path to fund it: {e}")))?;
            route
                .hops
                .iter()
                .map(|h| {
                    chan_index
                        .get(&h.channel)
                        .copied()
                        .ok_or(SimError::Internal("route over a channel not in the world"))
                })
                .collect()
        }
    }
}
