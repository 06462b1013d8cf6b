//! The node's part in virtual channels (ADR 0026): opening one as its A, accepting one as its
//! B, serving one as the hub between them, and carrying its update messages over the hub.
//!
//! ```text
//!  A                              H                               B
//!  |-- VirtualOpen + L_AH +G ---->|  admit (vchan::admit), agree    |
//!  |<-- countersign L_AH ---------|  L_AH committed: propose        |
//!  |                              |-- VirtualOffer + L_HB +G ------>|  check its leg, sign V0,
//!  |                              |<-- VirtualAccept + countersign -|  agree, countersign
//!  |<-- VirtualAccepted ----------|                                 |
//!  |== Relay(V msg) =============>|== Relayed(V msg) ==============>|  V's own update machine
//! ```
//!
//! Over a chain of hubs (`Node::open_virtual_over`) each hub passes `VirtualOpen` on to the
//! next once its leg toward A locks the guarantee, relays V's messages only between its two
//! neighbours on V's path, and the close's releases travel toward B: a hub that is not the
//! last signs its release toward the next hub only while it holds the one toward A, and the
//! last hub completes its two at once (ADR 0026, "Chains of hubs", which also says what a
//! coalition can still do to a hub that is not the last).
//!
//! Who may do what: only a peer with a funded ledger with us asks us (the hub) to open, as
//! V's A or as the previous hub of its path, only over its own ledger, and only under
//! [`Config::virtual_policy`]; the hub names
//! the ledger toward B and proposes its guarantee only once A's leg is co-signed. B agrees to
//! exactly the guarantee that locks V's opening on its ledger with it standing for V's B
//! ([`vchan::check_leg`]), and to lock at most [`Config::virtual_max_own`] of its own. The hub
//! relays a message only between the two parties of a virtual channel it serves; a party takes
//! a relayed message only from the hub of that channel. A virtual channel carries updates only
//! once its party's own leg locks the guarantee.

use super::{Entry, Node, Pending};
use crate::Amount;
use crate::eip712::DomainSeparator;
use crate::ids::{ChannelId, Expiry};
use crate::msg::Message;
use crate::node::chain::{Intent, Resolution, VirtualDispute};
use crate::node::machine::{CommandError, NodeEvent, Output};
use crate::node::message::{Body, ErrorCode};
use crate::node::records::{VirtualPhase, VirtualRecord, VirtualRole, Write};
use crate::sig::verify;
use crate::state::{ChannelParams, Guarantee};
use crate::update::{Channel, Effect, ProtocolError, SignedState, sign_state};
use crate::vchan::{self, VirtualTerms};
use crate::{Op, Side};
use alloy::primitives::{Address, Signature, U256};

/// The most hubs on one virtual channel's path (each locks the whole value: a longer path
/// costs its opener more fees and every hub's collateral for the same channel).
pub const MAX_HUBS: usize = 4;

/// Check that `sig` is `who`'s signature on the opening state of `terms`.
fn check_opening(terms: &VirtualTerms, sig: &Signature, who: Address) -> Result<(), String> {
    let digest = DomainSeparator::new(&terms.params)
        .digest(&terms.opening_state())
        .map_err(|_| "overflow".to_string())?;
    verify(digest, sig, who).map_err(|e| e.to_string())
}

impl Node {
    /// Whether we serve `id` as the hub of a virtual channel (the caller then hands us the
    /// states registered for it, [`crate::node::ChainEvent::Registered`]).
    pub fn serves_virtual(&self, id: ChannelId) -> bool {
        self.book
            .virtuals
            .get(&id)
            .is_some_and(|r| r.role == VirtualRole::Hub)
    }

    /// The virtual channels we take part in.
    pub fn virtuals(&self) -> impl Iterator<Item = (&ChannelId, &VirtualRecord)> {
        self.book.virtuals.iter()
    }

    /// Tell `peer` our forwarding policy and key (as a hub does to the peers whose channels it
    /// accepts): a party that forwards over its virtual channels announces it to the payers
    /// that may route through it (the virtual channel is then one hop of their routes). To the
    /// other party of a virtual channel without a session of its own with us it goes over the
    /// channel's hub, signed (dated `now`) so the hub cannot change it.
    pub fn announce_policy(&mut self, now: Expiry, peer: Address) -> Output {
        let mut p = Pending::default();
        let virtual_with_peer = self
            .channels
            .iter()
            .find(|(_, e)| e.peer == peer && e.via.is_some())
            .map(|(id, _)| *id);
        let over = virtual_with_peer.and_then(|id| self.relay_hub(id, peer).map(|hub| (id, hub)));
        let body = match over {
            Some((channel, _)) => {
                let update = crate::node::gossip::PolicyUpdate::sign(
                    channel,
                    self.config.policy,
                    now.0,
                    &self.keys,
                );
                Body::PartyPolicy {
                    update: Box::new(update),
                    key: self.keys.public_key(),
                }
            }
            None => Body::HubPolicy {
                policy: self.config.policy,
                key: self.keys.public_key(),
            },
        };
        self.send_via(over.map(|(_, hub)| hub), peer, body, &mut p);
        p.out
    }

    /// Record the virtual-channel rules `hub` announced (as [`Body::HubVirtualPolicy`] does).
    pub fn set_virtual_policy(
        &mut self,
        hub: Address,
        policy: crate::vchan::VirtualPolicy,
    ) -> Output {
        let mut p = Pending::default();
        self.write(&mut p, Write::VirtualPolicy { peer: hub, policy });
        p.out
    }

    /// Open a virtual channel with `peer` over `hub` (ADR 0026): we are its A and put in
    /// `deposit` from our ledger with the hub (plus the hub's opening fee); the peer starts at
    /// zero. It lives `lifetime_secs` from `now` (chain time) and is told apart from others
    /// between us by `nonce`. Opened when [`NodeEvent::VirtualOpened`] says so.
    pub fn open_virtual(
        &mut self,
        now: Expiry,
        hub: Address,
        peer: Address,
        deposit: Amount,
        nonce: U256,
        lifetime_secs: u64,
    ) -> Result<Output, CommandError> {
        self.open_virtual_over(now, &[hub], peer, deposit, nonce, lifetime_secs)
    }

    /// As [`Node::open_virtual`], over the chain of `hubs` (the first our peer, each next one
    /// the previous one's, the last `peer`'s): every ledger on the path locks the guarantee,
    /// and we pay each hub its opening fee by the rules it announced (all of them on our
    /// ledger with the first hub, which passes the others' on with its leg).
    pub fn open_virtual_over(
        &mut self,
        now: Expiry,
        hubs: &[Address],
        peer: Address,
        deposit: Amount,
        nonce: U256,
        lifetime_secs: u64,
    ) -> Result<Output, CommandError> {
        let me = self.address();
        let Some(&hub) = hubs.first() else {
            return Err(CommandError::Protocol(ProtocolError::InvalidState(
                "a virtual channel needs at least one hub",
            )));
        };
        let distinct = hubs.iter().collect::<std::collections::BTreeSet<_>>().len() == hubs.len();
        if !distinct || hubs.contains(&me) || hubs.contains(&peer) || peer == me {
            return Err(CommandError::Protocol(ProtocolError::InvalidState(
                "a virtual channel's hubs are distinct and neither of its parties",
            )));
        }
        if hubs.len() > MAX_HUBS {
            return Err(CommandError::Protocol(ProtocolError::InvalidState(
                "too many hubs on a virtual channel's path",
            )));
        }
        if deposit.is_zero() {
            return Err(CommandError::ZeroAmount);
        }
        let margin = self.config.virtual_end_margin_secs;
        if lifetime_secs <= margin {
            return Err(CommandError::LifetimeTooShort {
                lifetime: lifetime_secs,
                margin,
            });
        }
        let mut fees = Vec::with_capacity(hubs.len());
        for h in hubs {
            let policy = self
                .book
                .virtual_policies
                .get(h)
                .ok_or(CommandError::NoPolicy(*h))?;
            fees.push(
                policy
                    .fee(deposit)
                    .map_err(|_| CommandError::Protocol(ProtocolError::Overflow))?,
            );
        }
        let fee = fees
            .iter()
            .try_fold(Amount::ZERO, |acc, f| acc.checked_add(*f))
            .map_err(|_| CommandError::Protocol(ProtocolError::Overflow))?;
        let onward: Vec<(Address, Amount)> = hubs
            .iter()
            .copied()
            .zip(fees.iter().copied())
            .skip(1)
            .collect();
        let need = deposit
            .checked_add(fee)
            .map_err(|_| CommandError::Protocol(ProtocolError::Overflow))?;
        let ledger = self
            .ledger_with(hub, need)
            .ok_or(CommandError::NoChannel(hub))?;
        let lp = self.channels[&ledger].machine.snapshot().params().clone();
        let params = ChannelParams {
            chain_id: lp.chain_id,
            adjudicator: lp.adjudicator,
            participants: [self.address(), peer],
            asset: lp.asset,
            challenge_duration: lp.challenge_duration,
            nonce,
        };
        let id = params.id();
        if self.channels.contains_key(&id) || self.book.virtuals.contains_key(&id) {
            return Err(CommandError::ChannelExists(id));
        }
        let terms = VirtualTerms {
            params,
            opening: [deposit, Amount::ZERO],
            expires_at: Expiry(now.0.saturating_add(lifetime_secs)),
        };
        let sig = sign_state(&terms.params, &self.keys, &terms.opening_state())?;
        let me_in_ledger = lp
            .side_of(self.address())
            .ok_or(ProtocolError::InvalidState(
                "not a participant of the ledger",
            ))?;
        let g = terms.guarantee(me_in_ledger);
        let mut p = Pending::default();
        let record = VirtualRecord {
            terms: terms.clone(),
            role: VirtualRole::Opener,
            hub,
            ledgers: vec![ledger],
            opening_sigs: [Some(sig), None],
            phase: VirtualPhase::Opening,
            outcome: None,
            held: Vec::new(),
            held_since: None,
            ledger_concluded: None,
            disputed_until: None,
            concluded_legs: Vec::new(),
            registered: None,
            withheld: None,
            onward: Vec::new(),
        };
        self.write_virtual(id, record, &mut p);
        // The request goes first; our proposal of the ledger's guarantee (and the fees)
        // follows in the same flight, and the hub agreed to it by then.
        self.send(
            hub,
            Body::VirtualOpen {
                ledger,
                terms: Box::new(terms),
                sig,
                onward,
            },
            &mut p,
        );
        if let Some(e) = self.channels.get_mut(&ledger) {
            if !fee.is_zero() {
                e.machine.transfer(fee);
            }
            e.machine.add_guarantee(g);
        }
        p.to_propose.insert(ledger);
        Ok(self.finish(now, p))
    }

