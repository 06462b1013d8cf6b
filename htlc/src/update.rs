//! The two-party update protocol as a pure state machine (see [`crate::msg`] for the message
//! sequence and ADR 0003 for concurrent proposals).
//!
//! A [`Channel`] holds the latest co-signed state and at most one proposal of ours in flight.
//! Inputs are method calls (`offer_htlc`, `fulfill_htlc`, ..., `propose`, `handle`); outputs are
//! [`Effect`]s, which the caller must carry out **in order**: a [`Effect::Persist`] comes before
//! the [`Effect::Send`] that releases our signature (rule 2) and before the [`Effect::Event`]s
//! that let the application act on the new state (rules 3 and 5).
//!
//! Safety invariant: **we never sign two different states with the same version.** Every
//! proposal and countersignature is at a version above every version we signed before, so each
//! co-signed state supersedes (on chain, rule 8) every half-signed state we ever released.
//!
//! Second invariant: **a proposal we refused is dead for good.** Refusing the peer's proposal at
//! version `v` raises our version floor to `v` (persisted before the refusal leaves), so the
//! same proposal delivered again later, when it might validate, is refused as stale: the
//! proposer, who was told "no" and moved on, never finds it co-signed behind its back (ADR 0021).
//! An
//! operation of a proposal the peer refused is therefore reported dead ([`Event::OpDropped`])
//! only once a later co-signed state exists: until then the peer could still complete the refused
//! state with its own signature (rule 4).

use crate::eip712::DomainSeparator;
use crate::ids::{ChannelId, Expiry, Hashlock, HtlcId, Preimage, Side};
use crate::msg::{Message, RejectReason};
use crate::ops::{Deposits, Limits, NextIds, Op, OpError, apply_batch};
use crate::sig::{Keys, SignatureError, verify};
use crate::state::{ChannelParams, ChannelState, Guarantee, Lock};
use crate::{Amount, failure::FailureReason};
use alloy::primitives::{B256, Signature};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// How far above our highest signed version a proposal may jump. Versions skip only after
/// refused proposals; a peer jumping further could exhaust the version space and freeze the
/// channel, so larger jumps are refused.
pub const MAX_VERSION_GAP: u64 = 1024;

/// After this many refusals in a row the channel stops proposing and reports
/// [`Event::PeerStuck`]: the application should close on chain.
pub const MAX_CONSECUTIVE_REJECTS: u32 = 8;

/// A state with both participants' signatures (index 0 = A, 1 = B).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedState {
    /// The state.
    pub state: ChannelState,
    /// A's and B's signatures on its EIP-712 digest.
    pub sigs: [Signature; 2],
}

/// Our proposal in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The operations.
    pub ops: Vec<QueuedOp>,
    /// The state they produce.
    pub state: ChannelState,
    /// Lock ids after them.
    pub ids: NextIds,
    /// Our signature on `state`.
    pub sig: Signature,
}

/// An operation waiting to be (re)proposed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedOp {
    /// The operation.
    pub op: Op,
    /// The highest version of a state we signed that contained it, if any (it may still be
    /// enforced by the peer until a co-signed state above that version exists).
    pub signed_at: Option<u64>,
}

/// Everything needed to restore a channel after a restart (the persisted record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Channel parameters.
    pub(crate) params: ChannelParams,
    /// Which side we are.
    pub(crate) me: Side,
    /// Bounds enforced on states.
    pub(crate) limits: Limits,
    /// The latest co-signed state.
    pub(crate) latest: SignedState,
    /// Lock ids as of `latest`.
    pub(crate) next_ids: NextIds,
    /// No state at or below this version will ever get our signature: we signed a state at
    /// it, refused the peer's proposal at it, or the peer asked us to skip past it. Every
    /// proposal we make and every proposal we accept is above it (ADR 0003, ADR 0021).
    pub(crate) version_floor: u64,
    /// Our proposal in flight.
    pub(crate) pending: Option<Proposal>,
    /// Operations waiting for the next proposal.
    pub(crate) queue: VecDeque<QueuedOp>,
    /// Next id for a lock we offer.
    pub(crate) alloc_id: u64,
    /// Follower only: after a conflict, wait for the leader's proposal before proposing.
    pub(crate) await_leader: bool,
    /// Refused operations, reported dead once a co-signed state above `.0` exists.
    pub(crate) doomed: Vec<(u64, Op, OpError)>,
    /// Refusals in a row.
    pub(crate) rejects_in_row: u32,
    /// What the adjudicator is known to hold for the channel (at least the opening total):
    /// the state's total never exceeds it.
    pub(crate) holdings: Amount,
    /// Per participant (A, B): what the chain shows it deposited (from the adjudicator's
    /// `Deposited` events), opening deposits included.
    pub(crate) deposited: [Amount; 2],
    /// Per participant: what co-signed states credit it for, its opening balance included. A
    /// top-up by `s` is accepted only up to `deposited[s] - credited[s]` (rule 11).
    pub(crate) credited: [Amount; 2],
    /// Guarantee operations we agreed to sign when the peer proposes them, each exactly once
    /// (rule 11: guarantees move both sides' money, so the peer alone may never propose one).
    pub(crate) agreed: Vec<Op>,
    /// Preimages we know for the peer's locks: we claim those locks (off chain, or on chain if
    /// the peer does not co-sign), so we never co-sign their expiry.
    pub(crate) claims: Vec<(HtlcId, Preimage)>,
    /// The channel is disputed or concluded on chain: no new lock, guarantee or deposit
    /// (rule 12). Settling operations still go on.
    pub(crate) frozen: bool,
}

