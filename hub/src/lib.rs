//! # hub — the vhub service
//!
//! The pump around the protocol core: the QUIC transport (quinn) with Ethereum-key
//! authentication bound to each connection, the versioned wire protocol, peer sessions and
//! their durable outbox ([`session`]), the engine that drives the `htlc` machines ([`engine`]),
//! payments ([`payments`]) and chain reactions ([`onchain`]) carried out as `htlc::node`
//! decides them, RocksDB storage, the chain watcher, the operator API, the `hub` binary and the
//! client library. [`node`] holds the node's state; [`events`] and [`error`] are leaves.
//!
//! It must never sign a state before persisting it, never forward an HTLC that is not
//! committed, never act on a frame from a peer that has not proven its key, and never
//! implement a protocol rule itself: those live in `htlc`.

pub mod api;
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
pub mod node;
pub mod onchain;
pub mod payments;
pub mod session;
pub mod store;
pub mod transport;
pub mod wire;