    /// Our funded, open ledger with `peer` (not a virtual channel) with at least `need` free
    /// on our side.
    fn ledger_with(&self, peer: Address, need: Amount) -> Option<ChannelId> {
        self.by_peer.get(&peer)?.iter().copied().find(|id| {
            self.channels.get(id).is_some_and(|e| {
                let s = e.machine.snapshot();
                e.via.is_none()
                    && e.funded
                    && !e.concluded
                    && !e.awaiting_acceptance()
                    && !s.frozen()
                    && !s.latest().state.is_final
                    && s.free_balance() >= need
            })
        })
    }

    fn write_virtual(&mut self, id: ChannelId, record: VirtualRecord, p: &mut Pending) {
        self.write(
            p,
            Write::Virtual {
                id,
                record: Box::new(record),
            },
        );
    }

    pub(super) fn set_phase(&mut self, id: ChannelId, phase: VirtualPhase, p: &mut Pending) {
        if let Some(mut r) = self.book.virtuals.get(&id).cloned()
            && r.phase != phase
        {
            r.phase = phase;
            self.write_virtual(id, r, p);
        }
    }

    /// Hub: V's A, or the previous hub of a chain, asks to open `terms` over its ledger
    /// `ledger` with us (standing for V's A on it); `onward` are the hubs after us toward B,
    /// with the fee A pays each.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_virtual_open(
        &mut self,
        now: Expiry,
        from: Address,
        ledger: ChannelId,
        terms: VirtualTerms,
        sig: Signature,
        onward: Vec<(Address, Amount)>,
        p: &mut Pending,
    ) -> Result<(), String> {
        let policy = self
            .config
            .virtual_policy
            .ok_or("this node serves no virtual channels")?;
        let id = terms.id();
        if self.channels.contains_key(&id) || self.book.virtuals.contains_key(&id) {
            return Err(format!("virtual channel {id} exists already"));
        }
        if onward.len() >= MAX_HUBS {
            return Err(format!("more than {MAX_HUBS} hubs on the path"));
        }
        let [a, b] = terms.params.participants;
        let me = self.address();
        let next = onward.first().map_or(b, |(h, _)| *h);
        let distinct = onward
            .iter()
            .map(|(h, _)| h)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == onward.len();
        if next == me || !distinct || onward.iter().any(|(h, _)| [me, a, b, from].contains(h)) {
            return Err("the path of hubs goes round".into());
        }
        let la = self.funded_ledger(ledger, from)?;
        // Toward a next hub we also pass on the fees of the hubs after us.
        let need = onward
            .iter()
            .try_fold(terms.opening[0], |acc, (_, f)| acc.checked_add(*f))
            .map_err(|_| "the fees overflow".to_string())?;
        let lb_id = self
            .ledger_with(next, need)
            .ok_or_else(|| format!("no ledger with {next} that can lock {need}"))?;
        let lb = self.channels[&lb_id].machine.snapshot().params().clone();
        let position = vchan::Position {
            first: from == a,
            last: onward.is_empty(),
        };
        let legs = vchan::admit_hop(&policy, me, &terms, (&la, &lb), position, now)
            .map_err(|e| e.to_string())?;
        check_opening(&terms, &sig, a)?;
        let e = self
            .channels
            .get_mut(&ledger)
            .ok_or("ledger vanished".to_string())?;
        e.machine
            .agree(Op::AddGuarantee(legs.toward_a))
            .map_err(|e| e.to_string())?;
        p.touched.insert(ledger);
        let record = VirtualRecord {
            terms,
            role: VirtualRole::Hub,
            hub: me,
            ledgers: vec![ledger, lb_id],
            opening_sigs: [Some(sig), None],
            phase: VirtualPhase::Opening,
            outcome: None,
            held: vec![None, None],
            held_since: None,
            ledger_concluded: None,
            disputed_until: None,
            concluded_legs: Vec::new(),
            registered: None,
            withheld: None,
            onward,
        };
        self.write_virtual(id, record, p);
        Ok(())
    }

    /// B: the hub offers `terms`, to be guaranteed on our ledger `ledger` with it.
    pub(super) fn on_virtual_offer(
        &mut self,
        now: Expiry,
        from: Address,
        ledger: ChannelId,
        terms: VirtualTerms,
        sig: Signature,
        p: &mut Pending,
    ) -> Result<(), String> {
        let id = terms.id();
        if self.channels.contains_key(&id) || self.book.virtuals.contains_key(&id) {
            return Err(format!("virtual channel {id} exists already"));
        }
        let me = self.address();
        let a = terms.params.participants[0];
        if terms.params.participants[1] != me || a == from || a == me {
            return Err("we are not the virtual channel's B".into());
        }
        if terms.opening[1] > self.config.virtual_max_own {
            return Err(format!(
                "the virtual channel would lock {} of ours (at most {})",
                terms.opening[1], self.config.virtual_max_own
            ));
        }
        if terms.expires_at <= now {
            return Err("the virtual channel's life is over".into());
        }
        // We would close it at once (our closing margin), and its opener paid for nothing.
        if terms.expires_at.0 - now.0 <= self.config.virtual_end_margin_secs {
            return Err(format!(
                "the virtual channel lives {} s, within our closing margin of {} s",
                terms.expires_at.0 - now.0,
                self.config.virtual_end_margin_secs
            ));
        }
        let lp = self.funded_ledger(ledger, from)?;
        let hub_side = lp.side_of(from).ok_or("not the ledger's participant")?;
        let g = terms.guarantee(hub_side);
        vchan::check_leg(&terms, &lp, me, &g).map_err(|e| e.to_string())?;
        let ours = sign_state(&terms.params, &self.keys, &terms.opening_state())
            .map_err(|e| e.to_string())?;
        let machine = Channel::from_cosigned_by_us(
            terms.params.clone(),
            self.keys.clone(),
            terms.limits(self.config.limits),
            SignedState {
                state: terms.opening_state(),
                sigs: [sig, ours],
            },
        )
        .map_err(|e| e.to_string())?;
        let e = self
            .channels
            .get_mut(&ledger)
            .ok_or("ledger vanished".to_string())?;
        e.machine
            .agree(Op::AddGuarantee(g))
            .map_err(|e| e.to_string())?;
        p.touched.insert(ledger);
        self.insert(
            id,
            Entry {
                peer: a,
                via: Some(from),
                funded: false,
                resend_on_funded: false,
                concluded: false,
                opened_at: now.0,
                machine,
            },
        );
        p.touched.insert(id);
        let record = VirtualRecord {
            terms,
            role: VirtualRole::Acceptor,
            hub: from,
            ledgers: vec![ledger],
            opening_sigs: [Some(sig), Some(ours)],
            phase: VirtualPhase::Opening,
            outcome: None,
            held: Vec::new(),
            held_since: None,
            ledger_concluded: None,
            disputed_until: None,
            concluded_legs: Vec::new(),
            registered: None,
            withheld: None,
            onward: Vec::new(),
        };
        self.write_virtual(id, record, p);
        self.send(
            from,
            Body::VirtualAccept {
                channel_id: id,
                sig: ours,
            },
            p,
        );
        Ok(())
    }

    /// The last hub: B accepted `id` with its signature on the opening state: pass it toward A.
    pub(super) fn on_virtual_accept(
        &mut self,
        from: Address,
        id: ChannelId,
        sig: Signature,
        p: &mut Pending,
    ) -> Result<(), String> {
        let r = self
            .book
            .virtuals
            .get(&id)
            .filter(|r| {
                r.role == VirtualRole::Hub
                    && r.onward.is_empty()
                    && r.terms.params.participants[1] == from
            })
            .cloned()
            .ok_or_else(|| format!("no virtual channel {id} offered to you"))?;
        self.pass_acceptance(r, sig, p)
    }

    /// Hub: B's signature on `r`'s opening state came from our side toward B (B itself, or
    /// the next hub): check it, keep it and pass it toward A (to A, or the previous hub).
    fn pass_acceptance(
        &mut self,
        mut r: VirtualRecord,
        sig: Signature,
        p: &mut Pending,
    ) -> Result<(), String> {
        let id = r.terms.id();
        if r.opening_sigs[1].is_some() {
            return Err(format!("virtual channel {id} accepted already"));
        }
        check_opening(&r.terms, &sig, r.terms.params.participants[1])?;
        r.opening_sigs[1] = Some(sig);
        let prev = r
            .ledgers
            .first()
            .and_then(|l| self.peer_of(*l))
            .ok_or_else(|| format!("virtual channel {id}: the ledger toward A is gone"))?;
        self.write_virtual(id, r, p);
        self.send(
            prev,
            Body::VirtualAccepted {
                channel_id: id,
                sig,
            },
            p,
        );
        Ok(())
    }

    /// A: B's signature on the opening state, passed on by our hub: the channel exists. (A hub
    /// of a chain gets it from the next hub and passes it on.)
    pub(super) fn on_virtual_accepted(
        &mut self,
        now: Expiry,
        from: Address,
        id: ChannelId,
        sig: Signature,
        p: &mut Pending,
    ) -> Result<(), String> {
        // A hub of a chain: the next hub passes B's acceptance toward A.
        if let Some(r) = self.book.virtuals.get(&id).filter(|r| {
            r.role == VirtualRole::Hub
                && !r.onward.is_empty()
                && r.ledgers.get(1).and_then(|l| self.peer_of(*l)) == Some(from)
        }) {
            return self.pass_acceptance(r.clone(), sig, p);
        }
        let mut r = self
            .book
            .virtuals
            .get(&id)
            .filter(|r| r.role == VirtualRole::Opener && r.hub == from)
            .cloned()
            .ok_or_else(|| format!("no virtual channel {id} opened over you"))?;
        if self.channels.contains_key(&id) {
            return Err(format!("virtual channel {id} accepted already"));
        }
        let ours = r.opening_sigs[0].ok_or("our opening signature is missing")?;
        let machine = Channel::from_cosigned_by_us(
            r.terms.params.clone(),
            self.keys.clone(),
            r.terms.limits(self.config.limits),
            SignedState {
                state: r.terms.opening_state(),
                sigs: [ours, sig],
            },
        )
        .map_err(|e| e.to_string())?;
        let funded = self.leg_locked(&r);
        r.opening_sigs[1] = Some(sig);
        if funded {
            r.phase = VirtualPhase::Open;
        }
        let peer = r.terms.params.participants[1];
        self.write_virtual(id, r, p);
        self.insert(
            id,
            Entry {
                peer,
                via: Some(from),
                funded,
                resend_on_funded: false,
                concluded: false,
                opened_at: now.0,
                machine,
            },
        );
        p.touched.insert(id);
        if funded {
            p.out.events.push(NodeEvent::VirtualOpened {
                channel_id: id,
                peer,
            });
            p.reactions.push_back(super::Reaction::AnnounceVirtual(id));
        }
        Ok(())
    }

    /// Whether a party's own leg of `r` locks its guarantee in a co-signed state.
    fn leg_locked(&self, r: &VirtualRecord) -> bool {
        r.ledgers
            .first()
            .is_some_and(|l| self.guarantee_on(*l, r.terms.id()).is_some())
    }

    /// Our funded, countersigned ledger `ledger` with `peer` (not a virtual channel).
    fn funded_ledger(&self, ledger: ChannelId, peer: Address) -> Result<ChannelParams, String> {
        self.channels
            .get(&ledger)
            .filter(|e| e.peer == peer && e.via.is_none() && e.funded && !e.awaiting_acceptance())
            .map(|e| e.machine.snapshot().params().clone())
            .ok_or_else(|| format!("no funded ledger {ledger} with you"))
    }

    /// Whether our machine of `ledger` would countersign `msg` now (asked of a copy: nothing
    /// changes).
    fn would_countersign(&self, ledger: ChannelId, msg: &Message, now: Expiry) -> bool {
        self.channels.get(&ledger).is_some_and(|e| {
            let mut probe = e.machine.clone();
            probe.handle(msg.clone(), now).is_ok_and(|effects| {
                effects
                    .iter()
                    .any(|f| matches!(f, Effect::Send(Message::Accept { .. })))
            })
        })
    }

    /// A ledger's state with `ops` (proposed by `proposer`) is co-signed: a guarantee it added
    /// moves the virtual channel it funds along.
    pub(super) fn on_guarantee_committed(
        &mut self,
        ledger: ChannelId,
        proposer: Side,
        ops: &[Op],
        p: &mut Pending,
    ) {
        for op in ops {
            let Op::AddGuarantee(g) = op else {
                continue;
            };
            let Some(r) = self.book.virtuals.get(&g.virtual_channel).cloned() else {
                continue;
            };
            let id = g.virtual_channel;
            match r.role {
                VirtualRole::Hub if r.ledgers.first() == Some(&ledger) => {
                    self.hub_leg_a_locked(ledger, proposer, ops, &r, p)
                }
                VirtualRole::Hub => {
                    if r.phase == VirtualPhase::Opening {
                        self.set_phase(id, VirtualPhase::Open, p);
                        p.out.events.push(NodeEvent::VirtualOpened {
                            channel_id: id,
                            peer: r.terms.params.participants[0],
                        });
                    }
                }
                VirtualRole::Opener | VirtualRole::Acceptor => {
                    let Some(e) = self.channels.get_mut(&id) else {
                        // A: B's acceptance is still on its way.
                        continue;
                    };
                    if !e.funded {
                        e.funded = true;
                        p.touched.insert(id);
                        let peer = e.peer;
                        self.set_phase(id, VirtualPhase::Open, p);
                        p.out.events.push(NodeEvent::VirtualOpened {
                            channel_id: id,
                            peer,
                        });
                        p.reactions.push_back(super::Reaction::AnnounceVirtual(id));
                    }
                }
            }
        }
    }

    /// Hub: our leg toward A locks its guarantee. If the same update paid our opening fee and
    /// the fees of the hubs after us, offer the channel to B and propose B's leg, or (a chain)
    /// ask the next hub to open it and propose our leg with it, passing on its fees; otherwise
    /// the open stops here (the leg settles back as funded, on chain if not released).
    fn hub_leg_a_locked(
        &mut self,
        ledger: ChannelId,
        proposer: Side,
        ops: &[Op],
        r: &VirtualRecord,
        p: &mut Pending,
    ) {
        let id = r.terms.id();
        if r.phase != VirtualPhase::Opening {
            return;
        }
        // What this update must pay: our fee and the onward fees of every virtual channel
        // whose guarantee toward us it adds (one transfer never pays for two opens).
        let due = |r: &VirtualRecord| {
            let onward = r
                .onward
                .iter()
                .try_fold(Amount::ZERO, |acc, (_, f)| acc.checked_add(*f))
                .ok()?;
            let own = self
                .config
                .virtual_policy
                .and_then(|pol| r.terms.value().ok().and_then(|v| pol.fee(v).ok()))?;
            own.checked_add(onward).ok()
        };
        let fee = ops
            .iter()
            .filter_map(|o| match o {
                Op::AddGuarantee(g) => self.book.virtuals.get(&g.virtual_channel),
                _ => None,
            })
            .filter(|o| {
                // Every open this update adds (one refused for it just before counts too).
                o.role == VirtualRole::Hub
                    && matches!(o.phase, VirtualPhase::Opening | VirtualPhase::Failed)
                    && o.ledgers.first() == Some(&ledger)
            })
            .try_fold(Amount::ZERO, |acc, o| acc.checked_add(due(o)?).ok());
        let a_side = self
            .channels
            .get(&ledger)
            .map(|e| e.machine.me().other())
            .unwrap_or(Side::A);
        let paid: Amount = ops
            .iter()
            .filter_map(|o| match o {
                Op::Transfer { amount } if proposer == a_side => Some(*amount),
                _ => None,
            })
            .fold(Amount::ZERO, |acc, a| {
                acc.checked_add(a).unwrap_or(Amount::MAX)
            });
        let Some(lb) = r.ledgers.get(1).copied() else {
            return;
        };
        if fee.is_none_or(|f| paid < f) {
            self.set_phase(id, VirtualPhase::Failed, p);
            return;
        }
        let Some(e) = self.channels.get_mut(&lb) else {
            self.set_phase(id, VirtualPhase::Failed, p);
            return;
        };
        let Some(hub_side) = e.machine.snapshot().params().side_of(self.keys.address()) else {
            return;
        };
        let g: Guarantee = r.terms.guarantee(hub_side);
        let next = e.peer;
        let Some(sig) = r.opening_sigs[0] else {
            return;
        };
        // The offer (or the request to the next hub) goes first; our proposal of the leg
        // toward it follows when the step proposes.
        let (body, next_fee) = match r.onward.split_first() {
            None => (
                Body::VirtualOffer {
                    ledger: lb,
                    terms: Box::new(r.terms.clone()),
                    sig,
                },
                Amount::ZERO,
            ),
            Some(((_, next_fee), rest)) => (
                Body::VirtualOpen {
                    ledger: lb,
                    terms: Box::new(r.terms.clone()),
                    sig,
                    onward: rest.to_vec(),
                },
                // The next hub's fee and those it passes on in turn.
                rest.iter()
                    .try_fold(*next_fee, |acc, (_, f)| acc.checked_add(*f))
                    .unwrap_or(Amount::MAX),
            ),
        };
        self.send(next, body, p);
        if let Some(e) = self.channels.get_mut(&lb) {
            if !next_fee.is_zero() {
                e.machine.transfer(next_fee);
            }
            e.machine.add_guarantee(g);
        }
        p.to_propose.insert(lb);
    }

    /// Hub: where a message of virtual channel `id` from its party `origin`, handed to us by
    /// `sender` (the party itself, or our neighbouring hub on its side of a chain), goes next:
    /// our neighbour toward the other party, and that party. `None`: not a virtual channel we
    /// serve (and not failed) with `origin` on `sender`'s side: the only messages we relay.
    fn relay_next(
        &self,
        id: ChannelId,
        sender: Address,
        origin: Address,
    ) -> Option<(Address, Address)> {
        let r = self
            .book
            .virtuals
            .get(&id)
            .filter(|r| r.role == VirtualRole::Hub && r.phase != VirtualPhase::Failed)?;
        let [a, b] = r.terms.params.participants;
        let toward_a = self.peer_of(*r.ledgers.first()?)?;
        let toward_b = self.peer_of(*r.ledgers.get(1)?)?;
        if origin == a && sender == toward_a {
            Some((toward_b, b))
        } else if origin == b && sender == toward_b {
            Some((toward_a, a))
        } else {
            None
        }
    }

    /// Hub: a virtual channel's message from its party `origin`, handed to us by `sender` (the
    /// party, asking for `to`; or the previous hub of a chain): pass it on toward the other
    /// party.
    pub(super) fn on_relay(
        &mut self,
        sender: Address,
        origin: Address,
        to: Option<Address>,
        msg: Message,
        p: &mut Pending,
    ) -> Result<(), (ErrorCode, String)> {
        let id = msg.channel_id();
        let Some((next, _)) = self
            .relay_next(id, sender, origin)
            .filter(|(_, party)| to.is_none_or(|t| t == *party))
        else {
            return Err((
                ErrorCode::UnknownChannel,
                format!("no virtual channel {id} of yours over us to that party"),
            ));
        };
        // Our collateral is at stake in its guarantee. The adjudicator settles the channel's
        // locks by the guarantee's bound (its end) at the latest, and refuses a state holding
        // a guarantee itself; as a second line we pass on no lock expiring after the channel's
        // end (its parties' machines refuse those too) and no guarantee (ADR 0026).
        if let Message::Propose { ops, .. } = &msg
            && let Some(r) = self.book.virtuals.get(&id)
        {
            for op in ops {
                match op {
                    Op::AddHtlc { expiry, .. } if *expiry > r.terms.expires_at => {
                        return Err((
                            ErrorCode::Protocol,
                            format!(
                                "virtual channel {id}: a lock expiring at {} is after its end at {}",
                                expiry.0, r.terms.expires_at.0
                            ),
                        ));
                    }
                    Op::AddGuarantee(_) => {
                        return Err((
                            ErrorCode::Protocol,
                            format!("virtual channel {id}: no guarantees inside it"),
                        ));
                    }
                    _ => {}
                }
            }
        }
        self.send(next, Body::Relayed { from: origin, msg }, p);
        Ok(())
    }
}

