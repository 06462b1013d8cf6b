//! Graph files: our JSON format (load and save), and SimLN's `sim_network` channel list (load).
//!
//! Everything here reads from `&str` / [`Read`] and writes to [`Write`]; [`load_file`] and
//! [`save_file`] are the only functions that touch the file system, and they only open the file.
//!
//! # Our format (version 1)
//!
//! ```json
//! {
//!   "version": 1,
//!   "half_life_secs": 21600,
//!   "nodes": ["0x…"],
//!   "channels": [{
//!     "id": "0x…32 bytes…", "kind": "ledger", "node_a": "0x…", "node_b": "0x…",
//!     "capacity": 1000000,
//!     "policy_a": {"base_fee": 1000, "fee_ppm": 100, "expiry_delta": 3600,
//!                  "htlc_min": 1, "htlc_max": 500000, "enabled": true},
//!     "policy_b": {"...": "..."},
//!     "knowledge_a": {"lower": 0, "upper": 400000, "learned_at": 1700000000},
//!     "knowledge_b": null
//!   }]
//! }
//! ```
//!
//! Amounts are JSON integers (exact up to `u128`), expiry deltas seconds. `nodes` lists every
//! node, including ones without channels. `knowledge_*` is the learned liquidity of the direction
//! sent by that side; it is restored as recorded and decays from `learned_at` on. Saving sorts
//! nodes and channels, so the same graph always produces the same file.
//!
//! # SimLN
//!
//! [`from_sim_ln_str`] accepts a SimLN simulation file (an object with a `sim_network` array;
//! other keys such as `activity` are ignored) or the bare array. Per channel: `scid`,
//! `capacity_msat`, and for `node_1` / `node_2`: `pubkey`, `max_htlc_count`,
//! `max_in_flight_msat`, `min_htlc_size_msat`, `max_htlc_size_msat`, `cltv_expiry_delta`,
//! `base_fee`, `fee_rate_prop` (`alias` optional). As in SimLN, `node_1`'s policy governs HTLCs
//! `node_1` sends over the channel. Mapping (see [`SimLnOptions`]):
//!
//! - node id: a 33-byte compressed secp256k1 `pubkey` becomes the Ethereum address of the same
//!   key (`keccak256(uncompressed key)[12..]`); a 20-byte `0x` address is taken as is;
//! - channel id: the `scid` as a big-endian integer in a 32-byte id;
//! - amounts (capacity, fees, HTLC sizes): msat times `amount_per_msat`;
//! - `htlc_max = min(max_htlc_size_msat, max_in_flight_msat)`; `htlc_min` at least 1;
//! - `expiry_delta = cltv_expiry_delta * seconds_per_block`;
//! - `max_htlc_count` is a limit the simulator enforces, not the router: it is not kept.
//!
//! As SimLN does, a file whose `max_in_flight_msat` or `max_htlc_size_msat` exceeds the capacity
//! is rejected.

use std::io::{Read, Write};
use std::path::Path;

use alloy::primitives::{Address, B256, keccak256};
use htlc::{Amount, ChannelId, Side};
use serde::{Deserialize, Serialize};

use crate::graph::{Channel, ChannelGraph, ChannelKind, GraphError, Knowledge, NodeId, Policy};

/// The version of our graph format written by [`to_json_string`].
pub const FORMAT_VERSION: u32 = 1;

