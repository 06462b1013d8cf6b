//! Issue 12, the attacks that need the chain (real anvil, real RocksDB, real QUIC): a peer that
//! claims the hub's collateral as its own top-up, and a peer that keeps sending locks on a
//! channel it took to the chain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use alloy::primitives::U256;
use contracts::Devnet;
use htlc::forward::MIN_CHALLENGE_DURATION_SECS;
use htlc::sig::Keys;
use htlc::{Amount, ChannelParams, Expiry, HtlcId, Message, Op, OpError, Preimage, RejectReason};
use hub::node::{Node, NodeOptions};
use hub::store::Store;
use hub::wire::Body;
use std::time::Duration;

mod common;
use common::adversary::{Adversary, Answer, HeldLock};
use common::{TempDir, loopback, payouts};

const ETH: u128 = 1_000_000_000_000_000_000;

async fn hub_on(net: &Devnet, dir: &TempDir, collateral: u128) -> Node {
    hub_with(net, dir, collateral, 0).await
}

/// A hub believing what is buried under `confirmations` blocks.
async fn hub_with(net: &Devnet, dir: &TempDir, collateral: u128, confirmations: u64) -> Node {
    let client = net.client(1).await.unwrap();
    client.set_poll_interval(Duration::from_millis(10));
    client.set_confirmations(confirmations);
    let opts = NodeOptions {
        chain_id: net.chain_id(),
        adjudicator: net.deployment().adjudicator,
        chain: Some(client),
        collateral: Amount(collateral),
        min_peer_deposit: Amount(ETH / 100),
        chain_poll: Duration::from_millis(50),
        chain_retry: Duration::from_millis(300),
        ..NodeOptions::default()
    };
    Node::start(
        Keys::from_signer(net.signer(1).unwrap()),
        Store::open(&dir.0).unwrap(),
        opts,
    )
    .unwrap()
}

fn params_for(net: &Devnet, evil: &Adversary, hub: &Node) -> ChannelParams {
    ChannelParams {
        chain_id: net.chain_id(),
        adjudicator: net.deployment().adjudicator,
        participants: [evil.address(), hub.address()],
        asset: alloy::primitives::Address::ZERO,
        challenge_duration: MIN_CHALLENGE_DURATION_SECS,
        nonce: U256::from(rand::random::<u64>()),
    }
}

/// Open a channel as `evil` with 1 ETH of its own, deposit it on chain and tell the hub.
async fn open_and_deposit(
    net: &Devnet,
    evil: &mut Adversary,
    hub: &Node,
    chain: &contracts::ChainClient,
) -> (ChannelParams, htlc::ChannelId) {
    let params = params_for(net, evil, hub);
    let id = evil
        .open_params(params.clone(), [Amount(ETH), Amount::ZERO])
        .await
        .unwrap();
    chain
        .deposit(&params, Amount::ZERO, Amount(ETH))
        .await
        .unwrap();
    evil.send(Body::Funded { channel_id: id }).await;
    (params, id)
}

