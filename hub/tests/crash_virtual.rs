//! The hub crashed between the guarantee updates of a virtual channel's open and of its close
//! (issue 15, ADR 0026). Alice and bob (in-process nodes) have funded ledgers with the hub (the
//! real `hub` binary) on a real chain (anvil). Each round alice opens a virtual channel with bob
//! while the hub is armed to abort (`VHUB_CRASH_AT`, as abrupt as SIGKILL) the n-th time it
//! reaches one of its crash points — before a step, before its records are written, after they
//! are written but before its frames leave, after they left — and is restarted on its data
//! directory when it dies; then alice pays bob inside it and bob closes it, the hub armed the
//! same way while the two releases go through. After each crash the legs agree: both ledgers
//! lock the channel's guarantee or neither does, the parties see the same phase, and the close
//! releases both legs by the one final state, to the wei; at the end the hub's own records, read
//! from its database, equal the peers'.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use contracts::Devnet;
use htlc::sig::Keys;
use htlc::{Amount, ChannelId};
use hub::node::Node;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::{HubProc, TempDir, chain_node, hub_record, restart_hub, wait_state};

const ETH: u128 = 1_000_000_000_000_000_000;
/// Where the hub aborts (`VHUB_CRASH_AT`, as abrupt as SIGKILL): before the machine's step,
/// before its records are written, after they are written but before the frames go out, after.
const POINTS: [&str; 4] = [
    "before_process",
    "before_commit",
    "after_commit",
    "after_send",
];
/// The how-manieth time the point is reached after the hub's restart.
const DEPTHS: [u32; 3] = [2, 3, 5];
const FEE_BASE: u128 = 1_000_000_000;
const FEE_PPM: u128 = 100;

fn write_config(net: &Devnet, dir: &Path) -> PathBuf {
    let key = net.signer(1).unwrap().credential().to_bytes();
    std::fs::write(dir.join("hub.key"), alloy::primitives::hex::encode(key)).unwrap();
    let cfg = dir.join("hub.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nkey_file = \"{}\"\ndata_dir = \"{}\"\n\
             chain_rpc = \"{}\"\nchain_id = {}\nadjudicator = \"{}\"\n\
             [funding]\ncollateral = \"{ETH}\"\nchain_poll_ms = 50\nchain_retry_secs = 1\n\
             [virtual]\nopen_fee_base = \"{FEE_BASE}\"\nopen_fee_ppm = {FEE_PPM}\n",
            dir.join("hub.key").display(),
            dir.join("hub-data").display(),
            net.endpoint(),
            net.chain_id(),
            net.deployment().adjudicator
        ),
    )
    .unwrap();
    cfg
}

