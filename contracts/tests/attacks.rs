//! Attacks on the adjudicator, each a test that fails if the contract accepts it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::{Address, B256, Bytes, Signature, U256};
use alloy::sol_types::{SolCall, SolError, SolStruct};
use common::hostile::{HostileReceiver, HostileToken};
use common::*;
use contracts::bindings::Adjudicator::{self, *};
use contracts::convert;
use contracts::devnet::DevnetOptions;
use contracts::{Devnet, OnChainChannel};
use htlc::eip712::typed;
use htlc::sig::{Keys, malleate};
use htlc::{Amount, ChannelParams, ChannelState, Guarantee, Side};

/// A fixture with one ETH channel funded 3 + 2.
async fn funded() -> (Fixture, ChannelParams) {
    let f = Fixture::new().await;
    let p = f.params(Asset::Eth, 1);
    f.fund(&p, 3 * ETH, 2 * ETH).await;
    (f, p)
}

async fn onchain(f: &Fixture, p: &ChannelParams) -> OnChainChannel {
    f.w.channel(p.id()).await.unwrap()
}

// --- stale and equal versions --------------------------------------------------------------------

#[tokio::test]
async fn stale_state_after_newer_one_is_refused() {
    let (f, p) = funded().await;
    let v3 = state(&p, 3, [4 * ETH, ETH]); // better for A
    let v5 = state(&p, 5, [ETH, 4 * ETH]);
    f.w.close(&p, &v5, &f.sign(&p, &v5)).await.unwrap();

    // A tries to replace the newer state with the older one that favours it.
    let r = f.w.challenge(&p, &v3, &f.sign(&p, &v3)).await;
    assert!(matches!(
        r.as_ref().err().and_then(|e| e.adjudicator_error()),
        Some(AdjudicatorErrors::StaleVersion(e)) if e.submitted == 3 && e.recorded == 5
    ));
    assert_reverts::<AlreadyDisputed>(f.w.close(&p, &v3, &f.sign(&p, &v3)).await);

    // After the window the older state cannot be concluded either; the newer one pays.
    f.net.increase_time(WINDOW + 1).await.unwrap();
    assert_reverts::<StateMismatch>(f.w.conclude(&p, &v3).await);
    let a0 = f.balance(Address::ZERO, f.a.address()).await;
    f.w.conclude(&p, &v5).await.unwrap();
    assert_eq!(f.balance(Address::ZERO, f.a.address()).await, a0 + u(ETH));
    assert_eq!(onchain(&f, &p).await.version, 5);
}

#[tokio::test]
async fn challenge_with_equal_version_is_refused() {
    let (f, p) = funded().await;
    let v5 = state(&p, 5, [ETH, 4 * ETH]);
    // A twin of v5 (same version, other balances) both signed, e.g. through a bug or an attack.
    let twin = state(&p, 5, [4 * ETH, ETH]);
    f.w.close(&p, &v5, &f.sign(&p, &v5)).await.unwrap();
    assert_reverts::<StaleVersion>(f.w.challenge(&p, &twin, &f.sign(&p, &twin)).await);
    assert_reverts::<StaleVersion>(f.w.challenge(&p, &v5, &f.sign(&p, &v5)).await);
    let ch = onchain(&f, &p).await;
    assert_eq!(
        ch.fingerprint,
        htlc::eip712::typed_state(&v5).unwrap().eip712_hash_struct()
    );
}

// --- signatures ----------------------------------------------------------------------------------

#[tokio::test]
async fn state_signed_by_someone_else_is_refused() {
    let (f, p) = funded().await;
    let mallory = Keys::from_bytes([0x66; 32]).unwrap();
    let s = final_state(&p, 1, [5 * ETH, 0]);

    // Mallory signs in B's place.
    let forged = sign_with([&f.a.keys, &mallory], &p, &s);
    let r = f.w.cooperative_close(&p, &s, &forged).await;
    assert!(matches!(
        r.as_ref().err().and_then(|e| e.adjudicator_error()),
        Some(AdjudicatorErrors::WrongSigner(e)) if e.expected == f.b.address() && e.actual == mallory.address()
    ));
    // A signs twice.
    let twice = sign_with([&f.a.keys, &f.a.keys], &p, &s);
    assert_reverts::<WrongSigner>(f.w.cooperative_close(&p, &s, &twice).await);
    // The right signatures in the wrong slots.
    let [sa, sb] = f.sign(&p, &s);
    assert_reverts::<WrongSigner>(f.w.cooperative_close(&p, &s, &[sb, sa]).await);
    // Same for disputes.
    let d = state(&p, 2, [5 * ETH, 0]);
    assert_reverts::<WrongSigner>(
        f.w.close(&p, &d, &sign_with([&mallory, &f.b.keys], &p, &d))
            .await,
    );
    // A valid signature on another state.
    let other = final_state(&p, 1, [0, 5 * ETH]);
    assert_reverts::<WrongSigner>(f.w.cooperative_close(&p, &s, &f.sign(&p, &other)).await);
    assert_eq!(onchain(&f, &p).await.holdings, Amount(5 * ETH));
}

#[tokio::test]
async fn high_s_signature_is_refused() {
    let (f, p) = funded().await;
    let s = final_state(&p, 1, [4 * ETH, ETH]);
    let [sa, sb] = f.sign(&p, &s);
    // The malleable twin: same signer for plain ECDSA, refused by the contract.
    assert_reverts::<HighS>(f.w.cooperative_close(&p, &s, &[malleate(&sa), sb]).await);
    assert_reverts::<HighS>(f.w.close(&p, &s, &[sa, malleate(&sb)]).await);
    // A flipped parity with low s recovers a stranger.
    let flipped = Signature::new(sa.r(), sa.s(), !sa.v());
    assert_reverts::<WrongSigner>(f.w.cooperative_close(&p, &s, &[flipped, sb]).await);
    // v outside {27, 28}.
    let mut bad = convert::sig(&sa);
    bad.v = 29;
    let adj = f.w.adjudicator();
    let call = adj.cooperativeClose(
        convert::params(&p),
        convert::state(&s).unwrap(),
        bad,
        convert::sig(&sb),
    );
    assert_reverts::<InvalidSignature>(f.w.send(call).await);
    // The genuine low-s pair still works.
    f.w.cooperative_close(&p, &s, &[sa, sb]).await.unwrap();
}

// --- replay --------------------------------------------------------------------------------------

#[tokio::test]
async fn replay_on_another_channel_is_refused() {
    let (f, p1) = funded().await;
    let p2 = f.params(Asset::Eth, 2);
    f.fund(&p2, 3 * ETH, 2 * ETH).await;
    let s1 = final_state(&p1, 9, [5 * ETH, 0]);
    let sigs1 = f.sign(&p1, &s1);
    let adj = f.w.adjudicator();

    // The state as signed, against the other channel's parameters.
    let call = adj.cooperativeClose(
        convert::params(&p2),
        convert::state(&s1).unwrap(),
        convert::sig(&sigs1[0]),
        convert::sig(&sigs1[1]),
    );
    assert_reverts::<ChannelIdMismatch>(f.w.send(call).await);
    // The state relabelled for the other channel, with the old signatures.
    let relabelled = ChannelState {
        channel_id: p2.id(),
        ..s1.clone()
    };
    assert_reverts::<WrongSigner>(f.w.cooperative_close(&p2, &relabelled, &sigs1).await);
    assert_reverts::<WrongSigner>(f.w.close(&p2, &relabelled, &sigs1).await);
    assert_eq!(onchain(&f, &p2).await.holdings, Amount(5 * ETH));
}

