//! The `hub demo` command, end to end: the real binary starts anvil with the contracts, a hub
//! and three peers with channels funded on chain, streams at least 30 payments between them,
//! then closes every channel cooperatively on chain. It must exit 0, report conservation held
//! (the channels hold exactly what they held before the payments), a positive fee income, and
//! every channel paid out on chain with nothing left held by the adjudicator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Generous: a debug build on a loaded two-core machine; only a hang reaches it.
const DEADLINE: Duration = Duration::from_secs(600);

/// The demo process, in its own process group (anvil, its child, joins it); the whole group is
/// killed on drop so a failing test leaves nothing behind.
struct Demo {
    child: Child,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[test]
fn demo_streams_payments_and_pays_every_channel_out_on_chain() {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let path = format!(
        "{repo}/node_modules/.bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hub"));
    cmd.args(["demo", "--peers", "3", "--payments", "30"])
        .env("PATH", path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut demo = Demo {
        child: cmd.spawn().expect("the hub binary starts"),
    };
    let (tx, rx) = mpsc::channel();
    let stdout = demo.child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = demo.child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let start = Instant::now();
    let mut out = Vec::new();
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            out.push(line);
        }
        if let Some(status) = demo.child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            drop(demo);
            panic!(
                "the demo did not finish in {DEADLINE:?}; its output:\n{}",
                out.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The rest of stdout (the reader ends at EOF once the process is gone).
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        out.push(line);
    }
    let stderr = err_reader.join().unwrap_or_default();
    let text = out.join("\n");
    assert!(
        status.success(),
        "hub demo failed ({status}); stdout:\n{text}\nstderr:\n{stderr}"
    );

    // The summary line: "N payments in S s (R/s), F failed; hub earned E; money in channels M
    // (conservation: held)".
    let summary = out
        .iter()
        .find(|l| l.contains(" payments in "))
        .unwrap_or_else(|| panic!("no summary line in:\n{text}"));
    let paid: u64 = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no payment count in {summary:?}"));
    assert!(paid >= 30, "{paid} payments, at least 30 asked: {summary}");
    assert!(
        summary.contains("(conservation: held)"),
        "conservation: {summary}"
    );
    let earned = summary
        .split("hub earned ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or_else(|| panic!("no fees in {summary:?}"));
    assert!(
        earned.ends_with(" ETH") && earned != "0.000000 ETH",
        "the hub earned fees on {paid} payments: {earned:?}"
    );
    assert!(
        text.contains("every channel paid out on chain"),
        "payouts: {text}"
    );
    for i in 0..3 {
        let line = out
            .iter()
            .find(|l| l.starts_with(&format!("peer {i}: final state pays")))
            .unwrap_or_else(|| panic!("no payout line for peer {i} in:\n{text}"));
        assert!(
            line.ends_with("still held on chain: 0"),
            "peer {i}'s channel fully paid out: {line}"
        );
    }
    assert!(
        out.iter()
            .any(|l| l.starts_with("hub API   http://127.0.0.1:")),
        "the hub's API listens on loopback: {text}"
    );
}
