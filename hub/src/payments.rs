//! Payments through a hub: invoices, paying, forwarding, settling, failing and expiring HTLCs.
//!
//! ```text
//!  payer                         hub                           payee
//!    | Route{hashlock, next}       |                               |   (stored by the hub)
//!    |---------------------------->|                               |
//!    | Propose[AddHtlc] / Accept   |                               |
//!    |<--------------------------->|  HtlcReceived (committed):    |
//!    |                             |  decide() with its policy     |
//!    |                             | Propose[AddHtlc] / Accept     |
//!    |                             |<----------------------------->|  invoice known:
//!    |                             | Propose[FulfillHtlc(preimage)]|  reveal
//!    |                             |<------------------------------|
//!    |                             |  PreimageLearned: persisted   |
//!    | Propose[FulfillHtlc]        |  with the state, used at once |
//!    |<----------------------------|                               |
//! ```
//!
//! Every step is driven by an event of a channel's machine and writes its record in the same
//! batch as the channel change it causes, so a crash between two steps is resumed on restart
//! ([`Node::resume_payments`]): rule 3 (forward only what is committed: `decide` takes a
//! `CommittedHtlc`), rule 4 (fail back only once the outgoing lock is removed by a co-signed
//! state: on the peer's `FailHtlc`, our `ExpireHtlc`, or an offer that never took effect),
//! rule 5 (a learned preimage is persisted with the state that taught it, then used upstream).
//!
//! Keys in the `locks` column family: `route/‹channel›‹hashlock›` (hub: where to forward),
//! `fwd/‹out channel›‹out id›` and `in/‹in channel›‹in id›` (hub: the two sides of a
//! forward), `invoice/‹hashlock›` (payee), `pay/‹payment id›` and `paylock/‹channel›‹id›`
//! (payer).

use crate::error::{NodeError, PayError};
use crate::events::NodeEvent;
use crate::node::{Node, awaiting_acceptance};
use crate::store::{Batch, Cf};
use alloy::primitives::{Address, B256};
use htlc::forward::{ForwardPolicy, NextHop, OutgoingChannel};
pub use htlc::node::invoice::{Invoice, InvoiceError};
pub use htlc::node::payment::{ForwardRecord, HtlcPlan, PaymentStatus};
use htlc::node::payment::{InvoiceTerms, Known, Step, Upstream, on_committed, outcomes};
use htlc::{
    Amount, ChannelId, CommittedHtlc, Event, Expiry, FailureReason, Hashlock, HtlcId, Preimage,
    Side,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// Default seconds the payee's HTLC must leave before expiring: two hours (above the smallest
/// delta a hub must keep, `htlc::forward::MIN_OUTGOING_EXPIRY_SECS`).
pub const DEFAULT_FINAL_EXPIRY_DELTA: u64 = 7200;
const _: () = assert!(DEFAULT_FINAL_EXPIRY_DELTA > htlc::forward::MIN_OUTGOING_EXPIRY_SECS);

/// The payer's record of one payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// The payment id (paying the same id twice pays once).
    pub id: B256,
    /// The invoice paid.
    pub invoice: Invoice,
    /// What we locked: amount plus the hub's fee.
    pub sent: Amount,
    /// The channel it left on.
    pub channel: ChannelId,
    /// Our HTLC's id in it.
    pub htlc: HtlcId,
    /// Where it stands.
    pub status: PaymentStatus,
}

impl PaymentRecord {
    /// The fee paid (or to be paid) to the hub.
    pub fn fee(&self) -> Amount {
        Amount(self.sent.0.saturating_sub(self.invoice.amount.0))
    }
}

/// What the payer asked the hub to do with an HTLC (stored by the hub).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInstr {
    /// Who to forward to.
    pub next_peer: Address,
    /// Amount and expiry of the outgoing HTLC.
    pub next: NextHop,
    /// When it was stored (node clock): an instruction whose HTLC never comes is collected
    /// after [`ROUTE_INSTRUCTION_TTL_SECS`].
    pub stored_at: u64,
}

