//! Payments through the real `hub` binary survive SIGKILLs of the hub while they are in flight.
//!
//! Three in-process peers (each its own RocksDB) open channels with the hub (no chain: funded at
//! once), give the hub liquidity by a transfer, and then fire payments at each other
//! concurrently (every direction; one in seven deliberately underpays its invoice, so the payee
//! refuses it and the hub must fail it back) while the hub process is SIGKILLed at random moments and
//! restarted on the same data directory; the peers reconnect. Once every payment has ended and
//! no HTLC lock remains, it checks, with exact arithmetic:
//!
//! * every payment ended both ways or neither: succeeded at the payer ⇔ the payee received it
//!   (exactly once, exactly the invoice's amount) ⇔ the hub's forward settled with the same
//!   preimage; failed ⇒ the payee received nothing and the hub's forward (if any) failed back;
//!   every underpaid payment failed with the payee's reason;
//! * each peer's balance is its start minus amount + fee of each payment it made that succeeded,
//!   plus the amount of each one it received that succeeded (failed payments moved nothing);
//! * the hub earned exactly the fees of the succeeded payments, in its balances and in its
//!   forward records;
//! * the hub's latest state of each channel on disk equals the peer's latest co-signed one;
//! * conservation: each channel's total (balances + locks) is what was deposited.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use alloy::primitives::B256;
use htlc::forward::{ForwardPolicy, NextHop};
use htlc::sig::Keys;
use htlc::{Amount, ChannelId, Expiry, FailureReason, Hashlock};
use hub::events::NodeEvent;
use hub::node::{Node, NodeOptions};
use hub::payments::{
    DEFAULT_FINAL_EXPIRY_DELTA, ForwardRecord, HtlcPlan, Invoice, PaymentRecord, PaymentStatus,
};
use hub::store::{Cf, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

mod common;
use common::{HubProc, TempDir, restart_hub, wait_state};

const HUB_KEY: [u8; 32] = [0x42; 32];
const PEERS: usize = 3;
/// Each peer's spendable balance, and the hub's on the other side of its channel.
const DEPOSIT: u128 = 1_000_000_000_000;
/// SIGKILLs of the hub while payments flow.
const KILLS: usize = 6;
/// Payments fired: at least `MIN_PAYMENTS`, and more while kills remain, up to `MAX_PAYMENTS`.
const MIN_PAYMENTS: usize = 45;
const MAX_PAYMENTS: usize = 100;
/// How long everything may take to settle after the last kill before the test calls it stuck.
const SETTLE_DEADLINE: Duration = Duration::from_secs(120);

fn write_config(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("hub.key"), alloy::primitives::hex::encode(HUB_KEY)).unwrap();
    let cfg = dir.join("hub.toml");
    std::fs::write(
        &cfg,
        // Amounts here are a few wei: the test's limits allow them (the defaults would not).
        "listen = \"127.0.0.1:0\"\nkey_file = \"hub.key\"\ndata_dir = \"data\"\n\
         [limits]\nmin_htlc = 1\n[funding]\nmin_peer_deposit = 1\n",
    )
    .unwrap();
    cfg
}

/// SIGKILL the hub (std's `Child::kill` is SIGKILL on Unix) and reap it.
fn sigkill(mut hub: HubProc) {
    hub.child.kill().unwrap();
    hub.child.wait().unwrap();
}

/// (Re)connect every peer whose session with the hub is down, or all of them after a restart
/// (the old session of a killed hub may not have noticed yet).
async fn connect_all(peers: &[Peer], hub: &HubProc, all: bool) {
    let hub_addr = Keys::from_bytes(HUB_KEY).unwrap().address();
    for p in peers {
        if !all && p.node.is_connected(hub_addr).await {
            continue;
        }
        let mut ok = false;
        for _ in 0..50 {
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                p.node.connect(hub.addr, Some(hub_addr)),
            )
            .await;
            if matches!(r, Ok(Ok(_))) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "peer cannot reconnect to the hub at {}", hub.addr);
    }
}

