//! # hub — the vhub service
//!
//! The pump around the protocol core: the node machine `htlc::node::Node` decides everything,
//! and this crate moves its inputs and outputs. [`pump`] carries a step's output out (one
//! RocksDB batch in step order, then frames, events, chain reads), [`persist`] maps its
//! records to RocksDB, [`engine`] feeds it QUIC frames, [`payments`] and [`onchain`] turn
//! the operator's commands and the chain's events into steps; besides, the QUIC transport
//! (quinn) with Ethereum-key authentication bound to each connection, the versioned wire
//! protocol, the live session writers ([`session`]), the chain watcher and sender, the
//! operator API, the `hub` binary and the client library. [`node`] holds the node's state;
//! [`events`] and [`error`] are leaves.
//!
//! It must never sign a state before persisting it, never forward an HTLC that is not
//! committed, never act on a frame from a peer that has not proven its key, and never
//! implement a protocol rule itself: those live in `htlc`.

pub mod api;
pub mod api_client;
pub mod auth;
pub mod chain;
pub mod clock;
pub mod config;
pub mod engine;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod localnet;
pub mod metrics;
pub mod network;
pub mod node;
pub mod onchain;
pub mod payments;
pub mod persist;
pub mod pump;
pub mod routing;
pub mod session;
pub mod store;
pub mod transport;
pub mod virtual_bench;
pub mod wire;
