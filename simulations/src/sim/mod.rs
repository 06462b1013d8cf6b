//! The liquidity simulator: a sans-I/O library. Functions take a scenario (parsed from
//! strings) and return results; the `simulate` binary reads and writes the files.
//!
//! | module | holds |
//! |---|---|
//! | [`config`] | the scenario file format (serde), parameters and their defaults |
//! | [`network`] | the network: router JSON, SimLN `sim_network`, generated; node references |
//! | [`scenario`] | the validated scenario: flows, random activity, hubs, virtual channels |
//! | [`world`] | the start of a run: policies, collateral, opening balances, guarantees |
//! | [`activity`] | payments in virtual time: explicit flows, Poisson random activity |
//! | [`ledger`] | the channel states, changed only through `htlc::ops::apply_batch` |
//! | [`signed`] | the same over real signed `htlc::Channel` machines and `forward::decide` |
//! | [`engine`] | the discrete-event simulation |
//! | [`report`] | payment records, summary, CSV and text renderings |
//! | [`plot`] | SVG plots |
//! | [`questions`] | the operator questions: collateral, depletion, fees, virtual channels |

pub mod activity;
pub mod config;
pub mod engine;
pub mod error;
pub mod ledger;
pub mod network;
pub mod plot;
pub mod questions;
pub mod report;
pub mod scenario;
pub mod signed;
pub mod world;

pub use engine::{Collect, Discard, Engine, Observer, Progress, RunOptions};
pub use error::SimError;
pub use ledger::{FastLedger, Ledger};
pub use report::{PaymentRecord, RunOutput, Summary};
pub use scenario::Scenario;
pub use signed::SignedLedger;

/// Which ledger carries the channel states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// `htlc::ops::apply_batch` on plain states, no signatures (fast; the default).
    #[default]
    Fast,
    /// Real signed `htlc::Channel` machines and `htlc::forward::decide` (slow; for checking).
    Signed,
}

/// Runs `scenario` to the end with the chosen ledger.
pub fn run(
    scenario: &Scenario,
    protocol: Protocol,
    options: RunOptions,
    observer: &mut dyn Observer,
) -> Result<RunOutput, SimError> {
    match protocol {
        Protocol::Fast => Engine::<FastLedger>::new(scenario, options)?.run(observer),
        Protocol::Signed => Engine::<SignedLedger>::new(scenario, options)?.run(observer),
    }
}
