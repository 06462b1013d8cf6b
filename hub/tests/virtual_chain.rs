//! Virtual channels over a chain of two hubs (ADR 0026) with real QUIC, real RocksDB and a
//! real chain (anvil): alice — h1 — h2 — bob, the hubs joined by their own ledger. The virtual
//! channel is opened over the three ledgers, paid inside both ways (its messages relayed by
//! both hubs), closed by its final state releasing every leg (the releases travelling toward
//! bob: h1 signs its release toward h2 only while it holds alice's), and every ledger then
//! paid out on chain to the wei: each hub gets back exactly what it put in plus its fee.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use contracts::Devnet;
use htlc::vchan::VirtualPolicy;
use htlc::{Amount, ChannelId};
use hub::node::{Node, NodeOptions};
use std::time::Duration;

mod common;
use common::{TempDir, chain_node, concluded, loopback, wait_state};

const ETH: u128 = 1_000_000_000_000_000_000;
const COLLATERAL: u128 = ETH;
/// The hubs' ledger's challenge window: the shortest a node accepts.
const MID_WINDOW: u64 = htlc::forward::MIN_CHALLENGE_DURATION_SECS;

/// Each hub's rules: h1 and h2 charge different fees, so a fee paid to the wrong hub shows.
fn policy(i: u128) -> VirtualPolicy {
    VirtualPolicy {
        open_fee_base: Amount(1_000_000 * i),
        open_fee_ppm: 1_000 * i as u32,
        ..VirtualPolicy::default()
    }
}

struct Net {
    _dirs: Vec<TempDir>,
    _chain: Devnet,
    alice: Node,
    hubs: [Node; 2],
    bob: Node,
    /// alice–h1, h1–h2, bob–h2 (each opened by the first named, who is its A).
    ledger: [ChannelId; 3],
}

async fn node(
    net: &Devnet,
    i: usize,
    dirs: &mut Vec<TempDir>,
    tune: impl FnOnce(&mut NodeOptions),
) -> Node {
    let d = TempDir::new("vchain");
    let n = chain_node(net, i, &d.0, tune).await;
    dirs.push(d);
    n
}

/// `from` opens a ledger with `to` (listening at `addr`) depositing one ether; `to` adds its
/// collateral. Both see it funded.
async fn ledger(from: &Node, to: &Node, addr: std::net::SocketAddr) -> ChannelId {
    from.connect(addr, Some(to.address())).await.unwrap();
    let id = from.open_channel(to.address(), Amount(ETH)).await.unwrap();
    from.fund(id).await.unwrap();
    for n in [from, to] {
        wait_state(n, id, |s| s.state.balances[1] == Amount(COLLATERAL)).await;
    }
    id
}

async fn setup() -> Net {
    let chain = Devnet::start().await.unwrap();
    let mut dirs = Vec::new();
    let mut hubs = Vec::new();
    let mut addrs = Vec::new();
    for i in [1, 2] {
        let h = node(&chain, i, &mut dirs, |o| {
            o.collateral = Amount(COLLATERAL);
            o.virtual_policy = Some(VirtualPolicy {
                // h1's next hop is a hub: a position its operator chooses to serve.
                toward_hubs: i == 1,
                ..policy(i as u128)
            });
            // h1 opens the hubs' ledger with a window shorter than alice's by the time it
            // needs to answer her dispute (ADR 0026).
            o.challenge_duration = MID_WINDOW;
        })
        .await;
        addrs.push(h.listen(loopback()).unwrap());
        hubs.push(h);
    }
    let alice = node(&chain, 3, &mut dirs, |o| {
        o.challenge_duration = MID_WINDOW + htlc::vchan::CHAIN_REACTION_SECS;
    })
    .await;
    let bob = node(&chain, 4, &mut dirs, |_| {}).await;
    let l1 = ledger(&alice, &hubs[0], addrs[0]).await;
    let l2 = ledger(&hubs[0], &hubs[1], addrs[1]).await;
    let l3 = ledger(&bob, &hubs[1], addrs[1]).await;
    let [h1, h2]: [Node; 2] = hubs.try_into().ok().unwrap();
    Net {
        _dirs: dirs,
        _chain: chain,
        alice,
        hubs: [h1, h2],
        bob,
        ledger: [l1, l2, l3],
    }
}