#[tokio::test]
async fn replay_on_another_adjudicator_is_refused() {
    let (f, p1) = funded().await;
    // A second adjudicator on the same chain (sharing the registry).
    let adj2_addr =
        contracts::deploy::deploy_adjudicator(f.net.provider(), f.w.deployment().registry)
            .await
            .unwrap();
    let d2 = contracts::Deployment {
        adjudicator: adj2_addr,
        ..f.w.deployment()
    };
    let w2 = contracts::ChainClient::new(f.w.provider().clone(), f.w.sender(), d2)
        .await
        .unwrap();
    let a2 = contracts::ChainClient::new(f.a.client.provider().clone(), f.a.address(), d2)
        .await
        .unwrap();
    let p2 = ChannelParams {
        adjudicator: adj2_addr,
        ..p1.clone()
    };
    a2.deposit(&p2, Amount(0), Amount(5 * ETH)).await.unwrap();

    let s1 = final_state(&p1, 9, [5 * ETH, 0]);
    let sigs1 = f.sign(&p1, &s1);
    let adj = w2.adjudicator();
    let call = adj.cooperativeClose(
        convert::params(&p1),
        convert::state(&s1).unwrap(),
        convert::sig(&sigs1[0]),
        convert::sig(&sigs1[1]),
    );
    assert_reverts::<ChannelIdMismatch>(w2.send(call).await);
    let relabelled = ChannelState {
        channel_id: p2.id(),
        ..s1.clone()
    };
    assert_reverts::<WrongSigner>(w2.cooperative_close(&p2, &relabelled, &sigs1).await);
    assert_eq!(w2.holdings(p2.id()).await.unwrap(), Amount(5 * ETH));
}

#[tokio::test]
async fn replay_on_another_chain_is_refused() {
    let f1 = Fixture::on(
        Devnet::start_with(DevnetOptions {
            chain_id: Some(31_337),
            ..Default::default()
        })
        .await
        .unwrap(),
    )
    .await;
    let f2 = Fixture::on(
        Devnet::start_with(DevnetOptions {
            chain_id: Some(31_338),
            ..Default::default()
        })
        .await
        .unwrap(),
    )
    .await;
    // Same deployer, same nonces: the adjudicator has the same address on both chains, so
    // only the chain id tells the two apart.
    assert_eq!(f1.w.deployment(), f2.w.deployment());
    let p1 = f1.params(Asset::Eth, 1);
    let p2 = f2.params(Asset::Eth, 1);
    assert_ne!(p1.id(), p2.id());
    f1.fund(&p1, 3 * ETH, 2 * ETH).await;
    f2.fund(&p2, 3 * ETH, 2 * ETH).await;

    let s1 = final_state(&p1, 9, [5 * ETH, 0]);
    let sigs1 = f1.sign(&p1, &s1);
    let adj = f2.w.adjudicator();
    let call = adj.cooperativeClose(
        convert::params(&p1),
        convert::state(&s1).unwrap(),
        convert::sig(&sigs1[0]),
        convert::sig(&sigs1[1]),
    );
    assert_reverts::<ChannelIdMismatch>(f2.w.send(call).await);
    let relabelled = ChannelState {
        channel_id: p2.id(),
        ..s1.clone()
    };
    assert_reverts::<WrongSigner>(f2.w.cooperative_close(&p2, &relabelled, &sigs1).await);
    assert_reverts::<WrongSigner>(f2.w.close(&p2, &relabelled, &sigs1).await);
    assert_eq!(f2.w.holdings(p2.id()).await.unwrap(), Amount(5 * ETH));
    // The client refuses to send parameters of another chain at all.
    assert!(matches!(
        f2.w.close(&p1, &s1, &sigs1).await,
        Err(contracts::ChainError::WrongChain { .. })
    ));
}

// --- withdrawing twice -----------------------------------------------------------------------------

#[tokio::test]
async fn double_cooperative_close_is_refused() {
    let (f, p) = funded().await;
    let s = final_state(&p, 1, [4 * ETH, ETH]);
    let sigs = f.sign(&p, &s);
    f.w.cooperative_close(&p, &s, &sigs).await.unwrap();
    // Someone deposits again: the old final state must not pay a second time.
    assert_reverts::<ChannelNotOpen>(f.a.client.deposit(&p, Amount(0), Amount(ETH)).await);
    assert_reverts::<AlreadyConcluded>(f.w.cooperative_close(&p, &s, &sigs).await);
    assert_reverts::<AlreadyConcluded>(f.w.close(&p, &s, &sigs).await);
}

#[tokio::test]
async fn double_conclude_is_refused() {
    let (f, p) = funded().await;
    let s = state(&p, 1, [4 * ETH, ETH]);
    f.w.close(&p, &s, &f.sign(&p, &s)).await.unwrap();
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&p, &s).await.unwrap();
    assert_reverts::<AlreadyConcluded>(f.w.conclude(&p, &s).await);
    assert_reverts::<ChannelNotOpen>(f.a.client.deposit(&p, Amount(0), Amount(ETH)).await);
    let f_final = final_state(&p, 2, [4 * ETH, ETH]);
    assert_reverts::<AlreadyConcluded>(
        f.w.cooperative_close(&p, &f_final, &f.sign(&p, &f_final))
            .await,
    );
}

#[tokio::test]
async fn double_unlock_is_refused() {
    let (f, p) = funded().await;
    let now = f.now().await;
    let (l0, pre) = lock(0, ETH, now + 1_000, Side::A, 1);
    let (l1, _) = lock(1, ETH, now + 1_000, Side::B, 2);
    let s = ChannelState {
        locks: vec![l0, l1],
        ..state(&p, 1, [2 * ETH, ETH])
    };
    f.w.close(&p, &s, &f.sign(&p, &s)).await.unwrap();
    assert_reverts::<NotConcluded>(f.w.unlock(&p, &s, l0.id).await);
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&p, &s).await.unwrap();
    f.w.register_secret(&pre).await.unwrap();
    f.w.unlock(&p, &s, l0.id).await.unwrap();
    assert_reverts::<LockAlreadyResolved>(f.w.unlock(&p, &s, l0.id).await);
    assert_eq!(onchain(&f, &p).await.holdings, Amount(ETH));
}

#[tokio::test]
async fn double_guarantee_resolution_is_refused() {
    let (f, p) = funded().await;
    let v = f.w.channel_params(
        [f.a.address(), f.b.address()],
        Address::ZERO,
        WINDOW,
        U256::from(99),
    );
    let s = ChannelState {
        guarantees: vec![guarantee(v.id(), ETH, ETH)],
        ..state(&p, 1, [2 * ETH, ETH])
    };
    f.w.close(&p, &s, &f.sign(&p, &s)).await.unwrap();
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&p, &s).await.unwrap();
    let vs = final_state(&v, 3, [ETH / 2, 3 * ETH / 2]);
    let vsigs = f.sign(&v, &vs);
    f.w.resolve_guarantee(&p, &s, &v, &vs, Some(&vsigs))
        .await
        .unwrap();
    assert_reverts::<GuaranteeAlreadyResolved>(
        f.w.resolve_guarantee(&p, &s, &v, &vs, Some(&vsigs)).await,
    );
    assert_eq!(onchain(&f, &p).await.holdings, Amount(0));
}

