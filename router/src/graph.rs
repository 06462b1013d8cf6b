//! The channel graph: nodes are Ethereum addresses, every channel is a pair of directed edges.
//!
//! The topology lives in a petgraph [`StableGraph`] so that closing a channel or removing a node
//! never renumbers the others: edge and node indices stay valid across updates, and every update
//! is a constant-time (amortised) change, never a rebuild.
//!
//! What the route search reads in its inner loop (fees, limits, liquidity bounds, as plain
//! integers) is kept next to the topology in a per-node array of *incoming* edges, contiguous in
//! memory: the search walks backward from the payee, and walking petgraph's linked edge lists
//! instead costs a cache miss per edge (measured: half the search time). Each directed edge has
//! exactly one such entry, found through a position table, so updates stay O(1). Everything else
//! about a channel (its id, kind, full policies, learned-liquidity history) lives in a side table
//! indexed by a slot number kept in the petgraph edge weight.

use std::collections::{BTreeMap, HashMap, HashSet};

use alloy::primitives::Address;
use htlc::forward::{DEFAULT_MAX_EXPIRY_HORIZON_SECS, ForwardPolicy, MIN_EXPIRY_DELTA_SECS};
use htlc::{Amount, AmountOverflow, ChannelId, Side};
use petgraph::Direction;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableGraph};
use petgraph::visit::{EdgeIndexable, NodeIndexable};
use serde::{Deserialize, Serialize};

/// A node of the network (a hub or a peer), identified by its Ethereum address.
pub type NodeId = Address;

/// Whether a channel is funded on chain or virtually, by guarantees locked in ledger channels.
///
/// Both route payments the same way; the kind is kept so operators and the simulator can tell
/// them apart (a virtual channel disappears when its funding ledger channels close).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// A two-party channel funded by deposits in the adjudicator contract.
    #[default]
    Ledger,
    /// A channel funded by guarantees in ledger channels along an intermediary path.
    Virtual,
}

/// The forwarding policy of one direction of a channel, set by the side that offers HTLCs on it.
///
/// A node forwarding `outgoing` over this direction charges `base_fee + fee_ppm * outgoing /
/// 1_000_000` (rounded down) and requires `incoming_expiry >= outgoing_expiry + expiry_delta`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Flat fee per forwarded HTLC.
    pub base_fee: Amount,
    /// Proportional fee in parts per million of the forwarded amount.
    pub fee_ppm: u32,
    /// Seconds the forwarding node wants between its outgoing and incoming HTLC expiries.
    pub expiry_delta: u64,
    /// Smallest HTLC accepted in this direction.
    pub htlc_min: Amount,
    /// Largest HTLC accepted in this direction (also capped by the channel capacity).
    pub htlc_max: Amount,
    /// Whether the direction can be used at all (a disabled direction is never routed through).
    pub enabled: bool,
}

/// A hub's forwarding policy as the router prices it: the same fee, the delta the hub
/// actually requires (raised to the protocol minimum, as `htlc::forward::decide` raises it),
/// HTLCs from at least 1.
impl From<ForwardPolicy> for Policy {
    fn from(p: ForwardPolicy) -> Policy {
        Policy {
            base_fee: p.base_fee,
            fee_ppm: p.fee_ppm,
            expiry_delta: p.expiry_delta.max(MIN_EXPIRY_DELTA_SECS),
            htlc_min: p.min_htlc.max(Amount(1)),
            htlc_max: p.max_htlc,
            enabled: p.enabled,
        }
    }
}

/// A direction's policy as the protocol core's forwarding decision takes it, with the default
/// expiry horizon.
impl From<Policy> for ForwardPolicy {
    fn from(p: Policy) -> ForwardPolicy {
        ForwardPolicy {
            base_fee: p.base_fee,
            fee_ppm: p.fee_ppm,
            expiry_delta: p.expiry_delta,
            min_htlc: p.htlc_min,
            max_htlc: p.htlc_max,
            max_expiry_horizon: DEFAULT_MAX_EXPIRY_HORIZON_SECS,
            enabled: p.enabled,
        }
    }
}

