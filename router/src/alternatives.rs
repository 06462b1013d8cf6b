//! `k` alternative routes for retries: Yen's k shortest simple paths, run backward.
//!
//! Yen's algorithm derives each next-cheapest path from the accepted ones by fixing a "root" of
//! an accepted path and searching a different "spur" for the rest. Our costs depend on the amount
//! a hop carries, which is fixed from the payee's side, so the root is a *suffix* ending at the
//! payee (its amounts, fees and expiries are then exact) and the spur is a prefix from the payer,
//! found by the ordinary search started from the suffix's first node with the suffix's amount,
//! delta, hops and cost. Nodes of the suffix are blocked, and so is, for every accepted path with
//! the same suffix, the edge it used to enter it. Because each spur search is exact, the routes
//! come out in order of cost, exactly the `k` cheapest.

use petgraph::stable_graph::EdgeIndex;

use crate::graph::ChannelGraph;
use crate::pathfind::{PathFinder, Route, RouteError, RouteQuery, price_edges};
use crate::search::Start;

impl PathFinder {
    /// Up to `k` cheapest distinct simple routes for `query`, cheapest first (ties in a fixed
    /// order). Fewer are returned when fewer exist; an error only if not even one does.
    ///
    /// Use them for retries: when a route fails at some hop, the next one that avoids it is at
    /// hand; or put the failed direction in [`RouteQuery::excluded`] and ask again.
    pub fn find_alternatives(
        &mut self,
        graph: &ChannelGraph,
        query: &RouteQuery,
        k: usize,
    ) -> Result<Vec<Route>, RouteError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let result = self.yen(graph, query, k);
        self.ws.clear_blocks();
        result
    }

    fn yen(
        &mut self,
        graph: &ChannelGraph,
        query: &RouteQuery,
        k: usize,
    ) -> Result<Vec<Route>, RouteError> {
        let prep = self.prepare(graph, query)?;
        let first = self.search_prepared(graph, query, &prep, false)?;
        let first_edges = edges_of(graph, &first)?;
        let mut accepted: Vec<(Route, Vec<EdgeIndex>)> = vec![(first, first_edges)];
        let mut candidates: Vec<(Route, Vec<EdgeIndex>)> = Vec::new();
        let start0 = (query.amount.0, query.final_expiry_delta, 0u8, 0u128);

        while accepted.len() < k {
            let Some((_, last)) = accepted.last() else {
                break;
            };
            let last = last.clone();
            let m = last.len();
            // Spur node = the node before edge `i` (edge i..m is the fixed suffix); i = m means
            // the spur node is the payee itself and nothing is fixed.
            for i in (1..=m).rev() {
                let suffix = &last[i..];
                let (start, suffix_hops) = if suffix.is_empty() {
                    (start0, Vec::new())
                } else {
                    let p = price_edges(graph, self.params(), query, suffix, |_| 0, false, start0)?;
                    ((p.amount_in, p.delta_in, p.hop_count, p.cost), p.hops)
                };
                let Some(spur_node) = graph.graph.edge_endpoints(last[i - 1]).map(|(_, t)| t)
                else {
                    continue;
                };
                // Reset blocks to the query's own, then block the fixed suffix's nodes and, for
                // every accepted path sharing this suffix, the edge it entered it by.
                self.prepare(graph, query)?;
                self.ws.block_node(spur_node);
                for e in suffix {
                    if let Some((_, t)) = graph.graph.edge_endpoints(*e) {
                        self.ws.block_node(t);
                    }
                }
                for (_, path) in &accepted {
                    if path.len() > suffix.len() && path[path.len() - suffix.len()..] == *suffix {
                        self.ws.block_edge(path[path.len() - suffix.len() - 1]);
                    }
                }
                let (amount, delta, hops, cost) = start;
                if hops >= query.limits.max_hops {
                    continue;
                }
                let found = self.run(
                    graph,
                    query,
                    prep.payer,
                    Start {
                        node: spur_node,
                        amount,
                        delta,
                        hops,
                        cost,
                    },
                    None,
                    false,
                )?;
                let Some(idx) = found else {
                    continue;
                };
                let route = match self.build_route(graph, idx, &suffix_hops) {
                    Ok(r) => r,
                    Err(RouteError::InvalidPath(_)) => continue,
                    Err(e) => return Err(e),
                };
                let edges = edges_of(graph, &route)?;
                if !accepted.iter().any(|(_, p)| *p == edges)
                    && !candidates.iter().any(|(_, p)| *p == edges)
                {
                    candidates.push((route, edges));
                }
            }
            // The cheapest candidate (ties: fewer hops, then edge order) joins the accepted.
            let best = candidates
                .iter()
                .enumerate()
                .min_by(|(_, a), (_, b)| {
                    (a.0.cost, a.1.len(), &a.1).cmp(&(b.0.cost, b.1.len(), &b.1))
                })
                .map(|(i, _)| i);
            match best {
                Some(i) => accepted.push(candidates.swap_remove(i)),
                None => break,
            }
        }
        Ok(accepted.into_iter().map(|(r, _)| r).collect())
    }
}

/// The directed edges of a route.
pub(crate) fn edges_of(graph: &ChannelGraph, route: &Route) -> Result<Vec<EdgeIndex>, RouteError> {
    route
        .hops
        .iter()
        .map(|h| {
            graph
                .edge_of(&h.channel, h.from_side)
                .map_err(RouteError::from)
        })
        .collect()
}
