//! Test support: random small networks, an independent route checker written against the public
//! API only (channels, policies, liquidity bounds, `hop_penalty`), and a brute-force optimum
//! that enumerates every simple path.
//!
//! Nothing here reuses the crate's pricing code: a bug in the search's fee, expiry, limit or
//! penalty arithmetic shows up as a disagreement with these functions.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use alloy::primitives::{Address, B256};
use proptest::prelude::*;
use router::{
    Amount, Channel, ChannelGraph, ChannelId, ChannelKind, DirectedChannel, LiquidityBounds,
    NodeId, Policy, Route, RouteLimits, RouteQuery, ScoringParams, Side,
};

/// One channel of a [`Case`]: endpoints by index, capacity, both policies, and optionally
/// learned liquidity per direction as `(lower, upper)`.
#[derive(Clone, Debug)]
pub struct ChanSpec {
    pub a: usize,
    pub b: usize,
    pub capacity: u128,
    pub policies: [Policy; 2],
    pub liquidity: [Option<(u128, u128)>; 2],
}

/// A small network and one payment over it.
#[derive(Clone, Debug)]
pub struct Case {
    pub nodes: usize,
    pub channels: Vec<ChanSpec>,
    pub payer: usize,
    pub payee: usize,
    pub amount: u128,
    pub final_delta: u64,
    pub limits: RouteLimits,
    /// Excluded directions, as (channel index, sending side).
    pub excluded: Vec<(usize, Side)>,
    pub excluded_nodes: Vec<usize>,
    pub params: ScoringParams,
}

/// The address of node `i` of a case.
pub fn node(i: usize) -> NodeId {
    Address::with_last_byte(u8::try_from(i + 1).expect("cases have few nodes"))
}

/// The id of channel `i` of a case.
pub fn chan_id(i: usize) -> ChannelId {
    ChannelId(B256::with_last_byte(
        u8::try_from(i + 1).expect("cases have few channels"),
    ))
}

impl Case {
    /// The case's graph: every node (even without channels), every channel, learned liquidity.
    pub fn graph(&self) -> ChannelGraph {
        let mut g = ChannelGraph::new();
        for i in 0..self.nodes {
            g.add_node(node(i)).unwrap();
        }
        for (i, c) in self.channels.iter().enumerate() {
            g.add_channel(Channel {
                id: chan_id(i),
                kind: ChannelKind::Ledger,
                node_a: node(c.a),
                node_b: node(c.b),
                capacity: Amount(c.capacity),
                policy_a: c.policies[0],
                policy_b: c.policies[1],
            })
            .unwrap();
            for side in [Side::A, Side::B] {
                if let Some((lower, upper)) = c.liquidity[side.index()] {
                    let bounds = LiquidityBounds {
                        lower: Amount(lower),
                        upper: Amount(upper),
                    };
                    g.set_liquidity(&chan_id(i), side, bounds, 0).unwrap();
                }
            }
        }
        g
    }

    /// The case's payment.
    pub fn query(&self) -> RouteQuery {
        let mut q = RouteQuery::new(
            node(self.payer),
            node(self.payee),
            Amount(self.amount),
            self.final_delta,
        );
        q.limits = self.limits;
        q.excluded = self
            .excluded
            .iter()
            .map(|&(c, from)| DirectedChannel {
                channel: chan_id(c % self.channels.len()),
                from,
            })
            .collect();
        q.excluded_nodes = self.excluded_nodes.iter().map(|&n| node(n)).collect();
        q
    }
}

fn policy_strategy(max_min: u128) -> impl Strategy<Value = Policy> {
    (
        0u128..=5,
        prop_oneof![
            Just(0u32),
            Just(1_000),
            Just(100_000),
            Just(500_000),
            0u32..1_000_000
        ],
        0u64..=50,
        1u128..=max_min,
        0u128..=200,
        prop::bool::weighted(0.9),
    )
        .prop_map(|(base, ppm, delta, min, extra, enabled)| Policy {
            base_fee: Amount(base),
            fee_ppm: ppm,
            expiry_delta: delta,
            htlc_min: Amount(min),
            htlc_max: Amount(min + extra),
            enabled,
        })
}

fn liquidity_strategy(capacity: u128) -> impl Strategy<Value = Option<(u128, u128)>> {
    prop::option::weighted(0.4, (0..=capacity, 0..=capacity))
        .prop_map(|o| o.map(|(x, y)| (x.min(y), x.max(y))))
}

fn chan_strategy(nodes: usize, max_min: u128) -> impl Strategy<Value = ChanSpec> {
    (0..nodes, 1..nodes, 1u128..=200).prop_flat_map(move |(a, off, capacity)| {
        (
            [policy_strategy(max_min), policy_strategy(max_min)],
            [liquidity_strategy(capacity), liquidity_strategy(capacity)],
        )
            .prop_map(move |(policies, liquidity)| ChanSpec {
                a,
                b: (a + off) % nodes,
                capacity,
                policies,
                liquidity,
            })
    })
}

