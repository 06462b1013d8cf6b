//! Virtual channels over one hub (ADR 0026) with real QUIC, real RocksDB and a real chain
//! (anvil): opened over the two ledgers, paid inside both ways (relayed by the hub), closed by
//! its final state releasing both legs, and the ledgers then paid out on chain to the wei; and
//! a hub that vanishes after the open, the parties settling the virtual channel on chain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use contracts::Devnet;
use htlc::vchan::VirtualPolicy;
use htlc::{Amount, ChannelId};
use hub::clock::Clock;
use hub::events::NodeEvent;
use hub::node::{Node, NodeOptions};
use std::time::Duration;

mod common;
use common::{TempDir, chain_node, concluded, loopback, payouts, wait_state};

const ETH: u128 = 1_000_000_000_000_000_000;
const COLLATERAL: u128 = ETH;
const FEE_BASE: u128 = 1_000_000;
const FEE_PPM: u32 = 1_000;

struct Net {
    _dirs: Vec<TempDir>,
    chain: Devnet,
    hub: Node,
    alice: Node,
    bob: Node,
    /// alice–hub (alice is A) and bob–hub (bob is A: the hub stands for the virtual
    /// channel's A on ledger side B, a crossed guarantee).
    ledger: [ChannelId; 2],
}

async fn node(
    net: &Devnet,
    i: usize,
    dirs: &mut Vec<TempDir>,
    clock: &Clock,
    tune: impl Fn(&mut NodeOptions),
) -> Node {
    let d = TempDir::new("virtual");
    let n = chain_node(net, i, &d.0, |o| {
        o.clock = clock.clone();
        tune(o);
    })
    .await;
    dirs.push(d);
    n
}

async fn setup() -> Net {
    setup_with(&Clock::system()).await
}

/// As [`setup`], every node on `clock` (a test moves it forward).
async fn setup_with(clock: &Clock) -> Net {
    let net = Devnet::start().await.unwrap();
    let mut dirs = Vec::new();
    let hub = node(&net, 1, &mut dirs, clock, |o| {
        o.collateral = Amount(COLLATERAL);
        o.virtual_policy = Some(VirtualPolicy {
            open_fee_base: Amount(FEE_BASE),
            open_fee_ppm: FEE_PPM,
            ..VirtualPolicy::default()
        });
    })
    .await;
    let addr = hub.listen(loopback()).unwrap();
    let mut ledger = Vec::new();
    let mut peers = Vec::new();
    for i in [2, 3] {
        let n = node(&net, i, &mut dirs, clock, |_| {}).await;
        n.connect(addr, Some(hub.address())).await.unwrap();
        let id = n.open_channel(hub.address(), Amount(ETH)).await.unwrap();
        n.fund(id).await.unwrap();
        wait_state(&n, id, |s| s.state.balances[1] == Amount(COLLATERAL)).await;
        wait_state(&hub, id, |s| s.state.balances[1] == Amount(COLLATERAL)).await;
        ledger.push(id);
        peers.push(n);
    }
    let bob = peers.pop().unwrap();
    let alice = peers.pop().unwrap();
    Net {
        _dirs: dirs,
        chain: net,
        hub,
        alice,
        bob,
        ledger: [ledger[0], ledger[1]],
    }
}

