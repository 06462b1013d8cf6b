//! The node's HTTP/JSON API (axum), for operators and for the `hub` CLI's client commands.
//!
//! ```text
//! GET  /info                 address, channels, payments, fees earned
//! GET  /channels             every channel: peer, balances, version, pending HTLCs, flags
//! GET  /balance              our totals: spendable, receivable, locked in flight
//! GET  /htlcs                every pending HTLC lock of every channel
//! GET  /payments             every payment we made (history), oldest id first
//! GET  /payments/{id}        one payment
//! POST /invoice              {"amount": "1000", "hub": "0x…", "valid_secs": 3600} → {"invoice": "vhub1…"}
//! POST /pay                  {"invoice": "vhub1…", "id": "0x…" (optional), "attempts": 3 (optional)}
//!                            → the payment (with attempts > 1: its outcome, after retries)
//! POST /open                 {"hub": "0x…", "deposit": "1000"} → the channel, deposited and funded
//! POST /connect              {"addr": "127.0.0.1:9735", "address": "0x…"} → once a session is up;
//!                            kept up (redialled) from then on, like a configured [[connect]]
//! GET  /gossip               the network map this node believes: announced channels, policies
//! POST /close                {"channel": "0x…"} → 202; the payout follows on chain
//! GET  /virtual              every virtual channel we take part in (ADR 0026)
//! POST /virtual/open         {"hub": "0x…", "peer": "0x…", "deposit": "1000", "lifetime_secs": 86400,
//!                             "then": ["0x…"]} (further hubs of a chain, optional)
//!                            → the virtual channel, once it carries payments
//! POST /virtual/policy       {"hub": "0x…", "open_fee_base": "1000", "open_fee_ppm": 100}: a further
//!                            hub's opening fees, as it announces them (the first hub's come with
//!                            its channel)
//! POST /virtual/pay          {"channel": "0x…", "amount": "10"} → 200 once the payment is co-signed
//! POST /virtual/close        {"channel": "0x…"} → 202; its final state releases the guarantees
//! GET  /metrics              Prometheus text exposition
//! ```
//!
//! Amounts are decimal strings of wei (JSON numbers cannot hold every `u128`). Errors are
//! `{"error": "…"}` with 400 for a bad request, 404 for an unknown item, 500 for a store fault.
//!
//! **Authentication** (issue 12, attack 9). The API can pay and close channels, so every
//! endpoint but `/metrics` requires `Authorization: Bearer <token>`, the node's API token
//! ([`Node::api_token`]; `hub serve` keeps it in `<data_dir>/api.token`, readable by the
//! operator only, and the CLI reads it from there). Every request, `/metrics` included, must
//! name a loopback host in its `Host` header (`127.0.0.1`, `[::1]` or `localhost`): a web page
//! the operator visits cannot reach the API by DNS rebinding, whose requests carry the
//! attacker's host name. Refusals are 401 (token) and 403 (host), as JSON errors, logged. The
//! API listens on loopback only.

use crate::error::NodeError;
use crate::node::Node;
use crate::payments::{Invoice, PaymentRecord, PaymentStatus};
use alloy::primitives::{Address, B256};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use htlc::{Amount, ChannelId};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// A wei amount in JSON: a decimal string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Wei(pub u128);

impl From<Wei> for String {
    fn from(w: Wei) -> String {
        w.0.to_string()
    }
}

impl TryFrom<String> for Wei {
    type Error = String;
    fn try_from(s: String) -> Result<Wei, String> {
        s.trim()
            .parse::<u128>()
            .map(Wei)
            .map_err(|_| format!("{s:?} is not a wei amount (a decimal integer below 2^128)"))
    }
}

impl From<Amount> for Wei {
    fn from(a: Amount) -> Wei {
        Wei(a.0)
    }
}

/// One pending HTLC lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HtlcInfo {
    /// Its channel.
    pub channel: ChannelId,
    /// Its id in the channel.
    pub id: u64,
    /// Amount locked.
    pub amount: Wei,
    /// Its hashlock.
    pub hashlock: B256,
    /// Unix time it expires.
    pub expiry: u64,
    /// Whether we offered it (else we receive it).
    pub offered: bool,
}

/// One channel as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// Its id.
    pub id: ChannelId,
    /// The counterparty.
    pub peer: Address,
    /// Version of the latest co-signed state.
    pub version: u64,
    /// Our balance.
    pub ours: Wei,
    /// Theirs.
    pub theirs: Wei,
    /// Pending HTLC locks.
    pub htlcs: Vec<HtlcInfo>,
    /// Whether its deposits are on chain.
    pub funded: bool,
    /// Whether its final state is co-signed.
    pub closed: bool,
    /// Whether it was paid out on chain.
    pub concluded: bool,
    /// Whether it is disputed or concluded on chain (it takes no new HTLC).
    #[serde(default)]
    pub frozen: bool,
    /// Where it stands, in one word (see [`ChannelStatus`]).
    #[serde(default)]
    pub status: ChannelStatus,
}