impl Snapshot {
    /// Channel parameters.
    pub fn params(&self) -> &ChannelParams {
        &self.params
    }

    /// Which side we are.
    pub fn me(&self) -> Side {
        self.me
    }

    /// Bounds enforced on states.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The latest co-signed state.
    pub fn latest(&self) -> &SignedState {
        &self.latest
    }

    /// Lock ids as of the latest co-signed state.
    pub fn next_ids(&self) -> NextIds {
        self.next_ids
    }

    /// No state at or below this version will ever get our signature (ADR 0003, ADR 0021).
    pub fn version_floor(&self) -> u64 {
        self.version_floor
    }

    /// Our proposal in flight.
    pub fn pending(&self) -> Option<&Proposal> {
        self.pending.as_ref()
    }

    /// Operations waiting for the next proposal.
    pub fn queue(&self) -> &VecDeque<QueuedOp> {
        &self.queue
    }

    /// Follower only: after a conflict, whether we wait for the leader's proposal.
    pub fn await_leader(&self) -> bool {
        self.await_leader
    }

    /// Refusals in a row.
    pub fn rejects_in_row(&self) -> u32 {
        self.rejects_in_row
    }

    /// What the adjudicator is known to hold for the channel.
    pub fn holdings(&self) -> Amount {
        self.holdings
    }

    /// Per participant, what the chain shows it deposited.
    pub fn deposited(&self) -> [Amount; 2] {
        self.deposited
    }

    /// Whether the channel is disputed or concluded on chain (rule 12).
    pub fn frozen(&self) -> bool {
        self.frozen
    }

    /// Mark the channel as on chain: no new lock, guarantee or deposit (rule 12).
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    /// What we deposited that no co-signed state, proposal of ours in flight or queued
    /// operation credits yet: what a new top-up credit of ours may ask for.
    pub fn uncredited_own(&self) -> Amount {
        let in_flight = batch_deposits(
            self.pending
                .iter()
                .flat_map(|p| p.ops.iter())
                .chain(self.queue.iter())
                .map(|q| &q.op),
        );
        self.deposits().uncredited[self.me.index()]
            .checked_sub(in_flight)
            .unwrap_or(Amount::ZERO)
    }

    /// What deposits the next update may credit, as this side has seen the chain.
    pub fn deposits(&self) -> Deposits {
        let room = |s: usize| {
            self.deposited[s]
                .checked_sub(self.credited[s])
                .unwrap_or(Amount::ZERO)
        };
        Deposits {
            holdings: self.holdings,
            uncredited: [room(0), room(1)],
        }
    }
}

/// A lock the peer offered us, inside a co-signed state we have handed over for persistence.
/// Only this crate creates it, so holding one proves rule 3's precondition for forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommittedHtlc {
    channel_id: ChannelId,
    version: u64,
    lock: Lock,
}

impl CommittedHtlc {
    /// Only the machine (and this crate's tests) may vouch that a lock is committed.
    pub(crate) fn new(channel_id: ChannelId, version: u64, lock: Lock) -> Self {
        CommittedHtlc {
            channel_id,
            version,
            lock,
        }
    }

    /// The channel it arrived on.
    pub fn channel_id(&self) -> ChannelId {
        self.channel_id
    }
    /// The co-signed version that first contains it.
    pub fn version(&self) -> u64 {
        self.version
    }
    /// The lock.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }
}

/// Something the application learns from the channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A state is co-signed: the operations of `proposer` are in force.
    Committed {
        /// Its version.
        version: u64,
        /// Who proposed the operations.
        proposer: Side,
        /// The operations.
        ops: Vec<Op>,
    },
    /// The peer's lock is committed and persisted: it may be forwarded (rule 3).
    HtlcReceived(CommittedHtlc),
    /// The peer revealed the preimage of a lock we offered: use it upstream at once (rule 5).
    /// Emitted as soon as a valid preimage arrives, even in a proposal we refuse.
    PreimageLearned {
        /// Our lock.
        id: HtlcId,
        /// Its preimage.
        preimage: Preimage,
    },
    /// An operation we queued will never take effect.
    OpDropped {
        /// The operation.
        op: Op,
        /// Why.
        error: OpError,
    },
    /// The final state is co-signed: the channel can be closed cooperatively on chain.
    Closed(SignedState),
    /// The peer refused [`MAX_CONSECUTIVE_REJECTS`] proposals in a row: close on chain.
    PeerStuck,
}

