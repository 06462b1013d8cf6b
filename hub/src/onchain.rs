//! The node's side of the chain: funding, top-ups, cooperative payout, and the watcher that
//! follows the adjudicator's events (and answers stale disputes).
//!
//! Every decision to send a transaction is an [`Intent`] stored durably before it is sent (module
//! [`crate::chain`]); where the decision follows from a channel change (a co-signed final state to
//! pay out, collateral to add once a peer's deposit is seen), the intent is written in the *same*
//! batch as the channel record, so a crash can neither lose the decision nor act on it twice.
//!
//! A top-up has two steps: the deposit on chain, then an `Op::Deposit` co-signed with the peer
//! that credits it. The intent of a top-up is deleted only in the batch that queues the credit,
//! so a crash between the two steps credits the deposit after the restart, and the credit is
//! never queued twice (the credited total is checked under one lock).
//!
//! The watcher reads the adjudicator's events from a cursor kept in the store (the first block
//! not yet handled), so events that happened while the node was down are handled when it comes
//! back: deposits mark channels funded, payouts mark them concluded, and a dispute registered
//! with a version older than our latest co-signed state is answered by a challenge.

use crate::chain::{Intent, Settled, TxError};
use crate::error::{NodeError, Stage};
use crate::events::NodeEvent;
use crate::node::{ChannelRecord, Node, awaiting_acceptance};
use crate::store::{Batch, Cf};
use contracts::bindings::Adjudicator::AdjudicatorEvents;
use contracts::{ChainEvent, EventKind, EventWatcher};
use htlc::{Amount, ChannelId};
use tracing::{Instrument, info, info_span, warn};

/// Key of the watcher's cursor in the `chain` column family.
const CURSOR_KEY: &[u8] = b"cursor";

impl Node {
    fn submitter(&self) -> Result<&crate::chain::Submitter, NodeError> {
        self.inner
            .submitter
            .as_ref()
            .ok_or(NodeError::Tx(TxError::NoChain))
    }

    fn record(
        &self,
        id: ChannelId,
    ) -> Result<std::sync::Arc<tokio::sync::Mutex<ChannelRecord>>, NodeError> {
        self.inner.channel(id).ok_or(NodeError::UnknownChannel(id))
    }

    /// Deposit our opening balance of a channel we opened, on chain, and tell the peer to look.
    /// Returns once the deposit is mined and the channel marked funded. Idempotent: calling it
    /// again (or after a crash) never deposits twice.
    pub async fn fund(&self, id: ChannelId) -> Result<(), NodeError> {
        let submitter = self.submitter()?;
        let rec = self.record(id)?;
        let (params, amount, peer) = {
            let r = rec.lock().await;
            if awaiting_acceptance(&r) {
                return Err(NodeError::NotReady {
                    channel: id,
                    stage: Stage::AwaitingCountersignature,
                });
            }
            let me = r.snapshot.me().index();
            (
                r.snapshot.params().clone(),
                r.snapshot.latest().state.balances[me],
                r.peer,
            )
        };
        // Only the opener (A) has an opening balance; it deposits first, expecting 0.
        if !amount.is_zero() && r_side_is_a(&params, self.address()) {
            let intent = Intent::Deposit {
                params,
                expected_held: Amount::ZERO,
                amount,
                credit: false,
            };
            match submitter.execute_or_withdraw(intent).await {
                Ok(Settled::Dropped(_, reason)) => {
                    // Someone else's deposit landed first: check whether ours is there anyway.
                    warn!(channel = %id, %reason, "opening deposit not sent");
                }
                Ok(_) => {}
                // The operator is told the deposit failed: it is withdrawn, so it is not sent
                // again behind their back (issue 18). Calling `fund` again tries again.
                Err((e, in_doubt)) => {
                    warn!(channel = %id, error = %e, in_doubt, "opening deposit failed; withdrawn");
                    if in_doubt {
                        return Err(NodeError::Tx(TxError::Stale(format!(
                            "{e}; the transaction may still land: `hub channels` shows it funded if it does"
                        ))));
                    }
                    return Err(e.into());
                }
            }
        }
        self.check_funding(id).await?;
        self.commit_and_send(
            peer,
            Batch::new(),
            vec![crate::wire::Body::Funded { channel_id: id }],
        )
        .await?;
        let funded = rec.lock().await.funded;
        if funded {
            Ok(())
        } else {
            Err(NodeError::NotReady {
                channel: id,
                stage: Stage::DepositsMissing,
            })
        }
    }

