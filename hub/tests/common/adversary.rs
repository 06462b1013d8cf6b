//! An adversarial peer for the hub's security tests (issue 12): a client over real QUIC that
//! can send any frame, any proposal and any signature. It keeps an honest machine for its side
//! of each channel, so it can also behave (answer the hub, pay) between attacks, and it builds
//! forged proposals on that machine's latest co-signed state, signed with its real key, so the
//! hub's only defence is its own rules.

use alloy::primitives::{Address, U256};
use htlc::ops::{Deposits, Limits, NextIds};
use htlc::sig::Keys;
use htlc::update::sign_state;
use htlc::{
    Amount, Channel, ChannelId, ChannelParams, ChannelState, Effect, Expiry, Message, Op,
    RejectReason, SignedState,
};
use hub::transport;
use hub::wire::{self, Body, DEFAULT_MAX_FRAME, ErrorCode, Frame};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The hub's answer to a forged proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The hub countersigned it: the attack worked.
    Accepted,
    /// The hub refused it with this reason.
    Rejected(RejectReason),
    /// The hub refused the frame itself (an error frame or a `Refused` body).
    Refused(ErrorCode, String),
}

/// A peer that sends whatever it likes.
pub struct Adversary {
    /// Its key.
    pub keys: Keys,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    /// Its connection (tests close it, or watch it being closed).
    pub conn: quinn::Connection,
    _endpoint: quinn::Endpoint,
    /// The last sequence number it sent (a second session of the same key continues it).
    pub seq: u64,
    /// Its honest machine for each channel it opened.
    pub channels: HashMap<ChannelId, Channel>,
    /// The co-signed opening state of each channel it opened.
    pub openings: HashMap<ChannelId, SignedState>,
    /// The hub's refusals seen so far (code, detail).
    pub refusals: Vec<(ErrorCode, String)>,
    /// The clock it stamps its own machine's operations with.
    pub now: Expiry,
}