/// An output of the machine, to be carried out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Write the machine's snapshot ([`Channel::snapshot`]) durably (synced) before carrying
    /// out the next effects. The snapshot at the end of the call supersedes the one at this
    /// point, so writing it once, before the first effect that follows, is enough.
    Persist,
    /// Send this message to the peer.
    Send(Message),
    /// Tell the application.
    Event(Event),
}

/// A message that does not fit the protocol; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The message is for another channel.
    #[error("message for unknown channel {0}")]
    UnknownChannel(ChannelId),
    /// An accept or reject for a version we have not proposed.
    #[error("unexpected reply for version {0}")]
    UnexpectedReply(u64),
    /// The peer's countersignature does not verify.
    #[error("bad countersignature: {0}")]
    BadSignature(SignatureError),
    /// A state handed in does not belong to these parameters or is not co-signed.
    #[error("invalid state: {0}")]
    InvalidState(&'static str),
    /// The channel is final.
    #[error("channel is closed")]
    Closed,
    /// Amount arithmetic overflowed.
    #[error("amount overflow")]
    Overflow,
    /// The peer keeps refusing our proposals.
    #[error("peer refused {0} proposals in a row")]
    PeerStuck(u32),
}

/// Sign a state of a channel with our keys (used for the opening state).
pub fn sign_state(
    params: &ChannelParams,
    keys: &Keys,
    state: &ChannelState,
) -> Result<Signature, ProtocolError> {
    let digest = DomainSeparator::new(params)
        .digest(state)
        .map_err(|_| ProtocolError::Overflow)?;
    Ok(keys.sign_digest(digest))
}

/// One two-party channel's update protocol.
#[derive(Clone, Debug)]
pub struct Channel {
    keys: Keys,
    domain: DomainSeparator,
    snap: Snapshot,
}

impl Channel {
    /// A channel from a co-signed state (the funded opening state, version 0 usually).
    /// Verifies both signatures and that the state belongs to `params`.
    pub fn from_cosigned(
        params: ChannelParams,
        keys: Keys,
        limits: Limits,
        latest: SignedState,
    ) -> Result<Self, ProtocolError> {
        Self::from_cosigned_checking(params, keys, limits, latest, true)
    }

    /// As [`Channel::from_cosigned`], where `latest`'s signature for our side is one we made
    /// on this very state ourselves (just now, or kept in our own records): only the
    /// counterparty's is verified (a signature recovery less, a virtual channel's open is
    /// about a tenth faster).
    pub fn from_cosigned_by_us(
        params: ChannelParams,
        keys: Keys,
        limits: Limits,
        latest: SignedState,
    ) -> Result<Self, ProtocolError> {
        Self::from_cosigned_checking(params, keys, limits, latest, false)
    }

    fn from_cosigned_checking(
        params: ChannelParams,
        keys: Keys,
        limits: Limits,
        latest: SignedState,
        check_ours: bool,
    ) -> Result<Self, ProtocolError> {
        let me = params
            .side_of(keys.address())
            .ok_or(ProtocolError::InvalidState("our key is not a participant"))?;
        if latest.state.channel_id != params.id() {
            return Err(ProtocolError::InvalidState("state of another channel"));
        }
        if !latest.state.locks.is_empty() || !latest.state.guarantees.is_empty() {
            return Err(ProtocolError::InvalidState("opening state must be empty"));
        }
        // Rule 1 needs a total that fits: every later sum is bounded by it.
        latest.state.total().map_err(|_| ProtocolError::Overflow)?;
        let domain = DomainSeparator::new(&params);
        let digest = domain
            .digest(&latest.state)
            .map_err(|_| ProtocolError::Overflow)?;
        for side in [Side::A, Side::B] {
            if side == me && !check_ours {
                continue;
            }
            verify(digest, &latest.sigs[side.index()], params.participant(side))
                .map_err(ProtocolError::BadSignature)?;
        }
        let next_ids = NextIds::default();
        let holdings = latest.state.total().map_err(|_| ProtocolError::Overflow)?;
        let credited = latest.state.balances;
        let snap = Snapshot {
            alloc_id: next_ids.next(me).0,
            me,
            limits,
            version_floor: latest.state.version,
            latest,
            next_ids,
            pending: None,
            queue: VecDeque::new(),
            await_leader: false,
            doomed: Vec::new(),
            rejects_in_row: 0,
            holdings,
            deposited: [Amount::ZERO; 2],
            credited,
            agreed: Vec::new(),
            claims: Vec::new(),
            frozen: false,
            params,
        };
        Ok(Channel { keys, domain, snap })
    }

    /// Restore a channel from its persisted snapshot.
    pub fn restore(snap: Snapshot, keys: Keys) -> Result<Self, ProtocolError> {
        if snap.params.participant(snap.me) != keys.address() {
            return Err(ProtocolError::InvalidState(
                "keys do not match the snapshot",
            ));
        }
        Ok(Channel {
            domain: DomainSeparator::new(&snap.params),
            keys,
            snap,
        })
    }