    /// Read what the adjudicator holds for a channel, and what each participant deposited,
    /// and mark it funded once that covers the opening state. With a configured collateral and
    /// the peer's deposit seen, store the intent to add our collateral in the same batch.
    pub(crate) async fn check_funding(&self, id: ChannelId) -> Result<(), NodeError> {
        let Some(submitter) = &self.inner.submitter else {
            return Ok(());
        };
        let Some(params) = self.channel_params(id).await else {
            return Ok(());
        };
        let client = submitter.client();
        let held = client.holdings(id).await.map_err(TxError::from)?;
        let deposited = client.deposits(&params).await.map_err(TxError::from)?;
        self.observe_chain(id, held, deposited).await
    }

    /// Record what the chain shows for a channel: its holdings and each participant's
    /// deposits (read after a `Deposited` event, or when the peer says it funded).
    async fn observe_chain(
        &self,
        id: ChannelId,
        held: Amount,
        deposited: [Amount; 2],
    ) -> Result<(), NodeError> {
        let Some(rec) = self.inner.channel(id) else {
            return Ok(());
        };
        let mut r = rec.lock().await;
        let s = &r.snapshot;
        let news = held > s.holdings()
            || deposited[0] > s.deposited()[0]
            || deposited[1] > s.deposited()[1];
        if r.concluded || awaiting_acceptance(&r) || !news && r.funded {
            return Ok(());
        }
        let o = &self.inner.opts;
        let decided = htlc::node::chain::funding(
            &r.snapshot,
            r.funded,
            held,
            deposited,
            htlc::node::chain::CollateralPolicy {
                collateral: o.collateral,
                min_peer_deposit: o.min_peer_deposit,
            },
        );
        let mut machine = htlc::Channel::restore(r.snapshot.clone(), self.inner.keys.clone())?;
        machine.observe_holdings(held);
        for side in [htlc::Side::A, htlc::Side::B] {
            machine.observe_deposits(side, deposited[side.index()]);
        }
        let mut new = r.clone();
        new.snapshot = machine.snapshot().clone();
        let newly_funded = decided.newly_funded;
        new.funded |= newly_funded;
        let mut batch = Batch::new();
        batch.put(Cf::Channels, id.0.as_slice(), &new)?;
        let collateral = decided.add_collateral.is_some();
        if collateral {
            let intent = Intent::Deposit {
                params: new.snapshot.params().clone(),
                expected_held: held,
                amount: decided.add_collateral.unwrap_or(o.collateral),
                credit: true,
            };
            batch.put(Cf::Chain, &intent.key(), &intent)?;
        }
        self.inner.store.commit(batch).await?;
        *r = new;
        if newly_funded {
            self.inner.mark_funded(r.peer);
            info!(channel = %id, holdings = %held, "channel funded");
            self.inner.emit(NodeEvent::Funded { channel_id: id });
        }
        if collateral {
            self.inner.chain_kick.notify_one();
        }
        Ok(())
    }

    /// Add `amount` of our own to a funded channel: deposit it on chain (idempotently), then have
    /// the top-up co-signed. Returns once the deposit is mined and its credit proposed.
    pub async fn top_up(&self, id: ChannelId, amount: Amount) -> Result<(), NodeError> {
        if amount.is_zero() {
            return Err(NodeError::ZeroAmount);
        }
        let submitter = self.submitter()?;
        let rec = self.record(id)?;
        let params = {
            let r = rec.lock().await;
            if !r.funded || r.concluded || r.snapshot.latest().state.is_final {
                return Err(NodeError::NotReady {
                    channel: id,
                    stage: Stage::NotFunded,
                });
            }
            r.snapshot.params().clone()
        };
        let held = submitter
            .client()
            .holdings(id)
            .await
            .map_err(TxError::from)?;
        let intent = Intent::Deposit {
            params,
            expected_held: held,
            amount,
            credit: true,
        };
        match submitter.execute(intent).await? {
            Settled::Done(intent) => self.credit(&intent).await,
            Settled::Dropped(_, reason) => Err(NodeError::Tx(TxError::Stale(reason))),
            // `execute` sends at once; only a close the peer is to pay out waits.
            Settled::Later(_) => Ok(()),
        }
    }