/// Wait (up to 30 s) until the hub sees channel `id` funded.
async fn wait_funded(hub: &Node, id: htlc::ChannelId) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while hub.is_funded(id).await != Some(true) {
        assert!(std::time::Instant::now() < deadline, "never funded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Attack 2: the peer refuses the hub's credit of its collateral and claims the deposit as its
/// own top-up. The hub refuses the claim, asks again for its own credit, and ends with exactly
/// its collateral; a channel whose opener never deposits gets no collateral at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_claim_the_hubs_collateral() {
    let net = Devnet::start().await.unwrap();
    let dir = TempDir::new("advc-dep");
    let hub = hub_on(&net, &dir, ETH / 2).await;
    let addr = hub.listen(loopback()).unwrap();
    let mut evil = Adversary::connect(addr, Keys::from_signer(net.signer(2).unwrap())).await;
    let chain = net.client(2).await.unwrap();
    let client = net.client(0).await.unwrap();

    // An opener that never deposits: no collateral follows.
    let idle = params_for(&net, &evil, &hub);
    let idle_id = evil
        .open_params(idle, [Amount(ETH), Amount::ZERO])
        .await
        .unwrap();
    evil.send(Body::Funded {
        channel_id: idle_id,
    })
    .await;

    // The real channel: the attacker deposits its 1 ETH, the hub adds 0.5 ETH.
    let (params, id) = open_and_deposit(&net, &mut evil, &hub, &chain).await;
    // The hub's credit arrives: refuse it.
    let credit = loop {
        match evil.next(Duration::from_secs(30)).await {
            Some(Body::Channel(Message::Propose { version, ops, .. }))
                if ops.iter().any(|o| matches!(o, Op::Deposit { .. })) =>
            {
                break version;
            }
            Some(other) => evil.handle(other).await,
            None => panic!("the hub never proposed its credit"),
        }
    };
    assert_eq!(client.holdings(id).await.unwrap(), Amount(ETH + ETH / 2));
    evil.send(Body::Channel(Message::Reject {
        channel_id: id,
        version: credit,
        reason: RejectReason::InvalidOp {
            index: 0,
            error: OpError::DepositNotOnChain,
        },
    }))
    .await;
    // Claim the hub's deposit as our own top-up (while the hub is between proposals; our
    // machine, which has not looked at the chain, keeps refusing the hub's credit).
    let answer = evil
        .forge_when_idle(
            id,
            vec![Op::Deposit {
                amount: Amount(ETH / 2),
            }],
        )
        .await;
    assert!(
        matches!(
            answer,
            Answer::Rejected(RejectReason::InvalidOp {
                error: OpError::DepositNotOnChain,
                ..
            })
        ),
        "the hub must refuse crediting its collateral to the peer: {answer:?}"
    );
    // Now behave: our machine sees the chain, and the hub's retried credit goes through.
    {
        let d = chain.deposits(&params).await.unwrap();
        let ch = evil.channels.get_mut(&id).unwrap();
        ch.observe_holdings(Amount(ETH + ETH / 2));
        ch.observe_deposits(htlc::Side::A, d[0]);
        ch.observe_deposits(htlc::Side::B, d[1]);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while hub.channel(id).await.unwrap().state.balances[1] != Amount(ETH / 2) {
        assert!(
            std::time::Instant::now() < deadline,
            "the hub's credit never landed"
        );
        if let Some(b) = evil.next(Duration::from_millis(500)).await {
            evil.handle(b).await;
        }
    }
    let s = hub.channel(id).await.unwrap().state;
    assert_eq!(s.balances, [Amount(ETH), Amount(ETH / 2)]);
    assert_eq!(s.total().unwrap(), client.holdings(id).await.unwrap());
    // The idle channel: nothing on chain, not from the hub either.
    assert_eq!(client.holdings(idle_id).await.unwrap(), Amount::ZERO);
}

/// Attack 3: once the peer takes the channel to the chain, the hub takes no new lock on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_disputed_on_chain_takes_no_new_lock() {
    let net = Devnet::start().await.unwrap();
    let dir = TempDir::new("advc-dispute");
    let hub = hub_on(&net, &dir, 0).await;
    let addr = hub.listen(loopback()).unwrap();
    let mut evil = Adversary::connect(addr, Keys::from_signer(net.signer(2).unwrap())).await;
    let chain = net.client(2).await.unwrap();
    let (params, id) = open_and_deposit(&net, &mut evil, &hub, &chain).await;
    wait_funded(&hub, id).await;
    // A lock before the dispute is fine (control).
    let now = evil.now.0;
    let lock = |n: u64| Op::AddHtlc {
        id: HtlcId(2 * n),
        amount: Amount(ETH / 100),
        hashlock: Preimage([n as u8; 32]).hashlock(),
        expiry: Expiry(now + 7200),
    };
    assert_eq!(evil.forge(id, vec![lock(0)]).await, Answer::Accepted);
    // The hub fails it back (no route instruction); get in step.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !hub.channel(id).await.unwrap().state.locks.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the hub never failed the lock back"
        );
        if let Some(b) = evil.next(Duration::from_millis(100)).await {
            evil.handle(b).await;
        }
    }
    let h = hub.clone();
    evil.sync(id, || {
        let h = h.clone();
        async move { h.channel(id).await.unwrap() }
    })
    .await;
    assert!(hub.channel(id).await.unwrap().state.locks.is_empty());
    // The attacker registers the opening state on chain (stale, but its own choice).
    let opening = evil.openings[&id].clone();
    chain
        .close(&params, &opening.state, &opening.sigs)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let frozen = hub
            .channels_info()
            .await
            .iter()
            .any(|c| c.id == id && c.frozen);
        if frozen {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hub never saw the dispute"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = hub.channel(id).await.unwrap();
    let answer = evil.forge_when_idle(id, vec![lock(1)]).await;
    assert!(
        matches!(
            answer,
            Answer::Rejected(RejectReason::InvalidOp {
                error: OpError::ChannelFrozen,
                ..
            })
        ),
        "a disputed channel must take no new lock: {answer:?}"
    );
    let after = hub.channel(id).await.unwrap();
    assert_eq!(after.state.locks, before.state.locks);
    assert!(after.state.locks.is_empty());
}

/// Attack 8: openings a peer never funds are collected once they are old (the chain is asked
/// first); a funded channel never is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openings_never_funded_are_collected() {
    let net = Devnet::start().await.unwrap();
    let dir = TempDir::new("advc-abandon");
    let clock = hub::clock::Clock::system();
    let client = net.client(1).await.unwrap();
    client.set_poll_interval(Duration::from_millis(10));
    let hub = Node::start(
        Keys::from_signer(net.signer(1).unwrap()),
        Store::open(&dir.0).unwrap(),
        NodeOptions {
            chain_id: net.chain_id(),
            adjudicator: net.deployment().adjudicator,
            chain: Some(client),
            chain_poll: Duration::from_millis(50),
            expiry_check: Duration::from_millis(100),
            abandon_after_secs: 3600,
            clock: clock.clone(),
            ..NodeOptions::default()
        },
    )
    .unwrap();
    let addr = hub.listen(loopback()).unwrap();
    let mut evil = Adversary::connect(addr, Keys::from_signer(net.signer(2).unwrap())).await;
    let chain = net.client(2).await.unwrap();
    let idle = params_for(&net, &evil, &hub);
    let idle_id = evil
        .open_params(idle, [Amount(ETH), Amount::ZERO])
        .await
        .unwrap();
    // A message on the unfunded channel is refused, and refusing it must not hold its record
    // (the collection below locks it).
    evil.send(Body::Channel(Message::Reject {
        channel_id: idle_id,
        version: 1,
        reason: RejectReason::Conflict,
    }))
    .await;
    let (_, detail) = evil.refusal().await;
    assert!(detail.contains("not funded"), "{detail}");
    let (_, real_id) = open_and_deposit(&net, &mut evil, &hub, &chain).await;
    wait_funded(&hub, real_id).await;
    // Young: nothing is collected.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hub.channel_ids().len(), 2);
    // An hour later the idle opening goes; the funded channel stays.
    clock.advance(3601);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while hub.channel_ids().len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle opening was never collected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(hub.channel_ids(), vec![real_id]);
    assert!(hub.channel(idle_id).await.is_none());
}

