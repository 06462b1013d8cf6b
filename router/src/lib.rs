//! # router — the channel graph and pathfinding of the vhub routing hub
//!
//! What it is: the hub's (and the simulator's) picture of the network of ledger and virtual
//! channels, and the search for routes over it.
//!
//! - [`ChannelGraph`]: nodes are Ethereum addresses, each channel is two directed edges on a
//!   [`petgraph`] `StableGraph`, each direction with its [`Policy`] (base fee, proportional fee,
//!   expiry delta, HTLC minimum and maximum, enabled flag) and what is known of its liquidity.
//!   Opens, closes, policy changes and learned liquidity are applied incrementally.
//! - [`PathFinder`]: the cheapest route for a payment — fees computed backward from the payee,
//!   expiries accumulated hop by hop, within a hop limit, a total expiry limit and a fee limit —
//!   where cost is fees plus a penalty for the risk of failure ([`ScoringParams`]); `k`
//!   alternative routes for retries ([`PathFinder::find_alternatives`]); a split of an amount too
//!   large for one path into parts whose sum is exact ([`PathFinder::find_multipath`]).
//! - Liquidity learned from outcomes ([`ChannelGraph::record_failure`],
//!   [`ChannelGraph::record_success`]), decaying with time ([`ChannelGraph::decay_liquidity`]).
//! - Graph files: our JSON format and the `sim_network` channel list of SimLN ([`io`]).
//! - A seeded generator of scale-free synthetic networks ([`generate`]).
//!
//! What it must never do:
//! - **no I/O**: no tokio, no sockets, no clock (time is always an input, in unix seconds); the
//!   only file access is the pair of thin helpers [`io::load_file`] / [`io::save_file`], everything
//!   else takes `&str`, `Read` or `Write`;
//! - **never return an infeasible route**: every hop fits the channel's HTLC limits and known
//!   liquidity, fees are exactly `base + ppm * forwarded / 1e6` (rounded down) of what each hop
//!   forwards, so the hub's forwarding check `incoming - outgoing >= base + ppm * outgoing / 1e6`
//!   (rule 7 of DESIGN.md) holds with equality, expiries grow by each hop's delta toward the payer
//!   (rule 6), and the payee receives exactly the amount asked for;
//! - **never panic or silently wrap on input**: amounts use `htlc::Amount`'s checked arithmetic,
//!   bad input gets a typed error ([`GraphError`], [`RouteError`], [`io::GraphFileError`]).

pub mod generate;
pub mod graph;
pub mod io;
pub mod multipath;
pub mod pathfind;
pub mod route;
pub mod scoring;

mod alternatives;
mod fixed;
mod search;

pub use generate::{GeneratorConfig, generate};
pub use graph::{
    Channel, ChannelGraph, ChannelKind, DirectedChannel, GraphError, Knowledge, LiquidityBounds,
    MemoryEstimate, NodeId, Policy,
};
pub use multipath::{MultiPathParams, MultiPathRoute};
pub use pathfind::{
    NoRouteReason, PathFinder, Route, RouteError, RouteHop, RouteLimits, RouteQuery, SearchTuning,
};
pub use scoring::ScoringParams;

/// Re-exported core types used in this crate's API.
pub use htlc::{Amount, ChannelId, Expiry, Side};