impl Node {
    /// The virtual channel a relayed route body is about: a route instruction's or failure
    /// packet's channel, a party policy's, a party's announcement signature's.
    pub(super) fn route_body_channel(body: &Body) -> Option<ChannelId> {
        match body {
            Body::Route { channel_id, .. } | Body::RouteFailed { channel_id, .. } => {
                Some(*channel_id)
            }
            Body::PartyPolicy { update, .. } => Some(update.channel_id),
            // A party's signature announcing the channel (module `gossip_steps`).
            Body::AnnounceSig { channel_id, .. } => Some(*channel_id),
            _ => None,
        }
    }

    /// Hub: pass a route instruction, failure packet or policy of a virtual channel we serve
    /// from its party `origin`, handed to us by `sender` (the party, asking for `to`; or the
    /// previous hub of a chain), on toward the other party (it means nothing to us; the party
    /// checks it as its peer's).
    pub(super) fn on_relay_route(
        &mut self,
        sender: Address,
        origin: Address,
        to: Option<Address>,
        body: Body,
        p: &mut Pending,
    ) -> Result<(), (ErrorCode, String)> {
        let Some(channel) = Self::route_body_channel(&body) else {
            return Err((
                ErrorCode::Protocol,
                "only route instructions, failure packets and policies are relayed".into(),
            ));
        };
        let Some((next, _)) = self
            .relay_next(channel, sender, origin)
            .filter(|(_, party)| to.is_none_or(|t| t == *party))
        else {
            return Err((
                ErrorCode::UnknownChannel,
                "no virtual channel of yours over us to that party".into(),
            ));
        };
        self.send(
            next,
            Body::RelayedRoute {
                from: origin,
                body: Box::new(body),
            },
            p,
        );
        Ok(())
    }
}

