//! Many hubs (issue 16) with real QUIC, real RocksDB and a real chain (anvil): hubs open
//! channels with each other, announce them (gossip, believed once the chain shows them
//! funded), and a payment crosses a line of three hubs carried by an onion, each hub taking
//! exactly its own fee; a failure deep in the route names its hub.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use contracts::Devnet;
use htlc::forward::ForwardPolicy;
use htlc::sig::Keys;
use htlc::{Amount, ChannelId, FailureReason};
use hub::events::NodeEvent;
use hub::node::Node;
use hub::payments::PaymentStatus;
use std::time::{Duration, Instant};

mod common;
use common::{TempDir, chain_node, loopback, wait_for, wait_state};

const ETH: u128 = 1_000_000_000_000_000_000;

/// Hub `i`'s policy (i = 1, 2, 3): fees differ, so a fee taken at the wrong hop shows.
fn policy(i: u128) -> ForwardPolicy {
    ForwardPolicy {
        base_fee: Amount(1_000 * i),
        fee_ppm: 100 * i as u32,
        ..ForwardPolicy::default()
    }
}

async fn node(net: &Devnet, i: usize, dirs: &mut Vec<TempDir>, hub: Option<u128>) -> Node {
    let d = TempDir::new("multihub");
    let n = chain_node(net, i, &d.0, |o| {
        if let Some(h) = hub {
            o.collateral = Amount(ETH);
            o.policy = policy(h);
            o.announce = true;
        }
    })
    .await;
    dirs.push(d);
    n
}

/// Hubs 1..=n (dev accounts 1..=n, policies 1..=n), each listening.
async fn start_hubs(
    net: &Devnet,
    n: usize,
    dirs: &mut Vec<TempDir>,
) -> (Vec<Node>, Vec<std::net::SocketAddr>) {
    let mut hubs = Vec::new();
    let mut addrs = Vec::new();
    for i in 1..=n {
        let h = node(net, i, dirs, Some(i as u128)).await;
        addrs.push(h.listen(loopback()).unwrap());
        hubs.push(h);
    }
    (hubs, addrs)
}