/// Where a channel stands, in the order of its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelStatus {
    /// We opened it; the peer has not countersigned the opening state yet.
    Opening,
    /// Co-signed, its deposits not yet seen on chain.
    Funding,
    /// In use.
    #[default]
    Open,
    /// Its final state is co-signed; the payout on chain is to follow.
    Closing,
    /// Taken to chain by a unilateral close: it takes no new HTLC.
    Disputed,
    /// Paid out on chain.
    Closed,
}

impl ChannelStatus {
    /// The status of a channel with these facts, the later stage winning.
    pub fn of(
        awaiting_countersignature: bool,
        funded: bool,
        is_final: bool,
        frozen: bool,
        concluded: bool,
    ) -> ChannelStatus {
        if concluded {
            ChannelStatus::Closed
        } else if frozen {
            ChannelStatus::Disputed
        } else if is_final {
            ChannelStatus::Closing
        } else if awaiting_countersignature {
            ChannelStatus::Opening
        } else if !funded {
            ChannelStatus::Funding
        } else {
            ChannelStatus::Open
        }
    }

    /// The word shown to an operator.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelStatus::Opening => "opening",
            ChannelStatus::Funding => "funding",
            ChannelStatus::Open => "open",
            ChannelStatus::Closing => "closing",
            ChannelStatus::Disputed => "disputed",
            ChannelStatus::Closed => "closed",
        }
    }
}

/// What the node has to do on chain, and by when (`GET /chain`, `hub chain`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainInfo {
    /// Transactions decided and not yet seen in effect, in the order they are sent.
    pub intents: Vec<IntentInfo>,
    /// Channels disputed on chain and not yet paid out.
    pub disputed: Vec<ChannelId>,
    /// Locks of peers whose preimage we hold and that the peer has not settled off chain:
    /// each goes on chain at its deadline (unix seconds).
    pub claim_deadlines: Vec<ClaimDeadline>,
    /// The transaction sent and not yet mined, if any.
    pub in_flight: Option<TxInFlight>,
    /// Blocks a deposit or dispute must be buried under before it is believed.
    pub confirmations: u64,
    /// Channels watched for clients (a watchtower's).
    pub watched: usize,
}

/// One stored intent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentInfo {
    /// What it does (`challenge`, `register_secret`, `close`, `conclude`, `unlock`,
    /// `cooperative_close`, `deposit`).
    pub kind: String,
    /// The channel (none for a claim of deferred payouts).
    pub channel: Option<ChannelId>,
    /// Not sent before this (unix seconds), if it waits.
    pub not_before: Option<u64>,
}

/// A claim that goes on chain at `at` unless the peer settles it first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimDeadline {
    /// The channel.
    pub channel: ChannelId,
    /// The peer's lock.
    pub lock: u64,
    /// When (unix seconds).
    pub at: u64,
}

/// A transaction waiting to be mined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxInFlight {
    /// Its nonce.
    pub nonce: u64,
    /// The highest fee per gas offered so far, wei (exact, as a decimal string).
    pub max_fee: Wei,
    /// The tip offered, wei.
    pub tip: Wei,
}

/// Our totals over every open channel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// What we can send (sum of our balances).
    pub spendable: Wei,
    /// What we can receive (sum of theirs).
    pub receivable: Wei,
    /// Locked in HTLCs we offered.
    pub offered_in_flight: Wei,
    /// Locked in HTLCs offered to us.
    pub received_in_flight: Wei,
    /// Open channels counted.
    pub channels: usize,
}

/// A payment as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentInfo {
    /// Its id.
    pub id: B256,
    /// Who is paid.
    pub payee: Address,
    /// Through which hub.
    pub hub: Address,
    /// What the payee receives.
    pub amount: Wei,
    /// The hub's fee.
    pub fee: Wei,
    /// `pending`, `succeeded`, `failed` or `expired`.
    pub status: String,
    /// Why it failed, if a node said.
    pub reason: Option<String>,
    /// The preimage, once paid (proof of payment).
    pub preimage: Option<B256>,
    /// This id was paid before: the record is that first payment's, nothing new was sent.
    #[serde(default)]
    pub repeated: bool,
    /// Routes tried (a `POST /pay` with `attempts`; 1 otherwise). The id is the last one's.
    #[serde(default = "one")]
    pub attempts: usize,
}