impl Policy {
    /// The fee for forwarding `forwarded` in this direction: `base_fee + fee_ppm * forwarded /
    /// 1e6` rounded down. Never negative; errors only if the sum overflows `u128`.
    pub fn fee(&self, forwarded: Amount) -> Result<Amount, AmountOverflow> {
        ForwardPolicy::from(*self).fee(forwarded)
    }

    /// A policy with no fees, no expiry delta, HTLCs from 1 up to `htlc_max`, enabled.
    pub fn free(htlc_max: Amount) -> Policy {
        Policy {
            base_fee: Amount::ZERO,
            fee_ppm: 0,
            expiry_delta: 0,
            htlc_min: Amount(1),
            htlc_max,
            enabled: true,
        }
    }
}

/// What is known of the amount one direction can currently send: at least `lower`, at most
/// `upper` (both inclusive). Unknown liquidity is `[0, capacity]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiquidityBounds {
    /// The direction can send at least this much.
    pub lower: Amount,
    /// The direction can send at most this much.
    pub upper: Amount,
}

/// A channel as given to [`ChannelGraph::add_channel`] and returned by lookups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// The channel's id (for ledger channels the id of `htlc::ChannelParams`).
    pub id: ChannelId,
    /// Ledger or virtual.
    #[serde(default)]
    pub kind: ChannelKind,
    /// Participant A.
    pub node_a: NodeId,
    /// Participant B.
    pub node_b: NodeId,
    /// Total funds of the channel: no single direction can ever send more.
    pub capacity: Amount,
    /// Policy of A for HTLCs it offers to B (direction A → B).
    pub policy_a: Policy,
    /// Policy of B for HTLCs it offers to A (direction B → A).
    pub policy_b: Policy,
}

impl Channel {
    /// The policy of the direction offered by `side`.
    pub fn policy(&self, side: Side) -> &Policy {
        match side {
            Side::A => &self.policy_a,
            Side::B => &self.policy_b,
        }
    }

    /// The node on `side`.
    pub fn node(&self, side: Side) -> NodeId {
        match side {
            Side::A => self.node_a,
            Side::B => self.node_b,
        }
    }

    /// Which side `node` is on, if it is a participant.
    pub fn side_of(&self, node: NodeId) -> Option<Side> {
        if node == self.node_a {
            Some(Side::A)
        } else if node == self.node_b {
            Some(Side::B)
        } else {
            None
        }
    }
}

/// One direction of a channel: the channel and the side that offers HTLCs in that direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DirectedChannel {
    /// The channel.
    pub channel: ChannelId,
    /// The side that sends in this direction.
    pub from: Side,
}

/// A graph update or lookup was rejected; the graph is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// A channel with this id is already in the graph.
    #[error("channel {0} already exists")]
    DuplicateChannel(ChannelId),
    /// No channel with this id is in the graph.
    #[error("unknown channel {0}")]
    UnknownChannel(ChannelId),
    /// The node is not in the graph.
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// Both ends of the channel are the same node.
    #[error("channel {0} connects node {1} to itself")]
    SelfLoop(ChannelId, NodeId),
    /// A policy is unusable as given.
    #[error("invalid policy for side {side:?} of channel {channel}: {reason}")]
    InvalidPolicy {
        /// The channel.
        channel: ChannelId,
        /// The side whose policy is invalid.
        side: Side,
        /// What is wrong.
        reason: &'static str,
    },
    /// Liquidity bounds that are not `lower <= upper <= capacity`.
    #[error("invalid liquidity bounds for channel {channel}: {reason}")]
    InvalidLiquidity {
        /// The channel.
        channel: ChannelId,
        /// What is wrong.
        reason: &'static str,
    },
    /// More nodes or edges than the graph's 32-bit indices can hold.
    #[error("graph is full (index space exhausted)")]
    Full,
}

