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
//! never queued twice (the machine credits only what no state, proposal or queued operation
//! credits yet). What the chain's figures mean is the machine's (`htlc::node::chain`); this
//! module reads them and hands them in.
//!
//! The watcher reads the adjudicator's events from a cursor kept in the store (the first block
//! not yet handled), so events that happened while the node was down are handled when it comes
//! back: deposits mark channels funded, payouts mark them concluded, and a dispute registered
//! with a version older than our latest co-signed state is answered by a challenge.

use crate::chain::{Intent, Settled, TxError};
use crate::error::{NodeError, Stage};
use crate::events::NodeEvent;
use crate::node::Node;
use crate::store::{Batch, Cf};
use alloy::primitives::B256;
use alloy::providers::Provider;
use contracts::bindings::Adjudicator::AdjudicatorEvents;
use contracts::bindings::SecretRegistry::SecretRegistryEvents;
use contracts::{EventKind, EventWatcher};
use htlc::node::ChainEvent;
use htlc::{Amount, ChannelId};
use tracing::{Instrument, info_span, warn};

/// Key of the watcher's cursor in the `chain` column family.
const CURSOR_KEY: &[u8] = b"cursor";
/// Key of the number and hash of the last block the watcher read (reorganisation check).
const CURSOR_HASH_KEY: &[u8] = b"cursor_hash";
/// How far back the watcher reads again after a reorganisation deeper than its confirmations.
pub const REORG_REWIND: u64 = 64;
const WATCHER_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(200);
const WATCHER_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(30);

impl Node {
    fn submitter(&self) -> Result<&crate::chain::Submitter, NodeError> {
        self.inner
            .submitter
            .as_ref()
            .ok_or(NodeError::Tx(TxError::NoChain))
    }