fn one() -> usize {
    1
}

impl From<&PaymentRecord> for PaymentInfo {
    fn from(p: &PaymentRecord) -> PaymentInfo {
        let (status, reason, preimage) = match &p.status {
            PaymentStatus::Pending => ("pending", None, None),
            PaymentStatus::Succeeded { preimage } => {
                ("succeeded", None, Some(B256::from(preimage.0)))
            }
            PaymentStatus::Failed { reason } => ("failed", Some(format!("{reason:?}")), None),
            PaymentStatus::Expired => ("expired", None, None),
        };
        PaymentInfo {
            id: p.id,
            payee: p.invoice.payee,
            hub: p.invoice.hub,
            amount: p.invoice.amount.into(),
            fee: p.fee().into(),
            status: status.into(),
            reason,
            preimage,
            repeated: false,
            attempts: 1,
        }
    }
}

/// A payment we received: an invoice of ours that was paid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedInfo {
    /// The invoice's hashlock (the payer's proof of payment is its preimage).
    pub hashlock: B256,
    /// Through which hub.
    pub hub: Address,
    /// What we received.
    pub amount: Wei,
}

/// What a node says of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its address.
    pub address: Address,
    /// Channels it holds.
    pub channels: usize,
    /// Payments it made.
    pub payments: usize,
    /// Forwarding fees it earned.
    pub fees_earned: Wei,
    /// Payments it forwarded and settled.
    pub forwards: usize,
}

impl Node {
    /// Every virtual channel we take part in.
    pub fn virtual_info(&self) -> Vec<VirtualInfo> {
        use htlc::node::records::{VirtualPhase, VirtualRole};
        self.virtual_channels()
            .into_iter()
            .map(|(id, r)| {
                let latest = self
                    .channel_record(id)
                    .map(|c| c.snapshot.latest().state.clone());
                VirtualInfo {
                    channel: id,
                    role: match r.role {
                        VirtualRole::Opener => "opener",
                        VirtualRole::Acceptor => "acceptor",
                        VirtualRole::Hub => "hub",
                    }
                    .to_string(),
                    hub: r.hub,
                    parties: r.terms.params.participants,
                    phase: match r.phase {
                        VirtualPhase::Opening => "opening",
                        VirtualPhase::Open => "open",
                        VirtualPhase::Closed => "closed",
                        VirtualPhase::Settled => "settled",
                        VirtualPhase::Failed => "failed",
                    }
                    .to_string(),
                    opening: [r.terms.opening[0].into(), r.terms.opening[1].into()],
                    balances: latest
                        .as_ref()
                        .map(|s| [s.balances[0].into(), s.balances[1].into()]),
                    version: latest.as_ref().map(|s| s.version),
                    expires_at: r.terms.expires_at.0,
                    ledgers: r.ledgers.clone(),
                }
            })
            .collect()
    }