/// A graph file could not be read, parsed or applied.
#[derive(Debug, thiserror::Error)]
pub enum GraphFileError {
    /// Malformed JSON, or JSON not in the expected shape.
    #[error("graph file JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Reading or writing failed.
    #[error("graph file I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A format version this code does not know.
    #[error("unsupported graph file version {0} (expected {FORMAT_VERSION})")]
    Version(u32),
    /// A channel of the file was rejected by the graph.
    #[error("channel #{index} of the file: {source}")]
    Graph {
        /// Position of the channel in the file.
        index: usize,
        /// Why the graph rejected it.
        source: GraphError,
    },
    /// A SimLN channel could not be converted.
    #[error("sim_network channel #{index} (scid {scid}): {reason}")]
    SimLn {
        /// Position of the channel in `sim_network`.
        index: usize,
        /// Its `scid`.
        scid: u64,
        /// What is wrong.
        reason: String,
    },
    /// A SimLN public key that is neither a compressed secp256k1 key nor an address.
    #[error("invalid node key {key:?}: {reason}")]
    NodeKey {
        /// The offending key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Our graph file (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphFile {
    /// Format version, [`FORMAT_VERSION`].
    pub version: u32,
    /// Half-life of learned liquidity, seconds (default: the graph's default).
    #[serde(default)]
    pub half_life_secs: Option<u64>,
    /// Every node, including ones without channels.
    #[serde(default)]
    pub nodes: Vec<NodeId>,
    /// Every channel.
    pub channels: Vec<ChannelEntry>,
}

/// One channel of a [`GraphFile`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelEntry {
    /// Channel id.
    pub id: ChannelId,
    /// Ledger or virtual (default ledger).
    #[serde(default)]
    pub kind: ChannelKind,
    /// Participant A.
    pub node_a: NodeId,
    /// Participant B.
    pub node_b: NodeId,
    /// Capacity.
    pub capacity: Amount,
    /// Policy of A → B.
    pub policy_a: Policy,
    /// Policy of B → A.
    pub policy_b: Policy,
    /// Learned liquidity of A → B.
    #[serde(default)]
    pub knowledge_a: Option<Knowledge>,
    /// Learned liquidity of B → A.
    #[serde(default)]
    pub knowledge_b: Option<Knowledge>,
}

/// The file form of a graph: nodes and channels sorted, so output is deterministic.
pub fn to_graph_file(graph: &ChannelGraph) -> GraphFile {
    let mut nodes: Vec<NodeId> = graph.nodes().collect();
    nodes.sort_unstable();
    let mut channels: Vec<ChannelEntry> = graph
        .channels()
        .map(|c| {
            let know = |side| graph.knowledge(&c.id, side).ok().flatten();
            ChannelEntry {
                id: c.id,
                kind: c.kind,
                node_a: c.node_a,
                node_b: c.node_b,
                capacity: c.capacity,
                policy_a: c.policy_a,
                policy_b: c.policy_b,
                knowledge_a: know(Side::A),
                knowledge_b: know(Side::B),
            }
        })
        .collect();
    channels.sort_unstable_by_key(|c| c.id);
    GraphFile {
        version: FORMAT_VERSION,
        half_life_secs: Some(graph.half_life_secs()),
        nodes,
        channels,
    }
}

/// Builds a graph from its file form.
pub fn from_graph_file(file: GraphFile) -> Result<ChannelGraph, GraphFileError> {
    if file.version != FORMAT_VERSION {
        return Err(GraphFileError::Version(file.version));
    }
    let mut graph = ChannelGraph::with_capacity(file.nodes.len(), file.channels.len());
    if let Some(h) = file.half_life_secs {
        graph.set_half_life_secs(h);
    }
    for (index, n) in file.nodes.iter().enumerate() {
        graph
            .add_node(*n)
            .map_err(|source| GraphFileError::Graph { index, source })?;
    }
    for (index, c) in file.channels.into_iter().enumerate() {
        let err = |source| GraphFileError::Graph { index, source };
        let id = c.id;
        graph
            .add_channel(Channel {
                id,
                kind: c.kind,
                node_a: c.node_a,
                node_b: c.node_b,
                capacity: c.capacity,
                policy_a: c.policy_a,
                policy_b: c.policy_b,
            })
            .map_err(err)?;
        for (side, k) in [(Side::A, c.knowledge_a), (Side::B, c.knowledge_b)] {
            if let Some(k) = k {
                graph.restore_knowledge(&id, side, k).map_err(err)?;
            }
        }
    }
    Ok(graph)
}

/// Parses a graph from JSON: our format, or (recognised by its `sim_network` key, or as a bare
/// array) a SimLN file with [`SimLnOptions::default`].
pub fn from_json_str(json: &str) -> Result<ChannelGraph, GraphFileError> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    if value.is_array() || value.get("sim_network").is_some() {
        return from_sim_ln_value(value, &SimLnOptions::default());
    }
    from_graph_file(serde_json::from_value(value)?)
}