/// A peer whose channel is not funded yet gets its refusals without a write (issue 12), so the
/// hub's stored receive counter lags its in-memory one; after a hub restart the peer's next
/// message must still be read, not refused as out of order for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_restart_does_not_strand_a_peer_with_an_unfunded_channel() {
    let net = Devnet::start().await.unwrap();
    let dir = TempDir::new("hub");
    let hub = hub_on(&net, &dir, 0).await;
    let addr = hub.listen(loopback()).unwrap();
    let keys = Keys::from_signer(net.signer(4).unwrap());
    let mut evil = Adversary::connect(addr, keys.clone()).await;
    let params = params_for(&net, &evil, &hub);
    evil.open_params(params, [Amount(ETH), Amount::ZERO])
        .await
        .unwrap();
    // Refused without a write: the channel is not funded.
    let unknown = htlc::ChannelId(alloy::primitives::B256::repeat_byte(9));
    evil.send(Body::Funded {
        channel_id: unknown,
    })
    .await;
    let (code, _) = evil.refusal().await;
    assert_eq!(code, hub::wire::ErrorCode::UnknownChannel);

    hub.stop().await;
    drop(hub);
    let mut hub = None;
    for _ in 0..200 {
        if let Ok(store) = Store::open(&dir.0) {
            let client = net.client(1).await.unwrap();
            let opts = NodeOptions {
                chain_id: net.chain_id(),
                adjudicator: net.deployment().adjudicator,
                chain: Some(client),
                min_peer_deposit: Amount(ETH / 100),
                ..NodeOptions::default()
            };
            hub =
                Some(Node::start(Keys::from_signer(net.signer(1).unwrap()), store, opts).unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let hub = hub.expect("the hub restarts");
    let addr = hub.listen(loopback()).unwrap();
    let mut again = Adversary::connect(addr, keys).await;
    again.seq = evil.seq;
    again
        .send(Body::Funded {
            channel_id: unknown,
        })
        .await;
    let (code, detail) = again.refusal().await;
    assert_eq!(
        code,
        hub::wire::ErrorCode::UnknownChannel,
        "read and answered, not refused as out of order: {detail}"
    );
}

/// Issue 14, claim before expiry: a payer whose HTLC the hub fulfilled downstream goes silent
/// (it refuses the hub's fulfil). At the lock's on-chain deadline (`ON_CHAIN_CLAIM_SECS` before
/// its expiry) the hub registers the preimage in the secret registry, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_payer_cannot_keep_a_lock_the_hub_can_claim_off_the_registry() {
    let net = Devnet::start().await.unwrap();
    let (dh, dq) = (
        TempDir::new("advc-claim-hub"),
        TempDir::new("advc-claim-payee"),
    );
    let clock = hub::clock::Clock::system();
    let opts = |i: usize, client: contracts::ChainClient| NodeOptions {
        chain_id: net.chain_id(),
        adjudicator: net.deployment().adjudicator,
        chain: Some(client),
        chain_poll: Duration::from_millis(50),
        chain_retry: Duration::from_millis(300),
        expiry_check: Duration::from_millis(100),
        min_peer_deposit: Amount(ETH / 100),
        clock: if i == 1 {
            clock.clone()
        } else {
            hub::clock::Clock::system()
        },
        ..NodeOptions::default()
    };
    let hub_client = net.client(1).await.unwrap();
    hub_client.set_poll_interval(Duration::from_millis(10));
    let hub = Node::start(
        Keys::from_signer(net.signer(1).unwrap()),
        Store::open(&dh.0).unwrap(),
        opts(1, hub_client),
    )
    .unwrap();
    let payee_client = net.client(3).await.unwrap();
    payee_client.set_poll_interval(Duration::from_millis(10));
    let payee = Node::start(
        Keys::from_signer(net.signer(3).unwrap()),
        Store::open(&dq.0).unwrap(),
        opts(3, payee_client),
    )
    .unwrap();
    let addr = hub.listen(loopback()).unwrap();
    payee.connect(addr, Some(hub.address())).await.unwrap();
    // The payee's channel, half of it moved to the hub so the hub can pay it.
    let out_ch = payee
        .open_channel(hub.address(), Amount(ETH))
        .await
        .unwrap();
    payee.fund(out_ch).await.unwrap();
    wait_funded(&hub, out_ch).await;
    payee.transfer(out_ch, Amount(ETH / 2)).await.unwrap();
    // The payer: a scripted peer with a funded channel.
    let mut evil = Adversary::connect(addr, Keys::from_signer(net.signer(2).unwrap())).await;
    let chain = net.client(2).await.unwrap();
    let (_, in_ch) = open_and_deposit(&net, &mut evil, &hub, &chain).await;
    wait_funded(&hub, in_ch).await;
    // The payer locks a payment, the hub forwards it, the payee reveals, the hub proposes its
    // fulfil: the payer refuses it and goes silent.
    let HeldLock {
        invoice,
        now,
        expiry,
        ..
    } = evil
        .pay_and_refuse_the_fulfil(&hub, &payee, in_ch, ETH / 10)
        .await;
    let registry = net.client(0).await.unwrap();
    // Before the deadline nothing goes on chain; the operator sees the deadline coming.
    let deadline = expiry.0 - htlc::forward::ON_CHAIN_CLAIM_SECS;
    let info = hub.chain_info().await.unwrap();
    assert!(
        info.claim_deadlines
            .iter()
            .any(|d| d.channel == in_ch && d.at == deadline),
        "{info:?}"
    );
    clock.advance(deadline - now - 120);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        registry.revealed_at(invoice.hashlock).await.unwrap(),
        None,
        "registered before its deadline"
    );
    // At the deadline the hub registers the preimage.
    clock.advance(121);
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if registry
            .revealed_at(invoice.hashlock)
            .await
            .unwrap()
            .is_some()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the hub never registered the preimage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the channel is disputed on chain with the hub's latest co-signed state (which still
    // holds the payer's lock: settled by the registry in the dispute).
    let latest = hub.channel(in_ch).await.unwrap();
    assert!(
        latest
            .state
            .locks
            .iter()
            .any(|l| l.hashlock == invoice.hashlock)
    );
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let c = registry.channel(in_ch).await.unwrap();
        if c.finalizes_at != 0 {
            assert_eq!(
                c.version, latest.state.version,
                "disputed with the latest state"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the hub never closed on chain"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        hub.channel_record(in_ch).unwrap().snapshot.frozen(),
        "a channel on its way to the chain takes no new lock"
    );
    // The registration and the close are done once; the conclusion waits for the window.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while hub.pending_intents().unwrap() > 1 {
        assert!(std::time::Instant::now() < until, "the intents stay");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !registry.channel(in_ch).await.unwrap().concluded,
        "concluded inside the window"
    );
    // The operator sees the dispute and the payout waiting for the window (API and metrics).
    let info = hub.chain_info().await.unwrap();
    assert_eq!(info.disputed, vec![in_ch]);
    let c = registry.channel(in_ch).await.unwrap();
    assert!(
        matches!(&info.intents[..], [i] if i.kind == "conclude" && i.channel == Some(in_ch)
            && i.not_before == Some(c.finalizes_at + 120)),
        "{info:?}"
    );
    let metrics = hub.metrics_text().await;
    assert!(metrics.contains("vhub_channels_disputed 1"), "{metrics}");
    assert!(
        metrics.contains("vhub_chain_intents_pending{kind=\"conclude\"} 1"),
        "{metrics}"
    );
    // The window ends (and the grace of side B, the hub): the hub pays the dispute out, then
    // unlocks the payer's lock with the registry's verdict, and nothing else is left to send.
    net.increase_time(MIN_CHALLENGE_DURATION_SECS + 121)
        .await
        .unwrap();
    net.mine().await.unwrap();
    // (The unlock is decided when the hub's watcher sees the payout: wait until the channel
    // holds nothing more and the hub has nothing left to send.)
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !(registry.channel(in_ch).await.unwrap().concluded
        && registry.holdings(in_ch).await.unwrap() == Amount::ZERO
        && hub.is_concluded(in_ch).await == Some(true)
        && hub.pending_intents().unwrap() == 0)
    {
        assert!(
            std::time::Instant::now() < until,
            "the hub never concluded and unlocked ({} intents left)",
            hub.pending_intents().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Exactly what the last co-signed state and the lock give each side, and nothing left held.
    let lock = *latest
        .state
        .locks
        .iter()
        .find(|l| l.hashlock == invoice.hashlock)
        .unwrap();
    let paid = payouts(&registry, in_ch, [evil.address(), hub.address()]).await;
    assert_eq!(
        paid.get(&hub.address()).copied().unwrap_or_default(),
        latest.state.balances[1].0 + lock.amount.0,
        "the hub gets its balance and the lock"
    );
    assert_eq!(
        paid.get(&evil.address()).copied().unwrap_or_default(),
        latest.state.balances[0].0,
        "the payer gets its balance, not the lock"
    );
    assert_eq!(registry.holdings(in_ch).await.unwrap(), Amount::ZERO);
    assert_eq!(hub.is_concluded(in_ch).await, Some(true));
    hub.shutdown();
    payee.shutdown();
}

/// The mirror case (issue 14): the payee takes the hub's lock and reveals its preimage only on
/// chain, in the secret registry, never off chain. The hub learns it from the registry's event
/// and settles the payer's lock upstream at once: the payment succeeds, the hub is paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preimage_revealed_only_on_chain_settles_the_payment_upstream() {
    let net = Devnet::start().await.unwrap();
    let (dh, dp) = (
        TempDir::new("advc-mirror-hub"),
        TempDir::new("advc-mirror-payer"),
    );
    let hub = hub_on(&net, &dh, 0).await;
    let addr = hub.listen(loopback()).unwrap();
    let payer_client = net.client(3).await.unwrap();
    payer_client.set_poll_interval(Duration::from_millis(10));
    let payer = Node::start(
        Keys::from_signer(net.signer(3).unwrap()),
        Store::open(&dp.0).unwrap(),
        NodeOptions {
            chain_id: net.chain_id(),
            adjudicator: net.deployment().adjudicator,
            chain: Some(payer_client),
            chain_poll: Duration::from_millis(50),
            ..NodeOptions::default()
        },
    )
    .unwrap();
    payer.connect(addr, Some(hub.address())).await.unwrap();
    let in_ch = payer
        .open_channel(hub.address(), Amount(ETH))
        .await
        .unwrap();
    payer.fund(in_ch).await.unwrap();
    wait_funded(&hub, in_ch).await;
    // The payee: a scripted peer whose channel gives the hub half, so the hub can pay it.
    let mut evil = Adversary::connect(addr, Keys::from_signer(net.signer(2).unwrap())).await;
    let chain = net.client(2).await.unwrap();
    let (_, out_ch) = open_and_deposit(&net, &mut evil, &hub, &chain).await;
    wait_funded(&hub, out_ch).await;
    evil.honest(out_ch, |m| m.transfer(Amount(ETH / 2))).await;
    // Its invoice, with a preimage only it knows.
    let preimage = Preimage(rand::random());
    let invoice = hub::payments::Invoice {
        payee: evil.address(),
        payee_key: evil.keys.public_key(),
        hub: hub.address(),
        amount: Amount(ETH / 10),
        hashlock: preimage.hashlock(),
        expires_at: hub.now().0 + 3600,
        final_expiry_delta: hub::payments::DEFAULT_FINAL_EXPIRY_DELTA,
    };
    let mut payer_ev = payer.subscribe();
    let pid = alloy::primitives::B256::repeat_byte(7);
    let p2 = payer.clone();
    let inv = invoice.clone();
    tokio::spawn(async move { p2.pay(&inv, pid).await });
    // Take the hub's lock honestly (co-sign it), and never fulfil it off chain.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !evil.channels[&out_ch]
        .latest()
        .state
        .locks
        .iter()
        .any(|l| l.hashlock == invoice.hashlock)
    {
        assert!(
            std::time::Instant::now() < until,
            "the hub never offered the lock"
        );
        if let Some(b) = evil.next(Duration::from_millis(200)).await {
            evil.handle(b).await;
        }
    }
    let before = hub.channel(in_ch).await.unwrap().state.balances;
    // Reveal on chain only.
    chain.register_secret(&preimage).await.unwrap();
    common::wait_for(
        &mut payer_ev,
        |e| matches!(e, hub::events::NodeEvent::PaymentSucceeded { id, .. } if *id == pid),
    )
    .await;
    // The payer learns the preimage with the hub's proposal; the fulfil is then co-signed.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        let s = hub.channel(in_ch).await.unwrap().state;
        if s.locks.is_empty() {
            break s;
        }
        assert!(
            std::time::Instant::now() < until,
            "the payer's lock is never settled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let fee = htlc::forward::ForwardPolicy::default()
        .fee(Amount(ETH / 10))
        .unwrap();
    assert_eq!(
        after.balances[1].0,
        before[1].0 + ETH / 10 + fee.0,
        "the hub is paid the amount and its fee"
    );
    hub.shutdown();
    payer.shutdown();
}

/// Issue 14: a reorganisation removes the peer's funding deposit. With confirmations the hub
/// never believed it: the channel stays unusable until a deposit is buried deep enough again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_reorganised_away_never_funds_the_channel() {
    let net = Devnet::start().await.unwrap();
    let dir = TempDir::new("advc-reorg");
    let hub = hub_with(&net, &dir, 0, 2).await;
    let addr = hub.listen(loopback()).unwrap();
    let mut evil = Adversary::connect(addr, Keys::from_signer(net.signer(2).unwrap())).await;
    let chain = net.client(2).await.unwrap();
    let latest = net.client(0).await.unwrap();
    let (params, id) = open_and_deposit(&net, &mut evil, &hub, &chain).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(latest.holdings(id).await.unwrap(), Amount(ETH));
    assert_eq!(
        hub.is_funded(id).await,
        Some(false),
        "funded before 2 confirmations"
    );
    // The block with the deposit is replaced by an empty one; the chain grows past it.
    net.reorg(1).await.unwrap();
    assert_eq!(
        latest.holdings(id).await.unwrap(),
        Amount::ZERO,
        "the deposit is gone"
    );
    for _ in 0..3 {
        net.mine().await.unwrap();
    }
    evil.send(Body::Funded { channel_id: id }).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        hub.is_funded(id).await,
        Some(false),
        "funded by a deposit that is gone"
    );
    // Deposited again: not believed at one block, believed once buried under two.
    chain
        .deposit(&params, Amount::ZERO, Amount(ETH))
        .await
        .unwrap();
    evil.send(Body::Funded { channel_id: id }).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        hub.is_funded(id).await,
        Some(false),
        "funded at one confirmation"
    );
    net.mine().await.unwrap();
    net.mine().await.unwrap();
    wait_funded(&hub, id).await;
    hub.shutdown();
}

