//! The chain client the hub uses: deposit, close, dispute, conclude, settle locks and
//! guarantees, read the adjudicator's view of a channel.
//!
//! Every method that sends a transaction first has the node simulate it (gas estimation), so a
//! call the adjudicator would refuse comes back as [`ChainError::Reverted`] with the decoded
//! custom error and nothing is broadcast. Channel parameters are checked against the client's
//! chain and adjudicator before anything is sent.

use crate::bindings::{Adjudicator, IERC20, SecretRegistry};
use crate::convert;
use crate::deploy::Deployment;
use crate::error::ChainError;
use crate::events::EventWatcher;
use alloy::contract::SolCallBuilder;
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, Signature, TxHash, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use alloy::transports::http::reqwest::Url;
use htlc::{Amount, ChannelId, ChannelParams, ChannelState, Hashlock, HtlcId, Preimage};
use std::time::Duration;

/// What a mined, successful transaction cost and where it landed.
#[derive(Clone, Debug)]
pub struct TxOutcome {
    /// The transaction's hash.
    pub tx_hash: TxHash,
    /// The block it was mined in.
    pub block_number: Option<u64>,
    /// Gas it used.
    pub gas_used: u64,
    /// The full receipt (logs included).
    pub receipt: TransactionReceipt,
}

/// The adjudicator's record of one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnChainChannel {
    /// What the channel still holds.
    pub holdings: Amount,
    /// Version of the disputed (or cooperatively closed) state.
    pub version: u64,
    /// 0 while open; end of the challenge window once disputed.
    pub finalizes_at: u64,
    /// Balances have been paid out.
    pub concluded: bool,
    /// EIP-712 struct hash of the disputed state (or of a concluded state with residual locks or
    /// guarantees); zero otherwise.
    pub fingerprint: B256,
}

/// Where a channel is in its on-chain life, at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No dispute: deposits accepted, off-chain updates in force.
    Open,
    /// A dispute is running: a higher version may still be registered until `finalizes_at`.
    Disputed {
        /// End of the challenge window (unix seconds).
        finalizes_at: u64,
    },
    /// The window is over; `conclude` will pay the disputed state.
    Finalized,
    /// Balances are paid; only locks and guarantees may remain to resolve.
    Concluded,
}

impl OnChainChannel {
    /// The phase at unix time `now` (use the latest block's timestamp).
    pub fn phase(&self, now: u64) -> Phase {
        if self.concluded {
            Phase::Concluded
        } else if self.finalizes_at == 0 {
            Phase::Open
        } else if now < self.finalizes_at {
            Phase::Disputed {
                finalizes_at: self.finalizes_at,
            }
        } else {
            Phase::Finalized
        }
    }
}

/// An HTTP provider signing with `signer`: EIP-1559 gas estimation, chain id from the node and
/// *simple* nonce management (the nonce is read from the node for every transaction).
///
/// alloy's default cached nonce manager hands out a nonce before the gas estimate runs; when the
/// estimate fails because the call would revert, that nonce is never used and every later
/// transaction waits forever behind the gap. A refused call must change nothing, so this
/// client pays one extra RPC per transaction instead.
pub fn http_provider(url: Url, signer: PrivateKeySigner) -> DynProvider {
    ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url)
        .erased()
}

/// A connection to one chain and one deployment of the contracts, sending as one account.
#[derive(Clone)]
pub struct ChainClient {
    provider: DynProvider,
    sender: Address,
    chain_id: u64,
    deployment: Deployment,
    /// Views read the chain this many blocks below its head (shared by clones).
    confirmations: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// How transactions are made to land (shared by clones).
    policy: std::sync::Arc<std::sync::Mutex<TxPolicy>>,
    /// The nonce and fees (max fee, tip) of the last transaction sent and not seen mined: a
    /// later send with that nonce starts above them, so it replaces it.
    last_fees: std::sync::Arc<std::sync::Mutex<Option<(u64, u128, u128)>>>,
    /// Called after each transaction is handed to the node, before its receipt (crash tests
    /// abort the process there).
    on_sent: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for ChainClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainClient")
            .field("sender", &self.sender)
            .field("chain_id", &self.chain_id)
            .field("deployment", &self.deployment)
            .field("confirmations", &self.confirmations())
            .field("policy", &self.tx_policy())
            .finish_non_exhaustive()
    }
}

