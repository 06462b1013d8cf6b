//! The label-setting search behind every route query (see the design notes in `pathfind`).
//!
//! A *label* is a partial route from some node to the payee, summarised by what matters for
//! extending it toward the payer: the amount the node must receive, the expiry delta of that
//! HTLC, the hop count and the cost so far. Labels are expanded in order of cost plus a lower
//! bound of the cost still to come (A*), backward along incoming edges; a node keeps every label
//! not dominated by another of its labels. The first completed route popped is optimal.

use petgraph::stable_graph::{EdgeIndex, NodeIndex};
use petgraph::visit::{EdgeIndexable, NodeIndexable};

use crate::graph::{ChannelGraph, EdgeData};
use crate::scoring::ScoringParams;
use htlc::Amount;

/// "No label / no edge".
pub(crate) const NONE: u32 = u32::MAX;

/// A partial route from `node` to the payee (see the module documentation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Label {
    /// Fees charged downstream of `node` plus penalties of every hop so far.
    pub(crate) cost: u128,
    /// The amount `node` must receive (for a completed label at the payer: what it sends).
    pub(crate) amount: u128,
    /// Expiry delta of the HTLC `node` receives (at the payer: of the HTLC it sends).
    pub(crate) delta: u64,
    /// Node index.
    pub(crate) node: u32,
    /// The label this one extends (one hop closer to the payee), or [`NONE`] for the start.
    pub(crate) parent: u32,
    /// The edge from `node` to the parent's node, or [`NONE`] for the start.
    pub(crate) edge: u32,
    /// Next label in `node`'s list of non-dominated labels.
    next: u32,
    /// Hops from `node` to the payee.
    pub(crate) hops: u8,
    /// False once dominated by a newer label (it is then skipped when popped).
    alive: bool,
}

/// Where the search starts: the payee itself, or (for alternatives) a node whose route to the
/// payee is already fixed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Start {
    pub(crate) node: NodeIndex,
    pub(crate) amount: u128,
    pub(crate) delta: u64,
    pub(crate) hops: u8,
    pub(crate) cost: u128,
}

/// The fixed parameters of one search.
#[derive(Clone, Copy)]
pub(crate) struct SearchSpec<'a> {
    pub(crate) graph: &'a ChannelGraph,
    pub(crate) params: &'a ScoringParams,
    pub(crate) payer: NodeIndex,
    /// The amount the payee receives; fees are measured against it.
    pub(crate) delivered: u128,
    pub(crate) max_fee: u128,
    pub(crate) max_hops: u8,
    pub(crate) max_delta: u64,
    /// Whether the per-edge in-flight overlay (multi-path) applies.
    pub(crate) overlay: bool,
    pub(crate) max_labels: usize,
    /// Whether the exact rule may be used for amounts below the largest HTLC minimum (if not,
    /// the fast rule is used regardless: routes stay feasible, optimality is not guaranteed).
    pub(crate) allow_exact: bool,
    /// Whether hops and delta take part in dominance. Without them (the first attempt) the search
    /// is exact as long as neither limit ever rejects a label; it reports whether one did.
    pub(crate) strict: bool,
    /// Labels before the forward bound is computed and the search restarted with it.
    pub(crate) bound_after: usize,
    /// Nodes the forward bound settles.
    pub(crate) bound_nodes: usize,
}

/// The outcome of one search.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outcome {
    /// The completed label at the payer with the least cost, if any.
    pub(crate) found: Option<u32>,
    /// Whether the hop or expiry limit rejected some label.
    pub(crate) limit_hit: bool,
}

/// How one pass of the search ended.
enum Attempt {
    /// Finished (found or not).
    Done(Outcome),
    /// Grew past `bound_after` labels without the forward bound.
    WantBound,
}

/// The search created more labels than allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TooLarge(pub(crate) usize);

