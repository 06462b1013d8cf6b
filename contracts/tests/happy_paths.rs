//! Every entry point on its happy path, for ETH and for the ERC-20, against a real anvil.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use common::*;
use contracts::bindings::Adjudicator::AdjudicatorEvents;
use contracts::bindings::SecretRegistry::SecretRegistryEvents;
use contracts::{EventKind, Phase};
use futures_util::StreamExt;
use htlc::{Amount, ChannelState, Side};

async fn deposit_scenario(asset: Asset) {
    let f = Fixture::new().await;
    let p = f.params(asset, 1);
    let a_before = f.balance(p.asset, f.a.address()).await;
    let out =
        f.a.client
            .deposit(&p, Amount(0), Amount(3 * ETH))
            .await
            .unwrap();
    assert!(out.gas_used > 0);
    assert_eq!(f.w.holdings(p.id()).await.unwrap(), Amount(3 * ETH));
    f.b.client
        .deposit(&p, Amount(3 * ETH), Amount(2 * ETH))
        .await
        .unwrap();
    let ch = f.w.channel(p.id()).await.unwrap();
    assert_eq!(ch.holdings, Amount(5 * ETH));
    assert_eq!(ch.phase(f.now().await), Phase::Open);
    assert_eq!(
        f.balance(p.asset, f.w.deployment().adjudicator).await,
        u(5 * ETH)
    );
    if asset == Asset::Token {
        // ETH balance unchanged by gas-free token accounting is not checkable; the token moved.
        assert_eq!(
            f.balance(p.asset, f.a.address()).await,
            a_before - u(3 * ETH)
        );
    }
}

#[tokio::test]
async fn deposit_eth() {
    deposit_scenario(Asset::Eth).await;
}

#[tokio::test]
async fn deposit_token() {
    deposit_scenario(Asset::Token).await;
}

async fn cooperative_close_scenario(asset: Asset) {
    let f = Fixture::new().await;
    let p = f.params(asset, 1);
    f.fund(&p, 3 * ETH, 2 * ETH).await;
    let s = final_state(&p, 7, [4 * ETH, ETH]);
    let (a0, b0) = (
        f.balance(p.asset, f.a.address()).await,
        f.balance(p.asset, f.b.address()).await,
    );
    f.w.cooperative_close(&p, &s, &f.sign(&p, &s))
        .await
        .unwrap();
    assert_eq!(f.balance(p.asset, f.a.address()).await, a0 + u(4 * ETH));
    assert_eq!(f.balance(p.asset, f.b.address()).await, b0 + u(ETH));
    let ch = f.w.channel(p.id()).await.unwrap();
    assert_eq!(ch.holdings, Amount(0));
    assert!(ch.concluded);
    assert_eq!(ch.version, 7);
    assert_eq!(ch.phase(f.now().await), Phase::Concluded);
    assert_eq!(
        f.balance(p.asset, f.w.deployment().adjudicator).await,
        U256::ZERO
    );
}

#[tokio::test]
async fn cooperative_close_eth() {
    cooperative_close_scenario(Asset::Eth).await;
}

#[tokio::test]
async fn cooperative_close_token() {
    cooperative_close_scenario(Asset::Token).await;
}

/// A final state ends a running dispute at once (no need to wait for the window).
#[tokio::test]
async fn cooperative_close_during_a_dispute() {
    let f = Fixture::new().await;
    let p = f.params(Asset::Eth, 1);
    f.fund(&p, 3 * ETH, 2 * ETH).await;
    let v3 = state(&p, 3, [2 * ETH, 3 * ETH]);
    f.w.close(&p, &v3, &f.sign(&p, &v3)).await.unwrap();
    let fin = final_state(&p, 4, [ETH, 4 * ETH]);
    let b0 = f.balance(Address::ZERO, f.b.address()).await;
    f.w.cooperative_close(&p, &fin, &f.sign(&p, &fin))
        .await
        .unwrap();
    assert_eq!(
        f.balance(Address::ZERO, f.b.address()).await,
        b0 + u(4 * ETH)
    );
    let ch = f.w.channel(p.id()).await.unwrap();
    assert!(ch.concluded);
    assert_eq!(ch.version, 4);
    assert_eq!(ch.fingerprint, alloy::primitives::B256::ZERO);
}