/// Issue 14: a reorganisation deeper than the confirmations replaces the last block the
/// watcher read: the watcher notices, says so, and reads the chain again from before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorganisation_deeper_than_the_confirmations_is_detected_and_read_again() {
    let net = Devnet::start().await.unwrap();
    let dir = TempDir::new("advc-reorg-deep");
    let hub = hub_on(&net, &dir, 0).await;
    let mut events = hub.subscribe();
    let addr = hub.listen(loopback()).unwrap();
    let mut evil = Adversary::connect(addr, Keys::from_signer(net.signer(2).unwrap())).await;
    let chain = net.client(2).await.unwrap();
    let (_, id) = open_and_deposit(&net, &mut evil, &hub, &chain).await;
    wait_funded(&hub, id).await;
    // Let the watcher read past the deposit's block, then replace that block.
    tokio::time::sleep(Duration::from_millis(400)).await;
    net.reorg(1).await.unwrap();
    net.mine().await.unwrap();
    let ev = common::wait_for(&mut events, |e| {
        matches!(e, hub::events::NodeEvent::ChainReorganised { .. })
    })
    .await;
    assert!(matches!(
        ev,
        hub::events::NodeEvent::ChainReorganised { .. }
    ));
    hub.shutdown();
}

/// Issue 14: the watcher cannot die silently. The chain's RPC is unreachable when the hub
/// starts (it cannot even read the head) and goes away again later: the watcher reports each
/// failure, starts again with a backoff, and sees the deposits made meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_survives_the_chain_going_away() {
    let net = Devnet::start().await.unwrap();
    let dir = TempDir::new("advc-rpc-outage");
    let target: std::net::SocketAddr = format!("127.0.0.1:{}", net.endpoint().port().unwrap())
        .parse()
        .unwrap();
    let proxy = common::proxy::Proxy::start(target).await;
    let url: alloy::transports::http::reqwest::Url =
        format!("http://{}", proxy.addr).parse().unwrap();
    let client =
        contracts::ChainClient::connect_http(url, net.signer(1).unwrap().clone(), net.deployment())
            .await
            .unwrap();
    client.set_poll_interval(Duration::from_millis(10));
    proxy.set_up(false);
    let hub = Node::start(
        Keys::from_signer(net.signer(1).unwrap()),
        Store::open(&dir.0).unwrap(),
        NodeOptions {
            chain_id: net.chain_id(),
            adjudicator: net.deployment().adjudicator,
            chain: Some(client),
            min_peer_deposit: Amount(ETH / 100),
            chain_poll: Duration::from_millis(50),
            chain_retry: Duration::from_millis(300),
            ..NodeOptions::default()
        },
    )
    .unwrap();
    let mut events = hub.subscribe();
    common::wait_for(&mut events, |e| {
        matches!(e, hub::events::NodeEvent::WatcherRestarting { .. })
    })
    .await;
    let addr = hub.listen(loopback()).unwrap();
    let mut evil = Adversary::connect(addr, Keys::from_signer(net.signer(2).unwrap())).await;
    let chain = net.client(2).await.unwrap();
    proxy.set_up(true);
    // Let the watcher start again and take its cursor (a new node reads from the head).
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A deposit the hub is never told about: only the watcher can see it.
    let watched = |evil: &Adversary| params_for(&net, evil, &hub);
    let p1 = watched(&evil);
    let id1 = evil
        .open_params(p1.clone(), [Amount(ETH), Amount::ZERO])
        .await
        .unwrap();
    chain.deposit(&p1, Amount::ZERO, Amount(ETH)).await.unwrap();
    wait_funded(&hub, id1).await;
    // The chain goes away again; a deposit lands meanwhile; the chain comes back.
    let p2 = watched(&evil);
    let id2 = evil
        .open_params(p2.clone(), [Amount(ETH), Amount::ZERO])
        .await
        .unwrap();
    proxy.set_up(false);
    chain.deposit(&p2, Amount::ZERO, Amount(ETH)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hub.is_funded(id2).await, Some(false));
    proxy.set_up(true);
    wait_funded(&hub, id2).await;
    hub.shutdown();
}

