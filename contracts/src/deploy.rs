//! Deploying the contracts from the committed artifacts.

use crate::bindings::{Adjudicator, SecretRegistry, TestToken};
use crate::error::ChainError;
use alloy::primitives::Address;
use alloy::providers::DynProvider;
use serde::{Deserialize, Serialize};

/// Where the contracts of one deployment live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Deployment {
    /// The SecretRegistry.
    pub registry: Address,
    /// The Adjudicator (it reads `registry`).
    pub adjudicator: Address,
}

/// Deploy a SecretRegistry and an Adjudicator reading it, from the provider's default account.
pub async fn deploy(provider: &DynProvider) -> Result<Deployment, ChainError> {
    let registry = deploy_registry(provider).await?;
    let adjudicator = deploy_adjudicator(provider, registry).await?;
    Ok(Deployment {
        registry,
        adjudicator,
    })
}

/// Deploy a SecretRegistry.
pub async fn deploy_registry(provider: &DynProvider) -> Result<Address, ChainError> {
    Ok(*SecretRegistry::deploy(provider.clone()).await?.address())
}

/// Deploy an Adjudicator reading an existing registry (several adjudicators may share one).
pub async fn deploy_adjudicator(
    provider: &DynProvider,
    registry: Address,
) -> Result<Address, ChainError> {
    Ok(*Adjudicator::deploy(provider.clone(), registry)
        .await?
        .address())
}

/// Deploy the plain test ERC-20 (anyone may mint) for local networks and tests.
pub async fn deploy_test_token(
    provider: &DynProvider,
    name: &str,
    symbol: &str,
) -> Result<Address, ChainError> {
    Ok(
        *TestToken::deploy(provider.clone(), name.to_owned(), symbol.to_owned())
            .await?
            .address(),
    )
}