impl Node {
    /// A party: the virtual channel `id`'s final state is co-signed. Hand it to the hub, then
    /// propose the release of our leg by it: we sign first, the hub countersigns once every
    /// leg's release is in (ADR 0026).
    pub(super) fn on_virtual_final(&mut self, id: ChannelId, fin: SignedState, p: &mut Pending) {
        let Some(mut r) = self.book.virtuals.get(&id).cloned() else {
            return;
        };
        if r.role == VirtualRole::Hub || r.outcome.is_some() {
            return;
        }
        let Some(ledger) = r.ledgers.first().copied() else {
            return;
        };
        let Some(g) = self.guarantee_on(ledger, id) else {
            return;
        };
        let Ok([to_a, to_b]) = vchan::release(&g, &fin.state) else {
            return;
        };
        let hub = r.hub;
        r.phase = VirtualPhase::Closed;
        r.outcome = Some(fin.clone());
        self.write_virtual(id, r, p);
        self.send(
            hub,
            Body::VirtualClose {
                final_state: Box::new(fin),
            },
            p,
        );
        if let Some(e) = self.channels.get_mut(&ledger) {
            e.machine.remove_guarantee(id, to_a, to_b);
        }
        p.to_propose.insert(ledger);
    }

    /// Hub: a party (or a neighbouring hub of a chain) hands over the virtual channel's final
    /// state. The first one handed over is the only one we release any leg by. We agree to the
    /// release of each leg our neighbour proposes by it: the leg toward A always, the leg
    /// toward B only when B is our peer. Toward a next hub we propose the release ourselves,
    /// once we hold the release of our leg toward A (releases travel toward B, ADR 0026). A
    /// hub of a chain passes the state on to its neighbouring hubs.
    pub(super) fn on_virtual_close(
        &mut self,
        from: Address,
        fin: SignedState,
        p: &mut Pending,
    ) -> Result<(), String> {
        let id = fin.state.channel_id;
        let neighbours: Vec<Address> = self
            .book
            .virtuals
            .get(&id)
            .filter(|r| r.role == VirtualRole::Hub)
            .map(|r| r.ledgers.iter().filter_map(|l| self.peer_of(*l)).collect())
            .unwrap_or_default();
        let mut r = self
            .book
            .virtuals
            .get(&id)
            .filter(|_| neighbours.contains(&from))
            .cloned()
            .ok_or_else(|| format!("no virtual channel {id} with you over us"))?;
        if let Some(known) = &r.outcome {
            return if *known == fin {
                Ok(())
            } else {
                Err(format!(
                    "virtual channel {id}: another final state was handed over first"
                ))
            };
        }
        // Only once every leg of ours locks the guarantee: a leg without it yet is not a
        // released one, and releasing the others alone could be robbed on it (ADR 0026).
        if r.phase != VirtualPhase::Open {
            return Err(format!("virtual channel {id} is not open"));
        }
        let digest = DomainSeparator::new(&r.terms.params)
            .digest(&fin.state)
            .map_err(|_| "overflow".to_string())?;
        for side in [Side::A, Side::B] {
            verify(
                digest,
                &fin.sigs[side.index()],
                r.terms.params.participant(side),
            )
            .map_err(|e| format!("final state: {e}"))?;
        }
        let mut releases = Vec::new();
        for (leg, ledger) in r.ledgers.iter().enumerate() {
            if leg == 1 && !r.onward.is_empty() {
                // Ours to propose (`propose_inner_release`), never to countersign.
                continue;
            }
            let Some(g) = self.guarantee_on(*ledger, id) else {
                continue;
            };
            let [to_a, to_b] = vchan::release(&g, &fin.state).map_err(|e| e.to_string())?;
            releases.push((
                *ledger,
                Op::RemoveGuarantee {
                    virtual_channel: id,
                    to_a,
                    to_b,
                },
            ));
        }
        for (ledger, op) in releases {
            if let Some(e) = self.channels.get_mut(&ledger) {
                e.machine.agree(op).map_err(|e| e.to_string())?;
                p.touched.insert(ledger);
            }
        }
        r.outcome = Some(fin.clone());
        r.phase = VirtualPhase::Closed;
        self.write_virtual(id, r.clone(), p);
        // The neighbouring hubs learn it before anything we propose by it.
        let [a, b] = r.terms.params.participants;
        for hub in neighbours {
            if hub != from && hub != a && hub != b {
                self.send(
                    hub,
                    Body::VirtualClose {
                        final_state: Box::new(fin.clone()),
                    },
                    p,
                );
            }
        }
        Ok(())
    }

    /// Hub of a chain, not the last: we hold the release of our leg toward A by `r`'s outcome,
    /// so we propose (sign first) the release of our leg toward the next hub by the same state.
    /// The next hub countersigns it only with B's side (ADR 0026); until it does, the release
    /// we hold is never refused (its timeout does not apply), so whenever the next hub
    /// completes ours off chain we complete the one toward A and both our legs go by one
    /// state; a completion on chain, after a dispute of either leg, is answered by
    /// `on_leg_disputed`.
    fn propose_inner_release(&mut self, r: &VirtualRecord, p: &mut Pending) {
        let id = r.terms.id();
        let (Some(fin), Some(&ledger)) = (&r.outcome, r.ledgers.get(1)) else {
            return;
        };
        let Some(g) = self.guarantee_on(ledger, id) else {
            return;
        };
        let Ok([to_a, to_b]) = vchan::release(&g, &fin.state) else {
            return;
        };
        if let Some(e) = self.channels.get_mut(&ledger) {
            e.machine.remove_guarantee(id, to_a, to_b);
            p.to_propose.insert(ledger);
        }
    }

    /// The guarantee for `virtual_channel` in `ledger`'s latest co-signed state.
    pub(super) fn guarantee_on(
        &self,
        ledger: ChannelId,
        virtual_channel: ChannelId,
    ) -> Option<Guarantee> {
        self.channels.get(&ledger).and_then(|e| {
            e.machine
                .latest()
                .state
                .guarantees
                .iter()
                .find(|g| g.virtual_channel == virtual_channel)
                .copied()
        })
    }