    /// The persisted record of this channel.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    /// The channel id.
    pub fn id(&self) -> ChannelId {
        self.snap.latest.state.channel_id
    }

    /// The latest co-signed state.
    pub fn latest(&self) -> &SignedState {
        &self.snap.latest
    }

    /// Which side we are.
    pub fn me(&self) -> Side {
        self.snap.me
    }

    /// The peer's locks in the latest co-signed state, as committed HTLCs: after a restart,
    /// what may still be forwarded, fulfilled or failed (rule 3 holds: the state is co-signed,
    /// and the machine was restored from its persisted snapshot).
    pub fn received_htlcs(&self) -> Vec<CommittedHtlc> {
        let state = &self.snap.latest.state;
        state
            .locks
            .iter()
            .filter(|l| l.sender != self.snap.me)
            .map(|l| CommittedHtlc::new(self.id(), state.version, *l))
            .collect()
    }

    /// Whether a proposal of ours is waiting for the peer's answer.
    pub fn has_pending(&self) -> bool {
        self.snap.pending.is_some()
    }

    /// The EIP-712 digest of a state of this channel.
    pub fn digest(&self, state: &ChannelState) -> Result<B256, ProtocolError> {
        self.domain
            .digest(state)
            .map_err(|_| ProtocolError::Overflow)
    }

    fn enqueue(&mut self, op: Op) {
        self.snap.queue.push_back(QueuedOp {
            op,
            signed_at: None,
        });
    }

    /// The id the next [`Self::offer_htlc`] gets (the onion sent ahead of an HTLC names it).
    pub fn next_offer_id(&self) -> HtlcId {
        HtlcId(self.snap.alloc_id)
    }

    /// Queue an HTLC we pay; returns its id. It takes effect with the next [`Self::propose`].
    pub fn offer_htlc(&mut self, amount: Amount, hashlock: Hashlock, expiry: Expiry) -> HtlcId {
        let id = HtlcId(self.snap.alloc_id);
        // Ids step by 2 from a u64; exhausting them would take 2^63 offers.
        self.snap.alloc_id = self.snap.alloc_id.saturating_add(2);
        self.enqueue(Op::AddHtlc {
            id,
            amount,
            hashlock,
            expiry,
        });
        id
    }

    /// Queue the claim of a lock the peer offered. From now on we never co-sign the lock's
    /// expiry: we know its preimage (the claim is kept until the lock leaves the state).
    pub fn fulfill_htlc(&mut self, id: HtlcId, preimage: Preimage) {
        let ours = self
            .snap
            .latest
            .state
            .lock(id)
            .is_some_and(|l| l.sender != self.snap.me && l.hashlock.is_opened_by(&preimage));
        if ours && !self.snap.claims.iter().any(|(c, _)| *c == id) {
            self.snap.claims.push((id, preimage));
        }
        self.enqueue(Op::FulfillHtlc { id, preimage });
    }

    /// Preimages we know for the peer's pending locks (what we must claim on chain if the peer
    /// does not settle them off chain).
    pub fn claims(&self) -> &[(HtlcId, Preimage)] {
        &self.snap.claims
    }

    /// Give up the claim of the peer's lock `id`: we can no longer win it (we learned its
    /// preimage after its expiry and did not register it on chain before), so its expiry may be
    /// co-signed again. Only the application knows this; the machine never gives up by itself.
    pub fn release_claim(&mut self, id: HtlcId) {
        self.snap.claims.retain(|(c, _)| *c != id);
    }

    /// Queue the failure of a lock the peer offered.
    pub fn fail_htlc(&mut self, id: HtlcId, reason: FailureReason) {
        self.enqueue(Op::FailHtlc { id, reason });
    }

    /// Queue the refund of our own expired lock.
    pub fn expire_htlc(&mut self, id: HtlcId) {
        self.enqueue(Op::ExpireHtlc { id });
    }

    /// Queue a guarantee for a virtual channel (our own decision to fund it).
    pub fn add_guarantee(&mut self, g: Guarantee) {
        self.enqueue(Op::AddGuarantee(g));
    }

    /// Agree to sign this guarantee operation (an `AddGuarantee` or `RemoveGuarantee` with
    /// these exact amounts) once, when the peer proposes it: the virtual-channel open or close
    /// this node decided to take part in. Without an agreement the peer's guarantee operations
    /// are refused with [`OpError::NotAgreed`] (rule 11).
    pub fn agree(&mut self, op: Op) -> Result<(), ProtocolError> {
        if !matches!(op, Op::AddGuarantee(_) | Op::RemoveGuarantee { .. }) {
            return Err(ProtocolError::InvalidState(
                "only guarantee operations need an agreement",
            ));
        }
        if self.snap.agreed.len() >= self.snap.limits.max_guarantees.saturating_mul(2) {
            return Err(ProtocolError::InvalidState("too many agreements pending"));
        }
        self.snap.agreed.push(op);
        Ok(())
    }