    /// Deposit our opening balance of a channel we opened, on chain, and tell the peer to look.
    /// Returns once the deposit is mined and the channel marked funded. Idempotent: calling it
    /// again (or after a crash) never deposits twice.
    pub async fn fund(&self, id: ChannelId) -> Result<(), NodeError> {
        let submitter = self.submitter()?;
        let rec = self
            .channel_record(id)
            .ok_or(NodeError::UnknownChannel(id))?;
        if rec.awaiting_acceptance() {
            return Err(NodeError::NotReady {
                channel: id,
                stage: Stage::AwaitingCountersignature,
            });
        }
        let params = rec.snapshot.params().clone();
        let amount = rec.snapshot.latest().state.balances[rec.snapshot.me().index()];
        // Only the opener (A) has an opening balance; it deposits first, expecting 0.
        if !amount.is_zero() && params.participants[0] == self.address() {
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
        self.step_wait(|m| m.announce_funded(id)).await?;
        if self.is_funded(id).await == Some(true) {
            Ok(())
        } else {
            Err(NodeError::NotReady {
                channel: id,
                stage: Stage::DepositsMissing,
            })
        }
    }

    /// Read what the adjudicator holds for a channel, and what each participant deposited,
    /// and hand it to the machine (funded once that covers the opening state; collateral
    /// decided in the same step).
    pub(crate) async fn check_funding(&self, id: ChannelId) -> Result<(), NodeError> {
        let Some(submitter) = &self.inner.submitter else {
            return Ok(());
        };
        // Ours, or a channel announced to us (believed once funded: gossip).
        let Some(params) = self.read(|m| m.query_params(id)) else {
            return Ok(());
        };
        let client = submitter.client();
        let held = client.holdings(id).await.map_err(TxError::from)?;
        let deposited = client.deposits(&params).await.map_err(TxError::from)?;
        let now = self.now();
        self.step_wait(|m| {
            Ok::<_, NodeError>(m.handle_chain(
                now,
                ChainEvent::Holdings {
                    channel_id: id,
                    held,
                    deposited,
                },
            ))
        })
        .await
    }

    /// Add `amount` of our own to a funded channel: deposit it on chain (idempotently), then have
    /// the top-up co-signed. Returns once the deposit is mined and its credit proposed.
    pub async fn top_up(&self, id: ChannelId, amount: Amount) -> Result<(), NodeError> {
        if amount.is_zero() {
            return Err(NodeError::ZeroAmount);
        }
        let submitter = self.submitter()?;
        let rec = self
            .channel_record(id)
            .ok_or(NodeError::UnknownChannel(id))?;
        if !rec.funded || rec.concluded || rec.snapshot.latest().state.is_final {
            return Err(NodeError::NotReady {
                channel: id,
                stage: Stage::NotFunded,
            });
        }
        let params = rec.snapshot.params().clone();
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

    /// A deposit intent of ours is mined: read the chain's figures, then, in one step, claim
    /// the credit of every deposit of ours the channel does not credit yet and delete the
    /// intent (a crash before leaves the intent, which is found mined and credited again).
    async fn credit(&self, intent: &Intent) -> Result<(), NodeError> {
        let Intent::Deposit { params, .. } = intent else {
            return Ok(());
        };
        self.check_funding(params.id()).await?;
        let mut done = Batch::new();
        done.delete(Cf::Chain, &intent.key());
        let now = self.now();
        let landed = Box::new(intent.clone());
        self.step_in(done, |m| {
            Ok::<_, NodeError>(m.handle_chain(now, ChainEvent::Landed(landed)))
        })?
        .wait()
        .await
    }

    /// Ask again for the credit of our deposits that the peer has not co-signed yet (it may
    /// have refused while it had not seen them on chain).
    pub(crate) async fn reclaim_deposits(&self) {
        let now = self.now();
        if let Err(e) = self
            .step_wait(|m| Ok::<_, NodeError>(m.reclaim_deposits(now)))
            .await
        {
            warn!(error = %e, "claiming a deposit's credit failed; will retry");
        }
    }

    /// Pay out a channel whose final state is co-signed, on chain (either side may do it; the
    /// second submission is recognised as done). Idempotent across restarts.
    pub async fn settle_close(&self, id: ChannelId) -> Result<(), NodeError> {
        let submitter = self.submitter()?;
        let rec = self
            .channel_record(id)
            .ok_or(NodeError::UnknownChannel(id))?;
        let (params, state) = (rec.snapshot.params().clone(), rec.snapshot.latest().clone());
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
        match submitter.execute(intent).await? {
            Settled::Dropped(_, reason) => Err(NodeError::Tx(TxError::Stale(reason))),
            Settled::Done(intent) | Settled::Later(intent) => self.landed(intent).await,
        }
    }

    /// An intent of ours is in effect on chain: tell the machine.
    async fn landed(&self, intent: Intent) -> Result<(), NodeError> {
        let now = self.now();
        let landed = Box::new(intent);
        self.step_wait(|m| Ok::<_, NodeError>(m.handle_chain(now, ChainEvent::Landed(landed))))
            .await
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
        self.channel_record(id).map(|r| r.concluded)
    }

    /// Whether the channel's deposits are seen on chain.
    pub async fn is_funded(&self, id: ChannelId) -> Option<bool> {
        self.channel_record(id).map(|r| r.funded)
    }

    async fn on_chain_event(&self, ev: contracts::ChainEvent) -> Result<(), NodeError> {
        let now = self.now();
        let ev = match ev.kind {
            EventKind::Adjudicator(ev) => ev,
            EventKind::Registry(SecretRegistryEvents::SecretRevealed(r)) => {
                // A preimage is public: when (the registry's clock decides which locks it
                // unlocks) is read back; the machine settles upstream what it pays for.
                let client = self.submitter()?.client();
                let Some(at) = client
                    .revealed_at(htlc::Hashlock(r.hashlock))
                    .await
                    .map_err(TxError::from)?
                else {
                    return Ok(());
                };
                let preimage = htlc::Preimage(r.preimage.0);
                return self
                    .step_wait(|m| {
                        Ok::<_, NodeError>(
                            m.handle_chain(now, ChainEvent::Revealed { preimage, at }),
                        )
                    })
                    .await;
            }
        };
        let decided = match ev {
            // Read back from the chain (idempotent): the holdings and who deposited what. A read
            // that fails is retried when the peer or the chain task looks again.
            AdjudicatorEvents::Deposited(d) => {
                let id = ChannelId(d.channelId);
                if let Err(e) = self.check_funding(id).await {
                    warn!(channel = %id, error = %e, "cannot read the channel's deposits");
                }
                return Ok(());
            }
            AdjudicatorEvents::Disputed(d) => {
                let (channel_id, finalizes_at) =
                    (ChannelId(d.channelId), d.finalizesAt.to::<u64>());
                // The registered state itself, when the event shows all of it (no locks, no
                // guarantees): what a virtual channel's hub settles its legs by.
                if self.read(|m| m.serves_virtual(channel_id))
                    && let Some(state) = contracts::convert::resolved_virtual_state(&d.state, &[])
                        .filter(|s| s.channel_id == channel_id)
                {
                    let registered = ChainEvent::Registered {
                        channel_id,
                        state: Box::new(state),
                        finalizes_at,
                    };
                    self.step_wait(|m| Ok::<_, NodeError>(m.handle_chain(now, registered)))
                        .await?;
                } else if self.read(|m| m.serves_virtual(channel_id))
                    && let Some((state, locks)) =
                        contracts::convert::withheld_virtual_state(&d.state)
                            .filter(|(s, _)| s.channel_id == channel_id)
                {
                    // Registered with locks the event does not list (only the parties hold
                    // them): resolved without them after the grace unless they show them.
                    let registered = ChainEvent::RegisteredWithheld {
                        channel_id,
                        state: Box::new(state),
                        locks,
                        finalizes_at,
                    };
                    self.step_wait(|m| Ok::<_, NodeError>(m.handle_chain(now, registered)))
                        .await?;
                }
                ChainEvent::Disputed {
                    channel_id,
                    version: d.version,
                    finalizes_at,
                    guaranteed: d
                        .state
                        .guarantees
                        .iter()
                        .map(|g| ChannelId(g.virtualChannelId))
                        .collect(),
                }
            }
            AdjudicatorEvents::VirtualOutcome(o) => {
                // A virtual channel we serve had its outcome recorded by a resolution (perhaps
                // a party's, by a state with locks that no dispute event shows whole): our legs
                // resolve by exactly that state.
                let vid = ChannelId(o.virtualChannelId);
                if !self.read(|m| m.serves_virtual(vid)) {
                    return Ok(());
                }
                let Some(state) = contracts::convert::resolved_virtual_state(&o.state, &o.locks)
                    .filter(|s| s.channel_id == vid)
                else {
                    warn!(channel = %vid, "a virtual channel's recorded outcome does not read");
                    return Ok(());
                };
                ChainEvent::Registered {
                    channel_id: vid,
                    state: Box::new(state),
                    finalizes_at: 0,
                }
            }
            AdjudicatorEvents::LocksWithheld(o) => {
                // A virtual channel of ours had its outcome recorded without its locks: every
                // leg still to resolve goes the same way.
                let vid = ChannelId(o.virtualChannelId);
                if !self.read(|m| m.book().virtuals.contains_key(&vid)) {
                    return Ok(());
                }
                let Some((state, locks)) = contracts::convert::withheld_virtual_state(&o.state)
                    .filter(|(s, _)| s.channel_id == vid)
                else {
                    warn!(channel = %vid, "a virtual channel's withheld outcome does not read");
                    return Ok(());
                };
                ChainEvent::RegisteredWithheld {
                    channel_id: vid,
                    state: Box::new(state),
                    locks,
                    finalizes_at: 0,
                }
            }
            AdjudicatorEvents::PayoutDeferred(d) => ChainEvent::PayoutDeferred {
                to: d.to,
                asset: d.asset,
            },
            AdjudicatorEvents::Concluded(c) => ChainEvent::Concluded {
                channel_id: ChannelId(c.channelId),
                version: c.version,
                to_a: Amount(u128::try_from(c.toA).unwrap_or(u128::MAX)),
                to_b: Amount(u128::try_from(c.toB).unwrap_or(u128::MAX)),
            },
            _ => return Ok(()),
        };
        self.step_wait(|m| Ok::<_, NodeError>(m.handle_chain(now, decided)))
            .await
    }

    async fn after_settled(&self, settled: Settled) {
        match settled {
            Settled::Done(intent @ Intent::Deposit { credit: true, .. }) => {
                if let Err(e) = self.credit(&intent).await {
                    warn!(error = %e, "crediting a top-up failed; will retry");
                }
            }
            Settled::Done(intent @ Intent::CooperativeClose { .. }) => {
                if let Err(e) = self.landed(intent).await {
                    warn!(error = %e, "recording the payout failed");
                }
            }
            Settled::Done(_) | Settled::Later(_) => {}
            Settled::Dropped(intent, reason) => {
                self.inner.emit(NodeEvent::IntentDropped {
                    channel_id: intent.params().map(|p| p.id()),
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
                // The watcher cannot die silently: whatever fails (the chain, the store, a
                // handler), it is reported and started again from its stored cursor, with a
                // backoff that doubles while it keeps failing (handlers are idempotent).
                let mut backoff = WATCHER_BACKOFF_MIN;
                loop {
                    let started = std::time::Instant::now();
                    let error = tokio::select! {
                        r = node.watch() => match r {
                            Ok(()) => break,
                            Err(e) => e.to_string(),
                        },
                        _ = stop.changed() => break,
                    };
                    if started.elapsed() > WATCHER_BACKOFF_MAX {
                        backoff = WATCHER_BACKOFF_MIN;
                    }
                    warn!(%error, retry_in_ms = backoff.as_millis() as u64, "chain watcher failed; restarting");
                    node.inner.emit(NodeEvent::WatcherRestarting {
                        error,
                        retry_in_ms: backoff.as_millis() as u64,
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => break,
                    }
                    if *stop.borrow() {
                        break;
                    }
                    backoff = (backoff * 2).min(WATCHER_BACKOFF_MAX);
                }
            }
            .instrument(info_span!("chain-watcher")),
        );
        Ok(())
    }

    /// Follow the adjudicator's and the registry's events from the stored cursor, `n` blocks
    /// below the head (the client's confirmations), until something fails. Before each read it
    /// checks that the last block it read is still on the chain; if a reorganisation deeper
    /// than `n` replaced it, it reads again from [`REORG_REWIND`] blocks earlier and re-checks
    /// every channel's deposits (handlers are idempotent; what is gone is seen gone).
    async fn watch(&self) -> Result<(), NodeError> {
        let submitter = self.submitter()?;
        let client = submitter.client();
        let store = &self.inner.store;
        let chain_err =
            |e: alloy::transports::TransportError| NodeError::Tx(TxError::Chain(e.into()));
        let from = match store.get::<u64>(Cf::Chain, CURSOR_KEY)? {
            Some(b) => b,
            None => {
                // A new node: nothing before now concerns it.
                let head = client
                    .provider()
                    .get_block_number()
                    .await
                    .map_err(chain_err)?;
                let mut b = Batch::new();
                b.put(Cf::Chain, CURSOR_KEY, &head)?;
                store.commit(b).await?;
                head
            }
        };
        let confirmations = client.confirmations();
        let mut watcher = EventWatcher::new(client.provider().clone(), client.deployment(), from)
            .with_confirmations(confirmations);
        loop {
            if let Some((block, hash)) = store.get::<(u64, B256)>(Cf::Chain, CURSOR_HASH_KEY)?
                && block_hash(client, block).await? != Some(hash)
            {
                let from = block.saturating_sub(REORG_REWIND);
                warn!(
                    block,
                    from, "the last block read was reorganised away; reading again"
                );
                self.inner.emit(NodeEvent::ChainReorganised { from });
                let mut b = Batch::new();
                b.put(Cf::Chain, CURSOR_KEY, &from)?;
                b.delete(Cf::Chain, CURSOR_HASH_KEY);
                store.commit(b).await?;
                watcher = EventWatcher::new(client.provider().clone(), client.deployment(), from)
                    .with_confirmations(confirmations);
                for id in self.channel_ids() {
                    self.check_funding(id).await?;
                }
            }
            let read_from = watcher.next_block();
            let events = match watcher.poll().await {
                Ok(events) => events,
                Err(e) => {
                    warn!(error = %e, "polling the chain failed; retrying");
                    tokio::time::sleep(self.inner.opts.chain_poll).await;
                    continue;
                }
            };
            let empty = events.is_empty();
            for ev in events {
                // Handlers are idempotent: a crash before the cursor moves repeats them.
                self.on_chain_event(ev).await?;
            }
            let next = watcher.next_block();
            // Nothing new read (an idle poll): the stored cursor and hash still hold.
            if next != read_from {
                let mut b = Batch::new();
                b.put(Cf::Chain, CURSOR_KEY, &next)?;
                if next > 0
                    && let Some(hash) = block_hash(client, next - 1).await?
                {
                    b.put(Cf::Chain, CURSOR_HASH_KEY, &(next - 1, hash))?;
                }
                store.commit(b).await?;
            }
            if empty {
                tokio::time::sleep(self.inner.opts.chain_poll).await;
            }
        }
    }
}

/// The hash of block `n`, if the chain has it.
async fn block_hash(client: &contracts::ChainClient, n: u64) -> Result<Option<B256>, NodeError> {
    let block = client
        .provider()
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Number(n))
        .await
        .map_err(|e| NodeError::Tx(TxError::Chain(e.into())))?;
    Ok(block.map(|b| b.header.hash))
}
