//! Routes as plain data: the hops a search returns, their price, and why a search failed. A
//! leaf of the crate (graph types only), so the scorer can learn from a route without
//! depending on the search.

use htlc::{Amount, ChannelId, Expiry, Side};
use serde::{Deserialize, Serialize};

use crate::graph::{DirectedChannel, GraphError, NodeId};

/// One hop of a route: an HTLC offered by `from` to `to` over `channel`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteHop {
    /// The channel.
    pub channel: ChannelId,
    /// The side of `channel` that offers the HTLC (that is, `from`).
    pub from_side: Side,
    /// The node offering the HTLC.
    pub from: NodeId,
    /// The node receiving it.
    pub to: NodeId,
    /// The HTLC amount on this hop.
    pub amount: Amount,
    /// The fee `from` keeps for forwarding over this hop: `base + ppm * amount / 1e6` of this
    /// channel's policy for `from`; zero on the first hop (the payer pays itself nothing).
    pub fee: Amount,
    /// Seconds from now until this hop's HTLC expires.
    pub expiry_delta: u64,
}

/// A route from payer to payee, with its price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Hops from payer to payee (never empty).
    pub hops: Vec<RouteHop>,
    /// Sum of the hops' risk penalties.
    pub penalty: u128,
    /// What the search minimised: fees plus penalty.
    pub cost: u128,
}

impl Route {
    /// The payer (the first hop's sender).
    pub fn payer(&self) -> Option<NodeId> {
        self.hops.first().map(|h| h.from)
    }

    /// The payee (the last hop's receiver).
    pub fn payee(&self) -> Option<NodeId> {
        self.hops.last().map(|h| h.to)
    }

    /// What the payer sends: the first hop's amount.
    pub fn amount_sent(&self) -> Amount {
        self.hops.first().map_or(Amount::ZERO, |h| h.amount)
    }

    /// What the payee receives: the last hop's amount.
    pub fn amount_delivered(&self) -> Amount {
        self.hops.last().map_or(Amount::ZERO, |h| h.amount)
    }

    /// Total fees: sent minus delivered (equal to the sum of the hops' fees).
    pub fn fees(&self) -> Amount {
        Amount(
            self.amount_sent()
                .0
                .saturating_sub(self.amount_delivered().0),
        )
    }

    /// Seconds from now until the payer's HTLC expires (the largest on the route).
    pub fn total_expiry_delta(&self) -> u64 {
        self.hops.first().map_or(0, |h| h.expiry_delta)
    }

    /// Absolute expiries of every hop's HTLC, payer first, for a route used at `now`.
    pub fn expiries(&self, now: Expiry) -> Result<Vec<Expiry>, RouteError> {
        self.hops
            .iter()
            .map(|h| {
                now.0
                    .checked_add(h.expiry_delta)
                    .map(Expiry)
                    .ok_or(RouteError::Overflow)
            })
            .collect()
    }

    /// The directions this route uses, payer first.
    pub fn directions(&self) -> impl Iterator<Item = DirectedChannel> + '_ {
        self.hops.iter().map(|h| DirectedChannel {
            channel: h.channel,
            from: h.from_side,
        })
    }
}

/// Why no route was found (a hint for operators and users, cheapest explanation first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoRouteReason {
    /// None of the payer's channels can carry the amount (disabled, too small, excluded, or
    /// known to lack the liquidity).
    PayerHasNoUsableChannel,
    /// None of the payee's channels can deliver the amount.
    PayeeHasNoUsableChannel,
    /// Channels exist at both ends but no path fits every channel and the hop, expiry and fee
    /// limits.
    NoPathWithinLimits,
}

/// A route query was rejected or could not be satisfied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The payer is not in the graph.
    #[error("unknown payer {0}")]
    UnknownPayer(NodeId),
    /// The payee is not in the graph.
    #[error("unknown payee {0}")]
    UnknownPayee(NodeId),
    /// Payer and payee are the same node.
    #[error("payer and payee are the same node {0}")]
    PayerIsPayee(NodeId),
    /// Zero-amount payments cannot be routed (zero HTLCs are invalid).
    #[error("cannot route a zero amount")]
    ZeroAmount,
    /// The payee's own expiry delta already exceeds the total expiry limit.
    #[error("final expiry delta {final_expiry_delta}s exceeds the limit {max}s")]
    FinalExpiryTooLong {
        /// Requested final delta.
        final_expiry_delta: u64,
        /// The limit.
        max: u64,
    },
    /// No route exists within the limits.
    #[error("no route from {payer} to {payee} for {amount}: {reason:?}")]
    NoRoute {
        /// Payer.
        payer: NodeId,
        /// Payee.
        payee: NodeId,
        /// Amount.
        amount: Amount,
        /// The likeliest explanation.
        reason: NoRouteReason,
    },
    /// The search gave up after creating too many labels (tiny payments on huge graphs).
    #[error("route search gave up after {0} labels")]
    SearchTooLarge(usize),
    /// A given path is not usable as a route.
    #[error("invalid path: {0}")]
    InvalidPath(&'static str),
    /// A multi-path payment could not be split within the part limit.
    #[error("cannot split {amount} into at most {max_parts} parts: {routed} routable")]
    InsufficientLiquidity {
        /// The amount asked for.
        amount: Amount,
        /// What could be routed before giving up.
        routed: Amount,
        /// The part limit.
        max_parts: usize,
    },
    /// Arithmetic overflow (amounts or times near `u128::MAX` / `u64::MAX`).
    #[error("arithmetic overflow")]
    Overflow,
    /// A graph lookup failed.
    #[error(transparent)]
    Graph(#[from] GraphError),
}