#[tokio::test]
async fn double_claim_is_refused() {
    let f = Fixture::new().await;
    let p = f.params(Asset::Eth, 1);
    f.fund(&p, 3 * ETH, 2 * ETH).await;
    let b = f.b.address();
    f.net
        .set_code(b, HostileReceiver::DEPLOYED_BYTECODE.clone())
        .await
        .unwrap();
    let r = HostileReceiver::new(b, f.net.provider().clone());
    r.setRefuse(true)
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let s = final_state(&p, 1, [ETH, 4 * ETH]);
    f.w.cooperative_close(&p, &s, &f.sign(&p, &s))
        .await
        .unwrap();
    let to = f.net.signer(5).unwrap().address();
    f.b.client.claim(Address::ZERO, to).await.unwrap();
    assert_reverts::<NothingToClaim>(f.b.client.claim(Address::ZERO, to).await);
    // Nobody else can claim B's deferred payout either.
    assert_reverts::<NothingToClaim>(f.a.client.claim(Address::ZERO, to).await);
}

// --- reentrancy ------------------------------------------------------------------------------------

async fn hostile_token_channel(
    f: &Fixture,
    nonce: u64,
) -> (
    HostileToken::HostileTokenInstance<alloy::providers::DynProvider>,
    ChannelParams,
) {
    let t = HostileToken::deploy(f.net.provider().clone())
        .await
        .unwrap();
    for who in [f.a.address(), f.b.address()] {
        t.mint(who, u(100 * ETH))
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
    }
    let p = f.w.channel_params(
        [f.a.address(), f.b.address()],
        *t.address(),
        WINDOW,
        U256::from(nonce),
    );
    (t, p)
}

async fn arm_token(
    t: &HostileToken::HostileTokenInstance<alloy::providers::DynProvider>,
    target: Address,
    payload: Vec<u8>,
) {
    t.arm(target, Bytes::from(payload))
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
}

#[tokio::test]
async fn reentrant_token_cannot_reenter_a_payout() {
    let f = Fixture::new().await;
    let (t, p) = hostile_token_channel(&f, 1).await;
    f.fund(&p, 3 * ETH, 2 * ETH).await;
    // A second channel in the same token: its funds must stay untouched.
    let p2 = ChannelParams {
        nonce: U256::from(2),
        ..p.clone()
    };
    f.fund(&p2, 10 * ETH, 0).await;

    let s = final_state(&p, 1, [4 * ETH, ETH]);
    let sigs = f.sign(&p, &s);
    let payload = cooperativeCloseCall {
        p: convert::params(&p),
        s: convert::state(&s).unwrap(),
        sigA: convert::sig(&sigs[0]),
        sigB: convert::sig(&sigs[1]),
    }
    .abi_encode();
    let adjudicator = f.w.deployment().adjudicator;
    arm_token(&t, adjudicator, payload).await;

    f.w.cooperative_close(&p, &s, &sigs).await.unwrap();
    assert_eq!(t.attempts().call().await.unwrap(), U256::from(1));
    assert!(!t.lastSucceeded().call().await.unwrap());
    assert_eq!(
        t.lastReturn().call().await.unwrap().as_ref(),
        Reentrant::SELECTOR.as_slice()
    );
    // Exactly one payout each; the other channel's 10 are still there.
    assert_eq!(
        t.balanceOf(f.a.address()).call().await.unwrap(),
        u(100 * ETH - 3 * ETH - 10 * ETH + 4 * ETH)
    );
    assert_eq!(
        t.balanceOf(f.b.address()).call().await.unwrap(),
        u(100 * ETH - 2 * ETH + ETH)
    );
    assert_eq!(t.balanceOf(adjudicator).call().await.unwrap(), u(10 * ETH));
    assert_eq!(onchain(&f, &p2).await.holdings, Amount(10 * ETH));
}

#[tokio::test]
async fn reentrant_token_cannot_reenter_a_deposit() {
    let f = Fixture::new().await;
    let (t, p) = hostile_token_channel(&f, 1).await;
    f.fund(&p, 3 * ETH, 0).await;
    // During B's deposit the token tries to conclude-and-withdraw, then to deposit again.
    let s = final_state(&p, 1, [3 * ETH, 0]);
    let sigs = f.sign(&p, &s);
    let payload = cooperativeCloseCall {
        p: convert::params(&p),
        s: convert::state(&s).unwrap(),
        sigA: convert::sig(&sigs[0]),
        sigB: convert::sig(&sigs[1]),
    }
    .abi_encode();
    arm_token(&t, f.w.deployment().adjudicator, payload).await;
    f.b.client
        .deposit(&p, Amount(3 * ETH), Amount(2 * ETH))
        .await
        .unwrap();
    assert_eq!(t.attempts().call().await.unwrap(), U256::from(1));
    assert!(!t.lastSucceeded().call().await.unwrap());
    assert_eq!(
        t.lastReturn().call().await.unwrap().as_ref(),
        Reentrant::SELECTOR.as_slice()
    );
    let ch = onchain(&f, &p).await;
    assert_eq!(ch.holdings, Amount(5 * ETH));
    assert!(!ch.concluded);
}

#[tokio::test]
async fn reentrant_receiver_cannot_reenter_a_payout() {
    let (f, p) = funded().await;
    let b = f.b.address();
    // B's account runs hostile code (as an EIP-7702 delegation could).
    f.net
        .set_code(b, HostileReceiver::DEPLOYED_BYTECODE.clone())
        .await
        .unwrap();
    let r = HostileReceiver::new(b, f.net.provider().clone());
    let s = final_state(&p, 1, [2 * ETH, 3 * ETH]);
    let sigs = f.sign(&p, &s);
    let payload = cooperativeCloseCall {
        p: convert::params(&p),
        s: convert::state(&s).unwrap(),
        sigA: convert::sig(&sigs[0]),
        sigB: convert::sig(&sigs[1]),
    }
    .abi_encode();
    r.arm(f.w.deployment().adjudicator, Bytes::from(payload))
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let (a0, b0) = (
        f.balance(Address::ZERO, f.a.address()).await,
        f.balance(Address::ZERO, b).await,
    );
    f.w.cooperative_close(&p, &s, &sigs).await.unwrap();
    assert_eq!(r.attempts().call().await.unwrap(), U256::from(1));
    assert!(!r.lastSucceeded().call().await.unwrap());
    assert_eq!(
        r.lastReturn().call().await.unwrap().as_ref(),
        Reentrant::SELECTOR.as_slice()
    );
    assert_eq!(
        f.balance(Address::ZERO, f.a.address()).await,
        a0 + u(2 * ETH)
    );
    assert_eq!(f.balance(Address::ZERO, b).await, b0 + u(3 * ETH));
    assert_eq!(
        f.balance(Address::ZERO, f.w.deployment().adjudicator).await,
        U256::ZERO
    );
}

#[tokio::test]
async fn reentrant_receiver_cannot_unlock_twice() {
    let (f, p) = funded().await;
    let b = f.b.address();
    let now = f.now().await;
    let (l0, pre) = lock(0, 2 * ETH, now + 1_000, Side::A, 1);
    let s = ChannelState {
        locks: vec![l0],
        ..state(&p, 1, [ETH, 2 * ETH])
    };
    f.w.close(&p, &s, &f.sign(&p, &s)).await.unwrap();
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&p, &s).await.unwrap();
    f.w.register_secret(&pre).await.unwrap();
    f.net
        .set_code(b, HostileReceiver::DEPLOYED_BYTECODE.clone())
        .await
        .unwrap();
    let r = HostileReceiver::new(b, f.net.provider().clone());
    let payload = unlockCall {
        p: convert::params(&p),
        s: convert::state(&s).unwrap(),
        lock: convert::lock(&l0),
        proof: s.lock_proof(0).unwrap(),
    }
    .abi_encode();
    r.arm(f.w.deployment().adjudicator, Bytes::from(payload))
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let b0 = f.balance(Address::ZERO, b).await;
    f.w.unlock(&p, &s, l0.id).await.unwrap();
    assert_eq!(r.attempts().call().await.unwrap(), U256::from(1));
    assert!(!r.lastSucceeded().call().await.unwrap());
    assert_eq!(f.balance(Address::ZERO, b).await, b0 + u(2 * ETH));
    assert_eq!(onchain(&f, &p).await.holdings, Amount(0));
}

