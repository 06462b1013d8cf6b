//! Property tests of route finding against an independent checker and a brute-force optimum.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::{Case, brute_force, case_strategy, check_route, price_path};
use proptest::prelude::*;
use router::{
    Amount, DirectedChannel, GeneratorConfig, MultiPathParams, PathFinder, RouteError, RouteQuery,
    SearchTuning, generate,
};

/// Speed knobs to run each case with: the default, and the forward bound forced from the first
/// label with balls of one, three and many nodes (none may change a result).
fn tunings() -> [SearchTuning; 4] {
    [
        SearchTuning::default(),
        SearchTuning {
            bound_after_labels: 0,
            bound_nodes: 1,
        },
        SearchTuning {
            bound_after_labels: 0,
            bound_nodes: 3,
        },
        SearchTuning {
            bound_after_labels: 1,
            bound_nodes: 1000,
        },
    ]
}

fn finder(case: &Case, tuning: usize) -> PathFinder {
    let mut pf = PathFinder::new(case.params);
    pf.set_tuning(tunings()[tuning % 4]);
    pf
}

fn check_single(case: &Case, tuning: usize) -> Result<(), TestCaseError> {
    let g = case.graph();
    let q = case.query();
    let mut pf = finder(case, tuning);
    let brute = brute_force(&g, &case.params, &q);
    match pf.find_route(&g, &q) {
        Ok(route) => {
            let cost = check_route(&g, &case.params, &q, &route, &HashMap::new())
                .map_err(TestCaseError::fail)?;
            prop_assert!(!brute.is_empty(), "route found where brute force has none");
            prop_assert_eq!(cost, brute[0].0, "not optimal: brute force {:?}", brute[0]);
        }
        Err(RouteError::NoRoute { .. }) => {
            prop_assert!(brute.is_empty(), "missed a route: {:?}", brute.first());
        }
        Err(e) => prop_assert!(false, "unexpected error {e}"),
    }
    Ok(())
}

fn check_alternatives(case: &Case, k: usize, tuning: usize) -> Result<(), TestCaseError> {
    let g = case.graph();
    let q = case.query();
    let mut pf = finder(case, tuning);
    let brute = brute_force(&g, &case.params, &q);
    match pf.find_alternatives(&g, &q, k) {
        Ok(routes) => {
            prop_assert_eq!(routes.len(), k.min(brute.len()));
            let mut seen: Vec<Vec<DirectedChannel>> = Vec::new();
            for (r, b) in routes.iter().zip(&brute) {
                let cost = check_route(&g, &case.params, &q, r, &HashMap::new())
                    .map_err(TestCaseError::fail)?;
                prop_assert_eq!(cost, b.0, "alternative costs differ from the k cheapest");
                let path: Vec<DirectedChannel> = r.directions().collect();
                prop_assert!(!seen.contains(&path), "duplicate alternative");
                seen.push(path);
            }
        }
        Err(RouteError::NoRoute { .. }) => prop_assert!(brute.is_empty()),
        Err(e) => prop_assert!(false, "unexpected error {e}"),
    }
    Ok(())
}