    /// Take back one agreement to `op` not used yet: the peer's proposal of it is refused from
    /// now on. Returns whether there was one.
    pub fn withdraw_agreement(&mut self, op: &Op) -> bool {
        match self.snap.agreed.iter().position(|a| a == op) {
            Some(i) => {
                self.snap.agreed.remove(i);
                true
            }
            None => false,
        }
    }

    /// Mark the channel disputed or concluded on chain: from now on it takes no new lock,
    /// guarantee or deposit, from either side (rule 12). It cannot be undone.
    pub fn freeze(&mut self) {
        self.snap.freeze();
    }

    /// Queue the release of a guarantee.
    pub fn remove_guarantee(&mut self, virtual_channel: ChannelId, to_a: Amount, to_b: Amount) {
        self.enqueue(Op::RemoveGuarantee {
            virtual_channel,
            to_a,
            to_b,
        });
    }

    /// Queue a direct payment to the peer.
    pub fn transfer(&mut self, amount: Amount) {
        self.enqueue(Op::Transfer { amount });
    }

    /// Queue the cooperative close.
    pub fn close(&mut self) {
        self.enqueue(Op::Close);
    }

    /// Queue a top-up: credit us with `amount` we deposited on chain. The peer accepts it only
    /// once it sees the adjudicator hold it.
    pub fn deposit(&mut self, amount: Amount) {
        self.enqueue(Op::Deposit { amount });
    }

    /// Record what the adjudicator is seen to hold for the channel (it never decreases while
    /// the channel is open).
    pub fn observe_holdings(&mut self, holdings: Amount) {
        self.snap.holdings = self.snap.holdings.max(holdings);
    }

    /// Record what the chain shows `side` deposited for the channel in total (the sum of its
    /// `Deposited` events; it never decreases). Top-ups by `side` are credited up to it.
    pub fn observe_deposits(&mut self, side: Side, total: Amount) {
        let d = &mut self.snap.deposited[side.index()];
        *d = (*d).max(total);
    }

    /// Number of operations waiting to be proposed.
    pub fn queued(&self) -> usize {
        self.snap.queue.len()
    }

    /// Propose every queued operation (up to the batch limit) as one signed update, if no
    /// proposal is in flight. Invalid operations are dropped with [`Event::OpDropped`].
    pub fn propose(&mut self, now: Expiry) -> Result<Vec<Effect>, ProtocolError> {
        if self.snap.latest.state.is_final {
            return Err(ProtocolError::Closed);
        }
        if self.snap.rejects_in_row >= MAX_CONSECUTIVE_REJECTS {
            return Err(ProtocolError::PeerStuck(self.snap.rejects_in_row));
        }
        let mut effects = Vec::new();
        self.propose_into(now, false, &mut effects)?;
        Ok(effects)
    }

    fn base_version(&self) -> u64 {
        self.snap.latest.state.version.max(self.snap.version_floor)
    }

    /// Build and sign a proposal. `force` proposes even with an empty queue (a version bump
    /// that supersedes a refused state). Proposes nothing while a proposal is in flight, while
    /// the follower waits for the leader, or once the peer is stuck.
    fn propose_into(
        &mut self,
        now: Expiry,
        force: bool,
        effects: &mut Vec<Effect>,
    ) -> Result<(), ProtocolError> {
        if self.snap.pending.is_some()
            || self.snap.await_leader
            || self.snap.latest.state.is_final
            || self.snap.rejects_in_row >= MAX_CONSECUTIVE_REJECTS
            || (self.snap.queue.is_empty() && !force)
        {
            return Ok(());
        }
        // Every check that can fail comes before the first change.
        let version = self
            .base_version()
            .checked_add(1)
            .ok_or(ProtocolError::Overflow)?;
        let me = self.snap.me;
        let mut state = self.snap.latest.state.clone();
        let mut ids = self.snap.next_ids;
        let mut ops = Vec::new();
        while ops.len() < self.snap.limits.max_ops_per_update {
            let Some(q) = self.snap.queue.pop_front() else {
                break;
            };
            // Validate one by one so one bad operation does not sink the batch. A deposit of
            // an earlier operation of this batch is already credited in `state`, not in the
            // snapshot: count it against our room.
            let mut deposits = self.snap.deposits();
            deposits.uncredited[me.index()] = deposits.uncredited[me.index()]
                .checked_sub(batch_deposits(ops.iter().map(|q: &QueuedOp| &q.op)))
                .unwrap_or(Amount::ZERO);
            let frozen = self.snap.frozen && opens_value(&q.op);
            let checked = if frozen {
                Err((0, OpError::ChannelFrozen))
            } else {
                apply_batch(
                    &mut state,
                    &mut ids,
                    std::slice::from_ref(&q.op),
                    me,
                    now,
                    &self.snap.limits,
                    deposits,
                )
            };
            match checked {
                Ok(()) => ops.push(q),
                Err((_, error)) => match q.signed_at {
                    Some(v) => self.snap.doomed.push((v, q.op, error)),
                    None => {
                        // Our own clock says the peer's lock expired before we could claim it
                        // off chain: stop refusing its expiry (a claim on chain needs the
                        // preimage registered before the expiry, which the application
                        // tracks). A peer's *word* that it expired never releases a claim.
                        if let (Op::FulfillHtlc { id, .. }, OpError::LockExpired) = (&q.op, error) {
                            let id = *id;
                            self.snap.claims.retain(|(c, _)| *c != id);
                        }
                        effects.push(Effect::Event(Event::OpDropped { op: q.op, error }))
                    }
                },
            }
        }
        if ops.is_empty() && !force {
            return Ok(());
        }
        state.version = version;
        // apply_batch checked every sum of this state, so its digest cannot overflow.
        let digest = self.digest(&state)?;
        let sig = self.keys.sign_digest(digest);
        for q in &mut ops {
            q.signed_at = Some(version);
        }
        let wire_ops = ops.iter().map(|q| q.op.clone()).collect();
        self.snap.version_floor = version;
        self.snap.pending = Some(Proposal {
            ops,
            state,
            ids,
            sig,
        });
        effects.push(Effect::Persist);
        effects.push(Effect::Send(Message::Propose {
            channel_id: self.id(),
            version,
            ops: wire_ops,
            sig,
        }));
        Ok(())
    }