impl Net {
    /// Alice opens a virtual channel with bob over the hub with `deposit`, pays him `paid`
    /// inside it, and both see the payment co-signed.
    async fn open_and_pay(&self, deposit: u128, paid: u128) -> ChannelId {
        let v = self
            .alice
            .open_virtual(
                self.hub.address(),
                self.bob.address(),
                Amount(deposit),
                3600,
            )
            .await
            .unwrap();
        self.alice.transfer(v, Amount(paid)).await.unwrap();
        for n in [&self.bob, &self.alice] {
            wait_state(n, v, |s| s.state.balances[1] == Amount(paid)).await;
        }
        v
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_channel_opened_used_and_closed_over_a_hub_pays_out_exactly_on_chain() {
    let net = setup().await;
    let deposit = 4 * ETH / 10;
    let fee = FEE_BASE + deposit * u128::from(FEE_PPM) / 1_000_000;
    let v = net
        .alice
        .open_virtual(net.hub.address(), net.bob.address(), Amount(deposit), 3600)
        .await
        .unwrap();
    // Both legs lock the guarantee; the hub's record lists both.
    let hub_view = net.hub.virtual_info();
    assert_eq!(hub_view.len(), 1);
    assert_eq!(hub_view[0].channel, v);
    assert_eq!(hub_view[0].ledgers, net.ledger.to_vec());
    // The operator sees it in the hub's metrics: one open, its value served.
    let m = net.hub.metrics_text().await;
    assert_eq!(virtual_gauge(&m, "hub", "open"), Some(1), "{m}");
    assert!(m.contains("vhub_virtual_value_served_ether 0.4\n"), "{m}");
    assert!(m.contains("vhub_virtual_opened_total 1\n"), "{m}");
    assert!(m.contains("vhub_virtual_releases_held 0\n"), "{m}");
    let g = |s: &htlc::SignedState| s.state.guarantees.first().copied();
    wait_state(&net.hub, net.ledger[1], |s| g(s).is_some()).await;
    let leg_b = g(&net.bob.channel(net.ledger[1]).await.unwrap()).unwrap();
    assert!(
        leg_b.crossed,
        "the hub is B on bob's ledger and stands for the payer"
    );
    assert_eq!(
        (leg_b.from_a, leg_b.from_b),
        (Amount::ZERO, Amount(deposit))
    );

    // Payments inside it, both ways, relayed by the hub.
    net.alice.transfer(v, Amount(ETH / 10)).await.unwrap();
    wait_state(&net.bob, v, |s| s.state.balances[1] == Amount(ETH / 10)).await;
    net.bob.transfer(v, Amount(3 * ETH / 100)).await.unwrap();
    let (va, vb) = (deposit - ETH / 10 + 3 * ETH / 100, ETH / 10 - 3 * ETH / 100);
    wait_state(&net.alice, v, |s| {
        s.state.balances == [Amount(va), Amount(vb)]
    })
    .await;
    assert!(
        net.hub.channel(v).await.is_none(),
        "the hub keeps no state of it"
    );

    // Closed: its final state releases both legs.
    net.bob.close(v).await.unwrap();
    for (n, id) in [
        (&net.alice, net.ledger[0]),
        (&net.hub, net.ledger[0]),
        (&net.bob, net.ledger[1]),
        (&net.hub, net.ledger[1]),
    ] {
        wait_state(n, id, |s| s.state.guarantees.is_empty()).await;
    }
    let up = net.hub.channel(net.ledger[0]).await.unwrap().state.balances;
    let down = net.hub.channel(net.ledger[1]).await.unwrap().state.balances;
    assert_eq!(
        up,
        [
            Amount(ETH - deposit - fee + va),
            Amount(COLLATERAL + fee + vb)
        ]
    );
    assert_eq!(down, [Amount(ETH + vb), Amount(COLLATERAL - deposit + va)]);
    assert!(net.hub.virtual_info()[0].phase == "settled");
    let m = net.hub.metrics_text().await;
    assert_eq!(virtual_gauge(&m, "hub", "settled"), Some(1), "{m}");
    assert_eq!(virtual_gauge(&m, "hub", "open"), None, "{m}");
    assert!(m.contains("vhub_virtual_value_served_ether 0\n"), "{m}");

    // The ledgers close cooperatively and pay out on chain exactly those balances.
    let mut ea = net.alice.subscribe();
    let mut eb = net.bob.subscribe();
    net.alice.close(net.ledger[0]).await.unwrap();
    net.bob.close(net.ledger[1]).await.unwrap();
    assert_eq!(concluded(&mut ea, net.ledger[0]).await, up);
    assert_eq!(concluded(&mut eb, net.ledger[1]).await, down);
    // The hub got back its collateral on both, plus the fee.
    assert_eq!(up[1].0 + down[1].0, 2 * COLLATERAL + fee);
}

/// The `vhub_virtual_channels` gauge for `role` and `phase` in a metrics exposition.
fn virtual_gauge(metrics: &str, role: &str, phase: &str) -> Option<i64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("vhub_virtual_channels{"))
        .filter(|l| l.contains(&format!("role=\"{role}\"")))
        .find(|l| l.contains(&format!("phase=\"{phase}\"")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Wait (60 s at most) until `f` holds for what the chain shows of channel `id`.
async fn wait_chain(
    reader: &contracts::ChainClient,
    id: ChannelId,
    what: &str,
    f: impl Fn(&contracts::OnChainChannel) -> bool,
) {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !f(&reader.channel(id).await.unwrap()) {
        assert!(std::time::Instant::now() < until, "{what}: timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The hub vanishes after the virtual channel opened and carried a payment. Each party closes
/// its ledger on chain; once the ledgers are paid out, the parties take the virtual channel to
/// chain with their latest state and resolve each ledger's guarantee by it. Everyone gets
/// exactly its due: the parties their virtual balances, the hub (which did nothing) exactly its
/// collateral back, plus the opening fee.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_vanishes_and_the_parties_settle_the_virtual_channel_on_chain() {
    let net = setup().await;
    let deposit = 4 * ETH / 10;
    let fee = FEE_BASE + deposit * u128::from(FEE_PPM) / 1_000_000;
    let v = net.open_and_pay(deposit, ETH / 10).await;
    let hub_addr = net.hub.address();
    net.hub.shutdown();

    let reader = net.chain.client(0).await.unwrap();
    net.alice.force_close(net.ledger[0]).await.unwrap();
    net.bob.force_close(net.ledger[1]).await.unwrap();
    for id in net.ledger {
        wait_chain(&reader, id, "ledger disputed", |c| c.finalizes_at != 0).await;
    }
    let window = net
        .alice
        .channel_record(net.ledger[0])
        .unwrap()
        .snapshot
        .params()
        .challenge_duration;
    net.chain.increase_time(window + 5).await.unwrap();
    for id in net.ledger {
        wait_chain(&reader, id, "ledger paid out", |c| c.concluded).await;
    }
    // The parties register the virtual channel's latest state; after its window they resolve.
    wait_chain(&reader, v, "virtual channel disputed", |c| {
        c.finalizes_at != 0
    })
    .await;
    assert_eq!(reader.channel(v).await.unwrap().version, 1);
    net.chain.increase_time(window + 5).await.unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    for id in net.ledger {
        while !reader.guarantee_resolved(id, 0).await.unwrap() {
            assert!(
                std::time::Instant::now() < until,
                "guarantee never resolved"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (alice, bob) = (net.alice.address(), net.bob.address());
    let up = payouts(&reader, net.ledger[0], [alice, hub_addr]).await;
    let down = payouts(&reader, net.ledger[1], [bob, hub_addr]).await;
    let (va, vb) = (deposit - ETH / 10, ETH / 10);
    assert_eq!(up[&alice], ETH - deposit - fee + va);
    assert_eq!(down[&bob], ETH + vb);
    assert_eq!(up[&hub_addr] + down[&hub_addr], 2 * COLLATERAL + fee);
    for id in net.ledger {
        assert_eq!(reader.holdings(id).await.unwrap(), Amount::ZERO);
    }
    net.alice.shutdown();
    net.bob.shutdown();
}

/// Once the two parties have a session of their own, the virtual channel's messages go over it:
/// they pay each other inside it while the hub is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parties_pay_each_other_inside_the_virtual_channel_while_the_hub_is_stopped() {
    let net = setup().await;
    let deposit = 4 * ETH / 10;
    let v = net
        .alice
        .open_virtual(net.hub.address(), net.bob.address(), Amount(deposit), 3600)
        .await
        .unwrap();
    let bob_addr = net.bob.listen(loopback()).unwrap();
    net.alice
        .connect(bob_addr, Some(net.bob.address()))
        .await
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !net.bob.is_connected(net.alice.address()).await {
        assert!(
            std::time::Instant::now() < until,
            "the parties' session never came up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    net.hub.shutdown();
    net.alice.transfer(v, Amount(ETH / 10)).await.unwrap();
    wait_state(&net.bob, v, |s| {
        s.state.balances == [Amount(deposit - ETH / 10), Amount(ETH / 10)]
    })
    .await;
    net.bob.transfer(v, Amount(ETH / 20)).await.unwrap();
    let want = [Amount(deposit - ETH / 20), Amount(ETH / 20)];
    wait_state(&net.alice, v, |s| s.state.balances == want).await;
    wait_state(&net.bob, v, |s| s.state.balances == want).await;
    assert_eq!(net.alice.channel(v).await.unwrap().state.version, 2);
    net.alice.shutdown();
    net.bob.shutdown();
}

/// The payee vanishes after the virtual channel carried a payment. The hub closes its ledger
/// with it on chain; once paid out, the hub starts the virtual channel's dispute from its
/// guarantee (the opening as funded), the payer answers with its latest state, and the hub
/// resolves its leg by it: the hub gets exactly its balance plus the payer's virtual balance
/// it stood for, the vanished payee its own, nothing stays locked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payee_that_vanishes_cannot_keep_the_hubs_collateral_locked() {
    let net = setup().await;
    let deposit = 4 * ETH / 10;
    let v = net.open_and_pay(deposit, ETH / 10).await;
    let bob = net.bob.address();
    net.bob.shutdown();

    let reader = net.chain.client(0).await.unwrap();
    let leg = net.ledger[1];
    net.hub.force_close(leg).await.unwrap();
    wait_chain(&reader, leg, "ledger disputed", |c| c.finalizes_at != 0).await;
    let window = net
        .hub
        .channel_record(leg)
        .unwrap()
        .snapshot
        .params()
        .challenge_duration;
    net.chain.increase_time(window + 5).await.unwrap();
    wait_chain(&reader, leg, "ledger paid out", |c| c.concluded).await;
    // The hub disputes the virtual channel from its guarantee; the payer answers with version 1.
    wait_chain(&reader, v, "virtual channel at version 1", |c| {
        c.finalizes_at != 0 && c.version == 1
    })
    .await;
    net.chain.increase_time(window + 5).await.unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !reader.guarantee_resolved(leg, 0).await.unwrap() {
        assert!(
            std::time::Instant::now() < until,
            "the hub never resolved its leg"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hub_addr = net.hub.address();
    let paid = payouts(&reader, leg, [bob, hub_addr]).await;
    // Bob's ledger (bob is A): the hub's balance, plus the payer's virtual balance it stood for.
    assert_eq!(
        paid[&hub_addr],
        (COLLATERAL - deposit) + (deposit - ETH / 10)
    );
    assert_eq!(paid[&bob], ETH + ETH / 10);
    assert_eq!(reader.holdings(leg).await.unwrap(), Amount::ZERO);
    net.alice.shutdown();
    net.hub.shutdown();
}

/// Both parties vanish with the virtual channel open and let its end pass: the hub, its margin
/// after the end, closes its two ledgers holding the guarantee on chain by itself, starts the
/// channel's dispute from its guarantee (nobody else does) and resolves both legs by the
/// opening as funded: it gets back exactly its collateral plus the opening fee, the parties
/// exactly their ledger balances and the channel's opening split; nothing stays locked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_settles_on_chain_a_virtual_channel_left_open_past_its_end() {
    let clock = Clock::system();
    let net = setup_with(&clock).await;
    let deposit = 4 * ETH / 10;
    let fee = FEE_BASE + deposit * u128::from(FEE_PPM) / 1_000_000;
    let v = net.open_and_pay(deposit, ETH / 10).await;
    let (alice, bob, hub_addr) = (net.alice.address(), net.bob.address(), net.hub.address());
    net.alice.shutdown();
    net.bob.shutdown();
    let mut events = net.hub.subscribe();
    // Past the end and the hub's margin (the nodes' clock; the chain's is moved below).
    clock.advance(3600 + 600 + 1);
    let reader = net.chain.client(0).await.unwrap();
    for id in net.ledger {
        wait_chain(&reader, id, "ledger disputed by the hub", |c| {
            c.finalizes_at != 0
        })
        .await;
    }
    let mut said = Vec::new();
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
        if let NodeEvent::VirtualExpired { channel_id, ledger } = e {
            assert_eq!(channel_id, v);
            said.push(ledger);
        }
    }
    said.sort();
    let mut want = net.ledger.to_vec();
    want.sort();
    assert_eq!(said, want, "the hub says which ledgers it took on chain");
    let window = net
        .hub
        .channel_record(net.ledger[0])
        .unwrap()
        .snapshot
        .params()
        .challenge_duration;
    net.chain.increase_time(window + 5).await.unwrap();
    for id in net.ledger {
        wait_chain(&reader, id, "ledger paid out", |c| c.concluded).await;
    }
    wait_chain(
        &reader,
        v,
        "virtual channel disputed from the guarantee",
        |c| c.finalizes_at != 0,
    )
    .await;
    net.chain.increase_time(window + 5).await.unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    for id in net.ledger {
        while !reader.guarantee_resolved(id, 0).await.unwrap() {
            assert!(
                std::time::Instant::now() < until,
                "the hub never resolved its legs"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let up = payouts(&reader, net.ledger[0], [alice, hub_addr]).await;
    let down = payouts(&reader, net.ledger[1], [bob, hub_addr]).await;
    // The opening as funded: alice keeps her whole deposit (her payment inside, never
    // registered by the vanished parties, does not count), bob nothing from it.
    assert_eq!(up[&alice], ETH - fee);
    assert_eq!(down[&bob], ETH);
    assert_eq!(up[&hub_addr] + down[&hub_addr], 2 * COLLATERAL + fee);
    for id in net.ledger {
        assert_eq!(reader.holdings(id).await.unwrap(), Amount::ZERO);
    }
    net.hub.shutdown();
}

/// `from` tells `to` its forwarding policy; wait (10 s at most) until `to` knows it.
async fn announce_policy(from: &Node, to: &Node) {
    from.announce_policy(to.address()).await.unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while to.hub_policy(from.address()).unwrap().is_none() {
        assert!(
            std::time::Instant::now() < until,
            "{} never heard {}'s policy",
            to.address(),
            from.address()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The fee a node with the default forwarding policy charges to forward `amount`.
fn default_fee(amount: u128) -> u128 {
    let policy = NodeOptions::default().policy;
    policy.base_fee.0 + amount * u128::from(policy.fee_ppm) / 1_000_000
}

/// Wait (30 s at most) for payment `id` to succeed with exactly `fee` paid.
async fn assert_succeeded(
    events: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
    id: alloy::primitives::B256,
    fee: u128,
) {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.recv().await.unwrap() {
                NodeEvent::PaymentSucceeded { id: p, fee: f } if p == id => {
                    assert_eq!(f, Amount(fee));
                    return;
                }
                NodeEvent::PaymentFailed { id: p, reason } if p == id => {
                    panic!("the payment failed: {reason:?}")
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the payment ends");
}

/// A payment routed over a ledger edge and then a virtual edge (issue 15): the hub pays bob's
/// invoice through alice, who forwards it over her virtual channel with bob; the route
/// instruction and the virtual channel's updates go over the hub (alice and bob have no session
/// of their own). Fulfilled, with alice's fee exact on the ledger and the amount exact inside
/// the virtual channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_routed_over_a_ledger_edge_then_a_virtual_edge_pays_exact_fees() {
    let net = setup().await;
    let deposit = 4 * ETH / 10;
    // Long enough for the payee's lock (its default final delta, two hours) to end inside it.
    let v = net
        .alice
        .open_virtual(
            net.hub.address(),
            net.bob.address(),
            Amount(deposit),
            4 * 3600,
        )
        .await
        .unwrap();
    announce_policy(&net.alice, &net.hub).await;
    let up0 = net
        .alice
        .channel(net.ledger[0])
        .await
        .unwrap()
        .state
        .balances;
    let amount = ETH / 1000;
    let inv = net
        .bob
        .create_invoice(Amount(amount), 3600, net.alice.address())
        .await
        .unwrap();
    let mut events = net.hub.subscribe();
    let id = alloy::primitives::B256::repeat_byte(0x51);
    net.hub.pay(&inv, id).await.unwrap();
    let fee = default_fee(amount);
    assert_succeeded(&mut events, id, fee).await;
    // Ledger alice–hub: the hub's side paid alice amount + fee; inside the virtual channel
    // alice paid bob the amount.
    let want_up = [
        Amount(up0[0].0 + amount + fee),
        Amount(up0[1].0 - amount - fee),
    ];
    wait_state(&net.alice, net.ledger[0], |s| s.state.balances == want_up).await;
    wait_state(&net.hub, net.ledger[0], |s| s.state.balances == want_up).await;
    let want_v = [Amount(deposit - amount), Amount(amount)];
    wait_state(&net.bob, v, |s| s.state.balances == want_v).await;
    wait_state(&net.alice, v, |s| s.state.balances == want_v).await;
    assert!(!net.alice.is_connected(net.bob.address()).await);
    assert!(
        net.bob
            .received()
            .unwrap()
            .iter()
            .any(|i| i.hashlock == inv.hashlock)
    );
    net.alice.shutdown();
    net.bob.shutdown();
    net.hub.shutdown();
}

/// The other way round: a virtual edge and then a ledger edge. Bob tells alice his forwarding
/// policy over the hub (they have no session of their own); alice pays an invoice of the hub
/// through bob: over their virtual channel to bob, then over bob's ledger to the hub. Bob's fee
/// exact, the amounts exact on both edges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_routed_over_a_virtual_edge_then_a_ledger_edge_pays_exact_fees() {
    let net = setup().await;
    let deposit = 4 * ETH / 10;
    let v = net
        .alice
        .open_virtual(
            net.hub.address(),
            net.bob.address(),
            Amount(deposit),
            4 * 3600,
        )
        .await
        .unwrap();
    announce_policy(&net.bob, &net.alice).await;
    let down0 = net.bob.channel(net.ledger[1]).await.unwrap().state.balances;
    let amount = ETH / 1000;
    let inv = net
        .hub
        .create_invoice(Amount(amount), 3600, net.bob.address())
        .await
        .unwrap();
    // In alice's router graph the virtual channel is an edge of its own kind, beside her
    // ledger with the hub.
    let g = net.alice.route_graph(&inv).unwrap();
    assert_eq!(g.channel(&v).unwrap().kind, router::ChannelKind::Virtual);
    assert_eq!(
        g.channel(&net.ledger[0]).unwrap().kind,
        router::ChannelKind::Ledger
    );
    let mut events = net.alice.subscribe();
    let id = alloy::primitives::B256::repeat_byte(0x52);
    net.alice.pay(&inv, id).await.unwrap();
    let fee = default_fee(amount);
    assert_succeeded(&mut events, id, fee).await;
    // Inside the virtual channel alice paid bob amount + fee; on bob's ledger (bob is its A)
    // bob paid the hub the amount.
    let want_v = [Amount(deposit - amount - fee), Amount(amount + fee)];
    wait_state(&net.bob, v, |s| s.state.balances == want_v).await;
    let want_down = [Amount(down0[0].0 - amount), Amount(down0[1].0 + amount)];
    wait_state(&net.bob, net.ledger[1], |s| s.state.balances == want_down).await;
    wait_state(&net.hub, net.ledger[1], |s| s.state.balances == want_down).await;
    assert!(!net.alice.is_connected(net.bob.address()).await);
    net.alice.shutdown();
    net.bob.shutdown();
    net.hub.shutdown();
}

/// The virtual channel's parties sign two contradictory final states and try to settle the
/// hub's two ledgers with different ones (issue 15): alice resolves her ledger's guarantee by
/// F1 (all of it hers), bob his by F2 (all of it his). The adjudicator recorded F1 as the
/// channel's outcome, so bob's attempt reverts; the hub reads F1 from alice's resolution and
/// resolves its other leg by it. The hub loses nothing: exactly its collateral plus the fee.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contradictory_final_states_cannot_rob_the_hub_end_to_end() {
    let net = setup().await;
    let deposit = 4 * ETH / 10;
    let fee = FEE_BASE + deposit * u128::from(FEE_PPM) / 1_000_000;
    let v = net
        .alice
        .open_virtual(net.hub.address(), net.bob.address(), Amount(deposit), 3600)
        .await
        .unwrap();
    let vp = net.alice.channel_params(v).await.unwrap();
    let ka = htlc::sig::Keys::from_signer(net.chain.signer(2).unwrap());
    let kb = htlc::sig::Keys::from_signer(net.chain.signer(3).unwrap());
    let fin = |version, balances| htlc::ChannelState {
        is_final: true,
        version,
        ..htlc::ChannelState::opening(v, balances)
    };
    let f1 = fin(10, [Amount(deposit), Amount::ZERO]);
    let f2 = fin(11, [Amount::ZERO, Amount(deposit)]);
    let sign = |s: &htlc::ChannelState| {
        [
            htlc::update::sign_state(&vp, &ka, s).unwrap(),
            htlc::update::sign_state(&vp, &kb, s).unwrap(),
        ]
    };
    let (s1, s2) = (sign(&f1), sign(&f2));

    // Both ledgers go on chain and are paid out (balances; the guarantees stay).
    let reader = net.chain.client(0).await.unwrap();
    net.alice.force_close(net.ledger[0]).await.unwrap();
    net.bob.force_close(net.ledger[1]).await.unwrap();
    for id in net.ledger {
        wait_chain(&reader, id, "ledger disputed", |c| c.finalizes_at != 0).await;
    }
    let window = vp.challenge_duration;
    net.chain.increase_time(window + 5).await.unwrap();
    for id in net.ledger {
        wait_chain(&reader, id, "ledger paid out", |c| c.concluded).await;
    }
    let (la, lb) = (
        net.alice.channel(net.ledger[0]).await.unwrap().state,
        net.bob.channel(net.ledger[1]).await.unwrap().state,
    );
    let (pa, pb) = (
        net.alice.channel_params(net.ledger[0]).await.unwrap(),
        net.bob.channel_params(net.ledger[1]).await.unwrap(),
    );
    // Alice first, by F1; then bob, by F2: refused, the outcome is F1. Anyone may submit a
    // resolution; the colluders send theirs from accounts of their own (alice's and bob's
    // nodes send from their keys meanwhile, and two senders of one account race for nonces).
    let alice_chain = net.chain.client(4).await.unwrap();
    let bob_chain = net.chain.client(5).await.unwrap();
    alice_chain
        .resolve_guarantee(&pa, &la, &vp, &f1, Some(&s1))
        .await
        .unwrap();
    let err = bob_chain
        .resolve_guarantee(&pb, &lb, &vp, &f2, Some(&s2))
        .await
        .unwrap_err();
    assert!(
        err.is::<contracts::bindings::Adjudicator::VirtualOutcomeMismatch>(),
        "{err}"
    );
    // The hub resolves bob's ledger by F1 by itself.
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !reader.guarantee_resolved(net.ledger[1], 0).await.unwrap() {
        assert!(
            std::time::Instant::now() < until,
            "the hub never resolved its other leg"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (alice, bob, hub) = (net.alice.address(), net.bob.address(), net.hub.address());
    let up = payouts(&reader, net.ledger[0], [alice, hub]).await;
    let down = payouts(&reader, net.ledger[1], [bob, hub]).await;
    assert_eq!(up[&alice], ETH - fee, "F1: alice keeps her deposit");
    assert_eq!(down[&bob], ETH, "bob gets nothing of the channel");
    assert_eq!(up[&hub] + down[&hub], 2 * COLLATERAL + fee);
    for id in net.ledger {
        assert_eq!(reader.holdings(id).await.unwrap(), Amount::ZERO);
    }
    net.alice.shutdown();
    net.bob.shutdown();
    net.hub.shutdown();
}

/// `hub bench-virtual`'s workload (no chain): virtual channels opened and closed one after the
/// other, then transfers inside one in rounds; the bench waits for the exact co-signed balance
/// after every round (a lost or doubled transfer times it out). Transfers issued together are
/// co-signed in fewer updates than transfers. The figures are the README's, never asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_virtual_bench_workload_opens_closes_and_pays_every_transfer() {
    let dir = common::TempDir::new("vbench-smoke");
    let r = hub::virtual_bench::bench_virtual(hub::virtual_bench::VirtualBenchOptions {
        opens: 3,
        batches: vec![1, 50],
        duration: Duration::from_millis(500),
        dir: dir.0.clone(),
    })
    .await
    .unwrap();
    assert_eq!(r.opens, 3);
    assert!(r.open_ms[0] > 0.0 && r.close_ms[0] > 0.0, "{r:?}");
    // Over two hubs too (each open waits for the payee's signature, each close for every leg).
    assert!(r.open2_ms[0] > 0.0 && r.close2_ms[0] > 0.0, "{r:?}");
    assert_eq!(r.rows.len(), 2);
    assert!(r.rows.iter().all(|row| row.paid > 0), "{r:?}");
    assert!(
        r.rows[0].updates_per_payment >= 1.0,
        "one transfer at a time: one update each: {r:?}"
    );
    assert!(
        r.rows[1].updates_per_payment < 1.0,
        "transfers issued together share updates: {r:?}"
    );
    // Bad options are refused.
    let bad = hub::virtual_bench::bench_virtual(hub::virtual_bench::VirtualBenchOptions {
        opens: 1,
        batches: vec![0],
        duration: Duration::from_millis(10),
        dir: dir.0.join("bad"),
    })
    .await;
    assert!(matches!(bad, Err(hub::localnet::LocalNetError::Invalid(_))));
}