fn params_strategy() -> impl Strategy<Value = ScoringParams> {
    prop_oneof![
        Just(ScoringParams::fees_only()),
        (
            0u128..=5,
            0u32..=20_000,
            0u128..=10,
            0u32..=200_000,
            0u32..=8
        )
            .prop_map(|(bp, bppm, lp, lppm, bits)| ScoringParams {
                base_penalty: Amount(bp),
                base_penalty_ppm: bppm,
                liquidity_penalty: Amount(lp),
                liquidity_penalty_ppm: lppm,
                max_uncertainty_bits: bits,
            }),
    ]
}

/// Random cases on 2–6 nodes with 1–8 channels. With `above_minimums`, every HTLC minimum is at
/// most 5 and every amount at least 5 (the search's fast rule); otherwise minima go up to 60 and
/// amounts start at 1.
pub fn case_strategy(above_minimums: bool) -> impl Strategy<Value = Case> {
    let (max_min, min_amount) = if above_minimums { (5, 5) } else { (60, 1) };
    (2usize..=6).prop_flat_map(move |nodes| {
        (
            prop::collection::vec(chan_strategy(nodes, max_min), 1..=8),
            0..nodes,
            1..nodes,
            min_amount..=150u128,
            0u64..=40,
            (1u8..=5, 0u64..=150, prop::option::of(0u128..=100)),
            prop::collection::vec(
                (0usize..8, prop_oneof![Just(Side::A), Just(Side::B)]),
                0..=2,
            ),
            prop::collection::vec(0..nodes, 0..=1),
            params_strategy(),
        )
            .prop_map(
                move |(
                    channels,
                    payer,
                    off,
                    amount,
                    final_delta,
                    l,
                    excluded,
                    excl_nodes,
                    params,
                )| {
                    Case {
                        nodes,
                        channels,
                        payer,
                        payee: (payer + off) % nodes,
                        amount,
                        final_delta,
                        limits: RouteLimits {
                            max_hops: l.0,
                            max_total_expiry_delta: final_delta + l.1,
                            max_fee: l.2.map(Amount),
                        },
                        excluded,
                        excluded_nodes: excl_nodes,
                        params,
                    }
                },
            )
    })
}

/// One hop as priced independently: amount carried, fee kept by its sender, expiry delta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PricedHop {
    pub from: NodeId,
    pub to: NodeId,
    pub amount: u128,
    pub fee: u128,
    pub expiry_delta: u64,
}

/// Prices `path` (payer first) backward from the payee, from first principles: the payee gets
/// exactly the amount; each forwarding node charges `base + ppm * forwarded / 1e6` of its own
/// policy on what it forwards and adds its expiry delta; the payer charges nothing. Returns the
/// hops and the cost (fees + penalties), or `None` if the path breaks any rule of the query.
/// `in_flight` is what other parts of the same payment already use per direction.
pub fn price_hops(
    g: &ChannelGraph,
    params: &ScoringParams,
    q: &RouteQuery,
    path: &[DirectedChannel],
    in_flight: &HashMap<DirectedChannel, u128>,
) -> Option<(Vec<PricedHop>, u128)> {
    if path.is_empty() || path.len() > usize::from(q.limits.max_hops) {
        return None;
    }
    let mut amount = q.amount.0;
    let mut delta = q.final_expiry_delta;
    let mut cost = 0u128;
    let mut hops = Vec::with_capacity(path.len());
    let mut next_from = q.payee;
    for (i, d) in path.iter().enumerate().rev() {
        let ch = g.channel(&d.channel)?;
        let pol = ch.policy(d.from);
        let (from, to) = (ch.node(d.from), ch.node(d.from.other()));
        if to != next_from || (i == 0 && from != q.payer) {
            return None;
        }
        if q.excluded.contains(d) || !pol.enabled {
            return None;
        }
        if amount < pol.htlc_min.0 || amount > pol.htlc_max.0 || amount > ch.capacity.0 {
            return None;
        }
        let used = in_flight.get(d).copied().unwrap_or(0);
        let bounds = g.liquidity(&d.channel, d.from).ok()?;
        let penalty = params.hop_penalty(bounds, Amount(amount), Amount(used))?;
        let fee = if i == 0 {
            0
        } else {
            if q.excluded_nodes.contains(&from) {
                return None;
            }
            pol.fee(Amount(amount)).ok()?.0
        };
        hops.push(PricedHop {
            from,
            to,
            amount,
            fee,
            expiry_delta: delta,
        });
        cost = cost.checked_add(fee)?.checked_add(penalty.0)?;
        amount = amount.checked_add(fee)?;
        if i > 0 {
            delta = delta.checked_add(pol.expiry_delta)?;
        }
        next_from = from;
    }
    hops.reverse();
    // Simple: no node twice.
    let mut nodes: Vec<NodeId> = vec![q.payer];
    nodes.extend(hops.iter().map(|h| h.to));
    let mut sorted = nodes.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != nodes.len() {
        return None;
    }
    if delta > q.limits.max_total_expiry_delta {
        return None;
    }
    if let Some(max_fee) = q.limits.max_fee
        && amount - q.amount.0 > max_fee.0
    {
        return None;
    }
    Some((hops, cost))
}

