//! Channel parameters, the channel state both parties sign, and its invariants.

use crate::amount::{Amount, AmountOverflow};
use crate::ids::{ChannelId, Expiry, Hashlock, HtlcId, Side};
use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::sol_types::SolValue;
use serde::{Deserialize, Serialize};

/// The fixed parameters of a two-party channel, agreed when it is opened.
///
/// Everything here is bound by the channel id, so no state or signature of this channel can be
/// replayed on another chain, adjudicator, pair of participants, asset, window or nonce (rule 9).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChannelParams {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The adjudicator contract holding the deposits.
    pub adjudicator: Address,
    /// Participant A (index 0) and participant B (index 1).
    pub participants: [Address; 2],
    /// The asset: `Address::ZERO` for ETH, otherwise an ERC-20 token.
    pub asset: Address,
    /// Length of the on-chain challenge window, in seconds.
    pub challenge_duration: u64,
    /// Distinguishes channels between the same participants.
    pub nonce: U256,
}

impl ChannelParams {
    /// `keccak256(abi.encode(chainId, adjudicator, participantA, participantB, asset,
    /// challengeDuration, nonce))` (ADR 0002).
    pub fn id(&self) -> ChannelId {
        let encoded = (
            U256::from(self.chain_id),
            self.adjudicator,
            self.participants[0],
            self.participants[1],
            self.asset,
            self.challenge_duration,
            self.nonce,
        )
            .abi_encode_params();
        ChannelId(keccak256(encoded))
    }

    /// The address of one side.
    pub fn participant(&self, side: Side) -> Address {
        self.participants[side.index()]
    }

    /// Which side an address is, if it is a participant.
    pub fn side_of(&self, who: Address) -> Option<Side> {
        if who == self.participants[0] {
            Some(Side::A)
        } else if who == self.participants[1] {
            Some(Side::B)
        } else {
            None
        }
    }
}

/// A pending HTLC lock: `amount` moves from `sender` to the other side if the preimage of
/// `hashlock` is revealed before `expiry`, and back to `sender` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lock {
    /// Id of the lock in this channel, unique for the channel's life.
    pub id: HtlcId,
    /// Locked amount, taken from `sender`'s balance.
    pub amount: Amount,
    /// `sha256(preimage)`.
    pub hashlock: Hashlock,
    /// After this time the lock can no longer be fulfilled and is refunded to `sender`.
    pub expiry: Expiry,
    /// The side that offered (and pays) the lock.
    pub sender: Side,
}

impl Lock {
    /// The Merkle leaf of this lock:
    /// `keccak256(abi.encode(uint64 id, uint256 amount, bytes32 hashlock, uint64 expiry, uint8 sender))`.
    pub fn leaf(&self) -> B256 {
        let encoded = (
            self.id.0,
            U256::from(self.amount.0),
            self.hashlock.0,
            self.expiry.0,
            // abi.encode(uint8 x) is the same 32-byte word as abi.encode(uint256 x).
            U256::from(self.sender.index()),
        )
            .abi_encode_params();
        keccak256(encoded)
    }
}

/// Collateral a ledger channel locks to fund a virtual channel on top of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Guarantee {
    /// The virtual channel this collateral funds.
    pub virtual_channel: ChannelId,
    /// Amount taken from A's balance.
    pub from_a: Amount,
    /// Amount taken from B's balance.
    pub from_b: Amount,
    /// Which ledger side stands for the virtual channel's participant A (ADR 0026): `false`,
    /// this ledger's A does (and its B for the virtual channel's B); `true`, this ledger's B
    /// does. Signed, so the adjudicator splits the guarantee without guessing from addresses.
    pub crossed: bool,
    /// The virtual channel's locks settle by this chain time at the latest (its `expires_at`):
    /// on chain a lock expiring later counts as expiring here, so no lock inside the virtual
    /// channel can keep this collateral from being resolved (ADR 0026).
    pub locks_until: Expiry,
}

impl Guarantee {
    /// The ledger side that stands for the virtual channel's participant `virtual_side`.
    pub fn ledger_side_for(&self, virtual_side: Side) -> Side {
        if self.crossed {
            virtual_side.other()
        } else {
            virtual_side
        }
    }

    /// The guarantee's total: `from_a + from_b`.
    pub fn total(&self) -> Result<Amount, AmountOverflow> {
        self.from_a.checked_add(self.from_b)
    }
}

/// One version of a channel's state: what both parties sign.
///
/// Rule 1 (conservation): `balances[0] + balances[1] + Σ locks + Σ guarantees` equals the total
/// deposited, in every state. [`ChannelState::total`] computes it with checked arithmetic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChannelState {
    /// The channel this state belongs to.
    pub channel_id: ChannelId,
    /// Strictly increasing with every co-signed update; the contract keeps the highest.
    pub version: u64,
    /// Free balances of A and B.
    pub balances: [Amount; 2],
    /// Pending HTLC locks, ordered by id.
    pub locks: Vec<Lock>,
    /// Guarantees for virtual channels, ordered by virtual channel id.
    pub guarantees: Vec<Guarantee>,
    /// A final state closes the channel cooperatively; nothing follows it.
    pub is_final: bool,
}

