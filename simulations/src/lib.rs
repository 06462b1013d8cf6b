//! # simulations — liquidity simulator and network harness
//!
//! Drives the `htlc` protocol machines (and later the `router`) in process, deterministically,
//! so what it predicts is what the hub does. For now it holds [`relay`], the payer → hub → payee
//! relay used by the `demo` binary.
//!
//! It must never re-implement protocol rules: every state change goes through `htlc`.

pub mod relay;