/// Reads a graph from JSON (see [`from_json_str`]).
pub fn from_json_reader<R: Read>(mut reader: R) -> Result<ChannelGraph, GraphFileError> {
    let mut s = String::new();
    reader.read_to_string(&mut s)?;
    from_json_str(&s)
}

/// The graph as pretty-printed JSON in our format.
pub fn to_json_string(graph: &ChannelGraph) -> Result<String, GraphFileError> {
    Ok(serde_json::to_string_pretty(&to_graph_file(graph))?)
}

/// Writes the graph as JSON in our format.
pub fn write_json<W: Write>(graph: &ChannelGraph, mut writer: W) -> Result<(), GraphFileError> {
    serde_json::to_writer_pretty(&mut writer, &to_graph_file(graph))?;
    writer.flush()?;
    Ok(())
}

/// Loads a graph file (our format or SimLN's, see [`from_json_str`]). The only read of the file
/// system in this crate.
pub fn load_file(path: impl AsRef<Path>) -> Result<ChannelGraph, GraphFileError> {
    from_json_reader(std::io::BufReader::new(std::fs::File::open(path)?))
}

/// Saves a graph in our format. The only write to the file system in this crate.
pub fn save_file(graph: &ChannelGraph, path: impl AsRef<Path>) -> Result<(), GraphFileError> {
    write_json(graph, std::io::BufWriter::new(std::fs::File::create(path)?))
}

/// How SimLN's Lightning units map to ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimLnOptions {
    /// Our smallest units per millisatoshi (default 1: msat are taken as base units as they are).
    pub amount_per_msat: u128,
    /// Seconds per block, to turn `cltv_expiry_delta` (blocks) into seconds (default 600, the
    /// Bitcoin block interval, so deltas keep their real-time meaning).
    pub seconds_per_block: u64,
    /// The kind given to every imported channel (default ledger).
    pub kind: ChannelKind,
}

impl Default for SimLnOptions {
    fn default() -> Self {
        SimLnOptions {
            amount_per_msat: 1,
            seconds_per_block: 600,
            kind: ChannelKind::Ledger,
        }
    }
}

/// One channel of SimLN's `sim_network`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimLnChannel {
    /// Short channel id.
    pub scid: u64,
    /// Capacity in msat.
    pub capacity_msat: u64,
    /// First participant and its policy for HTLCs it sends.
    pub node_1: SimLnPolicy,
    /// Second participant and its policy for HTLCs it sends.
    pub node_2: SimLnPolicy,
}

/// One side of a SimLN channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimLnPolicy {
    /// Node public key (hex, 33 bytes compressed) — or, our extension, a `0x` address.
    pub pubkey: String,
    /// Optional alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Most HTLCs in flight (not used by the router).
    pub max_htlc_count: u64,
    /// Most msat in flight.
    pub max_in_flight_msat: u64,
    /// Smallest HTLC, msat.
    pub min_htlc_size_msat: u64,
    /// Largest HTLC, msat.
    pub max_htlc_size_msat: u64,
    /// Expiry delta in blocks.
    pub cltv_expiry_delta: u32,
    /// Base fee, msat.
    pub base_fee: u64,
    /// Proportional fee, ppm.
    pub fee_rate_prop: u64,
}

#[derive(Deserialize)]
struct SimLnFile {
    sim_network: Vec<SimLnChannel>,
}

/// Parses SimLN's channel list (a simulation file, or the bare `sim_network` array).
pub fn from_sim_ln_str(json: &str, options: &SimLnOptions) -> Result<ChannelGraph, GraphFileError> {
    from_sim_ln_value(serde_json::from_str(json)?, options)
}

fn from_sim_ln_value(
    value: serde_json::Value,
    options: &SimLnOptions,
) -> Result<ChannelGraph, GraphFileError> {
    let channels: Vec<SimLnChannel> = if value.is_array() {
        serde_json::from_value(value)?
    } else {
        serde_json::from_value::<SimLnFile>(value)?.sim_network
    };
    let mut graph = ChannelGraph::with_capacity(channels.len(), channels.len());
    add_sim_ln_channels(&mut graph, &channels, options)?;
    Ok(graph)
}