    /// Every channel, in id order.
    pub async fn channels_info(&self) -> Vec<ChannelInfo> {
        let mut ids = self.channel_ids();
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(r) = self.channel_record(id) else {
                continue;
            };
            let st = &r.snapshot.latest().state;
            let me = r.snapshot.me();
            out.push(ChannelInfo {
                id,
                peer: r.peer,
                version: st.version,
                ours: st.balances[me.index()].into(),
                theirs: st.balances[1 - me.index()].into(),
                htlcs: st
                    .locks
                    .iter()
                    .map(|l| HtlcInfo {
                        channel: id,
                        id: l.id.0,
                        amount: l.amount.into(),
                        hashlock: B256::from(l.hashlock.0),
                        expiry: l.expiry.0,
                        offered: l.sender == me,
                    })
                    .collect(),
                funded: r.funded,
                closed: st.is_final,
                concluded: r.concluded,
                frozen: r.snapshot.frozen(),
                status: ChannelStatus::of(
                    r.snapshot.awaiting_countersignature(),
                    r.funded,
                    st.is_final,
                    r.snapshot.frozen(),
                    r.concluded,
                ),
            });
        }
        out
    }

    /// Our totals over the open channels (funded, not closed).
    pub async fn balance(&self) -> Balance {
        let mut b = Balance::default();
        for c in self.channels_info().await {
            if !c.funded || c.closed {
                continue;
            }
            b.channels += 1;
            b.spendable.0 = b.spendable.0.saturating_add(c.ours.0);
            b.receivable.0 = b.receivable.0.saturating_add(c.theirs.0);
            for h in &c.htlcs {
                let slot = if h.offered {
                    &mut b.offered_in_flight
                } else {
                    &mut b.received_in_flight
                };
                slot.0 = slot.0.saturating_add(h.amount.0);
            }
        }
        b
    }

    /// What the node says of itself.
    pub async fn info(&self) -> Result<NodeInfo, NodeError> {
        let (fees, forwards) = self.fees_earned()?;
        Ok(NodeInfo {
            address: self.address(),
            channels: self.channel_ids().len(),
            payments: self.payments()?.len(),
            fees_earned: fees.into(),
            forwards,
        })
    }

    /// What the node has to do on chain, and by when.
    pub async fn chain_info(&self) -> Result<ChainInfo, NodeError> {
        let (intents, in_flight, confirmations) = match &self.inner.submitter {
            Some(s) => (
                s.intents()?,
                s.client().in_flight(),
                s.client().confirmations(),
            ),
            None => (Vec::new(), None, 0),
        };
        let mut disputed = Vec::new();
        let mut claim_deadlines = Vec::new();
        for c in self.channels_info().await {
            if c.status == ChannelStatus::Disputed {
                disputed.push(c.id);
            }
            if let Some(r) = self.channel_record(c.id)
                && !r.concluded
            {
                for (lock, _, at) in r.snapshot.claim_deadlines() {
                    claim_deadlines.push(ClaimDeadline {
                        channel: c.id,
                        lock: lock.0,
                        at: at.0,
                    });
                }
            }
        }
        claim_deadlines.sort_by_key(|d| d.at);
        Ok(ChainInfo {
            intents: intents
                .iter()
                .map(|i| IntentInfo {
                    kind: crate::chain::kind(i).to_string(),
                    channel: i.params().map(|p| p.id()),
                    not_before: crate::chain::not_before(i),
                })
                .collect(),
            disputed,
            claim_deadlines,
            in_flight: in_flight.map(|(nonce, max_fee, tip)| TxInFlight {
                nonce,
                max_fee: Amount(max_fee).into(),
                tip: Amount(tip).into(),
            }),
            confirmations,
            watched: self.watched_count(),
        })
    }

    /// The virtual-channel gauges, read from the node's records now.
    fn virtual_gauges(&self) -> crate::metrics::VirtualGauges {
        use htlc::node::records::{VirtualPhase, VirtualRole};
        self.read(|m| {
            let mut by: std::collections::BTreeMap<(String, String), i64> = Default::default();
            let mut g = crate::metrics::VirtualGauges::default();
            let mut served = Amount::ZERO;
            for (_, r) in m.virtuals() {
                let key = (
                    format!("{:?}", r.role).to_lowercase(),
                    format!("{:?}", r.phase).to_lowercase(),
                );
                *by.entry(key).or_default() += 1;
                if r.role == VirtualRole::Hub {
                    if !matches!(r.phase, VirtualPhase::Settled | VirtualPhase::Failed) {
                        served = Amount(
                            served
                                .0
                                .saturating_add(r.terms.value().map_or(u128::MAX, |v| v.0)),
                        );
                    }
                    if r.held.iter().any(Option::is_some) {
                        g.held += 1;
                    }
                }
            }
            g.by_role_phase = by.into_iter().map(|((r, p), n)| (r, p, n)).collect();
            g.served_ether = crate::metrics::ether(served);
            g
        })
    }

    /// The Prometheus exposition, with per-channel gauges read now.
    pub async fn metrics_text(&self) -> String {
        let m = &self.inner.metrics;
        m.balance.reset();
        m.pending.reset();
        for c in self.channels_info().await {
            let ch = c.id.to_string();
            m.balance
                .with_label_values(&[ch.as_str(), "ours"])
                .set(crate::metrics::ether(Amount(c.ours.0)));
            m.balance
                .with_label_values(&[ch.as_str(), "theirs"])
                .set(crate::metrics::ether(Amount(c.theirs.0)));
            m.pending
                .with_label_values(&[ch.as_str()])
                .set(i64::try_from(c.htlcs.len()).unwrap_or(i64::MAX));
        }
        if let Ok(c) = self.chain_info().await {
            let kinds: Vec<String> = c.intents.iter().map(|i| i.kind.clone()).collect();
            m.observe_chain(
                &kinds,
                c.disputed.len(),
                c.watched,
                c.claim_deadlines.first().map(|d| d.at),
                c.in_flight.as_ref().map(|t| t.max_fee.0),
            );
        }
        m.observe_virtual(&self.virtual_gauges());
        let st = self.inner.store.stats();
        m.sync_store(
            st.batches.load(std::sync::atomic::Ordering::Relaxed),
            st.syncs.load(std::sync::atomic::Ordering::Relaxed),
            st.unsynced.load(std::sync::atomic::Ordering::Relaxed),
        );
        m.render()
    }

    /// The token the API requires (see the module documentation).
    pub fn api_token(&self) -> &str {
        &self.inner.opts.api_token
    }

    /// Serve the API on `addr` until the node shuts down; returns the bound address.
    pub async fn serve_api(&self, addr: SocketAddr) -> Result<SocketAddr, NodeError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Listen { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| NodeError::Listen { addr, source })?;
        let app = router(self.clone());
        let mut stop = self.inner.stopping.subscribe();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "API server stopped");
            }
        });
        tracing::info!(%local, "API listening");
        Ok(local)
    }
}