// --- locks ---------------------------------------------------------------------------------------

#[tokio::test]
async fn preimage_revealed_after_expiry_refunds_the_sender() {
    let (f, p) = funded().await;
    let now = f.now().await;
    let (l0, pre) = lock(0, 2 * ETH, now + 150, Side::A, 1);
    let s = ChannelState {
        locks: vec![l0],
        ..state(&p, 1, [ETH, 2 * ETH])
    };
    f.w.close(&p, &s, &f.sign(&p, &s)).await.unwrap();
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&p, &s).await.unwrap();
    // B reveals too late.
    f.net.increase_time(100).await.unwrap();
    f.w.register_secret(&pre).await.unwrap();
    let revealed = f.w.revealed_at(pre.hashlock()).await.unwrap().unwrap();
    assert!(revealed > l0.expiry.0);
    let (a0, b0) = (
        f.balance(Address::ZERO, f.a.address()).await,
        f.balance(Address::ZERO, f.b.address()).await,
    );
    f.w.unlock(&p, &s, l0.id).await.unwrap();
    assert_eq!(
        f.balance(Address::ZERO, f.a.address()).await,
        a0 + u(2 * ETH)
    );
    assert_eq!(f.balance(Address::ZERO, f.b.address()).await, b0);
}

#[tokio::test]
async fn lock_not_in_the_signed_state_is_refused() {
    let (f, p) = funded().await;
    let now = f.now().await;
    let (l0, pre0) = lock(0, ETH, now + 1_000, Side::A, 1);
    let (l1, _) = lock(1, ETH, now + 1_000, Side::B, 2);
    let s = ChannelState {
        locks: vec![l0, l1],
        ..state(&p, 1, [2 * ETH, ETH])
    };
    f.w.close(&p, &s, &f.sign(&p, &s)).await.unwrap();
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&p, &s).await.unwrap();
    f.w.register_secret(&pre0).await.unwrap();
    let adj = f.w.adjudicator();
    let proof0 = s.lock_proof(0).unwrap();

    // A lock that was never signed, with a real proof.
    let (foreign, pre_f) = lock(7, 3 * ETH, now + 1_000, Side::A, 9);
    f.w.register_secret(&pre_f).await.unwrap();
    let call = adj.unlock(
        convert::params(&p),
        convert::state(&s).unwrap(),
        convert::lock(&foreign),
        proof0.clone(),
    );
    assert_reverts::<InvalidLockProof>(f.w.send(call).await);
    // A signed lock with an inflated amount.
    let mut inflated = convert::lock(&l0);
    inflated.amount = u(3 * ETH);
    let call = adj.unlock(
        convert::params(&p),
        convert::state(&s).unwrap(),
        inflated,
        proof0.clone(),
    );
    assert_reverts::<InvalidLockProof>(f.w.send(call).await);
    // A signed lock with its direction flipped.
    let mut flipped = convert::lock(&l0);
    flipped.sender = 1;
    let call = adj.unlock(
        convert::params(&p),
        convert::state(&s).unwrap(),
        flipped,
        proof0,
    );
    assert_reverts::<InvalidLockProof>(f.w.send(call).await);
    // A different state (with the foreign lock added) than the one concluded.
    let doctored = ChannelState {
        locks: vec![l0, l1, foreign],
        ..s.clone()
    };
    assert_reverts::<StateMismatch>(f.w.unlock(&p, &doctored, foreign.id).await);
    assert_eq!(onchain(&f, &p).await.holdings, Amount(2 * ETH));
}

// --- timing --------------------------------------------------------------------------------------

#[tokio::test]
async fn conclude_before_the_window_ends_is_refused() {
    let (f, p) = funded().await;
    let s = state(&p, 1, [4 * ETH, ETH]);
    assert_reverts::<NotDisputed>(f.w.conclude(&p, &s).await);
    f.w.close(&p, &s, &f.sign(&p, &s)).await.unwrap();
    assert_reverts::<ChallengeWindowOpen>(f.w.conclude(&p, &s).await);
    f.net.increase_time(WINDOW / 2).await.unwrap();
    assert_reverts::<ChallengeWindowOpen>(f.w.conclude(&p, &s).await);
    // And once the window is over, a late challenge is refused.
    f.net.increase_time(WINDOW).await.unwrap();
    let late = state(&p, 2, [ETH, 4 * ETH]);
    assert_reverts::<ChallengeWindowClosed>(f.w.challenge(&p, &late, &f.sign(&p, &late)).await);
    // Nor can a final state signed later replace the finalized one.
    let late_final = final_state(&p, 3, [ETH, 4 * ETH]);
    assert_reverts::<ChallengeWindowClosed>(
        f.w.cooperative_close(&p, &late_final, &f.sign(&p, &late_final))
            .await,
    );
    f.w.conclude(&p, &s).await.unwrap();
}

// --- amounts -------------------------------------------------------------------------------------

/// Sign a raw typed state (amounts beyond what `htlc` can represent) with A and B.
fn sign_typed(f: &Fixture, p: &ChannelParams, t: &typed::State) -> [Adjudicator::Sig; 2] {
    let digest = t.eip712_signing_hash(&htlc::eip712::domain(p));
    [
        convert::sig(&f.a.keys.sign_digest(digest)),
        convert::sig(&f.b.keys.sign_digest(digest)),
    ]
}

#[tokio::test]
async fn overflowing_amounts_are_refused() {
    let (f, p) = funded().await;
    let adj = f.w.adjudicator();
    // balanceA + balanceB wraps to 0 in unchecked arithmetic.
    let t = typed::State {
        channelId: p.id().0,
        version: 1,
        balanceA: U256::MAX,
        balanceB: U256::from(1),
        locksRoot: B256::ZERO,
        locksTotal: U256::ZERO,
        guarantees: vec![],
        isFinal: true,
    };
    let [sa, sb] = sign_typed(&f, &p, &t);
    let call = adj.cooperativeClose(
        convert::params(&p),
        convert::typed_state(&t),
        sa.clone(),
        sb.clone(),
    );
    assert_reverts::<StateTotalOverflow>(f.w.send(call).await);
    let call = adj.close(convert::params(&p), convert::typed_state(&t), sa, sb);
    assert_reverts::<StateTotalOverflow>(f.w.send(call).await);
    // Overflow through a guarantee.
    let t = typed::State {
        balanceA: U256::from(1),
        balanceB: U256::ZERO,
        guarantees: vec![typed::Guarantee {
            virtualChannelId: B256::repeat_byte(1),
            fromA: U256::MAX,
            fromB: U256::ZERO,
            crossed: false,
            locksUntil: u64::MAX,
        }],
        isFinal: false,
        ..t
    };
    let [sa, sb] = sign_typed(&f, &p, &t);
    let call = adj.close(convert::params(&p), convert::typed_state(&t), sa, sb);
    assert_reverts::<StateTotalOverflow>(f.w.send(call).await);

    // Holdings beyond 2^128 - 1.
    let tp = f.params(Asset::Token, 7);
    let token = contracts::bindings::TestToken::new(f.token, f.net.provider().clone());
    token
        .mint(f.a.address(), U256::from(u128::MAX))
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    f.a.client
        .deposit(&tp, Amount(0), Amount(u128::MAX))
        .await
        .unwrap();
    assert_reverts::<HoldingsOverflow>(f.b.client.deposit(&tp, Amount(u128::MAX), Amount(1)).await);
    assert_eq!(onchain(&f, &p).await.holdings, Amount(5 * ETH));
}

