//! What a payer learns from an attempt's outcome ([`Learn`]), and how it changes the router's
//! graph ([`apply`]).

use router::{ChannelGraph, Route};

use crate::sim::error::SimError;

/// What a payer learned, applied to the graph at the end of the epoch (or at once).
#[derive(Clone, Debug)]
pub(super) enum Learn {
    /// The route carried the payment, at unix second `.1`.
    Success(Route, u64),
    /// Hop `.1` of the route refused for lack of liquidity, at unix second `.2`.
    Failure(Route, usize, u64),
}

/// Records `l` in the graph's learned liquidity.
pub(super) fn apply(graph: &mut ChannelGraph, l: Learn) -> Result<(), SimError> {
    match l {
        Learn::Success(r, t) => graph.record_route_success(&r, t)?,
        Learn::Failure(r, hop, t) => graph.record_route_failure(&r, hop, t)?,
    }
    Ok(())
}