/// Bytes used by the graph, estimated from the sizes of its parts (not allocator-exact).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Total estimated bytes.
    pub total_bytes: usize,
    /// Bytes per node (total divided by the node count).
    pub bytes_per_node: usize,
    /// Bytes per channel (total divided by the channel count; a channel is two directed edges).
    pub bytes_per_channel: usize,
}

/// The petgraph weight of a directed edge: which channel, which direction.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EdgeMeta {
    /// Slot of the channel in [`ChannelGraph::slots`].
    pub(crate) slot: u32,
    /// Which side offers HTLCs in this direction.
    pub(crate) from: Side,
}

/// A directed edge as the search reads it: exactly what it needs, as plain integers. Stored in
/// the incoming list of the edge's target.
#[derive(Clone, Debug)]
pub(crate) struct EdgeData {
    /// `policy.base_fee`.
    pub(crate) base_fee: u128,
    /// `policy.htlc_min`.
    pub(crate) htlc_min: u128,
    /// `min(policy.htlc_max, capacity)`: the largest single HTLC.
    pub(crate) htlc_max: u128,
    /// Current (decayed) lower bound of the direction's liquidity.
    pub(crate) liq_lower: u128,
    /// Current (decayed) upper bound of the direction's liquidity, `<= capacity`.
    pub(crate) liq_upper: u128,
    /// `log2_fixed(liq_upper - liq_lower + 1)`, cached for the penalty.
    pub(crate) log_width: u32,
    /// `policy.expiry_delta`.
    pub(crate) expiry_delta: u64,
    /// `policy.fee_ppm`.
    pub(crate) fee_ppm: u32,
    /// Node index of the sender.
    pub(crate) source: u32,
    /// Node index of the receiver.
    pub(crate) target: u32,
    /// Petgraph index of this edge.
    pub(crate) edge: u32,
    /// `policy.enabled`.
    pub(crate) enabled: bool,
}

/// Liquidity learned about one direction: the bounds at the moment they were learned. The
/// current bounds are these, relaxed toward `[0, capacity]` by the time elapsed since.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knowledge {
    /// Lower bound when learned.
    pub lower: Amount,
    /// Upper bound when learned.
    pub upper: Amount,
    /// When it was learned, unix seconds.
    pub learned_at: u64,
}

/// Everything about a channel that the search does not read.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub(crate) channel: Channel,
    /// Directed edges, indexed by [`Side::index`] of the sending side.
    pub(crate) edges: [EdgeIndex; 2],
    /// Learned liquidity per direction, indexed by [`Side::index`] of the sending side.
    pub(crate) knowledge: [Option<Knowledge>; 2],
}

/// The network of channels, with incremental updates (see the module documentation).
#[derive(Clone, Debug)]
pub struct ChannelGraph {
    pub(crate) graph: StableGraph<NodeId, EdgeMeta>,
    /// Per node index, the search data of its incoming edges.
    pub(crate) incoming: Vec<Vec<EdgeData>>,
    /// Per edge index, its position in its target's `incoming` list.
    in_pos: Vec<u32>,
    /// Per node index, a copy of the search data of its outgoing edges (for the search's
    /// forward bound, which walks from the payer): kept equal to the `incoming` copy.
    pub(crate) outgoing: Vec<Vec<EdgeData>>,
    /// Per edge index, its position in its source's `outgoing` list.
    out_pos: Vec<u32>,
    pub(crate) nodes: HashMap<NodeId, NodeIndex>,
    pub(crate) slots: Vec<Option<Slot>>,
    free_slots: Vec<u32>,
    by_id: HashMap<ChannelId, u32>,
    /// Multiset of all `htlc_min` values of directed edges: its largest key bounds every HTLC
    /// minimum in the graph, which lets the search use its fast dominance rule (see `search`).
    htlc_mins: BTreeMap<u128, u32>,
    /// Slots whose liquidity knowledge has not decayed back to "unknown" yet.
    pub(crate) learned: HashSet<u32>,
    /// Half-life of learned liquidity, in seconds.
    pub(crate) half_life_secs: u64,
}