fn check_multipath(case: &Case, max_parts: usize, tuning: usize) -> Result<(), TestCaseError> {
    let g = case.graph();
    let q = case.query();
    let mut pf = finder(case, tuning);
    let single_exists = !brute_force(&g, &case.params, &q).is_empty();
    let params = MultiPathParams {
        max_parts,
        ..MultiPathParams::default()
    };
    match pf.find_multipath(&g, &q, &params) {
        Ok(mp) => {
            prop_assert!(!mp.parts.is_empty() && mp.parts.len() <= max_parts);
            prop_assert_eq!(
                mp.amount_delivered().unwrap(),
                q.amount,
                "parts do not sum exactly"
            );
            if single_exists {
                prop_assert_eq!(mp.parts.len(), 1, "split although one path suffices");
            }
            let mut in_flight: HashMap<DirectedChannel, u128> = HashMap::new();
            let mut fees = 0u128;
            for part in &mp.parts {
                let mut pq = q.clone();
                pq.amount = part.amount_delivered();
                pq.limits.max_fee = None;
                check_route(&g, &case.params, &pq, part, &in_flight)
                    .map_err(TestCaseError::fail)?;
                for h in &part.hops {
                    let d = DirectedChannel {
                        channel: h.channel,
                        from: h.from_side,
                    };
                    *in_flight.entry(d).or_default() += h.amount.0;
                }
                fees += part.fees().0;
            }
            if let Some(max_fee) = q.limits.max_fee {
                prop_assert!(fees <= max_fee.0, "fee limit exceeded in total");
            }
            // Combined use of every direction within its known liquidity.
            for (d, used) in &in_flight {
                let b = g.liquidity(&d.channel, d.from).unwrap();
                prop_assert!(*used <= b.upper.0);
            }
        }
        Err(RouteError::NoRoute { .. } | RouteError::InsufficientLiquidity { .. }) => {
            prop_assert!(!single_exists, "multipath missed a single route");
        }
        Err(e) => prop_assert!(false, "unexpected error {e}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(testkit::config(1000))]

    /// Payments above every HTLC minimum: the search's fast rule.
    #[test]
    fn route_is_feasible_optimal_and_found_iff_one_exists(case in case_strategy(true), t in 0usize..4) {
        check_single(&case, t)?;
    }

    /// HTLC minima up to 60 against amounts from 1: the exact rule for small payments.
    #[test]
    fn small_payments_against_htlc_minimums(case in case_strategy(false), t in 0usize..4) {
        check_single(&case, t)?;
    }

    #[test]
    fn alternatives_are_the_k_cheapest(case in case_strategy(true), k in 1usize..6, t in 0usize..4) {
        check_alternatives(&case, k, t)?;
    }

    #[test]
    fn alternatives_for_small_payments(case in case_strategy(false), k in 1usize..6, t in 0usize..4) {
        check_alternatives(&case, k, t)?;
    }

    #[test]
    fn multipath_parts_are_feasible_and_sum_exactly(case in case_strategy(true), parts in 1usize..6, t in 0usize..4) {
        check_multipath(&case, parts, t)?;
    }
}

proptest! {
    #![proptest_config(testkit::config(24))]

    /// On generated scale-free networks: whatever is returned is feasible and exact.
    #[test]
    fn generated_network_routes_are_feasible(
        seed in any::<u64>(),
        pairs in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), 1u128..1_000_000), 8),
        scale in prop_oneof![Just(1_000_000_000_000_000u128), Just(1_000_000_000_000_000_000u128)],
    ) {
        let g = generate(&GeneratorConfig::new(300, seed)).unwrap();
        let mut nodes: Vec<_> = g.nodes().collect();
        nodes.sort();
        let params = router::ScoringParams::default();
        let mut pf = PathFinder::new(params);
        for (a, b, amount) in pairs {
            let (payer, payee) = (*a.get(&nodes), *b.get(&nodes));
            if payer == payee {
                continue;
            }
            let q = RouteQuery::new(payer, payee, Amount(amount * scale / 1_000_000), 3600);
            match pf.find_route(&g, &q) {
                Ok(r) => {
                    check_route(&g, &params, &q, &r, &HashMap::new()).map_err(TestCaseError::fail)?;
                    // The k alternatives are feasible, distinct, in order of cost.
                    let alts = pf.find_alternatives(&g, &q, 3).unwrap();
                    prop_assert_eq!(alts[0].cost, r.cost);
                    for w in alts.windows(2) {
                        prop_assert!(w[0].cost <= w[1].cost);
                        prop_assert_ne!(&w[0].hops, &w[1].hops);
                    }
                    for alt in &alts {
                        let path: Vec<_> = alt.directions().collect();
                        prop_assert!(price_path(&g, &params, &q, &path, &HashMap::new()).is_some());
                    }
                }
                Err(RouteError::NoRoute { .. }) => {
                    let mp = pf.find_multipath(&g, &q, &MultiPathParams::default());
                    if let Ok(mp) = mp {
                        prop_assert_eq!(mp.amount_delivered().unwrap(), q.amount);
                        prop_assert!(mp.parts.len() > 1);
                    }
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
    }
}
