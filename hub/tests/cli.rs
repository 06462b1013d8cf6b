//! The `hub` binary as an operator meets it: errors are one clear line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

mod common;
use common::TempDir;

#[test]
fn a_bad_config_is_one_line_naming_the_field() {
    let dir = TempDir::new("cli");
    let path = dir.0.join("bad.toml");
    std::fs::write(&path, "key_file = \"k\"\n[policy]\nfee_ppm = 2000000\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("error: loading "), "{err}");
    assert!(lines[0].contains("policy.fee_ppm"), "{err}");
    assert_eq!(err.matches("fee_ppm").count(), 1, "said once: {err}");
    assert!(!err.contains("backtrace"), "{err}");
}

#[test]
fn a_bad_id_says_the_length_expected() {
    let out = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["close", "0x1234"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("64 hex digits"), "{err}");
}