#[tokio::test]
async fn amounts_exceeding_the_deposits_are_never_paid() {
    let f = Fixture::new().await;
    let p1 = f.params(Asset::Eth, 1);
    let p2 = f.params(Asset::Eth, 2);
    f.fund(&p1, ETH, 0).await;
    f.fund(&p2, 5 * ETH, 5 * ETH).await;
    let adjudicator = f.w.deployment().adjudicator;

    // A and B collude on a state of channel 1 claiming 6 ETH (it holds 1), hoping to drain
    // channel 2 through the shared contract balance.
    let greedy = state(&p1, 3, [5 * ETH, ETH]);
    f.w.close(&p1, &greedy, &f.sign(&p1, &greedy))
        .await
        .unwrap();
    f.net.increase_time(WINDOW + 1).await.unwrap();
    let (a0, b0) = (
        f.balance(Address::ZERO, f.a.address()).await,
        f.balance(Address::ZERO, f.b.address()).await,
    );
    f.w.conclude(&p1, &greedy).await.unwrap();
    // Paid A first, capped at what channel 1 held; B gets nothing.
    assert_eq!(f.balance(Address::ZERO, f.a.address()).await, a0 + u(ETH));
    assert_eq!(f.balance(Address::ZERO, f.b.address()).await, b0);
    assert_eq!(onchain(&f, &p1).await.holdings, Amount(0));
    assert_eq!(f.balance(Address::ZERO, adjudicator).await, u(10 * ETH));

    // Channel 2 still pays in full, and a greedy final state there is capped too.
    let s2 = final_state(&p2, 1, [8 * ETH, 8 * ETH]);
    f.w.cooperative_close(&p2, &s2, &f.sign(&p2, &s2))
        .await
        .unwrap();
    assert_eq!(
        f.balance(Address::ZERO, f.a.address()).await,
        a0 + u(9 * ETH)
    );
    assert_eq!(
        f.balance(Address::ZERO, f.b.address()).await,
        b0 + u(2 * ETH)
    );
    assert_eq!(f.balance(Address::ZERO, adjudicator).await, U256::ZERO);
}

// --- other refusals --------------------------------------------------------------------------------

#[tokio::test]
async fn deposit_with_stale_expected_holdings_is_refused() {
    let f = Fixture::new().await;
    let p = f.params(Asset::Eth, 1);
    f.a.client
        .deposit(&p, Amount(0), Amount(3 * ETH))
        .await
        .unwrap();
    // B believes it deposits first (it did not see A's deposit): refused, nothing taken.
    let r = f.b.client.deposit(&p, Amount(0), Amount(2 * ETH)).await;
    assert!(matches!(
        r.as_ref().err().and_then(|e| e.adjudicator_error()),
        Some(AdjudicatorErrors::UnexpectedHoldings(e)) if e.expected == U256::ZERO && e.actual == u(3 * ETH)
    ));
    assert_eq!(onchain(&f, &p).await.holdings, Amount(3 * ETH));
}

#[tokio::test]
async fn cooperative_close_needs_a_final_state() {
    let (f, p) = funded().await;
    let s = state(&p, 1, [4 * ETH, ETH]);
    assert_reverts::<NotFinal>(f.w.cooperative_close(&p, &s, &f.sign(&p, &s)).await);
}

#[tokio::test]
async fn guarantee_needs_a_final_virtual_state() {
    let (f, p) = funded().await;
    let c = Keys::from_signer(f.net.signer(4).unwrap());
    let v = f.w.channel_params(
        [f.a.address(), c.address()],
        Address::ZERO,
        WINDOW,
        U256::from(9),
    );
    let s = ChannelState {
        guarantees: vec![guarantee(v.id(), ETH, ETH)],
        ..state(&p, 1, [2 * ETH, ETH])
    };
    f.w.close(&p, &s, &f.sign(&p, &s)).await.unwrap();
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&p, &s).await.unwrap();

    // Co-signed but not final.
    let vs = state(&v, 3, [2 * ETH, 0]);
    let vsigs = sign_with([&f.a.keys, &c], &v, &vs);
    assert_reverts::<VirtualNotFinal>(f.w.resolve_guarantee(&p, &s, &v, &vs, Some(&vsigs)).await);
    // Final, but signed by the ledger's B instead of the virtual channel's B.
    let vf = final_state(&v, 4, [2 * ETH, 0]);
    let wrong = sign_with([&f.a.keys, &f.b.keys], &v, &vf);
    assert_reverts::<WrongSigner>(f.w.resolve_guarantee(&p, &s, &v, &vf, Some(&wrong)).await);
    // Disputed on chain, window still open.
    f.w.close(&v, &vs, &vsigs).await.unwrap();
    assert_reverts::<VirtualNotFinal>(f.w.resolve_guarantee(&p, &s, &v, &vs, None).await);
    // Finalized on chain, but another state than the disputed one.
    f.net.increase_time(WINDOW + 1).await.unwrap();
    let other = state(&v, 3, [0, 2 * ETH]);
    assert_reverts::<StateMismatch>(f.w.resolve_guarantee(&p, &s, &v, &other, None).await);
    // A virtual channel the guarantee does not name.
    let v2 = ChannelParams {
        nonce: U256::from(10),
        ..v.clone()
    };
    let v2s = ChannelState {
        channel_id: v2.id(),
        ..vf.clone()
    };
    let v2sigs = sign_with([&f.a.keys, &c], &v2, &v2s);
    let adj = f.w.adjudicator();
    let call = adj.resolveGuarantee(
        convert::params(&p),
        convert::state(&s).unwrap(),
        U256::ZERO,
        convert::params(&v2),
        convert::state(&v2s).unwrap(),
        v2sigs.iter().map(convert::sig).collect(),
        vec![],
    );
    assert_reverts::<GuaranteeMismatch>(f.w.send(call).await);
    // The disputed state finally resolves it.
    f.w.resolve_guarantee(&p, &s, &v, &vs, None).await.unwrap();
    assert_eq!(onchain(&f, &p).await.holdings, Amount(0));
}