/// An API error: a status and a message.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_status_follows_its_life() {
        use ChannelStatus as S;
        // (awaiting, funded, final, frozen, concluded) → status
        for (facts, want) in [
            ((true, false, false, false, false), S::Opening),
            ((false, false, false, false, false), S::Funding),
            ((false, true, false, false, false), S::Open),
            ((false, true, true, false, false), S::Closing),
            ((false, true, false, true, false), S::Disputed),
            ((false, true, true, true, false), S::Disputed),
            ((false, true, true, true, true), S::Closed),
            ((false, true, false, false, true), S::Closed),
        ] {
            let (a, f, fin, fr, c) = facts;
            assert_eq!(ChannelStatus::of(a, f, fin, fr, c), want, "{facts:?}");
        }
        assert_eq!(serde_json::to_string(&S::Disputed).unwrap(), "\"disputed\"");
        assert_eq!(S::Closing.as_str(), "closing");
    }

    #[test]
    fn loopback_hosts_only() {
        for h in [
            "127.0.0.1:9736",
            "127.0.0.1",
            "localhost:1",
            "LOCALHOST",
            "[::1]:80",
            "[::1]",
        ] {
            assert!(host_is_loopback(h), "{h}");
        }
        for h in [
            "",
            "evil.example:9736",
            "10.0.0.1:9736",
            "127.0.0.1.evil.example",
            "[::2]:1",
            "localhost.evil:1",
        ] {
            assert!(!host_is_loopback(h), "{h}");
        }
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abc", b"abd"));
        assert!(!same_token(b"abc", b"abcd"));
        assert!(!same_token(b"", b"a"));
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> ApiError {
        let status = match &e {
            NodeError::Store(_)
            | NodeError::Wire(_)
            | NodeError::Metrics(_)
            | NodeError::Listen { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            NodeError::UnknownChannel(_) => StatusCode::NOT_FOUND,
            NodeError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        tracing::warn!(error = %e, "API request refused");
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// A JSON request body. Unlike axum's `Json`, a body it cannot read (malformed JSON, a missing
/// content type, a field of the wrong type) is answered like every other refusal: a 4xx with a
/// JSON `{"error": ...}`, and a log line.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(rejection) => {
                let msg = rejection.body_text();
                tracing::warn!(error = %msg, "API request refused");
                Err(ApiError(rejection.status(), msg))
            }
        }
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    let msg = msg.into();
    tracing::warn!(error = %msg, "API request refused");
    ApiError(StatusCode::BAD_REQUEST, msg)
}

/// `POST /invoice`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoiceRequest {
    /// What the payee is to receive.
    pub amount: Wei,
    /// The hub to be paid through.
    pub hub: Address,
    /// Seconds the invoice stays valid (default one hour).
    #[serde(default)]
    pub valid_secs: Option<u64>,
}

/// `POST /pay`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayRequest {
    /// The invoice string.
    pub invoice: String,
    /// The payment id (default: the invoice's hashlock, so one invoice is paid once).
    #[serde(default)]
    pub id: Option<B256>,
    /// Routes to try, at most [`MAX_PAY_ATTEMPTS`] (default 1). With more than one the request
    /// waits for the outcome (at most [`PAY_ATTEMPT_WAIT`] per attempt), leaving out of each
    /// new search the hop the last failure named, and returns the last attempt.
    #[serde(default)]
    pub attempts: Option<usize>,
}

/// Most routes one `POST /pay` tries.
pub const MAX_PAY_ATTEMPTS: usize = 10;

/// Longest wait for one attempt's outcome when a `POST /pay` retries.
pub const PAY_ATTEMPT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `POST /connect`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// Where the node listens (QUIC).
    pub addr: SocketAddr,
    /// Its address (its key is checked in the handshake).
    pub address: Address,
}

