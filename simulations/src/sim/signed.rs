//! The signed ledger: every channel is a pair of real `htlc::Channel` machines, every update is
//! signed and verified (EIP-712, secp256k1), and each forwarding decision is taken by
//! `htlc::forward::decide` on the `CommittedHtlc` the receiving machine hands out (rule 3 by
//! construction). Messages are delivered at once, in order, so every operation is one
//! proposal and its acceptance.
//!
//! About a hundred times slower than [`crate::sim::ledger::FastLedger`]; tests run both on the
//! same scenarios and require identical results (ADR 0020).

use std::collections::HashMap;

use alloy::primitives::{Address, U256};
use htlc::forward::{ForwardPolicy, NextHop, decide};
use htlc::ids::{Expiry, Hashlock, HtlcId};
use htlc::ops::Limits;
use htlc::sig::Keys;
use htlc::update::sign_state;
use htlc::{
    Amount, Channel, ChannelParams, ChannelState, CommittedHtlc, Effect, Event, Message,
    ProtocolError, Side, SignedState,
};
use sha2::{Digest, Sha256};

use crate::sim::error::SimError;
use crate::sim::ledger::{Ledger, Offered, Settle, refusal};
use crate::sim::world::World;

/// Two machines per channel (see the module documentation).
pub struct SignedLedger {
    /// Per channel, the machines of side A and side B.
    chans: Vec<[Channel; 2]>,
    /// Locks each receiving machine vouched for, by (channel, lock id).
    committed: HashMap<(u32, HtlcId), CommittedHtlc>,
    updates: u64,
}

/// The signing key of node `n` in a run seeded with `seed`.
fn node_keys(seed: u64, n: u32) -> Result<Keys, SimError> {
    let mut h = Sha256::new();
    h.update(b"vhub-sim-node-key");
    h.update(seed.to_be_bytes());
    h.update(n.to_be_bytes());
    let bytes: [u8; 32] = h.finalize().into();
    // A sha256 output is a valid secp256k1 scalar except with probability ~2^-128.
    Keys::from_bytes(bytes).ok_or(SimError::Internal("derived key is not a valid scalar"))
}

/// What one exchange produced.
#[derive(Default)]
struct Outcome {
    dropped: Option<htlc::OpError>,
}

impl Outcome {
    /// Done, unless the machine dropped the operation (which the simulator never asks wrongly).
    fn committed(self) -> Result<(), SimError> {
        match self.dropped {
            Some(e) => Err(SimError::Op(e)),
            None => Ok(()),
        }
    }
}

/// The two machines of a channel between `keys[0]` (side A) and `keys[1]` (side B), opened at
/// `opening` from a co-signed state; `nonce` tells apart channels between the same two.
pub(crate) fn open_pair(
    keys: [&Keys; 2],
    opening: [Amount; 2],
    limits: Limits,
    nonce: u64,
) -> Result<[Channel; 2], ProtocolError> {
    let [ka, kb] = keys;
    let params = ChannelParams {
        chain_id: 31337,
        adjudicator: Address::repeat_byte(0xAD),
        participants: [ka.address(), kb.address()],
        asset: Address::ZERO,
        challenge_duration: 3600,
        nonce: U256::from(nonce),
    };
    let state = ChannelState::opening(params.id(), opening);
    let sigs = [
        sign_state(&params, ka, &state)?,
        sign_state(&params, kb, &state)?,
    ];
    let signed = SignedState { state, sigs };
    Ok([
        Channel::from_cosigned(params.clone(), ka.clone(), limits, signed.clone())?,
        Channel::from_cosigned(params, kb.clone(), limits, signed)?,
    ])
}

impl SignedLedger {
    fn pair(&mut self, ch: u32) -> Result<&mut [Channel; 2], SimError> {
        self.chans
            .get_mut(ch as usize)
            .ok_or(SimError::Internal("channel index out of range"))
    }

