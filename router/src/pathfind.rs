//! Pathfinding: the cheapest feasible route for one payment.
//!
//! # Design rationale
//!
//! **Backward from the payee.** A hop's fee is charged on what it forwards, and what a hop
//! forwards is known only once everything downstream of it is fixed: the payee receives exactly
//! `amount`, the last intermediary forwards `amount` and must therefore receive `amount + fee`,
//! and so on up to the payer. Expiries are the same: the payee's HTLC expires `final_expiry_delta`
//! seconds from now and each forwarding node adds its delta upstream. Searching from the payee
//! toward the payer makes every amount, fee and expiry exact at the moment an edge is relaxed: no
//! estimates, no fix-up pass, and each fee is the hub's forwarding rule applied to the exact
//! outgoing amount (rule 7 of DESIGN.md holds with equality; rule 6 likewise for expiries).
//!
//! **Cost = fees + penalties.** The fees the payer pays (what the first hop carries minus the
//! amount) plus, for every hop, the scorer's penalty for the risk of failure
//! ([`crate::ScoringParams`]). Both are non-negative and non-decreasing in the amount a hop
//! carries, which is what makes a cheapest-first search correct.
//!
//! **Labels, not one distance per node.** Dijkstra keeps one best cost per node. That is not
//! enough here: (1) a partial route that is cheaper so far but needs a larger amount can become
//! dearer upstream (every fee grows with the amount) or stop fitting a channel; (2) a partial route
//! with fewer hops or a shorter expiry delta may be the only one within the hop or expiry limit.
//! So a node keeps every *label* — (cost, amount, delta, hops) of a partial route to the payee —
//! that no other label at that node beats in all four. Labels are expanded cheapest first; the
//! first completed route popped is the cheapest of all routes within the limits. The Pareto sets
//! stay small in practice (one to three labels on most nodes).
//!
//! **The one non-monotone limit: `htlc_min`.** A larger amount can pass a channel's minimum where
//! a smaller one is refused, so "smaller amount dominates" is only sound if no minimum can bind.
//! The graph tracks the largest `htlc_min` of all edges; when the payment is at least that (the
//! normal case), every amount in the search is too, and the fast rule above is exact. For smaller
//! payments the search switches to an exact rule: a label dominates another only with an equal
//! amount (or both above the largest minimum) and a subset of its visited nodes, and each label is
//! checked to be a simple path. That rule keeps more labels, so it is bounded by
//! [`PathFinder::set_max_labels`].
//!
//! **Simple paths for free.** In the fast rule a label that comes back to a node it has visited is
//! dominated by its own earlier label there (its cost, amount and delta only grew, its hop count
//! grew), so cycles are never kept; and any walk can be shortcut into a simple path that is no
//! worse. Routes are nevertheless checked to be simple before they are returned.
//!
//! **Speed.** The topology is petgraph's adjacency lists; an edge weight holds only what the inner
//! loop reads, as plain integers. All scratch state (label arena, binary heap of `(cost, label)`,
//! per-node label lists, blocked flags, multi-path in-flight overlay) lives in a workspace owned by
//! the [`PathFinder`] and reused, so a warm search allocates nothing, and no edge relaxation ever
//! allocates. Fees take a `u64` fast path; the penalty's logarithm is a few integer operations.
//! The search stops at the first completed route popped and drops every label that cannot beat
//! the best completed route found so far.
//!
//! **Alternatives** ([`PathFinder::find_alternatives`]) are Yen's k shortest simple paths, run
//! backward: the fixed part is a suffix to the payee (so its amounts are exact) and each spur
//! search is this same search started from the end of that suffix. **Multi-path** splitting is in
//! `multipath`.
//!
//! **What we did not do.** No A* or bidirectional search: the cost of a hop depends on the amount,
//! which is only known from the payee's side, and admissible bounds from the payer's side were
//! too weak to pay for themselves. No precomputed contraction: updates must stay incremental.

use htlc::{Amount, ChannelId, Side};
use petgraph::stable_graph::{EdgeIndex, NodeIndex};
use petgraph::visit::EdgeRef;
use serde::{Deserialize, Serialize};

