//! Batching: HTLC operations queued on a channel while a proposal of it is pending ride
//! together in the next signed update. Made deterministic by taking the hub down: a payer makes
//! N payments while its hub cannot answer, so the first HTLC's proposal waits in the durable
//! outbox and the other N − 1 wait in the channel's queue; once the hub is back, the N adds are
//! committed in exactly two co-signed states (the first alone, the rest together). The payee
//! holds the HTLCs until it is restarted revealing, so nothing else touches the payer's channel
//! meanwhile; then all N payments succeed with exact balances and fees.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use alloy::primitives::B256;
use htlc::forward::ForwardPolicy;
use htlc::sig::Keys;
use htlc::{Amount, ChannelId};
use hub::events::NodeEvent;
use hub::node::{Node, NodeOptions};
use hub::payments::PaymentStatus;
use hub::store::Store;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::{TempDir, loopback, reopen, wait_state};

const DEPOSIT: u128 = 1_000_000_000_000;
const N: usize = 20;
const POLICY: ForwardPolicy = ForwardPolicy {
    base_fee: Amount(1_000),
    fee_ppm: 100,
    expiry_delta: 3600,
    min_htlc: Amount(1_000),
    max_htlc: Amount(u128::MAX),
    max_expiry_horizon: htlc::forward::DEFAULT_MAX_EXPIRY_HORIZON_SECS,
    enabled: true,
};

fn fee(amount: u128) -> u128 {
    POLICY.base_fee.0 + amount * u128::from(POLICY.fee_ppm) / 1_000_000
}

const HUB_KEY: [u8; 32] = [0x01; 32];
const PAYER_KEY: [u8; 32] = [0x02; 32];
const PAYEE_KEY: [u8; 32] = [0x03; 32];

fn start(key: [u8; 32], store: Store, reveal: bool, policy: ForwardPolicy) -> Node {
    Node::start(
        Keys::from_bytes(key).unwrap(),
        store,
        NodeOptions {
            reveal_preimages: reveal,
            policy,
            ..NodeOptions::default()
        },
    )
    .unwrap()
}

fn start_hub(dir: &Path, store: Option<Store>) -> Node {
    start(
        HUB_KEY,
        store.unwrap_or_else(|| Store::open(dir).unwrap()),
        true,
        POLICY,
    )
}

/// Connect `peer` to the hub at `addr`, open a channel of twice the deposit and give the hub
/// half (as the local network does), and wait until both sides have it and the policy.
async fn open(peer: &Node, hub: &Node, addr: std::net::SocketAddr) -> ChannelId {
    peer.connect(addr, Some(hub.address())).await.unwrap();
    let id = peer
        .open_channel(hub.address(), Amount(2 * DEPOSIT))
        .await
        .unwrap();
    peer.transfer(id, Amount(DEPOSIT)).await.unwrap();
    for n in [peer, hub] {
        wait_state(n, id, |s| s.state.version == 1).await;
    }
    assert!(peer.hub_policy(hub.address()).unwrap().is_some());
    id
}

