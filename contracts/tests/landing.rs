//! Transactions that land (issue 14): a fee spike leaves a transaction below the base fee; the
//! client sends it again with the same nonce and higher fees until it is mined, and at its fee
//! cap it gives up with `Stuck`, after which a retry replaces the stuck transaction. Real anvil.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use alloy::primitives::U256;
use alloy::providers::Provider;
use contracts::{ChainError, Devnet, TxPolicy};
use htlc::Preimage;
use std::time::Duration;

const GWEI: u128 = 1_000_000_000;

/// Turn automatic mining off and make the next block's base fee `fee`.
async fn spike(net: &Devnet, fee: u128) {
    let _: serde_json::Value = net
        .provider()
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .unwrap();
    let _: serde_json::Value = net
        .provider()
        .raw_request("anvil_setNextBlockBaseFeePerGas".into(), (U256::from(fee),))
        .await
        .unwrap();
}

/// Register `preimage` from `client` while a block is mined every 100 ms (up to 30 s).
async fn register_while_mining(
    net: &Devnet,
    client: &contracts::ChainClient,
    preimage: Preimage,
) -> Result<contracts::TxOutcome, ChainError> {
    let c = client.clone();
    let send = tokio::spawn(async move { c.register_secret(&preimage).await });
    for _ in 0..300 {
        if send.is_finished() {
            break;
        }
        net.mine().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    send.await.unwrap()
}

#[tokio::test]
async fn a_transaction_under_a_fee_spike_is_replaced_with_higher_fees_until_it_lands() {
    let net = Devnet::start().await.unwrap();
    let client = net.client(1).await.unwrap();
    client.set_poll_interval(Duration::from_millis(10));
    client.set_tx_policy(TxPolicy {
        timeout: Duration::from_millis(200),
        bump_percent: 25,
        max_fee_per_gas: 10_000 * GWEI,
    });
    let provider = net.provider();
    let me = client.sender();
    let nonce = provider.get_transaction_count(me).await.unwrap();
    let offered = provider
        .estimate_eip1559_fees()
        .await
        .unwrap()
        .max_fee_per_gas;
    spike(&net, offered * 8).await;
    let preimage = Preimage([7; 32]);
    // Blocks keep coming (empty while the fee is below the base fee).
    let outcome = register_while_mining(&net, &client, preimage)
        .await
        .expect("the transaction never landed");
    let tx = provider
        .get_transaction_by_hash(outcome.tx_hash)
        .await
        .unwrap()
        .unwrap();
    use alloy::consensus::Transaction;
    assert_eq!(
        tx.nonce(),
        nonce,
        "the same nonce: a replacement, not a second transaction"
    );
    assert!(
        tx.max_fee_per_gas() > offered,
        "landed at the first fee {offered}: no bump happened"
    );
    assert_eq!(provider.get_transaction_count(me).await.unwrap(), nonce + 1);
    assert!(
        client
            .revealed_at(preimage.hashlock())
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn at_its_fee_cap_a_send_gives_up_and_a_retry_replaces_the_stuck_transaction() {
    let net = Devnet::start().await.unwrap();
    let client = net.client(1).await.unwrap();
    client.set_poll_interval(Duration::from_millis(10));
    let provider = net.provider();
    let me = client.sender();
    let nonce = provider.get_transaction_count(me).await.unwrap();
    let offered = provider
        .estimate_eip1559_fees()
        .await
        .unwrap()
        .max_fee_per_gas;
    client.set_tx_policy(TxPolicy {
        timeout: Duration::from_millis(150),
        bump_percent: 25,
        max_fee_per_gas: offered * 2,
    });
    // The base fee stays far above the cap (no blocks are mined meanwhile).
    spike(&net, offered * 100).await;
    net.mine().await.unwrap();
    let preimage = Preimage([8; 32]);
    let err = client.register_secret(&preimage).await.unwrap_err();
    assert!(
        matches!(err, ChainError::Stuck { nonce: n, max_fee } if n == nonce && max_fee == offered * 2),
        "{err}"
    );
    // The spike passes; the cap is raised; the retry takes the same nonce at a higher fee.
    client.set_tx_policy(TxPolicy {
        timeout: Duration::from_millis(150),
        bump_percent: 25,
        max_fee_per_gas: 10_000 * GWEI,
    });
    let _: serde_json::Value = provider
        .raw_request("evm_setAutomine".into(), (true,))
        .await
        .unwrap();
    let outcome = register_while_mining(&net, &client, preimage)
        .await
        .expect("the retry never landed");
    let tx = provider
        .get_transaction_by_hash(outcome.tx_hash)
        .await
        .unwrap()
        .unwrap();
    use alloy::consensus::Transaction;
    assert_eq!(tx.nonce(), nonce);
    assert!(
        tx.max_fee_per_gas() > offered * 2,
        "the retry must outbid the stuck one"
    );
    assert_eq!(provider.get_transaction_count(me).await.unwrap(), nonce + 1);
}