use crate::graph::{ChannelGraph, DirectedChannel, NodeId};
pub use crate::route::{NoRouteReason, Route, RouteError, RouteHop};
use crate::scoring::ScoringParams;
use crate::search::{NONE, SearchSpec, Start, TooLarge, Workspace};

/// Default cap on labels one search may create (about 64 MiB of scratch memory).
pub const DEFAULT_MAX_LABELS: usize = 1 << 20;

/// Default cap on labels of the exact search for payments below some HTLC minimum, before it
/// falls back to the fast rule (see the module documentation).
pub const DEFAULT_MAX_EXACT_LABELS: usize = 1 << 16;

/// Knobs of the search's speed (never of its result: every setting finds the same routes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchTuning {
    /// Labels a search creates before it computes the forward bound around the payer and starts
    /// again with it (default 2048).
    pub bound_after_labels: usize,
    /// Nodes the forward bound settles (default 256).
    pub bound_nodes: usize,
}

impl Default for SearchTuning {
    fn default() -> Self {
        SearchTuning {
            bound_after_labels: crate::search::BALL_AFTER_LABELS,
            bound_nodes: crate::search::BALL_NODES,
        }
    }
}

/// Limits every route must respect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteLimits {
    /// Most hops (channels) on a route.
    pub max_hops: u8,
    /// Most seconds between now and the expiry of the payer's HTLC (the first hop's).
    pub max_total_expiry_delta: u64,
    /// Most total fees the payer will pay (`None`: no limit).
    pub max_fee: Option<Amount>,
}

impl Default for RouteLimits {
    /// 20 hops, two weeks of total expiry delta, no fee limit.
    fn default() -> Self {
        RouteLimits {
            max_hops: 20,
            max_total_expiry_delta: 14 * 24 * 3600,
            max_fee: None,
        }
    }
}

/// A payment to route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteQuery {
    /// Who pays (the first hop leaves this node; it charges itself no fee).
    pub payer: NodeId,
    /// Who is paid (it receives exactly `amount`).
    pub payee: NodeId,
    /// The amount the payee receives.
    pub amount: Amount,
    /// Seconds from now until the payee's HTLC expires.
    pub final_expiry_delta: u64,
    /// Hop, expiry and fee limits.
    pub limits: RouteLimits,
    /// Directions never to use (for example ones that just failed).
    pub excluded: Vec<DirectedChannel>,
    /// Nodes never to route through.
    pub excluded_nodes: Vec<NodeId>,
}

impl RouteQuery {
    /// A query with default limits and no exclusions.
    pub fn new(payer: NodeId, payee: NodeId, amount: Amount, final_expiry_delta: u64) -> Self {
        RouteQuery {
            payer,
            payee,
            amount,
            final_expiry_delta,
            limits: RouteLimits::default(),
            excluded: Vec::new(),
            excluded_nodes: Vec::new(),
        }
    }

    /// Excludes both directions of a channel.
    pub fn exclude_channel(&mut self, channel: ChannelId) {
        for from in [Side::A, Side::B] {
            self.excluded.push(DirectedChannel { channel, from });
        }
    }
}

/// Finds routes. Owns the scoring parameters and reusable scratch memory; one per thread.
#[derive(Debug)]
pub struct PathFinder {
    params: ScoringParams,
    tuning: SearchTuning,
    max_labels: usize,
    max_exact_labels: usize,
    pub(crate) ws: Workspace,
}

impl Default for PathFinder {
    fn default() -> Self {
        PathFinder::new(ScoringParams::default())
    }
}

/// A validated query: node indices resolved and blocks applied.
pub(crate) struct Prepared {
    pub(crate) payer: NodeIndex,
    pub(crate) payee: NodeIndex,
}

impl PathFinder {
    /// A path finder pricing routes with `params`.
    pub fn new(params: ScoringParams) -> Self {
        PathFinder {
            params,
            tuning: SearchTuning::default(),
            max_labels: DEFAULT_MAX_LABELS,
            max_exact_labels: DEFAULT_MAX_EXACT_LABELS,
            ws: Workspace::default(),
        }
    }

