//! The `hub` binary's commands beyond `serve`: the client commands (over a node's HTTP API),
//! the local network demo and the payments benchmark.

pub mod client;
pub mod demo;