/// `from` connects to `to` and opens a funded channel of one ether; `to` adds one ether of
/// collateral (both directions can carry payments).
async fn channel(from: &Node, to: &Node, to_addr: std::net::SocketAddr) -> ChannelId {
    from.connect(to_addr, Some(to.address())).await.unwrap();
    let id = from.open_channel(to.address(), Amount(ETH)).await.unwrap();
    from.fund(id).await.unwrap();
    for n in [from, to] {
        wait_state(n, id, |s| s.state.balances[1] == Amount(ETH)).await;
    }
    id
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until `node` believes exactly the channels `ids`, each with both directions' policy.
async fn learn(node: &Node, ids: &[ChannelId], what: &str) {
    until(what, || {
        let g = node.gossip();
        g.len() == ids.len()
            && ids.iter().all(|id| {
                g.get(id)
                    .is_some_and(|c| c.policies.iter().all(Option::is_some))
            })
    })
    .await;
}

/// `payer` pays `payee` `amount` through `hub` (the payee's), trying up to three routes.
async fn pay_retrying(
    payer: &Node,
    payee: &Node,
    hub: alloy::primitives::Address,
    amount: u128,
    id: alloy::primitives::B256,
) -> Vec<hub::payments::PaymentRecord> {
    let invoice = payee
        .create_invoice(Amount(amount), 3600, hub)
        .await
        .unwrap();
    payer
        .pay_with_retries(&invoice, id, 3, Duration::from_secs(30))
        .await
        .unwrap()
}

struct Line {
    _dirs: Vec<TempDir>,
    chain: Devnet,
    payer: Node,
    hubs: Vec<Node>,
    payee: Node,
    /// payer–h1, h1–h2, h2–h3, payee–h3.
    channels: Vec<ChannelId>,
    /// Where the hubs listen.
    addrs: Vec<std::net::SocketAddr>,
}

async fn line() -> Line {
    let net = Devnet::start().await.unwrap();
    let mut dirs = Vec::new();
    let (hubs, addrs) = start_hubs(&net, 3, &mut dirs).await;
    let payer = node(&net, 4, &mut dirs, None).await;
    let payee = node(&net, 5, &mut dirs, None).await;
    let channels = vec![
        channel(&payer, &hubs[0], addrs[0]).await,
        channel(&hubs[0], &hubs[1], addrs[1]).await,
        channel(&hubs[1], &hubs[2], addrs[2]).await,
        channel(&payee, &hubs[2], addrs[2]).await,
    ];
    Line {
        _dirs: dirs,
        chain: net,
        payer,
        hubs,
        payee,
        channels,
        addrs,
    }
}

/// Each hub's (incoming, fee) for delivering `amount`, backward from the payee.
fn fees(amount: u128) -> Vec<(u128, u128)> {
    let mut out = Vec::new();
    let mut fwd = amount;
    for h in (1..=3).rev() {
        let f = policy(h).fee(Amount(fwd)).unwrap().0;
        out.push((fwd + f, f));
        fwd += f;
    }
    out.reverse();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_crosses_three_hubs_with_each_fee_exact_on_every_channel() {
    let l = line().await;
    // Gossip: the payer (a client of hub 1) comes to believe both hub-to-hub channels (checked
    // on chain) and every hub's policy on them.
    let hub_channels = [l.channels[1], l.channels[2]];
    learn(
        &l.payer,
        &hub_channels,
        "the payer to learn the hub-to-hub channels",
    )
    .await;
    for id in hub_channels {
        // What the chain held when the payer looked: the opener's deposit at least (the
        // collateral may have landed since).
        let cap = l.payer.gossip()[&id].capacity;
        assert!(
            cap == Amount(ETH) || cap == Amount(2 * ETH),
            "capacity {cap:?}"
        );
    }
    assert!(
        !l.payer.gossip().contains_key(&l.channels[3]),
        "client channels are private"
    );

    let amount = 1_000_000_000u128;
    let invoice = l
        .payee
        .create_invoice(Amount(amount), 3600, l.hubs[2].address())
        .await
        .unwrap();
    let mut ev = l.payer.subscribe();
    let id = alloy::primitives::B256::repeat_byte(1);
    let rec = l.payer.pay(&invoice, id).await.unwrap();
    let path: Vec<_> = l
        .hubs
        .iter()
        .map(Node::address)
        .chain([l.payee.address()])
        .collect();
    assert_eq!(rec.path, path, "the router chose the line");
    wait_for(
        &mut ev,
        |e| matches!(e, NodeEvent::PaymentSucceeded { id: p, .. } if *p == id),
    )
    .await;
    let f = fees(amount);
    let total: u128 = f.iter().map(|(_, x)| x).sum();
    assert_eq!(l.payer.payment(id).unwrap().unwrap().fee(), Amount(total));
    // Every channel moved exactly what its receiver got: hub i's incoming, or the amount.
    let moved = [f[0].0, f[1].0, f[2].0];
    for (c, m) in moved.iter().enumerate() {
        let id = l.channels[c];
        let sender = if c == 0 { &l.payer } else { &l.hubs[c - 1] };
        wait_state(sender, id, |s| s.state.locks.is_empty()).await;
        let st = sender.channel(id).await.unwrap().state;
        assert_eq!(
            st.balances,
            [Amount(ETH - m), Amount(ETH + m)],
            "channel {c}"
        );
    }
    // The payee's channel: it opened it (A), the hub paid it the amount.
    wait_state(&l.payee, l.channels[3], |s| s.state.locks.is_empty()).await;
    let st = l.payee.channel(l.channels[3]).await.unwrap().state;
    assert_eq!(st.balances, [Amount(ETH + amount), Amount(ETH - amount)]);
    for (i, h) in l.hubs.iter().enumerate() {
        until("the hub's forward to settle", || {
            h.fees_earned().unwrap() == (Amount(f[i].1), 1)
        })
        .await;
    }
}

/// Hub 3 cannot pay the payee (it has given away its side of that channel): the failure
/// comes back through hubs 2 and 1 naming hub 3, and nothing moves anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_deep_in_the_route_reaches_the_payer_naming_the_failing_hub() {
    let l = line().await;
    learn(
        &l.payer,
        &l.channels[1..3],
        "the payer to learn the network",
    )
    .await;
    // Hub 3 pays almost all its side of the payee's channel out.
    l.hubs[2]
        .transfer(l.channels[3], Amount(ETH - 1_000))
        .await
        .unwrap();
    wait_state(&l.payee, l.channels[3], |s| {
        s.state.balances[0] == Amount(2 * ETH - 1_000)
    })
    .await;
    let invoice = l
        .payee
        .create_invoice(Amount(1_000_000), 3600, l.hubs[2].address())
        .await
        .unwrap();
    let mut ev = l.payer.subscribe();
    let id = alloy::primitives::B256::repeat_byte(2);
    l.payer.pay(&invoice, id).await.unwrap();
    wait_for(
        &mut ev,
        |e| matches!(e, NodeEvent::PaymentFailed { id: p, .. } if *p == id),
    )
    .await;
    let rec = l.payer.payment(id).unwrap().unwrap();
    assert_eq!(
        rec.failed_at,
        Some((l.hubs[2].address(), FailureReason::TemporaryChannelFailure))
    );
    assert_eq!(
        rec.status,
        PaymentStatus::Failed {
            reason: FailureReason::TemporaryChannelFailure
        }
    );
    let st = l.payer.channel(l.channels[0]).await.unwrap().state;
    assert_eq!(st.balances, [Amount(ETH), Amount(ETH)]);
}

/// A ring of four hubs; the payer is a client of hub 1, the payee of hub 3. Hub 2 (on the
/// cheaper side) is stopped: the first attempt fails at hub 1 (hub 2 is away), and the retry
/// goes round the other side through hub 4 and succeeds with exactly that route's fees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_of_four_hubs_routes_around_a_stopped_hub() {
    let net = Devnet::start().await.unwrap();
    let mut dirs = Vec::new();
    let (hubs, addrs) = start_hubs(&net, 4, &mut dirs).await;
    let mut ring = Vec::new();
    for i in 0..4 {
        let j = (i + 1) % 4;
        ring.push(channel(&hubs[i], &hubs[j], addrs[j]).await);
    }
    let payer = node(&net, 5, &mut dirs, None).await;
    let payee = node(&net, 6, &mut dirs, None).await;
    let up = channel(&payer, &hubs[0], addrs[0]).await;
    channel(&payee, &hubs[2], addrs[2]).await;
    learn(&payer, &ring, "the payer to learn the ring").await;
    // Hub 2 goes away; hub 1 sees its session end.
    let h2 = hubs[1].address();
    hubs[1].shutdown();
    let deadline = Instant::now() + Duration::from_secs(30);
    while hubs[0].is_connected(h2).await {
        assert!(
            Instant::now() < deadline,
            "hub 1 never noticed hub 2 is away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let amount = 1_000_000_000u128;
    let id = alloy::primitives::B256::repeat_byte(3);
    let attempts = pay_retrying(&payer, &payee, hubs[2].address(), amount, id).await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let first = &attempts[0];
    assert_eq!(
        first.path[0..2],
        [hubs[0].address(), h2],
        "the cheaper side first"
    );
    assert_eq!(
        first.failed_at,
        Some((hubs[0].address(), FailureReason::TemporaryChannelFailure))
    );
    let second = &attempts[1];
    assert_eq!(
        second.path,
        [
            hubs[0].address(),
            hubs[3].address(),
            hubs[2].address(),
            payee.address()
        ]
    );
    assert!(matches!(second.status, PaymentStatus::Succeeded { .. }));
    // Fees of the route through hub 4: hub 3 forwards the amount, hub 4 that plus hub 3's
    // fee, hub 1 that plus hub 4's.
    let f3 = policy(3).fee(Amount(amount)).unwrap().0;
    let f4 = policy(4).fee(Amount(amount + f3)).unwrap().0;
    let f1 = policy(1).fee(Amount(amount + f3 + f4)).unwrap().0;
    assert_eq!(second.fee(), Amount(f1 + f3 + f4));
    wait_state(&payer, up, |s| s.state.locks.is_empty()).await;
    let st = payer.channel(up).await.unwrap().state;
    assert_eq!(
        st.balances,
        [
            Amount(ETH - amount - f1 - f3 - f4),
            Amount(ETH + amount + f1 + f3 + f4)
        ],
        "the failed attempt moved nothing; the second paid exactly its fees"
    );
}

/// A diamond: hub 1 reaches hub 4 through hub 2 and through hub 3. A payment in two parts, one
/// over each side, is held by the payee until both arrived and claimed whole; each side's hub
/// earns exactly its fee on its part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_path_payment_crosses_different_hubs() {
    let net = Devnet::start().await.unwrap();
    let mut dirs = Vec::new();
    let (hubs, addrs) = start_hubs(&net, 4, &mut dirs).await;
    let mut diamond = Vec::new();
    for (a, b) in [(0, 1), (0, 2), (1, 3), (2, 3)] {
        diamond.push(channel(&hubs[a], &hubs[b], addrs[b]).await);
    }
    let payer = node(&net, 5, &mut dirs, None).await;
    let payee = node(&net, 6, &mut dirs, None).await;
    let up = channel(&payer, &hubs[0], addrs[0]).await;
    let down = channel(&payee, &hubs[3], addrs[3]).await;
    learn(&payer, &diamond, "the payer to learn the diamond").await;
    let amount = 600_000_000u128;
    let invoice = payee
        .create_invoice(Amount(amount), 3600, hubs[3].address())
        .await
        .unwrap();
    let a = |i: usize| hubs[i].address();
    let parts = [
        (vec![a(0), a(1), a(3)], Amount(amount / 2)),
        (vec![a(0), a(2), a(3)], Amount(amount / 2)),
    ];
    let mut received = payee.subscribe();
    let ids = payer
        .pay_parts(&invoice, alloy::primitives::B256::repeat_byte(9), &parts)
        .await
        .unwrap();
    wait_for(
        &mut received,
        |e| matches!(e, NodeEvent::PaymentReceived { amount: got, .. } if *got == Amount(amount)),
    )
    .await;
    let mut fees = 0;
    for pid in &ids {
        until("each part to succeed", || {
            matches!(
                payer.payment(*pid).unwrap().map(|r| r.status),
                Some(PaymentStatus::Succeeded { .. })
            )
        })
        .await;
        fees += payer.payment(*pid).unwrap().unwrap().fee().0;
    }
    // Each side's hub forwarded one part and earned its fee on it.
    let f4 = policy(4).fee(Amount(amount / 2)).unwrap().0;
    for side in [1usize, 2] {
        let f = policy(side as u128 + 1)
            .fee(Amount(amount / 2 + f4))
            .unwrap()
            .0;
        until("the side hub's forward to settle", || {
            hubs[side].fees_earned().unwrap() == (Amount(f), 1)
        })
        .await;
    }
    wait_state(&payee, down, |s| s.state.locks.is_empty()).await;
    let st = payee.channel(down).await.unwrap().state;
    assert_eq!(st.balances, [Amount(ETH + amount), Amount(ETH - amount)]);
    wait_state(&payer, up, |s| s.state.locks.is_empty()).await;
    let st = payer.channel(up).await.unwrap().state;
    assert_eq!(
        st.balances,
        [Amount(ETH - amount - fees), Amount(ETH + amount + fees)]
    );
}

/// Two ways from hub 1 to hub 3: through hub 2 (cheaper) and through hub 4. Hub 2 has paid out
/// almost all its side of its channel to hub 3, so the first attempt fails at hub 2 — the
/// second hub on the route, its failure wrapped by hub 1 on the way back — and names it; the
/// retry leaves out hub 2 → hub 3 and succeeds through hub 4 with exactly that route's fees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_deep_in_the_route_names_its_hub_and_the_retry_succeeds() {
    let net = Devnet::start().await.unwrap();
    let mut dirs = Vec::new();
    let (hubs, addrs) = start_hubs(&net, 4, &mut dirs).await;
    let h12 = channel(&hubs[0], &hubs[1], addrs[1]).await;
    let h23 = channel(&hubs[1], &hubs[2], addrs[2]).await;
    let h14 = channel(&hubs[0], &hubs[3], addrs[3]).await;
    let h43 = channel(&hubs[3], &hubs[2], addrs[2]).await;
    let payer = node(&net, 5, &mut dirs, None).await;
    let payee = node(&net, 6, &mut dirs, None).await;
    let up = channel(&payer, &hubs[0], addrs[0]).await;
    let down = channel(&payee, &hubs[2], addrs[2]).await;
    learn(
        &payer,
        &[h12, h23, h14, h43],
        "the payer to learn the four hub channels",
    )
    .await;
    // Hub 2 pays all but 1,000 wei of its side of hub 2 – hub 3 over to hub 3.
    hubs[1].transfer(h23, Amount(ETH - 1_000)).await.unwrap();
    wait_state(&hubs[2], h23, |s| s.state.balances[0] == Amount(1_000)).await;

    let amount = 1_000_000_000u128;
    let id = alloy::primitives::B256::repeat_byte(4);
    let attempts = pay_retrying(&payer, &payee, hubs[2].address(), amount, id).await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let [first, second] = [&attempts[0], &attempts[1]];
    let through = |h: usize| {
        [
            hubs[0].address(),
            hubs[h].address(),
            hubs[2].address(),
            payee.address(),
        ]
    };
    assert_eq!(first.path, through(1), "the cheaper side first");
    assert_eq!(
        first.failed_at,
        Some((hubs[1].address(), FailureReason::TemporaryChannelFailure)),
        "the failure names hub 2, two hops from the payer"
    );
    assert!(matches!(first.status, PaymentStatus::Failed { .. }));
    assert_eq!(second.path, through(3));
    assert!(matches!(second.status, PaymentStatus::Succeeded { .. }));
    let f3 = policy(3).fee(Amount(amount)).unwrap().0;
    let f4 = policy(4).fee(Amount(amount + f3)).unwrap().0;
    let f1 = policy(1).fee(Amount(amount + f3 + f4)).unwrap().0;
    assert_eq!(second.fee(), Amount(f1 + f4 + f3));
    // Every channel: the failed attempt moved nothing, the second moved exactly its amounts.
    let settled = |id| {
        let hubs = &hubs;
        async move {
            for n in hubs {
                if n.channel(id).await.is_some() {
                    wait_state(n, id, |s| s.state.locks.is_empty()).await;
                    return n.channel(id).await.unwrap().state.balances;
                }
            }
            unreachable!("a hub holds every channel")
        }
    };
    let a = |x: u128| Amount(x);
    assert_eq!(
        settled(up).await,
        [
            a(ETH - amount - f1 - f4 - f3),
            a(ETH + amount + f1 + f4 + f3)
        ]
    );
    assert_eq!(
        settled(h14).await,
        [a(ETH - amount - f4 - f3), a(ETH + amount + f4 + f3)],
        "hub 1 kept f1"
    );
    assert_eq!(
        settled(h43).await,
        [a(ETH - amount - f3), a(ETH + amount + f3)],
        "hub 4 kept f4"
    );
    assert_eq!(
        settled(down).await,
        [a(ETH + amount), a(ETH - amount)],
        "hub 3 kept f3, the payee got the amount"
    );
    assert_eq!(
        settled(h12).await,
        [a(ETH), a(ETH)],
        "nothing moved on the failed side"
    );
    assert_eq!(settled(h23).await, [a(1_000), a(2 * ETH - 1_000)]);
}

