//! The operator API over HTTP, against a local network (a hub and peers in one process, real
//! QUIC and RocksDB, no chain), each node serving its own API on loopback:
//!
//! * after a series of payments (and one the hub fails), every endpoint reports exactly what
//!   the payments imply: `/info` (counts, fees earned = the policy's fee sum), `/channels`
//!   (balances and versions), `/balance`, `/htlcs` (empty once settled), `/payments` and
//!   `/payments/{id}`, and `/metrics` (payments attempted / succeeded / failed by reason, the
//!   latency histogram's count, liquidity and pending HTLCs per channel, store writes);
//! * a payment its payee holds (never reveals) shows up, on both sides of the hub, in
//!   `/htlcs`, `/channels`, `/balance`, `/payments` and `/metrics`;
//! * an invoice made through one node's API is paid through another's, once per invoice;
//! * bad requests (malformed JSON, an amount beyond `u128`, an unknown channel, a corrupt
//!   invoice, a payment beyond the balance, ...) get a 4xx with a JSON error and change
//!   nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use alloy::primitives::{Address, B256};
use htlc::forward::{ForwardPolicy, NextHop};
use htlc::sig::Keys;
use htlc::{Amount, ChannelId, Expiry, FailureReason};
use hub::api::{
    Balance, ChannelInfo, ChannelStatus, HtlcInfo, NodeInfo, PaymentInfo, ReceivedInfo, Wei,
};
use hub::localnet::{LocalNet, LocalNetOptions, PAYMENT_TIMEOUT, PayOutcome, wait_payment};
use hub::node::{Node, NodeOptions};
use hub::payments::{HtlcPlan, Invoice};
use hub::store::Store;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod common;
use common::{TempDir, loopback};

/// Each peer's balance in its channel, and the hub's on the other side.
const DEPOSIT: u128 = 1_000_000_000_000;

/// A bad request: the node's API, method path, body, content type, expected status, and a
/// word the error must contain.
type BadCase<'a> = (
    &'a Api,
    &'static str,
    String,
    Option<&'static str>,
    StatusCode,
    &'static str,
);
const POLICY: ForwardPolicy = ForwardPolicy {
    base_fee: Amount(1_000),
    fee_ppm: 100,
    expiry_delta: 3600,
    min_htlc: Amount(1_000),
    max_htlc: Amount(u128::MAX),
    max_expiry_horizon: htlc::forward::DEFAULT_MAX_EXPIRY_HORIZON_SECS,
    enabled: true,
};

/// The hub's fee for forwarding `amount`, computed here independently of the code under test.
fn fee(amount: u128) -> u128 {
    POLICY.base_fee.0 + amount * u128::from(POLICY.fee_ppm) / 1_000_000
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn start_net(peers: usize) -> LocalNet {
    let dir = std::env::temp_dir().join(format!(
        "vhub-api-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    LocalNet::start(LocalNetOptions {
        peers,
        deposit: Amount(DEPOSIT),
        chain: false,
        policy: POLICY,
        dir,
        api: Some(loopback()),
        connections: None,
        hub_runtime: None,
        virtual_policy: None,
    })
    .await
    .unwrap()
}

/// A client of one node's API.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(addr: SocketAddr, token: &str) -> Api {
        assert!(addr.ip().is_loopback(), "APIs listen on loopback only");
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        Api {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .default_headers(headers)
                .build()
                .unwrap(),
        }
    }

    async fn get_raw(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> T {
        let (status, text) = self.get_raw(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    /// POST `body` as it is (it may be malformed), as JSON unless `content_type` is `None`.
    async fn post_raw(
        &self,
        path: &str,
        body: &str,
        content_type: Option<&str>,
    ) -> (StatusCode, String) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .body(body.to_string());
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        let r = req.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: Value) -> T {
        let (status, text) = self
            .post_raw(path, &body.to_string(), Some("application/json"))
            .await;
        assert_eq!(status, StatusCode::OK, "POST {path} {body}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {path}: {e}: {text}"))
    }

    /// The Prometheus exposition as `series → value` (series with their labels, as printed).
    async fn metrics(&self) -> BTreeMap<String, f64> {
        let r = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let ct = r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            ct.starts_with("text/plain; version=0.0.4"),
            "Prometheus text format, got {ct:?}"
        );
        let text = r.text().await.unwrap();
        let mut out = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad metrics line {line:?}"));
            let v: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad metrics value in {line:?}"));
            assert!(
                out.insert(series.to_string(), v).is_none(),
                "{series} twice"
            );
        }
        out
    }
}

