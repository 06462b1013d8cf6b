//! # simulations — the liquidity simulator and the in-process relay demo
//!
//! What it is:
//! - [`sim`], the **liquidity simulator** operators use to plan capital: a deterministic,
//!   discrete-event simulation in virtual time of payments over a network of channels (our
//!   router JSON, a SimLN `sim_network`, or a generated one), with explicit or random
//!   activity. Payments are routed by the `router` crate (the scorer learns from every outcome,
//!   as in the hub), locked hop by hop, settled or failed with `htlc`'s failure reasons and
//!   retried on alternatives; balances and locks live in `htlc::ChannelState`s. It reports a
//!   summary, per-payment and per-channel CSVs and SVG plots, and answers the operator's
//!   questions (collateral for a target success rate, depletion, fee changes, virtual
//!   channels). The `simulate` binary is its command line.
//! - [`relay`], the payer → hub → payee relay of the `demo` binary, over the real signed
//!   machines.
//!
//! What it must never do:
//! - **re-implement protocol rules**: every balance or lock change goes through
//!   `htlc::ops::apply_batch` (or the signed `htlc::Channel` machines), so conservation (rule 1
//!   of DESIGN.md) is the protocol's own check; the forwarding decision is
//!   `htlc::forward::decide`'s (ADR 0020 says where the fast path relies on the router instead);
//! - **be non-deterministic**: a seed fixes every draw; no wall-clock time, hash-map order or
//!   thread timing reaches an output, which is the same byte for byte for the same scenario;
//! - **do I/O in the library** (beyond writing to a caller's `Write`) or **panic on input**:
//!   bad scenarios, networks and activities get a typed [`sim::SimError`].

pub mod relay;
pub mod sim;