    /// The scoring parameters.
    pub fn params(&self) -> &ScoringParams {
        &self.params
    }

    /// Labels created by the last search (a measure of its work, for diagnostics).
    pub fn last_search_labels(&self) -> usize {
        self.ws.labels.len()
    }

    /// Sets the speed knobs (see [`SearchTuning`]).
    pub fn set_tuning(&mut self, tuning: SearchTuning) {
        self.tuning = tuning;
    }

    /// The cap on labels one search may create.
    pub fn max_labels(&self) -> usize {
        self.max_labels
    }

    /// Caps the labels one search may create (see [`RouteError::SearchTooLarge`]).
    pub fn set_max_labels(&mut self, max_labels: usize) {
        self.max_labels = max_labels;
    }

    /// Caps the labels of the exact search for payments below some HTLC minimum of the graph;
    /// past it the search falls back to the fast rule (feasible routes, optimality not assured).
    pub fn set_max_exact_labels(&mut self, max_exact_labels: usize) {
        self.max_exact_labels = max_exact_labels;
    }

    /// The cheapest route for `query` (see the module documentation).
    pub fn find_route(
        &mut self,
        graph: &ChannelGraph,
        query: &RouteQuery,
    ) -> Result<Route, RouteError> {
        let prep = self.prepare(graph, query)?;
        let result = self.search_prepared(graph, query, &prep, false);
        self.ws.clear_blocks();
        result
    }

    /// Prices a given path (payer first) for delivering `query.amount` to `query.payee` under
    /// `query`'s limits and exclusions, exactly as the search would.
    pub fn evaluate_path(
        &self,
        graph: &ChannelGraph,
        query: &RouteQuery,
        path: &[DirectedChannel],
    ) -> Result<Route, RouteError> {
        let edges = path
            .iter()
            .map(|d| graph.edge_of(&d.channel, d.from))
            .collect::<Result<Vec<_>, _>>()?;
        let p = price_edges(
            graph,
            &self.params,
            query,
            &edges,
            |_| 0,
            true,
            (query.amount.0, query.final_expiry_delta, 0, 0),
        )?;
        let fees = p.amount_in.saturating_sub(query.amount.0);
        Ok(Route {
            penalty: p.cost.saturating_sub(fees),
            cost: p.cost,
            hops: p.hops,
        })
    }

    /// Validates the query, resolves its nodes and blocks what it excludes.
    pub(crate) fn prepare(
        &mut self,
        graph: &ChannelGraph,
        query: &RouteQuery,
    ) -> Result<Prepared, RouteError> {
        let payer = graph
            .node_index(query.payer)
            .map_err(|_| RouteError::UnknownPayer(query.payer))?;
        let payee = graph
            .node_index(query.payee)
            .map_err(|_| RouteError::UnknownPayee(query.payee))?;
        if payer == payee {
            return Err(RouteError::PayerIsPayee(query.payer));
        }
        if query.amount.is_zero() {
            return Err(RouteError::ZeroAmount);
        }
        if query.final_expiry_delta > query.limits.max_total_expiry_delta {
            return Err(RouteError::FinalExpiryTooLong {
                final_expiry_delta: query.final_expiry_delta,
                max: query.limits.max_total_expiry_delta,
            });
        }
        self.ws.prepare(graph);
        self.ws.clear_blocks();
        for n in &query.excluded_nodes {
            if let Ok(ix) = graph.node_index(*n)
                && ix != payer
                && ix != payee
            {
                self.ws.block_node(ix);
            }
        }
        for d in &query.excluded {
            if let Ok(e) = graph.edge_of(&d.channel, d.from) {
                self.ws.block_edge(e);
            }
        }
        Ok(Prepared { payer, payee })
    }

    /// Searches from the payee (blocks already applied); on success returns the route.
    pub(crate) fn search_prepared(
        &mut self,
        graph: &ChannelGraph,
        query: &RouteQuery,
        prep: &Prepared,
        overlay: bool,
    ) -> Result<Route, RouteError> {
        self.search_with_fee_limit(graph, query, prep, overlay, None)
    }