    /// A deposit intent of ours is mined: delete it and claim the credit of every deposit of
    /// ours the channel does not credit yet (from the chain's `Deposited` events).
    async fn credit(&self, intent: &Intent) -> Result<(), NodeError> {
        let Intent::Deposit { params, .. } = intent else {
            return Ok(());
        };
        let id = params.id();
        self.check_funding(id).await?;
        let mut batch = Batch::new();
        batch.delete(Cf::Chain, &intent.key());
        if !self.claim_deposits(id, batch).await? {
            let mut batch = Batch::new();
            batch.delete(Cf::Chain, &intent.key());
            self.inner.store.commit(batch).await?;
        }
        Ok(())
    }

    /// Propose the credit of whatever we deposited into `id` that no co-signed state, proposal
    /// or queued operation credits yet, with the writes of `batch` in the same commit. Returns
    /// whether a credit was queued (`batch` is committed only then). The peer co-signs it once
    /// it sees our deposit on chain; if it refuses (it has not seen it yet), the chain task
    /// asks again later: collateral is never left uncredited (issue 12, attack 2).
    async fn claim_deposits(&self, id: ChannelId, batch: Batch) -> Result<bool, NodeError> {
        // One claim at a time, so the check below and the queueing are atomic.
        let _one = self.inner.credit_lock.lock().await;
        let Some(rec) = self.inner.channel(id) else {
            return Ok(false);
        };
        let amount = {
            let r = rec.lock().await;
            let s = &r.snapshot;
            if r.concluded || s.latest().state.is_final || s.frozen() || !r.funded {
                return Ok(false);
            }
            s.uncredited_own()
        };
        if amount.is_zero() {
            return Ok(false);
        }
        self.with_channel_in(id, |m| m.deposit(amount), batch)
            .instrument(info_span!("channel", %id))
            .await?;
        info!(channel = %id, %amount, "top-up credit proposed");
        self.inner.emit(NodeEvent::ToppedUp {
            channel_id: id,
            amount,
        });
        Ok(true)
    }

    /// Ask again for the credit of our deposits that the peer has not co-signed yet (it may
    /// have refused while it had not seen them on chain).
    pub(crate) async fn reclaim_deposits(&self) {
        for id in self.channel_ids() {
            let Some(rec) = self.inner.channel(id) else {
                continue;
            };
            let owed = {
                let r = rec.lock().await;
                !r.snapshot.uncredited_own().is_zero() && r.snapshot.pending().is_none()
            };
            if owed && let Err(e) = self.claim_deposits(id, Batch::new()).await {
                warn!(channel = %id, error = %e, "claiming a deposit's credit failed; will retry");
            }
        }
    }

    /// Pay out a channel whose final state is co-signed, on chain (either side may do it; the
    /// second submission is recognised as done). Idempotent across restarts.
    pub async fn settle_close(&self, id: ChannelId) -> Result<(), NodeError> {
        let submitter = self.submitter()?;
        let rec = self.record(id)?;
        let (params, state) = {
            let r = rec.lock().await;
            (r.snapshot.params().clone(), r.snapshot.latest().clone())
        };
        if !state.state.is_final {
            return Err(NodeError::NotReady {
                channel: id,
                stage: Stage::NotFinal,
            });
        }
        let intent = Intent::CooperativeClose {
            params,
            state,
            not_before: 0,
        };
        if let Settled::Dropped(_, reason) = submitter.execute(intent).await? {
            return Err(NodeError::Tx(TxError::Stale(reason)));
        }
        self.mark_concluded(id, None).await
    }

    /// Chain intents stored and not yet seen in effect (0 without a chain).
    pub fn pending_intents(&self) -> Result<usize, NodeError> {
        match &self.inner.submitter {
            Some(s) => Ok(s.pending()?),
            None => Ok(0),
        }
    }