fn loopback_tcp() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn balances(n: &Node, id: ChannelId) -> [Amount; 2] {
    n.channel(id).await.unwrap().state.balances
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_channel_over_two_hubs_opens_pays_both_ways_closes_and_pays_out_exactly() {
    let net = setup().await;
    let [h1, h2] = &net.hubs;
    let deposit = 4 * ETH / 10;
    let fee = |i: u128| 1_000_000 * i + deposit * 1_000 * i / 1_000_000;
    let (fee1, fee2) = (fee(1), fee(2));
    let before: Vec<[Amount; 2]> = {
        let mut v = Vec::new();
        for (n, id) in [
            (h1, net.ledger[0]),
            (h1, net.ledger[1]),
            (h2, net.ledger[2]),
        ] {
            v.push(balances(n, id).await);
        }
        v
    };

    // Over alice's HTTP API, as `hub virtual policy` and `hub virtual open --then` do: alice
    // learns h2's fees from its operator (h2 announces them to its own peers only), then opens.
    let api = net.alice.serve_api(loopback_tcp()).await.unwrap();
    let client =
        hub::api_client::ApiClient::new(api, net.alice.api_token(), Duration::from_secs(60))
            .unwrap();
    let open = serde_json::json!({
        "hub": h1.address(),
        "then": [h2.address()],
        "peer": net.bob.address(),
        "deposit": deposit.to_string(),
        "lifetime_secs": 3600,
    });
    // Before h2's fees are known: refused, nothing locked.
    let refused = client
        .post::<serde_json::Value>("/virtual/open", open.clone())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("policy"), "{refused}");
    let bad = client
        .post::<serde_json::Value>(
            "/virtual/policy",
            serde_json::json!({"hub": h2.address(), "open_fee_base": "1", "open_fee_ppm": 2_000_000}),
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("open_fee_ppm"), "{bad}");
    let p2 = policy(2);
    let _: serde_json::Value = client
        .post(
            "/virtual/policy",
            serde_json::json!({
                "hub": h2.address(),
                "open_fee_base": p2.open_fee_base.0.to_string(),
                "open_fee_ppm": p2.open_fee_ppm,
            }),
        )
        .await
        .unwrap();
    let opened: serde_json::Value = client.post("/virtual/open", open).await.unwrap();
    let v: ChannelId = serde_json::from_value(opened["channel"].clone()).unwrap();
    // Every ledger of the path locks the same guarantee, seen alike at both its ends.
    let g = |s: &htlc::SignedState| s.state.guarantees.first().copied();
    for (n, id) in [
        (&net.alice, net.ledger[0]),
        (h1, net.ledger[0]),
        (h1, net.ledger[1]),
        (h2, net.ledger[1]),
        (h2, net.ledger[2]),
        (&net.bob, net.ledger[2]),
    ] {
        wait_state(n, id, |s| g(s).is_some_and(|g| g.virtual_channel == v)).await;
    }
    // On the hubs' ledger h1 (its A) stands for the virtual channel's A and locks the deposit.
    let mid = g(&h1.channel(net.ledger[1]).await.unwrap()).unwrap();
    assert!(!mid.crossed);
    assert_eq!((mid.from_a, mid.from_b), (Amount(deposit), Amount::ZERO));
    // The fees: alice paid both on her ledger; h1 passed h2's on with its leg. The side
    // standing for the virtual channel's A locks the deposit out of its balance.
    assert_eq!(
        balances(h1, net.ledger[0]).await,
        [
            Amount(before[0][0].0 - deposit - fee1 - fee2),
            Amount(before[0][1].0 + fee1 + fee2)
        ]
    );
    assert_eq!(
        balances(h1, net.ledger[1]).await,
        [
            Amount(before[1][0].0 - deposit - fee2),
            Amount(before[1][1].0 + fee2)
        ]
    );
    for h in [h1, h2] {
        let view = h.virtual_info();
        assert_eq!(view.len(), 1, "each hub serves it");
        assert_eq!(view[0].channel, v);
    }
    wait_state(&net.bob, v, |s| s.state.version == 0).await;

    // Payments inside it, both ways, relayed over both hubs (alice and bob never connect).
    net.alice.transfer(v, Amount(ETH / 10)).await.unwrap();
    wait_state(&net.bob, v, |s| s.state.balances[1] == Amount(ETH / 10)).await;
    net.bob.transfer(v, Amount(3 * ETH / 100)).await.unwrap();
    let (va, vb) = (deposit - ETH / 10 + 3 * ETH / 100, ETH / 10 - 3 * ETH / 100);
    wait_state(&net.alice, v, |s| {
        s.state.balances == [Amount(va), Amount(vb)]
    })
    .await;
    assert!(!net.alice.is_connected(net.bob.address()).await);
    for h in [h1, h2] {
        assert!(h.channel(v).await.is_none(), "a hub keeps no state of it");
    }

    // Closed: its final state releases all three legs.
    net.bob.close(v).await.unwrap();
    for (n, id) in [
        (&net.alice, net.ledger[0]),
        (h1, net.ledger[0]),
        (h1, net.ledger[1]),
        (h2, net.ledger[1]),
        (h2, net.ledger[2]),
        (&net.bob, net.ledger[2]),
    ] {
        wait_state(n, id, |s| s.state.guarantees.is_empty()).await;
    }
    let l1 = balances(h1, net.ledger[0]).await;
    let l2 = balances(h1, net.ledger[1]).await;
    let l3 = balances(h2, net.ledger[2]).await;
    assert_eq!(
        l1,
        [
            Amount(before[0][0].0 - deposit - fee1 - fee2 + va),
            Amount(before[0][1].0 + fee1 + fee2 + vb)
        ],
        "alice's ledger: her virtual balance back; h1 the fees and bob's side"
    );
    assert_eq!(
        l2,
        [
            Amount(before[1][0].0 - deposit - fee2 + va),
            Amount(before[1][1].0 + fee2 + vb)
        ],
        "the hubs' ledger: h1 stands for alice, h2 for bob"
    );
    assert_eq!(
        l3,
        [
            Amount(before[2][0].0 + vb),
            Amount(before[2][1].0 - deposit + va)
        ],
        "bob's ledger: his virtual balance; h2 alice's side"
    );
    // Each hub: exactly what it put in, plus its own fee.
    assert_eq!(l1[1].0 + l2[0].0, before[0][1].0 + before[1][0].0 + fee1);
    assert_eq!(l2[1].0 + l3[1].0, before[1][1].0 + before[2][1].0 + fee2);
    for h in [h1, h2] {
        assert_eq!(h.virtual_info()[0].phase, "settled");
    }

    // Every ledger closes cooperatively and pays out on chain exactly those balances.
    let mut ea = net.alice.subscribe();
    let mut e1 = h1.subscribe();
    let mut eb = net.bob.subscribe();
    net.alice.close(net.ledger[0]).await.unwrap();
    h1.close(net.ledger[1]).await.unwrap();
    net.bob.close(net.ledger[2]).await.unwrap();
    assert_eq!(concluded(&mut ea, net.ledger[0]).await, l1);
    assert_eq!(concluded(&mut e1, net.ledger[1]).await, l2);
    assert_eq!(concluded(&mut eb, net.ledger[2]).await, l3);
}
