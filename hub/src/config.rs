//! The hub's TOML configuration. Every field has a default except the key file; unknown fields
//! are an error (a typo must not silently fall back to a default).
//!
//! ```toml
//! # Address the QUIC endpoint listens on. Default "127.0.0.1:9735".
//! listen = "127.0.0.1:9735"
//! # File holding the hub's secp256k1 private key as hex (0x-prefixed or not). Required.
//! key_file = "hub.key"
//! # Ethereum JSON-RPC endpoint. Default "http://127.0.0.1:8545".
//! chain_rpc = "http://127.0.0.1:8545"
//! # Chain id the channels are on. Default 31337 (a local anvil).
//! chain_id = 31337
//! # Adjudicator contract address. Default: none (off-chain only; opening channels is refused).
//! adjudicator = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
//! # Directory of the RocksDB database. Default "./hub-data".
//! data_dir = "./hub-data"
//! # HTTP/JSON API and Prometheus /metrics, loopback only. Default: none (no API).
//! api = "127.0.0.1:9736"
//!
//! [limits]
//! max_frame_bytes = 1048576      # largest frame accepted (default 1 MiB)
//! max_pending_htlcs = 483        # pending HTLC locks per channel (default 483)
//! max_ops_per_update = 1024      # operations per signed update (default 1024)
//! max_channels_per_peer = 16     # ledger channels one peer may hold (default 16)
//! max_frames_per_second = 2000   # per peer, beyond it frames are refused (default 2000)
//!
//! [policy]
//! base_fee = 1000                # flat fee per forwarded HTLC, wei (default 1000)
//! fee_ppm = 100                  # proportional fee, millionths (default 100)
//! expiry_delta = 3600            # seconds, at least htlc::forward::MIN_EXPIRY_DELTA_SECS
//! min_htlc = 1                   # smallest HTLC forwarded, wei (default 1)
//!
//! [funding]
//! collateral = 0                 # wei the hub deposits into each channel a peer opens (default 0)
//! auto_settle = true             # pay out co-signed final states on chain at once (default true)
//! chain_poll_ms = 500            # how often the adjudicator's events are polled (default 500)
//! chain_retry_secs = 5           # how often failed transactions are sent again (default 5)
//!
//! # Hubs to connect to at start (a peer lists its hub). Default: none.
//! [[connect]]
//! addr = "127.0.0.1:9735"
//! address = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
//! ```

use alloy::primitives::Address;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is invalid, has an unknown field, or a value of the wrong type.
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of its allowed range.
    #[error("invalid value for {field}: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        why: String,
    },
}

/// Bounds (rule 10).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest frame accepted, bytes.
    pub max_frame_bytes: usize,
    /// Pending HTLC locks per channel.
    pub max_pending_htlcs: usize,
    /// Operations per signed update.
    pub max_ops_per_update: usize,
    /// Ledger channels one peer may hold.
    pub max_channels_per_peer: usize,
    /// Frames per second per peer.
    pub max_frames_per_second: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: crate::wire::DEFAULT_MAX_FRAME,
            max_pending_htlcs: 483,
            max_ops_per_update: 1024,
            max_channels_per_peer: 16,
            max_frames_per_second: 2000,
        }
    }
}

/// Forwarding policy applied to every channel.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Flat fee per forwarded HTLC, wei.
    pub base_fee: u128,
    /// Proportional fee, millionths.
    pub fee_ppm: u32,
    /// Expiry delta, seconds.
    pub expiry_delta: u64,
    /// Smallest HTLC forwarded, wei.
    pub min_htlc: u128,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            base_fee: 1000,
            fee_ppm: 100,
            expiry_delta: 3600,
            min_htlc: 1,
        }
    }
}

/// What the hub does on chain by itself.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FundingConfig {
    /// Wei the hub deposits into each channel a peer opens, once the peer's deposit is seen.
    pub collateral: u128,
    /// Whether co-signed final states are paid out on chain at once.
    pub auto_settle: bool,
    /// Milliseconds between polls of the adjudicator's events.
    pub chain_poll_ms: u64,
    /// Seconds between attempts to send transactions that failed.
    pub chain_retry_secs: u64,
}

impl Default for FundingConfig {
    fn default() -> Self {
        FundingConfig {
            collateral: 0,
            auto_settle: true,
            chain_poll_ms: 500,
            chain_retry_secs: 5,
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// QUIC listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Private key file (hex).
    pub key_file: PathBuf,
    /// JSON-RPC endpoint of the chain.
    #[serde(default = "default_rpc")]
    pub chain_rpc: String,
    /// Chain id the channels are on.
    #[serde(default = "default_chain_id")]
    pub chain_id: u64,
    /// Adjudicator contract.
    #[serde(default)]
    pub adjudicator: Option<Address>,
    /// RocksDB directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Bounds.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Forwarding policy.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// On-chain behaviour.
    #[serde(default)]
    pub funding: FundingConfig,
    /// HTTP/JSON API and Prometheus `/metrics` address (loopback). Default: none (no API).
    #[serde(default)]
    pub api: Option<SocketAddr>,
    /// Hubs this node connects to at start (a peer's configuration; a hub may list other
    /// hubs). Sessions are re-dialled when they drop.
    #[serde(default)]
    pub connect: Vec<ConnectConfig>,
}

/// A hub to connect to.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConnectConfig {
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Its Ethereum address (the session is refused if it proves another key).
    pub address: Address,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9735))
}
fn default_rpc() -> String {
    "http://127.0.0.1:8545".into()
}
fn default_chain_id() -> u64 {
    31337
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./hub-data")
}