/// Two ledgers guarantee one virtual channel (A, C) through hub H: L1 = (A, H), L2 = (H, C).
/// A and C sign two contradictory final states, hoping to settle L1 with the one that pays A
/// everything and L2 with the one that pays C everything, robbing the hub.
#[tokio::test]
async fn virtual_equivocation_cannot_split_ledgers_differently() {
    let f = Fixture::new().await;
    let c = Keys::from_signer(f.net.signer(4).unwrap());
    let c_client = f.net.client(4).await.unwrap();
    let (a, h) = (f.a.address(), f.b.address());
    let l1 =
        f.w.channel_params([a, h], Address::ZERO, WINDOW, U256::from(1));
    let l2 =
        f.w.channel_params([h, c.address()], Address::ZERO, WINDOW, U256::from(2));
    let v =
        f.w.channel_params([a, c.address()], Address::ZERO, WINDOW, U256::from(3));
    f.fund(&l1, 5 * ETH, 5 * ETH).await;
    f.b.client
        .deposit(&l2, Amount(0), Amount(5 * ETH))
        .await
        .unwrap();
    c_client
        .deposit(&l2, Amount(5 * ETH), Amount(5 * ETH))
        .await
        .unwrap();
    let s1 = ChannelState {
        guarantees: vec![guarantee(v.id(), 2 * ETH, ETH)],
        ..state(&l1, 1, [3 * ETH, 4 * ETH])
    };
    let s2 = ChannelState {
        guarantees: vec![guarantee(v.id(), 2 * ETH, ETH)],
        ..state(&l2, 1, [3 * ETH, 4 * ETH])
    };
    f.w.close(&l1, &s1, &f.sign(&l1, &s1)).await.unwrap();
    f.w.close(&l2, &s2, &sign_with([&f.b.keys, &c], &l2, &s2))
        .await
        .unwrap();
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&l1, &s1).await.unwrap();
    f.w.conclude(&l2, &s2).await.unwrap();

    let all_to_a = final_state(&v, 5, [3 * ETH, 0]);
    let all_to_c = final_state(&v, 5, [0, 3 * ETH]);
    let sigs_a = sign_with([&f.a.keys, &c], &v, &all_to_a);
    let sigs_c = sign_with([&f.a.keys, &c], &v, &all_to_c);
    let h0 = f.balance(Address::ZERO, h).await;
    f.w.resolve_guarantee(&l1, &s1, &v, &all_to_a, Some(&sigs_a))
        .await
        .unwrap();
    assert_reverts::<VirtualOutcomeMismatch>(
        f.w.resolve_guarantee(&l2, &s2, &v, &all_to_c, Some(&sigs_c))
            .await,
    );
    // L2 can only be settled by the same state: the hub gets back what it lost in L1.
    f.w.resolve_guarantee(&l2, &s2, &v, &all_to_a, Some(&sigs_a))
        .await
        .unwrap();
    assert_eq!(f.balance(Address::ZERO, h).await, h0 + u(3 * ETH));
}

/// Once the virtual channel's on-chain dispute is over, its disputed state is the outcome: a
/// final state signed later (or earlier, and withheld) cannot replace it.
#[tokio::test]
async fn virtual_final_state_cannot_override_a_finalized_dispute() {
    let (f, p) = funded().await;
    let c = Keys::from_signer(f.net.signer(4).unwrap());
    let v = f.w.channel_params(
        [f.a.address(), c.address()],
        Address::ZERO,
        WINDOW,
        U256::from(9),
    );
    let s = ChannelState {
        guarantees: vec![guarantee(v.id(), ETH, ETH)],
        ..state(&p, 1, [2 * ETH, ETH])
    };
    f.w.close(&p, &s, &f.sign(&p, &s)).await.unwrap();
    let disputed = state(&v, 3, [ETH / 2, 3 * ETH / 2]);
    f.w.close(&v, &disputed, &sign_with([&f.a.keys, &c], &v, &disputed))
        .await
        .unwrap();
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&p, &s).await.unwrap();
    let late = final_state(&v, 4, [2 * ETH, 0]);
    let late_sigs = sign_with([&f.a.keys, &c], &v, &late);
    assert_reverts::<StateMismatch>(
        f.w.resolve_guarantee(&p, &s, &v, &late, Some(&late_sigs))
            .await,
    );
    let a0 = f.balance(Address::ZERO, f.a.address()).await;
    f.w.resolve_guarantee(&p, &s, &v, &disputed, None)
        .await
        .unwrap();
    assert_eq!(
        f.balance(Address::ZERO, f.a.address()).await,
        a0 + u(ETH / 2)
    );
}

// --- the guarantee's signed orientation and the dispute from a guarantee (ADR 0026) -------------

/// Two guarantees in one ledger state for two virtual channels with the same participants
/// (the ledger's B and C): the signed `crossed` flag, not the addresses, says which ledger side
/// stands for the virtual channel's A, so each splits its own way.
#[tokio::test]
async fn the_signed_orientation_decides_who_stands_for_the_virtual_a() {
    let (f, p) = funded().await;
    let c = Keys::from_signer(f.net.signer(4).unwrap());
    let virt = |nonce| {
        f.w.channel_params(
            [f.b.address(), c.address()],
            Address::ZERO,
            WINDOW,
            U256::from(nonce),
        )
    };
    let (v1, v2) = (virt(11), virt(12));
    let crossed = Guarantee {
        crossed: true,
        ..guarantee(v1.id(), ETH, ETH)
    };
    let straight = guarantee(v2.id(), ETH, ETH);
    let mut guarantees = vec![crossed, straight];
    guarantees.sort_by_key(|g| g.virtual_channel);
    let s = ChannelState {
        guarantees,
        ..state(&p, 1, [ETH / 2, ETH / 2])
    };
    f.w.close(&p, &s, &f.sign(&p, &s)).await.unwrap();
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&p, &s).await.unwrap();
    let (a, b) = (f.a.address(), f.b.address());
    for (v, to_ledger_a) in [(&v1, ETH / 2), (&v2, 3 * ETH / 2)] {
        // Both end with the virtual A (the ledger's B) holding 3/2 ETH of the 2 ETH.
        let vf = final_state(v, 2, [3 * ETH / 2, ETH / 2]);
        let sigs = sign_with([&f.b.keys, &c], v, &vf);
        let (a0, b0) = (
            f.balance(Address::ZERO, a).await,
            f.balance(Address::ZERO, b).await,
        );
        f.w.resolve_guarantee(&p, &s, v, &vf, Some(&sigs))
            .await
            .unwrap();
        assert_eq!(f.balance(Address::ZERO, a).await, a0 + u(to_ledger_a));
        assert_eq!(
            f.balance(Address::ZERO, b).await,
            b0 + u(2 * ETH - to_ledger_a)
        );
    }
}