/// Issue 14: an intent the chain keeps refusing is reported and dropped, not retried forever.
/// The peer's channel is in a token that, once the peer has deposited, refuses every call: the
/// hub's collateral can never be deposited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_refuses_everything_is_reported_not_retried_forever() {
    use contracts::bindings::TestToken;
    let net = Devnet::start().await.unwrap();
    let dir = TempDir::new("advc-bad-token");
    let token = contracts::deploy::deploy_test_token(net.provider(), "Bad", "BAD")
        .await
        .unwrap();
    let t = TestToken::new(token, net.provider().clone());
    for i in [1, 2] {
        t.mint(net.signer(i).unwrap().address(), U256::from(10 * ETH))
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
    }
    let client = net.client(1).await.unwrap();
    client.set_poll_interval(Duration::from_millis(10));
    let hub = Node::start(
        Keys::from_signer(net.signer(1).unwrap()),
        Store::open(&dir.0).unwrap(),
        NodeOptions {
            chain_id: net.chain_id(),
            adjudicator: net.deployment().adjudicator,
            chain: Some(client),
            collateral: Amount(ETH / 2),
            min_peer_deposit: Amount(ETH / 100),
            assets: vec![alloy::primitives::Address::ZERO, token],
            chain_poll: Duration::from_millis(50),
            chain_retry: Duration::from_millis(200),
            ..NodeOptions::default()
        },
    )
    .unwrap();
    let mut events = hub.subscribe();
    let addr = hub.listen(loopback()).unwrap();
    let mut evil = Adversary::connect(addr, Keys::from_signer(net.signer(2).unwrap())).await;
    let chain = net.client(2).await.unwrap();
    let params = ChannelParams {
        asset: token,
        ..params_for(&net, &evil, &hub)
    };
    let id = evil
        .open_params(params.clone(), [Amount(ETH), Amount::ZERO])
        .await
        .unwrap();
    chain
        .deposit(&params, Amount::ZERO, Amount(ETH))
        .await
        .unwrap();
    // From now on the token reverts every call (PUSH1 0 PUSH1 0 REVERT).
    net.set_code(
        token,
        alloy::primitives::Bytes::from(vec![0x60, 0x00, 0x60, 0x00, 0xfd]),
    )
    .await
    .unwrap();
    evil.send(Body::Funded { channel_id: id }).await;
    let dropped = common::wait_for(&mut events, |e| {
        matches!(e, hub::events::NodeEvent::IntentDropped { channel_id, .. } if *channel_id == Some(id))
    })
    .await;
    let hub::events::NodeEvent::IntentDropped { reason, .. } = dropped else {
        unreachable!()
    };
    assert!(reason.contains("reverted"), "{reason}");
    assert_eq!(
        hub.pending_intents().unwrap(),
        0,
        "still stored after the report"
    );
    // Nothing of the hub's moved, and the channel still carries the peer's funds.
    assert_eq!(
        net.client(0).await.unwrap().holdings(id).await.unwrap(),
        Amount(ETH)
    );
    assert_eq!(hub.is_funded(id).await, Some(true));
    hub.shutdown();
}