/// Default half-life of learned liquidity: 6 hours (LDK's default).
pub const DEFAULT_HALF_LIFE_SECS: u64 = 6 * 3600;

impl Default for ChannelGraph {
    fn default() -> Self {
        ChannelGraph {
            graph: StableGraph::default(),
            incoming: Vec::new(),
            in_pos: Vec::new(),
            outgoing: Vec::new(),
            out_pos: Vec::new(),
            nodes: HashMap::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_id: HashMap::new(),
            htlc_mins: BTreeMap::new(),
            learned: HashSet::new(),
            half_life_secs: DEFAULT_HALF_LIFE_SECS,
        }
    }
}

impl ChannelGraph {
    /// An empty graph.
    pub fn new() -> ChannelGraph {
        ChannelGraph::default()
    }

    /// The half-life of learned liquidity, in seconds.
    pub fn half_life_secs(&self) -> u64 {
        self.half_life_secs
    }

    /// Sets the half-life of learned liquidity (seconds; 0 forgets at the next decay).
    pub fn set_half_life_secs(&mut self, half_life_secs: u64) {
        self.half_life_secs = half_life_secs;
    }

    /// An empty graph with room for `nodes` nodes and `channels` channels.
    pub fn with_capacity(nodes: usize, channels: usize) -> ChannelGraph {
        ChannelGraph {
            graph: StableGraph::with_capacity(nodes, channels.saturating_mul(2)),
            incoming: Vec::with_capacity(nodes),
            in_pos: Vec::with_capacity(channels.saturating_mul(2)),
            outgoing: Vec::with_capacity(nodes),
            out_pos: Vec::with_capacity(channels.saturating_mul(2)),
            nodes: HashMap::with_capacity(nodes),
            slots: Vec::with_capacity(channels),
            by_id: HashMap::with_capacity(channels),
            ..ChannelGraph::default()
        }
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of channels (each is two directed edges).
    pub fn channel_count(&self) -> usize {
        self.by_id.len()
    }

    /// Whether `node` is in the graph.
    pub fn contains_node(&self, node: NodeId) -> bool {
        self.nodes.contains_key(&node)
    }

    /// All nodes, in no particular order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.keys().copied()
    }