/// A ledger's guarantee whose virtual channel never got a state signed by both its parties
/// (the peer vanished after the hub signed the guarantee): the dispute from the guarantee
/// registers the virtual channel's opening as funded, and the guarantee settles back as it was
/// funded. Every misuse of it is refused.
#[tokio::test]
async fn a_virtual_channel_never_cosigned_settles_back_as_funded() {
    let (f, p) = funded().await;
    let c = Keys::from_signer(f.net.signer(4).unwrap());
    let v = f.w.channel_params(
        [f.a.address(), c.address()],
        Address::ZERO,
        WINDOW,
        U256::from(9),
    );
    let s = ChannelState {
        guarantees: vec![guarantee(v.id(), 2 * ETH, ETH)],
        ..state(&p, 1, [ETH, ETH])
    };
    // Not registered yet: nothing to start from.
    assert_reverts::<StateMismatch>(f.w.dispute_virtual(&p, &s, &v).await);
    f.w.close(&p, &s, &f.sign(&p, &s)).await.unwrap();
    // Another state than the registered one.
    let forged = ChannelState {
        guarantees: vec![guarantee(v.id(), 3 * ETH, 0)],
        ..state(&p, 1, [ETH, ETH])
    };
    assert_reverts::<StateMismatch>(f.w.dispute_virtual(&p, &forged, &v).await);
    // A virtual channel the guarantee does not name.
    let other = ChannelParams {
        nonce: U256::from(10),
        ..v.clone()
    };
    let adj = f.w.adjudicator();
    let call = |virt: &ChannelParams, index: u64| {
        adj.disputeVirtual(
            convert::params(&p),
            convert::state(&s).unwrap(),
            U256::from(index),
            convert::params(virt),
        )
    };
    assert_reverts::<GuaranteeMismatch>(f.w.send(call(&other, 0)).await);
    assert_reverts::<GuaranteeIndexOutOfRange>(f.w.send(call(&v, 1)).await);
    // Allowed while the ledger's own dispute runs.
    f.w.dispute_virtual(&p, &s, &v).await.unwrap();
    assert_reverts::<AlreadyDisputed>(f.w.dispute_virtual(&p, &s, &v).await);
    let opening = state(&v, 0, [2 * ETH, ETH]);
    assert_eq!(
        f.w.adjudicator()
            .fingerprints(v.id().0)
            .call()
            .await
            .unwrap(),
        f.w.adjudicator()
            .hashState(convert::state(&opening).unwrap())
            .call()
            .await
            .unwrap()
    );
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&p, &s).await.unwrap();
    let (a, b) = (f.a.address(), f.b.address());
    let (a0, b0) = (
        f.balance(Address::ZERO, a).await,
        f.balance(Address::ZERO, b).await,
    );
    f.w.resolve_guarantee(&p, &s, &v, &opening, None)
        .await
        .unwrap();
    assert_eq!(f.balance(Address::ZERO, a).await, a0 + u(2 * ETH));
    assert_eq!(f.balance(Address::ZERO, b).await, b0 + u(ETH));
    assert_eq!(onchain(&f, &p).await.holdings, Amount(0));
}

/// The opening registered from a guarantee is only a floor: a state the virtual channel's
/// parties co-signed later replaces it by `challenge`, and the guarantees settle by that.
#[tokio::test]
async fn a_cosigned_virtual_state_replaces_the_opening_from_the_guarantee() {
    let (f, p) = funded().await;
    let c = Keys::from_signer(f.net.signer(4).unwrap());
    let v = f.w.channel_params(
        [f.a.address(), c.address()],
        Address::ZERO,
        WINDOW,
        U256::from(9),
    );
    let s = ChannelState {
        guarantees: vec![guarantee(v.id(), 2 * ETH, ETH)],
        ..state(&p, 1, [ETH, ETH])
    };
    f.w.close(&p, &s, &f.sign(&p, &s)).await.unwrap();
    f.w.dispute_virtual(&p, &s, &v).await.unwrap();
    let later = state(&v, 3, [ETH / 2, 5 * ETH / 2]);
    let sigs = sign_with([&f.a.keys, &c], &v, &later);
    f.w.challenge(&v, &later, &sigs).await.unwrap();
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&p, &s).await.unwrap();
    assert_reverts::<StateMismatch>(
        f.w.resolve_guarantee(&p, &s, &v, &state(&v, 0, [2 * ETH, ETH]), None)
            .await,
    );
    let (a, b) = (f.a.address(), f.b.address());
    let (a0, b0) = (
        f.balance(Address::ZERO, a).await,
        f.balance(Address::ZERO, b).await,
    );
    f.w.resolve_guarantee(&p, &s, &v, &later, None)
        .await
        .unwrap();
    assert_eq!(f.balance(Address::ZERO, a).await, a0 + u(ETH / 2));
    assert_eq!(f.balance(Address::ZERO, b).await, b0 + u(5 * ETH / 2));
}

// --- far-future locks inside a virtual channel (ADR 0026) ---------------------------------------

/// A virtual channel's parties collude to freeze the hub's collateral: they sign a final state
/// whose locks expire long after the channel's end. The guarantee's signed `locksUntil`
/// settles every lock by then at the latest: before it the resolution waits for the bound (not
/// the locks' own far expiries), after it a lock counts as revealed only if its preimage was
/// registered by the bound, and the hub is paid exactly by that reading.
#[tokio::test]
async fn far_future_virtual_locks_settle_at_the_guarantees_bound() {
    let f = Fixture::new().await;
    let c_keys = Keys::from_signer(&f.net.signer(4).unwrap().clone());
    let (a, h, c) = (f.a.address(), f.b.address(), c_keys.address());
    // Ledger (A, H) guarantees V (A, C): 1 ETH from each side, locks settled by `bound`.
    let ledger = f.params(Asset::Eth, 1);
    f.fund(&ledger, 2 * ETH, 2 * ETH).await;
    let v =
        f.w.channel_params([a, c], Address::ZERO, WINDOW, U256::from(2));
    let now = f.now().await;
    let bound = now + 3 * WINDOW;
    let ls = ChannelState {
        guarantees: vec![Guarantee {
            locks_until: htlc::Expiry(bound),
            ..guarantee(v.id(), ETH, ETH)
        }],
        ..state(&ledger, 3, [ETH, ETH])
    };
    // V's final state: 0.5 each, and three locks expiring a year after the bound.
    let far = bound + 365 * 86_400;
    let (k0, _) = lock(0, ETH / 4, far, Side::A, 1); // A -> C, never revealed: back to A
    let (k1, pre1) = lock(2, ETH / 4, far, Side::A, 2); // A -> C, revealed in time: C's
    let (k2, pre2) = lock(1, ETH / 2, far, Side::B, 3); // C -> A, revealed after the bound: C's
    let vs = ChannelState {
        locks: vec![k0, k2, k1],
        is_final: true,
        ..state(&v, 9, [ETH / 2, ETH / 2])
    };
    let v_sigs = sign_with([&f.a.keys, &c_keys], &v, &vs);
    f.w.close(&ledger, &ls, &f.sign(&ledger, &ls))
        .await
        .unwrap();
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&ledger, &ls).await.unwrap();
    f.w.register_secret(&pre1).await.unwrap();
    // Before the bound an unrevealed lock still waits, but only for the bound.
    match f
        .w
        .resolve_guarantee(&ledger, &ls, &v, &vs, Some(&v_sigs))
        .await
    {
        Err(e) => match e.adjudicator_error() {
            Some(AdjudicatorErrors::LockNotExpired(LockNotExpired { expiry })) => {
                assert_eq!(*expiry, bound)
            }
            _ => panic!("expected LockNotExpired, got {e}"),
        },
        Ok(o) => panic!("resolved before the bound: {:?}", o.tx_hash),
    }
    f.net.increase_time(3 * WINDOW).await.unwrap();
    f.w.register_secret(&pre2).await.unwrap();
    let (a0, h0) = (
        f.balance(Address::ZERO, a).await,
        f.balance(Address::ZERO, h).await,
    );
    f.w.resolve_guarantee(&ledger, &ls, &v, &vs, Some(&v_sigs))
        .await
        .unwrap();
    // V's A ends with 0.5 + 0.25 (k0 back) = 0.75; k1 and k2 (revealed too late) are C's.
    assert_eq!(f.balance(Address::ZERO, a).await, a0 + u(3 * ETH / 4));
    assert_eq!(f.balance(Address::ZERO, h).await, h0 + u(5 * ETH / 4));
}