/// Which dominance rule a search uses (see [`Workspace::run`]).
#[derive(Clone, Copy, Debug)]
struct Rule {
    /// Below the largest HTLC minimum: equal amounts and path subsets.
    exact: bool,
    /// Hops and delta compared too.
    strict: bool,
    /// The largest HTLC minimum of the graph.
    max_min: u128,
}

/// A 4-ary min-heap of `(key, label)`: half the depth of a binary heap, and children adjacent in
/// memory. Ties are broken by label index, so the order is fully deterministic.
#[derive(Debug, Default)]
struct QuadHeap {
    v: Vec<(u128, u32)>,
}

impl QuadHeap {
    fn clear(&mut self) {
        self.v.clear();
    }

    fn push(&mut self, item: (u128, u32)) {
        let mut i = self.v.len();
        self.v.push(item);
        while i > 0 {
            let parent = (i - 1) / 4;
            match (self.v.get(parent), self.v.get(i)) {
                (Some(p), Some(c)) if c < p => {
                    self.v.swap(parent, i);
                    i = parent;
                }
                _ => break,
            }
        }
    }

    fn pop(&mut self) -> Option<(u128, u32)> {
        let last = self.v.pop()?;
        let Some(top) = self.v.first_mut() else {
            return Some(last);
        };
        let out = std::mem::replace(top, last);
        let n = self.v.len();
        let mut i = 0;
        loop {
            let first = 4 * i + 1;
            if first >= n {
                break;
            }
            let end = (first + 4).min(n);
            let Some((best, _)) = self
                .v
                .get(first..end)
                .and_then(|c| c.iter().enumerate().min_by(|a, b| a.1.cmp(b.1)))
                .map(|(j, x)| (first + j, *x))
            else {
                break;
            };
            match (self.v.get(best), self.v.get(i)) {
                (Some(c), Some(p)) if c < p => {
                    self.v.swap(best, i);
                    i = best;
                }
                _ => break,
            }
        }
        Some(out)
    }
}

/// Per-node search state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NodeState {
    /// First label of the node's non-dominated list.
    head: u32,
    /// Hop distance class from the payer (0 payer, 1, 2, or 3 meaning "3 or more"), for A*.
    dist: u8,
    /// Cost and amount of a label at the node that some listed label dominates or equals: a
    /// cheap first test that rejects most new labels without touching the list.
    witness_cost: u128,
    witness_amount: u128,
    /// Forward bound: least cost from the payer to this node at the payment amount, once
    /// settled by [`Workspace::payer_ball`] (`u128::MAX` otherwise).
    lb: u128,
    /// Tentative forward bound while the ball grows.
    tent: u128,
}

const FREE: NodeState = NodeState {
    head: NONE,
    dist: 3,
    witness_cost: u128::MAX,
    witness_amount: u128::MAX,
    lb: u128::MAX,
    tent: u128::MAX,
};

/// Labels a search may create before it pays for the forward bound and restarts with it.
pub(crate) const BALL_AFTER_LABELS: usize = 2048;
/// Nodes the forward bound settles around the payer.
pub(crate) const BALL_NODES: usize = 256;

/// Scratch memory reused across searches, so a search allocates nothing once warm.
#[derive(Debug, Default)]
pub(crate) struct Workspace {
    pub(crate) labels: Vec<Label>,
    heap: QuadHeap,
    ball_heap: QuadHeap,
    nodes: Vec<NodeState>,
    touched: Vec<u32>,
    blocked_node: Vec<bool>,
    blocked_nodes: Vec<u32>,
    blocked_edge: Vec<bool>,
    blocked_edges: Vec<u32>,
    /// Amount already routed over each directed edge by earlier parts of a multi-path payment.
    pub(crate) used: Vec<u128>,
    used_edges: Vec<u32>,
    /// Per-node stamps for path-set checks in exact mode.
    mark: Vec<u32>,
    stamp: u32,
}