    /// Hub: whether `ledger` holds a party's release proposal (we propose nothing on it
    /// meanwhile: the party waits for our countersignature).
    pub(super) fn holding(&self, ledger: ChannelId) -> bool {
        self.book.virtuals.values().any(|r| {
            r.role == VirtualRole::Hub
                && r.ledgers
                    .iter()
                    .zip(&r.held)
                    .any(|(l, h)| *l == ledger && h.is_some())
        })
    }

    /// Hub: `msg` on `ledger` proposes the release of a leg of a virtual channel we serve and
    /// would be countersigned: hold it instead, and countersign every leg's once all are in.
    /// Returns whether it was held.
    pub(super) fn hold_release(
        &mut self,
        now: Expiry,
        ledger: ChannelId,
        msg: &Message,
        p: &mut Pending,
    ) -> bool {
        let Message::Propose { ops, .. } = msg else {
            return false;
        };
        let Some((id, leg)) = ops.iter().find_map(|op| match op {
            Op::RemoveGuarantee {
                virtual_channel, ..
            } => {
                let r = self.book.virtuals.get(virtual_channel)?;
                let leg = r.ledgers.iter().position(|l| *l == ledger)?;
                // A hub of a chain holds only its leg toward A: toward the next hub it signs
                // first and never countersigns.
                let ours_to_hold = leg == 0 || r.onward.is_empty();
                (r.role == VirtualRole::Hub && ours_to_hold && r.held.get(leg)?.is_none())
                    .then_some((*virtual_channel, leg))
            }
            _ => None,
        }) else {
            return false;
        };
        // Would our machine countersign it? Ask a copy; anything else goes to the machine
        // itself, which refuses it as usual.
        if !self.would_countersign(ledger, msg, now) {
            return false;
        }
        let Some(mut r) = self.book.virtuals.get(&id).cloned() else {
            return false;
        };
        if let Some(slot) = r.held.get_mut(leg) {
            *slot = Some(msg.clone());
        }
        let disputed = r.ledgers.iter().any(|l| self.is_disputed(*l));
        if r.onward.is_empty() || disputed {
            // The last hub, or a leg already disputed (then we sign nothing toward the next
            // hub: the legs settle on chain by one outcome): held until the other side's
            // release comes, or refused after the hold's patience.
            r.held_since.get_or_insert(now.0);
        } else {
            // Not the last hub of a chain: our own release toward B goes out now, and what we
            // hold waits for it. It is never refused while ours can be completed; if the next
            // hub neither completes nor refuses ours within
            // [`super::Config::virtual_chain_patience_secs`], we take their ledger to chain
            // (`expire_holds`).
            r.held_since.get_or_insert(now.0);
            self.propose_inner_release(&r, p);
        }
        self.write_virtual(id, r, p);
        self.release_held(now, id, p);
        true
    }

    /// Hub: once every leg that locks the virtual channel's guarantee has its release held (a
    /// hub of a chain: once the next hub completed the release we proposed toward it),
    /// countersign them all in this step.
    pub(super) fn release_held(&mut self, now: Expiry, id: ChannelId, p: &mut Pending) {
        let Some(r) = self.book.virtuals.get(&id).cloned() else {
            return;
        };
        if !r.onward.is_empty() {
            // A hub of a chain, not the last: A's leg goes once our release toward the next
            // hub is co-signed (the next hub completed it), whatever else is disputed.
            let Some(&next) = r.ledgers.get(1) else {
                return;
            };
            if r.held.first().is_none_or(Option::is_none) || self.guarantee_on(next, id).is_some() {
                return;
            }
            if self.is_disputed(next) {
                // Completed off chain while that ledger is disputed: it counts there only once
                // registered. We register it; A's leg follows when the chain shows it
                // (`on_leg_disputed`), within A's ledger's longer window.
                self.answer_dispute(next, p);
                return;
            }
            self.complete_toward_a(now, id, p);
            return;
        }
        let complete = r
            .ledgers
            .iter()
            .zip(&r.held)
            .all(|(l, h)| h.is_some() || self.guarantee_on(*l, id).is_none());
        if !complete {
            return;
        }
        // A leg disputed on chain may conclude still holding the guarantee, settled by an
        // outcome its parties choose: then no leg is released off chain (every leg settles on
        // chain by one recorded outcome). A hub of a chain completes on chain instead, when
        // the next hub registers the release it signed (`on_leg_disputed`).
        if r.ledgers.iter().any(|l| self.is_disputed(*l)) {
            return;
        }
        // Every release is checked again against its ledger as it stands: all are
        // countersigned, or none (a leg released alone could be robbed on the other, ADR 0026).
        let all_accept = r.ledgers.iter().zip(&r.held).all(|(l, h)| {
            h.as_ref()
                .is_none_or(|m| self.would_countersign(*l, m, now))
        });
        if !all_accept {
            // Nothing changed a held ledger in between (we propose nothing on it and its party
            // waits for us), so this does not happen; if it did, every release stays held and
            // the legs keep their guarantees, settled on chain by one recorded outcome.
            return;
        }
        self.countersign_holds(now, id, r, p);
    }

    /// Hub: countersign every release of `r` (virtual channel `id`) we hold, at once: on a
    /// ledger paid out already nothing is signed (the chain settles it), on a disputed one our
    /// countersigned release answers the dispute, and what we kept from proposing while
    /// holding goes out now.
    fn countersign_holds(
        &mut self,
        now: Expiry,
        id: ChannelId,
        mut r: VirtualRecord,
        p: &mut Pending,
    ) {
        let held: Vec<(ChannelId, Message)> = r
            .ledgers
            .iter()
            .zip(r.held.iter_mut())
            .filter_map(|(l, h)| h.take().map(|m| (*l, m)))
            .collect();
        r.held_since = None;
        self.write_virtual(id, r, p);
        for (ledger, msg) in held {
            let Some(e) = self.channels.get_mut(&ledger) else {
                continue;
            };
            if e.concluded {
                continue;
            }
            if let Ok(effects) = e.machine.handle(msg, now) {
                self.carry(ledger, effects, p);
            }
            if self.is_disputed(ledger) {
                self.answer_dispute(ledger, p);
            }
            p.to_propose.insert(ledger);
        }
    }

    /// Hub of a chain, not the last (ADR 0026): `ledger`, a leg of a virtual channel whose
    /// close we are in (we hold the release toward A and signed ours toward the next hub), is
    /// disputed on chain at `version` with a state guaranteeing `guaranteed`.
    ///
    /// - The leg toward A: its party may let it conclude still holding the guarantee while the
    ///   next hub keeps our signed release to complete late. We take the leg toward the next
    ///   hub to chain at once, so the next hub must answer (register our release) within that
    ///   ledger's window, which ends [`vchan::CHAIN_REACTION_SECS`] before the party's
    ///   (checked at the open).
    /// - The leg toward the next hub, registered without the guarantee at our latest version or
    ///   later: that is the release we signed (the only state of ours without it), so that leg
    ///   ends by the final state. We complete the leg toward A by the same state: we
    ///   countersign the release we hold, and if that leg is disputed we answer with it.
    pub(super) fn on_leg_disputed(
        &mut self,
        now: Expiry,
        ledger: ChannelId,
        version: u64,
        guaranteed: &[ChannelId],
        p: &mut Pending,
    ) {
        let ours: Vec<(ChannelId, VirtualRecord)> = self
            .book
            .virtuals
            .iter()
            .filter(|(_, r)| {
                r.role == VirtualRole::Hub
                    && !r.onward.is_empty()
                    && r.held.first().is_some_and(Option::is_some)
                    && r.ledgers.contains(&ledger)
            })
            .map(|(id, r)| (*id, r.clone()))
            .collect();
        for (id, r) in ours {
            let (Some(&up), Some(&next)) = (r.ledgers.first(), r.ledgers.get(1)) else {
                continue;
            };
            let inner_out = self.guarantee_on(next, id).is_some();
            if ledger == up {
                if !inner_out {
                    // The next hub completed our release off chain: A's leg goes by the same
                    // state now, answering A's dispute with it.
                    self.complete_toward_a(now, id, p);
                    continue;
                }
                self.take_to_chain(next, p);
                continue;
            }
            let latest = self
                .channels
                .get(&next)
                .map_or(u64::MAX, |e| e.machine.latest().state.version);
            if guaranteed.contains(&id) || version < latest {
                continue;
            }
            // The chain shows the next ledger released at our latest version or later: the
            // release we signed. Complete ours toward A.
            self.complete_toward_a(now, id, p);
        }
    }

    /// Hub of a chain, not the last: our release toward the next hub takes effect (co-signed
    /// off chain, or registered on chain), so we complete the release of our leg toward A we
    /// hold: countersigned, and if that leg is disputed, answered on chain with it.
    fn complete_toward_a(&mut self, now: Expiry, id: ChannelId, p: &mut Pending) {
        let Some(mut r) = self.book.virtuals.get(&id).cloned() else {
            return;
        };
        let Some(&up) = r.ledgers.first() else {
            return;
        };
        let Some(Some(msg)) = r.held.first().cloned() else {
            return;
        };
        let Some(e) = self.channels.get_mut(&up) else {
            return;
        };
        let Ok(effects) = e.machine.handle(msg, now) else {
            // Nothing changed on that ledger since we held it (we take nothing else of its
            // party there and propose nothing), so this does not happen; the release stays
            // held.
            return;
        };
        if let Some(slot) = r.held.first_mut() {
            *slot = None;
        }
        r.held_since = None;
        self.write_virtual(id, r, p);
        self.carry(up, effects, p);
        if self.is_disputed(up) {
            self.answer_dispute(up, p);
        }
        p.to_propose.insert(up);
    }

    /// Whether `ledger` is disputed on chain (its machine frozen).
    fn is_disputed(&self, ledger: ChannelId) -> bool {
        self.channels
            .get(&ledger)
            .is_some_and(|e| e.machine.snapshot().frozen())
    }