    /// As [`Self::search_prepared`], with an explicit fee limit overriding the query's.
    pub(crate) fn search_with_fee_limit(
        &mut self,
        graph: &ChannelGraph,
        query: &RouteQuery,
        prep: &Prepared,
        overlay: bool,
        max_fee: Option<u128>,
    ) -> Result<Route, RouteError> {
        // Cheap necessary conditions first: a search that cannot succeed explores everything
        // it can reach before giving up.
        if let Some(reason) = self.ends_unusable(graph, query, prep, overlay) {
            return Err(no_route(query, reason));
        }
        self.ws.block_node(prep.payee);
        let start = Start {
            node: prep.payee,
            amount: query.amount.0,
            delta: query.final_expiry_delta,
            hops: 0,
            cost: 0,
        };
        let found = self.run(graph, query, prep.payer, start, max_fee, overlay)?;
        match found {
            Some(idx) => self.build_route(graph, idx, &[]),
            None => Err(no_route(query, NoRouteReason::NoPathWithinLimits)),
        }
    }

    /// Runs the search from `start`.
    pub(crate) fn run(
        &mut self,
        graph: &ChannelGraph,
        query: &RouteQuery,
        payer: NodeIndex,
        start: Start,
        max_fee: Option<u128>,
        overlay: bool,
    ) -> Result<Option<u32>, RouteError> {
        let spec = SearchSpec {
            graph,
            params: &self.params,
            payer,
            delivered: query.amount.0,
            max_fee: max_fee
                .or(query.limits.max_fee.map(|f| f.0))
                .unwrap_or(u128::MAX),
            max_hops: query.limits.max_hops,
            max_delta: query.limits.max_total_expiry_delta,
            overlay,
            max_labels: self.max_labels,
            allow_exact: false,
            strict: false,
            bound_after: self.tuning.bound_after_labels,
            bound_nodes: self.tuning.bound_nodes.max(1),
        };
        if start.amount < graph.max_htlc_min() {
            let exact = SearchSpec {
                allow_exact: true,
                strict: true,
                max_labels: self.max_exact_labels.min(self.max_labels),
                ..spec
            };
            // Too many labels for the exact rule: fall back to the fast one below.
            if let Ok(o) = self.ws.run(&exact, start) {
                return Ok(o.found);
            }
        }
        let first = self
            .ws
            .run(&spec, start)
            .map_err(|TooLarge(n)| RouteError::SearchTooLarge(n))?;
        if !first.limit_hit {
            // Neither limit rejected anything: the search was the unlimited problem's, whose
            // optimum is within the limits, hence also the limited problem's optimum.
            return Ok(first.found);
        }
        let strict = SearchSpec {
            strict: true,
            ..spec
        };
        self.ws
            .run(&strict, start)
            .map(|o| o.found)
            .map_err(|TooLarge(n)| RouteError::SearchTooLarge(n))
    }

    /// Builds the route ending at completed label `idx`, followed by the fixed `suffix` hops.
    pub(crate) fn build_route(
        &self,
        graph: &ChannelGraph,
        idx: u32,
        suffix: &[RouteHop],
    ) -> Result<Route, RouteError> {
        let ws = &self.ws;
        let fin = ws
            .label(idx)
            .ok_or(RouteError::InvalidPath("search returned no label"))?;
        let mut hops = Vec::with_capacity(usize::from(fin.hops));
        let mut cur = *fin;
        let mut first = true;
        while cur.parent != NONE {
            let parent = *ws
                .label(cur.parent)
                .ok_or(RouteError::InvalidPath("broken label chain"))?;
            let edge = EdgeIndex::new(cur.edge as usize);
            let d = graph
                .directed(edge)
                .ok_or(RouteError::InvalidPath("label refers to a removed edge"))?;
            let from = node_id(graph, cur.node)?;
            let to = node_id(graph, parent.node)?;
            hops.push(RouteHop {
                channel: d.channel,
                from_side: d.from,
                from,
                to,
                amount: Amount(parent.amount),
                fee: if first {
                    Amount::ZERO
                } else {
                    Amount(cur.amount.saturating_sub(parent.amount))
                },
                expiry_delta: parent.delta,
            });
            first = false;
            cur = parent;
        }
        hops.extend_from_slice(suffix);
        if hops.is_empty() {
            return Err(RouteError::InvalidPath("empty route"));
        }
        // Never return a route that visits a node twice (the search's rules exclude it; this
        // guards the invariant at a cost of a few hundred comparisons).
        if !is_simple(&hops) {
            return Err(RouteError::InvalidPath("route revisits a node"));
        }
        let delivered = hops.last().map_or(0, |h| h.amount.0);
        let sent = hops.first().map_or(0, |h| h.amount.0);
        let fees = sent.saturating_sub(delivered);
        Ok(Route {
            penalty: fin.cost.saturating_sub(fees),
            cost: fin.cost,
            hops,
        })
    }