async fn unilateral_close_scenario(asset: Asset) {
    let f = Fixture::new().await;
    let p = f.params(asset, 1);
    f.fund(&p, 3 * ETH, 2 * ETH).await;
    let v3 = state(&p, 3, [2 * ETH, 3 * ETH]);
    let v5 = state(&p, 5, [ETH, 4 * ETH]);
    let (a0, b0) = (
        f.balance(p.asset, f.a.address()).await,
        f.balance(p.asset, f.b.address()).await,
    );

    // A's watchtower registers v3; B answers with v5.
    f.w.close(&p, &v3, &f.sign(&p, &v3)).await.unwrap();
    let ch = f.w.channel(p.id()).await.unwrap();
    assert_eq!(ch.version, 3);
    assert!(matches!(ch.phase(f.now().await), Phase::Disputed { .. }));
    f.w.challenge(&p, &v5, &f.sign(&p, &v5)).await.unwrap();
    let ch = f.w.channel(p.id()).await.unwrap();
    assert_eq!(ch.version, 5);
    assert_eq!(
        ch.fingerprint,
        alloy::sol_types::SolStruct::eip712_hash_struct(&htlc::eip712::typed_state(&v5).unwrap())
    );

    f.net.increase_time(WINDOW + 1).await.unwrap();
    assert_eq!(
        f.w.channel(p.id()).await.unwrap().phase(f.now().await),
        Phase::Finalized
    );
    f.w.conclude(&p, &v5).await.unwrap();
    assert_eq!(f.balance(p.asset, f.a.address()).await, a0 + u(ETH));
    assert_eq!(f.balance(p.asset, f.b.address()).await, b0 + u(4 * ETH));
    let ch = f.w.channel(p.id()).await.unwrap();
    assert!(ch.concluded);
    assert_eq!(ch.holdings, Amount(0));
}

#[tokio::test]
async fn close_challenge_conclude_eth() {
    unilateral_close_scenario(Asset::Eth).await;
}

#[tokio::test]
async fn close_challenge_conclude_token() {
    unilateral_close_scenario(Asset::Token).await;
}

async fn unlock_scenario(asset: Asset) {
    let f = Fixture::new().await;
    let p = f.params(asset, 1);
    f.fund(&p, 5 * ETH, 5 * ETH).await;
    let now = f.now().await;
    // Five locks (an odd count exercises the carried-up node of the Merkle tree).
    let (l0, p0) = lock(0, ETH, now + 1_000, Side::A, 10); // revealed -> B
    let (l1, p1) = lock(1, 2 * ETH, now + 1_000, Side::B, 11); // revealed -> A
    let (l2, _) = lock(2, ETH / 2, now + 500, Side::A, 12); // never revealed -> refund A
    let (l3, _) = lock(3, ETH / 4, now + 500, Side::B, 13); // never revealed -> refund B
    let (l4, p4) = lock(4, ETH / 4, now + 1_000, Side::A, 14); // revealed -> B
    let s = ChannelState {
        locks: vec![l0, l1, l2, l3, l4],
        ..state(&p, 4, [3 * ETH, 3 * ETH])
    };
    assert_eq!(s.total().unwrap(), Amount(10 * ETH));

    f.w.close(&p, &s, &f.sign(&p, &s)).await.unwrap();
    f.net.increase_time(WINDOW + 1).await.unwrap();
    let (a0, b0) = (
        f.balance(p.asset, f.a.address()).await,
        f.balance(p.asset, f.b.address()).await,
    );
    f.w.conclude(&p, &s).await.unwrap();
    assert_eq!(f.w.holdings(p.id()).await.unwrap(), Amount(4 * ETH));

    for pre in [&p0, &p1, &p4] {
        f.w.register_secret(pre).await.unwrap();
        assert!(f.w.revealed_at(pre.hashlock()).await.unwrap().is_some());
    }
    f.w.unlock(&p, &s, l0.id).await.unwrap();
    f.w.unlock(&p, &s, l1.id).await.unwrap();
    f.w.unlock(&p, &s, l4.id).await.unwrap();
    // The unrevealed locks can only be refunded once expired.
    assert_reverts::<contracts::bindings::Adjudicator::LockNotExpired>(
        f.w.unlock(&p, &s, l2.id).await,
    );
    f.net.increase_time(600).await.unwrap();
    f.w.unlock(&p, &s, l2.id).await.unwrap();
    f.w.unlock(&p, &s, l3.id).await.unwrap();

    let a = f.balance(p.asset, f.a.address()).await;
    let b = f.balance(p.asset, f.b.address()).await;
    // A: balance 3 + l1 (2) + refund l2 (0.5); B: balance 3 + l0 (1) + l4 (0.25) + refund l3 (0.25)
    assert_eq!(a, a0 + u(3 * ETH + 2 * ETH + ETH / 2));
    assert_eq!(b, b0 + u(3 * ETH + ETH + ETH / 4 + ETH / 4));
    assert_eq!(f.w.holdings(p.id()).await.unwrap(), Amount(0));
}