/// Adds SimLN channels to a graph (see the module documentation for the mapping).
pub fn add_sim_ln_channels(
    graph: &mut ChannelGraph,
    channels: &[SimLnChannel],
    options: &SimLnOptions,
) -> Result<(), GraphFileError> {
    for (index, c) in channels.iter().enumerate() {
        let fail = |reason: String| GraphFileError::SimLn {
            index,
            scid: c.scid,
            reason,
        };
        let msat = |v: u64, what: &str| {
            u128::from(v)
                .checked_mul(options.amount_per_msat)
                .map(Amount)
                .ok_or_else(|| fail(format!("{what} overflows after scaling")))
        };
        let capacity = msat(c.capacity_msat, "capacity_msat")?;
        let mut policies = [Policy::free(Amount::ZERO); 2];
        for (i, p) in [&c.node_1, &c.node_2].into_iter().enumerate() {
            if p.max_in_flight_msat > c.capacity_msat {
                return Err(fail(format!(
                    "node_{}: max_in_flight_msat {} > capacity {}",
                    i + 1,
                    p.max_in_flight_msat,
                    c.capacity_msat
                )));
            }
            if p.max_htlc_size_msat > c.capacity_msat {
                return Err(fail(format!(
                    "node_{}: max_htlc_size_msat {} > capacity {}",
                    i + 1,
                    p.max_htlc_size_msat,
                    c.capacity_msat
                )));
            }
            let fee_ppm = u32::try_from(p.fee_rate_prop)
                .map_err(|_| fail(format!("node_{}: fee_rate_prop too large", i + 1)))?;
            let expiry_delta = u64::from(p.cltv_expiry_delta)
                .checked_mul(options.seconds_per_block)
                .ok_or_else(|| fail(format!("node_{}: cltv_expiry_delta overflows", i + 1)))?;
            policies[i] = Policy {
                base_fee: msat(p.base_fee, "base_fee")?,
                fee_ppm,
                expiry_delta,
                htlc_min: msat(p.min_htlc_size_msat.max(1), "min_htlc_size_msat")?,
                htlc_max: msat(
                    p.max_htlc_size_msat.min(p.max_in_flight_msat),
                    "max_htlc_size_msat",
                )?,
                enabled: true,
            };
        }
        let node_a = sim_ln_node_id(&c.node_1.pubkey)?;
        let node_b = sim_ln_node_id(&c.node_2.pubkey)?;
        graph
            .add_channel(Channel {
                id: scid_channel_id(c.scid),
                kind: options.kind,
                node_a,
                node_b,
                capacity,
                policy_a: policies[0],
                policy_b: policies[1],
            })
            .map_err(|e| fail(e.to_string()))?;
    }
    Ok(())
}

/// The channel id given to a SimLN short channel id: the scid big-endian in the last 8 bytes.
pub fn scid_channel_id(scid: u64) -> ChannelId {
    ChannelId(B256::left_padding_from(&scid.to_be_bytes()))
}

/// The node id of a SimLN `pubkey`: the Ethereum address of a compressed secp256k1 key, or a
/// `0x` address as is.
pub fn sim_ln_node_id(key: &str) -> Result<NodeId, GraphFileError> {
    let bad = |reason: String| GraphFileError::NodeKey {
        key: key.to_owned(),
        reason,
    };
    let hex_part = key.strip_prefix("0x").unwrap_or(key);
    let bytes = alloy::primitives::hex::decode(hex_part).map_err(|e| bad(e.to_string()))?;
    match bytes.len() {
        20 => Ok(Address::from_slice(&bytes)),
        33 => {
            let pk = secp256k1::PublicKey::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
            let uncompressed = pk.serialize_uncompressed();
            // An Ethereum address is the last 20 bytes of keccak256 of the 64-byte raw key.
            Ok(Address::from_word(keccak256(&uncompressed[1..])))
        }
        n => Err(bad(format!(
            "expected 33 bytes (compressed key) or 20 bytes (address), got {n}"
        ))),
    }
}