impl Adversary {
    /// Connect to the hub at `addr` as `keys` (authenticated like any peer).
    pub async fn connect(addr: SocketAddr, keys: Keys) -> Adversary {
        let endpoint = transport::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let s = transport::connect(&endpoint, addr, &keys, None, DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        let now = Expiry(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
        Adversary {
            keys,
            send: s.send,
            recv: s.recv,
            conn: s.conn,
            _endpoint: endpoint,
            seq: 0,
            channels: HashMap::new(),
            openings: HashMap::new(),
            refusals: Vec::new(),
            now,
        }
    }

    /// Its address.
    pub fn address(&self) -> Address {
        self.keys.address()
    }

    /// Send any frame.
    pub async fn send_frame(&mut self, f: &Frame) {
        wire::write_frame(&mut self.send, f).await.unwrap();
    }

    /// Send a body as the next sequenced message.
    pub async fn send(&mut self, body: Body) {
        self.seq += 1;
        let f = Frame::Msg {
            seq: self.seq,
            body,
        };
        self.send_frame(&f).await;
    }

    /// The next body from the hub within `wait` (Msg frames are acknowledged; an error frame
    /// comes back as a `Refused` body with sequence 0), or `None`.
    pub async fn next(&mut self, wait: Duration) -> Option<Body> {
        loop {
            let f = tokio::time::timeout(wait, wire::read_frame(&mut self.recv, DEFAULT_MAX_FRAME))
                .await
                .ok()?
                .ok()??;
            match f {
                Frame::Msg { seq, body } => {
                    self.send_frame(&Frame::Ack { seq }).await;
                    if let Body::Refused { code, detail, .. } = &body {
                        self.refusals.push((*code, detail.clone()));
                    }
                    return Some(body);
                }
                Frame::Error { code, detail } => {
                    self.refusals.push((code, detail.clone()));
                    return Some(Body::Refused {
                        seq: 0,
                        code,
                        detail,
                    });
                }
                Frame::Ack { .. } | Frame::Auth { .. } | Frame::Gossip(_) => {}
            }
        }
    }

    /// Wait for the hub's next refusal (handling everything else honestly meanwhile).
    pub async fn refusal(&mut self) -> (ErrorCode, String) {
        for _ in 0..100 {
            match self.next(Duration::from_secs(10)).await {
                Some(Body::Refused { code, detail, .. }) => return (code, detail),
                Some(other) => self.handle(other).await,
                None => panic!("no refusal from the hub"),
            }
        }
        panic!("no refusal from the hub")
    }

    /// Handle a body honestly: channel messages go to the machine, its replies to the hub.
    pub async fn handle(&mut self, body: Body) {
        if let Body::Channel(m) = body {
            let id = m.channel_id();
            let now = self.now;
            let effects = match self.channels.get_mut(&id) {
                Some(ch) => ch.handle(m, now).unwrap_or_default(),
                None => return,
            };
            self.carry(effects).await;
        }
    }

    async fn carry(&mut self, effects: Vec<Effect>) {
        for e in effects {
            if let Effect::Send(m) = e {
                self.send(Body::Channel(m)).await;
            }
        }
    }

    /// Open a channel with the hub: `deposit` on our side, `asset`, `challenge` seconds of
    /// window. Returns its id once the hub countersigns, or the hub's refusal.
    pub async fn open(
        &mut self,
        hub: Address,
        deposit: Amount,
        asset: Address,
        challenge: u64,
    ) -> Result<ChannelId, (ErrorCode, String)> {
        self.open_with(hub, [deposit, Amount::ZERO], asset, challenge)
            .await
    }

    /// As [`Adversary::open`] with both opening balances chosen (the hub's too).
    pub async fn open_with(
        &mut self,
        hub: Address,
        balances: [Amount; 2],
        asset: Address,
        challenge: u64,
    ) -> Result<ChannelId, (ErrorCode, String)> {
        let params = ChannelParams {
            chain_id: 31337,
            adjudicator: Address::ZERO,
            participants: [self.address(), hub],
            asset,
            challenge_duration: challenge,
            nonce: U256::from(rand::random::<u64>()),
        };
        self.open_params(params, balances).await
    }

    /// Open with these exact parameters.
    pub async fn open_params(
        &mut self,
        params: ChannelParams,
        balances: [Amount; 2],
    ) -> Result<ChannelId, (ErrorCode, String)> {
        let id = params.id();
        let state = ChannelState::opening(id, balances);
        let sig = sign_state(&params, &self.keys, &state).unwrap();
        self.send(Body::OpenChannel {
            params: params.clone(),
            balances,
            sig,
        })
        .await;
        for _ in 0..20 {
            match self.next(Duration::from_secs(10)).await {
                Some(Body::ChannelAccepted {
                    channel_id,
                    sig: theirs,
                }) if channel_id == id => {
                    let signed = SignedState {
                        state,
                        sigs: [sig, theirs],
                    };
                    self.openings.insert(id, signed.clone());
                    let ch = Channel::from_cosigned(
                        params,
                        self.keys.clone(),
                        Limits::default(),
                        signed,
                    )
                    .unwrap();
                    self.channels.insert(id, ch);
                    return Ok(id);
                }
                Some(Body::Refused { code, detail, .. }) => return Err((code, detail)),
                Some(other) => self.handle(other).await,
                None => break,
            }
        }
        panic!("no answer to the open")
    }

    /// Queue operations on our honest machine and exchange with the hub until quiet.
    pub async fn honest(&mut self, id: ChannelId, f: impl FnOnce(&mut Channel)) {
        let now = self.now;
        let effects = {
            let ch = self.channels.get_mut(&id).unwrap();
            f(ch);
            ch.propose(now).unwrap()
        };
        self.carry(effects).await;
        self.settle(id).await;
    }

    /// Exchange with the hub until both hold the same latest state of `id` as `hub_state`
    /// returns (polled), and nothing is in flight on our side.
    pub async fn sync<F, Fut>(&mut self, id: ChannelId, hub_state: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = SignedState>,
    {
        for _ in 0..400 {
            let theirs = hub_state().await;
            let ch = &self.channels[&id];
            if theirs == *ch.latest() && !ch.has_pending() && ch.queued() == 0 {
                return;
            }
            if let Some(b) = self.next(Duration::from_millis(100)).await {
                self.handle(b).await;
            }
        }
        panic!("never in step with the hub");
    }

    /// Exchange with the hub until our machine of `id` has nothing in flight.
    pub async fn settle(&mut self, id: ChannelId) {
        for _ in 0..200 {
            if !self.channels[&id].has_pending() && self.channels[&id].queued() == 0 {
                return;
            }
            match self.next(Duration::from_secs(10)).await {
                Some(b) => self.handle(b).await,
                None => panic!("the hub went quiet with our proposal in flight"),
            }
        }
    }

    /// As [`Adversary::forge`], trying again (up to 50 times) while the hub answers `Conflict`
    /// because a proposal of its own is in flight (which our machine answers meanwhile).
    pub async fn forge_when_idle(&mut self, id: ChannelId, ops: Vec<Op>) -> Answer {
        for _ in 0..50 {
            match self.forge(id, ops.clone()).await {
                Answer::Rejected(RejectReason::Conflict) => {
                    if let Some(b) = self.next(Duration::from_millis(100)).await {
                        self.handle(b).await;
                    }
                }
                other => return other,
            }
        }
        panic!("the hub never stopped proposing");
    }

    /// Propose `ops` on channel `id`, applied without any of our own checks (as a cheat
    /// would) to our latest co-signed state, signed correctly with our key, and return the
    /// hub's answer. The version is above everything we know of.
    pub async fn forge(&mut self, id: ChannelId, ops: Vec<Op>) -> Answer {
        let (msg, version) = {
            let ch = &self.channels[&id];
            let mut state = ch.latest().state.clone();
            let mut ids: NextIds = ch.snapshot().next_ids();
            let lax = Deposits {
                holdings: Amount::MAX,
                uncredited: [Amount::MAX; 2],
            };
            let limits = Limits {
                max_pending_locks: usize::MAX,
                ..Limits::default()
            };
            htlc::ops::apply_batch(&mut state, &mut ids, &ops, ch.me(), self.now, &limits, lax)
                .unwrap_or_else(|e| panic!("the forged batch does not even apply: {e:?}"));
            let version = ch.latest().state.version.max(ch.snapshot().version_floor()) + 1;
            state.version = version;
            let sig = self.keys.sign_digest(ch.digest(&state).unwrap());
            (
                Message::Propose {
                    channel_id: id,
                    version,
                    ops,
                    sig,
                },
                (version, state, ids, sig),
            )
        };
        let (version, state, ids, ours) = version;
        // Our honest machine must never reuse this version.
        self.send(Body::Channel(msg)).await;
        for _ in 0..100 {
            match self.next(Duration::from_secs(10)).await {
                Some(Body::Channel(Message::Accept {
                    version: v, sig, ..
                })) if v == version => {
                    // Keep our machine in step with the state the hub co-signed.
                    let ch = self.channels.remove(&id).unwrap();
                    let mut sigs = [sig; 2];
                    sigs[ch.me().index()] = ours;
                    let snap = edit(ch.snapshot(), |r| {
                        r.latest = SignedState { state, sigs };
                        r.next_ids = ids;
                        r.version_floor = version;
                    });
                    self.channels
                        .insert(id, Channel::restore(snap, self.keys.clone()).unwrap());
                    return Answer::Accepted;
                }
                Some(Body::Channel(Message::Reject {
                    version: v, reason, ..
                })) if v == version => {
                    self.bump(id, version);
                    return Answer::Rejected(reason);
                }
                Some(Body::Refused { code, detail, .. }) => return Answer::Refused(code, detail),
                Some(other) => self.handle(other).await,
                None => break,
            }
        }
        panic!("no answer to the forged proposal")
    }

    /// After a forged proposal at `version` was refused, move our machine's floor past it by
    /// restoring it from an edited snapshot (the hub's floor rose to it).
    fn bump(&mut self, id: ChannelId, version: u64) {
        let ch = self.channels.remove(&id).unwrap();
        let floor = ch.snapshot().version_floor().max(version);
        let snap = edit(ch.snapshot(), |r| r.version_floor = floor);
        self.channels
            .insert(id, Channel::restore(snap, self.keys.clone()).unwrap());
    }
}

/// The fields of `htlc::Snapshot`, in its order: an attacker edits its own record as it likes
/// (from outside the protocol core, a snapshot's fields change only through its record). A
/// change of the snapshot's layout makes the round trip below fail loudly.
#[derive(serde::Serialize, serde::Deserialize)]
struct RawSnapshot {
    params: htlc::ChannelParams,
    me: htlc::Side,
    limits: Limits,
    latest: SignedState,
    next_ids: NextIds,
    version_floor: u64,
    pending: Option<htlc::update::Proposal>,
    queue: std::collections::VecDeque<htlc::update::QueuedOp>,
    alloc_id: u64,
    await_leader: bool,
    doomed: Vec<(u64, Op, htlc::OpError)>,
    rejects_in_row: u32,
    holdings: Amount,
    deposited: [Amount; 2],
    credited: [Amount; 2],
    agreed: Vec<Op>,
    claims: Vec<(htlc::HtlcId, htlc::Preimage)>,
    frozen: bool,
}

/// Our own machine's record, edited as an attacker may edit its own data.
fn edit(snap: &htlc::Snapshot, f: impl FnOnce(&mut RawSnapshot)) -> htlc::Snapshot {
    let mut raw: RawSnapshot = postcard::from_bytes(&postcard::to_allocvec(snap).unwrap()).unwrap();
    f(&mut raw);
    let edited: htlc::Snapshot =
        postcard::from_bytes(&postcard::to_allocvec(&raw).unwrap()).unwrap();
    assert_eq!(
        postcard::to_allocvec(&edited).unwrap(),
        postcard::to_allocvec(&raw).unwrap(),
        "RawSnapshot mirrors htlc::Snapshot"
    );
    edited
}

/// What [`Adversary::pay_and_refuse_the_fulfil`] locked.
pub struct HeldLock {
    /// The payee's invoice.
    pub invoice: hub::payments::Invoice,
    /// The hub's clock when the lock was offered.
    pub now: u64,
    /// The lock's expiry.
    pub expiry: Expiry,
    /// What the lock carries (the amount and the hub's fee).
    pub sent: Amount,
}

impl Adversary {
    /// Pay `amount` to `payee` through `hub` on channel `id` (priced with the default policy),
    /// wait until the payee is paid, then refuse the hub's fulfil of our lock: a payer that goes
    /// silent on a lock the hub can claim.
    pub async fn pay_and_refuse_the_fulfil(
        &mut self,
        hub: &hub::node::Node,
        payee: &hub::node::Node,
        id: ChannelId,
        amount: u128,
    ) -> HeldLock {
        let invoice = payee
            .create_invoice(Amount(amount), 3600, hub.address())
            .await
            .unwrap();
        let policy = htlc::forward::ForwardPolicy::default();
        let now = hub.now().0;
        self.now = hub.now();
        let next = htlc::forward::NextHop {
            amount: Amount(amount),
            expiry: Expiry(now + invoice.final_expiry_delta),
        };
        let expiry = Expiry(next.expiry.0 + policy.expiry_delta);
        let sent = Amount(amount + policy.fee(Amount(amount)).unwrap().0);
        // The onion an honest payer would build: the hub forwards, the payee is paid.
        let hops = [
            htlc::onion::Hop {
                node: hub.public_key(),
                payload: htlc::onion::HopPayload::Forward {
                    next: payee.address(),
                    amount: next.amount,
                    expiry: next.expiry,
                },
            },
            htlc::onion::Hop {
                node: invoice.payee_key,
                payload: htlc::onion::HopPayload::Final {
                    amount: next.amount,
                    expiry: next.expiry,
                    total: next.amount,
                },
            },
        ];
        let session = secp256k1::SecretKey::from_byte_array([7; 32]).unwrap();
        let (onion, _) = htlc::onion::build(&session, &hops, invoice.hashlock.0).unwrap();
        let htlc = self.channels[&id].next_offer_id();
        self.send(Body::Route {
            channel_id: id,
            hashlock: invoice.hashlock,
            htlc,
            onion: Box::new(onion),
        })
        .await;
        let mut payee_ev = payee.subscribe();
        self.honest(id, |m| {
            m.offer_htlc(sent, invoice.hashlock, expiry);
        })
        .await;
        // The hub forwards, the payee reveals, the hub proposes its fulfil: refuse it.
        super::wait_for(&mut payee_ev, |e| {
            matches!(e, hub::events::NodeEvent::PaymentReceived { .. })
        })
        .await;
        loop {
            match self.next(Duration::from_secs(30)).await {
                Some(Body::Channel(Message::Propose { version, ops, .. }))
                    if ops.iter().any(|o| matches!(o, Op::FulfillHtlc { .. })) =>
                {
                    self.send(Body::Channel(Message::Reject {
                        channel_id: id,
                        version,
                        reason: RejectReason::InvalidOp {
                            index: 0,
                            error: htlc::OpError::LockExpired,
                        },
                    }))
                    .await;
                    break;
                }
                Some(other) => self.handle(other).await,
                None => panic!("the hub never claimed upstream"),
            }
        }
        HeldLock {
            invoice,
            now,
            expiry,
            sent,
        }
    }
}