/// `GET /gossip`: one channel of the network map this node believes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipInfo {
    /// The channel.
    pub id: ChannelId,
    /// Its participants A and B.
    pub nodes: [Address; 2],
    /// What the adjudicator held for it when checked (a virtual channel: its value, as both
    /// parties signed it).
    pub capacity: Wei,
    /// A's and B's forwarding policies (for their outgoing direction), once heard.
    pub policies: [Option<PolicyInfo>; 2],
    /// A virtual channel between two hubs: its end (chain time, unix seconds); absent for a
    /// ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_until: Option<u64>,
}

/// One direction's forwarding policy, as gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    /// Flat fee per forwarded HTLC.
    pub base_fee: Wei,
    /// Proportional fee, millionths.
    pub fee_ppm: u32,
    /// Expiry delta, seconds.
    pub expiry_delta: u64,
    /// Whether the direction forwards at all.
    pub enabled: bool,
    /// When it was signed (unix seconds).
    pub timestamp: u64,
}

impl From<&htlc::node::gossip::GossipChannel> for GossipInfo {
    fn from(g: &htlc::node::gossip::GossipChannel) -> GossipInfo {
        GossipInfo {
            id: g.ann.params.id(),
            nodes: g.ann.params.participants,
            capacity: g.capacity.into(),
            policies: g.policies.clone().map(|p| {
                p.map(|u| PolicyInfo {
                    base_fee: u.policy.base_fee.into(),
                    fee_ppm: u.policy.fee_ppm,
                    expiry_delta: u.policy.expiry_delta,
                    enabled: u.policy.enabled,
                    timestamp: u.timestamp,
                })
            }),
            virtual_until: g.virtual_until,
        }
    }
}

/// `POST /open`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    /// The hub (already connected) to open with.
    pub hub: Address,
    /// Our deposit.
    pub deposit: Wei,
}

/// `POST /close`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseRequest {
    /// The channel.
    pub channel: ChannelId,
    /// Close on chain with our latest co-signed state, without the peer (paid out after the
    /// challenge window).
    #[serde(default)]
    pub force: bool,
}

/// `POST /virtual/open`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualOpenRequest {
    /// The hub (already connected, with a funded ledger) to open over.
    pub hub: Address,
    /// The other party (a peer of the hub).
    pub peer: Address,
    /// Our deposit into the virtual channel.
    pub deposit: Wei,
    /// How long it lives, seconds (default [`DEFAULT_VIRTUAL_SECS`]).
    #[serde(default)]
    pub lifetime_secs: Option<u64>,
    /// Further hubs after `hub`, in order toward the peer (a chain of hubs, ADR 0026; each
    /// one's opening fee must be known: `POST /virtual/policy`). Default: none.
    #[serde(default)]
    pub then: Vec<Address>,
}

/// `POST /virtual/policy`: a hub's opening fees for virtual channels, as it announces them, for
/// opening over it as a further hub of a chain.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualPolicyRequest {
    /// The hub.
    pub hub: Address,
    /// Its flat opening fee, wei.
    pub open_fee_base: Wei,
    /// Its proportional opening fee, millionths of the value.
    pub open_fee_ppm: u32,
}

/// `POST /virtual/pay`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualPayRequest {
    /// The virtual channel.
    pub channel: ChannelId,
    /// What to pay the other party.
    pub amount: Wei,
}

/// One virtual channel in `GET /virtual`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualInfo {
    /// Its id.
    pub channel: ChannelId,
    /// Our part: "opener", "acceptor" or "hub".
    pub role: String,
    /// Its hub.
    pub hub: Address,
    /// Its parties, A then B.
    pub parties: [Address; 2],
    /// "opening", "open", "closed", "settled" or "failed".
    pub phase: String,
    /// Its opening balances, A's then B's.
    pub opening: [Wei; 2],
    /// Its balances now, A's then B's (a party's view; the hub keeps none).
    pub balances: Option<[Wei; 2]>,
    /// The version of its latest co-signed state (a party's view).
    pub version: Option<u64>,
    /// When it must be closed (unix seconds).
    pub expires_at: u64,
    /// The ledgers that lock its guarantee, as we see them.
    pub ledgers: Vec<ChannelId>,
}

/// Default lifetime of a virtual channel opened through the API, seconds.
pub const DEFAULT_VIRTUAL_SECS: u64 = 86_400;

/// Default validity of an invoice made through the API, seconds.
pub const DEFAULT_INVOICE_SECS: u64 = 3600;