#[tokio::test]
async fn register_secret_and_unlock_eth() {
    unlock_scenario(Asset::Eth).await;
}

#[tokio::test]
async fn register_secret_and_unlock_token() {
    unlock_scenario(Asset::Token).await;
}

/// A virtual channel V between A and C over a hub H (= participant B of the fixture):
/// ledger L1 = (A, H) and ledger L2 = (H, C) each guarantee V's 3 ETH (A's 2 + C's 1). V ends
/// with A 0.5 and C 2.5 (A paid C 1.5). Both guarantees are split by V's final state.
async fn guarantee_scenario(asset: Asset, virtual_on_chain: bool) {
    let f = Fixture::new().await;
    let c_signer = f.net.signer(4).unwrap().clone();
    let c_keys = htlc::sig::Keys::from_signer(&c_signer);
    let (a, h, c) = (f.a.address(), f.b.address(), c_keys.address());
    let asset_addr = f.asset(asset);
    if asset == Asset::Token {
        let t = contracts::bindings::TestToken::new(f.token, f.net.provider().clone());
        t.mint(c, u(1_000 * ETH))
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
    }
    let c_client = f.net.client(4).await.unwrap();

    let l1 =
        f.w.channel_params([a, h], asset_addr, WINDOW, U256::from(1));
    let l2 =
        f.w.channel_params([h, c], asset_addr, WINDOW, U256::from(2));
    let v =
        f.w.channel_params([a, c], asset_addr, WINDOW, U256::from(3));
    let vid = v.id();

    // L1: A 5, H 5; L2: H 5, C 5.
    f.fund(&l1, 5 * ETH, 5 * ETH).await;
    f.b.client
        .deposit(&l2, Amount(0), Amount(5 * ETH))
        .await
        .unwrap();
    c_client
        .deposit(&l2, Amount(5 * ETH), Amount(5 * ETH))
        .await
        .unwrap();

    // Guarantees: in L1 A puts 2 (its V balance) and H 1 (C's V balance); in L2 H puts 2, C 1.
    let l1_state = ChannelState {
        guarantees: vec![guarantee(vid, 2 * ETH, ETH)],
        ..state(&l1, 10, [3 * ETH, 4 * ETH])
    };
    let l2_state = ChannelState {
        guarantees: vec![guarantee(vid, 2 * ETH, ETH)],
        ..state(&l2, 10, [3 * ETH, 4 * ETH])
    };
    // Both ledgers are closed on chain and concluded.
    let l1_sigs = f.sign(&l1, &l1_state);
    let l2_sigs = sign_with([&f.b.keys, &c_keys], &l2, &l2_state);
    f.w.close(&l1, &l1_state, &l1_sigs).await.unwrap();
    f.w.close(&l2, &l2_state, &l2_sigs).await.unwrap();

    let v_final = if virtual_on_chain {
        // V's latest co-signed state is not final: it is disputed on chain (V holds nothing).
        let s = state(&v, 9, [ETH / 2, 5 * ETH / 2]);
        let sigs = sign_with([&f.a.keys, &c_keys], &v, &s);
        f.w.close(&v, &s, &sigs).await.unwrap();
        s
    } else {
        final_state(&v, 9, [ETH / 2, 5 * ETH / 2])
    };
    let v_sigs = sign_with([&f.a.keys, &c_keys], &v, &v_final);
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&l1, &l1_state).await.unwrap();
    f.w.conclude(&l2, &l2_state).await.unwrap();

    let (a0, h0, c0) = (
        f.balance(asset_addr, a).await,
        f.balance(asset_addr, h).await,
        f.balance(asset_addr, c).await,
    );
    let sigs = (!virtual_on_chain).then_some(&v_sigs);
    f.w.resolve_guarantee(&l1, &l1_state, &v, &v_final, sigs)
        .await
        .unwrap();
    f.w.resolve_guarantee(&l2, &l2_state, &v, &v_final, sigs)
        .await
        .unwrap();
    // A gets its V balance from L1, C gets its V balance from L2, and H nets its 3 back.
    assert_eq!(f.balance(asset_addr, a).await, a0 + u(ETH / 2));
    assert_eq!(f.balance(asset_addr, c).await, c0 + u(5 * ETH / 2));
    assert_eq!(
        f.balance(asset_addr, h).await,
        h0 + u(5 * ETH / 2 + ETH / 2)
    );
    assert_eq!(f.w.holdings(l1.id()).await.unwrap(), Amount(0));
    assert_eq!(f.w.holdings(l2.id()).await.unwrap(), Amount(0));
}