    /// Proposes what side `by` of `ch` has queued and delivers every message until both are
    /// quiet; records the locks the receiving side vouches for.
    fn exchange(&mut self, ch: u32, by: Side, now: Expiry) -> Result<Outcome, SimError> {
        let mut out = Outcome::default();
        let first = self.pair(ch)?[by.index()].propose(now)?;
        let mut inbox: Vec<(Side, Vec<Effect>)> = vec![(by, first)];
        while let Some((side, effects)) = inbox.pop() {
            for e in effects {
                match e {
                    // In process the machine's own snapshot is the persisted record.
                    Effect::Persist => {}
                    Effect::Send(msg) => {
                        let to = side.other();
                        let reply = self.deliver(ch, to, msg, now)?;
                        inbox.push((to, reply));
                    }
                    Effect::Event(Event::HtlcReceived(c)) => {
                        self.committed.insert((ch, c.lock().id), c);
                    }
                    Effect::Event(Event::Committed { proposer, .. }) => {
                        // Both sides report each commit; count it once, at the proposer.
                        if proposer == side {
                            self.updates += 1;
                        }
                    }
                    Effect::Event(Event::OpDropped { error, .. }) => out.dropped = Some(error),
                    Effect::Event(Event::PeerStuck) => {
                        return Err(SimError::Internal("a machine reports its peer stuck"));
                    }
                    Effect::Event(_) => {}
                }
            }
        }
        Ok(out)
    }

    fn deliver(
        &mut self,
        ch: u32,
        to: Side,
        msg: Message,
        now: Expiry,
    ) -> Result<Vec<Effect>, SimError> {
        if let Message::Reject { .. } = msg {
            return Err(SimError::Internal(
                "a machine refused a proposal delivered in order",
            ));
        }
        Ok(self.pair(ch)?[to.index()].handle(msg, now)?)
    }
}

impl Ledger for SignedLedger {
    fn open(world: &World, seed: u64) -> Result<Self, SimError> {
        let mut keys: HashMap<u32, Keys> = HashMap::new();
        let mut chans = Vec::with_capacity(world.chans.len());
        for (i, c) in world.chans.iter().enumerate() {
            let mut pair_keys = Vec::with_capacity(2);
            for n in c.nodes {
                if let Some(k) = keys.get(&n) {
                    pair_keys.push(k.clone());
                } else {
                    let k = node_keys(seed, n)?;
                    keys.insert(n, k.clone());
                    pair_keys.push(k);
                }
            }
            let (Some(ka), Some(kb)) = (pair_keys.first(), pair_keys.get(1)) else {
                return Err(SimError::Internal("channel without two participants"));
            };
            chans.push(open_pair([ka, kb], c.opening, c.limits, i as u64)?);
        }
        let mut ledger = SignedLedger {
            chans,
            committed: HashMap::new(),
            updates: 0,
        };
        for (ch, g) in &world.guarantees {
            // B agrees to the guarantee first (rule 11), then A proposes it.
            ledger.pair(*ch)?[1].agree(htlc::Op::AddGuarantee(*g))?;
            ledger.pair(*ch)?[0].add_guarantee(*g);
            ledger.exchange(*ch, Side::A, Expiry(0))?.committed()?;
        }
        Ok(ledger)
    }

    fn offer(
        &mut self,
        ch: u32,
        by: Side,
        amount: Amount,
        hashlock: Hashlock,
        expiry: Expiry,
        now: Expiry,
    ) -> Result<Offered, SimError> {
        let id = self.pair(ch)?[by.index()].offer_htlc(amount, hashlock, expiry);
        let out = self.exchange(ch, by, now)?;
        match out.dropped {
            Some(e) => refusal(e).map(Err),
            None => Ok(Ok(id)),
        }
    }

    fn forward(
        &mut self,
        incoming: (u32, HtlcId),
        out: u32,
        by: Side,
        policy: &ForwardPolicy,
        next: NextHop,
        now: Expiry,
    ) -> Result<Offered, SimError> {
        let committed = *self.committed.get(&incoming).ok_or(SimError::Internal(
            "forwarding a lock no machine vouched for",
        ))?;
        let channel = self.pair(out)?[by.index()].outgoing(*policy);
        match decide(&committed, &next, Some(&channel), now) {
            Ok(fwd) => self.offer(out, by, fwd.amount, fwd.hashlock, fwd.expiry, now),
            Err(reason) => Ok(Err(reason)),
        }
    }

    fn settle(&mut self, ch: u32, id: HtlcId, how: Settle, now: Expiry) -> Result<(), SimError> {
        let by = self.receiver(ch, id)?;
        let m = &mut self.pair(ch)?[by.index()];
        match how {
            Settle::Fulfill(p) => m.fulfill_htlc(id, p),
            Settle::Fail(r) => m.fail_htlc(id, r),
        }
        self.committed.remove(&(ch, id));
        self.exchange(ch, by, now)?.committed()
    }

    fn state(&self, ch: u32) -> Option<&ChannelState> {
        self.chans.get(ch as usize).map(|p| &p[0].latest().state)
    }

    fn len(&self) -> usize {
        self.chans.len()
    }

    fn updates(&self) -> u64 {
        self.updates
    }
}
