//! The committed artifacts are exactly what the pinned solc makes of the sources today.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn artifacts_match_sources() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/compile.js");
    let out = Command::new("node")
        .arg(script)
        .arg("--check")
        .output()
        .expect("node is installed (scripts/setup.sh needs it for solc and anvil)");
    assert!(
        out.status.success(),
        "{}{}\nrun contracts/scripts/compile.sh and commit contracts/artifacts/",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