    /// All channels, in no particular order.
    pub fn channels(&self) -> impl Iterator<Item = &Channel> + '_ {
        self.slots.iter().flatten().map(|s| &s.channel)
    }

    /// The channel with this id.
    pub fn channel(&self, id: &ChannelId) -> Option<&Channel> {
        let slot = *self.by_id.get(id)?;
        self.slot(slot).map(|s| &s.channel)
    }

    /// Ids of the channels of `node`, in no particular order.
    pub fn channels_of(&self, node: NodeId) -> Result<Vec<ChannelId>, GraphError> {
        let ix = self.node_index(node)?;
        Ok(self
            .graph
            .edges_directed(ix, Direction::Outgoing)
            .filter_map(|e| self.slot(e.weight().slot).map(|s| s.channel.id))
            .collect())
    }

    /// The degree (number of channels) of `node`.
    pub fn degree(&self, node: NodeId) -> Result<usize, GraphError> {
        let ix = self.node_index(node)?;
        Ok(self.graph.edges_directed(ix, Direction::Outgoing).count())
    }

    /// Adds a node with no channels; returns `false` if it was already there.
    pub fn add_node(&mut self, node: NodeId) -> Result<bool, GraphError> {
        if self.nodes.contains_key(&node) {
            return Ok(false);
        }
        self.insert_node(node)?;
        Ok(true)
    }

    /// Removes a node and all its channels; returns the removed channels.
    pub fn remove_node(&mut self, node: NodeId) -> Result<Vec<Channel>, GraphError> {
        let ids = self.channels_of(node)?;
        let mut removed = Vec::with_capacity(ids.len());
        for id in ids {
            removed.push(self.remove_channel(&id)?);
        }
        if let Some(ix) = self.nodes.remove(&node) {
            self.graph.remove_node(ix);
        }
        Ok(removed)
    }

    /// Opens a channel: adds its two directed edges (and its nodes if new). Liquidity starts
    /// unknown: `[0, capacity]` in each direction.
    pub fn add_channel(&mut self, channel: Channel) -> Result<(), GraphError> {
        if self.by_id.contains_key(&channel.id) {
            return Err(GraphError::DuplicateChannel(channel.id));
        }
        if channel.node_a == channel.node_b {
            return Err(GraphError::SelfLoop(channel.id, channel.node_a));
        }
        for side in [Side::A, Side::B] {
            validate_policy(&channel, side, channel.policy(side))?;
        }
        if self.slots.len() >= u32::MAX as usize && self.free_slots.is_empty() {
            return Err(GraphError::Full);
        }
        // Bound the index space before touching anything, so a failure changes nothing:
        // petgraph's u32 indices reserve u32::MAX as "end".
        if self.graph.edge_count() + 2 >= u32::MAX as usize
            || self.graph.node_count() + 2 >= u32::MAX as usize
        {
            return Err(GraphError::Full);
        }
        let a = self.ensure_node(channel.node_a)?;
        let b = self.ensure_node(channel.node_b)?;
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                let s = u32::try_from(self.slots.len()).map_err(|_| GraphError::Full)?;
                self.slots.push(None);
                s
            }
        };
        let cap = channel.capacity.0;
        let ea = self.insert_edge(a, b, slot, Side::A, &channel.policy_a, cap);
        let eb = self.insert_edge(b, a, slot, Side::B, &channel.policy_b, cap);
        self.add_htlc_min(channel.policy_a.htlc_min.0);
        self.add_htlc_min(channel.policy_b.htlc_min.0);
        self.by_id.insert(channel.id, slot);
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = Some(Slot {
                channel,
                edges: [ea, eb],
                knowledge: [None, None],
            });
        }
        Ok(())
    }

    /// Closes a channel: removes its two directed edges (its nodes stay). Returns it.
    pub fn remove_channel(&mut self, id: &ChannelId) -> Result<Channel, GraphError> {
        let slot_ix = *self.by_id.get(id).ok_or(GraphError::UnknownChannel(*id))?;
        let slot = self
            .slots
            .get_mut(slot_ix as usize)
            .and_then(Option::take)
            .ok_or(GraphError::UnknownChannel(*id))?;
        self.by_id.remove(id);
        self.free_slots.push(slot_ix);
        self.learned.remove(&slot_ix);
        for e in slot.edges {
            self.delete_edge(e);
        }
        self.remove_htlc_min(slot.channel.policy_a.htlc_min.0);
        self.remove_htlc_min(slot.channel.policy_b.htlc_min.0);
        Ok(slot.channel)
    }

    /// Replaces the policy of the direction offered by `side`.
    pub fn set_policy(
        &mut self,
        id: &ChannelId,
        side: Side,
        policy: Policy,
    ) -> Result<(), GraphError> {
        let slot_ix = self.slot_index(id)?;
        let (old_min, edge, cap) = {
            let slot = self.slot(slot_ix).ok_or(GraphError::UnknownChannel(*id))?;
            validate_policy(&slot.channel, side, &policy)?;
            (
                slot.channel.policy(side).htlc_min.0,
                slot.edges[side.index()],
                slot.channel.capacity.0,
            )
        };
        if let Some(slot) = self.slot_mut(slot_ix) {
            match side {
                Side::A => slot.channel.policy_a = policy,
                Side::B => slot.channel.policy_b = policy,
            }
        }
        self.update_hot(edge, |w| w.set_policy(&policy, cap));
        self.remove_htlc_min(old_min);
        self.add_htlc_min(policy.htlc_min.0);
        Ok(())
    }

    /// Enables or disables the direction offered by `side`.
    pub fn set_enabled(
        &mut self,
        id: &ChannelId,
        side: Side,
        enabled: bool,
    ) -> Result<(), GraphError> {
        let slot_ix = self.slot_index(id)?;
        let mut policy = *self
            .slot(slot_ix)
            .ok_or(GraphError::UnknownChannel(*id))?
            .channel
            .policy(side);
        policy.enabled = enabled;
        self.set_policy(id, side, policy)
    }

    /// Changes the capacity of a channel (a top-up, or a virtual channel resized). What was
    /// learned about its liquidity is forgotten: the balances moved, so the bounds start again
    /// at `[0, capacity]`.
    pub fn set_capacity(&mut self, id: &ChannelId, capacity: Amount) -> Result<(), GraphError> {
        let slot_ix = self.slot_index(id)?;
        let slot = self
            .slot_mut(slot_ix)
            .ok_or(GraphError::UnknownChannel(*id))?;
        slot.channel.capacity = capacity;
        slot.knowledge = [None, None];
        let (edges, channel) = (slot.edges, slot.channel.clone());
        self.learned.remove(&slot_ix);
        for side in [Side::A, Side::B] {
            self.update_hot(edges[side.index()], |w| {
                w.set_policy(channel.policy(side), capacity.0);
                w.set_bounds(0, capacity.0);
            });
        }
        Ok(())
    }

    /// Estimated memory used by the graph.
    pub fn memory_estimate(&self) -> MemoryEstimate {
        use std::mem::size_of;
        // petgraph keeps per node the weight and two edge-list heads, per edge the weight, two
        // next pointers and two endpoints (plus the Option tag of StableGraph).
        let node_bytes = self.graph.node_bound()
            * (size_of::<Option<NodeId>>() + 2 * size_of::<u32>())
            // hash map entry + control byte, with hashbrown's load factor of 7/8
            + self.nodes.capacity() * (size_of::<(NodeId, NodeIndex)>() + 1) * 8 / 7;
        let edge_bytes = self.graph.edge_bound()
            * (size_of::<Option<EdgeMeta>>() + 4 * size_of::<u32>() + 2 * size_of::<u32>())
            + self
                .incoming
                .iter()
                .map(|v| v.capacity() * size_of::<EdgeData>() + size_of::<Vec<EdgeData>>())
                .sum::<usize>()
            + self
                .outgoing
                .iter()
                .map(|v| v.capacity() * size_of::<EdgeData>() + size_of::<Vec<EdgeData>>())
                .sum::<usize>();
        let slot_bytes = self.slots.capacity() * size_of::<Option<Slot>>()
            + self.by_id.capacity() * (size_of::<(ChannelId, u32)>() + 1) * 8 / 7
            + self.free_slots.capacity() * size_of::<u32>()
            + self.learned.capacity() * (size_of::<u32>() + 1) * 8 / 7;
        let total = node_bytes + edge_bytes + slot_bytes;
        MemoryEstimate {
            total_bytes: total,
            bytes_per_node: total / self.node_count().max(1),
            bytes_per_channel: total / self.channel_count().max(1),
        }
    }

    /// The largest `htlc_min` of any directed edge (0 for an empty graph).
    pub(crate) fn max_htlc_min(&self) -> u128 {
        self.htlc_mins.keys().next_back().copied().unwrap_or(0)
    }

    pub(crate) fn node_index(&self, node: NodeId) -> Result<NodeIndex, GraphError> {
        self.nodes
            .get(&node)
            .copied()
            .ok_or(GraphError::UnknownNode(node))
    }

    pub(crate) fn slot_index(&self, id: &ChannelId) -> Result<u32, GraphError> {
        self.by_id
            .get(id)
            .copied()
            .ok_or(GraphError::UnknownChannel(*id))
    }

    pub(crate) fn slot(&self, slot: u32) -> Option<&Slot> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    pub(crate) fn slot_mut(&mut self, slot: u32) -> Option<&mut Slot> {
        self.slots.get_mut(slot as usize).and_then(Option::as_mut)
    }

    /// The directed edge of `id` offered by `side`.
    pub(crate) fn edge_of(&self, id: &ChannelId, side: Side) -> Result<EdgeIndex, GraphError> {
        let slot = self.slot_index(id)?;
        self.slot(slot)
            .map(|s| s.edges[side.index()])
            .ok_or(GraphError::UnknownChannel(*id))
    }

    /// The search data of a directed edge.
    pub(crate) fn hot(&self, e: EdgeIndex) -> Option<&EdgeData> {
        let (_, target) = self.graph.edge_endpoints(e)?;
        self.hot_at(target.index() as u32, e.index() as u32)
    }

    /// The search data of edge `edge` whose target is `target`.
    #[inline]
    pub(crate) fn hot_at(&self, target: u32, edge: u32) -> Option<&EdgeData> {
        let pos = *self.in_pos.get(edge as usize)? as usize;
        self.incoming.get(target as usize)?.get(pos)
    }

    /// Applies `f` to both copies of a directed edge's search data.
    pub(crate) fn update_hot(&mut self, e: EdgeIndex, f: impl Fn(&mut EdgeData)) {
        let Some((source, target)) = self.graph.edge_endpoints(e) else {
            return;
        };
        if let Some(&pos) = self.in_pos.get(e.index())
            && let Some(w) = self
                .incoming
                .get_mut(target.index())
                .and_then(|l| l.get_mut(pos as usize))
        {
            f(w);
        }
        if let Some(&pos) = self.out_pos.get(e.index())
            && let Some(w) = self
                .outgoing
                .get_mut(source.index())
                .and_then(|l| l.get_mut(pos as usize))
        {
            f(w);
        }
    }

    /// Adds a directed edge and its search data.
    fn insert_edge(
        &mut self,
        from: NodeIndex,
        to: NodeIndex,
        slot: u32,
        side: Side,
        policy: &Policy,
        capacity: u128,
    ) -> EdgeIndex {
        let e = self.graph.add_edge(from, to, EdgeMeta { slot, from: side });
        if self.incoming.len() <= to.index() {
            self.incoming.resize_with(to.index() + 1, Vec::new);
        }
        if self.in_pos.len() <= e.index() {
            self.in_pos.resize(e.index() + 1, u32::MAX);
            self.out_pos.resize(e.index() + 1, u32::MAX);
        }
        if self.outgoing.len() <= from.index() {
            self.outgoing.resize_with(from.index() + 1, Vec::new);
        }
        let mut data = EdgeData {
            base_fee: 0,
            htlc_min: 0,
            htlc_max: 0,
            liq_lower: 0,
            liq_upper: capacity,
            log_width: 0,
            expiry_delta: 0,
            fee_ppm: 0,
            source: from.index() as u32,
            target: to.index() as u32,
            edge: e.index() as u32,
            enabled: false,
        };
        data.set_policy(policy, capacity);
        data.set_bounds(0, capacity);
        if let (Some(list), Some(pos)) = (
            self.outgoing.get_mut(from.index()),
            self.out_pos.get_mut(e.index()),
        ) {
            *pos = list.len() as u32;
            list.push(data.clone());
        }
        if let (Some(list), Some(pos)) = (
            self.incoming.get_mut(to.index()),
            self.in_pos.get_mut(e.index()),
        ) {
            *pos = list.len() as u32;
            list.push(data);
        }
        e
    }

    /// Removes a directed edge and its search data.
    fn delete_edge(&mut self, e: EdgeIndex) {
        if let Some((_, target)) = self.graph.edge_endpoints(e)
            && let Some(&pos) = self.in_pos.get(e.index())
            && let Some(list) = self.incoming.get_mut(target.index())
            && (pos as usize) < list.len()
        {
            list.swap_remove(pos as usize);
            // The last entry moved into `pos`: update its position.
            if let Some(moved) = list.get(pos as usize).map(|d| d.edge as usize)
                && let Some(p) = self.in_pos.get_mut(moved)
            {
                *p = pos;
            }
        }
        if let Some((source, _)) = self.graph.edge_endpoints(e)
            && let Some(&pos) = self.out_pos.get(e.index())
            && let Some(list) = self.outgoing.get_mut(source.index())
            && (pos as usize) < list.len()
        {
            list.swap_remove(pos as usize);
            if let Some(moved) = list.get(pos as usize).map(|d| d.edge as usize)
                && let Some(p) = self.out_pos.get_mut(moved)
            {
                *p = pos;
            }
        }
        self.graph.remove_edge(e);
    }

    /// The channel id and sending side of a directed edge.
    pub(crate) fn directed(&self, edge: EdgeIndex) -> Option<DirectedChannel> {
        let w = self.graph.edge_weight(edge)?;
        let slot = self.slot(w.slot)?;
        Some(DirectedChannel {
            channel: slot.channel.id,
            from: w.from,
        })
    }

    fn ensure_node(&mut self, node: NodeId) -> Result<NodeIndex, GraphError> {
        match self.nodes.get(&node) {
            Some(ix) => Ok(*ix),
            None => self.insert_node(node),
        }
    }

    fn insert_node(&mut self, node: NodeId) -> Result<NodeIndex, GraphError> {
        if self.graph.node_count() + 2 >= u32::MAX as usize {
            return Err(GraphError::Full);
        }
        let ix = self.graph.add_node(node);
        self.nodes.insert(node, ix);
        Ok(ix)
    }

    fn add_htlc_min(&mut self, v: u128) {
        *self.htlc_mins.entry(v).or_insert(0) += 1;
    }

    fn remove_htlc_min(&mut self, v: u128) {
        if let Some(n) = self.htlc_mins.get_mut(&v) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.htlc_mins.remove(&v);
            }
        }
    }
}