/// The cost of `path`, if feasible (see [`price_hops`]).
pub fn price_path(
    g: &ChannelGraph,
    params: &ScoringParams,
    q: &RouteQuery,
    path: &[DirectedChannel],
    in_flight: &HashMap<DirectedChannel, u128>,
) -> Option<u128> {
    price_hops(g, params, q, path, in_flight).map(|(_, c)| c)
}

/// Checks a returned route against the independent pricing: feasible, every hop's amount, fee
/// and expiry exactly as priced, fee and expiry rules of the hub hold hop by hop, the payee gets
/// exactly the amount, and the route's cost and penalty are the recomputed ones. Returns the cost.
pub fn check_route(
    g: &ChannelGraph,
    params: &ScoringParams,
    q: &RouteQuery,
    route: &Route,
    in_flight: &HashMap<DirectedChannel, u128>,
) -> Result<u128, String> {
    let path: Vec<DirectedChannel> = route.directions().collect();
    let (priced, cost) = price_hops(g, params, q, &path, in_flight)
        .ok_or_else(|| format!("infeasible route returned: {route:?}"))?;
    if route.payer() != Some(q.payer) || route.payee() != Some(q.payee) {
        return Err(format!("wrong ends: {route:?}"));
    }
    if route.amount_delivered() != q.amount {
        return Err(format!(
            "delivers {} not {}",
            route.amount_delivered(),
            q.amount
        ));
    }
    for (h, p) in route.hops.iter().zip(&priced) {
        if (h.from, h.to, h.amount.0, h.fee.0, h.expiry_delta)
            != (p.from, p.to, p.amount, p.fee, p.expiry_delta)
        {
            return Err(format!("hop {h:?} differs from independent pricing {p:?}"));
        }
    }
    // Rule 7 and rule 6 at every forwarding node, with equality (the route is priced exactly).
    for w in route.hops.windows(2) {
        let pol = *g.channel(&w[1].channel).unwrap().policy(w[1].from_side);
        let fee = pol.base_fee.0 + w[1].amount.ppm(pol.fee_ppm).0;
        if w[0].amount.0 != w[1].amount.0 + fee {
            return Err(format!("fee rule broken between {:?} and {:?}", w[0], w[1]));
        }
        if w[0].expiry_delta != w[1].expiry_delta + pol.expiry_delta {
            return Err(format!(
                "expiry rule broken between {:?} and {:?}",
                w[0], w[1]
            ));
        }
    }
    if route.cost != cost {
        return Err(format!("route cost {} but recomputed {cost}", route.cost));
    }
    if route.penalty != cost - route.fees().0 {
        return Err(format!(
            "penalty {} inconsistent with cost {cost}",
            route.penalty
        ));
    }
    Ok(cost)
}

/// Every feasible simple path from payer to payee with its cost, cheapest first (ties broken by
/// path, so the order is deterministic).
pub fn brute_force(
    g: &ChannelGraph,
    params: &ScoringParams,
    q: &RouteQuery,
) -> Vec<(u128, Vec<DirectedChannel>)> {
    fn walk(
        g: &ChannelGraph,
        params: &ScoringParams,
        q: &RouteQuery,
        at: NodeId,
        path: &mut Vec<DirectedChannel>,
        visited: &mut Vec<NodeId>,
        out: &mut Vec<(u128, Vec<DirectedChannel>)>,
    ) {
        if at == q.payee {
            if let Some(c) = price_path(g, params, q, path, &HashMap::new()) {
                out.push((c, path.clone()));
            }
            return;
        }
        if path.len() >= usize::from(q.limits.max_hops) {
            return;
        }
        let mut ids = g.channels_of(at).unwrap();
        ids.sort();
        for id in ids {
            let ch = g.channel(&id).unwrap();
            let from = ch.side_of(at).unwrap();
            let to = ch.node(from.other());
            if visited.contains(&to) {
                continue;
            }
            path.push(DirectedChannel { channel: id, from });
            visited.push(to);
            walk(g, params, q, to, path, visited, out);
            visited.pop();
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(
        g,
        params,
        q,
        q.payer,
        &mut Vec::new(),
        &mut vec![q.payer],
        &mut out,
    );
    out.sort();
    out
}
