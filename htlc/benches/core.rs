//! The CPU floor of every payment: sign a state, verify a state, apply a proposal.
//!
//! Run: `cargo bench -p htlc --bench core`. Signature back-ends compared: alloy's default
//! (pure-Rust k256) and libsecp256k1 (the `secp256k1` crate, used on our hot path), and for
//! verification also a check against a known public key instead of recovering the signer.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use alloy::primitives::{Address, B256, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use htlc::eip712::DomainSeparator;
use htlc::ids::{Expiry, Preimage};
use htlc::onion;
use htlc::ops::Limits;
use htlc::sig::{Keys, recover};
use htlc::update::sign_state;
use htlc::{Amount, Channel, ChannelParams, ChannelState, Effect, Message, SignedState};
use secp256k1::{
    Message as SecpMessage, PublicKey, SECP256K1, SecretKey, ecdsa::Signature as SecpSig,
};
use std::hint::black_box;
use std::time::Duration;

const NOW: Expiry = Expiry(1_000_000);

fn setup() -> (Channel, Channel) {
    let ka = Keys::from_bytes([0xA1; 32]).unwrap();
    let kb = Keys::from_bytes([0xB2; 32]).unwrap();
    let params = ChannelParams {
        chain_id: 1,
        adjudicator: Address::repeat_byte(0xAD),
        participants: [ka.address(), kb.address()],
        asset: Address::ZERO,
        challenge_duration: 3600,
        nonce: U256::from(1),
    };
    let state = ChannelState::opening(
        params.id(),
        [Amount(u64::MAX.into()), Amount(u64::MAX.into())],
    );
    let sigs = [
        sign_state(&params, &ka, &state).unwrap(),
        sign_state(&params, &kb, &state).unwrap(),
    ];
    let signed = SignedState { state, sigs };
    (
        Channel::from_cosigned(params.clone(), ka, Limits::default(), signed.clone()).unwrap(),
        Channel::from_cosigned(params, kb, Limits::default(), signed).unwrap(),
    )
}

/// A proposal of `n` HTLC offers from A, and B ready to receive it.
fn proposal(n: usize) -> (Channel, Message) {
    let (mut a, b) = setup();
    for i in 0..n {
        a.offer_htlc(
            Amount(1_000 + i as u128),
            Preimage([i as u8; 32]).hashlock(),
            Expiry(NOW.0 + 3600),
        );
    }
    let effects = a.propose(NOW).unwrap();
    let msg = effects
        .into_iter()
        .find_map(|e| match e {
            Effect::Send(m) => Some(m),
            _ => None,
        })
        .unwrap();
    (b, msg)
}

fn bench(c: &mut Criterion) {
    let (a, _) = setup();
    let state = a.latest().state.clone();
    let params = a.snapshot().params().clone();
    let domain = DomainSeparator::new(&params);
    let keys = Keys::from_bytes([0xA1; 32]).unwrap();
    let signer = PrivateKeySigner::from_bytes(&B256::repeat_byte(0xA1)).unwrap();
    let digest = domain.digest(&state).unwrap();
    let sig = keys.sign_digest(digest);

    let mut g = c.benchmark_group("state");
    g.bench_function("digest (EIP-712)", |b| {
        b.iter(|| domain.digest(black_box(&state)).unwrap())
    });
    g.bench_function("sign/libsecp256k1", |b| {
        b.iter(|| keys.sign_digest(domain.digest(black_box(&state)).unwrap()))
    });
    g.bench_function("sign/k256 (alloy default)", |b| {
        b.iter(|| {
            signer
                .sign_hash_sync(&domain.digest(black_box(&state)).unwrap())
                .unwrap()
        })
    });
    g.bench_function("verify/libsecp256k1 recover", |b| {
        b.iter(|| recover(domain.digest(black_box(&state)).unwrap(), black_box(&sig)).unwrap())
    });
    g.bench_function("verify/k256 recover (alloy default)", |b| {
        b.iter(|| {
            sig.recover_address_from_prehash(&domain.digest(black_box(&state)).unwrap())
                .unwrap()
        })
    });
    let secret = SecretKey::from_byte_array([0xA1; 32]).unwrap();
    let public = PublicKey::from_secret_key(SECP256K1, &secret);
    let mut compact = [0u8; 64];
    compact[..32].copy_from_slice(&sig.r().to_be_bytes::<32>());
    compact[32..].copy_from_slice(&sig.s().to_be_bytes::<32>());
    let plain = SecpSig::from_compact(&compact).unwrap();
    g.bench_function("verify/libsecp256k1 known pubkey", |b| {
        b.iter(|| {
            let d = domain.digest(black_box(&state)).unwrap();
            SECP256K1
                .verify_ecdsa(SecpMessage::from_digest(d.0), &plain, &public)
                .unwrap()
        })
    });
    g.finish();

    // The onion every HTLC carries (ADR 0027): the payer builds one per payment, each hub
    // peels its layer (two scalar multiplications: the shared secret and the next key), the
    // payee peels the last (one).
    let mut g = c.benchmark_group("onion");
    let hub = Keys::from_bytes([0xB2; 32]).unwrap();
    let payee = Keys::from_bytes([0xC3; 32]).unwrap();
    let hashlock = B256::repeat_byte(7);
    let hops = [
        onion::Hop {
            node: hub.public_key(),
            payload: onion::HopPayload::Forward {
                next: payee.address(),
                amount: Amount(1_000_000),
                expiry: Expiry(NOW.0 + 3600),
            },
        },
        onion::Hop {
            node: payee.public_key(),
            payload: onion::HopPayload::Final {
                amount: Amount(1_000_000),
                expiry: Expiry(NOW.0 + 3600),
                total: Amount(1_000_000),
            },
        },
    ];
    let session = keys.onion_session(B256::repeat_byte(1)).unwrap();
    g.bench_function("build (one hub + payee)", |b| {
        b.iter(|| onion::build(black_box(&session), &hops, hashlock).unwrap())
    });
    let (packet, _) = onion::build(&session, &hops, hashlock).unwrap();
    g.bench_function("peel at a hub", |b| {
        b.iter(|| hub.peel(black_box(&packet), hashlock).unwrap())
    });
    let last = hub.peel(&packet, hashlock).unwrap().next.unwrap();
    g.bench_function("peel at the payee", |b| {
        b.iter(|| payee.peel(black_box(&last), hashlock).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("apply proposal (validate + verify + countersign)");
    for n in [1usize, 100] {
        let (b, msg) = proposal(n);
        g.bench_function(format!("{n} ops"), |bench| {
            bench.iter_batched(
                || (b.clone(), msg.clone()),
                |(mut b, msg)| b.handle(msg, NOW).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