    /// Our proposal in flight as the message that carried it, to send again when the peer
    /// refused it unread (it was not ready for the channel yet).
    pub fn pending_message(&self) -> Option<Message> {
        self.snap.pending.as_ref().map(|p| Message::Propose {
            channel_id: self.id(),
            version: p.state.version,
            ops: p.ops.iter().map(|q| q.op.clone()).collect(),
            sig: p.sig,
        })
    }

    /// Handle a message from the peer at time `now`.
    ///
    /// A proposal we refuse yields `Ok` with a [`Message::Reject`] to send and no state change.
    /// A message that does not fit the protocol yields an error and changes nothing.
    pub fn handle(&mut self, msg: Message, now: Expiry) -> Result<Vec<Effect>, ProtocolError> {
        if msg.channel_id() != self.id() {
            return Err(ProtocolError::UnknownChannel(msg.channel_id()));
        }
        match msg {
            Message::Propose {
                version, ops, sig, ..
            } => self.on_propose(version, ops, sig, now),
            Message::Accept { version, sig, .. } => self.on_accept(version, sig, now),
            Message::Reject {
                version, reason, ..
            } => self.on_reject(version, reason, now),
        }
    }

    fn reject(&self, version: u64, reason: RejectReason) -> Effect {
        Effect::Send(Message::Reject {
            channel_id: self.id(),
            version,
            reason,
        })
    }

    /// Rule 11 for a batch the peer proposes, beyond its arithmetic: every guarantee operation
    /// must match one of our agreements (each used once; returns the indices used, ascending),
    /// no lock we hold a preimage for may be expired, and a frozen channel takes nothing new.
    fn authorize(&self, ops: &[Op]) -> Result<Vec<usize>, (usize, OpError)> {
        let mut used: Vec<usize> = Vec::new();
        for (index, op) in ops.iter().enumerate() {
            if self.snap.frozen && opens_value(op) {
                return Err((index, OpError::ChannelFrozen));
            }
            match op {
                Op::AddGuarantee(_) | Op::RemoveGuarantee { .. } => {
                    let found = self
                        .snap
                        .agreed
                        .iter()
                        .enumerate()
                        .position(|(i, a)| a == op && !used.contains(&i));
                    match found {
                        Some(i) => used.push(i),
                        None => return Err((index, OpError::NotAgreed)),
                    }
                }
                Op::ExpireHtlc { id } if self.snap.claims.iter().any(|(c, _)| c == id) => {
                    return Err((index, OpError::ClaimPending));
                }
                _ => {}
            }
        }
        used.sort_unstable();
        Ok(used)
    }

    /// A co-signed state with `ops` by `proposer` credits its deposits.
    fn credit_deposits(&mut self, proposer: Side, ops: &[Op]) {
        let amount = batch_deposits(ops.iter());
        let c = &mut self.snap.credited[proposer.index()];
        // Bounded by the channel's total, which apply_batch checked fits.
        *c = c.checked_add(amount).unwrap_or(Amount::MAX);
    }

    /// Refuse the peer's proposal at `version`. If it is within reach (above our floor, at most
    /// [`MAX_VERSION_GAP`] above it) the floor rises to it first, and the raised floor is
    /// persisted before the refusal leaves, so this proposal can never be countersigned later,
    /// not even after a restart (ADR 0021).
    fn refuse(&mut self, version: u64, reason: RejectReason, effects: &mut Vec<Effect>) {
        let base = self.base_version();
        if version > base && version - base <= MAX_VERSION_GAP {
            self.snap.version_floor = version;
            effects.push(Effect::Persist);
        }
        effects.push(self.reject(version, reason));
    }

