//! Ledger channels end to end on a real chain (anvil), real RocksDB and real QUIC: a peer opens
//! a channel with the hub, deposits on chain, the hub adds collateral, they update, both top up,
//! and close cooperatively; the on-chain payout equals the final balances. Then: the hub catches
//! up on a payout it missed while down, and answers a stale unilateral close with a challenge.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use alloy::primitives::{Address, U256};
use contracts::Devnet;
use htlc::Amount;
use htlc::sig::Keys;
use hub::events::NodeEvent;
use hub::node::{Node, NodeOptions};
use hub::store::Store;
use std::time::Duration;

mod common;
use common::{TempDir, loopback, reopen, wait_for, wait_state};

const ETH: u128 = 1_000_000_000_000_000_000;

/// Options for a node on the devnet, sending transactions as dev account `i`.
async fn chain_opts(net: &Devnet, i: usize, collateral: u128, auto_settle: bool) -> NodeOptions {
    let client = net.client(i).await.unwrap();
    client.set_poll_interval(Duration::from_millis(10));
    NodeOptions {
        chain_id: net.chain_id(),
        adjudicator: net.deployment().adjudicator,
        chain: Some(client),
        collateral: Amount(collateral),
        auto_settle,
        chain_poll: Duration::from_millis(50),
        chain_retry: Duration::from_millis(500),
        close_grace: Duration::from_secs(1),
        challenge_duration: htlc::forward::MIN_CHALLENGE_DURATION_SECS,
        ..NodeOptions::default()
    }
}

fn keys(net: &Devnet, i: usize) -> Keys {
    Keys::from_signer(net.signer(i).unwrap())
}