    /// Whether an end of the payment rules out every route: the payer's first hop carries at
    /// least the amount, the payee's last hop exactly the amount.
    fn ends_unusable(
        &self,
        graph: &ChannelGraph,
        query: &RouteQuery,
        prep: &Prepared,
        overlay: bool,
    ) -> Option<NoRouteReason> {
        let g = &graph.graph;
        let a = query.amount.0;
        let room = |e: EdgeIndex, w: &crate::graph::EdgeData| {
            let used = if overlay { self.ws.used(e) } else { 0 };
            w.enabled && a <= w.htlc_max && a.saturating_add(used) <= w.liq_upper
        };
        let payer_ok = g
            .edges_directed(prep.payer, petgraph::Direction::Outgoing)
            .any(|e| graph.hot(e.id()).is_some_and(|w| room(e.id(), w)));
        if !payer_ok {
            return Some(NoRouteReason::PayerHasNoUsableChannel);
        }
        let payee_ok = g
            .edges_directed(prep.payee, petgraph::Direction::Incoming)
            .any(|e| {
                graph
                    .hot(e.id())
                    .is_some_and(|w| room(e.id(), w) && a >= w.htlc_min)
            });
        if !payee_ok {
            return Some(NoRouteReason::PayeeHasNoUsableChannel);
        }
        None
    }
}

fn no_route(query: &RouteQuery, reason: NoRouteReason) -> RouteError {
    RouteError::NoRoute {
        payer: query.payer,
        payee: query.payee,
        amount: query.amount,
        reason,
    }
}

/// Whether the hops form a simple path (no node visited twice).
pub(crate) fn is_simple(hops: &[RouteHop]) -> bool {
    let nodes: Vec<NodeId> = hops
        .first()
        .map(|h| h.from)
        .into_iter()
        .chain(hops.iter().map(|h| h.to))
        .collect();
    nodes
        .iter()
        .enumerate()
        .all(|(i, n)| !nodes[i + 1..].contains(n))
}

fn node_id(graph: &ChannelGraph, ix: u32) -> Result<NodeId, RouteError> {
    graph
        .graph
        .node_weight(NodeIndex::new(ix as usize))
        .copied()
        .ok_or(RouteError::InvalidPath("label refers to a removed node"))
}

/// A list of edges priced backward (see [`price_edges`]).
pub(crate) struct Priced {
    /// The hops, in path order.
    pub(crate) hops: Vec<RouteHop>,
    /// What the first edge's source must receive (for a complete route: what the payer sends).
    pub(crate) amount_in: u128,
    /// Expiry delta of that HTLC.
    pub(crate) delta_in: u64,
    /// Hops from the first edge's source to the payee, including any start hops.
    pub(crate) hop_count: u8,
    /// Cost from the first edge's source to the payee, including the start cost.
    pub(crate) cost: u128,
}

