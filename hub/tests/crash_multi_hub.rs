//! SIGKILL of a middle hub while payments cross it (issue 16). A line payer — hub 1 — hub 2 —
//! hub 3 — payee on a real chain (anvil): hubs 1 and 3 are in-process nodes, hub 2 is the real
//! `hub` binary, SIGKILLed at random moments while payments are in flight and restarted on its
//! data directory (hubs 1 and 3 reconnect). Once every payment has ended and no lock remains:
//! each payment ended on every hop or on none (succeeded at the payer ⇔ the payee's invoice is
//! paid), the payer paid exactly amount + fees of the succeeded ones, the payee got exactly their
//! amounts, and each channel holds exactly what was deposited.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use alloy::primitives::B256;
use contracts::Devnet;
use htlc::sig::Keys;
use htlc::{Amount, ChannelId};
use hub::node::Node;
use hub::payments::PaymentStatus;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::{TempDir, chain_node, restart_hub, wait_state};

const ETH: u128 = 1_000_000_000_000_000_000;
const KILLS: usize = 3;
const PAYMENTS: usize = 24;

async fn node(net: &Devnet, i: usize, dir: &Path, hub: bool) -> Node {
    chain_node(net, i, &dir.join(format!("node{i}")), |o| {
        if hub {
            o.collateral = Amount(ETH);
            o.announce = true;
        }
    })
    .await
}

fn write_config(net: &Devnet, dir: &Path) -> PathBuf {
    let key = net.signer(2).unwrap().credential().to_bytes();
    std::fs::write(dir.join("hub2.key"), alloy::primitives::hex::encode(key)).unwrap();
    let cfg = dir.join("hub2.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nkey_file = \"{}\"\ndata_dir = \"{}\"\nannounce = true\n\
             chain_rpc = \"{}\"\nchain_id = {}\nadjudicator = \"{}\"\n\
             [funding]\ncollateral = \"{ETH}\"\nchain_poll_ms = 50\nchain_retry_secs = 1\n",
            dir.join("hub2.key").display(),
            dir.join("hub2-data").display(),
            net.endpoint(),
            net.chain_id(),
            net.deployment().adjudicator
        ),
    )
    .unwrap();
    cfg
}

/// Hubs 1 and 3 (re)connect to hub 2 at `addr`.
async fn reconnect(nodes: [&Node; 2], h2: alloy::primitives::Address, addr: std::net::SocketAddr) {
    for n in nodes {
        let mut ok = false;
        for _ in 0..100 {
            let r = tokio::time::timeout(Duration::from_secs(5), n.connect(addr, Some(h2))).await;
            if matches!(r, Ok(Ok(_))) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "cannot reconnect to hub 2 at {addr}");
    }
}

