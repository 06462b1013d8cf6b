//! Test-only helpers shared by the workspace's crates (a dev-dependency only; nothing in a
//! shipped binary may depend on it).
//!
//! It holds one convention: **how property tests pick their seed and their budget**, so that
//! CI is repeatable and a long campaign can hunt further than CI (issue 19).
//!
//! - `VHUB_PROPTEST_SEED` unset: the fixed [`CI_SEED`], the same cases on every run. This is
//!   what `.ci/run` does; a CI failure therefore reproduces on any machine.
//! - `VHUB_PROPTEST_SEED=random`: a fresh seed, printed on stderr before the cases run, so a
//!   failure in a campaign can be replayed with `VHUB_PROPTEST_SEED=<that number>`.
//! - `VHUB_PROPTEST_SEED=<u64>`: that seed.
//! - `PROPTEST_CASES=<n>`: the number of cases instead of the test's own CI budget.
//!
//! Failures are still persisted to the `*.proptest-regressions` file beside the test source
//! (proptest's default), and those recorded cases run first on every run, whatever the seed.
//! `scripts/campaign.sh` runs every property test this way for as long as it is asked to.
//!
//! It must never weaken a test: it only chooses seeds and counts; an unreadable variable is a
//! test failure (a panic in the test process), never a silent fallback.

use proptest::test_runner::{Config, FileFailurePersistence, RngSeed};
use std::hash::{BuildHasher, RandomState};

/// The seed every property test runs with in CI (when `VHUB_PROPTEST_SEED` is unset).
pub const CI_SEED: u64 = 0x5eed_0019;

/// Environment variable choosing the seed (see the crate doc).
pub const SEED_VAR: &str = "VHUB_PROPTEST_SEED";

/// Environment variable choosing the number of cases (proptest's own name for it).
pub const CASES_VAR: &str = "PROPTEST_CASES";

/// The seed chosen by the environment, or why it cannot be read.
pub fn seed_from_env() -> Result<u64, String> {
    match std::env::var(SEED_VAR).as_deref() {
        Err(_) => Ok(CI_SEED),
        Ok("random") => Ok(RandomState::new().hash_one(std::process::id())),
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{SEED_VAR} must be unset, \"random\" or a u64, not {v:?}")),
    }
}

/// The number of cases chosen by the environment, or `ci_cases`.
pub fn cases_from_env(ci_cases: u32) -> Result<u32, String> {
    match std::env::var(CASES_VAR) {
        Err(_) => Ok(ci_cases),
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{CASES_VAR} must be a u32, not {v:?}")),
    }
}

/// The proptest configuration of a property test whose CI budget is `ci_cases` cases.
///
/// Prints the seed and the cases on stderr (shown by the test runner when the test fails, and
/// always by `scripts/campaign.sh`).
#[allow(clippy::panic)] // A test-only helper: a bad variable must fail the test loudly.
pub fn config(ci_cases: u32) -> Config {
    let (seed, cases) = match (seed_from_env(), cases_from_env(ci_cases)) {
        (Ok(s), Ok(c)) => (s, c),
        (Err(e), _) | (_, Err(e)) => panic!("{e}"),
    };
    eprintln!("{SEED_VAR}={seed} {CASES_VAR}={cases}");
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        // `<test file>.proptest-regressions` beside the test's source file.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ci_budget_and_seed_are_used_when_nothing_is_set() {
        // The test runner does not set these; a campaign shell might, so only check then.
        if std::env::var(SEED_VAR).is_err() && std::env::var(CASES_VAR).is_err() {
            let c = config(17);
            assert_eq!(c.cases, 17);
            assert_eq!(c.rng_seed, RngSeed::Fixed(CI_SEED));
        }
    }
}