/// Prices the directed `edges` (in path order) backward exactly as the search does, from `start
/// = (amount, delta, hops, cost)` at the last edge's target; `used(e)` is the in-flight overlay.
/// With `complete`, the first edge must leave the payer (which charges no fee) and the route must
/// meet the query's limits; otherwise every hop's sender charges its fee (a suffix of a route).
/// Checks exclusions, HTLC limits, liquidity, connectivity and that the path is simple.
pub(crate) fn price_edges(
    graph: &ChannelGraph,
    params: &ScoringParams,
    query: &RouteQuery,
    edges: &[EdgeIndex],
    used: impl Fn(EdgeIndex) -> u128,
    complete: bool,
    start: (u128, u64, u8, u128),
) -> Result<Priced, RouteError> {
    let g = &graph.graph;
    let (mut amount, mut delta, mut hop_count, mut cost) = start;
    if edges.is_empty() {
        return Err(RouteError::InvalidPath("empty path"));
    }
    let payer = graph
        .node_index(query.payer)
        .map_err(|_| RouteError::UnknownPayer(query.payer))?;
    let mut hops = Vec::with_capacity(edges.len());
    let mut next_from: Option<NodeIndex> = None;
    for (i, &e) in edges.iter().enumerate().rev() {
        let invalid = RouteError::InvalidPath("unknown edge");
        let (src, dst) = g.edge_endpoints(e).ok_or(invalid.clone())?;
        let w = graph.hot(e).ok_or(invalid.clone())?;
        let d = graph.directed(e).ok_or(invalid)?;
        if let Some(n) = next_from
            && n != dst
        {
            return Err(RouteError::InvalidPath("hops are not connected"));
        }
        let pays_itself = complete && i == 0;
        if pays_itself && src != payer {
            return Err(RouteError::InvalidPath("path does not start at the payer"));
        }
        if !pays_itself && src == payer {
            return Err(RouteError::InvalidPath("path passes through the payer"));
        }
        if query.excluded.contains(&d) {
            return Err(RouteError::InvalidPath("path uses an excluded direction"));
        }
        if !w.enabled {
            return Err(RouteError::InvalidPath("path uses a disabled direction"));
        }
        if amount < w.htlc_min || amount > w.htlc_max {
            return Err(RouteError::InvalidPath("amount outside the HTLC limits"));
        }
        let total = amount.saturating_add(used(e));
        if total > w.liq_upper {
            return Err(RouteError::InvalidPath("amount above the known liquidity"));
        }
        let penalty = params.penalty(amount, total, w.liq_lower, w.liq_upper);
        let from = *g
            .node_weight(src)
            .ok_or(RouteError::InvalidPath("unknown node"))?;
        let to = *g
            .node_weight(dst)
            .ok_or(RouteError::InvalidPath("unknown node"))?;
        if !pays_itself && query.excluded_nodes.contains(&from) {
            return Err(RouteError::InvalidPath("path uses an excluded node"));
        }
        hop_count = hop_count.saturating_add(1);
        let fee = if pays_itself {
            0
        } else {
            w.base_fee
                .checked_add(Amount(amount).ppm(w.fee_ppm).0)
                .ok_or(RouteError::Overflow)?
        };
        hops.push(RouteHop {
            channel: d.channel,
            from_side: d.from,
            from,
            to,
            amount: Amount(amount),
            fee: Amount(fee),
            expiry_delta: delta,
        });
        cost = cost.saturating_add(fee).saturating_add(penalty);
        if !pays_itself {
            amount = amount.checked_add(fee).ok_or(RouteError::Overflow)?;
            delta = delta
                .checked_add(w.expiry_delta)
                .ok_or(RouteError::Overflow)?;
        }
        next_from = Some(src);
    }
    hops.reverse();
    if !is_simple(&hops) {
        return Err(RouteError::InvalidPath("route revisits a node"));
    }
    if complete {
        if hop_count > query.limits.max_hops {
            return Err(RouteError::InvalidPath("too many hops"));
        }
        if delta > query.limits.max_total_expiry_delta {
            return Err(RouteError::InvalidPath(
                "total expiry delta above the limit",
            ));
        }
        if let Some(max_fee) = query.limits.max_fee
            && amount.saturating_sub(query.amount.0) > max_fee.0
        {
            return Err(RouteError::InvalidPath("fees above the limit"));
        }
    }
    Ok(Priced {
        hops,
        amount_in: amount,
        delta_in: delta,
        hop_count,
        cost,
    })
}
