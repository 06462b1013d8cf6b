//! A local chain for tests and local networks: the project's pinned anvil on a free loopback
//! port, with the contracts deployed. The node stops when the [`Devnet`] is dropped.

use crate::client::{ChainClient, http_provider};
use crate::deploy::{Deployment, deploy};
use crate::error::ChainError;
use alloy::node_bindings::{Anvil, AnvilInstance};
use alloy::primitives::{Address, B256, Bytes};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::http::reqwest::Url;
use std::path::PathBuf;
use std::time::Duration;

/// The EVM hardfork the devnet runs, pinned so gas figures do not move with anvil's default.
pub const HARDFORK: &str = "prague";

/// Path of the anvil binary: `$VHUB_ANVIL` if set, else the one `scripts/setup.sh` installs
/// under the workspace's `node_modules/.bin/`.
pub fn anvil_path() -> PathBuf {
    std::env::var_os("VHUB_ANVIL").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../node_modules/.bin/anvil"
            ))
        },
        PathBuf::from,
    )
}

/// How to start a devnet.
#[derive(Clone, Debug, Default)]
pub struct DevnetOptions {
    /// Chain id (anvil's default 31337 if `None`).
    pub chain_id: Option<u64>,
    /// Timestamp of the genesis block (wall clock if `None`).
    pub genesis_timestamp: Option<u64>,
    /// Funded dev accounts (anvil's default 10 if `None`).
    pub accounts: Option<usize>,
}

/// A running anvil with the SecretRegistry and Adjudicator deployed by dev account 0.
#[derive(Debug)]
pub struct Devnet {
    anvil: AnvilInstance,
    signers: Vec<PrivateKeySigner>,
    provider: DynProvider,
    deployment: Deployment,
}

impl Devnet {
    /// Start with default options.
    pub async fn start() -> Result<Self, ChainError> {
        Self::start_with(DevnetOptions::default()).await
    }

    /// Start anvil and deploy the contracts.
    pub async fn start_with(options: DevnetOptions) -> Result<Self, ChainError> {
        let anvil = Self::spawn_anvil(&options)?;
        let signers: Vec<PrivateKeySigner> = anvil
            .keys()
            .iter()
            .filter_map(|k| PrivateKeySigner::from_bytes(&B256::from_slice(&k.to_bytes())).ok())
            .collect();
        let deployer = signers.first().cloned().ok_or(ChainError::Anvil(
            alloy::node_bindings::NodeError::NoKeysAvailable,
        ))?;
        let provider = Self::provider_for(&anvil, deployer);
        let deployment = deploy(&provider).await?;
        Ok(Devnet {
            anvil,
            signers,
            provider,
            deployment,
        })
    }

    /// Start only anvil (nothing deployed), as the devnet would.
    pub fn spawn_anvil(options: &DevnetOptions) -> Result<AnvilInstance, ChainError> {
        let path = anvil_path();
        if !path.exists() {
            return Err(ChainError::AnvilNotFound(path));
        }
        let mut anvil = Anvil::new()
            .path(path)
            .host("127.0.0.1")
            .port(0u16)
            .arg("--hardfork")
            .arg(HARDFORK);
        if let Some(chain_id) = options.chain_id {
            anvil = anvil.chain_id(chain_id);
        }
        if let Some(t) = options.genesis_timestamp {
            anvil = anvil.arg("--timestamp").arg(t.to_string());
        }
        if let Some(n) = options.accounts {
            anvil = anvil.arg("--accounts").arg(n.to_string());
        }
        Ok(anvil.try_spawn()?)
    }

    fn provider_for(anvil: &AnvilInstance, signer: PrivateKeySigner) -> DynProvider {
        let provider = http_provider(anvil.endpoint_url(), signer);
        provider
            .client()
            .set_poll_interval(Duration::from_millis(10));
        provider
    }

    /// The node's HTTP endpoint.
    pub fn endpoint(&self) -> Url {
        self.anvil.endpoint_url()
    }

    /// The node's chain id.
    pub fn chain_id(&self) -> u64 {
        self.anvil.chain_id()
    }

    /// The deployed contracts.
    pub fn deployment(&self) -> Deployment {
        self.deployment
    }

    /// Dev account `i` (anvil funds ten with 10,000 ETH each; account 0 deployed the contracts).
    pub fn signer(&self, i: usize) -> Option<&PrivateKeySigner> {
        self.signers.get(i)
    }

    /// A provider signing as dev account 0.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// A chain client sending as dev account `i`, polling receipts every 10 ms.
    pub async fn client(&self, i: usize) -> Result<ChainClient, ChainError> {
        let signer = self.signer(i).cloned().ok_or(ChainError::Anvil(
            alloy::node_bindings::NodeError::NoKeysAvailable,
        ))?;
        self.client_for(signer).await
    }

    /// A chain client sending as `signer`, against this devnet's deployment.
    pub async fn client_for(&self, signer: PrivateKeySigner) -> Result<ChainClient, ChainError> {
        let sender = signer.address();
        let provider = Self::provider_for(&self.anvil, signer);
        ChainClient::new(provider, sender, self.deployment).await
    }

    /// Move the chain's clock forward by `seconds` and mine a block at the new time.
    pub async fn increase_time(&self, seconds: u64) -> Result<(), ChainError> {
        let _: serde_json::Value = self
            .provider
            .raw_request("evm_increaseTime".into(), (seconds,))
            .await?;
        self.mine().await
    }

    /// Mine one block.
    pub async fn mine(&self) -> Result<(), ChainError> {
        let _: serde_json::Value = self.provider.raw_request("evm_mine".into(), ()).await?;
        Ok(())
    }

    /// Reorganise the chain: drop the last `depth` blocks (and the transactions in them) and
    /// mine `depth` empty blocks in their place, as a competing branch would (`anvil_reorg`).
    pub async fn reorg(&self, depth: u64) -> Result<(), ChainError> {
        let replayed: Vec<serde_json::Value> = Vec::new();
        let _: serde_json::Value = self
            .provider
            .raw_request("anvil_reorg".into(), (depth, replayed))
            .await?;
        Ok(())
    }

    /// Replace the code at `address` (for example, to give a participant's account the code
    /// of a hostile receiver, as an EIP-7702 delegation would).
    pub async fn set_code(&self, address: Address, code: Bytes) -> Result<(), ChainError> {
        let _: serde_json::Value = self
            .provider
            .raw_request("anvil_setCode".into(), (address, code))
            .await?;
        Ok(())
    }
}
