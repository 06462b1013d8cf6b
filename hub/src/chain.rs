//! Chain transactions submitted idempotently.
//!
//! Every transaction starts as an [`Intent`] written durably to the `chain` column family
//! *before* it is sent, and is deleted only once its effect is visible on chain. On start, and
//! then periodically, the node re-examines every intent left behind: if its effect is already on
//! chain (the node crashed after sending), it is dropped; otherwise it is sent again (the node
//! crashed before sending, or the transaction was dropped or failed). Sending twice can never pay
//! twice: a deposit carries the holdings it expects (the adjudicator refuses it once another
//! deposit landed), a channel concludes only once, and a challenge needs a strictly higher
//! version than the one registered.
//!
//! One node sends one transaction at a time ([`Submitter`] holds a lock): the account's nonces
//! stay in order and an intent is never examined by two tasks at once.

use crate::store::{Batch, Cf, Store, StoreError};
use contracts::bindings::Adjudicator;
use contracts::{ChainClient, ChainError};
use tracing::{info, warn};

pub use htlc::node::chain::{INTENT_PREFIX, Intent};

/// Chain errors of the node.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// The node has no chain client configured.
    #[error("no chain configured")]
    NoChain,
    /// The chain refused or failed.
    #[error("chain: {0}")]
    Chain(#[from] ChainError),
    /// Storage failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The intent cannot take effect any more (for example another deposit changed the
    /// holdings it expected); it was dropped and needs the operator's attention.
    #[error("intent can no longer apply: {0}")]
    Stale(String),
}

/// What became of an intent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Its effect is on chain (sent now, or found done).
    Done(Intent),
    /// It can never take effect and was dropped.
    Dropped(Intent, String),
    /// Not due yet (a close the peer is expected to pay out); kept for later.
    Later(Intent),
}

/// Sends intents one at a time, durably (see the module documentation).
#[derive(Clone)]
pub struct Submitter {
    store: Store,
    client: ChainClient,
    lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Reverts in a row per intent key (in memory: a restart gives each intent its chances
    /// again).
    reverts: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Vec<u8>, u32>>>,
}

/// Reverts in a row after which an intent is reported and dropped: the chain keeps refusing
/// it (a token that refuses transfers or approvals, for instance), so retrying forever would
/// only burn the RPC budget. RPC failures and unmined transactions never count.
pub const MAX_REVERTS: u32 = 5;

/// Lock a mutex whose holders never panic while holding it (map updates only).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What an intent does, in one word (API and metrics).
pub fn kind(i: &Intent) -> &'static str {
    match i {
        Intent::Challenge { .. } => "challenge",
        Intent::RegisterSecret { .. } => "register_secret",
        Intent::Close { .. } => "close",
        Intent::Conclude { .. } => "conclude",
        Intent::Unlock { .. } => "unlock",
        Intent::CooperativeClose { .. } => "cooperative_close",
        Intent::Deposit { .. } => "deposit",
        Intent::Claim { .. } => "claim",
        Intent::ResolveGuarantee(_) => "resolve_guarantee",
        Intent::DisputeVirtual(_) => "dispute_virtual",
    }
}

/// When an intent may be sent at the earliest (unix seconds; the chain's clock for a
/// conclusion, the node's for a cooperative payout), if it waits.
pub fn not_before(i: &Intent) -> Option<u64> {
    match i {
        Intent::Conclude { not_before, .. } | Intent::CooperativeClose { not_before, .. } => {
            Some(*not_before).filter(|t| *t > 0)
        }
        Intent::Unlock { state, lock, .. } => state.lock(*lock).map(|l| l.expiry.0),
        Intent::ResolveGuarantee(r) => Some(r.not_before).filter(|t| *t > 0),
        _ => None,
    }
}

/// The order intents are sent in: those with a deadline first (rule 8 and rule 12).
fn priority(i: &Intent) -> u8 {
    match i {
        Intent::Challenge { .. } => 0,
        Intent::RegisterSecret { .. } => 1,
        Intent::Close { .. } | Intent::DisputeVirtual(_) => 2,
        Intent::Conclude { .. } => 3,
        Intent::Unlock { .. } | Intent::ResolveGuarantee(_) => 4,
        Intent::CooperativeClose { .. } => 5,
        Intent::Claim { .. } => 6,
        Intent::Deposit { .. } => 7,
    }
}

impl Submitter {
    /// A submitter writing intents to `store` and sending them with `client`.
    pub fn new(store: Store, client: ChainClient) -> Self {
        Submitter {
            store,
            client,
            lock: Default::default(),
            reverts: Default::default(),
        }
    }