impl Workspace {
    /// Sizes the per-node and per-edge arrays for `graph`.
    pub(crate) fn prepare(&mut self, graph: &ChannelGraph) {
        let n = graph.graph.node_bound();
        let e = graph.graph.edge_bound();
        if self.nodes.len() < n {
            self.nodes.resize(n, FREE);
            self.blocked_node.resize(n, false);
            self.mark.resize(n, 0);
        }
        if self.blocked_edge.len() < e {
            self.blocked_edge.resize(e, false);
            self.used.resize(e, 0);
        }
    }

    /// Blocks a node (never used as an intermediate or start of an extension).
    pub(crate) fn block_node(&mut self, n: NodeIndex) {
        if let Some(b) = self.blocked_node.get_mut(n.index())
            && !*b
        {
            *b = true;
            self.blocked_nodes.push(n.index() as u32);
        }
    }

    /// Blocks a directed edge.
    pub(crate) fn block_edge(&mut self, e: EdgeIndex) {
        if let Some(b) = self.blocked_edge.get_mut(e.index())
            && !*b
        {
            *b = true;
            self.blocked_edges.push(e.index() as u32);
        }
    }

    /// Unblocks every node and edge.
    pub(crate) fn clear_blocks(&mut self) {
        for n in self.blocked_nodes.drain(..) {
            if let Some(b) = self.blocked_node.get_mut(n as usize) {
                *b = false;
            }
        }
        for e in self.blocked_edges.drain(..) {
            if let Some(b) = self.blocked_edge.get_mut(e as usize) {
                *b = false;
            }
        }
    }

    /// Adds `amount` to the in-flight overlay of edge `e`.
    pub(crate) fn add_used(&mut self, e: EdgeIndex, amount: u128) {
        if let Some(u) = self.used.get_mut(e.index()) {
            if *u == 0 {
                self.used_edges.push(e.index() as u32);
            }
            *u = u.saturating_add(amount);
        }
    }

    /// In-flight overlay of edge `e`.
    pub(crate) fn used(&self, e: EdgeIndex) -> u128 {
        self.used.get(e.index()).copied().unwrap_or(0)
    }

    /// Clears the in-flight overlay.
    pub(crate) fn clear_used(&mut self) {
        for e in self.used_edges.drain(..) {
            if let Some(u) = self.used.get_mut(e as usize) {
                *u = 0;
            }
        }
    }

    fn reset(&mut self) {
        for n in self.touched.drain(..) {
            if let Some(s) = self.nodes.get_mut(n as usize) {
                *s = FREE;
            }
        }
        self.labels.clear();
        self.heap.clear();
        self.ball_heap.clear();
    }

    fn node_mut(&mut self, node: u32) -> Option<&mut NodeState> {
        let s = self.nodes.get_mut(node as usize)?;
        if *s == FREE {
            self.touched.push(node);
        }
        Some(s)
    }

    /// Forgets the labels (for a restart), keeping the bounds.
    fn reset_labels(&mut self) {
        for &n in &self.touched {
            if let Some(s) = self.nodes.get_mut(n as usize) {
                s.head = NONE;
                s.witness_cost = u128::MAX;
                s.witness_amount = u128::MAX;
            }
        }
        self.labels.clear();
        self.heap.clear();
    }

    /// Whether edge `w` could carry `amount` (or more) in this search: a superset of the edges
    /// the search relaxes (it ignores HTLC minima, which larger amounts may pass).
    fn may_carry(&self, spec: &SearchSpec<'_>, w: &EdgeData, amount: u128) -> Option<u128> {
        if !w.enabled || amount > w.htlc_max {
            return None;
        }
        if !self.blocked_edges.is_empty()
            && self
                .blocked_edge
                .get(w.edge as usize)
                .copied()
                .unwrap_or(true)
        {
            return None;
        }
        let used = if spec.overlay {
            self.used.get(w.edge as usize).copied().unwrap_or(0)
        } else {
            0
        };
        let total = amount.saturating_add(used);
        (total <= w.liq_upper).then_some(total)
    }