#[tokio::test]
async fn resolve_guarantee_cosigned_final_eth() {
    guarantee_scenario(Asset::Eth, false).await;
}

#[tokio::test]
async fn resolve_guarantee_cosigned_final_token() {
    guarantee_scenario(Asset::Token, false).await;
}

#[tokio::test]
async fn resolve_guarantee_virtual_concluded_on_chain_eth() {
    guarantee_scenario(Asset::Eth, true).await;
}

#[tokio::test]
async fn resolve_guarantee_virtual_concluded_on_chain_token() {
    guarantee_scenario(Asset::Token, true).await;
}

/// A ledger whose participant A is the virtual channel's B (crossed orientation), and a virtual
/// state with pending locks settled through the registry inside the guarantee split.
#[tokio::test]
async fn resolve_guarantee_crossed_orientation_with_virtual_locks() {
    let f = Fixture::new().await;
    let c_signer = f.net.signer(4).unwrap().clone();
    let c_keys = htlc::sig::Keys::from_signer(&c_signer);
    let (h, c) = (f.b.address(), c_keys.address());
    let a = f.a.address();
    let c_client = f.net.client(4).await.unwrap();

    // Ledger (C, H): C is ledger-A but V's B.
    let ledger =
        f.w.channel_params([c, h], Address::ZERO, WINDOW, U256::from(1));
    let v =
        f.w.channel_params([a, c], Address::ZERO, WINDOW, U256::from(2));
    c_client
        .deposit(&ledger, Amount(0), Amount(4 * ETH))
        .await
        .unwrap();
    f.b.client
        .deposit(&ledger, Amount(4 * ETH), Amount(4 * ETH))
        .await
        .unwrap();
    let ls = ChannelState {
        guarantees: vec![guarantee(v.id(), ETH, 3 * ETH)],
        ..state(&ledger, 3, [3 * ETH, ETH])
    };
    f.w.close(&ledger, &ls, &sign_with([&c_keys, &f.b.keys], &ledger, &ls))
        .await
        .unwrap();

    // V (A, C) total 4: A 1, C 1, plus three pending locks.
    let now = f.now().await;
    let (k0, pre0) = lock(0, ETH, now + 1_000, Side::A, 1); // A->C revealed: C
    let (k1, _) = lock(1, ETH / 2, now + 50, Side::A, 2); // A->C expired: back to A
    let (k2, pre2) = lock(2, ETH / 2, now + 1_000, Side::B, 3); // C->A revealed: A
    let vs = ChannelState {
        locks: vec![k0, k1, k2],
        is_final: true,
        ..state(&v, 4, [ETH, ETH])
    };
    let v_sigs = sign_with([&f.a.keys, &c_keys], &v, &vs);
    f.w.register_secret(&pre0).await.unwrap();
    f.w.register_secret(&pre2).await.unwrap();
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&ledger, &ls).await.unwrap();
    let (c0, h0) = (
        f.balance(Address::ZERO, c).await,
        f.balance(Address::ZERO, h).await,
    );
    f.w.resolve_guarantee(&ledger, &ls, &v, &vs, Some(&v_sigs))
        .await
        .unwrap();
    // The first resolution shows the recorded outcome whole, its locks included (what a hub
    // resolves its other legs by, ADR 0026).
    let mut w = f.w.events(0);
    let mut outcomes = Vec::new();
    loop {
        let events = w.poll().await.unwrap();
        if events.is_empty() {
            break;
        }
        for e in events {
            if let contracts::EventKind::Adjudicator(AdjudicatorEvents::VirtualOutcome(o)) = e.kind
            {
                outcomes.push(contracts::convert::resolved_virtual_state(
                    &o.state, &o.locks,
                ));
            }
        }
    }
    assert_eq!(outcomes, vec![Some(vs.clone())]);
    // V's A ends with 1 + 0.5 (refund k1) + 0.5 (k2) = 2; V's C with 1 + 1 (k0) = 2.
    // The hub stands for V's A in this ledger (crossed): H gets 2, C gets 4 - 2 = 2.
    assert_eq!(f.balance(Address::ZERO, h).await, h0 + u(2 * ETH));
    assert_eq!(f.balance(Address::ZERO, c).await, c0 + u(2 * ETH));
}