    /// The chain client.
    pub fn client(&self) -> &ChainClient {
        &self.client
    }

    /// Persist `intent`, send it, and forget it once its effect is on chain. On a chain error
    /// the intent stays stored and is sent again by [`Submitter::resume`].
    pub async fn execute(&self, intent: Intent) -> Result<Settled, TxError> {
        let _one = self.lock.lock().await;
        let key = intent.key();
        let mut b = Batch::new();
        b.put(Cf::Chain, &key, &intent)?;
        self.store.commit(b).await?;
        crate::failpoint::point("intent_persisted");
        self.settle(&key, intent).await
    }

    /// Re-examine every stored intent at `now` (unix seconds): drop those already in effect,
    /// send the others again if they are due. Returns what became of each one that settled;
    /// those that failed again stay stored.
    pub async fn resume(&self, now: u64) -> Result<Vec<Settled>, TxError> {
        let _one = self.lock.lock().await;
        let mut settled = Vec::new();
        let mut chain_now = None;
        let mut stored = Vec::new();
        for (key, bytes) in self.store.scan_raw(Cf::Chain, INTENT_PREFIX)? {
            // One unreadable record (written by an older version) must not stop the others,
            // challenges among them: it is reported and left in place.
            match postcard::from_bytes::<Intent>(&bytes) {
                Ok(i) => stored.push((key, i)),
                Err(e) => {
                    warn!(key = %alloy::primitives::hex::encode(&key), error = %e, "unreadable chain intent skipped");
                }
            }
        }
        // What has a deadline goes first: answering a stale close, registering preimages,
        // closing to claim, then the payouts; deposits last.
        stored.sort_by_key(|(_, i)| priority(i));
        for (key, intent) in stored {
            if !self.due(&intent, &mut chain_now).await {
                // Not due (the chain's window or the registry's verdict is still open): kept.
                settled.push(Settled::Later(intent));
                continue;
            }
            if let Intent::CooperativeClose { not_before, .. } = &intent
                && *not_before > now
            {
                // Not due: the peer pays it out. Found done, it is forgotten.
                if done(&self.client, &intent).await.unwrap_or(false) {
                    self.forget(&key).await?;
                    settled.push(Settled::Done(intent));
                } else {
                    settled.push(Settled::Later(intent));
                }
                continue;
            }
            match self.settle(&key, intent).await {
                Ok(s) => settled.push(s),
                Err(e) => warn!(error = %e, "stored intent still not in effect; will retry"),
            }
        }
        Ok(settled)
    }

    /// As [`Submitter::execute`], but an intent that fails is withdrawn in the same turn (no
    /// `resume` can send it in between): the caller tells its operator it failed, so it must
    /// not land later behind their back. Returns the error and whether the transaction may
    /// still land (it was sent, or the chain could not be asked).
    pub async fn execute_or_withdraw(&self, intent: Intent) -> Result<Settled, (TxError, bool)> {
        let _one = self.lock.lock().await;
        let key = intent.key();
        let mut b = Batch::new();
        b.put(Cf::Chain, &key, &intent)
            .map_err(|e| (e.into(), false))?;
        self.store.commit(b).await.map_err(|e| (e.into(), false))?;
        match self.settle(&key, intent.clone()).await {
            Ok(s) => Ok(s),
            Err(e) => {
                let in_doubt = !matches!(done(&self.client, &intent).await, Ok(false));
                if let Err(f) = self.forget(&key).await {
                    return Err((f, true));
                }
                Err((e, in_doubt))
            }
        }
    }

    /// Whether an intent timed by the chain may be sent now: a conclusion once the chain's
    /// clock passed its window, an unlock once the chain decides it pays us (one that never
    /// will is found done by `settle`). The chain's clock is read once per pass (`chain_now`);
    /// a read that fails leaves the intent for the next pass.
    async fn due(&self, intent: &Intent, chain_now: &mut Option<u64>) -> bool {
        let client = &self.client;
        let clock = match intent {
            Intent::Conclude { .. } | Intent::Unlock { .. } | Intent::ResolveGuarantee { .. } => {
                match *chain_now {
                    Some(t) => t,
                    None => match client.latest_timestamp().await {
                        Ok(t) => *chain_now.insert(t),
                        Err(e) => {
                            warn!(error = %e, "cannot read the chain's clock; will retry");
                            return false;
                        }
                    },
                }
            }
            _ => return true,
        };
        match intent {
            Intent::Conclude { not_before, .. } => clock >= *not_before,
            Intent::ResolveGuarantee(r) => clock >= r.not_before,
            Intent::Unlock {
                state, lock, me, ..
            } => match unlock_verdict(client, state, *lock, *me, clock).await {
                // Decided either way: `settle` sends it or finds it done.
                Ok(Some(_)) => true,
                Ok(None) => false,
                Err(e) => {
                    warn!(error = %e, "cannot read a lock's verdict; will retry");
                    false
                }
            },
            _ => true,
        }
    }

