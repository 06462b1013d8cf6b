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
//! Every step above is the node machine's (`htlc::node::Node`): the HTLC that arrives, the
//! decision on it and the lock offered on are one step and one batch, so a crash between two
//! steps is resumed on restart: rule 3 (forward only what is committed), rule 4 (fail back
//! only once the outgoing lock is removed by a co-signed state), rule 5 (a learned preimage is
//! persisted with the state that taught it, then used upstream). This module turns the
//! operator's payment commands into steps and reads the payment records back
//! (their keys: `crate::persist`).

use crate::error::{NodeError, PayError};
use crate::node::Node;
use alloy::primitives::{Address, B256};
use htlc::forward::ForwardPolicy;
pub use htlc::node::invoice::{Invoice, InvoiceError};
pub use htlc::node::payment::{ForwardRecord, HtlcPlan, PaymentStatus};
pub use htlc::node::records::{PaymentRecord, Route as RouteInstr};
use htlc::{Amount, Preimage};
use tracing::{info, warn};

pub use crate::node::ROUTE_INSTRUCTION_TTL_SECS;

/// Default seconds the payee's HTLC must leave before expiring: two hours (above the smallest
/// delta a hub must keep, `htlc::forward::MIN_OUTGOING_EXPIRY_SECS`).
pub const DEFAULT_FINAL_EXPIRY_DELTA: u64 = 7200;
const _: () = assert!(DEFAULT_FINAL_EXPIRY_DELTA > htlc::forward::MIN_OUTGOING_EXPIRY_SECS);

impl Node {
    /// Make an invoice for `amount`, valid `valid_secs` from now, to be paid through `hub`.
    pub async fn create_invoice(
        &self,
        amount: Amount,
        valid_secs: u64,
        hub: Address,
    ) -> Result<Invoice, NodeError> {
        let preimage = Preimage(rand::random());
        let invoice = Invoice {
            payee: self.address(),
            payee_key: self.public_key(),
            hub,
            amount,
            hashlock: preimage.hashlock(),
            expires_at: self.now().0.saturating_add(valid_secs),
            final_expiry_delta: DEFAULT_FINAL_EXPIRY_DELTA,
        };
        let inv = invoice.clone();
        self.step(|m| m.add_invoice(inv, preimage))?.wait().await?;
        Ok(invoice)
    }

    /// The record of payment `id`, if we made it.
    pub fn payment(&self, id: B256) -> Result<Option<PaymentRecord>, NodeError> {
        Ok(self.read(|m| m.payment(id).cloned()))
    }

