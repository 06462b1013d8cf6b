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
//! adjudicator = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
//! # Directory of the RocksDB database. Default "./hub-data".
//! data_dir = "./hub-data"
//! # HTTP/JSON API and Prometheus /metrics, loopback only. Default: none (no API).
//! api = "127.0.0.1:9736"
//! # Announce channels with other hubs (both sides of a hub-to-hub channel must), relay their
//! # announcements and serve the network map to peers (a hub's; ADR 0027). Default false.
//! announce = true
//!
//! # Assets channels may hold; opens in any other are refused. Default: ETH only.
//! assets = ["0x0000000000000000000000000000000000000000"]
//!
//! [limits]
//! max_frame_bytes = 1048576      # largest frame accepted (default 1 MiB)
//! max_pending_htlcs = 100        # pending HTLC locks per channel (default 100)
//! max_in_flight = "100000000000000000000" # wei locked in HTLCs per channel (default 100 ETH)
//! min_htlc = 1000000000          # smallest HTLC a channel accepts, wei (default 1 gwei)
//! max_htlc_expiry_secs = 1296000 # furthest expiry of a new HTLC, seconds ahead (default 15 days)
//! max_ops_per_update = 1024      # operations per signed update (default 1024)
//! max_channels_per_peer = 16     # ledger channels one peer may hold (default 16)
//! max_frames_per_second = 2000   # per peer, beyond it frames are refused (default 2000)
//! max_connections = 10000        # QUIC connections served at once (default 10000)
//! max_handshakes_per_second = 100 # new connections accepted per second (default 100)
//! stranger_frames_per_second = 1000 # frames read from all keys without a channel, together
//!
//! [policy]
//! base_fee = 1000                # flat fee per forwarded HTLC, wei (default 1000)
//! fee_ppm = 100                  # proportional fee, millionths (default 100)
//! expiry_delta = 3600            # seconds, at least htlc::forward::MIN_EXPIRY_DELTA_SECS
//! min_htlc = 1                   # smallest HTLC forwarded, wei (default 1)
//!
//! [funding]
//! collateral = 0                 # wei the hub deposits into each channel a peer opens (default 0)
//! min_peer_deposit = "10000000000000000" # smallest opening deposit of a peer, wei (default 0.01 ETH)
//! auto_settle = true             # pay out co-signed final states on chain at once (default true)
//! chain_poll_ms = 500            # how often the adjudicator's events are polled (default 500)
//! chain_retry_secs = 5           # how often failed transactions are sent again (default 5)
//! close_grace_secs = 120         # wait before paying out a close the peer proposed (default 120)
//! virtual_end_margin_secs = 600  # a party closes a virtual channel this long before its end; a
//!                                # hub takes one left open on chain this long after (default 600)
//! challenge_secs = 3600          # challenge window of the channels this node opens (default 3600;
//!                                # a hub's ledgers toward other hubs: 3336 less, ADR 0026)
//! confirmations = 0              # blocks a deposit or dispute must be buried under before it is
//!                                # believed (default 0: a local chain; 3 or more on a real one)
//! tx_timeout_secs = 60           # no receipt by then: sent again, same nonce, fees +25 % (default 60)
//! max_fee_gwei = 500             # the highest fee per gas ever offered (default 500)
//! # withdraw_to = "0x..."        # where undeliverable payouts are claimed to (default: our address)
//!
//! # Serve as a watchtower (`hub watchtower` turns it on with the defaults).
//! [tower]
//! max_watched = 10000            # channels watched at most, all clients together
//!
//! # Watchtowers this node hands its latest channel states to. Default: none.
//! [[watchtower]]
//! addr = "127.0.0.1:9736"
//! address = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
//!
//! # Serve virtual channels between this hub's peers (ADR 0026). Default: none served.
//! [virtual]
//! open_fee_base = "1000000000"   # flat fee for opening one, wei (default 1 gwei)
//! open_fee_ppm = 100             # proportional fee, millionths of its value (default 100)
//! max_value = "100000000000000000000" # largest virtual channel, wei (default 100 ETH)
//! max_lifetime_secs = 2592000    # longest life (default 30 days)
//! max_window_secs = 86400        # longest challenge window (default 1 day)
//! toward_hubs = false            # also serve as a hub whose next hop is another hub (a risk:
//!                                # ADR 0026, "Chains of hubs"; default no)
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
    /// Wei locked in pending HTLCs per channel, at most.
    #[serde(with = "wei")]
    pub max_in_flight: u128,
    /// Smallest HTLC a channel accepts, wei.
    #[serde(with = "wei")]
    pub min_htlc: u128,
    /// Furthest expiry of a new HTLC, seconds ahead of now.
    pub max_htlc_expiry_secs: u64,
    /// QUIC connections served at once, handshakes included.
    pub max_connections: usize,
    /// New connections accepted per second, in all.
    pub max_handshakes_per_second: u32,
    /// Frames per second read from all strangers (keys without a channel) together.
    pub stranger_frames_per_second: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: crate::wire::DEFAULT_MAX_FRAME,
            max_pending_htlcs: 100,
            max_ops_per_update: 1024,
            max_channels_per_peer: 16,
            max_frames_per_second: 2000,
            max_in_flight: 100 * ETH,
            min_htlc: 1_000_000_000,
            max_htlc_expiry_secs: DEFAULT_MAX_HTLC_EXPIRY_SECS,
            max_connections: 10_000,
            max_handshakes_per_second: 100,
            stranger_frames_per_second: 1000,
        }
    }
}