    /// Every stored intent (sent or not, not yet seen in effect), in the order they are sent.
    pub fn intents(&self) -> Result<Vec<Intent>, TxError> {
        let mut out: Vec<Intent> = self
            .store
            .scan_raw(Cf::Chain, INTENT_PREFIX)?
            .into_iter()
            .filter_map(|(_, b)| postcard::from_bytes(&b).ok())
            .collect();
        out.sort_by_key(priority);
        Ok(out)
    }

    /// How many intents are stored (sent or not, not yet seen in effect).
    pub fn pending(&self) -> Result<usize, TxError> {
        Ok(self.store.scan_raw(Cf::Chain, INTENT_PREFIX)?.len())
    }

    async fn settle(&self, key: &[u8], intent: Intent) -> Result<Settled, TxError> {
        let client = &self.client;
        if !done(client, &intent).await? {
            crate::failpoint::point("before_tx");
            if let Err(e) = send(client, &intent).await
                && !done(client, &intent).await?
            {
                let reverts = if e.revert().is_some() {
                    let mut r = lock(&self.reverts);
                    let n = r.entry(key.to_vec()).or_insert(0);
                    *n += 1;
                    *n
                } else {
                    0
                };
                let reason = hopeless(&e).or_else(|| {
                    (reverts >= MAX_REVERTS).then(|| format!("reverted {reverts} times, last: {e}"))
                });
                if let Some(reason) = reason {
                    warn!(?intent, %reason, "intent can never take effect: dropped");
                    lock(&self.reverts).remove(key);
                    self.forget(key).await?;
                    return Ok(Settled::Dropped(intent, reason));
                }
                return Err(e.into());
            }
            crate::failpoint::point("after_tx");
        }
        lock(&self.reverts).remove(key);
        // A top-up's intent is deleted by the batch that queues its credit (module
        // `onchain`), never before.
        if !matches!(intent, Intent::Deposit { credit: true, .. }) {
            self.forget(key).await?;
        }
        Ok(Settled::Done(intent))
    }

    async fn forget(&self, key: &[u8]) -> Result<(), TxError> {
        let mut b = Batch::new();
        b.delete(Cf::Chain, key);
        self.store.commit(b).await?;
        Ok(())
    }
}

/// Whether the intent's effect is on chain.
async fn done(client: &ChainClient, intent: &Intent) -> Result<bool, ChainError> {
    match intent {
        Intent::Deposit {
            params,
            expected_held,
            amount,
            ..
        } => {
            let held = client.holdings(params.id()).await?;
            Ok(held >= expected_held.checked_add(*amount)?)
        }
        Intent::CooperativeClose { params, .. } => Ok(client.channel(params.id()).await?.concluded),
        Intent::Challenge { params, state } => {
            let on_chain = client.channel(params.id()).await?;
            Ok(on_chain.concluded || on_chain.version >= state.state.version)
        }
        Intent::RegisterSecret { preimage, .. } => {
            Ok(client.revealed_at(preimage.hashlock()).await?.is_some())
        }
        Intent::Close { params, .. } => {
            let on_chain = client.channel(params.id()).await?;
            Ok(on_chain.concluded || on_chain.finalizes_at != 0)
        }
        // Paid out, or superseded by a later registered state (whose own conclusion the node
        // writes when it sees that dispute).
        Intent::Conclude { params, state, .. } => {
            let on_chain = client.channel(params.id()).await?;
            Ok(on_chain.concluded || on_chain.version != state.version)
        }
        // Settled, or decided against us (nothing of ours to collect).
        Intent::Unlock {
            params,
            state,
            lock,
            me,
        } => {
            let Some(l) = state.lock(*lock) else {
                return Ok(true);
            };
            if client.lock_resolved(params.id(), l.leaf()).await? {
                return Ok(true);
            }
            let now = client.latest_timestamp().await?;
            let verdict = unlock_verdict(client, state, *lock, *me, now).await?;
            Ok(verdict == Some(false))
        }
        Intent::Claim { asset, .. } => {
            Ok(client.unclaimed(*asset, client.sender()).await?.is_zero())
        }
        Intent::DisputeVirtual(d) => {
            let on_chain = client.channel(d.virt.id()).await?;
            Ok(on_chain.concluded || on_chain.finalizes_at != 0)
        }
        Intent::ResolveGuarantee(r) => {
            let vid = r.virt.id();
            let Some(index) = r
                .ledger_state
                .guarantees
                .iter()
                .position(|g| g.virtual_channel == vid)
            else {
                return Ok(true);
            };
            client.guarantee_resolved(r.ledger.id(), index as u64).await
        }
    }
}