    /// The forward bound: a Dijkstra ball of up to `bound_nodes` nodes grown from the
    /// payer, with every hop priced at the least amount any hop of this search carries
    /// (`amount`) — a lower bound of every hop's real cost, since fees and penalties never fall
    /// as the amount grows — over every edge that could carry it (a superset of what the search
    /// relaxes keeps it a bound).
    ///
    /// Returns the ball's radius: every node outside it costs at least that much to reach from
    /// the payer (`u128::MAX` if the ball holds everything reachable: the rest is unreachable).
    fn payer_ball(&mut self, spec: &SearchSpec<'_>, amount: u128) -> u128 {
        let graph = spec.graph;
        let params = spec.params;
        let payer = spec.payer.index() as u32;
        let parts = params.parts(amount);
        self.ball_heap.clear();
        if let Some(s) = self.node_mut(payer) {
            s.tent = 0;
        }
        self.ball_heap.push((0, payer));
        let mut settled = 0usize;
        let mut radius = u128::MAX;
        while let Some((d, x)) = self.ball_heap.pop() {
            let Some(s) = self.nodes.get_mut(x as usize) else {
                continue;
            };
            if s.lb != u128::MAX || d > s.tent {
                continue;
            }
            s.lb = d;
            settled += 1;
            if settled >= spec.bound_nodes {
                radius = d;
                break;
            }
            let out = graph
                .outgoing
                .get(x as usize)
                .map_or(&[][..], Vec::as_slice);
            for w in out {
                let Some(total) = self.may_carry(spec, w, amount) else {
                    continue;
                };
                let fee = if x == payer {
                    0
                } else {
                    w.base_fee.saturating_add(Amount(amount).ppm(w.fee_ppm).0)
                };
                let penalty =
                    params.penalty_with(parts, total, w.liq_lower, w.liq_upper, w.log_width);
                let nd = d.saturating_add(fee).saturating_add(penalty);
                if let Some(t) = self.node_mut(w.target)
                    && nd < t.tent
                    && t.lb == u128::MAX
                {
                    t.tent = nd;
                    self.ball_heap.push((nd, w.target));
                }
            }
        }
        radius
    }

    /// The label `idx` (an index this search created).
    pub(crate) fn label(&self, idx: u32) -> Option<&Label> {
        self.labels.get(idx as usize)
    }

    /// Marks the hop-distance classes around the payer (1 for its channel peers, 2 for theirs)
    /// for the A* lower bound. Any channel counts, enabled or not, so the bound stays a bound.
    fn mark_payer_neighbourhood(&mut self, graph: &ChannelGraph, payer: u32) {
        if let Some(s) = self.node_mut(payer) {
            s.dist = 0;
        }
        let peers = |n: u32| {
            graph
                .incoming
                .get(n as usize)
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .map(|e| e.source)
        };
        for p in peers(payer) {
            if let Some(s) = self.node_mut(p)
                && s.dist > 1
            {
                s.dist = 1;
            }
        }
        for p in peers(payer) {
            for q in peers(p) {
                if let Some(s) = self.node_mut(q)
                    && s.dist > 2
                {
                    s.dist = 2;
                }
            }
        }
    }