    /// Whether the channel was paid out on chain (as far as this node has seen).
    pub async fn is_concluded(&self, id: ChannelId) -> Option<bool> {
        let rec = self.inner.channel(id)?;
        let r = rec.lock().await;
        Some(r.concluded)
    }

    /// Whether the channel's deposits are seen on chain.
    pub async fn is_funded(&self, id: ChannelId) -> Option<bool> {
        let rec = self.inner.channel(id)?;
        let r = rec.lock().await;
        Some(r.funded)
    }

    async fn mark_concluded(
        &self,
        id: ChannelId,
        paid: Option<(Amount, Amount)>,
    ) -> Result<(), NodeError> {
        let Some(rec) = self.inner.channel(id) else {
            return Ok(());
        };
        let mut r = rec.lock().await;
        if r.concluded {
            return Ok(());
        }
        let mut new = r.clone();
        new.concluded = true;
        let mut batch = Batch::new();
        batch.put(Cf::Channels, id.0.as_slice(), &new)?;
        self.inner.store.commit(batch).await?;
        *r = new;
        let (to_a, to_b) = paid.unwrap_or((
            r.snapshot.latest().state.balances[0],
            r.snapshot.latest().state.balances[1],
        ));
        info!(channel = %id, %to_a, %to_b, "channel paid out on chain");
        self.inner.emit(NodeEvent::Concluded {
            channel_id: id,
            to_a,
            to_b,
        });
        Ok(())
    }

    /// Mark a channel disputed or concluded on chain: its machine takes no new lock, guarantee
    /// or deposit from now on (issue 12, attack 3; rule 12).
    async fn freeze(&self, id: ChannelId) -> Result<(), NodeError> {
        let Some(rec) = self.inner.channel(id) else {
            return Ok(());
        };
        let mut r = rec.lock().await;
        if r.snapshot.frozen() {
            return Ok(());
        }
        let mut new = r.clone();
        new.snapshot.freeze();
        let mut batch = Batch::new();
        batch.put(Cf::Channels, id.0.as_slice(), &new)?;
        self.inner.store.commit(batch).await?;
        *r = new;
        warn!(channel = %id, "channel is on chain: it takes no new lock");
        Ok(())
    }

    /// A dispute was registered with `version`: freeze the channel, and if we hold a later
    /// co-signed state, store the intent to challenge with it and wake the sender.
    async fn on_dispute(&self, id: ChannelId, version: u64) -> Result<(), NodeError> {
        self.freeze(id).await?;
        let Some(rec) = self.inner.channel(id) else {
            return Ok(());
        };
        let r = rec.lock().await;
        if !htlc::node::chain::must_challenge(&r.snapshot, version) {
            return Ok(());
        }
        let latest = r.snapshot.latest();
        warn!(channel = %id, disputed = version, ours = latest.state.version,
            "stale state registered on chain: challenging");
        let intent = Intent::Challenge {
            params: r.snapshot.params().clone(),
            state: latest.clone(),
        };
        let mut batch = Batch::new();
        batch.put(Cf::Chain, &intent.key(), &intent)?;
        self.inner.store.commit(batch).await?;
        self.inner.emit(NodeEvent::Challenged {
            channel_id: id,
            disputed: version,
            ours: latest.state.version,
        });
        self.inner.chain_kick.notify_one();
        Ok(())
    }

    async fn on_chain_event(&self, ev: ChainEvent) -> Result<(), NodeError> {
        let EventKind::Adjudicator(ev) = ev.kind else {
            return Ok(());
        };
        match ev {
            // Read back from the chain (idempotent): the holdings and who deposited what. A read
            // that fails is retried when the peer or the chain task looks again.
            AdjudicatorEvents::Deposited(d) => {
                let id = ChannelId(d.channelId);
                if let Err(e) = self.check_funding(id).await {
                    warn!(channel = %id, error = %e, "cannot read the channel's deposits");
                }
                Ok(())
            }
            AdjudicatorEvents::Disputed(d) => {
                self.on_dispute(ChannelId(d.channelId), d.version).await
            }
            AdjudicatorEvents::Concluded(c) => {
                let paid = (
                    Amount(u128::try_from(c.toA).unwrap_or(u128::MAX)),
                    Amount(u128::try_from(c.toB).unwrap_or(u128::MAX)),
                );
                self.freeze(ChannelId(c.channelId)).await?;
                self.mark_concluded(ChannelId(c.channelId), Some(paid))
                    .await
            }
            _ => Ok(()),
        }
    }