    /// Wait until our payment `id` ends (succeeds, fails or expires), at most `wait`, and
    /// return its record as it then stands: still pending if the wait ran out, `None` for a
    /// payment we never made. Woken by the payment's own outcome, not by every event.
    pub async fn wait_settled(
        &self,
        id: B256,
        wait: std::time::Duration,
    ) -> Result<Option<PaymentRecord>, NodeError> {
        // Declared before the receiver, so dropped after it: it then finds the closed sender.
        let _unregister = Unwait {
            inner: &self.inner,
            id,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.settling().entry(id).or_default().push(tx);
        // Registered first, then read: an outcome told in between is already in the record.
        let pending = self
            .payment(id)?
            .is_some_and(|r| r.status == PaymentStatus::Pending);
        if pending {
            let _ = tokio::time::timeout(wait, rx).await;
        }
        self.payment(id)
    }

    /// Every payment we made, in id order.
    pub fn payments(&self) -> Result<Vec<PaymentRecord>, NodeError> {
        Ok(self.read(|m| m.book().payments.values().cloned().collect()))
    }

    /// Invoices of ours that were paid (we revealed the preimage), in hashlock order.
    pub fn received(&self) -> Result<Vec<Invoice>, NodeError> {
        Ok(self.read(|m| {
            m.book()
                .invoices
                .values()
                .filter(|r| r.paid)
                .map(|r| r.invoice.clone())
                .collect()
        }))
    }

    /// Fees we earned as a hub (forwards settled on both sides) and how many forwards.
    pub fn fees_earned(&self) -> Result<(Amount, usize), NodeError> {
        Ok(self.read(|m| m.fees_earned()))
    }

    /// The announced channels we believe, with their policies (gossip).
    pub fn gossip(
        &self,
    ) -> std::collections::BTreeMap<htlc::ChannelId, htlc::node::gossip::GossipChannel> {
        self.read(|m| m.book().gossip.clone())
    }

    /// Announce our funded channel `id` to its peer (channels seen funded on chain are
    /// announced by themselves; this is for a node without a chain: tests and benchmarks).
    pub async fn announce_channel(&self, id: htlc::ChannelId) -> Result<(), NodeError> {
        let now = self.now();
        self.step_wait(|m| Ok::<_, NodeError>(m.announce_channel(now, id)))
            .await
    }

    /// Change our forwarding policy; every channel we announced gets a signed update relayed
    /// to the network.
    pub async fn update_policy(&self, policy: ForwardPolicy) -> Result<(), NodeError> {
        let now = self.now();
        self.step_wait(|m| Ok::<_, NodeError>(m.update_policy(now, policy)))
            .await
    }

    /// The hub policy `hub` announced to us, if any.
    pub fn hub_policy(&self, hub: Address) -> Result<Option<ForwardPolicy>, NodeError> {
        Ok(self.read(|m| m.book().policies.get(&hub).copied()))
    }

    /// The router graph this node searches to pay `invoice`: its own channels (a virtual one
    /// as an edge of its own kind), the announced channels it believes, and the invoice's last
    /// hop. For diagnostics: which edges a payment could take.
    pub fn route_graph(
        &self,
        invoice: &Invoice,
    ) -> Result<router::ChannelGraph, crate::routing::RoutingError> {
        self.read(|m| crate::routing::graph_for(m, invoice))
    }

    /// Pay `invoice` through its hub, as payment `id`. Returns once the HTLC is offered; the
    /// outcome arrives as [`crate::events::NodeEvent::PaymentSucceeded`] /
    /// [`crate::events::NodeEvent::PaymentFailed`] and in [`Node::payment`]. Paying an id
    /// again never pays twice: it returns the existing record.
    ///
    /// An invoice of a hub we hold a channel with is paid through it; any other over the hubs
    /// the router chooses from gossip (each learns only its own onion layer).
    pub async fn pay(&self, invoice: &Invoice, id: B256) -> Result<PaymentRecord, NodeError> {
        let now = self.now();
        let direct = self.read(|m| m.has_funded_channel(invoice.hub) || m.payment(id).is_some());
        if direct {
            self.step(|m| m.pay(now, id, invoice))?.wait().await?;
        } else {
            let hubs = self
                .read(|m| crate::routing::choose_hubs(m, invoice, &[]))
                .map_err(|e| PayError::NoRoute(e.to_string()))?;
            self.step(|m| m.pay_route(now, id, invoice, &hubs))?
                .wait()
                .await?;
        }
        self.paid(id)
    }

    /// Pay `invoice` and wait for the outcome, trying other routes when an attempt fails at a
    /// hub on the way: each failure names its hub (the onion's MAC proves it), and the
    /// direction that failed is left out of the next search, up to `attempts` attempts, each
    /// waited for at most `wait`. Attempt 0 has id `id`, attempt k the hash of `id` and k.
    /// Returns every attempt's record, the last one settled (succeeded, or the last failure).
    pub async fn pay_with_retries(
        &self,
        invoice: &Invoice,
        id: B256,
        attempts: usize,
        wait: std::time::Duration,
    ) -> Result<Vec<PaymentRecord>, NodeError> {
        let mut excluded: Vec<(Address, Address)> = Vec::new();
        let mut records = Vec::new();
        for k in 0..attempts.max(1) {
            let aid = if k == 0 {
                id
            } else {
                alloy::primitives::keccak256([id.as_slice(), &(k as u64).to_be_bytes()].concat())
            };
            let now = self.now();
            let hubs = self
                .read(|m| crate::routing::choose_hubs(m, invoice, &excluded))
                .map_err(|e| PayError::NoRoute(e.to_string()))?;
            self.step(|m| m.pay_route(now, aid, invoice, &hubs))?
                .wait()
                .await?;
            self.paid(aid)?;
            let rec = self
                .wait_settled(aid, wait)
                .await?
                .ok_or(NodeError::Stopped)?;
            let retry = match (&rec.status, rec.failed_at) {
                (PaymentStatus::Failed { .. }, Some((node, reason)))
                    if crate::routing::worth_another_route(reason) && node != invoice.payee =>
                {
                    // The failing hub could not pass it to the next node on the path.
                    let i = rec.path.iter().position(|n| *n == node);
                    let next = i.and_then(|i| rec.path.get(i + 1)).copied();
                    next.map(|next| (node, next))
                }
                _ => None,
            };
            records.push(rec);
            match retry {
                Some(dir) => {
                    warn!(payment = %id, from = %dir.0, to = %dir.1, "attempt failed at a hub; routing around it");
                    excluded.push(dir);
                }
                None => break,
            }
        }
        Ok(records)
    }

    /// Pay `invoice` in parts, each over its own hubs (`parts`: the hubs in order, our peer
    /// first, and the amount the part delivers; they must add up to the invoice). The payee
    /// holds the parts until all arrived, then claims them together, or fails them all after
    /// a minute. Returns the parts' payment ids (see [`htlc::node::machine::part_id`]) once
    /// every HTLC is offered.
    pub async fn pay_parts(
        &self,
        invoice: &Invoice,
        id: B256,
        parts: &[(Vec<Address>, Amount)],
    ) -> Result<Vec<B256>, NodeError> {
        let now = self.now();
        let mut ids = Vec::new();
        self.step(|m| {
            m.pay_parts(now, id, invoice, parts).map(|(out, i)| {
                ids = i;
                out
            })
        })?
        .wait()
        .await?;
        for pid in &ids {
            self.paid(*pid)?;
        }
        Ok(ids)
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
        let now = self.now();
        self.step(|m| m.pay_planned(now, id, invoice, plan))?
            .wait()
            .await?;
        self.paid(id)
    }

    fn paid(&self, id: B256) -> Result<PaymentRecord, NodeError> {
        let record = self.payment(id)?.ok_or(NodeError::Stopped)?;
        self.inner.metrics.payment_sent(id);
        info!(payment = %id, amount = %record.invoice.amount, fee = %record.fee(), "payment sent");
        Ok(record)
    }

    /// After a restart: finish what the crash interrupted (incoming HTLCs not yet decided,
    /// forwards whose outcome is known, credits of our deposits not yet co-signed).
    pub async fn resume_payments(&self) -> Result<(), NodeError> {
        let now = self.now();
        self.step_wait(|m| Ok::<_, NodeError>(m.resume(now))).await
    }

    /// Start the payment tasks: resume after a restart, then take back expired HTLCs when
    /// the machine's next timeout comes (checked at least every `expiry_check`). Ends on
    /// [`Node::shutdown`].
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
                let now = node.now();
                let due = node.read(|m| m.poll_timeout().is_some_and(|t| t <= now));
                if due
                    && let Err(e) = node
                        .step_wait(|m| Ok::<_, NodeError>(m.handle_timeout(now)))
                        .await
                {
                    warn!(error = %e, "expiring HTLCs failed");
                }
                tick = tick.wrapping_add(1);
                if tick.is_multiple_of(60) {
                    if let Err(e) = node.collect_abandoned().await {
                        warn!(error = %e, "collecting abandoned openings failed");
                    }
                    // Also collects route instructions whose HTLC never came.
                    if let Err(e) = node
                        .step_wait(|m| Ok::<_, NodeError>(m.handle_timeout(now)))
                        .await
                    {
                        warn!(error = %e, "collecting route instructions failed");
                    }
                }
            }
        });
    }
}

/// Takes a payment's waiters that are gone (ended, timed out, or dropped) off the list.
struct Unwait<'a> {
    inner: &'a crate::node::Inner,
    id: B256,
}

impl Drop for Unwait<'_> {
    fn drop(&mut self) {
        let mut settling = self.inner.settling();
        if let Some(waiters) = settling.get_mut(&self.id) {
            waiters.retain(|w| !w.is_closed());
            if waiters.is_empty() {
                settling.remove(&self.id);
            }
        }
    }
}