    /// Runs one search; returns the completed label at the payer with the least cost, if any.
    ///
    /// The rule set: with `spec.allow_exact` and a start amount below the largest HTLC minimum of
    /// the graph, the exact rule (dominance requires equal amounts, unless both are above the
    /// largest minimum, and a subset of visited nodes; every label is checked to be a simple
    /// path); otherwise the fast rule (cost and amount, plus hops and delta if `spec.strict`).
    ///
    /// The order is A*: key = cost + a lower bound of the cost from the node back to the payer.
    /// The cheap bound is `c_min` × (hop-distance class of the node from the payer: 1, 2 or 3
    /// and more), where `c_min` is the least penalty any hop can have for this payment (every
    /// hop carries at least the payment amount); neighbouring nodes' classes differ by at most
    /// one and every hop costs at least `c_min`, so the bound is consistent. A search that grows
    /// past `bound_after` labels restarts with a much tighter bound as well: a Dijkstra
    /// ball grown forward from the payer with every hop priced at the payment amount
    /// ([`Self::payer_ball`]). Both bounds are consistent, so the first completed label popped
    /// is the cheapest.
    pub(crate) fn run(&mut self, spec: &SearchSpec<'_>, start: Start) -> Result<Outcome, TooLarge> {
        self.reset();
        self.prepare(spec.graph);
        let max_min = spec.graph.max_htlc_min();
        let exact = spec.allow_exact && start.amount < max_min;
        let rule = Rule {
            exact,
            strict: spec.strict || exact,
            max_min,
        };
        let payer = spec.payer.index() as u32;
        let start_node = start.node.index() as u32;
        if start_node == payer {
            return Ok(Outcome {
                found: None,
                limit_hit: false,
            });
        }
        // Every hop of this search carries at least the start amount.
        let c_min = spec.params.parts(start.amount).base;
        self.mark_payer_neighbourhood(spec.graph, payer);
        let mut radius = None;
        loop {
            match self.attempt(spec, start, rule, c_min, radius)? {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::WantBound => {
                    // A large search: pay for the forward bound and start again with it.
                    radius = Some(self.payer_ball(spec, start.amount));
                    self.reset_labels();
                }
            }
        }
    }