/// Issue 14: 100 peers, each with a transfer to the hub co-signed, close their channels on
/// chain at once with their stale opening state. The hub challenges every one with its latest
/// state inside its window: no stale state can be paid out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_closes_by_100_peers_at_once_are_each_answered_in_time() {
    const PEERS: usize = 100;
    let net = std::sync::Arc::new(Devnet::start().await.unwrap());
    let dir = TempDir::new("advc-100-stale");
    let client = net.client(1).await.unwrap();
    client.set_poll_interval(Duration::from_millis(10));
    let hub = Node::start(
        Keys::from_signer(net.signer(1).unwrap()),
        Store::open(&dir.0).unwrap(),
        NodeOptions {
            chain_id: net.chain_id(),
            adjudicator: net.deployment().adjudicator,
            chain: Some(client),
            min_peer_deposit: Amount(ETH / 100),
            chain_poll: Duration::from_millis(50),
            chain_retry: Duration::from_millis(300),
            handshakes_per_second: 10_000,
            stranger_frames_per_second: 100_000,
            ..NodeOptions::default()
        },
    )
    .unwrap();
    let addr = hub.listen(loopback()).unwrap();
    // Each peer: a funded account, a channel with 0.1 ETH, 0.01 ETH transferred to the hub.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..PEERS {
        let (net, hub) = (net.clone(), hub.clone());
        tasks.spawn(async move {
            let signer = alloy::signers::local::PrivateKeySigner::random();
            use alloy::providers::Provider;
            let _: serde_json::Value = net
                .provider()
                .raw_request(
                    "anvil_setBalance".into(),
                    (signer.address(), U256::from(ETH)),
                )
                .await
                .unwrap();
            let chain = net.client_for(signer.clone()).await.unwrap();
            chain.set_poll_interval(Duration::from_millis(10));
            let mut evil = Adversary::connect(addr, Keys::from_signer(&signer)).await;
            let params = params_for(&net, &evil, &hub);
            let id = evil
                .open_params(params.clone(), [Amount(ETH / 10), Amount::ZERO])
                .await
                .unwrap();
            chain
                .deposit(&params, Amount::ZERO, Amount(ETH / 10))
                .await
                .unwrap();
            evil.send(Body::Funded { channel_id: id }).await;
            wait_funded(&hub, id).await;
            evil.honest(id, |m| m.transfer(Amount(ETH / 100))).await;
            let stale = evil.openings[&id].clone();
            (evil, chain, params, id, stale)
        });
    }
    let mut peers = Vec::new();
    while let Some(p) = tasks.join_next().await {
        peers.push(p.unwrap());
    }
    for (_, _, _, id, _) in &peers {
        let latest = hub.channel(*id).await.unwrap();
        assert_eq!(latest.state.version, 1);
        assert_eq!(latest.state.balances[1], Amount(ETH / 100));
    }
    // All close with the stale opening state at once.
    let mut closes = tokio::task::JoinSet::new();
    for (_, chain, params, _, stale) in &peers {
        let (chain, params, stale) = (chain.clone(), params.clone(), stale.clone());
        closes.spawn(async move {
            chain
                .close(&params, &stale.state, &stale.sigs)
                .await
                .unwrap()
        });
    }
    while let Some(c) = closes.join_next().await {
        c.unwrap();
    }
    let reader = net.client(0).await.unwrap();
    let mut windows = std::collections::HashMap::new();
    for (_, _, _, id, _) in &peers {
        let c = reader.channel(*id).await.unwrap();
        assert!(c.finalizes_at != 0);
        windows.insert(*id, c.finalizes_at);
    }
    // Every dispute ends up at the hub's version 1, challenged before its window closed.
    let until = std::time::Instant::now() + Duration::from_secs(120);
    let mut answered = std::collections::HashSet::new();
    while answered.len() < PEERS {
        for (_, _, _, id, _) in &peers {
            if answered.contains(id) {
                continue;
            }
            let c = reader.channel(*id).await.unwrap();
            if c.version == 1 {
                assert!(!c.concluded);
                answered.insert(*id);
            }
        }
        assert!(
            std::time::Instant::now() < until,
            "{} of {PEERS} stale closes answered",
            answered.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let now = reader.latest_timestamp().await.unwrap();
    for (id, ends) in windows {
        assert!(now < ends, "channel {id}: answered after its window");
    }
    hub.shutdown();
}

/// Issue 14: the watchtower answers a stale close for an offline peer. The hub P hands each
/// co-signed state to its tower T; P goes offline; the counterparty closes on chain with the
/// older state; T challenges with the state P handed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchtower_answers_a_stale_close_while_its_client_is_offline() {
    let net = Devnet::start().await.unwrap();
    let (dt, dp) = (
        TempDir::new("advc-tower"),
        TempDir::new("advc-tower-client"),
    );
    let opts = |i: usize, client: contracts::ChainClient| NodeOptions {
        chain_id: net.chain_id(),
        adjudicator: net.deployment().adjudicator,
        chain: Some(client),
        min_peer_deposit: Amount(ETH / 100),
        chain_poll: Duration::from_millis(50),
        chain_retry: Duration::from_millis(300),
        tower: (i == 4).then_some(100),
        ..NodeOptions::default()
    };
    let tower_client = net.client(4).await.unwrap();
    tower_client.set_poll_interval(Duration::from_millis(10));
    let tower = Node::start(
        Keys::from_signer(net.signer(4).unwrap()),
        Store::open(&dt.0).unwrap(),
        opts(4, tower_client),
    )
    .unwrap();
    let tower_addr = tower.listen(loopback()).unwrap();
    let client = net.client(1).await.unwrap();
    client.set_poll_interval(Duration::from_millis(10));
    let hub = Node::start(
        Keys::from_signer(net.signer(1).unwrap()),
        Store::open(&dp.0).unwrap(),
        NodeOptions {
            towers: vec![tower.address()],
            ..opts(1, client)
        },
    )
    .unwrap();
    hub.connect(tower_addr, Some(tower.address()))
        .await
        .unwrap();
    let addr = hub.listen(loopback()).unwrap();
    // The counterparty: a channel with 1 ETH, 0.01 ETH of it paid to the hub.
    let mut evil = Adversary::connect(addr, Keys::from_signer(net.signer(2).unwrap())).await;
    let chain = net.client(2).await.unwrap();
    let (params, id) = open_and_deposit(&net, &mut evil, &hub, &chain).await;
    wait_funded(&hub, id).await;
    evil.honest(id, |m| m.transfer(Amount(ETH / 100))).await;
    let latest = hub.channel(id).await.unwrap();
    assert_eq!(latest.state.version, 1);
    // The tower holds the hub's latest state.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while tower.watched(id).map(|w| w.state.state.version) != Some(1) {
        assert!(
            std::time::Instant::now() < until,
            "the tower never got the state"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The hub goes offline; the counterparty closes with the opening state.
    hub.shutdown();
    drop(hub);
    let stale = evil.openings[&id].clone();
    chain
        .close(&params, &stale.state, &stale.sigs)
        .await
        .unwrap();
    let reader = net.client(0).await.unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let c = reader.channel(id).await.unwrap();
        if c.version == 1 {
            assert!(!c.concluded);
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the tower never answered the stale close"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A stranger (no participant) cannot hand the tower a state.
    let mut stranger =
        Adversary::connect(tower_addr, Keys::from_signer(net.signer(5).unwrap())).await;
    stranger
        .send(Body::Watch {
            params: Box::new(params.clone()),
            state: Box::new(latest.clone()),
        })
        .await;
    let (code, detail) = stranger.refusal().await;
    assert_eq!(code, hub::wire::ErrorCode::Protocol);
    assert!(detail.contains("participant"), "{detail}");
    tower.shutdown();
}

mod hostile {
    #![allow(missing_docs)]
    alloy::sol!(
        #[sol(rpc)]
        HostileToken,
        "../contracts/artifacts/test/HostileToken.json"
    );
}

/// Issue 14: a payout the adjudicator cannot deliver (the channel's token blocks the hub) is
/// deferred; the hub claims it, to its withdrawal address, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_the_token_refuses_is_claimed_to_the_withdrawal_address() {
    let net = Devnet::start().await.unwrap();
    let dir = TempDir::new("advc-deferred");
    let token = hostile::HostileToken::deploy(net.provider().clone())
        .await
        .unwrap();
    let evil_key = net.signer(2).unwrap().address();
    token
        .mint(evil_key, U256::from(10 * ETH))
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let withdraw_to = alloy::primitives::Address::repeat_byte(0x77);
    let client = net.client(1).await.unwrap();
    client.set_poll_interval(Duration::from_millis(10));
    let hub = Node::start(
        Keys::from_signer(net.signer(1).unwrap()),
        Store::open(&dir.0).unwrap(),
        NodeOptions {
            chain_id: net.chain_id(),
            adjudicator: net.deployment().adjudicator,
            chain: Some(client),
            min_peer_deposit: Amount(ETH / 100),
            assets: vec![alloy::primitives::Address::ZERO, *token.address()],
            chain_poll: Duration::from_millis(50),
            chain_retry: Duration::from_millis(200),
            withdraw_to: Some(withdraw_to),
            ..NodeOptions::default()
        },
    )
    .unwrap();
    let addr = hub.listen(loopback()).unwrap();
    let mut evil = Adversary::connect(addr, Keys::from_signer(net.signer(2).unwrap())).await;
    let chain = net.client(2).await.unwrap();
    let params = ChannelParams {
        asset: *token.address(),
        ..params_for(&net, &evil, &hub)
    };
    let id = evil
        .open_params(params.clone(), [Amount(ETH), Amount::ZERO])
        .await
        .unwrap();
    chain
        .deposit(&params, Amount::ZERO, Amount(ETH))
        .await
        .unwrap();
    evil.send(Body::Funded { channel_id: id }).await;
    wait_funded(&hub, id).await;
    evil.honest(id, |m| m.transfer(Amount(ETH / 100))).await;
    evil.honest(id, |m| m.close()).await;
    let last = evil.channels[&id].latest().clone();
    assert!(last.state.is_final);
    // The token now refuses transfers to the hub; the payout defers the hub's share.
    token
        .setBlocked(hub.address())
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    chain
        .cooperative_close(&params, &last.state, &last.sigs)
        .await
        .unwrap();
    let reader = net.client(0).await.unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = token.balanceOf(withdraw_to).call().await.unwrap();
        if got == U256::from(ETH / 100) {
            break;
        }
        assert!(got.is_zero(), "withdrew {got}, not the deferred payout");
        assert!(
            std::time::Instant::now() < until,
            "the hub never claimed its deferred payout"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reader
            .unclaimed(*token.address(), hub.address())
            .await
            .unwrap()
            .is_zero()
    );
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while hub.pending_intents().unwrap() > 0 {
        assert!(std::time::Instant::now() < until, "the claim intent stays");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hub.shutdown();
}

/// Issue 18 with issue 14's machinery: a channel whose hub is gone can always be closed, on
/// chain with the latest co-signed state (`hub close --force`), and pays out exactly after
/// the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_hub_is_gone_closes_with_force_and_is_paid_exactly() {
    let net = Devnet::start().await.unwrap();
    let (dh, dp) = (
        TempDir::new("advc-force-hub"),
        TempDir::new("advc-force-peer"),
    );
    let hub = hub_on(&net, &dh, 0).await;
    let addr = hub.listen(loopback()).unwrap();
    let client = net.client(3).await.unwrap();
    client.set_poll_interval(Duration::from_millis(10));
    let peer = Node::start(
        Keys::from_signer(net.signer(3).unwrap()),
        Store::open(&dp.0).unwrap(),
        NodeOptions {
            chain_id: net.chain_id(),
            adjudicator: net.deployment().adjudicator,
            chain: Some(client),
            chain_poll: Duration::from_millis(50),
            chain_retry: Duration::from_millis(300),
            challenge_duration: MIN_CHALLENGE_DURATION_SECS,
            ..NodeOptions::default()
        },
    )
    .unwrap();
    peer.connect(addr, Some(hub.address())).await.unwrap();
    let id = peer.open_channel(hub.address(), Amount(ETH)).await.unwrap();
    peer.fund(id).await.unwrap();
    peer.transfer(id, Amount(ETH / 100)).await.unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while peer.channel(id).await.unwrap().state.version < 1 {
        assert!(
            std::time::Instant::now() < until,
            "the transfer never co-signed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The hub is gone for good.
    hub.shutdown();
    drop(hub);
    peer.force_close(id).await.unwrap();
    let reader = net.client(0).await.unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while reader.channel(id).await.unwrap().finalizes_at == 0 {
        assert!(std::time::Instant::now() < until, "never closed on chain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reader.channel(id).await.unwrap().version, 1);
    assert!(peer.channel_record(id).unwrap().snapshot.frozen());
    // After the window the peer (side A) pays the dispute out at once.
    net.increase_time(MIN_CHALLENGE_DURATION_SECS + 5)
        .await
        .unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !reader.channel(id).await.unwrap().concluded {
        assert!(std::time::Instant::now() < until, "never paid out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hub_addr = net.signer(1).unwrap().address();
    let paid = payouts(&reader, id, [peer.address(), hub_addr]).await;
    assert_eq!(paid[&peer.address()], ETH - ETH / 100);
    assert_eq!(paid[&hub_addr], ETH / 100);
    assert_eq!(reader.holdings(id).await.unwrap(), Amount::ZERO);
    peer.shutdown();
}