struct Peer {
    node: Node,
    ch: ChannelId,
    _dir: TempDir,
}

/// One payment fired: who pays whom, the invoice, and what the payee was offered (the
/// invoice's amount, or one wei less when `underpaid`).
#[derive(Clone)]
struct Fired {
    id: B256,
    payer: usize,
    payee: usize,
    invoice: Invoice,
    offered: Amount,
    underpaid: bool,
}

/// Payments received by each peer, from its events: (payee, hashlock) → amounts.
type Received = Arc<Mutex<HashMap<(usize, Hashlock), Vec<Amount>>>>;

fn collect_received(
    i: usize,
    mut rx: broadcast::Receiver<NodeEvent>,
    into: Received,
    lagged: Arc<AtomicBool>,
) {
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(NodeEvent::PaymentReceived { hashlock, amount }) => {
                    into.lock()
                        .unwrap()
                        .entry((i, hashlock))
                        .or_default()
                        .push(amount);
                }
                Ok(_) => {}
                // Received payments would be unknown: the test fails (checked at the end).
                Err(broadcast::error::RecvError::Lagged(_)) => lagged.store(true, Ordering::SeqCst),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

async fn pending_payments(peers: &[Peer]) -> usize {
    peers
        .iter()
        .map(|p| {
            p.node
                .payments()
                .unwrap()
                .iter()
                .filter(|r| r.status == PaymentStatus::Pending)
                .count()
        })
        .sum()
}

/// Whether every payment ended and no lock remains in any channel (peers' views).
async fn settled(peers: &[Peer]) -> bool {
    for p in peers {
        if p.node
            .payments()
            .unwrap()
            .iter()
            .any(|r| r.status == PaymentStatus::Pending)
        {
            return false;
        }
        let s = p.node.channel(p.ch).await.unwrap();
        if !s.state.locks.is_empty() {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_sigkilled_while_payments_are_in_flight_loses_nothing() {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = TempDir::new("hub-pay");
    let cfg = write_config(&dir.0);
    let data = dir.0.join("data");
    let hub_addr = Keys::from_bytes(HUB_KEY).unwrap().address();
    let mut hub = restart_hub(&cfg).await;

    // Peers with funded channels; the hub gets its liquidity by a transfer of half.
    let mut peers = Vec::new();
    for i in 0..PEERS {
        let d = TempDir::new("hub-pay-peer");
        let node = Node::start(
            Keys::from_bytes([10 + i as u8; 32]).unwrap(),
            Store::open(&d.0).unwrap(),
            NodeOptions::default(),
        )
        .unwrap();
        node.connect(hub.addr, Some(hub_addr)).await.unwrap();
        let ch = node
            .open_channel(hub_addr, Amount(2 * DEPOSIT))
            .await
            .unwrap();
        node.transfer(ch, Amount(DEPOSIT)).await.unwrap();
        wait_state(&node, ch, |s| {
            s.state.balances == [Amount(DEPOSIT), Amount(DEPOSIT)]
        })
        .await;
        assert!(node.hub_policy(hub_addr).unwrap().is_some());
        peers.push(Peer { node, ch, _dir: d });
    }
    let start: Vec<_> = {
        let mut v = Vec::new();
        for p in &peers {
            v.push(p.node.channel(p.ch).await.unwrap());
        }
        v
    };
    let received: Received = Arc::default();
    let lagged = Arc::new(AtomicBool::new(false));
    for (i, p) in peers.iter().enumerate() {
        collect_received(i, p.node.subscribe(), received.clone(), lagged.clone());
    }
    let peers = Arc::new(peers);

    // The payment stream: payer, payee, amount and the pause before the next one are drawn
    // up front; each payment runs in its own task, so several are in flight at once.
    let plan: Vec<(usize, usize, u128, bool, u64)> = (0..MAX_PAYMENTS)
        .map(|n| {
            let payer = rng.random_range(0..PEERS);
            let payee = (payer + rng.random_range(1..PEERS)) % PEERS;
            (
                payer,
                payee,
                rng.random_range(1_000..=50_000u128),
                n % 7 == 3,
                rng.random_range(4..=24u64),
            )
        })
        .collect();
    let kill_after: Vec<u64> = (0..KILLS).map(|_| rng.random_range(20..=160)).collect();
    println!("kills after {kill_after:?} ms");
    let kills_done = Arc::new(AtomicUsize::new(0));
    let fired: Arc<Mutex<Vec<Fired>>> = Arc::default();
    let stream = {
        let (peers, kills_done, fired) = (peers.clone(), kills_done.clone(), fired.clone());
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for (n, (payer, payee, amount, underpaid, pause)) in plan.into_iter().enumerate() {
                if n >= MIN_PAYMENTS && kills_done.load(Ordering::SeqCst) >= KILLS {
                    break;
                }
                let (peers, fired) = (peers.clone(), fired.clone());
                tasks.push(tokio::spawn(async move {
                    let invoice = peers[payee]
                        .node
                        .create_invoice(Amount(amount), 3600, hub_addr)
                        .await
                        .unwrap();
                    let id = B256::from(invoice.hashlock.0);
                    let offered = Amount(amount - u128::from(underpaid));
                    fired.lock().unwrap().push(Fired {
                        id,
                        payer,
                        payee,
                        invoice: invoice.clone(),
                        offered,
                        underpaid,
                    });
                    // Local: the HTLC and the payment record are stored and queued, whether
                    // the hub is up or not.
                    let payer = &peers[payer].node;
                    if underpaid {
                        // Priced and timed as `pay` would, for one wei less than the invoice:
                        // the hub forwards it, the payee refuses it.
                        let now = payer.now().0;
                        let fee = ForwardPolicy::default().fee(offered).unwrap();
                        let delta = ForwardPolicy::default().expiry_delta;
                        let plan = HtlcPlan {
                            sent: Amount(offered.0 + fee.0),
                            expiry: Expiry(now + DEFAULT_FINAL_EXPIRY_DELTA + delta),
                            next: NextHop {
                                amount: offered,
                                expiry: Expiry(now + DEFAULT_FINAL_EXPIRY_DELTA),
                            },
                        };
                        payer.pay_planned(&invoice, id, plan).await.unwrap();
                    } else {
                        payer.pay(&invoice, id).await.unwrap();
                    }
                }));
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };

    // The killer: SIGKILL the hub at random moments of the stream, restart it on the same data
    // directory, reconnect the peers.
    let mut in_flight_at_kill = Vec::new();
    for ms in &kill_after {
        tokio::time::sleep(Duration::from_millis(*ms)).await;
        sigkill(hub);
        kills_done.fetch_add(1, Ordering::SeqCst);
        // Payments the hub died with (sent, no outcome yet).
        in_flight_at_kill.push(pending_payments(&peers).await);
        hub = restart_hub(&cfg).await;
        connect_all(&peers, &hub, true).await;
    }
    tokio::time::timeout(Duration::from_secs(60), stream)
        .await
        .expect("every payment is sent")
        .unwrap();
    let fired = fired.lock().unwrap().clone();
    println!(
        "{} payments, pending at each kill: {in_flight_at_kill:?}",
        fired.len()
    );
    let mid_stream = in_flight_at_kill.iter().filter(|n| **n > 0).count();
    assert!(
        mid_stream >= KILLS / 2,
        "most kills land while payments are in flight ({in_flight_at_kill:?})"
    );

    // Every payment ends (fulfilled or failed), every lock is gone.
    let deadline = tokio::time::Instant::now() + SETTLE_DEADLINE;
    while !settled(&peers).await {
        if tokio::time::Instant::now() > deadline {
            // Say where each channel is stuck: the peer's view, then the hub's machine on disk.
            let mut report = String::new();
            for (i, p) in peers.iter().enumerate() {
                let s = p.node.channel(p.ch).await.unwrap();
                let pending = p.node.payments().unwrap();
                let pending = pending
                    .iter()
                    .filter(|r| r.status == PaymentStatus::Pending);
                report += &format!(
                    "peer {i}: {} payments pending, version {}, {} locks\n",
                    pending.count(),
                    s.state.version,
                    s.state.locks.len()
                );
            }
            sigkill(hub);
            let store = Store::open(&data).unwrap();
            for (i, p) in peers.iter().enumerate() {
                let rec: hub::node::ChannelRecord =
                    store.get(Cf::Channels, p.ch.0.as_slice()).unwrap().unwrap();
                let sn = &rec.snapshot;
                report += &format!(
                    "hub, channel of peer {i}: version {}, {} locks, proposal in flight {}, \
                     {} ops queued, awaiting leader {}, refusals in a row {}\n",
                    sn.latest().state.version,
                    sn.latest().state.locks.len(),
                    sn.pending().is_some(),
                    sn.queue().len(),
                    sn.await_leader(),
                    sn.rejects_in_row()
                );
            }
            panic!("payments never ended (seed {seed}):\n{report}");
        }
        connect_all(&peers, &hub, false).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Kill the hub and read its view from disk: it must hold each channel's latest co-signed
    // state. The hub may still be waiting for the very last acceptance of a peer when it is
    // killed; then it is restarted, gets it re-sent, and is read again.
    let mut attempts = 0;
    let (hub_states, forwards) = loop {
        attempts += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        sigkill(hub);
        let store = Store::open(&data).unwrap();
        let mut states = Vec::new();
        let mut agree = true;
        for p in peers.iter() {
            let rec: hub::node::ChannelRecord = store
                .get(Cf::Channels, p.ch.0.as_slice())
                .unwrap()
                .expect("the hub knows the channel");
            agree &= *rec.snapshot.latest() == p.node.channel(p.ch).await.unwrap();
            states.push(rec.snapshot.latest().clone());
        }
        let forwards: Vec<ForwardRecord> = store
            .scan::<ForwardRecord>(Cf::Locks, b"fwd/")
            .unwrap()
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        drop(store);
        if agree || attempts >= 10 {
            break (states, forwards);
        }
        hub = restart_hub(&cfg).await;
        connect_all(&peers, &hub, true).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("hub read after {attempts} attempt(s)");

    // The payer's records, by payment id.
    let mut records: HashMap<B256, PaymentRecord> = HashMap::new();
    for p in peers.iter() {
        for r in p.node.payments().unwrap() {
            records.insert(r.id, r);
        }
    }
    assert_eq!(records.len(), fired.len(), "one record per payment");
    assert!(
        !lagged.load(Ordering::SeqCst),
        "every PaymentReceived event was seen"
    );
    let received = received.lock().unwrap().clone();
    let policy = ForwardPolicy::default();

    let mut out = [0u128; PEERS]; // amount + fee of succeeded payments made
    let mut inc = [0u128; PEERS]; // amount of succeeded payments received
    let mut fees = 0u128;
    let (mut ok, mut failed) = (0, 0);
    for f in &fired {
        let r = &records[&f.id];
        assert_eq!(r.channel, peers[f.payer].ch);
        assert_eq!(r.invoice, f.invoice);
        let fee = policy.fee(f.offered).unwrap();
        assert_eq!(r.sent.0, f.offered.0 + fee.0, "payer locked amount + fee");
        let got = received.get(&(f.payee, f.invoice.hashlock));
        let fwd = forwards
            .iter()
            .find(|w| w.in_channel == r.channel && w.in_id == r.htlc);
        // Nobody but the payee ever learns of the payment.
        for other in (0..PEERS).filter(|i| *i != f.payee) {
            assert!(!received.contains_key(&(other, f.invoice.hashlock)));
        }
        match &r.status {
            PaymentStatus::Succeeded { preimage } => {
                assert!(!f.underpaid, "an underpaid invoice was accepted: {}", f.id);
                ok += 1;
                assert_eq!(preimage.hashlock(), f.invoice.hashlock);
                assert_eq!(
                    got.map(Vec::as_slice),
                    Some([f.invoice.amount].as_slice()),
                    "payment {} succeeded at the payer: the payee received it once",
                    f.id
                );
                let fwd = fwd.expect("the hub forwarded a succeeded payment");
                assert_eq!(fwd.preimage, Some(*preimage), "hub settled it");
                assert_eq!(fwd.failure, None);
                assert!(fwd.done, "hub settled both sides");
                assert_eq!(fwd.fee, fee);
                out[f.payer] += r.sent.0;
                inc[f.payee] += f.invoice.amount.0;
                fees += fee.0;
            }
            PaymentStatus::Failed { .. } | PaymentStatus::Expired => {
                failed += 1;
                if f.underpaid {
                    assert_eq!(
                        r.status,
                        PaymentStatus::Failed {
                            reason: FailureReason::IncorrectPaymentDetails
                        },
                        "the payee's refusal reached the payer"
                    );
                    assert!(fwd.is_some(), "the hub forwarded the underpaid HTLC");
                }
                assert_eq!(
                    got, None,
                    "payment {} failed at the payer ({:?}): the payee received nothing",
                    f.id, r.status
                );
                if let Some(fwd) = fwd {
                    assert_eq!(fwd.preimage, None, "hub never learned the preimage");
                    assert!(fwd.failure.is_some() && fwd.done, "hub failed it back");
                }
            }
            PaymentStatus::Pending => unreachable!("settled"),
        }
    }
    // No forward of the hub is unfinished or belongs to no payment.
    for w in &forwards {
        assert!(w.done, "forward left half done: {w:?}");
        assert!(
            records
                .values()
                .any(|r| r.channel == w.in_channel && r.htlc == w.in_id),
            "forward of no payment: {w:?}"
        );
    }
    let received_total: usize = received.values().map(Vec::len).sum();
    assert_eq!(received_total, ok, "nothing received outside the payments");
    println!("{ok} succeeded, {failed} failed, fees {fees}");

    // Exact balances, agreement, conservation.
    let mut hub_gain = 0i128;
    for (i, p) in peers.iter().enumerate() {
        let ours = p.node.channel(p.ch).await.unwrap();
        assert_eq!(
            ours, hub_states[i],
            "hub and peer {i} agree on the latest state"
        );
        let s = &ours.state;
        assert!(s.locks.is_empty() && s.guarantees.is_empty() && !s.is_final);
        let peer_bal = DEPOSIT - out[i] + inc[i];
        let hub_bal = DEPOSIT + out[i] - inc[i];
        assert_eq!(
            s.balances,
            [Amount(peer_bal), Amount(hub_bal)],
            "peer {i}: start - (amount + fee) of its payments + amount of those it received"
        );
        assert_eq!(s.total().unwrap(), start[i].state.total().unwrap());
        assert_eq!(s.total().unwrap(), Amount(2 * DEPOSIT), "conservation");
        hub_gain += hub_bal as i128 - DEPOSIT as i128;
    }
    assert_eq!(hub_gain, fees as i128, "the hub earned exactly the fees");
    let recorded: u128 = forwards
        .iter()
        .filter(|w| w.done && w.preimage.is_some())
        .map(|w| w.fee.0)
        .sum();
    assert_eq!(
        recorded, fees,
        "the hub's forward records count the same fees"
    );
    assert!(ok > 0, "some payments succeeded");
    assert!(
        fired.iter().any(|f| f.underpaid),
        "some payments were refused"
    );

    for p in peers.iter() {
        p.node.shutdown();
    }
}