/// Seconds a route instruction waits for its HTLC before it is deleted (the payer sends the
/// HTLC right after it; rule 10: a peer cannot pile them up).
pub const ROUTE_INSTRUCTION_TTL_SECS: u64 = 600;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct InvoiceRecord {
    invoice: Invoice,
    preimage: Preimage,
    paid: bool,
}

fn key2(tag: &str, a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut k = tag.as_bytes().to_vec();
    k.extend_from_slice(a);
    k.extend_from_slice(b);
    k
}

/// Key of a route instruction.
pub fn route_key(channel: ChannelId, hashlock: Hashlock) -> Vec<u8> {
    key2("route/", channel.0.as_slice(), hashlock.0.as_slice())
}
fn fwd_key(channel: ChannelId, id: HtlcId) -> Vec<u8> {
    key2("fwd/", channel.0.as_slice(), &id.0.to_be_bytes())
}
fn in_key(channel: ChannelId, id: HtlcId) -> Vec<u8> {
    key2("in/", channel.0.as_slice(), &id.0.to_be_bytes())
}
fn invoice_key(hashlock: Hashlock) -> Vec<u8> {
    key2("invoice/", hashlock.0.as_slice(), &[])
}
fn pay_key(id: B256) -> Vec<u8> {
    key2("pay/", id.as_slice(), &[])
}
fn paylock_key(channel: ChannelId, id: HtlcId) -> Vec<u8> {
    key2("paylock/", channel.0.as_slice(), &id.0.to_be_bytes())
}

impl Node {
    /// Make an invoice for `amount`, valid `valid_secs` from now, to be paid through `hub`.
    pub async fn create_invoice(
        &self,
        amount: Amount,
        valid_secs: u64,
        hub: Address,
    ) -> Result<Invoice, NodeError> {
        if amount.is_zero() {
            return Err(NodeError::ZeroAmount);
        }
        // An invoice names the hub that delivers it: we must have an open channel with it,
        // or the payment could only fail (and the payer would pay a fee for nothing).
        if self.best_channel_to(hub, None).await.is_none() {
            return Err(PayError::NoChannel(hub).into());
        }
        let preimage = Preimage(rand::random());
        let invoice = Invoice {
            payee: self.address(),
            hub,
            amount,
            hashlock: preimage.hashlock(),
            expires_at: self.now().0.saturating_add(valid_secs),
            final_expiry_delta: DEFAULT_FINAL_EXPIRY_DELTA,
        };
        let rec = InvoiceRecord {
            invoice: invoice.clone(),
            preimage,
            paid: false,
        };
        let mut b = Batch::new();
        b.put(Cf::Locks, &invoice_key(invoice.hashlock), &rec)?;
        self.inner.store.commit(b).await?;
        Ok(invoice)
    }

    /// The record of payment `id`, if we made it.
    pub fn payment(&self, id: B256) -> Result<Option<PaymentRecord>, NodeError> {
        Ok(self.inner.store.get(Cf::Locks, &pay_key(id))?)
    }