/// Whether a `Host` header names this machine's loopback (with or without a port).
pub fn host_is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // "[::1]:9736" or "[::1]"
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Compare two tokens in time independent of where they differ.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The API's gate: a loopback `Host` on every request, the bearer token on every one but
/// `/metrics`.
async fn guard(
    State(n): State<Node>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = req.headers();
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !host_is_loopback(host) {
        tracing::warn!(%host, path = %req.uri().path(), "API request refused: not a loopback host");
        return ApiError(
            StatusCode::FORBIDDEN,
            format!("host {host:?} refused: the API answers loopback hosts only"),
        )
        .into_response();
    }
    // `/metrics` is for scrapers; `/dashboard` is a static page holding no data (it reads the
    // API with the token the operator puts in its URL fragment, which is never sent).
    if !matches!(req.uri().path(), "/metrics" | "/dashboard") {
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same_token(presented.trim().as_bytes(), n.api_token().as_bytes()) {
            tracing::warn!(path = %req.uri().path(), "API request refused: missing or wrong token");
            return ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API token (Authorization: Bearer <token>; `hub serve` writes \
                 it to <data_dir>/api.token)"
                    .into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// The API's routes over `node`, behind the token and host check.
pub fn router(node: Node) -> Router {
    Router::new()
        .route("/info", get(info))
        .route("/channels", get(channels))
        .route("/balance", get(balance))
        .route("/htlcs", get(htlcs))
        .route("/payments", get(payments))
        .route("/payments/{id}", get(payment))
        .route("/received", get(received))
        .route("/invoice", post(invoice))
        .route("/pay", post(pay))
        .route("/open", post(open))
        .route("/connect", post(connect))
        .route("/gossip", get(gossip))
        .route("/close", post(close))
        .route("/virtual", get(virtual_list))
        .route("/virtual/open", post(virtual_open))
        .route("/virtual/policy", post(virtual_policy))
        .route("/virtual/pay", post(virtual_pay))
        .route("/virtual/close", post(close_virtual))
        .route("/chain", get(chain))
        .route("/dashboard", get(dashboard))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(node.clone(), guard))
        .with_state(node)
}

/// The dashboard: one static page that polls the API every second (no build step, no
/// dependency).
const DASHBOARD: &str = include_str!("dashboard.html");

async fn dashboard() -> impl IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        DASHBOARD,
    )
}

async fn chain(State(n): State<Node>) -> Result<Json<ChainInfo>, ApiError> {
    Ok(Json(n.chain_info().await?))
}

async fn info(State(n): State<Node>) -> Result<Json<NodeInfo>, ApiError> {
    Ok(Json(n.info().await?))
}

async fn channels(State(n): State<Node>) -> Json<Vec<ChannelInfo>> {
    Json(n.channels_info().await)
}

async fn balance(State(n): State<Node>) -> Json<Balance> {
    Json(n.balance().await)
}

async fn htlcs(State(n): State<Node>) -> Json<Vec<HtlcInfo>> {
    Json(
        n.channels_info()
            .await
            .into_iter()
            .flat_map(|c| c.htlcs)
            .collect(),
    )
}

async fn payments(State(n): State<Node>) -> Result<Json<Vec<PaymentInfo>>, ApiError> {
    Ok(Json(n.payments()?.iter().map(PaymentInfo::from).collect()))
}

async fn received(State(n): State<Node>) -> Result<Json<Vec<ReceivedInfo>>, ApiError> {
    Ok(Json(
        n.received()?
            .into_iter()
            .map(|i| ReceivedInfo {
                hashlock: B256::from(i.hashlock.0),
                hub: i.hub,
                amount: i.amount.into(),
            })
            .collect(),
    ))
}

async fn payment(
    State(n): State<Node>,
    Path(id): Path<String>,
) -> Result<Json<PaymentInfo>, ApiError> {
    let id: B256 = id
        .parse()
        .map_err(|_| bad(format!("{id:?} is not a payment id (32 bytes of hex)")))?;
    match n.payment(id)? {
        Some(p) => Ok(Json(PaymentInfo::from(&p))),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no payment {id}"))),
    }
}

async fn invoice(
    State(n): State<Node>,
    JsonBody(r): JsonBody<InvoiceRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let inv = n
        .create_invoice(
            Amount(r.amount.0),
            r.valid_secs.unwrap_or(DEFAULT_INVOICE_SECS),
            r.hub,
        )
        .await?;
    Ok(Json(
        serde_json::json!({ "invoice": inv.encode(), "hashlock": B256::from(inv.hashlock.0) }),
    ))
}