async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htlcs_queued_behind_a_pending_proposal_ride_in_one_update() {
    let (dh, da, db) = (
        TempDir::new("batch-hub"),
        TempDir::new("batch-payer"),
        TempDir::new("batch-payee"),
    );
    let hub = start_hub(&dh.0, None);
    let addr = hub.listen(loopback()).unwrap();
    let payer = start(PAYER_KEY, Store::open(&da.0).unwrap(), true, POLICY);
    // The payee holds every HTLC for now.
    let payee = start(PAYEE_KEY, Store::open(&db.0).unwrap(), false, POLICY);
    let cha = open(&payer, &hub, addr).await;
    let chb = open(&payee, &hub, addr).await;
    let v0 = payer.channel(cha).await.unwrap().state.version;
    assert_eq!(v0, 1);

    let amounts: Vec<u128> = (0..N as u128).map(|k| 1_000_000 + 1_000 * k).collect();
    let mut invoices = Vec::new();
    for a in &amounts {
        invoices.push(
            payee
                .create_invoice(Amount(*a), 3600, hub.address())
                .await
                .unwrap(),
        );
    }

    // The hub goes away; the peers notice.
    let hub_address = hub.address();
    hub.shutdown();
    drop(hub);
    until("the sessions to drop", async || {
        !payer.is_connected(hub_address).await && !payee.is_connected(hub_address).await
    })
    .await;

    // N payments while the hub cannot answer: each is accepted locally (durably queued).
    let ids: Vec<B256> = (0..N).map(|k| B256::with_last_byte(k as u8 + 1)).collect();
    for (inv, id) in invoices.iter().zip(&ids) {
        let rec = payer.pay(inv, *id).await.unwrap();
        assert_eq!(rec.status, PaymentStatus::Pending);
        assert_eq!(rec.fee(), Amount(fee(inv.amount.0)));
    }
    let st = payer.channel(cha).await.unwrap().state;
    assert_eq!(
        (st.version, st.locks.len()),
        (v0, 0),
        "nothing is co-signed without the hub"
    );

    // The hub comes back on the same database; the peers reconnect and the outboxes flow.
    let hub = start_hub(&dh.0, Some(reopen(&dh.0).await));
    let addr = hub.listen(loopback()).unwrap();
    let mut ev = payer.subscribe();
    payee.connect(addr, Some(hub.address())).await.unwrap();
    payer.connect(addr, Some(hub.address())).await.unwrap();

    // All N adds are committed on the payer's channel: in exactly two states, the first
    // proposal (made before the others were queued) and one carrying the other N − 1.
    wait_state(&payer, cha, |s| s.state.locks.len() == N).await;
    let st = payer.channel(cha).await.unwrap();
    assert_eq!(
        st.state.version,
        v0 + 2,
        "{N} HTLC adds in two signed updates, not {N}"
    );
    until("the hub to hold the same state", async || {
        hub.channel(cha).await.as_ref() == Some(&st)
    })
    .await;
    // Events are told once the state is on disk, which may be a moment after it is visible.
    let mut versions = Vec::new();
    while versions.last() != Some(&(v0 + 2)) {
        let e = tokio::time::timeout(Duration::from_secs(10), ev.recv())
            .await
            .expect("the payer tells every co-signed state")
            .unwrap();
        if let NodeEvent::Committed {
            channel_id,
            version,
        } = e
            && channel_id == cha
        {
            versions.push(version);
        }
    }
    assert_eq!(
        versions,
        vec![v0 + 1, v0 + 2],
        "co-signed states of the payer"
    );
    let sent: u128 = amounts.iter().map(|a| a + fee(*a)).sum();
    assert_eq!(
        st.state.balances,
        [Amount(DEPOSIT - sent), Amount(DEPOSIT)],
        "locked, not yet paid"
    );
    // The hub forwards all N; the payee holds them.
    wait_state(&payee, chb, |s| s.state.locks.len() == N).await;
    for id in &ids {
        assert_eq!(
            payer.payment(*id).unwrap().unwrap().status,
            PaymentStatus::Pending
        );
    }

    // The payee restarts, revealing: every payment succeeds.
    payee.shutdown();
    drop(payee);
    let payee = start(PAYEE_KEY, reopen(&db.0).await, true, POLICY);
    payee.connect(addr, Some(hub.address())).await.unwrap();
    until("every payment to succeed", async || {
        ids.iter().all(|id| {
            matches!(
                payer.payment(*id).unwrap().unwrap().status,
                PaymentStatus::Succeeded { .. }
            )
        })
    })
    .await;
    for (id, inv) in ids.iter().zip(&invoices) {
        let PaymentStatus::Succeeded { preimage } = payer.payment(*id).unwrap().unwrap().status
        else {
            unreachable!()
        };
        assert_eq!(preimage.hashlock(), inv.hashlock);
    }

    // Settled everywhere, with exact balances and fees.
    let received: u128 = amounts.iter().sum();
    let fees: u128 = amounts.iter().map(|a| fee(*a)).sum();
    for (n, id) in [(&payer, cha), (&hub, cha), (&payee, chb), (&hub, chb)] {
        wait_state(n, id, |s| s.state.locks.is_empty()).await;
    }
    until("both sides to agree", async || {
        hub.channel(cha).await == payer.channel(cha).await
            && hub.channel(chb).await == payee.channel(chb).await
    })
    .await;
    let a = payer.channel(cha).await.unwrap().state;
    let b = payee.channel(chb).await.unwrap().state;
    assert_eq!(a.balances, [Amount(DEPOSIT - sent), Amount(DEPOSIT + sent)]);
    assert_eq!(
        b.balances,
        [Amount(DEPOSIT + received), Amount(DEPOSIT - received)]
    );
    assert_eq!(hub.fees_earned().unwrap(), (Amount(fees), N));
    assert!(
        a.version <= v0 + 2 + N as u64,
        "at most one more state per fulfil"
    );
    for n in [&hub, &payer, &payee] {
        n.shutdown();
    }
}