async fn open(
    from: &Node,
    to: alloy::primitives::Address,
    addr: std::net::SocketAddr,
) -> ChannelId {
    from.connect(addr, Some(to)).await.unwrap();
    let id = from.open_channel(to, Amount(ETH)).await.unwrap();
    from.fund(id).await.unwrap();
    wait_state(from, id, |s| s.state.balances[1] == Amount(ETH)).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_middle_hub_sigkilled_while_payments_cross_it_loses_nothing_for_anyone() {
    let net = Devnet::start().await.unwrap();
    let dir = TempDir::new("crash-multihub");
    let cfg = write_config(&net, &dir.0);
    let mut h2 = restart_hub(&cfg).await;
    let h2_addr = Keys::from_signer(net.signer(2).unwrap()).address();
    let h1 = node(&net, 1, &dir.0, true).await;
    let h3 = node(&net, 3, &dir.0, true).await;
    let h1_at = h1.listen(common::loopback()).unwrap();
    let h3_at = h3.listen(common::loopback()).unwrap();
    let payer = node(&net, 4, &dir.0, false).await;
    let payee = node(&net, 5, &dir.0, false).await;
    let c12 = open(&h1, h2_addr, h2.addr).await;
    let c32 = open(&h3, h2_addr, h2.addr).await;
    let up = open(&payer, h1.address(), h1_at).await;
    let down = open(&payee, h3.address(), h3_at).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !{
        let g = payer.gossip();
        [c12, c32].iter().all(|id| {
            g.get(id)
                .is_some_and(|c| c.policies.iter().all(Option::is_some))
        })
    } {
        assert!(
            Instant::now() < deadline,
            "the payer never learned the line"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Rounds of payments fired together, hub 2 SIGKILLed a few milliseconds later (while they
    // cross it) and restarted.
    let mut fired = Vec::new();
    let mut in_flight_at_kills = 0;
    let per_round = PAYMENTS / KILLS;
    for round in 0..KILLS {
        let mut tasks = Vec::new();
        for j in 0..per_round {
            let k = round * per_round + j;
            // Above the binary's default smallest HTLC (1 gwei).
            let amount = 1_000_000_000 * (1 + k as u128);
            let inv = payee
                .create_invoice(Amount(amount), 3600, h3.address())
                .await
                .unwrap();
            let id = B256::from(alloy::primitives::U256::from(k + 1));
            let p = payer.clone();
            let i2 = inv.clone();
            tasks.push(tokio::spawn(async move { p.pay(&i2, id).await.is_ok() }));
            fired.push((id, inv));
        }
        tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 6)).await;
        in_flight_at_kills += fired
            .iter()
            .filter(|(id, _)| {
                payer.payment(*id).unwrap().map(|r| r.status) == Some(PaymentStatus::Pending)
            })
            .count();
        h2.child.kill().unwrap();
        h2.child.wait().unwrap();
        for t in tasks {
            // A payment that cannot be routed or offered right now simply fails.
            let _ = t.await.unwrap();
        }
        h2 = restart_hub(&cfg).await;
        reconnect([&h1, &h3], h2_addr, h2.addr).await;
    }
    // Only payments the payer recorded count (one refused before an HTLC left moved nothing).
    fired.retain(|(id, _)| payer.payment(*id).unwrap().is_some());

    // Everything ends: no payment pending, no lock on any channel.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending = fired
            .iter()
            .filter(|(id, _)| {
                payer.payment(*id).unwrap().map(|r| r.status) == Some(PaymentStatus::Pending)
            })
            .count();
        let mut locks = 0;
        for (n, id) in [(&payer, up), (&h1, c12), (&h3, c32), (&payee, down)] {
            locks += n.channel(id).await.unwrap().state.locks.len();
        }
        if pending == 0 && locks == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} payments pending, {locks} locks left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every payment ended on every hop or on none; nobody lost money.
    let paid = payee.received().unwrap();
    let (mut sent, mut got, mut ok) = (0u128, 0u128, 0);
    for (id, inv) in &fired {
        let rec = payer.payment(*id).unwrap().unwrap();
        let received = paid.iter().any(|i| i.hashlock == inv.hashlock);
        match rec.status {
            PaymentStatus::Succeeded { .. } => {
                assert!(
                    received,
                    "payment {id} succeeded but the payee was not paid"
                );
                sent += rec.sent.0;
                got += inv.amount.0;
                ok += 1;
            }
            _ => assert!(!received, "payment {id} failed but the payee was paid"),
        }
    }
    let reasons: Vec<_> = fired
        .iter()
        .map(|(id, _)| payer.payment(*id).unwrap().map(|r| (r.status, r.failed_at)))
        .collect();
    assert!(ok > 0, "no payment got through: {reasons:?}");
    eprintln!(
        "{} payments fired, {ok} succeeded, {} failed; {KILLS} kills of hub 2, {in_flight_at_kills} payments pending at the kills (summed)",
        fired.len(),
        fired.len() - ok
    );
    assert!(in_flight_at_kills > 0, "no kill hit a payment in flight");
    let st = payer.channel(up).await.unwrap().state;
    assert_eq!(st.balances, [Amount(ETH - sent), Amount(ETH + sent)]);
    let st = payee.channel(down).await.unwrap().state;
    assert_eq!(st.balances, [Amount(ETH + got), Amount(ETH - got)]);
    // The hubs' channels with hub 2 hold exactly what was deposited, and hub 1 and hub 3 each
    // kept exactly their fees (the rest went through hub 2).
    for (n, id) in [(&h1, c12), (&h3, c32)] {
        let st = n.channel(id).await.unwrap().state;
        assert_eq!(st.balances[0].0 + st.balances[1].0, 2 * ETH);
    }
    let (f1, _) = h1.fees_earned().unwrap();
    let (f3, _) = h3.fees_earned().unwrap();
    let c12_moved = ETH - h1.channel(c12).await.unwrap().state.balances[0].0;
    let c32_moved = h3.channel(c32).await.unwrap().state.balances[0].0 - ETH;
    assert_eq!(sent, c12_moved + f1.0, "hub 1 passed on all but its fee");
    assert_eq!(
        c32_moved,
        got + f3.0,
        "hub 3 got its fee on top of what it paid out"
    );
    drop(h2);
}