/// A virtual channel's parties (colluding) register a state with locks on chain and never
/// supply the locks, which only they hold: no guarantee for it could ever be resolved, and the
/// hub's would stay locked for ever. From the guarantees' `locksUntil` plus `WITHHELD_GRACE`
/// (not before) the hub resolves by the registered state without its locks: its balances stand
/// and the locked total goes to the hub on both legs. That records the outcome for every
/// ledger: a resolution with the locks after it is refused. The hub gets back more than it put
/// in; the parties lose what they locked.
#[tokio::test]
async fn a_withheld_lock_set_cannot_freeze_the_hubs_guarantee() {
    let f = Fixture::new().await;
    let c_keys = Keys::from_signer(&f.net.signer(4).unwrap().clone());
    let c_client = f.net.client(4).await.unwrap();
    let (a, h, c) = (f.a.address(), f.b.address(), c_keys.address());
    let l1 =
        f.w.channel_params([a, h], Address::ZERO, WINDOW, U256::from(1));
    let l2 =
        f.w.channel_params([h, c], Address::ZERO, WINDOW, U256::from(2));
    let v =
        f.w.channel_params([a, c], Address::ZERO, WINDOW, U256::from(3));
    f.fund(&l1, 5 * ETH, 5 * ETH).await;
    f.b.client
        .deposit(&l2, Amount(0), Amount(5 * ETH))
        .await
        .unwrap();
    c_client
        .deposit(&l2, Amount(5 * ETH), Amount(5 * ETH))
        .await
        .unwrap();
    let bound = f.now().await + 3 * WINDOW;
    // V is worth 3: A's 2 (locked by A in L1, by the hub in L2) and C's 1 (the hub's in L1,
    // C's in L2); both ledgers stand for V's A on their A side.
    let g = Guarantee {
        locks_until: htlc::Expiry(bound),
        ..guarantee(v.id(), 2 * ETH, ETH)
    };
    let l1_state = ChannelState {
        guarantees: vec![g],
        ..state(&l1, 10, [3 * ETH, 4 * ETH])
    };
    let l2_state = ChannelState {
        guarantees: vec![g],
        ..state(&l2, 10, [3 * ETH, 4 * ETH])
    };
    f.w.close(&l1, &l1_state, &f.sign(&l1, &l1_state))
        .await
        .unwrap();
    f.w.close(
        &l2,
        &l2_state,
        &sign_with([&f.b.keys, &c_keys], &l2, &l2_state),
    )
    .await
    .unwrap();
    // The colluders register V at 1 each and two locks of 0.5, and keep the locks to
    // themselves.
    let far = bound + 30 * 86_400;
    let (k0, _) = lock(0, ETH / 2, far, Side::A, 1);
    let (k1, _) = lock(1, ETH / 2, far, Side::B, 2);
    let vs = ChannelState {
        locks: vec![k0, k1],
        ..state(&v, 9, [ETH, ETH])
    };
    f.w.close(&v, &vs, &sign_with([&f.a.keys, &c_keys], &v, &vs))
        .await
        .unwrap();
    // What the chain shows of it: the root and the total, not the locks.
    let shown = convert::state(&vs).unwrap();
    let ours = ChannelState {
        locks: Vec::new(),
        ..vs.clone()
    };
    assert_ne!(convert::state(&ours).unwrap().locksRoot, shown.locksRoot);
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&l1, &l1_state).await.unwrap();
    f.w.conclude(&l2, &l2_state).await.unwrap();
    // Not before the grace, the one the nodes wait for.
    let grace = htlc::vchan::WITHHELD_GRACE_SECS;
    assert_eq!(
        f.w.adjudicator().WITHHELD_GRACE().call().await.unwrap(),
        grace
    );
    assert_reverts::<WithheldGraceOpen>(
        f.w.resolve_guarantee_withheld(&l2, &l2_state, &v, &shown)
            .await,
    );
    f.net.increase_time(3 * WINDOW + grace).await.unwrap();
    // A state with no locks has nothing withheld: resolved whole the normal way.
    let lock_free = convert::state(&ours).unwrap();
    assert_reverts::<NoLocksWithheld>(
        f.w.resolve_guarantee_withheld(&l2, &l2_state, &v, &lock_free)
            .await,
    );
    let (a0, h0, c0) = (
        f.balance(Address::ZERO, a).await,
        f.balance(Address::ZERO, h).await,
        f.balance(Address::ZERO, c).await,
    );
    f.w.resolve_guarantee_withheld(&l2, &l2_state, &v, &shown)
        .await
        .unwrap();
    // L2: the hub (standing for V's A) gets A's 1 and the locked 1; C its 1.
    assert_eq!(f.balance(Address::ZERO, h).await, h0 + u(2 * ETH));
    assert_eq!(f.balance(Address::ZERO, c).await, c0 + u(ETH));
    // The outcome is recorded: the locks, produced now, are refused.
    assert_reverts::<VirtualOutcomeMismatch>(
        f.w.resolve_guarantee(&l1, &l1_state, &v, &vs, None).await,
    );
    f.w.resolve_guarantee_withheld(&l1, &l1_state, &v, &shown)
        .await
        .unwrap();
    // L1: A (V's A itself) gets its 1; the hub (standing for V's C) C's 1 and the locked 1.
    assert_eq!(f.balance(Address::ZERO, a).await, a0 + u(ETH));
    assert_eq!(f.balance(Address::ZERO, h).await, h0 + u(4 * ETH));
    // The hub put in 3 (1 in L1, 2 in L2) and got 4; both ledgers are empty.
    assert_eq!(f.w.holdings(l1.id()).await.unwrap(), Amount(0));
    assert_eq!(f.w.holdings(l2.id()).await.unwrap(), Amount(0));
}

/// A virtual channel's parties sign a final state whose `locksTotal` disagrees with its locks
/// (no honest node signs one, and a hub could not reproduce its hash to resolve its other
/// legs by it): the adjudicator refuses to record it; the same state with the true total
/// resolves.
#[tokio::test]
async fn a_virtual_state_whose_lock_total_lies_is_refused() {
    let (f, ledger) = {
        let f = Fixture::new().await;
        let p = f.params(Asset::Eth, 1);
        f.fund(&p, 2 * ETH, 2 * ETH).await;
        (f, p)
    };
    let v = f.w.channel_params(
        [f.a.address(), f.b.address()],
        Address::ZERO,
        WINDOW,
        U256::from(2),
    );
    let ls = ChannelState {
        guarantees: vec![guarantee(v.id(), ETH, ETH)],
        ..state(&ledger, 3, [ETH, ETH])
    };
    f.w.close(&ledger, &ls, &f.sign(&ledger, &ls))
        .await
        .unwrap();
    let now = f.now().await;
    let (k0, _) = lock(0, ETH / 2, now + 10, Side::A, 1);
    f.net.increase_time(WINDOW + 1).await.unwrap();
    f.w.conclude(&ledger, &ls).await.unwrap();
    let vs = ChannelState {
        locks: vec![k0],
        is_final: true,
        ..state(&v, 9, [ETH, ETH / 2])
    };
    let honest = htlc::eip712::typed_state(&vs).unwrap();
    let lying = typed::State {
        locksTotal: U256::from(ETH / 4),
        ..honest.clone()
    };
    let adj = f.w.adjudicator();
    let typed_ledger = convert::state(&ls).unwrap();
    let resolve = |t: &typed::State| {
        let [sa, sb] = sign_typed(&f, &v, t);
        adj.resolveGuarantee(
            convert::params(&ledger),
            typed_ledger.clone(),
            U256::ZERO,
            convert::params(&v),
            convert::typed_state(t),
            vec![sa, sb],
            vec![convert::lock(&k0)],
        )
    };
    assert_reverts::<VirtualLocksMismatch>(f.w.send(resolve(&lying)).await);
    f.w.send(resolve(&honest)).await.unwrap();
}
