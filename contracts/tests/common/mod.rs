//! Shared fixture of the anvil tests: a devnet, two funded participants, a watchtower account
//! that submits disputes (so participants' ETH balances move only by payouts), a test token,
//! and helpers to build and sign states with `htlc`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use alloy::primitives::{Address, B256, Signature, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolError;
use contracts::bindings::TestToken;
use contracts::{ChainClient, ChainError, Devnet, TxOutcome};
use htlc::eip712::DomainSeparator;
use htlc::sig::Keys;
use htlc::{
    Amount, ChannelId, ChannelParams, ChannelState, Expiry, Guarantee, HtlcId, Lock, Preimage, Side,
};

pub mod hostile {
    //! Bindings of the hostile test contracts.
    #![allow(missing_docs)]
    alloy::sol!(
        #[sol(rpc, all_derives)]
        HostileToken,
        "artifacts/test/HostileToken.json"
    );
    alloy::sol!(
        #[sol(rpc, all_derives)]
        HostileReceiver,
        "artifacts/test/HostileReceiver.json"
    );
}

/// 1 ether in wei.
pub const ETH: u128 = 1_000_000_000_000_000_000;
/// Challenge window of the test channels, seconds.
pub const WINDOW: u64 = 100;

/// A participant: its keys (for `htlc` signing) and a chain client sending as it.
pub struct Party {
    pub signer: PrivateKeySigner,
    pub keys: Keys,
    pub client: ChainClient,
}

impl Party {
    pub fn address(&self) -> Address {
        self.keys.address()
    }
}

pub struct Fixture {
    pub net: Devnet,
    pub a: Party,
    pub b: Party,
    /// A third party submitting disputes, conclusions and unlocks (a watchtower).
    pub w: ChainClient,
    pub token: Address,
}

/// Which asset a scenario runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asset {
    Eth,
    Token,
}

impl Fixture {
    pub async fn new() -> Self {
        Self::on(Devnet::start().await.expect("start devnet")).await
    }

    pub async fn on(net: Devnet) -> Self {
        let a = party(&net, 1).await;
        let b = party(&net, 2).await;
        let w = net.client(9).await.unwrap();
        let token = contracts::deploy::deploy_test_token(net.provider(), "Test", "TST")
            .await
            .unwrap();
        let t = TestToken::new(token, net.provider().clone());
        for who in [a.address(), b.address()] {
            t.mint(who, U256::from(1_000_000 * ETH))
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap();
        }
        Fixture {
            net,
            a,
            b,
            w,
            token,
        }
    }

    pub fn asset(&self, asset: Asset) -> Address {
        match asset {
            Asset::Eth => Address::ZERO,
            Asset::Token => self.token,
        }
    }

    /// Parameters of a channel between A and B.
    pub fn params(&self, asset: Asset, nonce: u64) -> ChannelParams {
        self.w.channel_params(
            [self.a.address(), self.b.address()],
            self.asset(asset),
            WINDOW,
            U256::from(nonce),
        )
    }

    /// A deposits `a` (expecting 0 held), then B deposits `b` (expecting `a`).
    pub async fn fund(&self, params: &ChannelParams, a: u128, b: u128) {
        if a > 0 {
            self.a
                .client
                .deposit(params, Amount(0), Amount(a))
                .await
                .unwrap();
        }
        if b > 0 {
            self.b
                .client
                .deposit(params, Amount(a), Amount(b))
                .await
                .unwrap();
        }
    }

    /// Both participants' signatures on `state`.
    pub fn sign(&self, params: &ChannelParams, state: &ChannelState) -> [Signature; 2] {
        sign_with([&self.a.keys, &self.b.keys], params, state)
    }

    pub async fn balance(&self, asset: Address, who: Address) -> U256 {
        self.w.balance(asset, who).await.unwrap()
    }

    /// Latest block timestamp.
    pub async fn now(&self) -> u64 {
        self.w.latest_timestamp().await.unwrap()
    }
}

async fn party(net: &Devnet, i: usize) -> Party {
    let signer = net.signer(i).unwrap().clone();
    let keys = Keys::from_signer(&signer);
    let client = net.client(i).await.unwrap();
    Party {
        signer,
        keys,
        client,
    }
}

/// Signatures of `keys` (in order) on the state's EIP-712 digest, computed by `htlc`.
pub fn sign_with(keys: [&Keys; 2], params: &ChannelParams, state: &ChannelState) -> [Signature; 2] {
    let digest = DomainSeparator::new(params).digest(state).unwrap();
    [keys[0].sign_digest(digest), keys[1].sign_digest(digest)]
}

/// A state of the channel.
pub fn state(params: &ChannelParams, version: u64, balances: [u128; 2]) -> ChannelState {
    ChannelState {
        version,
        ..ChannelState::opening(params.id(), [Amount(balances[0]), Amount(balances[1])])
    }
}

/// A final state.
pub fn final_state(params: &ChannelParams, version: u64, balances: [u128; 2]) -> ChannelState {
    ChannelState {
        is_final: true,
        ..state(params, version, balances)
    }
}

/// A lock and the preimage that opens it.
pub fn lock(id: u64, amount: u128, expiry: u64, sender: Side, seed: u8) -> (Lock, Preimage) {
    let preimage = Preimage([seed; 32]);
    (
        Lock {
            id: HtlcId(id),
            amount: Amount(amount),
            hashlock: preimage.hashlock(),
            expiry: Expiry(expiry),
            sender,
        },
        preimage,
    )
}

pub fn guarantee(virtual_channel: ChannelId, from_a: u128, from_b: u128) -> Guarantee {
    Guarantee {
        virtual_channel,
        from_a: Amount(from_a),
        from_b: Amount(from_b),
        crossed: false,
        locks_until: Expiry(u64::MAX),
    }
}

/// Assert the result is a revert with the adjudicator's custom error `E`.
#[track_caller]
pub fn assert_reverts<E: SolError>(result: Result<TxOutcome, ChainError>) {
    match result {
        Ok(o) => panic!(
            "expected revert {}, but the call succeeded: {:?}",
            E::SIGNATURE,
            o.tx_hash
        ),
        Err(e) => assert!(e.is::<E>(), "expected revert {}, got: {e}", E::SIGNATURE),
    }
}

/// Bytes32 from a u64, for ids and seeds.
pub fn word(n: u64) -> B256 {
    B256::from(U256::from(n))
}

pub fn u(n: u128) -> U256 {
    U256::from(n)
}