async fn pay(
    State(n): State<Node>,
    JsonBody(r): JsonBody<PayRequest>,
) -> Result<Json<PaymentInfo>, ApiError> {
    let inv = Invoice::decode(&r.invoice).map_err(|e| bad(e.to_string()))?;
    let id = r.id.unwrap_or(B256::from(inv.hashlock.0));
    if let Some(first) = n.payment(id)? {
        return Ok(Json(PaymentInfo {
            repeated: true,
            ..PaymentInfo::from(&first)
        }));
    }
    let attempts = r.attempts.unwrap_or(1);
    if attempts == 0 || attempts > MAX_PAY_ATTEMPTS {
        return Err(bad(format!("attempts must be 1 to {MAX_PAY_ATTEMPTS}")));
    }
    if attempts == 1 {
        let rec = n.pay(&inv, id).await?;
        return Ok(Json(PaymentInfo::from(&rec)));
    }
    let recs = n
        .pay_with_retries(&inv, id, attempts, PAY_ATTEMPT_WAIT)
        .await?;
    let last = recs.last().ok_or_else(|| bad("no attempt was made"))?;
    Ok(Json(PaymentInfo {
        attempts: recs.len(),
        ..PaymentInfo::from(last)
    }))
}

async fn connect(
    State(n): State<Node>,
    JsonBody(r): JsonBody<ConnectRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if r.address == n.address() {
        return Err(bad("that is this node's own address"));
    }
    // Kept up like a configured `[[connect]]`: redialled whenever the session ends.
    n.keep_connected(r.addr, r.address, std::time::Duration::from_secs(2));
    let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
    while !n.is_connected(r.address).await {
        if tokio::time::Instant::now() > deadline {
            return Err(ApiError(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "no session with {} at {} yet (still trying every 2 s)",
                    r.address, r.addr
                ),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(Json(serde_json::json!({ "connected": r.address })))
}

/// How long `POST /connect` waits for the first session.
const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn gossip(State(n): State<Node>) -> Json<Vec<GossipInfo>> {
    Json(n.gossip().values().map(GossipInfo::from).collect())
}

async fn open(
    State(n): State<Node>,
    JsonBody(r): JsonBody<OpenRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = n.open_channel(r.hub, Amount(r.deposit.0)).await?;
    n.fund(id).await?;
    Ok(Json(serde_json::json!({ "channel": id })))
}

async fn close(
    State(n): State<Node>,
    JsonBody(r): JsonBody<CloseRequest>,
) -> Result<StatusCode, ApiError> {
    if r.force {
        n.force_close(r.channel).await?;
    } else {
        n.close(r.channel).await?;
    }
    Ok(StatusCode::ACCEPTED)
}

async fn virtual_list(State(n): State<Node>) -> Json<Vec<VirtualInfo>> {
    Json(n.virtual_info())
}

async fn virtual_open(
    State(n): State<Node>,
    JsonBody(r): JsonBody<VirtualOpenRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let lifetime = r.lifetime_secs.unwrap_or(DEFAULT_VIRTUAL_SECS);
    let hubs: Vec<Address> = std::iter::once(r.hub).chain(r.then).collect();
    let id = n
        .open_virtual_over(&hubs, r.peer, Amount(r.deposit.0), lifetime)
        .await?;
    Ok(Json(serde_json::json!({ "channel": id })))
}

async fn virtual_policy(
    State(n): State<Node>,
    JsonBody(r): JsonBody<VirtualPolicyRequest>,
) -> Result<StatusCode, ApiError> {
    if r.open_fee_ppm > 1_000_000 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "open_fee_ppm must be at most 1000000 (100 %)".into(),
        ));
    }
    let policy = htlc::vchan::VirtualPolicy {
        open_fee_base: Amount(r.open_fee_base.0),
        open_fee_ppm: r.open_fee_ppm,
        ..htlc::vchan::VirtualPolicy::default()
    };
    n.set_virtual_policy(r.hub, policy).await?;
    Ok(StatusCode::OK)
}

async fn virtual_pay(
    State(n): State<Node>,
    JsonBody(r): JsonBody<VirtualPayRequest>,
) -> Result<StatusCode, ApiError> {
    if !n.virtual_channels().iter().any(|(id, _)| *id == r.channel) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no virtual channel {}", r.channel),
        ));
    }
    n.transfer(r.channel, Amount(r.amount.0)).await?;
    Ok(StatusCode::OK)
}

async fn close_virtual(
    State(n): State<Node>,
    JsonBody(r): JsonBody<CloseRequest>,
) -> Result<StatusCode, ApiError> {
    if !n.virtual_channels().iter().any(|(id, _)| *id == r.channel) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no virtual channel {}", r.channel),
        ));
    }
    n.close(r.channel).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn metrics(State(n): State<Node>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        n.metrics_text().await,
    )
}