    /// One pass of the search (see [`Self::run`]); `radius` is the forward bound's, once grown.
    fn attempt(
        &mut self,
        spec: &SearchSpec<'_>,
        start: Start,
        rule: Rule,
        c_min: u128,
        radius: Option<u128>,
    ) -> Result<Attempt, TooLarge> {
        let exact = rule.exact;
        let mut limit_hit = false;
        let payer = spec.payer.index() as u32;
        let start_node = start.node.index() as u32;
        let params = spec.params;
        // The lower bound of what is left to pay from a node to the payer: the larger of the
        // hop-distance bound and the forward bound (both consistent, so is their maximum). A node
        // the ball settled has its exact forward distance `lb`; any other node is at least the
        // radius away, and no more can be claimed: anything above `r` (say `2r`) overestimates
        // nodes just outside the ball, and the first completed route popped may not be the
        // cheapest. With `r` the bound stays consistent: a settled node is at most `r` away, and
        // a node just outside is at most one hop's (lower-bound) cost beyond a settled one.
        let h = |s: &NodeState| {
            let hops = c_min.saturating_mul(u128::from(s.dist));
            match radius {
                None => hops,
                Some(r) => hops.max(if s.lb == u128::MAX { r } else { s.lb }),
            }
        };

        self.labels.push(Label {
            cost: start.cost,
            amount: start.amount,
            delta: start.delta,
            node: start_node,
            parent: NONE,
            edge: NONE,
            next: NONE,
            hops: start.hops,
            alive: true,
        });
        let start_h = self.node_mut(start_node).map_or(0, |s| {
            s.head = 0;
            s.witness_cost = start.cost;
            s.witness_amount = start.amount;
            h(s)
        });
        self.heap.push((start.cost.saturating_add(start_h), 0));
        let max_amount = spec.delivered.saturating_add(spec.max_fee);
        let mut best = u128::MAX;
        let mut best_label = NONE;
        let any_blocked_edge = !self.blocked_edges.is_empty();
        let quick = !rule.exact && !rule.strict;

        while let Some((key, idx)) = self.heap.pop() {
            let Some(&l) = self.labels.get(idx as usize) else {
                continue;
            };
            if l.node == payer {
                // Completed labels are pushed only when they improve `best`; keys never fall
                // along an extension, so the first one popped is optimal.
                return Ok(Attempt::Done(Outcome {
                    found: Some(idx),
                    limit_hit,
                }));
            }
            if !l.alive || key >= best {
                continue;
            }
            if self.labels.len() > spec.max_labels {
                return Err(TooLarge(self.labels.len()));
            }
            if radius.is_none() && self.labels.len() > spec.bound_after {
                return Ok(Attempt::WantBound);
            }
            let hops = l.hops.saturating_add(1);
            if hops > spec.max_hops {
                limit_hit = true;
                continue;
            }
            let amount = l.amount;
            let parts = params.parts(amount);
            // Least cost of any extension of `l` by one hop (its penalty is at least the base).
            let floor = l.cost.saturating_add(parts.base);
            let incoming = spec
                .graph
                .incoming
                .get(l.node as usize)
                .map_or(&[][..], Vec::as_slice);
            for w in incoming {
                let from = w.source;
                let eidx = w.edge as usize;
                if !w.enabled
                    || amount < w.htlc_min
                    || amount > w.htlc_max
                    || self
                        .blocked_node
                        .get(from as usize)
                        .copied()
                        .unwrap_or(true)
                    || (any_blocked_edge && self.blocked_edge.get(eidx).copied().unwrap_or(true))
                {
                    continue;
                }
                let state = self.nodes.get(from as usize).copied().unwrap_or(FREE);
                // Any new label at `from` costs at least `floor` and needs at least `amount`:
                // if a label there is already no worse in both, the new one is dominated.
                if quick && state.witness_cost <= floor && state.witness_amount <= amount {
                    continue;
                }
                let used = if spec.overlay {
                    self.used.get(eidx).copied().unwrap_or(0)
                } else {
                    0
                };
                let total = amount.saturating_add(used);
                if total > w.liq_upper {
                    continue;
                }
                let penalty =
                    params.penalty_with(parts, total, w.liq_lower, w.liq_upper, w.log_width);
                if from == payer {
                    // The payer charges itself no fee and adds no delta: the route is complete.
                    let c = l.cost.saturating_add(penalty);
                    if c < best {
                        best = c;
                        best_label = self.labels.len() as u32;
                        self.labels.push(Label {
                            cost: c,
                            amount,
                            delta: l.delta,
                            node: from,
                            parent: idx,
                            edge: eidx as u32,
                            next: NONE,
                            hops,
                            alive: true,
                        });
                        self.heap.push((c, best_label));
                    }
                    continue;
                }
                if hops >= spec.max_hops {
                    // An intermediate needs at least one more hop to reach the payer.
                    limit_hit = true;
                    continue;
                }
                let fee = w.base_fee.saturating_add(Amount(amount).ppm(w.fee_ppm).0);
                let Some(new_amount) = amount.checked_add(fee) else {
                    continue;
                };
                if new_amount > max_amount {
                    continue;
                }
                let delta = l.delta.saturating_add(w.expiry_delta);
                if delta > spec.max_delta {
                    limit_hit = true;
                    continue;
                }
                let c = l.cost.saturating_add(fee).saturating_add(penalty);
                let key = c.saturating_add(h(&state));
                if key >= best {
                    continue;
                }
                if exact && self.revisits(idx, from) {
                    continue;
                }
                let new = Label {
                    cost: c,
                    amount: new_amount,
                    delta,
                    node: from,
                    parent: idx,
                    edge: eidx as u32,
                    next: NONE,
                    hops,
                    alive: true,
                };
                if let Some(new_idx) = self.insert(new, rule) {
                    self.heap.push((key, new_idx));
                }
            }
        }
        Ok(Attempt::Done(Outcome {
            found: (best_label != NONE).then_some(best_label),
            limit_hit,
        }))
    }