    /// Every payment we made, in id order.
    pub fn payments(&self) -> Result<Vec<PaymentRecord>, NodeError> {
        Ok(self
            .inner
            .store
            .scan::<PaymentRecord>(Cf::Locks, b"pay/")?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    /// Invoices of ours that were paid (we revealed the preimage), in hashlock order.
    pub fn received(&self) -> Result<Vec<Invoice>, NodeError> {
        Ok(self
            .inner
            .store
            .scan::<InvoiceRecord>(Cf::Locks, b"invoice/")?
            .into_iter()
            .filter(|(_, r)| r.paid)
            .map(|(_, r)| r.invoice)
            .collect())
    }

    /// Fees we earned as a hub (forwards settled on both sides) and how many forwards.
    pub fn fees_earned(&self) -> Result<(Amount, usize), NodeError> {
        let mut fees = Amount::ZERO;
        let mut n = 0;
        for (_, f) in self.inner.store.scan::<ForwardRecord>(Cf::Locks, b"fwd/")? {
            if f.done && f.preimage.is_some() {
                fees = Amount(fees.0.saturating_add(f.fee.0));
                n += 1;
            }
        }
        Ok((fees, n))
    }

    /// The hub policy `hub` announced to us, if any.
    pub fn hub_policy(&self, hub: Address) -> Result<Option<ForwardPolicy>, NodeError> {
        Ok(self
            .inner
            .store
            .get(Cf::Meta, &crate::session::meta_key("policy", hub))?)
    }

    /// Pay `invoice` through its hub, as payment `id`. Returns once the HTLC is offered; the
    /// outcome arrives as [`NodeEvent::PaymentSucceeded`] / [`NodeEvent::PaymentFailed`] and in
    /// [`Node::payment`]. Paying an id again never pays twice: it returns the existing record.
    pub async fn pay(&self, invoice: &Invoice, id: B256) -> Result<PaymentRecord, NodeError> {
        let _one = self.inner.pay_lock.lock().await;
        if let Some(existing) = self.payment(id)? {
            return Ok(existing);
        }
        let now = self.now().0;
        if invoice.expires_at <= now {
            return Err(PayError::Expired.into());
        }
        if invoice.payee == self.address() {
            return Err(PayError::OwnInvoice.into());
        }
        let policy = self
            .hub_policy(invoice.hub)?
            .ok_or(PayError::NoPolicy(invoice.hub))?;
        let (channel, available) = self
            .best_channel_to(invoice.hub, None)
            .await
            .ok_or(PayError::NoChannel(invoice.hub))?;
        let plan = htlc::node::payment::plan(
            invoice.amount,
            invoice.final_expiry_delta,
            &policy,
            available,
            Expiry(now),
        )?;
        self.pay_with_plan(invoice, id, channel, plan).await
    }

    /// Pay `invoice` as payment `id` with amounts and expiries chosen by the caller instead of
    /// the router (tests of the hub's checks; advanced callers). Same idempotence as
    /// [`Node::pay`]; the hub and the payee apply their checks as always.
    pub async fn pay_planned(
        &self,
        invoice: &Invoice,
        id: B256,
        plan: HtlcPlan,
    ) -> Result<PaymentRecord, NodeError> {
        let _one = self.inner.pay_lock.lock().await;
        if let Some(existing) = self.payment(id)? {
            return Ok(existing);
        }
        let (channel, _) = self
            .best_channel_to(invoice.hub, None)
            .await
            .ok_or(PayError::NoChannel(invoice.hub))?;
        self.pay_with_plan(invoice, id, channel, plan).await
    }

    async fn pay_with_plan(
        &self,
        invoice: &Invoice,
        id: B256,
        channel: ChannelId,
        plan: HtlcPlan,
    ) -> Result<PaymentRecord, NodeError> {
        // First the instruction (the hub keeps it until the HTLC commits), then the HTLC with
        // the payment record in the same batch.
        self.commit_and_send(
            invoice.hub,
            Batch::new(),
            vec![crate::wire::Body::Route {
                channel_id: channel,
                hashlock: invoice.hashlock,
                next_peer: invoice.payee,
                next: plan.next,
            }],
        )
        .await?;
        let invoice = invoice.clone();
        let record = self
            .with_channel_do(channel, Batch::new(), |m, b| {
                let htlc = m.offer_htlc(plan.sent, invoice.hashlock, plan.expiry);
                let record = PaymentRecord {
                    id,
                    invoice,
                    sent: plan.sent,
                    channel,
                    htlc,
                    status: PaymentStatus::Pending,
                };
                b.put(Cf::Locks, &pay_key(id), &record)?;
                b.put(Cf::Locks, &paylock_key(channel, htlc), &id)?;
                Ok(record)
            })
            .await?;
        self.inner.metrics.payment_sent(id);
        info!(payment = %id, amount = %record.invoice.amount, fee = %record.fee(), "payment sent");
        Ok(record)
    }

    /// Our open, funded channel with `peer` with the most free balance on our side, in `asset`
    /// if given. Only that peer's channels are looked at (and locked), never every channel of
    /// the node; channels disputed or concluded on chain are skipped.
    async fn best_channel_to(
        &self,
        peer: Address,
        asset: Option<Address>,
    ) -> Option<(ChannelId, Amount)> {
        let ids: Vec<ChannelId> = {
            let map = self
                .inner
                .per_peer
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            map.get(&peer).cloned().unwrap_or_default()
        };
        let recs: Vec<_> = ids
            .into_iter()
            .filter_map(|id| Some((id, self.inner.channel(id)?)))
            .collect();
        let mut best: Option<(ChannelId, Amount)> = None;
        for (id, rec) in recs {
            let r = rec.lock().await;
            if r.peer != peer
                || !r.funded
                || r.concluded
                || !r.snapshot.can_offer()
                || awaiting_acceptance(&r)
                || asset.is_some_and(|a| a != r.snapshot.params().asset)
            {
                continue;
            }
            let free = r.snapshot.free_balance();
            if best.is_none_or(|(_, b)| free > b) {
                best = Some((id, free));
            }
        }
        best
    }

    /// Rules 4 and 5: before the state that reports how our HTLCs ended is committed, add to
    /// its batch what it taught: a preimage or a failure, on the forward's record (the hub) or
    /// the payment's (the payer). Acting on it upstream comes after, and is resumed from these
    /// records after a crash.
    pub(crate) fn persist_payment_facts(
        &self,
        channel: ChannelId,
        events: &[Event],
        batch: &mut Batch,
    ) -> Result<(), NodeError> {
        let store = &self.inner.store;
        for (id, outcome) in events.iter().flat_map(outcomes) {
            if let Some(mut f) = store.get::<ForwardRecord>(Cf::Locks, &fwd_key(channel, id))?
                && f.learn(outcome)
            {
                batch.put(Cf::Locks, &fwd_key(channel, id), &f)?;
            }
            if let Some(pid) = store.get::<B256>(Cf::Locks, &paylock_key(channel, id))?
                && let Some(mut p) = store.get::<PaymentRecord>(Cf::Locks, &pay_key(pid))?
                && let Some(status) = p.status.after(outcome)
            {
                p.status = status;
                batch.put(Cf::Locks, &pay_key(pid), &p)?;
            }
        }
        Ok(())
    }

    /// React to the payment events of one channel's new state (spawned by the engine after the
    /// state is committed; never while that channel is locked).
    ///
    /// Returns a boxed future: handling an event changes channels, whose new states raise
    /// events again, and the box is where that recursion is cut.
    pub(crate) fn on_htlc_events(
        &self,
        channel: ChannelId,
        events: Vec<Event>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>> {
        let node = self.clone();
        Box::pin(async move {
            for ev in events {
                let r = match ev {
                    Event::HtlcReceived(h) => node.on_received(h).await,
                    ev => {
                        let mut r = Ok(());
                        for (id, _) in outcomes(&ev) {
                            r = r.and(node.after_outcome(channel, id).await);
                        }
                        r
                    }
                };
                if let Err(e) = r {
                    warn!(channel = %channel, error = %e, "payment step failed; resumed on restart");
                }
            }
        })
    }

    /// A peer's HTLC is committed on `h.channel_id()`: gather what we know of its hashlock,
    /// let [`on_committed`] decide, and carry out the step (claim, forward or fail).
    async fn on_received(&self, h: CommittedHtlc) -> Result<(), NodeError> {
        let channel = h.channel_id();
        let lock = *h.lock();
        let store = &self.inner.store;
        if store
            .get_raw(Cf::Locks, &in_key(channel, lock.id))?
            .is_some()
        {
            return Ok(()); // forwarded already (a repeat after restart)
        }
        let invoice = store.get::<InvoiceRecord>(Cf::Locks, &invoice_key(lock.hashlock))?;
        let route = route_key(channel, lock.hashlock);
        let instr = match invoice {
            Some(_) => None,
            None => store.get::<RouteInstr>(Cf::Locks, &route)?,
        };
        let (asset, frozen, we_opened) = match self.inner.channel(channel) {
            Some(rec) => {
                let r = rec.lock().await;
                let s = &r.snapshot;
                (s.params().asset, s.frozen(), s.me() == Side::A)
            }
            None => return Err(NodeError::UnknownChannel(channel)),
        };
        // Only a channel in the incoming channel's asset can carry it (a payment received in
        // one token is never paid out in another: issue 12, attack 4).
        let out = match &instr {
            Some(i) if !frozen => self.outgoing_to(i.next_peer, asset).await,
            _ => None,
        };
        let terms = invoice.as_ref().map(|inv| InvoiceTerms {
            amount: inv.invoice.amount,
            expires_at: Expiry(inv.invoice.expires_at),
            preimage: inv.preimage,
            paid: inv.paid,
        });
        let known = match (&terms, &instr) {
            (Some(t), _) => Known::Invoice(t),
            (None, Some(i)) => Known::Route {
                next: &i.next,
                outgoing: out.as_ref().map(|(_, o)| o),
                incoming_frozen: frozen,
            },
            (None, None) => Known::Nothing { we_opened },
        };
        let step = on_committed(&h, known, self.now());
        // The instruction is used up by this decision: deleted with its outcome.
        let mut used = Batch::new();
        if instr.is_some() {
            used.delete(Cf::Locks, &route);
        }
        match (step, invoice, out) {
            (Step::Claim(_), Some(inv), _) => self.claim(channel, lock, inv).await,
            (Step::Forward(fwd), _, Some((out_channel, _))) => {
                self.forward((channel, lock.id), out_channel, fwd, used)
                    .await
            }
            (Step::Fail(reason), _, _) => {
                self.fail_incoming_in(channel, lock.id, reason, used).await
            }
            // `on_committed` claims only with an invoice and forwards only with a channel.
            (Step::Claim(_) | Step::Forward(_), _, _) => {
                self.fail_incoming_in(
                    channel,
                    lock.id,
                    FailureReason::TemporaryChannelFailure,
                    used,
                )
                .await
            }
        }
    }

    /// We are the payee and accept the HTLC: reveal the preimage, marking the invoice paid in
    /// the same batch.
    async fn claim(
        &self,
        channel: ChannelId,
        lock: htlc::Lock,
        inv: InvoiceRecord,
    ) -> Result<(), NodeError> {
        if !self.inner.opts.reveal_preimages {
            warn!(channel = %channel, "holding an HTLC without revealing (test setting)");
            self.inner.emit(NodeEvent::Holding {
                hashlock: lock.hashlock,
            });
            return Ok(());
        }
        let preimage = inv.preimage;
        let paid = InvoiceRecord { paid: true, ..inv };
        let amount = lock.amount;
        self.with_channel_do(channel, Batch::new(), |m, b| {
            m.fulfill_htlc(lock.id, preimage);
            b.put(Cf::Locks, &invoice_key(lock.hashlock), &paid)?;
            Ok(())
        })
        .await?;
        info!(channel = %channel, %amount, "payment received");
        self.inner.emit(NodeEvent::PaymentReceived {
            hashlock: lock.hashlock,
            amount,
        });
        Ok(())
    }

    /// We are the hub and forward: offer the outgoing HTLC with the forward's records, in one
    /// batch with `used` (the instruction's deletion).
    async fn forward(
        &self,
        incoming: (ChannelId, HtlcId),
        out_channel: ChannelId,
        fwd: htlc::forward::Forward,
        used: Batch,
    ) -> Result<(), NodeError> {
        let (in_channel, in_id) = incoming;
        let r = self
            .with_channel_do(out_channel, used, |m, b| {
                let out_id = m.offer_htlc(fwd.amount, fwd.hashlock, fwd.expiry);
                let rec = ForwardRecord::new(incoming, (out_channel, out_id), &fwd);
                b.put(Cf::Locks, &fwd_key(out_channel, out_id), &rec)?;
                b.put(
                    Cf::Locks,
                    &in_key(in_channel, in_id),
                    &(out_channel, out_id),
                )?;
                Ok(())
            })
            .await;
        if let Err(e) = r {
            warn!(error = %e, "outgoing channel refused the HTLC");
            return self
                .fail_incoming(in_channel, in_id, FailureReason::TemporaryChannelFailure)
                .await;
        }
        Ok(())
    }

    /// Our best outgoing channel to `peer` in `asset`, described for the forwarding decision.
    async fn outgoing_to(
        &self,
        peer: Address,
        asset: Address,
    ) -> Option<(ChannelId, OutgoingChannel)> {
        let (id, _) = self.best_channel_to(peer, Some(asset)).await?;
        let rec = self.inner.channel(id)?;
        let r = rec.lock().await;
        Some((id, r.snapshot.outgoing(self.inner.opts.policy)))
    }

    async fn fail_incoming(
        &self,
        channel: ChannelId,
        id: HtlcId,
        reason: FailureReason,
    ) -> Result<(), NodeError> {
        self.fail_incoming_in(channel, id, reason, Batch::new())
            .await
    }

    /// As [`Self::fail_incoming`], with the writes of `batch` in the same commit.
    async fn fail_incoming_in(
        &self,
        channel: ChannelId,
        id: HtlcId,
        reason: FailureReason,
        batch: Batch,
    ) -> Result<(), NodeError> {
        info!(channel = %channel, htlc = id.0, %reason, "failing HTLC back");
        self.with_channel_in(channel, |m| m.fail_htlc(id, reason), batch)
            .await
    }

    /// Delete route instructions whose HTLC never came within [`ROUTE_INSTRUCTION_TTL_SECS`].
    pub(crate) async fn collect_route_instructions(&self) -> Result<(), NodeError> {
        let cutoff = self.now().0.saturating_sub(ROUTE_INSTRUCTION_TTL_SECS);
        let mut batch = Batch::new();
        let mut n = 0usize;
        for (key, instr) in self.inner.store.scan::<RouteInstr>(Cf::Locks, b"route/")? {
            if instr.stored_at < cutoff {
                batch.delete(Cf::Locks, &key);
                n += 1;
            }
        }
        if n > 0 {
            self.inner.store.write_unsynced(batch)?;
            info!(count = n, "stale route instructions collected");
        }
        Ok(())
    }

    /// How many route instructions a peer left for `channel` that no HTLC used yet.
    pub(crate) fn route_instructions(&self, channel: ChannelId) -> Result<usize, NodeError> {
        Ok(self
            .inner
            .store
            .scan_raw(Cf::Locks, &key2("route/", channel.0.as_slice(), &[]))?
            .len())
    }

    /// An HTLC we offered on `channel` ended (its record says how): settle or fail the
    /// incoming HTLC it was forwarded for, or report our payment's outcome.
    async fn after_outcome(&self, channel: ChannelId, id: HtlcId) -> Result<(), NodeError> {
        let store = &self.inner.store;
        if let Some(f) = store.get::<ForwardRecord>(Cf::Locks, &fwd_key(channel, id))?
            && let Some(up) = f.upstream()
        {
            let mut b = Batch::new();
            let done = ForwardRecord {
                done: true,
                ..f.clone()
            };
            b.put(Cf::Locks, &fwd_key(channel, id), &done)?;
            self.with_channel_do(f.in_channel, b, |m, _| {
                match up {
                    Upstream::Fulfill(p) => m.fulfill_htlc(f.in_id, p),
                    Upstream::Fail(reason) => m.fail_htlc(f.in_id, reason),
                }
                Ok(())
            })
            .await?;
            if let Upstream::Fulfill(_) = up {
                info!(fee = %f.fee, "forward settled");
                self.inner.emit(NodeEvent::Forwarded {
                    in_channel: f.in_channel,
                    out_channel: f.out_channel,
                    fee: f.fee,
                });
            } else {
                info!(reason = ?f.failure, "forward failed back");
            }
            return Ok(());
        }
        if let Some(pid) = store.get::<B256>(Cf::Locks, &paylock_key(channel, id))?
            && let Some(p) = store.get::<PaymentRecord>(Cf::Locks, &pay_key(pid))?
        {
            let event = match p.status {
                PaymentStatus::Pending => None,
                PaymentStatus::Succeeded { .. } => Some(NodeEvent::PaymentSucceeded {
                    id: pid,
                    fee: p.fee(),
                }),
                PaymentStatus::Failed { reason } => Some(NodeEvent::PaymentFailed {
                    id: pid,
                    reason: Some(reason),
                }),
                PaymentStatus::Expired => Some(NodeEvent::PaymentFailed {
                    id: pid,
                    reason: None,
                }),
            };
            if let Some(ev) = event {
                self.inner.emit(ev);
            }
        }
        Ok(())
    }

    /// After a restart: finish what the crash interrupted. Incoming HTLCs not yet forwarded
    /// are decided again; forwards whose preimage is known are settled upstream.
    pub async fn resume_payments(&self) -> Result<(), NodeError> {
        let ids = self.channel_ids();
        for id in ids {
            let Some(rec) = self.inner.channel(id) else {
                continue;
            };
            let received = {
                let r = rec.lock().await;
                if !r.funded || awaiting_acceptance(&r) || r.snapshot.latest().state.is_final {
                    continue;
                }
                htlc::Channel::restore(r.snapshot.clone(), self.inner.keys.clone())?
                    .received_htlcs()
            };
            for h in received {
                let lock = *h.lock();
                let link: Option<(ChannelId, HtlcId)> =
                    self.inner.store.get(Cf::Locks, &in_key(id, lock.id))?;
                match link {
                    None => self.on_received(h).await?,
                    // Forwarded: settle or fail upstream if the crash came in between.
                    Some((out_c, out_id)) => self.after_outcome(out_c, out_id).await?,
                }
            }
        }
        Ok(())
    }

    /// Take back every HTLC we offered whose expiry has passed (the peer co-signs the removal
    /// once its own clock agrees). A removal the peer refused is tried again on the next tick.
    pub(crate) async fn expire_htlcs(&self) -> Result<(), NodeError> {
        let now = self.now();
        // Only the channels whose timer is due (`htlc::node::timers`), never every channel.
        let due_channels = self.inner.timers().due(now);
        for id in due_channels {
            let Some(rec) = self.inner.channel(id) else {
                self.inner.timers().set(id, None);
                continue;
            };
            let due: Vec<HtlcId> = {
                let r = rec.lock().await;
                let expired = if r.funded {
                    r.snapshot.expired_offers(now)
                } else {
                    Vec::new()
                };
                if expired.is_empty() {
                    self.inner.timers().set(id, r.snapshot.next_timeout());
                }
                expired
            };
            if due.is_empty() {
                continue;
            }
            info!(channel = %id, count = due.len(), "taking back expired HTLCs");
            let r = self
                .with_channel(id, |m| {
                    for hid in due {
                        m.expire_htlc(hid);
                    }
                })
                .await;
            if let Err(e) = r {
                warn!(channel = %id, error = %e, "cannot take back expired HTLCs; next tick");
            }
        }
        Ok(())
    }

    /// Start the payment tasks: resume after a restart, then look for expired HTLCs every
    /// `expiry_check`. Ends on [`Node::shutdown`].
    pub(crate) fn spawn_payment_tasks(&self) {
        let node = self.clone();
        let mut stop = self.inner.stopping.subscribe();
        tokio::spawn(async move {
            if let Err(e) = node.resume_payments().await {
                warn!(error = %e, "resuming payments failed");
            }
            // Collections run every 60th tick.
            let mut tick: u64 = 59;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(node.inner.opts.expiry_check) => {}
                    _ = stop.changed() => break,
                }
                if *stop.borrow() {
                    break;
                }
                if let Err(e) = node.expire_htlcs().await {
                    warn!(error = %e, "expiring HTLCs failed");
                }
                tick = tick.wrapping_add(1);
                if tick.is_multiple_of(60) {
                    if let Err(e) = node.collect_abandoned().await {
                        warn!(error = %e, "collecting abandoned openings failed");
                    }
                    if let Err(e) = node.collect_route_instructions().await {
                        warn!(error = %e, "collecting route instructions failed");
                    }
                }
            }
        });
    }
}