const ETH: u128 = 1_000_000_000_000_000_000;

/// Default furthest HTLC expiry: the longest outgoing horizon a hub forwards
/// (`htlc::forward::DEFAULT_MAX_EXPIRY_HORIZON_SECS`, two weeks) plus a day of expiry deltas.
pub const DEFAULT_MAX_HTLC_EXPIRY_SECS: u64 =
    htlc::forward::DEFAULT_MAX_EXPIRY_HORIZON_SECS + 24 * 3600;

impl LimitsConfig {
    /// The bounds every channel's states get (rule 10).
    pub fn channel_limits(&self) -> htlc::ops::Limits {
        htlc::ops::Limits {
            max_pending_locks: self.max_pending_htlcs,
            max_ops_per_update: self.max_ops_per_update,
            max_in_flight: htlc::Amount(self.max_in_flight),
            min_htlc: htlc::Amount(self.min_htlc),
            max_expiry_secs: self.max_htlc_expiry_secs,
            ..htlc::ops::Limits::default()
        }
    }
}

/// Wei amounts in TOML: an integer, or a decimal string for values beyond TOML's 64-bit
/// integers (10 ETH is already more than `i64::MAX` wei).
pub(crate) mod wei {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wei {
        Int(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        match Wei::deserialize(d)? {
            Wei::Int(v) => Ok(u128::from(v)),
            Wei::Text(t) => t
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("{t:?} is not an amount in wei"))),
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
    #[serde(with = "wei")]
    pub collateral: u128,
    /// Smallest opening deposit a peer must bring, wei (an empty channel is refused, and the
    /// hub's collateral follows only a deposit the chain shows).
    #[serde(with = "wei")]
    pub min_peer_deposit: u128,
    /// Whether co-signed final states are paid out on chain at once.
    pub auto_settle: bool,
    /// Milliseconds between polls of the adjudicator's events.
    pub chain_poll_ms: u64,
    /// Seconds between attempts to send transactions that failed.
    pub chain_retry_secs: u64,
    /// After a cooperative close the peer proposed, seconds to let the peer pay it out before
    /// paying it out ourselves (the side that proposed the close pays at once).
    pub close_grace_secs: u64,
    /// A party closes each virtual channel this long before its end (seconds); a hub takes one
    /// its parties left open on chain this long after it (ADR 0026).
    pub virtual_end_margin_secs: u64,
    /// The challenge window of the channels this node opens, seconds. A hub whose ledgers
    /// toward other hubs carry virtual channels toward them (`[virtual] toward_hubs`) opens
    /// those with a window `htlc::vchan::CHAIN_REACTION_SECS` (3,336 s) shorter than its
    /// peers' ledgers' (ADR 0026).
    pub challenge_secs: u64,
    /// Blocks a deposit, dispute or payout must be buried under before the node believes it
    /// (a reorganisation up to this deep is never seen).
    pub confirmations: u64,
    /// Seconds to wait for a transaction's receipt before sending it again with higher fees.
    pub tx_timeout_secs: u64,
    /// The highest fee per gas the node ever offers, gwei.
    pub max_fee_gwei: u64,
    /// Where payouts the adjudicator could not deliver to us (a token that blocks our
    /// address, an account that refuses ETH) are withdrawn to. Default: our own address.
    pub withdraw_to: Option<Address>,
}

impl Default for FundingConfig {
    fn default() -> Self {
        FundingConfig {
            collateral: 0,
            min_peer_deposit: ETH / 100,
            auto_settle: true,
            chain_poll_ms: 500,
            chain_retry_secs: 5,
            close_grace_secs: 120,
            virtual_end_margin_secs: 600,
            challenge_secs: 3600,
            confirmations: 0,
            tx_timeout_secs: 60,
            max_fee_gwei: 500,
            withdraw_to: None,
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
    /// Assets channels may hold (`0x0…0` is ETH). Default: ETH only.
    #[serde(default = "default_assets")]
    pub assets: Vec<Address>,
    /// Serve as a watchtower for other nodes' channels (`hub watchtower` turns it on).
    #[serde(default)]
    pub tower: Option<TowerConfig>,
    /// Watchtowers this node hands the latest state of each of its channels to (they answer
    /// a stale close while the node is offline). Sessions are re-dialled when they drop.
    #[serde(default)]
    pub watchtower: Vec<ConnectConfig>,
    /// Serve virtual channels between our peers under these rules (a hub's). Default: none.
    #[serde(default, rename = "virtual")]
    pub virtual_channels: Option<VirtualConfig>,
    /// Announce our channels with other hubs (hub-to-hub channels: both sides must announce),
    /// relay what other hubs announce, and serve that network map to our peers, whose routers
    /// use it (a hub's; ADR 0027). Default: off (a client).
    #[serde(default)]
    pub announce: bool,
}

/// The hub's rules for virtual channels over it (ADR 0026).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct VirtualConfig {
    /// Flat fee for opening one, wei.
    #[serde(with = "wei")]
    pub open_fee_base: u128,
    /// Proportional fee for opening one, millionths of its value.
    pub open_fee_ppm: u32,
    /// Largest value of one, wei.
    #[serde(with = "wei")]
    pub max_value: u128,
    /// Longest life of one, seconds.
    pub max_lifetime_secs: u64,
    /// Longest challenge window of one, seconds.
    pub max_window_secs: u64,
    /// Serve as a hub of a chain whose next hop is another hub (not the last hub of the
    /// chain): such a hub can still be robbed by a coalition of the two parties and the next
    /// hub (ADR 0026, "Chains of hubs"). Default: no.
    pub toward_hubs: bool,
}

impl Default for VirtualConfig {
    fn default() -> Self {
        let d = htlc::vchan::VirtualPolicy::default();
        VirtualConfig {
            open_fee_base: d.open_fee_base.0,
            open_fee_ppm: d.open_fee_ppm,
            max_value: d.max_value.0,
            max_lifetime_secs: d.max_lifetime_secs,
            max_window_secs: d.max_window_secs,
            toward_hubs: d.toward_hubs,
        }
    }
}

impl VirtualConfig {
    /// The node machine's rules.
    pub fn policy(&self) -> htlc::vchan::VirtualPolicy {
        htlc::vchan::VirtualPolicy {
            open_fee_base: htlc::Amount(self.open_fee_base),
            open_fee_ppm: self.open_fee_ppm,
            max_value: htlc::Amount(self.max_value),
            max_lifetime_secs: self.max_lifetime_secs,
            max_window_secs: self.max_window_secs,
            toward_hubs: self.toward_hubs,
        }
    }
}

/// What a watchtower accepts.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TowerConfig {
    /// Channels watched at most, all clients together.
    pub max_watched: usize,
}

impl Default for TowerConfig {
    fn default() -> Self {
        TowerConfig {
            max_watched: 10_000,
        }
    }
}

fn default_assets() -> Vec<Address> {
    vec![Address::ZERO]
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
        if let Some(v) = &self.virtual_channels {
            if v.open_fee_ppm > 1_000_000 {
                return bad("virtual.open_fee_ppm", "must be at most 1000000 (100 %)");
            }
            if v.max_value == 0 {
                return bad("virtual.max_value", "must be at least 1 wei");
            }
            if v.max_lifetime_secs == 0 || v.max_window_secs == 0 {
                return bad(
                    "virtual.max_lifetime_secs",
                    "max_lifetime_secs and max_window_secs must be at least 1",
                );
            }
        }
        if l.max_frames_per_second == 0 {
            return bad("limits.max_frames_per_second", "must be at least 1");
        }
        if l.max_in_flight == 0 {
            return bad("limits.max_in_flight", "must be at least 1 wei");
        }
        if l.min_htlc == 0 || l.min_htlc > l.max_in_flight {
            return bad(
                "limits.min_htlc",
                "must be at least 1 wei and at most limits.max_in_flight",
            );
        }
        let needed = htlc::forward::MIN_OUTGOING_EXPIRY_SECS + self.policy.expiry_delta;
        if l.max_htlc_expiry_secs < needed {
            return Err(ConfigError::Invalid {
                field: "limits.max_htlc_expiry_secs",
                why: format!(
                    "must be at least {needed} s (the shortest outgoing expiry plus policy.expiry_delta)"
                ),
            });
        }
        if l.max_connections == 0 {
            return bad("limits.max_connections", "must be at least 1");
        }
        if l.max_handshakes_per_second == 0 {
            return bad("limits.max_handshakes_per_second", "must be at least 1");
        }
        if l.stranger_frames_per_second == 0 {
            return bad("limits.stranger_frames_per_second", "must be at least 1");
        }
        if self.assets.is_empty() {
            return bad("assets", "must list at least one asset");
        }
        if self.funding.min_peer_deposit == 0 {
            return bad(
                "funding.min_peer_deposit",
                "must be at least 1 wei: an empty channel costs the hub and earns nothing",
            );
        }
        if self.policy.fee_ppm > 1_000_000 {
            return bad(
                "policy.fee_ppm",
                "must be at most 1000000 (a fee of 100 % of the amount forwarded)",
            );
        }
        if self.policy.base_fee > l.max_in_flight {
            return bad(
                "policy.base_fee",
                "must be at most limits.max_in_flight (no HTLC could pay it)",
            );
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
        if !(1..=86_400).contains(&f.close_grace_secs) {
            return bad("funding.close_grace_secs", "must be between 1 and 86400");
        }
        if !(1..=7 * 86_400).contains(&f.virtual_end_margin_secs) {
            return bad(
                "funding.virtual_end_margin_secs",
                "must be between 1 and 604800 (a week)",
            );
        }
        let windows =
            htlc::forward::MIN_CHALLENGE_DURATION_SECS..=htlc::forward::MAX_CHALLENGE_DURATION_SECS;
        if !windows.contains(&f.challenge_secs) {
            return bad(
                "funding.challenge_secs",
                &format!(
                    "must be between {} and {} (what peers accept)",
                    windows.start(),
                    windows.end()
                ),
            );
        }
        if !(1..=3600).contains(&f.chain_retry_secs) {
            return bad("funding.chain_retry_secs", "must be between 1 and 3600");
        }
        if !(1..=3600).contains(&f.tx_timeout_secs) {
            return bad("funding.tx_timeout_secs", "must be between 1 and 3600");
        }
        if !(1..=1_000_000).contains(&f.max_fee_gwei) {
            return bad("funding.max_fee_gwei", "must be between 1 and 1000000");
        }
        if f.confirmations > 64 {
            return bad(
                "funding.confirmations",
                "must be at most 64 (the watcher re-reads 64 blocks after a deeper reorganisation)",
            );
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

    /// A hub that serves virtual channels toward other hubs says so, and opens its ledgers
    /// with the window it is given.
    #[test]
    fn a_hub_of_chains_is_configured() {
        let c = Config::parse(
            "key_file = \"k\"\n[funding]\nchallenge_secs = 1668\n[virtual]\ntoward_hubs = true",
        )
        .unwrap();
        assert_eq!(c.funding.challenge_secs, 1668);
        assert!(c.virtual_channels.unwrap().policy().toward_hubs);
        let plain = Config::parse("key_file = \"k\"\n[virtual]").unwrap();
        assert!(!plain.virtual_channels.unwrap().policy().toward_hubs);
        assert_eq!(plain.funding.challenge_secs, 3600);
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
            ("key_file = \"k\"\nassets = []", "assets"),
            ("key_file = \"k\"\n[limits]\nmin_htlc = 0", "min_htlc"),
            (
                "key_file = \"k\"\n[limits]\nmax_htlc_expiry_secs = 60",
                "max_htlc_expiry_secs",
            ),
            (
                "key_file = \"k\"\n[funding]\nmin_peer_deposit = 0",
                "min_peer_deposit",
            ),
            ("key_file = \"k\"\n[policy]\nfee_ppm = 2000000", "fee_ppm"),
            (
                "key_file = \"k\"\n[limits]\nmax_in_flight = 1000000000000\n[policy]\nbase_fee = 1000000000001",
                "base_fee",
            ),
            (
                "key_file = \"k\"\n[funding]\ncollateral = \"lots\"",
                "collateral",
            ),
            (
                "key_file = \"k\"\n[funding]\nconfirmations = 65",
                "confirmations",
            ),
            (
                "key_file = \"k\"\n[funding]\ntx_timeout_secs = 0",
                "tx_timeout_secs",
            ),
            (
                "key_file = \"k\"\n[funding]\nmax_fee_gwei = 0",
                "max_fee_gwei",
            ),
            (
                "key_file = \"k\"\n[funding]\nchallenge_secs = 60",
                "challenge_secs",
            ),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?} gave {e:?}");
        }
    }
}