/// Whether unlocking `lock` of `state` pays `me` at the chain's clock `now` (`None`: not
/// decided yet; a lock the state does not hold pays nobody).
async fn unlock_verdict(
    client: &ChainClient,
    state: &htlc::ChannelState,
    lock: htlc::HtlcId,
    me: htlc::Side,
    now: u64,
) -> Result<Option<bool>, ChainError> {
    let Some(l) = state.lock(lock) else {
        return Ok(Some(false));
    };
    let revealed = client.revealed_at(l.hashlock).await?;
    Ok(htlc::node::chain::unlock_pays(l, me, revealed, now))
}

/// A revert that no retry can cure, as a reason to log.
fn hopeless(e: &ChainError) -> Option<String> {
    let cured_never = e.is::<Adjudicator::UnexpectedHoldings>()
        || e.is::<Adjudicator::AlreadyConcluded>()
        || e.is::<Adjudicator::ChallengeWindowClosed>()
        || e.is::<Adjudicator::StaleVersion>()
        || e.is::<Adjudicator::NotDisputed>()
        || e.is::<Adjudicator::ChannelNotOpen>()
        || e.is::<Adjudicator::WrongSigner>()
        || e.is::<Adjudicator::InvalidSignature>()
        || e.is::<Adjudicator::StateMismatch>()
        || e.is::<Adjudicator::TokenTransferFailed>()
        || e.is::<Adjudicator::NotAToken>()
        || e.is::<Adjudicator::InvalidLockProof>()
        || e.is::<Adjudicator::LockAlreadyResolved>()
        || e.is::<Adjudicator::GuaranteeAlreadyResolved>()
        || e.is::<Adjudicator::GuaranteeMismatch>()
        || e.is::<Adjudicator::VirtualOutcomeMismatch>()
        || e.is::<Adjudicator::NestedGuarantees>()
        || e.is::<Adjudicator::VirtualLocksMismatch>();
    cured_never.then(|| e.to_string())
}

async fn send(client: &ChainClient, intent: &Intent) -> Result<(), ChainError> {
    let r = match intent {
        Intent::Deposit {
            params,
            expected_held,
            amount,
            ..
        } => client.deposit(params, *expected_held, *amount).await,
        Intent::CooperativeClose { params, state, .. } => {
            client
                .cooperative_close(params, &state.state, &state.sigs)
                .await
        }
        Intent::Challenge { params, state } => {
            client.challenge(params, &state.state, &state.sigs).await
        }
        Intent::RegisterSecret { preimage, .. } => client.register_secret(preimage).await,
        Intent::Close { params, state } => client.close(params, &state.state, &state.sigs).await,
        Intent::Conclude { params, state, .. } => client.conclude(params, state).await,
        Intent::Unlock {
            params,
            state,
            lock,
            ..
        } => client.unlock(params, state, *lock).await,
        Intent::Claim { asset, to } => client.claim(*asset, *to).await,
        Intent::DisputeVirtual(d) => {
            client
                .dispute_virtual(&d.ledger, &d.ledger_state, &d.virt)
                .await
        }
        Intent::ResolveGuarantee(r) => match &r.withheld {
            Some(locks) => {
                let shown = contracts::convert::withheld_state(&r.virt_state, locks)?;
                client
                    .resolve_guarantee_withheld(&r.ledger, &r.ledger_state, &r.virt, &shown)
                    .await
            }
            None => {
                client
                    .resolve_guarantee(
                        &r.ledger,
                        &r.ledger_state,
                        &r.virt,
                        &r.virt_state,
                        r.sigs.as_ref(),
                    )
                    .await
            }
        },
    };
    let outcome = r?;
    info!(tx = %outcome.tx_hash, gas = outcome.gas_used, "transaction mined");
    Ok(())
}