/// The value of `series`, which must be present.
fn metric(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no series {series} in {:#?}", m.keys().collect::<Vec<_>>()))
}

/// The sum of every series of the metric family `name` (0 if it has none).
fn family_sum(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

fn balance_series(ch: ChannelId, side: &str) -> String {
    format!("vhub_channel_balance_ether{{channel=\"{ch}\",side=\"{side}\"}}")
}

/// Wei in ether, as the gauges show it.
fn ether(wei: u128) -> f64 {
    hub::metrics::ether(Amount(wei))
}

fn pending_series(ch: ChannelId) -> String {
    format!("vhub_channel_pending_htlcs{{channel=\"{ch}\"}}")
}

/// Peer `from` pays an invoice of peer `to` as payment `id` and waits for the outcome.
async fn pay(
    net: &LocalNet,
    from: usize,
    to: usize,
    amount: u128,
    id: B256,
) -> (Invoice, PayOutcome) {
    let inv = net.peers[to]
        .create_invoice(Amount(amount), 3600, net.hub.address())
        .await
        .unwrap();
    let payer = &net.peers[from];
    payer.pay(&inv, id).await.unwrap();
    let out = wait_payment(payer, id, PAYMENT_TIMEOUT).await.unwrap();
    (inv, out)
}

/// Wait until the hub and each peer agree on the peer's channel (same co-signed state), at
/// version `versions[i]`, with no lock left.
async fn wait_settled(net: &LocalNet, versions: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut done = true;
        for (i, (peer, id)) in net.peers.iter().zip(&net.channels).enumerate() {
            let (h, p) = (net.hub.channel(*id).await, peer.channel(*id).await);
            done &= h.is_some()
                && h == p
                && p.as_ref()
                    .is_some_and(|s| s.state.version == versions[i] && s.state.locks.is_empty());
        }
        if done {
            return;
        }
        if Instant::now() > deadline {
            let mut states = Vec::new();
            for id in &net.channels {
                states.push(net.hub.channel(*id).await.map(|s| s.state));
            }
            panic!("channels did not settle at versions {versions:?}: {states:#?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The API's view of a settled channel: `ours` is the node's balance, `theirs` the other side's.
fn settled_channel(id: ChannelId, peer: Address, version: u64, ours: u128) -> ChannelInfo {
    ChannelInfo {
        id,
        peer,
        version,
        ours: Wei(ours),
        theirs: Wei(2 * DEPOSIT - ours),
        htlcs: vec![],
        funded: true,
        closed: false,
        concluded: false,
        frozen: false,
        status: ChannelStatus::Open,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_reports_exactly_what_the_payments_did() {
    let net = start_net(3).await;
    let hub = Api::new(net.api.unwrap(), net.hub.api_token());
    let mut peers = Vec::new();
    for p in &net.peers {
        peers.push(Api::new(
            p.serve_api(loopback()).await.unwrap(),
            p.api_token(),
        ));
    }
    let hub_addr = net.hub.address();

    // Before any payment: each channel is at version 1 (opened, then the peer's transfer that
    // gives the hub its side), DEPOSIT on each side.
    let mut by_id: Vec<usize> = (0..3).collect();
    by_id.sort_by_key(|i| net.channels[*i]);
    let hub_view = |versions: &[u64; 3], peer_bal: &[u128; 3]| -> Vec<ChannelInfo> {
        by_id
            .iter()
            .map(|&i| {
                settled_channel(
                    net.channels[i],
                    net.peers[i].address(),
                    versions[i],
                    2 * DEPOSIT - peer_bal[i],
                )
            })
            .collect()
    };
    assert_eq!(
        hub.get::<Vec<ChannelInfo>>("/channels").await,
        hub_view(&[1; 3], &[DEPOSIT; 3])
    );

    // Four payments that succeed; each moves two co-signed states on each of its channels
    // (payer: add + fulfill; payee: add + fulfill).
    let plan: [(usize, usize, u128); 4] = [
        (0, 1, 1_000_000),
        (1, 2, 2_500_000),
        (2, 0, 333_333),
        (0, 2, 7_777_777),
    ];
    let mut bal = [DEPOSIT; 3];
    let mut ver = [1u64; 3];
    let mut fees = 0u128;
    let mut made: [Vec<(B256, Invoice, u128)>; 3] = Default::default();
    let mut received = [0u64; 3];
    for (k, &(from, to, amount)) in plan.iter().enumerate() {
        let id = B256::repeat_byte(0x10 + k as u8);
        let (inv, out) = pay(&net, from, to, amount, id).await;
        assert_eq!(
            out,
            PayOutcome::Paid {
                fee: Amount(fee(amount))
            },
            "payment {k}"
        );
        bal[from] -= amount + fee(amount);
        bal[to] += amount;
        ver[from] += 2;
        ver[to] += 2;
        fees += fee(amount);
        received[to] += 1;
        made[from].push((id, inv, fee(amount)));
    }
    // One the hub refuses: peer 1 offers one wei less than the hub's fee. The add and the fail
    // move two states of the payer's channel; the payee's channel is never touched.
    let failed_amount = 4_000_000u128;
    let failed_id = B256::repeat_byte(0x20);
    let failed_inv = net.peers[0]
        .create_invoice(Amount(failed_amount), 3600, hub_addr)
        .await
        .unwrap();
    let now = net.peers[1].now().0;
    let short = fee(failed_amount) - 1;
    net.peers[1]
        .pay_planned(
            &failed_inv,
            failed_id,
            HtlcPlan {
                sent: Amount(failed_amount + short),
                expiry: Expiry(now + 7200 + POLICY.expiry_delta),
                next: NextHop {
                    amount: Amount(failed_amount),
                    expiry: Expiry(now + 7200),
                },
            },
        )
        .await
        .unwrap();
    assert_eq!(
        wait_payment(&net.peers[1], failed_id, PAYMENT_TIMEOUT)
            .await
            .unwrap(),
        PayOutcome::Failed(Some(FailureReason::FeeInsufficient))
    );
    ver[1] += 2;
    wait_settled(&net, &ver).await;

    // /info
    assert_eq!(
        hub.get::<NodeInfo>("/info").await,
        NodeInfo {
            address: hub_addr,
            channels: 3,
            payments: 0,
            fees_earned: Wei(fees),
            forwards: plan.len(),
        }
    );
    let raw: Value = hub.get("/info").await;
    assert_eq!(
        raw["fees_earned"],
        json!(fees.to_string()),
        "amounts are decimal strings"
    );
    for (i, api) in peers.iter().enumerate() {
        let payments = made[i].len() + usize::from(i == 1);
        assert_eq!(
            api.get::<NodeInfo>("/info").await,
            NodeInfo {
                address: net.peers[i].address(),
                channels: 1,
                payments,
                fees_earned: Wei(0),
                forwards: 0,
            },
            "peer {i}"
        );
    }

    // /channels, /balance, /htlcs
    assert_eq!(
        hub.get::<Vec<ChannelInfo>>("/channels").await,
        hub_view(&ver, &bal)
    );
    let hub_side: u128 = bal.iter().map(|b| 2 * DEPOSIT - b).sum();
    assert_eq!(hub_side, 3 * DEPOSIT + fees, "the hub gained its fees");
    assert_eq!(
        hub.get::<Balance>("/balance").await,
        Balance {
            spendable: Wei(hub_side),
            receivable: Wei(bal.iter().sum()),
            offered_in_flight: Wei(0),
            received_in_flight: Wei(0),
            channels: 3,
        }
    );
    assert_eq!(hub.get::<Vec<HtlcInfo>>("/htlcs").await, vec![]);
    for (i, api) in peers.iter().enumerate() {
        assert_eq!(
            api.get::<Vec<ChannelInfo>>("/channels").await,
            vec![settled_channel(net.channels[i], hub_addr, ver[i], bal[i])],
            "peer {i}"
        );
        assert_eq!(
            api.get::<Balance>("/balance").await,
            Balance {
                spendable: Wei(bal[i]),
                receivable: Wei(2 * DEPOSIT - bal[i]),
                offered_in_flight: Wei(0),
                received_in_flight: Wei(0),
                channels: 1,
            },
            "peer {i}"
        );
        assert_eq!(api.get::<Vec<HtlcInfo>>("/htlcs").await, vec![]);
    }

    // /payments and /payments/{id}: each payer's history, in id order, with proof of payment.
    for (i, api) in peers.iter().enumerate() {
        let got: Vec<PaymentInfo> = api.get("/payments").await;
        let mut want: Vec<PaymentInfo> = made[i]
            .iter()
            .zip(&got)
            .map(|((id, inv, fee), g)| {
                let preimage = g.preimage.expect("a paid payment shows its preimage");
                assert_eq!(
                    htlc::Preimage(preimage.0).hashlock(),
                    inv.hashlock,
                    "the preimage opens the invoice's hashlock"
                );
                PaymentInfo {
                    id: *id,
                    payee: inv.payee,
                    hub: hub_addr,
                    amount: Wei(inv.amount.0),
                    fee: Wei(*fee),
                    status: "succeeded".into(),
                    reason: None,
                    preimage: Some(preimage),
                    repeated: false,
                    attempts: 1,
                }
            })
            .collect();
        if i == 1 {
            want.push(PaymentInfo {
                id: failed_id,
                payee: net.peers[0].address(),
                hub: hub_addr,
                amount: Wei(failed_amount),
                fee: Wei(short),
                status: "failed".into(),
                reason: Some("FeeInsufficient".into()),
                preimage: None,
                repeated: false,
                attempts: 1,
            });
        }
        assert_eq!(got, want, "peer {i}'s payments");
        for p in &want {
            assert_eq!(
                api.get::<PaymentInfo>(&format!("/payments/{}", p.id)).await,
                *p
            );
        }
    }
    assert_eq!(hub.get::<Vec<PaymentInfo>>("/payments").await, vec![]);

    // /metrics of the hub: forwards and fees, liquidity and pending HTLCs per channel, every
    // co-signed state counted once, store writes timed.
    let m = hub.metrics().await;
    assert_eq!(metric(&m, "vhub_forwards_settled_total"), plan.len() as f64);
    assert_eq!(metric(&m, "vhub_fees_earned_wei_total"), fees as f64);
    assert_eq!(metric(&m, "vhub_payments_attempted_total"), 0.0);
    assert_eq!(metric(&m, "vhub_payment_latency_seconds_count"), 0.0);
    assert_eq!(
        metric(&m, "vhub_updates_committed_total"),
        ver.iter().sum::<u64>() as f64,
        "versions 1..=v of every channel, each once"
    );
    for (&ch, &theirs) in net.channels.iter().zip(&bal) {
        assert_eq!(
            metric(&m, &balance_series(ch, "ours")),
            ether(2 * DEPOSIT - theirs)
        );
        assert_eq!(metric(&m, &balance_series(ch, "theirs")), ether(theirs));
        assert_eq!(metric(&m, &pending_series(ch)), 0.0);
    }
    let syncs = metric(&m, "vhub_store_syncs_total");
    assert!(syncs > 0.0, "the hub wrote to its store");
    assert_eq!(metric(&m, "vhub_store_write_seconds_count"), syncs);
    assert_eq!(
        metric(&m, "vhub_store_write_seconds_bucket{le=\"+Inf\"}"),
        syncs
    );
    assert!(metric(&m, "vhub_store_write_seconds_sum") > 0.0);
    assert!(metric(&m, "vhub_store_batches_total") >= syncs);
    assert_eq!(
        metric(&m, "vhub_store_unsynced_writes_total"),
        0.0,
        "the hub made no invoice: every write of it was synced"
    );

    // /metrics of the peers: their own payments; the write latency covers synced writes
    // only (a payee's invoice may be written unsynced, ADR 0030).
    for (i, api) in peers.iter().enumerate() {
        let m = api.metrics().await;
        assert_eq!(
            metric(&m, "vhub_store_write_seconds_count"),
            metric(&m, "vhub_store_syncs_total"),
            "peer {i}"
        );
        assert!(
            metric(&m, "vhub_store_batches_total")
                >= metric(&m, "vhub_store_syncs_total")
                    + metric(&m, "vhub_store_unsynced_writes_total"),
            "peer {i}"
        );
        let attempted = made[i].len() + usize::from(i == 1);
        assert_eq!(
            metric(&m, "vhub_payments_attempted_total"),
            attempted as f64,
            "peer {i}"
        );
        assert_eq!(
            metric(&m, "vhub_payments_succeeded_total"),
            made[i].len() as f64,
            "peer {i}"
        );
        if i == 1 {
            assert_eq!(
                metric(&m, "vhub_payments_failed_total{reason=\"FeeInsufficient\"}"),
                1.0
            );
        }
        assert_eq!(
            family_sum(&m, "vhub_payments_failed_total"),
            f64::from(u8::from(i == 1)),
            "peer {i}"
        );
        assert_eq!(
            metric(&m, "vhub_payment_latency_seconds_count"),
            attempted as f64,
            "every payment that ended was timed, peer {i}"
        );
        assert_eq!(
            metric(&m, "vhub_payments_received_total"),
            received[i] as f64,
            "peer {i}"
        );
        assert_eq!(
            metric(&m, "vhub_updates_committed_total"),
            ver[i] as f64,
            "peer {i}"
        );
        let ch = net.channels[i];
        assert_eq!(metric(&m, &balance_series(ch, "ours")), ether(bal[i]));
        assert_eq!(metric(&m, &pending_series(ch)), 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_held_by_its_payee_shows_on_both_sides_of_the_hub() {
    let net = start_net(2).await;
    let hub = Api::new(net.api.unwrap(), net.hub.api_token());
    let payer = Api::new(
        net.peers[0].serve_api(loopback()).await.unwrap(),
        net.peers[0].api_token(),
    );
    let hub_addr = net.hub.address();

    // A third peer that never reveals its preimages, funded like the local network's peers.
    let dir = TempDir::new("api-holder");
    let holder = Node::start(
        Keys::from_bytes([0x5a; 32]).unwrap(),
        Store::open(&dir.0).unwrap(),
        NodeOptions {
            reveal_preimages: false,
            ..NodeOptions::default()
        },
    )
    .unwrap();
    let holder_api = Api::new(
        holder.serve_api(loopback()).await.unwrap(),
        holder.api_token(),
    );
    holder.connect(net.hub_addr, Some(hub_addr)).await.unwrap();
    let hch = holder
        .open_channel(hub_addr, Amount(2 * DEPOSIT))
        .await
        .unwrap();
    holder.transfer(hch, Amount(DEPOSIT)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while holder.hub_policy(hub_addr).unwrap().is_none()
        || net.hub.channel(hch).await.map(|s| s.state.version) != Some(1)
        || holder.channel(hch).await.map(|s| s.state.version) != Some(1)
    {
        assert!(
            Instant::now() < deadline,
            "the holder's channel never opened"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let amount = 5_000_000u128;
    let inv = holder
        .create_invoice(Amount(amount), 3600, hub_addr)
        .await
        .unwrap();
    let id = B256::repeat_byte(0x44);
    let t0 = unix_now();
    let rec: PaymentInfo = payer
        .post("/pay", json!({ "invoice": inv.encode(), "id": id }))
        .await;
    let t1 = unix_now();
    assert_eq!(rec.status, "pending");
    assert_eq!(rec.fee, Wei(fee(amount)));

    // The hub holds the incoming lock from the payer and its own outgoing one to the holder.
    let deadline = Instant::now() + Duration::from_secs(30);
    let htlcs = loop {
        let h: Vec<HtlcInfo> = hub.get("/htlcs").await;
        let settled_out = holder.channel(hch).await.map(|s| s.state.locks.len()) == Some(1);
        if h.len() == 2 && settled_out {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "the HTLC never reached the holder: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let ch0 = net.channels[0];
    let incoming = htlcs.iter().find(|h| h.channel == ch0).expect("incoming");
    let outgoing = htlcs.iter().find(|h| h.channel == hch).expect("outgoing");
    assert_eq!(
        (incoming.amount, incoming.hashlock, incoming.offered),
        (Wei(amount + fee(amount)), B256::from(inv.hashlock.0), false)
    );
    assert_eq!(
        (outgoing.amount, outgoing.hashlock, outgoing.offered),
        (Wei(amount), B256::from(inv.hashlock.0), true)
    );
    assert_eq!(
        incoming.expiry - outgoing.expiry,
        POLICY.expiry_delta,
        "the hub keeps exactly its expiry delta"
    );
    assert!(
        (t0 + inv.final_expiry_delta..=t1 + inv.final_expiry_delta).contains(&outgoing.expiry),
        "the payee's lock leaves the invoice's final delta"
    );
    // Each side of each lock sees the same lock, from its own side.
    let flip = |h: &HtlcInfo| HtlcInfo {
        offered: !h.offered,
        ..h.clone()
    };
    assert_eq!(
        payer.get::<Vec<HtlcInfo>>("/htlcs").await,
        vec![flip(incoming)]
    );
    assert_eq!(
        holder_api.get::<Vec<HtlcInfo>>("/htlcs").await,
        vec![flip(outgoing)]
    );

    // Balances exclude what is locked; /balance counts it in flight.
    let payer_bal = DEPOSIT - amount - fee(amount);
    let chans: Vec<ChannelInfo> = hub.get("/channels").await;
    assert_eq!(chans.len(), 3);
    for c in &chans {
        // Versions: 0 opening, 1 the hub's liquidity transfer, 2 the HTLC's add.
        let (ours, theirs, htlcs, version) = if c.id == ch0 {
            (DEPOSIT, payer_bal, vec![incoming.clone()], 2)
        } else if c.id == hch {
            (DEPOSIT - amount, DEPOSIT, vec![outgoing.clone()], 2)
        } else {
            assert_eq!(c.id, net.channels[1]);
            (DEPOSIT, DEPOSIT, vec![], 1)
        };
        assert_eq!(
            (c.ours, c.theirs, &c.htlcs, c.version),
            (Wei(ours), Wei(theirs), &htlcs, version),
            "{}",
            c.id
        );
    }
    assert_eq!(
        hub.get::<Balance>("/balance").await,
        Balance {
            spendable: Wei(3 * DEPOSIT - amount),
            receivable: Wei(payer_bal + 2 * DEPOSIT),
            offered_in_flight: Wei(amount),
            received_in_flight: Wei(amount + fee(amount)),
            channels: 3,
        }
    );
    assert_eq!(
        payer.get::<Balance>("/balance").await,
        Balance {
            spendable: Wei(payer_bal),
            receivable: Wei(DEPOSIT),
            offered_in_flight: Wei(amount + fee(amount)),
            received_in_flight: Wei(0),
            channels: 1,
        }
    );
    assert_eq!(
        hub.get::<NodeInfo>("/info").await.fees_earned,
        Wei(0),
        "no fee before the payment settles"
    );
    assert_eq!(
        payer.get::<PaymentInfo>(&format!("/payments/{id}")).await,
        PaymentInfo {
            id,
            payee: holder.address(),
            hub: hub_addr,
            amount: Wei(amount),
            fee: Wei(fee(amount)),
            status: "pending".into(),
            reason: None,
            preimage: None,
            repeated: false,
            attempts: 1,
        }
    );

    let m = hub.metrics().await;
    assert_eq!(metric(&m, &pending_series(ch0)), 1.0);
    assert_eq!(metric(&m, &pending_series(hch)), 1.0);
    assert_eq!(metric(&m, &pending_series(net.channels[1])), 0.0);
    assert_eq!(
        metric(&m, &balance_series(hch, "ours")),
        ether(DEPOSIT - amount)
    );
    assert_eq!(metric(&m, "vhub_forwards_settled_total"), 0.0);
    let m = payer.metrics().await;
    assert_eq!(metric(&m, "vhub_payments_attempted_total"), 1.0);
    assert_eq!(metric(&m, "vhub_payments_succeeded_total"), 0.0);
    assert_eq!(family_sum(&m, "vhub_payments_failed_total"), 0.0);
    assert_eq!(
        metric(&m, "vhub_payment_latency_seconds_count"),
        0.0,
        "a payment in flight is not timed yet"
    );
    holder.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_made_through_one_api_is_paid_through_another_once() {
    let net = start_net(2).await;
    let hub = Api::new(net.api.unwrap(), net.hub.api_token());
    let payer = Api::new(
        net.peers[0].serve_api(loopback()).await.unwrap(),
        net.peers[0].api_token(),
    );
    let payee = Api::new(
        net.peers[1].serve_api(loopback()).await.unwrap(),
        net.peers[1].api_token(),
    );
    let hub_addr = net.hub.address();

    let amount = 123_456_789u128;
    let t0 = unix_now();
    let made: Value = payee
        .post(
            "/invoice",
            json!({ "amount": amount.to_string(), "hub": hub_addr }),
        )
        .await;
    let t1 = unix_now();
    let text = made["invoice"].as_str().expect("an invoice string");
    assert!(text.starts_with("vhub1"), "{text}");
    let inv = Invoice::decode(text).unwrap();
    assert_eq!(
        (inv.payee, inv.hub, inv.amount),
        (net.peers[1].address(), hub_addr, Amount(amount))
    );
    assert_eq!(made["hashlock"], json!(B256::from(inv.hashlock.0)));
    assert!(
        (t0 + 3600..=t1 + 3600).contains(&inv.expires_at),
        "valid an hour by default"
    );
    let id = B256::from(inv.hashlock.0);

    let sent: PaymentInfo = payer.post("/pay", json!({ "invoice": text })).await;
    assert_eq!(
        sent,
        PaymentInfo {
            id,
            payee: net.peers[1].address(),
            hub: hub_addr,
            amount: Wei(amount),
            fee: Wei(fee(amount)),
            status: "pending".into(),
            reason: None,
            preimage: None,
            repeated: false,
            attempts: 1,
        },
        "the id defaults to the hashlock; the fee is the hub's policy"
    );
    let done = wait_paid(&payer, id).await;
    assert_eq!(
        htlc::Preimage(done.preimage.unwrap().0).hashlock(),
        inv.hashlock
    );
    wait_settled(&net, &[3, 3]).await;
    let after_first: Vec<ChannelInfo> = hub.get("/channels").await;
    let payer_bal = DEPOSIT - amount - fee(amount);
    assert_eq!(
        payer.get::<Vec<ChannelInfo>>("/channels").await,
        vec![settled_channel(net.channels[0], hub_addr, 3, payer_bal)]
    );
    assert_eq!(
        payee.get::<Vec<ChannelInfo>>("/channels").await,
        vec![settled_channel(
            net.channels[1],
            hub_addr,
            3,
            DEPOSIT + amount
        )]
    );

    // Paying the same invoice again returns the payment made; nothing moves.
    let again: PaymentInfo = payer.post("/pay", json!({ "invoice": text })).await;
    assert_eq!(
        again,
        PaymentInfo {
            repeated: true,
            ..done.clone()
        },
        "the first payment's record, marked as a repeat"
    );
    // A moment for anything wrongly sent to show (its absence is what is asserted).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hub.get::<Vec<ChannelInfo>>("/channels").await, after_first);
    assert_eq!(payer.get::<Vec<PaymentInfo>>("/payments").await, vec![done]);

    // A second invoice, with its own validity, paid with an explicit payment id.
    let amount2 = 2_000_000u128;
    let t0 = unix_now();
    let made: Value = payee
        .post(
            "/invoice",
            json!({ "amount": amount2.to_string(), "hub": hub_addr, "valid_secs": 600 }),
        )
        .await;
    let t1 = unix_now();
    let text2 = made["invoice"].as_str().unwrap();
    let inv2 = Invoice::decode(text2).unwrap();
    assert!((t0 + 600..=t1 + 600).contains(&inv2.expires_at));
    let id2 = B256::repeat_byte(0x42);
    let sent: PaymentInfo = payer
        .post("/pay", json!({ "invoice": text2, "id": id2 }))
        .await;
    assert_eq!(sent.id, id2);
    wait_paid(&payer, id2).await;
    wait_settled(&net, &[5, 5]).await;
    assert_eq!(
        payee.get::<Balance>("/balance").await.spendable,
        Wei(DEPOSIT + amount + amount2)
    );
    assert_eq!(
        hub.get::<NodeInfo>("/info").await,
        NodeInfo {
            address: hub_addr,
            channels: 2,
            payments: 0,
            fees_earned: Wei(fee(amount) + fee(amount2)),
            forwards: 2,
        }
    );
    // The payee lists what it received (smaller first here), the payer nothing.
    let mut received: Vec<ReceivedInfo> = payee.get("/received").await;
    received.sort_by_key(|r| r.amount.0);
    assert_eq!(
        received,
        vec![
            ReceivedInfo {
                hashlock: B256::from(inv2.hashlock.0),
                hub: hub_addr,
                amount: Wei(amount2),
            },
            ReceivedInfo {
                hashlock: B256::from(inv.hashlock.0),
                hub: hub_addr,
                amount: Wei(amount),
            },
        ]
    );
    assert!(payer.get::<Vec<ReceivedInfo>>("/received").await.is_empty());
    let history: Vec<PaymentInfo> = payer.get("/payments").await;
    assert_eq!(
        history.iter().map(|p| p.id).collect::<Vec<_>>(),
        {
            let mut ids = vec![id, id2];
            ids.sort();
            ids
        },
        "two payments, in id order"
    );
}

/// Poll `/payments/{id}` until the payment ends; it must have succeeded.
async fn wait_paid(api: &Api, id: B256) -> PaymentInfo {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p: PaymentInfo = api.get(&format!("/payments/{id}")).await;
        if p.status != "pending" {
            assert_eq!(p.status, "succeeded", "{p:?}");
            return p;
        }
        assert!(Instant::now() < deadline, "payment {id} never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Everything a node's API says of its state (its payment counters are compared separately).
async fn state_of(api: &Api) -> Vec<Value> {
    let mut out = Vec::new();
    for path in ["/info", "/channels", "/balance", "/htlcs", "/payments"] {
        out.push(api.get::<Value>(path).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_4xx_with_a_json_error_and_change_nothing() {
    let net = start_net(2).await;
    let hub = Api::new(net.api.unwrap(), net.hub.api_token());
    let payer = Api::new(
        net.peers[0].serve_api(loopback()).await.unwrap(),
        net.peers[0].api_token(),
    );
    let payee = Api::new(
        net.peers[1].serve_api(loopback()).await.unwrap(),
        net.peers[1].api_token(),
    );
    let hub_addr = net.hub.address();
    let payer_addr = net.peers[0].address();
    // One payment first, so there is history to keep.
    let (_, out) = pay(&net, 0, 1, 1_000_000, B256::repeat_byte(1)).await;
    assert!(matches!(out, PayOutcome::Paid { .. }));
    wait_settled(&net, &[3, 3]).await;

    // Inputs made beforehand (making an invoice is a legitimate change).
    let good = net.peers[1]
        .create_invoice(Amount(1_000_000), 3600, hub_addr)
        .await
        .unwrap()
        .encode();
    let huge = net.peers[1]
        .create_invoice(Amount(10 * DEPOSIT), 3600, hub_addr)
        .await
        .unwrap();
    let own = net.peers[0]
        .create_invoice(Amount(1_000_000), 3600, hub_addr)
        .await
        .unwrap()
        .encode();
    let expired = net.peers[1]
        .create_invoice(Amount(1_000_000), 0, hub_addr)
        .await
        .unwrap()
        .encode();
    let mut tampered = good.clone().into_bytes();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();

    let apis = [&hub, &payer, &payee];
    let mut before = Vec::new();
    for a in apis {
        before.push(state_of(a).await);
    }
    let metrics_before = payer.metrics().await;

    let unknown = ChannelId(B256::repeat_byte(0x11));
    let two128 = "340282366920938463463374607431768211456"; // 2^128
    let json_ct = Some("application/json");
    let cases: Vec<BadCase<'_>> = vec![
        (
            &payer,
            "/pay",
            r#"{"invoice": "vhub1"#.into(),
            json_ct,
            StatusCode::BAD_REQUEST,
            "json",
        ),
        (
            &payer,
            "/pay",
            json!({ "invoice": good }).to_string(),
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type",
        ),
        (
            &payee,
            "/invoice",
            json!({ "amount": two128, "hub": hub_addr }).to_string(),
            json_ct,
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a wei amount",
        ),
        (
            &payee,
            "/invoice",
            json!({ "amount": 1000, "hub": hub_addr }).to_string(),
            json_ct,
            StatusCode::UNPROCESSABLE_ENTITY,
            "amount",
        ),
        (
            &payee,
            "/invoice",
            json!({ "amount": "1000", "hub": hub_addr, "memo": "x" }).to_string(),
            json_ct,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field",
        ),
        (
            &payee,
            "/invoice",
            json!({ "amount": "0", "hub": hub_addr }).to_string(),
            json_ct,
            StatusCode::BAD_REQUEST,
            "positive amount",
        ),
        (
            &hub,
            "/close",
            json!({ "channel": unknown }).to_string(),
            json_ct,
            StatusCode::NOT_FOUND,
            "unknown channel",
        ),
        (
            &payer,
            "/close",
            json!({ "channel": "0x1234" }).to_string(),
            json_ct,
            StatusCode::UNPROCESSABLE_ENTITY,
            "channel",
        ),
        (
            &payer,
            "/pay",
            json!({ "invoice": "vhub1zz" }).to_string(),
            json_ct,
            StatusCode::BAD_REQUEST,
            "corrupt invoice: not hex",
        ),
        (
            &payer,
            "/pay",
            json!({ "invoice": "lnbc2500u1pvjluez" }).to_string(),
            json_ct,
            StatusCode::BAD_REQUEST,
            "not a vhub invoice",
        ),
        (
            &payer,
            "/pay",
            json!({ "invoice": tampered }).to_string(),
            json_ct,
            StatusCode::BAD_REQUEST,
            "corrupt invoice",
        ),
        (
            &payer,
            "/pay",
            json!({ "invoice": huge.encode() }).to_string(),
            json_ct,
            StatusCode::BAD_REQUEST,
            "cannot pay",
        ),
        (
            &payer,
            "/pay",
            json!({ "invoice": own }).to_string(),
            json_ct,
            StatusCode::BAD_REQUEST,
            "own invoice",
        ),
        (
            &payer,
            "/pay",
            json!({ "invoice": expired }).to_string(),
            json_ct,
            StatusCode::BAD_REQUEST,
            "expired",
        ),
        (
            &payer,
            "/pay",
            json!({ "invoice": good, "attempts": 0 }).to_string(),
            json_ct,
            StatusCode::BAD_REQUEST,
            "attempts must be 1 to 10",
        ),
        (
            &payer,
            "/pay",
            json!({ "invoice": good, "attempts": 11 }).to_string(),
            json_ct,
            StatusCode::BAD_REQUEST,
            "attempts must be 1 to 10",
        ),
        (
            &payer,
            "/connect",
            json!({ "addr": "127.0.0.1:1", "address": payer_addr }).to_string(),
            json_ct,
            StatusCode::BAD_REQUEST,
            "own address",
        ),
        (
            &payer,
            "/connect",
            json!({ "addr": "somewhere", "address": hub_addr }).to_string(),
            json_ct,
            StatusCode::UNPROCESSABLE_ENTITY,
            "addr",
        ),
    ];
    for (api, path, body, ct, status, needle) in &cases {
        let (got, text) = api.post_raw(path, body, *ct).await;
        assert_eq!(got, *status, "POST {path} {body}: {text}");
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("POST {path} {body}: the error is not JSON: {text:?}"));
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("POST {path} {body}: no \"error\" in {v}"));
        assert!(
            msg.to_lowercase().contains(&needle.to_lowercase()),
            "POST {path} {body}: {msg:?} should say {needle:?}"
        );
    }
    for (path, status, needle) in [
        ("/payments/xyz", StatusCode::BAD_REQUEST, "not a payment id"),
        (
            &*format!("/payments/{}", B256::from(huge.hashlock.0)),
            StatusCode::NOT_FOUND,
            "no payment",
        ),
    ] {
        let (got, text) = payer.get_raw(path).await;
        assert_eq!(got, status, "GET {path}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["error"].as_str().unwrap().contains(needle), "{v}");
    }

    // Nothing changed anywhere; no payment was even attempted.
    for (a, b) in apis.iter().zip(&before) {
        assert_eq!(state_of(a).await, *b);
    }
    let m = payer.metrics().await;
    for series in [
        "vhub_payments_attempted_total",
        "vhub_payments_succeeded_total",
        "vhub_updates_committed_total",
    ] {
        assert_eq!(
            metric(&m, series),
            metric(&metrics_before, series),
            "{series}"
        );
    }
    // And the nodes still work: the good invoice pays.
    let sent: PaymentInfo = payer.post("/pay", json!({ "invoice": good })).await;
    wait_paid(&payer, sent.id).await;
}

/// Issue 12, attack 9: the API pays and closes channels, so every endpoint but `/metrics`
/// needs the node's token, and every request must name a loopback host (a web page the
/// operator visits reaches it, by DNS rebinding, only under the attacker's host name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_requires_its_token_and_a_loopback_host() {
    let net = start_net(2).await;
    let addr = net.api.unwrap();
    let token = net.hub.api_token().to_string();
    let http = reqwest::Client::new();
    let before: Vec<ChannelInfo> = Api::new(addr, &token).get("/channels").await;
    let url = |path: &str| format!("http://{addr}{path}");
    let invoice_body = json!({ "amount": "1000", "hub": net.hub.address() });
    // No token, a wrong token, a token of the right length but wrong: 401, for reads and
    // for writes alike.
    let wrong = "0".repeat(token.len());
    for auth in [
        None,
        Some("Bearer nope"),
        Some(&*format!("Bearer {wrong}")),
        Some(&*token),
    ] {
        for (method, path) in [("GET", "/channels"), ("GET", "/info"), ("POST", "/invoice")] {
            let mut req = match method {
                "GET" => http.get(url(path)),
                _ => http.post(url(path)).json(&invoice_body),
            };
            if let Some(a) = auth {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            let r = req.send().await.unwrap();
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
            let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            assert!(v["error"].as_str().unwrap().contains("token"), "{v}");
        }
    }
    // The right token under a foreign host name (DNS rebinding): 403, even for /metrics.
    for path in ["/channels", "/metrics"] {
        let r = http
            .get(url(path))
            .header(reqwest::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(reqwest::header::HOST, "evil.example:80")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }
    // /metrics needs no token; everything else works with it.
    let r = http.get(url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let after: Vec<ChannelInfo> = Api::new(addr, &token).get("/channels").await;
    assert_eq!(before, after, "refused requests changed nothing");
    let r = http
        .get(url("/channels"))
        .header(reqwest::header::AUTHORIZATION, format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// The browser the dashboard test drives: `VHUB_CHROMIUM`, or Debian's `chromium` (installed
/// by `scripts/setup.sh`).
fn chromium() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("VHUB_CHROMIUM") {
        return p.into();
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        for name in ["chromium", "chromium-browser"] {
            let p = std::path::Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "no chromium: run scripts/setup.sh (it installs Debian's chromium) or set VHUB_CHROMIUM"
    );
}

/// Run headless Chromium on `url` with `args`, killed after a minute.
fn headless(url: &str, args: &[&str]) -> String {
    let profile = TempDir::new("chromium-profile");
    let mut child = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .args(args)
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).unwrap();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish in a minute");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

/// The text of the element with id `id` in `dom`.
fn by_id<'a>(dom: &'a str, id: &str) -> &'a str {
    let tag = format!("id=\"{id}\">");
    let start = dom
        .find(&tag)
        .unwrap_or_else(|| panic!("no #{id} in the page"))
        + tag.len();
    let end = dom[start..].find('<').unwrap() + start;
    &dom[start..end]
}

/// The dashboard in a real headless Chromium shows what the API says: fees, forwards, every
/// channel's balances and status, every payment's outcome. `VHUB_DASHBOARD_SCREENSHOT=path`
/// also writes a screenshot (the README's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_the_api_says() {
    let net = start_net(2).await;
    let addr = net.api.unwrap();
    let token = net.hub.api_token().to_string();
    for (from, to, amount) in [(0, 1, 1_000_000u128), (1, 0, 2_500_000), (0, 1, 333_333)] {
        let out = net.pay(from, to, Amount(amount)).await.unwrap();
        assert!(matches!(out, PayOutcome::Paid { .. }), "{out:?}");
    }
    let hub = Api::new(addr, &token);
    let info: Value = hub.get("/info").await;
    let channels: Vec<ChannelInfo> = hub.get("/channels").await;
    // The page itself holds no data and needs no token; everything it shows does.
    let page = reqwest::get(format!("http://{addr}/dashboard"))
        .await
        .unwrap();
    let status = page.status();
    let body = page.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("<title>vhub node</title>"));
    let url = format!("http://{addr}/dashboard#token={token}");
    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || headless(&url, &["--dump-dom"])
    })
    .await
    .unwrap();
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page never rendered: {dom}"
    );
    assert_eq!(by_id(&dom, "error"), "", "the page reported an error");
    assert_eq!(
        by_id(&dom, "fees-wei"),
        info["fees_earned"].as_str().unwrap()
    );
    assert_eq!(by_id(&dom, "forwards"), info["forwards"].to_string());
    assert_eq!(by_id(&dom, "channels-count"), channels.len().to_string());
    for c in &channels {
        let row = format!(
            "data-channel=\"{}\" data-ours=\"{}\" data-theirs=\"{}\" data-status=\"{}\"",
            c.id,
            c.ours.0,
            c.theirs.0,
            c.status.as_str()
        );
        assert!(dom.contains(&row), "no row {row} in {dom}");
    }
    // Without the token the page shows the API's refusal, not data.
    let refused = tokio::task::spawn_blocking({
        let url = format!("http://{addr}/dashboard");
        move || headless(&url, &["--dump-dom"])
    })
    .await
    .unwrap();
    assert!(!refused.contains("data-ready=\"1\""));
    assert!(by_id(&refused, "error").contains("401"), "{refused}");
    if let Some(path) = std::env::var_os("VHUB_DASHBOARD_SCREENSHOT") {
        let arg = format!("--screenshot={}", std::path::Path::new(&path).display());
        tokio::task::spawn_blocking(move || headless(&url, &[&arg, "--window-size=1100,1000"]))
            .await
            .unwrap();
    }
    net.shutdown();
}

/// Several waiters on one payment are each woken by its outcome (not by reading every event of
/// the node), a wait on a payment the node never made answers at once, and a wait that runs
/// out leaves the payment as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_a_payment_are_woken_by_its_outcome() {
    let net = start_net(2).await;
    let (payer, payee) = (&net.peers[0], &net.peers[1]);
    assert_eq!(
        payer
            .wait_settled(B256::repeat_byte(7), PAYMENT_TIMEOUT)
            .await
            .unwrap(),
        None,
        "a payment we never made has nothing to wait for"
    );
    // A fresh invoice of the payee, paid by the payer (not waited for): the payment's id.
    let start_payment = || async {
        let inv = payee
            .create_invoice(Amount(50_000), 3600, net.hub.address())
            .await
            .unwrap();
        let id = B256::from(inv.hashlock.0);
        payer.pay(&inv, id).await.unwrap();
        id
    };
    let id = start_payment().await;
    let started = Instant::now();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let payer = payer.clone();
            tokio::spawn(async move { payer.wait_settled(id, PAYMENT_TIMEOUT).await })
        })
        .collect();
    for w in waiters {
        let rec = w.await.unwrap().unwrap().expect("the payment's record");
        assert!(
            matches!(rec.status, hub::payments::PaymentStatus::Succeeded { .. }),
            "{:?}",
            rec.status
        );
    }
    assert!(
        started.elapsed() < PAYMENT_TIMEOUT,
        "woken by the outcome, not by the deadline"
    );
    // A second payment, waited for no time at all: the wait runs out before the outcome or
    // answers with it, and the payment completes all the same.
    let id2 = start_payment().await;
    let early = payer
        .wait_settled(id2, Duration::ZERO)
        .await
        .unwrap()
        .expect("the payment's record");
    assert_eq!(early.id, id2);
    assert_eq!(early.fee(), Amount(fee(50_000)));
    assert_eq!(
        wait_payment(payer, id2, PAYMENT_TIMEOUT).await.unwrap(),
        PayOutcome::Paid {
            fee: Amount(fee(50_000))
        }
    );
}