async fn claim_scenario(asset: Asset) {
    use common::hostile::{HostileReceiver, HostileToken};
    let f = Fixture::new().await;
    let b = f.b.address();
    let (p, _hostile_token) = match asset {
        Asset::Eth => {
            // B's account refuses ETH (as an EIP-7702 delegate could).
            let code = HostileReceiver::DEPLOYED_BYTECODE.clone();
            f.net.set_code(b, code).await.unwrap();
            let r = HostileReceiver::new(b, f.net.provider().clone());
            r.setRefuse(true)
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap();
            (f.params(Asset::Eth, 1), None)
        }
        Asset::Token => {
            let t = HostileToken::deploy(f.net.provider().clone())
                .await
                .unwrap();
            for who in [f.a.address(), b] {
                t.mint(who, u(100 * ETH))
                    .send()
                    .await
                    .unwrap()
                    .get_receipt()
                    .await
                    .unwrap();
            }
            t.setBlocked(b)
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap();
            let p =
                f.w.channel_params([f.a.address(), b], *t.address(), WINDOW, U256::from(1));
            (p, Some(t))
        }
    };
    f.a.client
        .deposit(&p, Amount(0), Amount(3 * ETH))
        .await
        .unwrap();
    // B can still deposit: only transfers *to* B are refused.
    f.b.client
        .deposit(&p, Amount(3 * ETH), Amount(2 * ETH))
        .await
        .unwrap();
    let s = final_state(&p, 2, [ETH, 4 * ETH]);
    let a0 = f.balance(p.asset, f.a.address()).await;
    // B's refusal does not block A's payout: B's share is deferred.
    f.w.cooperative_close(&p, &s, &f.sign(&p, &s))
        .await
        .unwrap();
    assert_eq!(f.balance(p.asset, f.a.address()).await, a0 + u(ETH));
    assert_eq!(f.w.unclaimed(p.asset, b).await.unwrap(), u(4 * ETH));

    // B claims to another address it controls.
    let to = f.net.signer(5).unwrap().address();
    let to0 = f.balance(p.asset, to).await;
    f.b.client.claim(p.asset, to).await.unwrap();
    assert_eq!(f.balance(p.asset, to).await, to0 + u(4 * ETH));
    assert_eq!(f.w.unclaimed(p.asset, b).await.unwrap(), U256::ZERO);
}

#[tokio::test]
async fn deferred_payout_and_claim_eth() {
    claim_scenario(Asset::Eth).await;
}

#[tokio::test]
async fn deferred_payout_and_claim_token() {
    claim_scenario(Asset::Token).await;
}

/// The event stream reports deposits, disputes, conclusions, unlocks and secret reveals.
#[tokio::test]
async fn event_stream_reports_channel_life() {
    let f = Fixture::new().await;
    let p = f.params(Asset::Eth, 1);
    let start = f.w.provider().get_block_number().await.unwrap() + 1;
    f.fund(&p, ETH, ETH).await;
    let now = f.now().await;
    let (l0, pre) = lock(0, ETH / 2, now + 1_000, Side::A, 7);
    let s = ChannelState {
        locks: vec![l0],
        ..state(&p, 1, [ETH, ETH / 2])
    };
    f.w.close(&p, &s, &f.sign(&p, &s)).await.unwrap();
    f.w.register_secret(&pre).await.unwrap();
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&p, &s).await.unwrap();
    f.w.unlock(&p, &s, l0.id).await.unwrap();

    let stream =
        f.w.events(start)
            .with_poll_interval(std::time::Duration::from_millis(20))
            .into_stream();
    let events: Vec<_> = stream.take(6).collect().await;
    let kinds: Vec<EventKind> = events.into_iter().map(|e| e.unwrap().kind).collect();
    let cid = p.id().0;
    assert!(
        matches!(&kinds[0], EventKind::Adjudicator(AdjudicatorEvents::Deposited(e)) if e.channelId == cid && e.amount == u(ETH))
    );
    assert!(
        matches!(&kinds[1], EventKind::Adjudicator(AdjudicatorEvents::Deposited(e)) if e.holdings == u(2 * ETH))
    );
    assert!(
        matches!(&kinds[2], EventKind::Adjudicator(AdjudicatorEvents::Disputed(e)) if e.version == 1 && e.state.locksRoot == s.locks_root())
    );
    assert!(
        matches!(&kinds[3], EventKind::Registry(SecretRegistryEvents::SecretRevealed(e)) if e.hashlock == pre.hashlock().0)
    );
    assert!(
        matches!(&kinds[4], EventKind::Adjudicator(AdjudicatorEvents::Concluded(e)) if e.toA == u(ETH) && !e.cooperative)
    );
    assert!(
        matches!(&kinds[5], EventKind::Adjudicator(AdjudicatorEvents::LockResolved(e)) if e.to == f.b.address() && e.revealed)
    );
}