    /// Answer the dispute of `ledger` with our latest co-signed state (a release just
    /// completed there).
    fn answer_dispute(&self, ledger: ChannelId, p: &mut Pending) {
        if let Some(e) = self.channels.get(&ledger) {
            let s = e.machine.snapshot();
            let intent = Intent::Challenge {
                params: s.params().clone(),
                state: s.latest().clone(),
            };
            p.out.writes.push(Write::Intent(Box::new(intent)));
        }
    }

    /// Take `ledger` to chain with our latest co-signed state, unless it is there already. The
    /// machine is not frozen: a release the peer completes meanwhile is still taken, and we
    /// register it when the chain shows the dispute (a dispute below our latest version is
    /// challenged).
    fn take_to_chain(&self, ledger: ChannelId, p: &mut Pending) {
        let Some(e) = self.channels.get(&ledger) else {
            return;
        };
        let s = e.machine.snapshot();
        if !s.frozen() && !e.concluded {
            let intent = Intent::Close {
                params: s.params().clone(),
                state: s.latest().clone(),
            };
            p.out.writes.push(Write::Intent(Box::new(intent)));
        }
    }

    /// Hub of a chain, not the last: whether the release of `r`'s leg toward the next hub we
    /// signed (or queued to sign) can still be completed by that hub: it is proposed, or
    /// waiting to be proposed again after a refusal (the update machine drops it, and reports
    /// it dead, only once a later state is co-signed), and the ledger is not paid out.
    pub(super) fn inner_release_out(&self, r: &VirtualRecord) -> bool {
        let id = r.terms.id();
        let releases = |op: &Op| matches!(op, Op::RemoveGuarantee { virtual_channel, .. } if *virtual_channel == id);
        !r.onward.is_empty()
            && r.ledgers
                .get(1)
                .and_then(|l| self.channels.get(l))
                .is_some_and(|e| {
                    // A ledger paid out on chain completes nothing more.
                    if e.concluded {
                        return false;
                    }
                    let s = e.machine.snapshot();
                    s.pending()
                        .is_some_and(|q| q.ops.iter().any(|o| releases(&o.op)))
                        || s.queue().iter().any(|o| releases(&o.op))
                })
    }

    /// Hub of a chain, not the last: our release of `id`'s leg on `ledger` (toward the next
    /// hub) was refused, and a later state is co-signed there, so the next hub can no longer
    /// complete it (the update machine reports a refused operation dead only then). We let go
    /// of the release we held toward A, refused and the agreement withdrawn, as the last hub
    /// did of its own: no leg is released off chain, A's ledger is free again, and the channel
    /// settles on chain by one recorded outcome (ADR 0026).
    pub(super) fn inner_release_dead(
        &mut self,
        now: Expiry,
        ledger: ChannelId,
        id: ChannelId,
        p: &mut Pending,
    ) {
        let Some(mut r) = self.book.virtuals.get(&id).cloned() else {
            return;
        };
        if r.role != VirtualRole::Hub || r.onward.is_empty() || r.ledgers.get(1) != Some(&ledger) {
            return;
        }
        let (Some(&up), Some(fin)) = (r.ledgers.first(), r.outcome.clone()) else {
            return;
        };
        let Some(Some(msg)) = r.held.first().cloned() else {
            return;
        };
        let Some(g) = self.guarantee_on(up, id) else {
            return;
        };
        let Ok([to_a, to_b]) = vchan::release(&g, &fin.state) else {
            return;
        };
        let op = Op::RemoveGuarantee {
            virtual_channel: id,
            to_a,
            to_b,
        };
        if let Some(slot) = r.held.first_mut() {
            *slot = None;
        }
        r.held_since = None;
        self.write_virtual(id, r, p);
        let Some(e) = self.channels.get_mut(&up) else {
            return;
        };
        e.machine.withdraw_agreement(&op);
        p.touched.insert(up);
        if let Ok(effects) = e.machine.handle(msg, now) {
            // Refused now that we no longer agree: A's ledger is free.
            self.carry(up, effects, p);
        }
        p.to_propose.insert(up);
    }

    /// A ledger's release of a virtual channel's guarantee is co-signed: our leg (every leg,
    /// for its hub) is settled.
    pub(super) fn on_release_committed(&mut self, ops: &[Op], p: &mut Pending) {
        for op in ops {
            let Op::RemoveGuarantee {
                virtual_channel, ..
            } = op
            else {
                continue;
            };
            let id = *virtual_channel;
            let Some(r) = self.book.virtuals.get(&id) else {
                continue;
            };
            if r.role == VirtualRole::Hub && r.held.iter().any(Option::is_some) {
                // A hub of a chain: the next hub completed our release toward it; the one
                // we hold toward A goes now.
                p.reactions.push_back(super::Reaction::ReleaseHeld(id));
            }
            let settled = r
                .ledgers
                .iter()
                .all(|l| self.guarantee_on(*l, id).is_none());
            if settled {
                self.set_phase(id, VirtualPhase::Settled, p);
                p.out
                    .events
                    .push(NodeEvent::VirtualSettled { channel_id: id });
            }
        }
    }
}

impl Node {
    /// What the end of virtual channel `r`'s life asks of us, and from when: a party closes it
    /// [`super::Config::virtual_end_margin_secs`] before its end unless it is closing already;
    /// the hub takes it on chain as long after its end unless every ledger of ours that
    /// locks its guarantee is on chain already; and a party whose ledger still locks the
    /// guarantee twice the margin after the end (the hub did not settle it: gone, or holding
    /// back) takes that ledger on chain itself. `None`: nothing to do.
    fn virtual_end_due(&self, id: ChannelId, r: &VirtualRecord) -> Option<Expiry> {
        let margin = self.config.virtual_end_margin_secs;
        let end = r.terms.expires_at.0;
        match (r.role, r.phase) {
            // Also an open never completed (or refused after a leg locked): a guarantee of
            // ours it left must not outlive the channel's end.
            (
                VirtualRole::Hub,
                VirtualPhase::Opening
                | VirtualPhase::Failed
                | VirtualPhase::Open
                | VirtualPhase::Closed,
            ) => {
                let pending = r.ledgers.iter().any(|l| self.locks_on_chain_able(*l, id));
                pending.then(|| Expiry(end.saturating_add(margin)))
            }
            (
                VirtualRole::Opener | VirtualRole::Acceptor,
                VirtualPhase::Open | VirtualPhase::Closed,
            ) => {
                let e = self.channels.get(&id)?;
                let s = e.machine.snapshot();
                let closing = s.latest().state.is_final
                    || s.pending().is_some_and(|p| p.state.is_final)
                    || s.queue().iter().any(|q| q.op == Op::Close)
                    || s.frozen();
                // A close waits for the channel's locks to end (each expires by its end and is
                // then taken out, which brings this back): proposed with a lock in, it would be
                // dropped and due again at once.
                if r.phase == VirtualPhase::Open
                    && !closing
                    && e.funded
                    && s.latest().state.locks.is_empty()
                {
                    return Some(Expiry(end.saturating_sub(margin)));
                }
                r.ledgers
                    .first()
                    .filter(|l| self.locks_on_chain_able(**l, id))
                    .map(|_| Expiry(end.saturating_add(margin.saturating_mul(2))))
            }
            _ => None,
        }
    }

    /// Whether our ledger `ledger` still locks virtual channel `id`'s guarantee in its latest
    /// co-signed state, and could be taken on chain (funded, not disputed or paid out).
    fn locks_on_chain_able(&self, ledger: ChannelId, id: ChannelId) -> bool {
        self.channels.get(&ledger).is_some_and(|e| {
            let s = e.machine.snapshot();
            e.funded
                && !e.concluded
                && !s.frozen()
                && s.latest()
                    .state
                    .guarantees
                    .iter()
                    .any(|g| g.virtual_channel == id)
        })
    }

    /// The earliest [`Self::virtual_end_due`].
    pub(super) fn next_virtual_end(&self) -> Option<Expiry> {
        self.book
            .virtuals
            .iter()
            .filter_map(|(id, r)| self.virtual_end_due(*id, r))
            .min()
    }

    /// Act on every virtual channel whose end asks something of us now: a party proposes its
    /// close (the final state, then its leg's release, as `close` does); the hub, its parties
    /// having left it open past its end, closes on chain each of its ledgers still locking the
    /// guarantee (as `force_close` does), and the chain's outcome settles it (ADR 0026: the
    /// hub's collateral is never held beyond a channel's end and its margin); a party whose
    /// ledger still locks the guarantee after the hub's turn does the same with its ledger (a
    /// hub that is gone, or holds back, never keeps a party's money past the end either).
    pub(super) fn end_virtuals(&mut self, now: Expiry, p: &mut Pending) {
        let due: Vec<(ChannelId, Vec<ChannelId>, bool)> = self
            .book
            .virtuals
            .iter()
            .filter(|(id, r)| self.virtual_end_due(**id, r).is_some_and(|t| t <= now))
            .map(|(id, r)| {
                // A party's turn for its ledger comes after the hub's (see `virtual_end_due`).
                let margin = self.config.virtual_end_margin_secs.saturating_mul(2);
                let ledger_turn = r.role == VirtualRole::Hub
                    || r.terms.expires_at.0.saturating_add(margin) <= now.0;
                (*id, r.ledgers.clone(), ledger_turn)
            })
            .collect();
        for (id, ledgers, ledger_turn) in due {
            if !ledger_turn {
                if let Some(e) = self.channels.get_mut(&id) {
                    e.machine.close();
                    p.to_propose.insert(id);
                    p.touched.insert(id);
                }
                continue;
            }
            // The hub after the end; a party after the hub's turn (`virtual_end_due`): our
            // ledger(s) still locking the guarantee go on chain, and the chain settles it.
            for ledger in ledgers {
                let Some(e) = self.channels.get_mut(&ledger) else {
                    continue;
                };
                let s = e.machine.snapshot();
                if e.concluded || s.frozen() || !e.funded {
                    continue;
                }
                let intent = Intent::Close {
                    params: s.params().clone(),
                    state: s.latest().clone(),
                };
                p.out.writes.push(Write::Intent(Box::new(intent)));
                e.machine.freeze();
                p.touched.insert(ledger);
                p.out.events.push(NodeEvent::VirtualExpired {
                    channel_id: id,
                    ledger,
                });
            }
        }
    }