    fn on_propose(
        &mut self,
        version: u64,
        ops: Vec<Op>,
        sig: Signature,
        now: Expiry,
    ) -> Result<Vec<Effect>, ProtocolError> {
        let them = self.snap.me.other();
        let mut effects = Vec::new();
        // Rule 5: a valid preimage for one of our locks is worth knowing even if we refuse.
        for op in &ops {
            if let Op::FulfillHtlc { id, preimage } = op
                && let Some(lock) = self.snap.latest.state.lock(*id)
                && lock.sender == self.snap.me
                && lock.hashlock.is_opened_by(preimage)
            {
                effects.push(Effect::Event(Event::PreimageLearned {
                    id: *id,
                    preimage: *preimage,
                }));
            }
        }
        if self.snap.latest.state.is_final {
            effects.push(self.reject(
                version,
                RejectReason::InvalidOp {
                    index: 0,
                    error: OpError::ChannelClosed,
                },
            ));
            return Ok(effects);
        }
        if self.snap.pending.is_some() {
            // Crossing proposals (ADR 0003): checked before the version, since both sides
            // proposed at the same version and the follower must learn it was a conflict.
            self.refuse(version, RejectReason::Conflict, &mut effects);
            return Ok(effects);
        }
        let base = self.base_version();
        if version <= base || version - base > MAX_VERSION_GAP {
            effects.push(self.reject(version, RejectReason::BadVersion { min: base + 1 }));
            return Ok(effects);
        }
        let used = match self.authorize(&ops) {
            Ok(used) => used,
            Err((index, error)) => {
                self.refuse(
                    version,
                    RejectReason::InvalidOp { index, error },
                    &mut effects,
                );
                return Ok(effects);
            }
        };
        let mut state = self.snap.latest.state.clone();
        let mut ids = self.snap.next_ids;
        if let Err((index, error)) = apply_batch(
            &mut state,
            &mut ids,
            &ops,
            them,
            now,
            &self.snap.limits,
            self.snap.deposits(),
        ) {
            self.refuse(
                version,
                RejectReason::InvalidOp { index, error },
                &mut effects,
            );
            return Ok(effects);
        }
        state.version = version;
        let digest = self.digest(&state)?;
        if verify(digest, &sig, self.snap.params.participant(them)).is_err() {
            self.refuse(version, RejectReason::BadSignature, &mut effects);
            return Ok(effects);
        }
        let ours = self.keys.sign_digest(digest);
        let mut sigs = [ours; 2];
        sigs[them.index()] = sig;
        let received: Vec<Lock> = ops
            .iter()
            .filter_map(|op| match op {
                Op::AddHtlc { id, .. } => state.lock(*id).copied(),
                _ => None,
            })
            .collect();
        self.snap.version_floor = version;
        self.snap.latest = SignedState { state, sigs };
        self.snap.next_ids = ids;
        self.snap.await_leader = false;
        // Each agreement is used once: remove the ones this state used (highest index first).
        for i in used.into_iter().rev() {
            self.snap.agreed.remove(i);
        }
        self.credit_deposits(them, &ops);
        // A co-signed state ends a run of refusals, whoever proposed it. Otherwise a follower
        // whose proposals keep crossing a busy leader's (each a `Conflict`, each resolved by
        // accepting the leader's next proposal, ADR 0003) counted them as "in a row" and, after
        // `MAX_CONSECUTIVE_REJECTS`, stopped proposing for good on a live channel: a hub then
        // never sent the fulfils it owed upstream (found by hub/tests/crash_payments.rs).
        self.snap.rejects_in_row = 0;
        effects.push(Effect::Persist);
        effects.push(Effect::Send(Message::Accept {
            channel_id: self.id(),
            version,
            sig: ours,
        }));
        for lock in received {
            effects.push(Effect::Event(Event::HtlcReceived(CommittedHtlc::new(
                self.id(),
                version,
                lock,
            ))));
        }
        self.after_commit(them, ops, now, &mut effects)?;
        Ok(effects)
    }

    /// Events common to every new co-signed state, then the next proposal if any is queued.
    fn after_commit(
        &mut self,
        proposer: Side,
        ops: Vec<Op>,
        now: Expiry,
        effects: &mut Vec<Effect>,
    ) -> Result<(), ProtocolError> {
        let version = self.snap.latest.state.version;
        let state = &self.snap.latest.state;
        self.snap.claims.retain(|(id, _)| state.lock(*id).is_some());
        effects.push(Effect::Event(Event::Committed {
            version,
            proposer,
            ops,
        }));
        let (dead, alive): (Vec<_>, Vec<_>) = std::mem::take(&mut self.snap.doomed)
            .into_iter()
            .partition(|(v, _, _)| *v < version);
        self.snap.doomed = alive;
        for (_, op, error) in dead {
            effects.push(Effect::Event(Event::OpDropped { op, error }));
        }
        if self.snap.latest.state.is_final {
            effects.push(Effect::Event(Event::Closed(self.snap.latest.clone())));
            return Ok(());
        }
        // propose_into fails only before it changes anything (a version at u64::MAX): the queue
        // then simply waits, and the co-signed state above must still reach the caller.
        if self.propose_into(now, false, effects).is_err() {
            return Ok(());
        }
        Ok(())
    }