/// Alice and bob (re)connect to the hub at `addr`; false if either cannot.
async fn try_reconnect(
    nodes: [&Node; 2],
    hub: alloy::primitives::Address,
    addr: std::net::SocketAddr,
) -> bool {
    for n in nodes {
        let mut ok = false;
        for _ in 0..40 {
            let r = tokio::time::timeout(Duration::from_secs(2), n.connect(addr, Some(hub))).await;
            if matches!(r, Ok(Ok(_))) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !ok {
            return false;
        }
    }
    true
}

/// The phase `n` records for virtual channel `v` (`None`: no record).
fn phase(n: &Node, v: ChannelId) -> Option<String> {
    n.virtual_info()
        .into_iter()
        .find(|i| i.channel == v)
        .map(|i| i.phase)
}

/// Whether `n`'s latest co-signed state of `ledger` locks a guarantee for `v`.
async fn locks(n: &Node, ledger: ChannelId, v: ChannelId) -> bool {
    let s = n.channel(ledger).await.unwrap();
    s.state.guarantees.iter().any(|g| g.virtual_channel == v)
}

/// The hub process, restarted (unarmed) whenever it is found gone.
struct Hub {
    proc: HubProc,
    cfg: PathBuf,
    address: alloy::primitives::Address,
    /// Crashes while a virtual channel's open or close was under way.
    crashes: u32,
}

impl Hub {
    /// Restart the hub armed with crash point `spec` and reconnect the parties (an armed hub
    /// that dies before they are back is restarted unarmed, and that crash is not counted).
    async fn arm(&mut self, spec: &str, parties: [&Node; 2]) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        let cfg = self.cfg.clone();
        let spec = spec.to_string();
        self.proc = tokio::task::spawn_blocking(move || common::start_hub(&cfg, Some(&spec)))
            .await
            .unwrap();
        if !try_reconnect(parties, self.address, self.proc.addr).await || self.proc.exited() {
            self.restart(parties).await;
        }
    }

    /// Restart the hub unarmed and reconnect the parties.
    async fn restart(&mut self, parties: [&Node; 2]) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        self.proc = restart_hub(&self.cfg).await;
        assert!(
            try_reconnect(parties, self.address, self.proc.addr).await,
            "cannot reconnect to the hub at {}",
            self.proc.addr
        );
    }

    /// If the hub crashed, count it and restart it unarmed.
    async fn tend(&mut self, parties: [&Node; 2]) {
        if self.proc.exited() {
            self.crashes += 1;
            self.restart(parties).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_crashed_between_guarantee_updates_leaves_the_legs_agreeing() {
    let net = Devnet::start().await.unwrap();
    let dir = TempDir::new("crash-virtual");
    let cfg = write_config(&net, &dir.0);
    let h = Keys::from_signer(net.signer(1).unwrap()).address();
    let mut hub = Hub {
        proc: restart_hub(&cfg).await,
        cfg,
        address: h,
        crashes: 0,
    };
    let alice = chain_node(&net, 2, &dir.0.join("alice"), |_| {}).await;
    let bob = chain_node(&net, 3, &dir.0.join("bob"), |_| {}).await;
    let mut ledgers = Vec::new();
    for n in [&alice, &bob] {
        n.connect(hub.proc.addr, Some(h)).await.unwrap();
        let id = n.open_channel(h, Amount(ETH)).await.unwrap();
        n.fund(id).await.unwrap();
        wait_state(n, id, |s| s.state.balances[1] == Amount(ETH)).await;
        ledgers.push(id);
    }
    let (la, lb) = (ledgers[0], ledgers[1]);
    let parties = [&alice, &bob];

    // What alice and bob must end with on their ledgers: [peer's, hub's].
    let (mut on_a, mut on_b) = ([ETH, ETH], [ETH, ETH]);
    let mut rounds = Vec::new();
    for point in POINTS {
        for n in DEPTHS {
            rounds.push(format!("{point}:{n}"));
        }
    }
    let mut closed = 0;
    for (round, spec) in rounds.iter().enumerate() {
        let deposit = ETH / 10 + round as u128;
        let paid = ETH / 100 + round as u128;
        let fee = FEE_BASE + deposit * FEE_PPM / 1_000_000;
        let known: Vec<ChannelId> = alice.virtual_info().iter().map(|i| i.channel).collect();

        // The open, with the hub armed to crash at `spec`.
        hub.arm(spec, parties).await;
        let (a2, b) = (alice.clone(), bob.address());
        let open = tokio::spawn(async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                a2.open_virtual(h, b, Amount(deposit), 3600),
            )
            .await
        });
        // Settled: open on both sides with both legs locked, or failed with neither.
        let deadline = Instant::now() + Duration::from_secs(90);
        let v = loop {
            hub.tend(parties).await;
            let v = alice
                .virtual_info()
                .into_iter()
                .map(|i| i.channel)
                .find(|c| !known.contains(c));
            if open.is_finished() && v.is_none() {
                break None;
            }
            if let Some(v) = v {
                let (pa, pb) = (phase(&alice, v), phase(&bob, v));
                let (ga, gb) = (locks(&alice, la, v).await, locks(&bob, lb, v).await);
                if pa.as_deref() == Some("open") && pb.as_deref() == Some("open") && ga && gb {
                    break Some(v);
                }
                // Failed: bob never accepted it (no record) or failed it too.
                if pa.as_deref() == Some("failed")
                    && matches!(pb.as_deref(), None | Some("failed"))
                    && !ga
                    && !gb
                {
                    break None;
                }
                assert!(
                    Instant::now() < deadline,
                    "{spec}: the open never settled: alice {pa:?} (leg locked {ga}), bob {pb:?} (leg locked {gb})"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let _ = open.await.unwrap();
        let Some(v) = v else {
            // Refused or failed before a leg locked anything: nothing moved, on either ledger.
            let sa = alice.channel(la).await.unwrap().state.balances;
            let sb = bob.channel(lb).await.unwrap().state.balances;
            assert_eq!(
                sa,
                [Amount(on_a[0]), Amount(on_a[1])],
                "{spec}: alice's ledger"
            );
            assert_eq!(
                sb,
                [Amount(on_b[0]), Amount(on_b[1])],
                "{spec}: bob's ledger"
            );
            continue;
        };
        on_a = [on_a[0] - deposit - fee, on_a[1] + fee];
        on_b = [on_b[0], on_b[1] - deposit];

        // A payment inside it, then the close, with the hub armed again.
        hub.restart(parties).await;
        alice.transfer(v, Amount(paid)).await.unwrap();
        wait_state(&bob, v, |s| s.state.balances[1] == Amount(paid)).await;
        hub.arm(spec, parties).await;
        bob.close(v).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            hub.tend(parties).await;
            let (ga, gb) = (locks(&alice, la, v).await, locks(&bob, lb, v).await);
            if !ga && !gb {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{spec}: the close never released both legs (alice's locked {ga}, bob's {gb})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        closed += 1;
        // Both legs released by the one final state [deposit - paid, paid].
        on_a = [on_a[0] + deposit - paid, on_a[1] + paid];
        on_b = [on_b[0] + paid, on_b[1] + deposit - paid];
        let sa = alice.channel(la).await.unwrap().state.balances;
        let sb = bob.channel(lb).await.unwrap().state.balances;
        assert_eq!(
            sa,
            [Amount(on_a[0]), Amount(on_a[1])],
            "{spec}: alice's ledger"
        );
        assert_eq!(
            sb,
            [Amount(on_b[0]), Amount(on_b[1])],
            "{spec}: bob's ledger"
        );
        hub.restart(parties).await;
    }
    eprintln!(
        "{} rounds, {closed} opened and closed, {} hub crashes during an open or a close",
        rounds.len(),
        hub.crashes
    );
    assert!(
        closed >= rounds.len() / 2,
        "most opens succeed after the crash"
    );
    assert!(
        hub.crashes as usize >= rounds.len(),
        "the crash points are reached while the guarantees change"
    );

    // The hub's own records, read from its database once stopped, match the peers' states,
    // and it sees every virtual channel as its parties do.
    let data = dir.0.join("hub-data");
    drop(hub);
    let store = hub::store::Store::open(&data).unwrap();
    let hub_virtuals: Vec<htlc::node::records::VirtualRecord> = store
        .scan::<htlc::node::records::VirtualRecord>(hub::store::Cf::Locks, b"virtual/")
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    drop(store);
    for info in alice.virtual_info() {
        let Some(r) = hub_virtuals.iter().find(|r| r.terms.id() == info.channel) else {
            assert_eq!(info.phase, "failed", "the hub never saw {}", info.channel);
            continue;
        };
        let hub_phase = format!("{:?}", r.phase).to_lowercase();
        assert_eq!(hub_phase, info.phase, "virtual channel {}", info.channel);
    }
    for (n, id) in [(&alice, la), (&bob, lb)] {
        let ours = n.channel(id).await.unwrap();
        let hubs = hub_record(&data, id).unwrap();
        assert_eq!(hubs.snapshot.latest().state, ours.state, "ledger {id}");
        assert!(ours.state.locks.is_empty() && ours.state.guarantees.is_empty());
    }
}