    /// Hub: the challenge of virtual channel `id`'s dispute at `version` by the final state its
    /// parties handed us, if that is newer (a party that registers an old state while the other
    /// is away does not settle the channel by it; either way our legs resolve by one outcome,
    /// but the away party is owed the final state).
    pub(super) fn challenge_virtual(&self, id: ChannelId, version: u64) -> Option<Intent> {
        let r = self
            .book
            .virtuals
            .get(&id)
            // Released on every leg: its dispute no longer matters to anyone's ledger.
            .filter(|r| r.role == VirtualRole::Hub && r.phase != VirtualPhase::Settled)?;
        let fin = r.outcome.as_ref().filter(|f| f.state.version > version)?;
        Some(Intent::Challenge {
            params: r.terms.params.clone(),
            state: fin.clone(),
        })
    }

    /// Hub: when the hold of `r`'s releases runs out of patience: a party's release held
    /// waiting for the other's, [`super::Config::virtual_hold_secs`]; a hub of a chain holding
    /// A's release while its own toward the next hub is out,
    /// [`super::Config::virtual_chain_patience_secs`] (the next hub's own hold, which ends in
    /// a refusal, should end first).
    fn hold_deadline(&self, r: &VirtualRecord) -> Option<u64> {
        let patience = if self.inner_release_out(r) {
            self.config.virtual_chain_patience_secs
        } else {
            self.config.virtual_hold_secs
        };
        r.held_since.map(|t| t.saturating_add(patience))
    }

    /// Hub: the earliest time a held release runs out of patience.
    pub(super) fn next_hold_deadline(&self) -> Option<Expiry> {
        self.book
            .virtuals
            .values()
            .filter_map(|r| self.hold_deadline(r))
            .min()
            .map(Expiry)
    }

    /// Hub: releases held past their patience ([`Node::hold_deadline`]).
    ///
    /// - A party's release held while the other party never sent its own: refuse every held
    ///   release and take back the agreements to the others, so no leg is ever released alone
    ///   ([`Node::let_go_holds`]).
    /// - A hub of a chain whose release toward the next hub is still out: that hub neither
    ///   completed nor refused it, and we cannot refuse A's (our signature is out). We take
    ///   the hubs' ledger to chain: the next hub registers our release within that ledger's
    ///   window (then A's leg goes by the same state, `on_leg_disputed`), or the ledger
    ///   concludes still holding the guarantee and is resolved by the final state we hold
    ///   (then A's leg goes by the outcome the chain records, `on_virtual_registered`). A's
    ///   ledger is not held beyond that.
    pub(super) fn expire_holds(&mut self, now: Expiry, p: &mut Pending) {
        let due: Vec<ChannelId> = self
            .book
            .virtuals
            .iter()
            .filter(|(_, r)| self.hold_deadline(r).is_some_and(|t| t <= now.0))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(mut r) = self.book.virtuals.get(&id).cloned() else {
                continue;
            };
            if self.inner_release_out(&r) {
                let next = r.ledgers.get(1).copied();
                r.held_since = None;
                self.write_virtual(id, r, p);
                if let Some(next) = next {
                    self.take_to_chain(next, p);
                    p.out.events.push(NodeEvent::VirtualReleaseStalled {
                        channel_id: id,
                        ledger: next,
                    });
                }
                continue;
            }
            self.let_go_holds(now, id, p);
        }
    }

    /// Hub: refuse every release of `id` we hold and take back our agreement to the releases
    /// not yet proposed, so no leg is released off chain: the parties' ledgers are free again
    /// and the legs keep their guarantees, settled on chain by one recorded outcome (ADR 0026).
    fn let_go_holds(&mut self, now: Expiry, id: ChannelId, p: &mut Pending) {
        let Some(mut r) = self.book.virtuals.get(&id).cloned() else {
            return;
        };
        let Some(fin) = r.outcome.clone() else {
            return;
        };
        let held: Vec<(ChannelId, Option<Message>)> = r
            .ledgers
            .iter()
            .zip(r.held.iter_mut())
            .map(|(l, h)| (*l, h.take()))
            .collect();
        r.held_since = None;
        self.write_virtual(id, r, p);
        for (ledger, msg) in held {
            let Some(g) = self.guarantee_on(ledger, id) else {
                continue;
            };
            let Ok([to_a, to_b]) = vchan::release(&g, &fin.state) else {
                continue;
            };
            let op = Op::RemoveGuarantee {
                virtual_channel: id,
                to_a,
                to_b,
            };
            let Some(e) = self.channels.get_mut(&ledger) else {
                continue;
            };
            e.machine.withdraw_agreement(&op);
            p.touched.insert(ledger);
            if let Some(msg) = msg
                && let Ok(effects) = e.machine.handle(msg, now)
            {
                // Refused now that we no longer agree: the party's ledger is free.
                self.carry(ledger, effects, p);
            }
            p.to_propose.insert(ledger);
        }
    }

    /// Hub: the chain recorded `recorded` as `id`'s outcome (the first resolution of one of
    /// its guarantees). Every leg still locking the guarantee can now be resolved by that
    /// state only, so the releases we hold no longer need to go all at once:
    ///
    /// - by the recorded state (the final state handed to us): each is countersigned now, on
    ///   a ledger not concluded (answered on chain if disputed); every leg ends by it, off
    ///   chain or on;
    /// - by another state: each is refused ([`Node::let_go_holds`]) and the legs are resolved
    ///   by the recorded one; but a hub of a chain whose own release toward the next hub is
    ///   out keeps A's until that release is completed (then A's goes by it too) or dead.
    fn settle_holds(
        &mut self,
        now: Expiry,
        id: ChannelId,
        recorded: &crate::ChannelState,
        p: &mut Pending,
    ) {
        let Some(r) = self.book.virtuals.get(&id).cloned() else {
            return;
        };
        if r.role != VirtualRole::Hub || r.held.iter().all(Option::is_none) {
            return;
        }
        if r.outcome.as_ref().is_none_or(|f| f.state != *recorded) {
            if !self.inner_release_out(&r) {
                self.let_go_holds(now, id, p);
            }
            return;
        }
        self.countersign_holds(now, id, r, p);
    }
}

impl Node {
    /// A party: our ledger `ledger` concluded on chain in `state`. Each virtual channel whose
    /// guarantee it still holds is settled on chain by its outcome (ADR 0026): at once by its
    /// co-signed final state if we hold one, else by its dispute, which we start with our
    /// latest state unless one is registered already. The resolution pays both sides of the
    /// ledger, so the hub needs to do nothing (it may be gone).
    pub(super) fn on_ledger_concluded(
        &mut self,
        ledger: ChannelId,
        state: &crate::ChannelState,
        p: &mut Pending,
    ) {
        let Some(lp) = self
            .channels
            .get(&ledger)
            .filter(|e| e.via.is_none())
            .map(|e| e.machine.snapshot().params().clone())
        else {
            return;
        };
        for g in &state.guarantees {
            let vid = g.virtual_channel;
            let Some(mut r) = self.book.virtuals.get(&vid).cloned() else {
                continue;
            };
            if r.role == VirtualRole::Hub {
                self.hub_leg_concluded(ledger, &lp, state, r, p);
                continue;
            }
            let Some(v) = self.channels.get(&vid) else {
                continue;
            };
            if r.role == VirtualRole::Hub || r.ledger_concluded.is_some() {
                continue;
            }
            let latest = v.machine.latest().clone();
            let vparams = v.machine.snapshot().params().clone();
            r.ledger_concluded = Some(state.clone());
            let until = r.disputed_until;
            let withheld = r.withheld.zip(r.registered.clone());
            self.write_virtual(vid, r, p);
            if let Some((locks, (st, 0))) = withheld {
                // The outcome was recorded without its locks: ours would be refused now.
                self.withheld_intent(&lp, state, &vparams, st, locks, 0, p);
            } else if latest.state.is_final {
                self.resolve_intent(&lp, state, &vparams, latest.state, Some(latest.sigs), 0, p);
            } else if let Some(until) = until {
                self.resolve_intent(&lp, state, &vparams, latest.state, None, until, p);
            } else {
                let intent = Intent::Close {
                    params: vparams,
                    state: latest,
                };
                p.out.writes.push(Write::Intent(Box::new(intent)));
            }
        }
    }

    /// A party: the virtual channel `id` is disputed on chain until `finalizes_at` with a
    /// state we do not challenge (ours). Once our ledger has concluded, its guarantee is
    /// resolved by that state after the window. Returns whether `id` is a virtual channel.
    pub(super) fn on_virtual_disputed(
        &mut self,
        id: ChannelId,
        finalizes_at: u64,
        p: &mut Pending,
    ) -> bool {
        let Some(mut r) = self.book.virtuals.get(&id).cloned() else {
            return false;
        };
        let Some(v) = self.channels.get(&id) else {
            return true;
        };
        let latest = v.machine.latest().clone();
        let vparams = v.machine.snapshot().params().clone();
        let ledger_state = r.ledger_concluded.clone();
        let ledger = r.ledgers.first().copied();
        r.disputed_until = Some(finalizes_at);
        self.write_virtual(id, r, p);
        if let (Some(state), Some(ledger)) = (ledger_state, ledger)
            && let Some(lp) = self
                .channels
                .get(&ledger)
                .map(|e| e.machine.snapshot().params().clone())
        {
            self.resolve_intent(&lp, &state, &vparams, latest.state, None, finalizes_at, p);
        }
        true
    }