    async fn after_settled(&self, settled: Settled) {
        match settled {
            Settled::Done(intent @ Intent::Deposit { credit: true, .. }) => {
                if let Err(e) = self.credit(&intent).await {
                    warn!(error = %e, "crediting a top-up failed; will retry");
                }
            }
            Settled::Done(Intent::CooperativeClose { params, .. }) => {
                if let Err(e) = self.mark_concluded(params.id(), None).await {
                    warn!(error = %e, "recording the payout failed");
                }
            }
            Settled::Done(_) | Settled::Later(_) => {}
            Settled::Dropped(intent, reason) => {
                self.inner.emit(NodeEvent::IntentDropped {
                    channel_id: intent.params().id(),
                    reason,
                });
            }
        }
    }

    /// Start the two chain tasks: the intent sender (at once, then on every kick and every
    /// `chain_retry`) and the event watcher. Both end on [`Node::shutdown`].
    pub(crate) fn spawn_chain_tasks(&self) -> Result<(), NodeError> {
        let Some(submitter) = self.inner.submitter.clone() else {
            return Ok(());
        };
        let node = self.clone();
        let mut stop = self.inner.stopping.subscribe();
        tokio::spawn(
            async move {
                loop {
                    match submitter.resume(node.now().0).await {
                        Ok(list) => {
                            for s in list {
                                node.after_settled(s).await;
                            }
                        }
                        Err(e) => warn!(error = %e, "chain intents: store failed"),
                    }
                    node.reclaim_deposits().await;
                    tokio::select! {
                        _ = node.inner.chain_kick.notified() => {}
                        _ = tokio::time::sleep(node.inner.opts.chain_retry) => {}
                        _ = stop.changed() => break,
                    }
                    if *stop.borrow() {
                        break;
                    }
                }
            }
            .instrument(info_span!("chain-sender")),
        );
        let node = self.clone();
        let mut stop = self.inner.stopping.subscribe();
        tokio::spawn(
            async move {
                tokio::select! {
                    r = node.watch() => if let Err(e) = r { warn!(error = %e, "chain watcher stopped") },
                    _ = stop.changed() => {}
                }
            }
            .instrument(info_span!("chain-watcher")),
        );
        Ok(())
    }

    /// Follow the adjudicator's events from the stored cursor, forever.
    async fn watch(&self) -> Result<(), NodeError> {
        let submitter = self.submitter()?;
        let client = submitter.client();
        let store = &self.inner.store;
        let from = match store.get::<u64>(Cf::Chain, CURSOR_KEY)? {
            Some(b) => b,
            None => {
                // A new node: nothing before now concerns it.
                use alloy::providers::Provider;
                let head = client
                    .provider()
                    .get_block_number()
                    .await
                    .map_err(|e| TxError::Chain(e.into()))?;
                let mut b = Batch::new();
                b.put(Cf::Chain, CURSOR_KEY, &head)?;
                store.commit(b).await?;
                head
            }
        };
        let mut watcher = EventWatcher::new(client.provider().clone(), client.deployment(), from);
        loop {
            match watcher.poll().await {
                Ok(events) => {
                    let empty = events.is_empty();
                    for ev in events {
                        // Handlers are idempotent: a crash before the cursor moves repeats them.
                        self.on_chain_event(ev).await?;
                    }
                    let mut b = Batch::new();
                    b.put(Cf::Chain, CURSOR_KEY, &watcher.next_block())?;
                    store.commit(b).await?;
                    if empty {
                        tokio::time::sleep(self.inner.opts.chain_poll).await;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "polling the chain failed; retrying");
                    tokio::time::sleep(self.inner.opts.chain_poll).await;
                }
            }
        }
    }
}

/// Whether `me` is participant A of the channel.
fn r_side_is_a(params: &htlc::ChannelParams, me: alloy::primitives::Address) -> bool {
    params.participants[0] == me
}