impl Config {
    /// Parse and validate a configuration text. Relative paths stay relative to the caller.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text)?;
        c.validate()?;
        Ok(c)
    }

    /// Read, parse and validate a file; relative paths in it are resolved against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut c = Config::parse(&text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if c.key_file.is_relative() {
            c.key_file = base.join(&c.key_file);
        }
        if c.data_dir.is_relative() {
            c.data_dir = base.join(&c.data_dir);
        }
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let bad = |field, why: &str| {
            Err(ConfigError::Invalid {
                field,
                why: why.into(),
            })
        };
        if !(1024..=64 << 20).contains(&l.max_frame_bytes) {
            return bad("limits.max_frame_bytes", "must be between 1 KiB and 64 MiB");
        }
        if l.max_pending_htlcs == 0 || l.max_pending_htlcs > 10_000 {
            return bad("limits.max_pending_htlcs", "must be between 1 and 10000");
        }
        if l.max_ops_per_update == 0 || l.max_ops_per_update > 4096 {
            return bad("limits.max_ops_per_update", "must be between 1 and 4096");
        }
        if l.max_channels_per_peer == 0 {
            return bad("limits.max_channels_per_peer", "must be at least 1");
        }
        if l.max_frames_per_second == 0 {
            return bad("limits.max_frames_per_second", "must be at least 1");
        }
        if self.policy.expiry_delta < htlc::forward::MIN_EXPIRY_DELTA_SECS {
            return Err(ConfigError::Invalid {
                field: "policy.expiry_delta",
                why: format!(
                    "must be at least {} s (chain inclusion + finality + reaction time)",
                    htlc::forward::MIN_EXPIRY_DELTA_SECS
                ),
            });
        }
        if self.chain_rpc.is_empty() {
            return bad("chain_rpc", "must not be empty");
        }
        if self
            .chain_rpc
            .parse::<alloy::transports::http::reqwest::Url>()
            .is_err()
        {
            return bad("chain_rpc", "must be a URL such as http://127.0.0.1:8545");
        }
        let f = &self.funding;
        if !(10..=600_000).contains(&f.chain_poll_ms) {
            return bad("funding.chain_poll_ms", "must be between 10 and 600000");
        }
        if !(1..=3600).contains(&f.chain_retry_secs) {
            return bad("funding.chain_retry_secs", "must be between 1 and 3600");
        }
        if self.adjudicator == Some(Address::ZERO) {
            return bad("adjudicator", "must not be the zero address");
        }
        if let Some(api) = self.api
            && !api.ip().is_loopback()
        {
            return bad(
                "api",
                "must be a loopback address: the API has no authentication of its own",
            );
        }
        Ok(())
    }

    /// The forwarding policy in the core's form.
    pub fn forward_policy(&self) -> htlc::forward::ForwardPolicy {
        htlc::forward::ForwardPolicy {
            base_fee: htlc::Amount(self.policy.base_fee),
            fee_ppm: self.policy.fee_ppm,
            expiry_delta: self.policy.expiry_delta,
            min_htlc: htlc::Amount(self.policy.min_htlc),
            ..htlc::forward::ForwardPolicy::default()
        }
    }
}

/// Read a hex private key file as a transaction signer (the same key signs states).
pub fn load_signer(path: &Path) -> anyhow::Result<alloy::signers::local::PrivateKeySigner> {
    let keys = load_key(path)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read key file {}: {e}", path.display()))?;
    let signer: alloy::signers::local::PrivateKeySigner = text
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("key file {}: {e}", path.display()))?;
    debug_assert_eq!(signer.address(), keys.address());
    Ok(signer)
}

/// Read a hex private key file into keys.
pub fn load_key(path: &Path) -> anyhow::Result<htlc::sig::Keys> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read key file {}: {e}", path.display()))?;
    let hex = text.trim().trim_start_matches("0x");
    let bytes: [u8; 32] = alloy::primitives::hex::decode(hex)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("key file {} must hold 32 bytes of hex", path.display()))?;
    htlc::sig::Keys::from_bytes(bytes).ok_or_else(|| {
        anyhow::anyhow!("key file {} holds an invalid secp256k1 key", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse("key_file = \"k\"").unwrap();
        assert_eq!(c.listen, default_listen());
        assert_eq!(c.limits, LimitsConfig::default());
        assert_eq!(c.policy.expiry_delta, 3600);
        assert_eq!(c.adjudicator, None);
    }

    #[test]
    fn doc_example_parses() {
        let doc = include_str!("config.rs");
        let start = doc.find("//! ```toml").unwrap();
        let end = start + doc[start..].find("//! ```\n").unwrap();
        let text: String = doc[start..end]
            .lines()
            .skip(1)
            .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::parse(&text).unwrap();
        assert!(c.adjudicator.is_some());
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        for (text, needle) in [
            ("", "key_file"),
            ("key_file = \"k\"\nlisten = \"nope\"", "listen"),
            ("key_file = \"k\"\nlisen = \"127.0.0.1:1\"", "lisen"),
            (
                "key_file = \"k\"\n[limits]\nmax_frame_bytes = 10",
                "max_frame_bytes",
            ),
            (
                "key_file = \"k\"\n[policy]\nexpiry_delta = 60",
                "expiry_delta",
            ),
            ("key_file = \"k\"\nadjudicator = \"0x12\"", "adjudicator"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?} gave {e:?}");
        }
    }
}