/// Gossip over real QUIC on a real chain: a peer with a funded channel to hub 3 sends hub 3
/// forged gossip — an announcement of a channel between two keys it holds that was never
/// funded, an announcement of its own channel with a signature hub 3 never made, and a fee
/// update in hub 2's name that hub 2 never signed; none is believed anywhere. Hub 3 then
/// changes its fee: the change reaches the payer, a client of hub 1 two hubs away, which then
/// pays exactly the new fee.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_gossip_is_ignored_and_a_policy_update_reaches_a_client_two_hubs_away() {
    use htlc::node::gossip::{Announcement, GossipMsg, PolicyUpdate};
    use htlc::state::ChannelParams;
    use hub::wire::Frame;
    let l = line().await;
    let h3 = &l.hubs[2];
    learn(&l.payer, &l.channels[1..3], "the payer to learn the line").await;
    let before = l.payer.gossip();

    // The attacker: dev account 6, a channel with hub 3 funded on chain (gossip from a peer
    // without a funded channel is dropped before any look).
    let keys6 = Keys::from_signer(l.chain.signer(6).unwrap());
    let mut evil = common::adversary::Adversary::connect(l.addrs[2], keys6.clone()).await;
    let params = ChannelParams {
        chain_id: l.chain.chain_id(),
        adjudicator: l.chain.deployment().adjudicator,
        participants: [evil.address(), h3.address()],
        asset: alloy::primitives::Address::ZERO,
        challenge_duration: htlc::forward::MIN_CHALLENGE_DURATION_SECS,
        nonce: alloy::primitives::U256::from(66u64),
    };
    let evil_id = evil
        .open_params(params.clone(), [Amount(ETH / 10), Amount::ZERO])
        .await
        .unwrap();
    let chain6 = l.chain.client(6).await.unwrap();
    chain6
        .deposit(&params, Amount::ZERO, Amount(ETH / 10))
        .await
        .unwrap();
    until("hub 3 to see the attacker's channel funded", || {
        h3.channel_record(evil_id).is_some_and(|r| r.funded)
    })
    .await;

    // 1. Two keys of the attacker's, both signatures valid, never funded on chain.
    let (k1, k2) = (
        Keys::from_bytes([0x61; 32]).unwrap(),
        Keys::from_bytes([0x62; 32]).unwrap(),
    );
    let ghost = ChannelParams {
        participants: [k1.address(), k2.address()],
        nonce: alloy::primitives::U256::from(67u64),
        ..params.clone()
    };
    let unfunded = Announcement {
        sigs: [
            Announcement::sign(&ghost, &k1),
            Announcement::sign(&ghost, &k2),
        ],
        params: ghost.clone(),
    };
    // 2. Its own channel with hub 3, hub 3's signature made by another key.
    let forged_sig = Announcement {
        sigs: [
            Announcement::sign(&params, &keys6),
            Announcement::sign(&params, &k1),
        ],
        params: params.clone(),
    };
    // 3. A zero fee for hub 2's direction of hub 2 – hub 3, signed by the attacker.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let free = ForwardPolicy {
        base_fee: Amount::ZERO,
        fee_ppm: 0,
        ..ForwardPolicy::default()
    };
    let forged_update = PolicyUpdate {
        node: l.hubs[1].address(),
        ..PolicyUpdate::sign(l.channels[2], free, now + 5, &keys6)
    };
    for m in [
        GossipMsg::Announce(Box::new(unfunded)),
        GossipMsg::Announce(Box::new(forged_sig)),
        GossipMsg::Policy(Box::new(forged_update)),
    ] {
        evil.send_frame(&Frame::Gossip(Box::new(m))).await;
    }

    // Hub 3 raises its fee; the payer, two hubs away, hears of it.
    let dearer = ForwardPolicy {
        base_fee: Amount(77_000),
        fee_ppm: 700,
        ..policy(3)
    };
    h3.update_policy(dearer).await.unwrap();
    until("hub 3's new fee to reach the payer", || {
        l.payer
            .gossip()
            .get(&l.channels[2])
            .and_then(|c| c.policies[1].as_ref())
            .is_some_and(|u| u.policy == dearer)
    })
    .await;
    // The forgeries: nowhere, not even after a while.
    for _ in 0..25 {
        for n in [&l.payer, &l.hubs[0], &l.hubs[1], h3] {
            let g = n.gossip();
            assert_eq!(g.len(), 2, "only the line's two channels are believed");
            assert!(!g.contains_key(&ghost.id()) && !g.contains_key(&evil_id));
            assert_eq!(
                g[&l.channels[2]].policies[0], before[&l.channels[2]].policies[0],
                "hub 2's direction keeps hub 2's own policy"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The payer prices hub 3 at its new fee and pays exactly that.
    let amount = 1_000_000_000u128;
    let invoice = l
        .payee
        .create_invoice(Amount(amount), 3600, h3.address())
        .await
        .unwrap();
    let id = alloy::primitives::B256::repeat_byte(5);
    let attempts = l
        .payer
        .pay_with_retries(&invoice, id, 1, Duration::from_secs(30))
        .await
        .unwrap();
    let rec = attempts.last().unwrap();
    assert!(
        matches!(rec.status, PaymentStatus::Succeeded { .. }),
        "{rec:?}"
    );
    let f3 = dearer.fee(Amount(amount)).unwrap().0;
    let f2 = policy(2).fee(Amount(amount + f3)).unwrap().0;
    let f1 = policy(1).fee(Amount(amount + f3 + f2)).unwrap().0;
    assert_eq!(rec.fee(), Amount(f1 + f2 + f3));
    wait_state(h3, l.channels[3], |s| s.state.locks.is_empty()).await;
    let st = h3.channel(l.channels[2]).await.unwrap().state;
    assert_eq!(
        st.balances,
        [Amount(ETH - amount - f3), Amount(ETH + amount + f3)],
        "hub 3 earned exactly its new fee"
    );
}

/// A virtual channel between two hubs, learned from gossip (ADR 0026, ADR 0028): hub 1 opens
/// one with hub 3 over hub 2 (which serves virtual channels), and both announce it. The payer,
/// a client of hub 1, comes to believe it as a virtual edge beside the two hub-to-hub ledgers,
/// and its router takes it: the payment goes payer → hub 1 → (virtual) → hub 3 → payee, each of
/// hubs 1 and 3 earning exactly its fee, hub 2 forwarding nothing (only the channel's messages
/// cross it) and its ledgers unmoved by the payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_crosses_a_virtual_channel_between_hubs_learned_from_gossip() {
    let net = Devnet::start().await.unwrap();
    let mut dirs = Vec::new();
    let mut hubs = Vec::new();
    let mut addrs = Vec::new();
    for i in 1..=3usize {
        let d = TempDir::new("multihub");
        let h = chain_node(&net, i, &d.0, |o| {
            o.collateral = Amount(ETH);
            o.policy = policy(i as u128);
            o.announce = true;
            if i == 2 {
                o.virtual_policy = Some(htlc::vchan::VirtualPolicy::default());
            }
        })
        .await;
        dirs.push(d);
        addrs.push(h.listen(loopback()).unwrap());
        hubs.push(h);
    }
    let payer = node(&net, 4, &mut dirs, None).await;
    let payee = node(&net, 5, &mut dirs, None).await;
    let _up = channel(&payer, &hubs[0], addrs[0]).await;
    let l12 = channel(&hubs[0], &hubs[1], addrs[1]).await;
    let l23 = channel(&hubs[1], &hubs[2], addrs[2]).await;
    let down = channel(&payee, &hubs[2], addrs[2]).await;
    learn(
        &payer,
        &[l12, l23],
        "the payer to learn the hub-to-hub ledgers",
    )
    .await;

    let deposit = ETH / 2;
    let v = hubs[0]
        .open_virtual(
            hubs[1].address(),
            hubs[2].address(),
            Amount(deposit),
            86_400,
        )
        .await
        .unwrap();
    learn(
        &payer,
        &[l12, l23, v],
        "the payer to learn the hubs' virtual channel",
    )
    .await;
    let c = &payer.gossip()[&v];
    assert!(c.virtual_until.is_some(), "announced as a virtual channel");
    assert_eq!(
        c.capacity,
        Amount(deposit),
        "its value, as both hubs signed it"
    );
    assert_eq!(
        c.ann.params.participants,
        [hubs[0].address(), hubs[2].address()]
    );
    let l12_before = hubs[0].channel(l12).await.unwrap().state.balances;
    let l23_before = hubs[1].channel(l23).await.unwrap().state.balances;

    let amount = 1_000_000_000u128;
    let invoice = payee
        .create_invoice(Amount(amount), 3600, hubs[2].address())
        .await
        .unwrap();
    let mut ev = payer.subscribe();
    let id = alloy::primitives::B256::repeat_byte(7);
    let rec = payer.pay(&invoice, id).await.unwrap();
    assert_eq!(
        rec.path,
        vec![hubs[0].address(), hubs[2].address(), payee.address()],
        "the router took the virtual edge (two hubs' fees, not three)"
    );
    wait_for(
        &mut ev,
        |e| matches!(e, NodeEvent::PaymentSucceeded { id: p, .. } if *p == id),
    )
    .await;
    let fee3 = policy(3).fee(Amount(amount)).unwrap().0;
    let fee1 = policy(1).fee(Amount(amount + fee3)).unwrap().0;
    assert_eq!(
        payer.payment(id).unwrap().unwrap().fee(),
        Amount(fee1 + fee3)
    );
    // Inside the virtual channel hub 1 paid hub 3 what hub 3 forwarded plus its fee.
    wait_state(&hubs[0], v, |s| s.state.locks.is_empty()).await;
    assert_eq!(
        hubs[0].channel(v).await.unwrap().state.balances,
        [Amount(deposit - amount - fee3), Amount(amount + fee3)]
    );
    wait_state(&payee, down, |s| s.state.locks.is_empty()).await;
    assert_eq!(
        payee.channel(down).await.unwrap().state.balances,
        [Amount(ETH + amount), Amount(ETH - amount)]
    );
    for (h, fee) in [(&hubs[0], fee1), (&hubs[2], fee3)] {
        until("the hub's forward to settle", || {
            h.fees_earned().unwrap() == (Amount(fee), 1)
        })
        .await;
    }
    assert_eq!(hubs[1].fees_earned().unwrap(), (Amount::ZERO, 0));
    assert_eq!(
        hubs[0].channel(l12).await.unwrap().state.balances,
        l12_before
    );
    assert_eq!(
        hubs[1].channel(l23).await.unwrap().state.balances,
        l23_before
    );
}