async fn eth(net: &Devnet, who: Address) -> U256 {
    net.client(0)
        .await
        .unwrap()
        .balance(Address::ZERO, who)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_fund_update_top_up_and_close_pay_out_the_final_balances() {
    let net = Devnet::start().await.unwrap();
    let (dh, dp) = (TempDir::new("hub"), TempDir::new("peer"));
    // The hub adds 0.5 ETH of collateral to every channel; the peer never sends a close itself,
    // so its ETH balance moves only by its deposits and its payout.
    let hub = Node::start(
        keys(&net, 1),
        Store::open(&dh.0).unwrap(),
        chain_opts(&net, 1, ETH / 2, true).await,
    )
    .unwrap();
    let peer = Node::start(
        keys(&net, 2),
        Store::open(&dp.0).unwrap(),
        chain_opts(&net, 2, 0, false).await,
    )
    .unwrap();
    let mut hub_ev = hub.subscribe();
    let addr = hub.listen(loopback()).unwrap();
    peer.connect(addr, Some(hub.address())).await.unwrap();
    let peer_eth_start = eth(&net, peer.address()).await;

    let id = peer.open_channel(hub.address(), Amount(ETH)).await.unwrap();
    // Not usable before the deposit is on chain.
    assert!(peer.transfer(id, Amount(1)).await.is_err());
    assert_eq!(hub.is_funded(id).await, Some(false));
    peer.fund(id).await.unwrap();
    wait_for(
        &mut hub_ev,
        |e| matches!(e, NodeEvent::Funded { channel_id } if *channel_id == id),
    )
    .await;
    // The hub's collateral lands on chain and is credited to it by a co-signed update.
    wait_state(&peer, id, |s| s.state.balances[1] == Amount(ETH / 2)).await;
    let client = net.client(0).await.unwrap();
    assert_eq!(client.holdings(id).await.unwrap(), Amount(ETH + ETH / 2));

    for _ in 0..3 {
        peer.transfer(id, Amount(ETH / 10)).await.unwrap();
    }
    hub.transfer(id, Amount(ETH / 20)).await.unwrap();
    peer.top_up(id, Amount(ETH / 5)).await.unwrap();
    hub.top_up(id, Amount(ETH / 4)).await.unwrap();
    let total = Amount(ETH + ETH / 2 + ETH / 5 + ETH / 4);
    wait_state(&peer, id, |s| s.state.total() == Ok(total)).await;
    wait_state(&hub, id, |s| s.state.total() == Ok(total)).await;
    assert_eq!(client.holdings(id).await.unwrap(), total);

    let mut peer_ev = peer.subscribe();
    peer.close(id).await.unwrap();
    let paid = wait_for(
        &mut peer_ev,
        |e| matches!(e, NodeEvent::Concluded { channel_id, .. } if *channel_id == id),
    )
    .await;
    let fin = peer.channel(id).await.unwrap();
    assert!(fin.state.is_final);
    assert_eq!(
        hub.channel(id).await.unwrap(),
        fin,
        "both hold the same final state"
    );
    // A: 1 - 0.3 + 0.05 + 0.2 = 0.95 ETH; B: 0.5 + 0.3 - 0.05 + 0.25 = 1.0 ETH.
    let (a, b) = (
        Amount(ETH - 3 * ETH / 10 + ETH / 20 + ETH / 5),
        Amount(ETH / 2 + 3 * ETH / 10 - ETH / 20 + ETH / 4),
    );
    assert_eq!(fin.state.balances, [a, b]);
    assert_eq!(
        paid,
        NodeEvent::Concluded {
            channel_id: id,
            to_a: a,
            to_b: b
        },
        "the chain paid exactly the final balances"
    );
    let on_chain = client.channel(id).await.unwrap();
    assert!(on_chain.concluded);
    assert_eq!(on_chain.holdings, Amount::ZERO);
    // The peer's account: deposits out, payout in, gas for its two deposits.
    let peer_eth_end = eth(&net, peer.address()).await;
    let spent = peer_eth_start - peer_eth_end;
    let deposits = U256::from(ETH + ETH / 5);
    let net_flow = deposits - U256::from(a.0);
    assert!(spent >= net_flow, "payout at most the final balance");
    assert!(
        spent - net_flow < U256::from(ETH / 1000),
        "payout at least the final balance minus gas ({} wei of gas)",
        spent - net_flow
    );
    assert_eq!(hub.is_concluded(id).await, Some(true));
    hub.shutdown();
    peer.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_catches_up_on_a_payout_it_missed_while_down() {
    let net = Devnet::start().await.unwrap();
    let (dh, dp) = (TempDir::new("hub"), TempDir::new("peer"));
    let hub = Node::start(
        keys(&net, 1),
        Store::open(&dh.0).unwrap(),
        chain_opts(&net, 1, 0, false).await,
    )
    .unwrap();
    let peer = Node::start(
        keys(&net, 2),
        Store::open(&dp.0).unwrap(),
        chain_opts(&net, 2, 0, false).await,
    )
    .unwrap();
    let addr = hub.listen(loopback()).unwrap();
    peer.connect(addr, Some(hub.address())).await.unwrap();
    let id = peer.open_channel(hub.address(), Amount(ETH)).await.unwrap();
    peer.fund(id).await.unwrap();
    wait_state(&hub, id, |_| true).await;
    tokio::time::timeout(Duration::from_secs(30), async {
        while hub.is_funded(id).await != Some(true) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    peer.transfer(id, Amount(ETH / 4)).await.unwrap();
    peer.close(id).await.unwrap();
    wait_state(&hub, id, |s| s.state.is_final).await;
    // Let the hub's watcher move its cursor past everything so far, then stop it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.shutdown();
    drop(hub);

    // While the hub is down, the peer pays the channel out.
    peer.settle_close(id).await.unwrap();
    assert!(
        net.client(0)
            .await
            .unwrap()
            .channel(id)
            .await
            .unwrap()
            .concluded
    );

    // What the hub restarts from: its disk, which has not seen the payout. (Read from the store
    // itself: once started, the hub's watcher may catch up before any check could run.)
    let store = reopen(&dh.0).await;
    let on_disk: hub::node::ChannelRecord = store
        .get(hub::store::Cf::Channels, id.0.as_slice())
        .unwrap()
        .expect("the hub's record of the channel");
    assert!(!on_disk.concluded, "restored from disk as it was");
    let hub = Node::start(keys(&net, 1), store, chain_opts(&net, 1, 0, false).await).unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while hub.is_concluded(id).await != Some(true) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the missed Concluded event is handled after the restart");
    hub.shutdown();
    peer.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_unilateral_close_is_challenged_with_the_latest_state() {
    let net = Devnet::start().await.unwrap();
    let (dh, dp) = (TempDir::new("hub"), TempDir::new("peer"));
    let hub = Node::start(
        keys(&net, 1),
        Store::open(&dh.0).unwrap(),
        chain_opts(&net, 1, 0, false).await,
    )
    .unwrap();
    let peer = Node::start(
        keys(&net, 2),
        Store::open(&dp.0).unwrap(),
        chain_opts(&net, 2, 0, false).await,
    )
    .unwrap();
    let mut hub_ev = hub.subscribe();
    let addr = hub.listen(loopback()).unwrap();
    peer.connect(addr, Some(hub.address())).await.unwrap();
    let id = peer.open_channel(hub.address(), Amount(ETH)).await.unwrap();
    peer.fund(id).await.unwrap();
    wait_for(
        &mut hub_ev,
        |e| matches!(e, NodeEvent::Funded { channel_id } if *channel_id == id),
    )
    .await;
    // The opening state is the one the peer will try to cheat with: it gives A everything.
    let stale = peer.channel(id).await.unwrap();
    for _ in 0..4 {
        peer.transfer(id, Amount(ETH / 10)).await.unwrap();
    }
    wait_state(&hub, id, |s| s.state.balances[1] == Amount(4 * ETH / 10)).await;
    let latest = hub.channel(id).await.unwrap();

    let params = peer.channel_params(id).await.unwrap();
    let cheat = net.client(2).await.unwrap();
    cheat
        .close(&params, &stale.state, &stale.sigs)
        .await
        .unwrap();
    let ev = wait_for(
        &mut hub_ev,
        |e| matches!(e, NodeEvent::Challenged { channel_id, .. } if *channel_id == id),
    )
    .await;
    assert_eq!(
        ev,
        NodeEvent::Challenged {
            channel_id: id,
            disputed: stale.state.version,
            ours: latest.state.version
        }
    );
    let client = net.client(0).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while client.channel(id).await.unwrap().version != latest.state.version {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the hub's challenge registers its latest version on chain");
    hub.shutdown();
    peer.shutdown();
}

/// Issue 18: after a cooperative close, only the side that proposed it pays it out; the other
/// watches (its own payout arrives without a transaction of its own, so without gas).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_closer_pays_the_payout_gas() {
    let net = Devnet::start().await.unwrap();
    let (dh, dp) = (TempDir::new("hub"), TempDir::new("peer"));
    let hub_opts = NodeOptions {
        // Long enough that only a missing payout would make the hub send its own.
        close_grace: Duration::from_secs(600),
        ..chain_opts(&net, 1, 0, true).await
    };
    let hub = Node::start(keys(&net, 1), Store::open(&dh.0).unwrap(), hub_opts).unwrap();
    let peer = Node::start(
        keys(&net, 2),
        Store::open(&dp.0).unwrap(),
        chain_opts(&net, 2, 0, true).await,
    )
    .unwrap();
    let mut hub_ev = hub.subscribe();
    let addr = hub.listen(loopback()).unwrap();
    peer.connect(addr, Some(hub.address())).await.unwrap();
    let id = peer.open_channel(hub.address(), Amount(ETH)).await.unwrap();
    peer.fund(id).await.unwrap();
    wait_for(
        &mut hub_ev,
        |e| matches!(e, NodeEvent::Funded { channel_id } if *channel_id == id),
    )
    .await;
    peer.transfer(id, Amount(ETH / 4)).await.unwrap();
    wait_state(&hub, id, |s| s.state.balances[1] == Amount(ETH / 4)).await;

    let hub_eth = eth(&net, hub.address()).await;
    peer.close(id).await.unwrap();
    let paid = wait_for(
        &mut hub_ev,
        |e| matches!(e, NodeEvent::Concluded { channel_id, .. } if *channel_id == id),
    )
    .await;
    assert_eq!(
        paid,
        NodeEvent::Concluded {
            channel_id: id,
            to_a: Amount(ETH - ETH / 4),
            to_b: Amount(ETH / 4)
        }
    );
    // Exactly its payout: the hub sent no transaction for the close.
    assert_eq!(
        eth(&net, hub.address()).await - hub_eth,
        U256::from(ETH / 4),
        "the hub paid no gas for the close"
    );
    assert!(
        net.client(0)
            .await
            .unwrap()
            .channel(id)
            .await
            .unwrap()
            .concluded
    );
    hub.shutdown();
    peer.shutdown();
}

/// Issue 18: a deposit the account cannot pay answers an error and leaves nothing behind: no
/// intent that would land later, when the account is funded, behind the operator's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_that_fails_leaves_no_intent_behind() {
    let net = Devnet::start().await.unwrap();
    let (dh, dp) = (TempDir::new("hub"), TempDir::new("peer"));
    let hub = Node::start(
        keys(&net, 1),
        Store::open(&dh.0).unwrap(),
        chain_opts(&net, 1, 0, true).await,
    )
    .unwrap();
    let peer = Node::start(
        keys(&net, 2),
        Store::open(&dp.0).unwrap(),
        chain_opts(&net, 2, 0, true).await,
    )
    .unwrap();
    let addr = hub.listen(loopback()).unwrap();
    peer.connect(addr, Some(hub.address())).await.unwrap();
    // More than the account holds (anvil gives 10,000 ETH).
    let id = peer
        .open_channel(hub.address(), Amount(20_000 * ETH))
        .await
        .unwrap();
    let e = peer.fund(id).await.unwrap_err();
    assert!(matches!(e, hub::error::NodeError::Tx(_)), "{e}");
    assert_eq!(
        peer.pending_intents().unwrap(),
        0,
        "nothing left to send later"
    );
    assert_eq!(peer.is_funded(id).await, Some(false));
    assert_eq!(
        net.client(0).await.unwrap().holdings(id).await.unwrap(),
        Amount::ZERO
    );
    hub.shutdown();
    peer.shutdown();
}