/// How [`ChainClient::send`] makes a transaction land.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxPolicy {
    /// How long to wait for a receipt before sending again with higher fees.
    pub timeout: Duration,
    /// How much each new attempt raises the fees, percent (at least 10: nodes refuse smaller
    /// replacements).
    pub bump_percent: u64,
    /// The highest fee per gas ever offered, wei.
    pub max_fee_per_gas: u128,
}

impl Default for TxPolicy {
    fn default() -> Self {
        TxPolicy {
            timeout: Duration::from_secs(60),
            bump_percent: 25,
            max_fee_per_gas: 500_000_000_000,
        }
    }
}

impl TxPolicy {
    /// `fee` raised by `bump_percent` (at least by 1 wei).
    pub fn bump(&self, fee: u128) -> u128 {
        let up = fee.saturating_mul(u128::from(self.bump_percent.max(10))) / 100;
        fee.saturating_add(up.max(1))
    }
}

/// Whether the node refused a transaction for its fee: below the block's base fee, or a
/// replacement that does not outbid the transaction it replaces.
fn fee_too_low(e: &alloy::contract::Error) -> bool {
    let m = e.to_string().to_ascii_lowercase();
    m.contains("base fee") || m.contains("underpriced") || m.contains("fee too low")
}

/// Lock a mutex whose holders never panic while holding it (plain field reads and writes).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ChainClient {
    /// Connect over HTTP, signing transactions with `signer`.
    pub async fn connect_http(
        url: Url,
        signer: PrivateKeySigner,
        deployment: Deployment,
    ) -> Result<Self, ChainError> {
        let sender = signer.address();
        Self::new(http_provider(url, signer), sender, deployment).await
    }

    /// Connect over HTTP to the adjudicator at `adjudicator`, reading its secret registry's
    /// address from the contract. Fails if no adjudicator answers there.
    pub async fn connect_adjudicator(
        url: Url,
        signer: PrivateKeySigner,
        adjudicator: Address,
    ) -> Result<Self, ChainError> {
        let sender = signer.address();
        let provider = http_provider(url, signer);
        let registry = Adjudicator::new(adjudicator, provider.clone())
            .registry()
            .call()
            .await?;
        let deployment = Deployment {
            registry,
            adjudicator,
        };
        Self::new(provider, sender, deployment).await
    }

    /// Use an existing provider; it must be able to sign for `sender`.
    pub async fn new(
        provider: DynProvider,
        sender: Address,
        deployment: Deployment,
    ) -> Result<Self, ChainError> {
        let chain_id = provider.get_chain_id().await?;
        Ok(ChainClient {
            provider,
            sender,
            chain_id,
            deployment,
            confirmations: Default::default(),
            policy: Default::default(),
            last_fees: Default::default(),
            on_sent: None,
        })
    }

    /// Read the views (channels, deposits, the registry, resolved locks) `n` blocks below the
    /// chain's head, so that what the node believes was confirmed `n` times: a deposit or a
    /// dispute in a block a reorganisation of up to `n` blocks removes is never seen. Sending
    /// transactions and the chain's clock are not affected. Applies to every clone.
    pub fn set_confirmations(&self, n: u64) {
        self.confirmations
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many blocks below the head the views read (see [`ChainClient::set_confirmations`]).
    pub fn confirmations(&self) -> u64 {
        self.confirmations
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The block the views read: the head, or `confirmations` below it.
    async fn view_block(&self) -> Result<alloy::eips::BlockId, ChainError> {
        let n = self.confirmations();
        if n == 0 {
            return Ok(alloy::eips::BlockId::latest());
        }
        let head = self.provider.get_block_number().await?;
        Ok(alloy::eips::BlockId::number(head.saturating_sub(n)))
    }

    /// Set how often receipts (and similar) are polled for; the default is 250 ms for a local
    /// node and 7 s for a remote one.
    pub fn set_poll_interval(&self, interval: Duration) {
        self.provider.client().set_poll_interval(interval);
    }

    /// The account transactions are sent from.
    pub fn sender(&self) -> Address {
        self.sender
    }

    /// The chain id of the node.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The contracts this client talks to.
    pub fn deployment(&self) -> Deployment {
        self.deployment
    }

    /// The underlying provider.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// Binding of the adjudicator, for calls this client does not wrap.
    pub fn adjudicator(&self) -> Adjudicator::AdjudicatorInstance<DynProvider> {
        Adjudicator::new(self.deployment.adjudicator, self.provider.clone())
    }

    /// Binding of the secret registry.
    pub fn registry(&self) -> SecretRegistry::SecretRegistryInstance<DynProvider> {
        SecretRegistry::new(self.deployment.registry, self.provider.clone())
    }

    /// Parameters for channels of this client's chain and adjudicator, with a fresh `nonce`.
    pub fn channel_params(
        &self,
        participants: [Address; 2],
        asset: Address,
        challenge_duration: u64,
        nonce: U256,
    ) -> ChannelParams {
        ChannelParams {
            chain_id: self.chain_id,
            adjudicator: self.deployment.adjudicator,
            participants,
            asset,
            challenge_duration,
            nonce,
        }
    }

    /// Send any call built from the bindings and wait for its receipt, so that it lands: the
    /// call is simulated first (a revert comes back decoded, nothing is broadcast); if no
    /// receipt comes within the policy's timeout, the same transaction is sent again with the
    /// same nonce and fees raised by `bump_percent` (replacing the first), up to the fee cap.
    /// At the cap it gives up with [`ChainError::Stuck`]; the next send of this client reuses
    /// the nonce above the stuck fees, so a retry replaces the stuck transaction.
    pub async fn send<P: Provider + Clone, C: SolCall + Clone>(
        &self,
        call: SolCallBuilder<P, C>,
    ) -> Result<TxOutcome, ChainError> {
        let policy = self.tx_policy();
        let gas = gas_limit(call.estimate_gas().await?);
        // The count of mined transactions (not the pool's): a stuck one of ours is replaced.
        let nonce = self
            .provider
            .get_transaction_count(self.sender)
            .latest()
            .await?;
        let fees = self.provider.estimate_eip1559_fees().await?;
        let (mut max_fee, mut tip) = (fees.max_fee_per_gas, fees.max_priority_fee_per_gas);
        if let Some((n, f, t)) = *lock(&self.last_fees)
            && n == nonce
        {
            max_fee = max_fee.max(policy.bump(f));
            tip = tip.max(policy.bump(t));
        }
        let poll = self.provider.client().poll_interval();
        let mut sent: Vec<TxHash> = Vec::new();
        loop {
            max_fee = max_fee.min(policy.max_fee_per_gas);
            tip = tip.min(max_fee);
            *lock(&self.last_fees) = Some((nonce, max_fee, tip));
            let attempt = call
                .clone()
                .nonce(nonce)
                .gas(gas)
                .max_fee_per_gas(max_fee)
                .max_priority_fee_per_gas(tip)
                .send()
                .await;
            let mut wait = policy.timeout;
            match attempt {
                Ok(pending) => {
                    sent.push(*pending.tx_hash());
                    if let Some(f) = &self.on_sent {
                        f();
                    }
                }
                // Refused for its fee (below the base fee, or too small a replacement): raise
                // it at once.
                Err(e) if fee_too_low(&e) => {
                    tracing::warn!(error = %e, nonce, max_fee, "fee refused");
                    wait = Duration::ZERO;
                }
                // An earlier attempt may have been mined meanwhile (nonce too low): the
                // receipts below tell.
                Err(e) if !sent.is_empty() => {
                    tracing::warn!(error = %e, nonce, "replacement not accepted");
                }
                Err(e) => return Err(e.into()),
            }
            let deadline = std::time::Instant::now() + wait;
            loop {
                // The nonce used is checked before the receipts, so that a transaction of ours
                // mined between the two reads is found by the second.
                let used = self
                    .provider
                    .get_transaction_count(self.sender)
                    .latest()
                    .await?
                    > nonce;
                let mut found = self.first_receipt(&sent).await?;
                if used && found.is_none() {
                    // A node may count a mined transaction a moment before it serves its
                    // receipt: look again before deciding it was not ours.
                    for _ in 0..20 {
                        tokio::time::sleep(poll).await;
                        found = self.first_receipt(&sent).await?;
                        if found.is_some() {
                            break;
                        }
                    }
                }
                if let Some(receipt) = found {
                    *lock(&self.last_fees) = None;
                    if !receipt.status() {
                        return Err(ChainError::Failed(receipt.transaction_hash));
                    }
                    return Ok(TxOutcome {
                        tx_hash: receipt.transaction_hash,
                        block_number: receipt.block_number,
                        gas_used: receipt.gas_used,
                        receipt,
                    });
                }
                if used {
                    // The nonce was used by a transaction that is none of ours.
                    *lock(&self.last_fees) = None;
                    return Err(ChainError::Replaced { nonce });
                }
                if std::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(poll).await;
            }
            if max_fee >= policy.max_fee_per_gas {
                return Err(ChainError::Stuck { nonce, max_fee });
            }
            tracing::warn!(nonce, max_fee, "no receipt in time: raising the fee");
            max_fee = policy.bump(max_fee);
            tip = policy.bump(tip);
        }
    }

    /// The receipt of the first of `hashes` that is mined, if any.
    async fn first_receipt(
        &self,
        hashes: &[TxHash],
    ) -> Result<Option<TransactionReceipt>, ChainError> {
        for h in hashes {
            if let Some(r) = self.provider.get_transaction_receipt(*h).await? {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Call `f` each time a transaction has been handed to the node, before its receipt (for
    /// crash tests).
    pub fn with_on_sent(mut self, f: std::sync::Arc<dyn Fn() + Send + Sync>) -> Self {
        self.on_sent = Some(f);
        self
    }

    /// The transaction sent and not yet seen mined, if any: its nonce, the highest fee per gas
    /// and tip offered so far.
    pub fn in_flight(&self) -> Option<(u64, u128, u128)> {
        *lock(&self.last_fees)
    }

    /// How transactions are made to land (see [`ChainClient::send`]).
    pub fn tx_policy(&self) -> TxPolicy {
        *lock(&self.policy)
    }

    /// Set how transactions are made to land; applies to every clone.
    pub fn set_tx_policy(&self, policy: TxPolicy) {
        *lock(&self.policy) = policy;
    }

    fn onchain_params(&self, params: &ChannelParams) -> Result<Adjudicator::Params, ChainError> {
        if params.chain_id != self.chain_id {
            return Err(ChainError::WrongChain {
                params: params.chain_id,
                node: self.chain_id,
            });
        }
        if params.adjudicator != self.deployment.adjudicator {
            return Err(ChainError::WrongAdjudicator {
                params: params.adjudicator,
                client: self.deployment.adjudicator,
            });
        }
        Ok(convert::params(params))
    }

    fn onchain_state(
        &self,
        params: &ChannelParams,
        state: &ChannelState,
    ) -> Result<(Adjudicator::Params, Adjudicator::State), ChainError> {
        let p = self.onchain_params(params)?;
        let id = params.id();
        if state.channel_id != id {
            return Err(ChainError::WrongChannel {
                state: state.channel_id,
                params: id,
            });
        }
        Ok((p, convert::state(state)?))
    }

    // --- deposits ------------------------------------------------------------------------------

    /// Deposit `amount` into the channel, provided it holds exactly `expected_held` now (the
    /// ordering guard: A deposits with 0 expected, B with A's deposit). For an ERC-20 channel
    /// the adjudicator is approved for `amount` first if its allowance is short.
    pub async fn deposit(
        &self,
        params: &ChannelParams,
        expected_held: Amount,
        amount: Amount,
    ) -> Result<TxOutcome, ChainError> {
        let p = self.onchain_params(params)?;
        let expected = U256::from(expected_held.0);
        let value = U256::from(amount.0);
        let adjudicator = self.adjudicator();
        if params.asset == Address::ZERO {
            self.send(adjudicator.deposit(p, expected, value).value(value))
                .await
        } else {
            self.ensure_allowance(params.asset, value).await?;
            self.send(adjudicator.deposit(p, expected, value)).await
        }
    }

    /// Approve the adjudicator for `amount` of `token` unless the allowance already covers it.
    pub async fn ensure_allowance(
        &self,
        token: Address,
        amount: U256,
    ) -> Result<Option<TxOutcome>, ChainError> {
        let erc20 = IERC20::new(token, self.provider.clone());
        let allowance = erc20
            .allowance(self.sender, self.deployment.adjudicator)
            .call()
            .await?;
        if allowance >= amount {
            return Ok(None);
        }
        self.send(erc20.approve(self.deployment.adjudicator, amount))
            .await
            .map(Some)
    }

    /// Balance of `owner` in `token`, or in ETH if `token` is zero.
    pub async fn balance(&self, token: Address, owner: Address) -> Result<U256, ChainError> {
        if token == Address::ZERO {
            Ok(self.provider.get_balance(owner).await?)
        } else {
            Ok(IERC20::new(token, self.provider.clone())
                .balanceOf(owner)
                .call()
                .await?)
        }
    }

    // --- closing -------------------------------------------------------------------------------

    /// Close at once with a final state both participants signed (`sigs` = [A's, B's]).
    pub async fn cooperative_close(
        &self,
        params: &ChannelParams,
        state: &ChannelState,
        sigs: &[Signature; 2],
    ) -> Result<TxOutcome, ChainError> {
        let (p, s) = self.onchain_state(params, state)?;
        let [a, b] = sigs.each_ref().map(convert::sig);
        self.send(self.adjudicator().cooperativeClose(p, s, a, b))
            .await
    }

    /// Start a dispute with a co-signed state; the challenge window opens.
    pub async fn close(
        &self,
        params: &ChannelParams,
        state: &ChannelState,
        sigs: &[Signature; 2],
    ) -> Result<TxOutcome, ChainError> {
        let (p, s) = self.onchain_state(params, state)?;
        let [a, b] = sigs.each_ref().map(convert::sig);
        self.send(self.adjudicator().close(p, s, a, b)).await
    }

    /// Answer a dispute with a co-signed state of a higher version; the window restarts.
    pub async fn challenge(
        &self,
        params: &ChannelParams,
        state: &ChannelState,
        sigs: &[Signature; 2],
    ) -> Result<TxOutcome, ChainError> {
        let (p, s) = self.onchain_state(params, state)?;
        let [a, b] = sigs.each_ref().map(convert::sig);
        self.send(self.adjudicator().challenge(p, s, a, b)).await
    }

    /// After the window, pay the disputed state's balances (`state` must be the disputed one).
    pub async fn conclude(
        &self,
        params: &ChannelParams,
        state: &ChannelState,
    ) -> Result<TxOutcome, ChainError> {
        let (p, s) = self.onchain_state(params, state)?;
        self.send(self.adjudicator().conclude(p, s)).await
    }

    // --- locks and guarantees ------------------------------------------------------------------

    /// Publish a preimage in the secret registry (a no-op transaction if already known).
    pub async fn register_secret(&self, preimage: &Preimage) -> Result<TxOutcome, ChainError> {
        self.send(self.registry().registerSecret(B256::from(preimage.0)))
            .await
    }

    /// When the preimage of `hashlock` was registered (unix seconds), if it was.
    pub async fn revealed_at(&self, hashlock: Hashlock) -> Result<Option<u64>, ChainError> {
        let at = self.view_block().await?;
        let t = self
            .registry()
            .revealedAt(hashlock.0)
            .call()
            .block(at)
            .await?;
        if t.is_zero() {
            Ok(None)
        } else {
            u64::try_from(t)
                .map(Some)
                .map_err(|_| ChainError::AmountTooLarge(t))
        }
    }

    /// Settle the pending lock `lock_id` of the concluded `state`, with its Merkle proof.
    pub async fn unlock(
        &self,
        params: &ChannelParams,
        state: &ChannelState,
        lock_id: HtlcId,
    ) -> Result<TxOutcome, ChainError> {
        let (p, s) = self.onchain_state(params, state)?;
        let index = state
            .locks
            .iter()
            .position(|l| l.id == lock_id)
            .ok_or(ChainError::NoSuchLock(lock_id))?;
        let lock = state
            .locks
            .get(index)
            .ok_or(ChainError::NoSuchLock(lock_id))?;
        let proof = state
            .lock_proof(index)
            .ok_or(ChainError::NoSuchLock(lock_id))?;
        self.send(self.adjudicator().unlock(p, s, convert::lock(lock), proof))
            .await
    }

    /// Split the guarantee the concluded `ledger_state` holds for the virtual channel
    /// `virt_params`, by the virtual channel's final state (ADR 0011): the state of its finalized
    /// on-chain dispute (`virt_sigs` may be `None`), or else a final state signed by both its
    /// participants (`virt_sigs` = [A's, B's]). The first resolution records that state; every
    /// other ledger guaranteeing the same virtual channel must then use it. All the virtual
    /// state's locks must be settleable (revealed in time, or expired).
    pub async fn resolve_guarantee(
        &self,
        ledger_params: &ChannelParams,
        ledger_state: &ChannelState,
        virt_params: &ChannelParams,
        virt_state: &ChannelState,
        virt_sigs: Option<&[Signature; 2]>,
    ) -> Result<TxOutcome, ChainError> {
        let (lp, ls) = self.onchain_state(ledger_params, ledger_state)?;
        let (vp, vs) = self.onchain_state(virt_params, virt_state)?;
        let index = guarantee_index(ledger_state, virt_params.id())?;
        let sigs = virt_sigs
            .map(|s| s.iter().map(convert::sig).collect())
            .unwrap_or_default();
        let locks = virt_state.locks.iter().map(convert::lock).collect();
        self.send(self.adjudicator().resolveGuarantee(
            lp,
            ls,
            U256::from(index),
            vp,
            vs,
            sigs,
            locks,
        ))
        .await
    }

    /// Split the guarantee the concluded `ledger_state` holds for the virtual channel
    /// `virt_params` by its finalized dispute state `virt_state`, as the `Disputed` event showed
    /// it (its locks' root and total, not the locks), when nobody supplied its locks: from the
    /// guarantee's `locks_until` plus the adjudicator's `WITHHELD_GRACE`, the state's balances
    /// stand and its locked total goes to the ledger side that is not one of its parties
    /// (ADR 0026).
    pub async fn resolve_guarantee_withheld(
        &self,
        ledger_params: &ChannelParams,
        ledger_state: &ChannelState,
        virt_params: &ChannelParams,
        virt_state: &Adjudicator::State,
    ) -> Result<TxOutcome, ChainError> {
        let (lp, ls) = self.onchain_state(ledger_params, ledger_state)?;
        let vp = self.onchain_params(virt_params)?;
        let index = guarantee_index(ledger_state, virt_params.id())?;
        self.send(self.adjudicator().resolveGuaranteeWithheld(
            lp,
            ls,
            U256::from(index),
            vp,
            virt_state.clone(),
        ))
        .await
    }

    /// Start the dispute of a virtual channel from its guarantee in `ledger_state`, the ledger
    /// state registered on chain (disputed or concluded): the virtual channel's opening as the
    /// guarantee funded it, which any co-signed state of it with a higher version replaces by
    /// [`Self::challenge`] within its window (ADR 0026).
    pub async fn dispute_virtual(
        &self,
        ledger_params: &ChannelParams,
        ledger_state: &ChannelState,
        virt_params: &ChannelParams,
    ) -> Result<TxOutcome, ChainError> {
        let (lp, ls) = self.onchain_state(ledger_params, ledger_state)?;
        let vp = self.onchain_params(virt_params)?;
        let index = guarantee_index(ledger_state, virt_params.id())?;
        self.send(
            self.adjudicator()
                .disputeVirtual(lp, ls, U256::from(index), vp),
        )
        .await
    }

    /// Withdraw payouts the adjudicator could not deliver to this account, sending them to `to`.
    pub async fn claim(&self, asset: Address, to: Address) -> Result<TxOutcome, ChainError> {
        self.send(self.adjudicator().claim(asset, to)).await
    }

    // --- views ---------------------------------------------------------------------------------

    /// The adjudicator's record of a channel.
    pub async fn channel(&self, id: ChannelId) -> Result<OnChainChannel, ChainError> {
        let adjudicator = self.adjudicator();
        let at = self.view_block().await?;
        let c = adjudicator.channels(id.0).call().block(at).await?;
        let fingerprint = adjudicator.fingerprints(id.0).call().block(at).await?;
        Ok(OnChainChannel {
            holdings: Amount(c.holdings),
            version: c.version,
            finalizes_at: c.finalizesAt.to::<u64>(),
            concluded: c.concluded,
            fingerprint,
        })
    }

    /// What the channel holds.
    pub async fn holdings(&self, id: ChannelId) -> Result<Amount, ChainError> {
        Ok(self.channel(id).await?.holdings)
    }

    /// What each participant of `params` deposited into the channel in total, from the
    /// adjudicator's `Deposited` events (rule 11: a top-up is credited only to its depositor).
    /// Deposits by anyone else are not counted for either side.
    pub async fn deposits(&self, params: &ChannelParams) -> Result<[Amount; 2], ChainError> {
        use alloy::sol_types::SolEvent;
        let id = params.id();
        let to = match self.view_block().await? {
            alloy::eips::BlockId::Number(n) => n,
            _ => alloy::eips::BlockNumberOrTag::Latest,
        };
        let filter = alloy::rpc::types::Filter::new()
            .address(self.deployment.adjudicator)
            .event_signature(Adjudicator::Deposited::SIGNATURE_HASH)
            .topic1(id.0)
            .from_block(0)
            .to_block(to);
        let mut out = [Amount::ZERO; 2];
        for log in self.provider.get_logs(&filter).await? {
            let d = Adjudicator::Deposited::decode_log(&log.inner)?.data;
            if let Some(side) = params.side_of(d.depositor) {
                let amount =
                    u128::try_from(d.amount).map_err(|_| ChainError::AmountTooLarge(d.amount))?;
                let slot = &mut out[side.index()];
                *slot = slot.checked_add(Amount(amount))?;
            }
        }
        Ok(out)
    }

    /// Payouts owed to `owner` in `asset` that could not be delivered (see `claim`).
    pub async fn unclaimed(&self, asset: Address, owner: Address) -> Result<U256, ChainError> {
        let at = self.view_block().await?;
        Ok(self
            .adjudicator()
            .unclaimed(asset, owner)
            .call()
            .block(at)
            .await?)
    }

    /// Whether guarantee `index` of channel `id`'s concluded state was paid out.
    pub async fn guarantee_resolved(&self, id: ChannelId, index: u64) -> Result<bool, ChainError> {
        let at = self.view_block().await?;
        Ok(self
            .adjudicator()
            .guaranteeResolved(id.0, U256::from(index))
            .call()
            .block(at)
            .await?)
    }

    /// Whether the lock with Merkle leaf `leaf` of channel `id` was settled by `unlock`.
    pub async fn lock_resolved(&self, id: ChannelId, leaf: B256) -> Result<bool, ChainError> {
        let at = self.view_block().await?;
        Ok(self
            .adjudicator()
            .lockResolved(id.0, leaf)
            .call()
            .block(at)
            .await?)
    }

    /// The channel id as the contract computes it (must equal [`ChannelParams::id`]).
    pub async fn onchain_channel_id(&self, params: &ChannelParams) -> Result<B256, ChainError> {
        let p = self.onchain_params(params)?;
        Ok(self.adjudicator().channelId(p).call().await?)
    }

    /// The EIP-712 digest of a state as the contract computes it (must equal
    /// `htlc::eip712::DomainSeparator::digest`).
    pub async fn onchain_state_digest(&self, state: &ChannelState) -> Result<B256, ChainError> {
        let s = convert::state(state)?;
        Ok(self.adjudicator().stateDigest(s).call().await?)
    }

    /// The timestamp of the latest block, the contract's notion of "now".
    pub async fn latest_timestamp(&self) -> Result<u64, ChainError> {
        let block = self
            .provider
            .get_block_by_number(alloy::rpc::types::BlockNumberOrTag::Latest)
            .await?;
        Ok(block.map(|b| b.header.timestamp).unwrap_or_default())
    }

    /// A watcher of the adjudicator's and registry's events from `from_block` on.
    pub fn events(&self, from_block: u64) -> EventWatcher {
        EventWatcher::new(self.provider.clone(), self.deployment, from_block)
    }
}

/// The gas limit sent for a call estimated at `estimate`: a quarter more, and at least 30,000
/// more. The estimate is exact for the chain as it stood; a transaction mined after another
/// that changed the state it reads (a dispute registered meanwhile, a slot first written) can
/// need more, and one sent with the bare estimate then fails out of gas although it would
/// have succeeded. Only the gas used is paid.
pub fn gas_limit(estimate: u64) -> u64 {
    estimate.saturating_add((estimate / 4).max(30_000))
}

/// The index of `vid`'s guarantee in `ledger_state` (what the adjudicator's guarantee calls
/// take).
fn guarantee_index(ledger_state: &ChannelState, vid: htlc::ChannelId) -> Result<usize, ChainError> {
    ledger_state
        .guarantees
        .iter()
        .position(|g| g.virtual_channel == vid)
        .ok_or(ChainError::NoSuchGuarantee(vid))
}

#[cfg(test)]
mod gas_tests {
    use super::gas_limit;

    #[test]
    fn the_limit_leaves_room_above_the_estimate() {
        assert_eq!(gas_limit(100_000), 130_000);
        assert_eq!(gas_limit(200_000), 250_000);
        assert_eq!(gas_limit(21_000), 51_000);
        assert_eq!(gas_limit(u64::MAX), u64::MAX);
    }
}
