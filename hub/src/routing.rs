//! Which hubs a payment crosses: the node's router graph, built from what gossip told it (the
//! announced hub-to-hub channels and their policies), its own channels and the invoice's last
//! hop, searched by `router::PathFinder` (ADR 0027). The node machine then prices the chosen
//! hubs itself (`plan_route`) and builds the onion.

use alloy::primitives::Address;
use htlc::node::Node as Machine;
use htlc::node::invoice::Invoice;
use htlc::{Amount, ChannelId, FailureReason};
use router::{
    Channel, ChannelGraph, ChannelKind, DirectedChannel, PathFinder, Policy, RouteQuery,
    ScoringParams,
};

/// Why no route was found.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// The router found none (the reason says why: no path, liquidity, limits).
    #[error("no route to {payee} over the known network: {reason}")]
    NoRoute {
        /// The payee.
        payee: Address,
        /// The router's reason.
        reason: String,
    },
    /// The graph could not be built from what we know.
    #[error("the known network is inconsistent: {0}")]
    Graph(String),
}

/// The router graph of `m` for paying `invoice`: our channels (what we can send on each), the
/// announced channels we believe, ledgers and virtual channels between hubs (a direction
/// without a policy, or disabled, is not used), and the invoice's hub to its payee under that
/// hub's policy.
pub fn graph_for(m: &Machine, invoice: &Invoice) -> Result<ChannelGraph, RoutingError> {
    let me = m.address();
    let mut g = ChannelGraph::new();
    let disabled = || Policy {
        enabled: false,
        ..Policy::free(Amount::MAX)
    };
    let mut peers: Vec<Address> = m.channel_ids().filter_map(|id| m.peer_of(id)).collect();
    peers.sort();
    peers.dedup();
    for peer in peers {
        let Some((id, available)) = m.best_channel_to(peer, None) else {
            continue;
        };
        // A virtual channel of ours is an edge of its own kind (ADR 0026).
        let kind = if m.virtuals().any(|(v, _)| *v == id) {
            ChannelKind::Virtual
        } else {
            ChannelKind::Ledger
        };
        add(
            &mut g,
            Channel {
                id,
                kind,
                node_a: me,
                node_b: peer,
                capacity: available,
                policy_a: Policy::free(available),
                policy_b: disabled(),
            },
        )?;
    }
    for (id, c) in &m.book().gossip {
        let [a, b] = c.ann.params.participants;
        if a == me || b == me {
            continue;
        }
        let pol = |side: usize| {
            c.policies[side]
                .as_ref()
                .map_or_else(disabled, |u| Policy::from(u.policy))
        };
        // An announced virtual channel between two hubs is an edge of its own kind too.
        let kind = if c.virtual_until.is_some() {
            ChannelKind::Virtual
        } else {
            ChannelKind::Ledger
        };
        add(
            &mut g,
            Channel {
                id: *id,
                kind,
                node_a: a,
                node_b: b,
                capacity: c.capacity,
                policy_a: pol(0),
                policy_b: pol(1),
            },
        )?;
    }
    // The payee's channel with its hub is not announced: the invoice names the hub, whose
    // policy is the one it announced (the same on every channel).
    let hub_policy = m.book().policies.get(&invoice.hub).copied().or_else(|| {
        m.book().gossip.values().find_map(|c| {
            let side = c
                .ann
                .params
                .participants
                .iter()
                .position(|x| *x == invoice.hub)?;
            c.policies[side].as_ref().map(|u| u.policy)
        })
    });
    if let Some(p) = hub_policy
        && invoice.hub != me
    {
        let last = ChannelId(alloy::primitives::keccak256(
            [invoice.hub.as_slice(), invoice.payee.as_slice()].concat(),
        ));
        add(
            &mut g,
            Channel {
                id: last,
                kind: ChannelKind::Ledger,
                node_a: invoice.hub,
                node_b: invoice.payee,
                capacity: Amount(u128::MAX / 4),
                policy_a: Policy::from(p),
                policy_b: disabled(),
            },
        )?;
    }
    Ok(g)
}

fn add(g: &mut ChannelGraph, c: Channel) -> Result<(), RoutingError> {
    if g.channel(&c.id).is_some() {
        return Ok(());
    }
    g.add_channel(c)
        .map_err(|e| RoutingError::Graph(e.to_string()))
}

/// The hubs (in order, our peer first) the cheapest route to `invoice`'s payee crosses,
/// avoiding the directions `(from, to)` in `excluded` (ones that failed this payment).
pub fn choose_hubs(
    m: &Machine,
    invoice: &Invoice,
    excluded: &[(Address, Address)],
) -> Result<Vec<Address>, RoutingError> {
    let g = graph_for(m, invoice)?;
    let mut query = RouteQuery::new(
        m.address(),
        invoice.payee,
        invoice.amount,
        invoice.final_expiry_delta,
    );
    for (from, to) in excluded {
        for id in g.channels_of(*from).unwrap_or_default() {
            if let Some(c) = g.channel(&id)
                && let Some(side) = c.side_of(*from)
                && c.node(side.other()) == *to
            {
                query.excluded.push(DirectedChannel {
                    channel: id,
                    from: side,
                });
            }
        }
    }
    let mut finder = PathFinder::new(ScoringParams::default());
    let route = finder
        .find_route(&g, &query)
        .map_err(|e| RoutingError::NoRoute {
            payee: invoice.payee,
            reason: e.to_string(),
        })?;
    let n = route.hops.len();
    Ok(route
        .hops
        .iter()
        .take(n.saturating_sub(1))
        .map(|h| h.to)
        .collect())
}

/// Whether a payment that failed at `node` with `reason` may succeed over another route
/// (a channel's or a hub's trouble), rather than never (the payee refused it).
pub fn worth_another_route(reason: FailureReason) -> bool {
    !matches!(
        reason,
        FailureReason::IncorrectPaymentDetails | FailureReason::FinalExpiryTooSoon
    )
}