fn validate_policy(channel: &Channel, side: Side, policy: &Policy) -> Result<(), GraphError> {
    let invalid = |reason| GraphError::InvalidPolicy {
        channel: channel.id,
        side,
        reason,
    };
    if policy.htlc_min.is_zero() {
        return Err(invalid(
            "htlc_min must be at least 1 (zero-amount HTLCs are invalid)",
        ));
    }
    if policy.htlc_min > policy.htlc_max {
        return Err(invalid("htlc_min is above htlc_max"));
    }
    Ok(())
}

impl EdgeData {
    /// Sets the liquidity bounds (`lower <= upper`) and the cached log of their width.
    pub(crate) fn set_bounds(&mut self, lower: u128, upper: u128) {
        self.liq_lower = lower;
        self.liq_upper = upper;
        self.log_width = crate::fixed::log2_fixed(upper.saturating_sub(lower).saturating_add(1));
    }

    /// Copies a policy's fields (HTLC maximum capped by the capacity).
    fn set_policy(&mut self, policy: &Policy, capacity: u128) {
        self.base_fee = policy.base_fee.0;
        self.htlc_min = policy.htlc_min.0;
        self.htlc_max = policy.htlc_max.0.min(capacity);
        self.expiry_delta = policy.expiry_delta;
        self.fee_ppm = policy.fee_ppm;
        self.enabled = policy.enabled;
    }
}