    /// Write the intent resolving `virt`'s guarantee in `ledger_state` by `virt_state`, sent
    /// once the chain's clock passes `not_before` and every lock of `virt_state` can be settled
    /// (after the last one's expiry, or the guarantee's `locks_until` if sooner).
    #[allow(clippy::too_many_arguments)]
    fn resolve_intent(
        &mut self,
        ledger: &ChannelParams,
        ledger_state: &crate::ChannelState,
        virt: &ChannelParams,
        virt_state: crate::ChannelState,
        sigs: Option<[Signature; 2]>,
        not_before: u64,
        p: &mut Pending,
    ) {
        // The adjudicator settles each lock by its expiry or the guarantee's bound, the sooner.
        let until = ledger_state
            .guarantees
            .iter()
            .find(|g| g.virtual_channel == virt_state.channel_id)
            .map_or(u64::MAX, |g| g.locks_until.0);
        let last_lock = virt_state
            .locks
            .iter()
            .map(|l| l.expiry.0.min(until).saturating_add(1))
            .max()
            .unwrap_or(0);
        let intent = Intent::ResolveGuarantee(Box::new(Resolution {
            ledger: ledger.clone(),
            ledger_state: ledger_state.clone(),
            virt: virt.clone(),
            virt_state,
            sigs,
            not_before: not_before.max(last_lock),
            withheld: None,
        }));
        p.out.writes.push(Write::Intent(Box::new(intent)));
    }
}

impl Node {
    /// Hub: our ledger `ledger` (leg of `r`) concluded on chain holding the virtual channel's
    /// guarantee, its party perhaps gone. We resolve it ourselves: by the final state handed
    /// to us if there is one, else by the state registered for the channel once its window is
    /// over, else we start the channel's dispute from this guarantee (its opening as funded,
    /// which the parties replace with their latest state).
    fn hub_leg_concluded(
        &mut self,
        ledger: ChannelId,
        lp: &ChannelParams,
        state: &crate::ChannelState,
        mut r: VirtualRecord,
        p: &mut Pending,
    ) {
        let id = r.terms.id();
        let Some(leg) = r.ledgers.iter().position(|l| *l == ledger) else {
            return;
        };
        if r.concluded_legs.len() < r.ledgers.len() {
            r.concluded_legs.resize(r.ledgers.len(), None);
        }
        if r.concluded_legs.get(leg).is_some_and(Option::is_some) {
            return;
        }
        if let Some(slot) = r.concluded_legs.get_mut(leg) {
            *slot = Some(state.clone());
        }
        let vparams = r.terms.params.clone();
        let outcome = r.outcome.clone();
        let registered = r.registered.clone();
        let withheld = r.withheld;
        self.write_virtual(id, r, p);
        // The registered state settles the leg when the chain recorded it, or when no final
        // state handed to us can replace it (none, or an older one: the parties signed past
        // it, and once its window ends the adjudicator takes only the registered state).
        let by_registered = registered.as_ref().is_some_and(|(st, until)| {
            *until == 0
                || outcome
                    .as_ref()
                    .is_none_or(|f| f.state.version < st.version)
        });
        if let (true, Some((st, until))) = (by_registered, registered.clone()) {
            match withheld {
                // Registered with locks nobody showed us: resolved without them after the
                // grace, unless the outcome is recorded with them first (which replaces it).
                Some(locks) => self.withheld_intent(lp, state, &vparams, st, locks, until, p),
                None => self.resolve_intent(lp, state, &vparams, st, None, until, p),
            }
        } else if let Some(fin) = outcome {
            self.resolve_intent(lp, state, &vparams, fin.state, Some(fin.sigs), 0, p);
        } else {
            let intent = Intent::DisputeVirtual(Box::new(VirtualDispute {
                ledger: lp.clone(),
                ledger_state: state.clone(),
                virt: vparams,
            }));
            p.out.writes.push(Write::Intent(Box::new(intent)));
        }
    }

    /// Hub: `state` is registered on chain for the virtual channel `id` until `finalizes_at`.
    /// Every concluded leg is resolved by it after the window (a later registration replaces
    /// the intent).
    pub(super) fn on_virtual_registered(
        &mut self,
        now: Expiry,
        id: ChannelId,
        state: crate::ChannelState,
        finalizes_at: u64,
        p: &mut Pending,
    ) {
        let Some(mut r) = self
            .book
            .virtuals
            .get(&id)
            .filter(|r| r.role == VirtualRole::Hub)
            .cloned()
        else {
            return;
        };
        // The adjudicator's recorded outcome (`finalizes_at` 0, from the first resolution) is
        // the only state any leg can still be resolved by: it replaces whatever we had (a final
        // state handed to us, a dispute's state), and nothing replaces it.
        let recorded = finalizes_at == 0;
        if r.registered.as_ref().is_some_and(|(_, f)| *f == 0) {
            return;
        }
        let final_replaces = r
            .outcome
            .as_ref()
            .is_some_and(|f| f.state.version >= state.version);
        if !recorded && (final_replaces || r.registered.as_ref().is_some_and(|(s, _)| *s == state))
        {
            // A final state was handed to us that replaces this dispute (we challenge with it,
            // and every leg resolves by it unless the chain records another), or this dispute
            // state is known already.
            return;
        }
        if recorded {
            self.settle_holds(now, id, &state, p);
            let Some(fresh) = self.book.virtuals.get(&id).cloned() else {
                return;
            };
            r = fresh;
        }
        r.registered = Some((state.clone(), finalizes_at));
        r.withheld = None;
        let legs: Vec<(ChannelId, crate::ChannelState)> = r
            .ledgers
            .iter()
            .zip(&r.concluded_legs)
            .filter_map(|(l, s)| s.clone().map(|s| (*l, s)))
            .collect();
        let vparams = r.terms.params.clone();
        self.write_virtual(id, r, p);
        for (ledger, ls) in legs {
            let Some(lp) = self
                .channels
                .get(&ledger)
                .map(|e| e.machine.snapshot().params().clone())
            else {
                continue;
            };
            self.resolve_intent(&lp, &ls, &vparams, state.clone(), None, finalizes_at, p);
        }
    }
}

impl Node {
    /// A virtual channel's state with locks registered on chain, shown without them
    /// (`finalizes_at` 0: recorded so by `resolveGuaranteeWithheld`). Its hub, which never
    /// holds V's locks, resolves every concluded leg without them after the grace; a party
    /// whose concluded ledger is still to resolve follows a recorded one (its locks would be
    /// refused now). A state shown whole (with its locks, or none) replaces this.
    pub(super) fn on_virtual_withheld(
        &mut self,
        id: ChannelId,
        state: crate::ChannelState,
        locks: crate::node::chain::WithheldLocks,
        finalizes_at: u64,
        p: &mut Pending,
    ) {
        let Some(mut r) = self.book.virtuals.get(&id).cloned() else {
            return;
        };
        let recorded = finalizes_at == 0;
        if r.registered.as_ref().is_some_and(|(_, f)| *f == 0) {
            // An outcome is recorded already: nothing replaces it.
            return;
        }
        if r.role != VirtualRole::Hub && !recorded {
            // A party knows its own locks: its resolution carries them.
            return;
        }
        r.registered = Some((state.clone(), finalizes_at));
        r.withheld = Some(locks);
        let vparams = r.terms.params.clone();
        let legs: Vec<(ChannelId, crate::ChannelState)> = if r.role == VirtualRole::Hub {
            r.ledgers
                .iter()
                .zip(&r.concluded_legs)
                .filter_map(|(l, s)| s.clone().map(|s| (*l, s)))
                .collect()
        } else {
            r.ledgers
                .first()
                .copied()
                .zip(r.ledger_concluded.clone())
                .into_iter()
                .collect()
        };
        let hub_with_final = r.role == VirtualRole::Hub
            && r.outcome
                .as_ref()
                .is_some_and(|f| f.state.version >= state.version)
            && !recorded;
        self.write_virtual(id, r, p);
        if hub_with_final {
            // We hold a final state both parties signed, as new or newer: it replaces this
            // dispute (`challenge_virtual`), and our legs resolve by it.
            return;
        }
        for (ledger, ls) in legs {
            let Some(lp) = self
                .channels
                .get(&ledger)
                .map(|e| e.machine.snapshot().params().clone())
            else {
                continue;
            };
            self.withheld_intent(&lp, &ls, &vparams, state.clone(), locks, finalizes_at, p);
        }
    }

    /// Write the intent resolving `virt`'s guarantee in `ledger_state` by `virt_state` without
    /// its locks (`resolveGuaranteeWithheld`), sent once the chain's clock passes the window
    /// end `until` and the guarantee's `locks_until` plus the adjudicator's grace.
    #[allow(clippy::too_many_arguments)]
    fn withheld_intent(
        &mut self,
        ledger: &ChannelParams,
        ledger_state: &crate::ChannelState,
        virt: &ChannelParams,
        virt_state: crate::ChannelState,
        locks: crate::node::chain::WithheldLocks,
        until: u64,
        p: &mut Pending,
    ) {
        let grace_end = ledger_state
            .guarantees
            .iter()
            .find(|g| g.virtual_channel == virt_state.channel_id)
            .map_or(u64::MAX, |g| {
                g.locks_until.0.saturating_add(vchan::WITHHELD_GRACE_SECS)
            });
        let intent = Intent::ResolveGuarantee(Box::new(Resolution {
            ledger: ledger.clone(),
            ledger_state: ledger_state.clone(),
            virt: virt.clone(),
            virt_state,
            sigs: None,
            not_before: until.max(grace_end),
            withheld: Some(locks),
        }));
        p.out.writes.push(Write::Intent(Box::new(intent)));
    }
}