    /// Whether the path of label `idx` already visits `node`.
    fn revisits(&self, mut idx: u32, node: u32) -> bool {
        while let Some(l) = self.labels.get(idx as usize) {
            if l.node == node {
                return true;
            }
            idx = l.parent;
        }
        false
    }

    /// Whether every node on the path of label `a` is on the path of label `b`.
    fn path_subset(&mut self, a: u32, b: u32) -> bool {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.mark.iter_mut().for_each(|m| *m = 0);
            self.stamp = 1;
        }
        let mut i = b;
        while let Some(l) = self.labels.get(i as usize) {
            if let Some(m) = self.mark.get_mut(l.node as usize) {
                *m = self.stamp;
            }
            i = l.parent;
        }
        let mut i = a;
        while let Some(l) = self.labels.get(i as usize) {
            if self.mark.get(l.node as usize).copied() != Some(self.stamp) {
                return false;
            }
            i = l.parent;
        }
        true
    }

    /// Whether label `e` dominates label `n` (both in the arena) under `rule`.
    fn dominates(&mut self, e: u32, n: u32, rule: Rule) -> bool {
        let (Some(&le), Some(&ln)) = (self.labels.get(e as usize), self.labels.get(n as usize))
        else {
            return false;
        };
        if le.cost > ln.cost || le.amount > ln.amount {
            return false;
        }
        if rule.strict && (le.hops > ln.hops || le.delta > ln.delta) {
            return false;
        }
        if !rule.exact {
            return true;
        }
        // Below the largest HTLC minimum a smaller amount may be refused upstream where a larger
        // one passes, and a shortcut may fall below it: demand equal amounts (or both above) and
        // that `e` visits no node `n` does not, so every extension of `n` extends `e` too.
        (le.amount == ln.amount || le.amount >= rule.max_min) && self.path_subset(e, n)
    }

    /// Adds `new` to its node's non-dominated list unless a label there dominates it; drops the
    /// labels it dominates. Returns its index if kept.
    fn insert(&mut self, new: Label, rule: Rule) -> Option<u32> {
        let node = new.node;
        let new_idx = self.labels.len() as u32;
        self.labels.push(new);
        let mut prev = NONE;
        let mut cur = self.nodes.get(node as usize).map_or(NONE, |s| s.head);
        while cur != NONE {
            let next = self.labels.get(cur as usize).map_or(NONE, |l| l.next);
            if self.dominates(cur, new_idx, rule) {
                self.labels.pop();
                return None;
            }
            if self.dominates(new_idx, cur, rule) {
                if let Some(l) = self.labels.get_mut(cur as usize) {
                    l.alive = false;
                }
                // Unlink `cur`.
                if prev == NONE {
                    if let Some(s) = self.nodes.get_mut(node as usize) {
                        s.head = next;
                    }
                } else if let Some(p) = self.labels.get_mut(prev as usize) {
                    p.next = next;
                }
            } else {
                prev = cur;
            }
            cur = next;
        }
        let Some(s) = self.node_mut(node) else {
            self.labels.pop();
            return None;
        };
        let head = s.head;
        s.head = new_idx;
        // The witness only ever moves to a label that dominates it, so it stays dominated by
        // (or equal to) some listed label.
        if new.cost <= s.witness_cost && new.amount <= s.witness_amount {
            s.witness_cost = new.cost;
            s.witness_amount = new.amount;
        }
        if let Some(l) = self.labels.get_mut(new_idx as usize) {
            l.next = head;
        }
        Some(new_idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(testkit::config(256))]

        #[test]
        fn quad_heap_pops_in_order(items in prop::collection::vec((0u128..50, any::<u32>()), 0..200)) {
            let mut h = QuadHeap::default();
            for &i in &items {
                h.push(i);
            }
            let mut sorted = items.clone();
            sorted.sort();
            let mut out = Vec::new();
            while let Some(x) = h.pop() {
                out.push(x);
            }
            prop_assert_eq!(out, sorted);
        }
    }
}