impl ChannelState {
    /// The first state of a funded channel: version 0, no locks, no guarantees.
    pub fn opening(channel_id: ChannelId, balances: [Amount; 2]) -> Self {
        ChannelState {
            channel_id,
            version: 0,
            balances,
            locks: Vec::new(),
            guarantees: Vec::new(),
            is_final: false,
        }
    }

    /// Sum of the pending locks' amounts.
    pub fn locks_total(&self) -> Result<Amount, AmountOverflow> {
        Amount::checked_sum(self.locks.iter().map(|l| l.amount))
    }

    /// Sum of the guarantees' amounts (both sides).
    pub fn guarantees_total(&self) -> Result<Amount, AmountOverflow> {
        self.guarantees.iter().try_fold(Amount::ZERO, |acc, g| {
            acc.checked_add(g.from_a)?.checked_add(g.from_b)
        })
    }

    /// Everything the state accounts for: balances + locks + guarantees (rule 1).
    pub fn total(&self) -> Result<Amount, AmountOverflow> {
        self.balances[0]
            .checked_add(self.balances[1])?
            .checked_add(self.locks_total()?)?
            .checked_add(self.guarantees_total()?)
    }

    /// The root committing to the pending locks (ADR 0002): sorted-pair keccak Merkle tree
    /// over [`Lock::leaf`] in id order; zero when there are no locks.
    pub fn locks_root(&self) -> B256 {
        merkle_root(self.locks.iter().map(Lock::leaf).collect())
    }

    /// The Merkle proof (sibling hashes, leaf to root) of the lock at `index` in [`Self::locks`].
    pub fn lock_proof(&self, index: usize) -> Option<Vec<B256>> {
        let leaves: Vec<B256> = self.locks.iter().map(Lock::leaf).collect();
        merkle_proof(leaves, index)
    }

    /// The lock with this id, if pending.
    pub fn lock(&self, id: HtlcId) -> Option<&Lock> {
        self.locks.iter().find(|l| l.id == id)
    }
}

/// Hash two nodes in sorted order, so a proof needs no left/right flags.
pub fn hash_pair(a: B256, b: B256) -> B256 {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(lo.as_slice());
    buf[32..].copy_from_slice(hi.as_slice());
    keccak256(buf)
}

/// Root of the sorted-pair Merkle tree over `leaves` (an odd last node is carried up).
pub fn merkle_root(mut level: Vec<B256>) -> B256 {
    if level.is_empty() {
        return B256::ZERO;
    }
    while level.len() > 1 {
        level = next_level(&level);
    }
    level[0]
}

/// Proof of the leaf at `index`: the sibling at each level where one exists.
pub fn merkle_proof(mut level: Vec<B256>, mut index: usize) -> Option<Vec<B256>> {
    if index >= level.len() {
        return None;
    }
    let mut proof = Vec::new();
    while level.len() > 1 {
        let sibling = index ^ 1;
        if sibling < level.len() {
            proof.push(level[sibling]);
        }
        level = next_level(&level);
        index /= 2;
    }
    Some(proof)
}

fn next_level(level: &[B256]) -> Vec<B256> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [a, b] => hash_pair(*a, *b),
            [a] => *a,
            // chunks(2) yields slices of length 1 or 2 only.
            _ => B256::ZERO,
        })
        .collect()
}

/// Check a proof as the adjudicator does: fold the siblings into the leaf and compare the root.
pub fn verify_merkle_proof(leaf: B256, proof: &[B256], root: B256) -> bool {
    proof.iter().fold(leaf, |acc, s| hash_pair(acc, *s)) == root
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lock(id: u64) -> Lock {
        Lock {
            id: HtlcId(id),
            amount: Amount(id as u128 + 1),
            hashlock: Hashlock(B256::repeat_byte(id as u8)),
            expiry: Expiry(1000 + id),
            sender: if id.is_multiple_of(2) {
                Side::A
            } else {
                Side::B
            },
        }
    }

    proptest! {
        #![proptest_config(testkit::config(256))]

        #[test]
        fn every_lock_proves_against_the_root_and_no_other_does(n in 1usize..40, other in 1000u64..2000) {
            let state = ChannelState {
                locks: (0..n as u64).map(lock).collect(),
                ..ChannelState::opening(ChannelId(B256::ZERO), [Amount(0); 2])
            };
            let root = state.locks_root();
            for (i, l) in state.locks.iter().enumerate() {
                let proof = state.lock_proof(i).unwrap();
                prop_assert!(verify_merkle_proof(l.leaf(), &proof, root));
                prop_assert!(!verify_merkle_proof(lock(other).leaf(), &proof, root));
            }
        }
    }

    #[test]
    fn empty_and_single_roots() {
        let mut s = ChannelState::opening(ChannelId(B256::ZERO), [Amount(0); 2]);
        assert_eq!(s.locks_root(), B256::ZERO);
        s.locks.push(lock(3));
        assert_eq!(s.locks_root(), lock(3).leaf());
        assert_eq!(s.lock_proof(0), Some(vec![]));
        assert_eq!(s.lock_proof(1), None);
    }
}
