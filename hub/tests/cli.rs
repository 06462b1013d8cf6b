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

/// Issue 18: `hub deploy` puts the contracts on a chain and prints configuration lines that a
/// node can use as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_prints_working_addresses_and_config_lines() {
    let net = contracts::Devnet::start().await.unwrap();
    let dir = TempDir::new("deploy");
    let signer = net.signer(3).unwrap();
    let key = dir.0.join("deployer.key");
    std::fs::write(
        &key,
        alloy::primitives::hex::encode(signer.credential().to_bytes()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["deploy", "--rpc", net.endpoint().as_str(), "--key"])
        .arg(&key)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    let registry: alloy::primitives::Address = field("registry").parse().unwrap();
    let adjudicator: alloy::primitives::Address = field("adjudicator ").parse().unwrap();
    // The adjudicator answers at the printed address and reads the printed registry.
    let client =
        contracts::ChainClient::connect_adjudicator(net.endpoint(), signer.clone(), adjudicator)
            .await
            .unwrap();
    assert_eq!(client.deployment().registry, registry);
    // The printed lines are a valid configuration with a key file added.
    let snippet: String = text
        .lines()
        .skip_while(|l| !l.starts_with('#'))
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n");
    let config = hub::config::Config::parse(&format!("key_file = \"k\"\n{snippet}")).unwrap();
    assert_eq!(config.adjudicator, Some(adjudicator));
    assert_eq!(config.chain_id, net.chain_id());
}

#[test]
fn only_client_commands_take_the_api_options() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_hub"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(!help(&["serve", "--help"]).contains("--api"));
    assert!(help(&["close", "--help"]).contains("--force"));
    assert!(!help(&["deploy", "--help"]).contains("--api"));
    for cmd in [
        "info", "chain", "channels", "pay", "open", "close", "history",
    ] {
        let h = help(&[cmd, "--help"]);
        assert!(
            h.contains("--api ") && h.contains("--api-token-file"),
            "{cmd}: {h}"
        );
    }
}

/// `hub watchtower` runs a tower from a node's configuration, and `hub chain` shows what a
/// node has to do on chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watchtower_runs_from_its_config_and_hub_chain_reads_it() {
    use std::io::{BufRead, BufReader};
    let net = contracts::Devnet::start().await.unwrap();
    let dir = TempDir::new("cli-tower");
    let key = net.signer(4).unwrap().credential().to_bytes();
    std::fs::write(dir.0.join("tower.key"), alloy::primitives::hex::encode(key)).unwrap();
    let api = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = dir.0.join("tower.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nkey_file = \"{}\"\ndata_dir = \"{}\"\napi = \"{api}\"\n\
             chain_rpc = \"{}\"\nchain_id = {}\nadjudicator = \"{}\"\n",
            dir.0.join("tower.key").display(),
            dir.0.join("data").display(),
            net.endpoint(),
            net.chain_id(),
            net.deployment().adjudicator
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["watchtower", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on"), "{line}");
    let out = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(["chain", "--api", &api.to_string(), "--api-token-file"])
        .arg(dir.0.join("data").join("api.token"))
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("confirmations  0"), "{text}");
    assert!(text.contains("nothing to send on chain"), "{text}");
}