    fn on_accept(
        &mut self,
        version: u64,
        sig: Signature,
        now: Expiry,
    ) -> Result<Vec<Effect>, ProtocolError> {
        let them = self.snap.me.other();
        let Some(pending) = self
            .snap
            .pending
            .as_ref()
            .filter(|p| p.state.version == version)
        else {
            return Err(ProtocolError::UnexpectedReply(version));
        };
        let digest = self.digest(&pending.state)?;
        verify(digest, &sig, self.snap.params.participant(them))
            .map_err(ProtocolError::BadSignature)?;
        let Some(pending) = self.snap.pending.take() else {
            return Err(ProtocolError::UnexpectedReply(version));
        };
        let mut sigs = [pending.sig; 2];
        sigs[them.index()] = sig;
        self.snap.latest = SignedState {
            state: pending.state,
            sigs,
        };
        self.snap.next_ids = pending.ids;
        self.snap.rejects_in_row = 0;
        let ops: Vec<Op> = pending.ops.into_iter().map(|q| q.op).collect();
        self.credit_deposits(self.snap.me, &ops);
        let mut effects = vec![Effect::Persist];
        self.after_commit(self.snap.me, ops, now, &mut effects)?;
        Ok(effects)
    }

    fn on_reject(
        &mut self,
        version: u64,
        reason: RejectReason,
        now: Expiry,
    ) -> Result<Vec<Effect>, ProtocolError> {
        if self
            .snap
            .pending
            .as_ref()
            .is_none_or(|p| p.state.version != version)
        {
            return Err(ProtocolError::UnexpectedReply(version));
        }
        let Some(pending) = self.snap.pending.take() else {
            return Err(ProtocolError::UnexpectedReply(version));
        };
        let mut ops = pending.ops;
        if let RejectReason::InvalidOp { index, error } = reason
            && index < ops.len()
        {
            let bad = ops.remove(index);
            let with_fee = matches!(bad.op, Op::AddGuarantee(_));
            self.snap.doomed.push((version, bad.op, error));
            if with_fee {
                // A virtual channel's opening fee rides in the proposal of its guarantee (ADR
                // 0026): refused, both go, so no fee is ever paid for nothing.
                let (fees, rest): (Vec<QueuedOp>, Vec<QueuedOp>) = ops
                    .into_iter()
                    .partition(|q| matches!(q.op, Op::Transfer { .. }));
                for f in fees {
                    self.snap.doomed.push((version, f.op, error));
                }
                ops = rest;
            }
        }
        if let RejectReason::BadVersion { min } = reason {
            let base = self.base_version();
            if min > base.saturating_add(MAX_VERSION_GAP) {
                self.snap.pending = Some(Proposal { ops, ..pending });
                return Err(ProtocolError::InvalidState(
                    "peer demands a version jump too large",
                ));
            }
            self.snap.version_floor = self.snap.version_floor.max(min.saturating_sub(1));
        }
        // Re-queue in front, in order: they keep their ids and go out first next time.
        for q in ops.into_iter().rev() {
            self.snap.queue.push_front(q);
        }
        self.snap.rejects_in_row += 1;
        let mut effects = Vec::new();
        if self.snap.rejects_in_row >= MAX_CONSECUTIVE_REJECTS {
            effects.push(Effect::Persist);
            effects.push(Effect::Event(Event::PeerStuck));
            return Ok(effects);
        }
        if reason == RejectReason::Conflict && self.snap.me == Side::B {
            // ADR 0003: the follower yields and waits for the leader's proposal.
            self.snap.await_leader = true;
            effects.push(Effect::Persist);
            return Ok(effects);
        }
        // Re-propose at once, even with nothing queued: the new co-signed state supersedes the
        // refused one, which is what lets its dropped operations be reported dead.
        let before = effects.len();
        self.propose_into(now, true, &mut effects)?;
        if effects.len() == before {
            effects.push(Effect::Persist);
        }
        Ok(effects)
    }
}

/// Whether an operation adds value at stake in the channel (a new lock, a guarantee, a
/// deposit): what a channel disputed on chain no longer takes.
fn opens_value(op: &Op) -> bool {
    matches!(
        op,
        Op::AddHtlc { .. } | Op::AddGuarantee(_) | Op::Deposit { .. }
    )
}

/// The sum of the deposits among `ops` (saturating: a sum that large is refused anyway).
fn batch_deposits<'a>(ops: impl Iterator<Item = &'a Op>) -> Amount {
    ops.filter_map(|op| match op {
        Op::Deposit { amount } => Some(*amount),
        _ => None,
    })
    .fold(Amount::ZERO, |a, b| a.checked_add(b).unwrap_or(Amount::MAX))
}
