//! The contract computes exactly what `htlc` computes: channel id, EIP-712 type hashes, domain
//! separator, struct hash and digest, lock leaves and Merkle roots.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::sol_types::SolStruct;
use common::*;
use contracts::convert;
use htlc::eip712::{DomainSeparator, typed, typed_state};
use htlc::{Amount, ChannelId, ChannelParams, ChannelState, Expiry, Guarantee, HtlcId, Lock, Side};

/// A small deterministic generator (xorshift64*), so the test needs no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn amount(&mut self) -> Amount {
        // Mix small, large and extreme amounts.
        match self.next() % 4 {
            0 => Amount(0),
            1 => Amount(u128::from(self.next() % 1_000_000)),
            2 => Amount((u128::from(self.next()) << 64) | u128::from(self.next())),
            _ => Amount(u128::MAX / 4),
        }
    }
    fn word(&mut self) -> B256 {
        let mut b = [0u8; 32];
        for chunk in b.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_be_bytes());
        }
        B256::from(b)
    }
}

fn random_state(rng: &mut Rng, params: &ChannelParams) -> ChannelState {
    let n_locks = (rng.next() % 7) as usize;
    let n_guarantees = (rng.next() % 4) as usize;
    ChannelState {
        channel_id: params.id(),
        version: rng.next(),
        balances: [rng.amount(), rng.amount()],
        locks: (0..n_locks)
            .map(|i| Lock {
                id: HtlcId(i as u64 * 2 + rng.next() % 2),
                amount: Amount(u128::from(rng.next())),
                hashlock: htlc::Hashlock(rng.word()),
                expiry: Expiry(rng.next()),
                sender: if rng.next().is_multiple_of(2) {
                    Side::A
                } else {
                    Side::B
                },
            })
            .collect(),
        guarantees: (0..n_guarantees)
            .map(|_| Guarantee {
                virtual_channel: ChannelId(rng.word()),
                from_a: rng.amount(),
                from_b: rng.amount(),
                crossed: rng.next() % 2 == 1,
                locks_until: Expiry(rng.next()),
            })
            .collect(),
        is_final: rng.next().is_multiple_of(2),
    }
}

#[tokio::test]
async fn channel_id_domain_and_digest_match_htlc() {
    let f = Fixture::new().await;
    let adjudicator = f.w.adjudicator();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);

    // Type hashes: the contract's constants are the keccak of htlc's (alloy's) encodeType.
    let state_type = typed::State::eip712_encode_type();
    assert_eq!(
        adjudicator.STATE_TYPEHASH().call().await.unwrap(),
        keccak256(state_type.as_bytes())
    );
    assert_eq!(
        adjudicator.GUARANTEE_TYPEHASH().call().await.unwrap(),
        keccak256(typed::Guarantee::eip712_encode_type().as_bytes())
    );

    for i in 0..24u64 {
        let asset = if i % 2 == 0 { Address::ZERO } else { f.token };
        let params = f.w.channel_params(
            [f.a.address(), f.b.address()],
            asset,
            rng.next() % (1 << 40),
            U256::from(rng.next()) << 128 | U256::from(i),
        );
        let cid = f.w.onchain_channel_id(&params).await.unwrap();
        assert_eq!(ChannelId(cid), params.id(), "channel id, case {i}");
        assert_eq!(
            adjudicator.domainSeparator().call().await.unwrap(),
            DomainSeparator::new(&params).0,
            "domain separator"
        );

        let s = random_state(&mut rng, &params);
        let rust_digest = DomainSeparator::new(&params).digest(&s).unwrap();
        assert_eq!(
            f.w.onchain_state_digest(&s).await.unwrap(),
            rust_digest,
            "digest, case {i}: {s:?}"
        );
        let onchain = convert::state(&s).unwrap();
        assert_eq!(
            adjudicator.hashState(onchain).call().await.unwrap(),
            typed_state(&s).unwrap().eip712_hash_struct(),
            "struct hash, case {i}"
        );
        // alloy's generic EIP-712 signing hash agrees too (a third implementation).
        assert_eq!(
            typed_state(&s)
                .unwrap()
                .eip712_signing_hash(&htlc::eip712::domain(&params)),
            rust_digest
        );
    }
}

/// A signature made by `htlc` over its digest is accepted by the contract (the digest the
/// contract recovers from is the same), for states with locks and guarantees.
#[tokio::test]
async fn htlc_signatures_verify_on_chain() {
    let f = Fixture::new().await;
    let p = f.params(Asset::Eth, 1);
    f.fund(&p, ETH, ETH).await;
    let mut rng = Rng(42);
    let mut s = random_state(&mut rng, &p);
    s.version = 1;
    s.is_final = false;
    f.w.close(&p, &s, &f.sign(&p, &s)).await.unwrap();
    let ch = f.w.channel(p.id()).await.unwrap();
    assert_eq!(ch.version, 1);
    assert_eq!(
        ch.fingerprint,
        typed_state(&s).unwrap().eip712_hash_struct()
    );
}
