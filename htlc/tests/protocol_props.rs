//! Property tests of the update protocol: two honest machines driven by random operations,
//! random proposal timing from both sides (so proposals cross), replayed messages, forged
//! proposals and a moving clock. After every step the money-safety invariants must hold, among
//! them rule 11: a party's balance never falls by a state the peer proposed unless it agreed to
//! the guarantee that moves it, a guarantee operation is co-signed only as agreed, and a deposit
//! is credited only to whoever the chain says deposited it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use htlc::ids::{Expiry, HtlcId, Preimage, Side};
use htlc::ops::Limits;
use htlc::sig::verify;
use htlc::{Amount, Channel, Effect, Event, Message, Op};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet, VecDeque};

#[derive(Clone, Debug)]
enum Action {
    Offer {
        from: bool,
        amount: u128,
        secret: u8,
        ttl: u64,
    },
    Fulfill {
        by: bool,
        pick: usize,
        right: bool,
    },
    Fail {
        by: bool,
        pick: usize,
    },
    Expire {
        by: bool,
        pick: usize,
    },
    Transfer {
        from: bool,
        amount: u128,
    },
    /// `by` proposes a guarantee; the other side agreed to it first if `agreed`.
    Guarantee {
        by: bool,
        vc: u8,
        a: u128,
        b: u128,
        agreed: bool,
    },
    /// `by` proposes a guarantee's release; the other side agreed to the split if `agreed`.
    Release {
        by: bool,
        pick: usize,
        split: u128,
        agreed: bool,
    },
    /// `by`, outside its machine, proposes `[AddGuarantee{from other: take}, RemoveGuarantee{all
    /// to by}]`: the theft of issue 12.
    ForgeGuarantee {
        by: bool,
        take: u128,
    },
    /// `by`, outside its machine, claims a top-up of `amount` whatever the chain shows.
    ForgeDeposit {
        by: bool,
        amount: u128,
    },
    Propose {
        by: bool,
    },
    Deliver {
        to: bool,
    },
    Replay {
        to: bool,
        pick: usize,
    },
    ForgeFulfill {
        by: bool,
        pick: usize,
    },
    Tick {
        secs: u64,
    },
    /// `by` deposits on chain and queues the top-up; the other side may not see it yet.
    ChainDeposit {
        by: bool,
        amount: u128,
        seen_by_other: bool,
    },
    /// `to` catches up with the chain's holdings.
    Observe {
        to: bool,
    },
    /// `by` claims a top-up it never deposited.
    FakeDeposit {
        by: bool,
        amount: u128,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (any::<bool>(), 1u128..400, 0u8..6, 1u64..120).prop_map(|(from, amount, secret, ttl)| Action::Offer { from, amount, secret, ttl }),
        3 => (any::<bool>(), any::<usize>(), prop::bool::weighted(0.8)).prop_map(|(by, pick, right)| Action::Fulfill { by, pick, right }),
        2 => (any::<bool>(), any::<usize>()).prop_map(|(by, pick)| Action::Fail { by, pick }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(by, pick)| Action::Expire { by, pick }),
        2 => (any::<bool>(), 1u128..300).prop_map(|(from, amount)| Action::Transfer { from, amount }),
        1 => (any::<bool>(), 0u8..4, 0u128..100, 0u128..100, prop::bool::weighted(0.8)).prop_map(|(by, vc, a, b, agreed)| Action::Guarantee { by, vc, a, b, agreed }),
        1 => (any::<bool>(), any::<usize>(), any::<u128>(), prop::bool::weighted(0.8)).prop_map(|(by, pick, split, agreed)| Action::Release { by, pick, split, agreed }),
        1 => (any::<bool>(), 1u128..6_000).prop_map(|(by, take)| Action::ForgeGuarantee { by, take }),
        1 => (any::<bool>(), 1u128..600).prop_map(|(by, amount)| Action::ForgeDeposit { by, amount }),
        6 => any::<bool>().prop_map(|by| Action::Propose { by }),
        10 => any::<bool>().prop_map(|to| Action::Deliver { to }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(to, pick)| Action::Replay { to, pick }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(by, pick)| Action::ForgeFulfill { by, pick }),
        2 => (1u64..60).prop_map(|secs| Action::Tick { secs }),
        1 => (any::<bool>(), 1u128..500, any::<bool>()).prop_map(|(by, amount, seen_by_other)| Action::ChainDeposit { by, amount, seen_by_other }),
        1 => any::<bool>().prop_map(|to| Action::Observe { to }),
        1 => (any::<bool>(), 1u128..500).prop_map(|(by, amount)| Action::FakeDeposit { by, amount }),
    ]
}

fn side(b: bool) -> Side {
    if b { Side::B } else { Side::A }
}

struct World {
    ch: [Channel; 2],
    /// Messages in flight toward side i, in order (one ordered stream per direction).
    inbox: [VecDeque<Message>; 2],
    delivered: [Vec<Message>; 2],
    now: Expiry,
    /// What each side's latest co-signed state must total: the opening total plus the
    /// deposits it committed (rule 1 with top-ups).
    totals: [Amount; 2],
    /// What the adjudicator holds.
    chain: Amount,
    /// What each participant deposited on chain after the opening (ground truth).
    deposited: [Amount; 2],
    /// As side i's co-signed states say: top-ups credited to each participant.
    credited: [[Amount; 2]; 2],
    /// Guarantee operations side i agreed to and has not yet seen co-signed.
    agreed: [Vec<Op>; 2],
    /// (signer, version) -> digest of what it signed: never two digests for one version.
    signed: HashMap<(usize, u64), alloy::primitives::B256>,
    last_committed: [u64; 2],
    added: [HashSet<HtlcId>; 2],
    removed: [HashSet<HtlcId>; 2],
}

impl World {
    fn new() -> Self {
        let (a, b) = pair(
            [5_000, 5_000],
            Limits {
                max_pending_locks: 12,
                ..Limits::default()
            },
        );
        World {
            totals: [a.latest().state.total().unwrap(); 2],
            chain: a.latest().state.total().unwrap(),
            deposited: [Amount::ZERO; 2],
            credited: [[Amount::ZERO; 2]; 2],
            agreed: [Vec::new(), Vec::new()],
            ch: [a, b],
            inbox: [VecDeque::new(), VecDeque::new()],
            delivered: [Vec::new(), Vec::new()],
            now: Expiry(1_000),
            signed: HashMap::new(),
            last_committed: [0, 0],
            added: [HashSet::new(), HashSet::new()],
            removed: [HashSet::new(), HashSet::new()],
        }
    }

    /// Carry out effects of side `i`, checking invariants on each.
    fn run(
        &mut self,
        i: usize,
        prev: &htlc::ChannelState,
        effects: Vec<Effect>,
    ) -> Result<(), TestCaseError> {
        let ch = &self.ch[i];
        for e in effects {
            match e {
                Effect::Persist => {
                    prop_assert!(
                        ch.latest().state.total().unwrap() <= self.chain,
                        "more than the chain holds"
                    );
                }
                Effect::Send(m) => {
                    let state = match &m {
                        Message::Propose { version, .. } => {
                            let p = ch
                                .snapshot()
                                .pending()
                                .expect("proposal sent without pending");
                            prop_assert_eq!(p.state.version, *version);
                            Some(p.state.clone())
                        }
                        Message::Accept { version, .. } => {
                            prop_assert_eq!(ch.latest().state.version, *version);
                            Some(ch.latest().state.clone())
                        }
                        Message::Reject { .. } => None,
                    };
                    if let Some(s) = state {
                        let d = ch.digest(&s).unwrap();
                        let prior = self.signed.insert((i, s.version), d);
                        prop_assert!(
                            prior.is_none() || prior == Some(d),
                            "signed two states at version {}",
                            s.version
                        );
                    }
                    self.inbox[1 - i].push_back(m);
                }
                Effect::Event(Event::Committed {
                    version,
                    ops,
                    proposer,
                }) => {
                    // Side i validated the operations just now only if the peer proposed them
                    // (its own proposals were validated by the peer, earlier).
                    let validated_now = proposer.index() != i;
                    let p = proposer.index();
                    for op in &ops {
                        if let Op::Deposit { amount } = op {
                            self.totals[i] = self.totals[i].checked_add(*amount).unwrap();
                            self.credited[i][p] = self.credited[i][p].checked_add(*amount).unwrap();
                            prop_assert!(
                                self.credited[i][p] <= self.deposited[p],
                                "a deposit credited to a party that did not make it"
                            );
                        }
                    }
                    if validated_now {
                        // Rule 11: the peer's guarantee operations were agreed, each once, and
                        // our balance fell by at most what the agreed guarantees take from us.
                        let mut may_fall = Amount::ZERO;
                        for op in &ops {
                            if matches!(op, Op::AddGuarantee(_) | Op::RemoveGuarantee { .. }) {
                                let pos = self.agreed[i].iter().position(|a| a == op);
                                prop_assert!(
                                    pos.is_some(),
                                    "signed a guarantee operation nobody agreed to: {:?}",
                                    op
                                );
                                self.agreed[i].remove(pos.unwrap());
                            }
                            if let Op::AddGuarantee(g) = op {
                                let mine = if i == 0 { g.from_a } else { g.from_b };
                                may_fall = may_fall.checked_add(mine).unwrap();
                            }
                        }
                        let after = ch.latest().state.balances[i];
                        prop_assert!(
                            after.checked_add(may_fall).unwrap() >= prev.balances[i],
                            "the peer's proposal lowered our balance from {} to {}",
                            prev.balances[i],
                            after
                        );
                    }
                    prop_assert!(version > self.last_committed[i], "versions only increase");
                    self.last_committed[i] = version;
                    for op in &ops {
                        match op {
                            Op::AddHtlc { id, .. } => {
                                prop_assert!(self.added[i].insert(*id), "lock {:?} added twice", id)
                            }
                            Op::FulfillHtlc { id, preimage } => {
                                // One handled input commits at most one state, so `prev` is the
                                // state this commit replaced.
                                let l = prev.lock(*id).copied();
                                prop_assert!(l.is_some(), "fulfilled a lock that was not pending");
                                let l = l.unwrap();
                                prop_assert!(
                                    l.hashlock.is_opened_by(preimage),
                                    "fulfilled with a wrong preimage"
                                );
                                if validated_now {
                                    prop_assert!(self.now < l.expiry, "expired lock fulfilled");
                                }
                                prop_assert!(self.removed[i].insert(*id), "lock removed twice");
                            }
                            Op::FailHtlc { id, .. } | Op::ExpireHtlc { id } => {
                                prop_assert!(self.removed[i].insert(*id), "lock removed twice");
                            }
                            _ => {}
                        }
                    }
                }
                Effect::Event(_) => {}
            }
        }
        // The latest co-signed state always verifies for both participants.
        let latest = ch.latest();
        let d = ch.digest(&latest.state).unwrap();
        for s in [Side::A, Side::B] {
            prop_assert!(
                verify(
                    d,
                    &latest.sigs[s.index()],
                    ch.snapshot().params().participant(s)
                )
                .is_ok()
            );
        }
        prop_assert_eq!(
            latest.state.total().unwrap(),
            self.totals[i],
            "conservation"
        );
        prop_assert!(latest.state.total().unwrap() <= self.chain);
        Ok(())
    }

    fn deliver(&mut self, to: usize) -> Result<(), TestCaseError> {
        if let Some(m) = self.inbox[to].pop_front() {
            self.delivered[to].push(m.clone());
            let prev = self.ch[to].latest().state.clone();
            let snap = self.ch[to].snapshot().clone();
            match self.ch[to].handle(m, self.now) {
                Ok(eff) => self.run(to, &prev, eff)?,
                Err(_) => prop_assert_eq!(self.ch[to].snapshot(), &snap, "an error changed state"),
            }
        }
        Ok(())
    }

    fn step(&mut self, act: &Action) -> Result<(), TestCaseError> {
        match *act {
            Action::Offer {
                from,
                amount,
                secret,
                ttl,
            } => {
                let h = Preimage([secret; 32]).hashlock();
                let now = self.now;
                self.ch[side(from).index()].offer_htlc(Amount(amount), h, Expiry(now.0 + ttl));
            }
            Action::Fulfill { by, pick, right } => {
                let i = side(by).index();
                let locks: Vec<_> = self.ch[i]
                    .latest()
                    .state
                    .locks
                    .iter()
                    .filter(|l| l.sender != side(by))
                    .copied()
                    .collect();
                if let Some(l) = locks.get(pick % locks.len().max(1)) {
                    let secret = (0..6u8)
                        .find(|s| Preimage([*s; 32]).hashlock() == l.hashlock)
                        .unwrap();
                    let p = Preimage([if right { secret } else { secret + 100 }; 32]);
                    self.ch[i].fulfill_htlc(l.id, p);
                }
            }
            Action::Fail { by, pick } => {
                let i = side(by).index();
                let locks: Vec<_> = self.ch[i]
                    .latest()
                    .state
                    .locks
                    .iter()
                    .filter(|l| l.sender != side(by))
                    .copied()
                    .collect();
                if let Some(l) = locks.get(pick % locks.len().max(1)) {
                    self.ch[i].fail_htlc(l.id, htlc::FailureReason::TemporaryChannelFailure);
                }
            }
            Action::Expire { by, pick } => {
                let i = side(by).index();
                let locks: Vec<_> = self.ch[i]
                    .latest()
                    .state
                    .locks
                    .iter()
                    .filter(|l| l.sender == side(by))
                    .copied()
                    .collect();
                if let Some(l) = locks.get(pick % locks.len().max(1)) {
                    self.ch[i].expire_htlc(l.id);
                }
            }
            Action::Transfer { from, amount } => {
                self.ch[side(from).index()].transfer(Amount(amount))
            }
            Action::Guarantee {
                by,
                vc,
                a,
                b,
                agreed,
            } => {
                let g = htlc::Guarantee {
                    virtual_channel: htlc::ChannelId(alloy::primitives::B256::repeat_byte(vc)),
                    from_a: Amount(a),
                    from_b: Amount(b),
                    crossed: false,
                    locks_until: htlc::ids::Expiry(u64::MAX),
                };
                let other = 1 - side(by).index();
                if agreed && self.ch[other].agree(Op::AddGuarantee(g)).is_ok() {
                    self.agreed[other].push(Op::AddGuarantee(g));
                }
                self.ch[side(by).index()].add_guarantee(g)
            }
            Action::Release {
                by,
                pick,
                split,
                agreed,
            } => {
                let i = side(by).index();
                let gs = self.ch[i].latest().state.guarantees.clone();
                if let Some(g) = gs.get(pick % gs.len().max(1)) {
                    let sum = g.from_a.0 + g.from_b.0;
                    let to_a = split % (sum + 1);
                    let op = Op::RemoveGuarantee {
                        virtual_channel: g.virtual_channel,
                        to_a: Amount(to_a),
                        to_b: Amount(sum - to_a),
                    };
                    if agreed && self.ch[1 - i].agree(op.clone()).is_ok() {
                        self.agreed[1 - i].push(op);
                    }
                    self.ch[i].remove_guarantee(
                        g.virtual_channel,
                        Amount(to_a),
                        Amount(sum - to_a),
                    );
                }
            }
            Action::ForgeGuarantee { by, take } => {
                let me = side(by);
                let vc = htlc::ChannelId(alloy::primitives::B256::repeat_byte(0xEE));
                let (mut from, mut to) = ([Amount::ZERO; 2], [Amount::ZERO; 2]);
                from[me.other().index()] = Amount(take);
                to[me.index()] = Amount(take);
                let ops = vec![
                    Op::AddGuarantee(htlc::Guarantee {
                        virtual_channel: vc,
                        from_a: from[0],
                        from_b: from[1],
                        crossed: false,
                        locks_until: htlc::ids::Expiry(u64::MAX),
                    }),
                    Op::RemoveGuarantee {
                        virtual_channel: vc,
                        to_a: to[0],
                        to_b: to[1],
                    },
                ];
                self.forge(by, ops, "a guarantee nobody agreed to")?;
            }
            Action::ForgeDeposit { by, amount } => {
                let p = side(by).index();
                let honest = self.credited[1 - p][p].checked_add(Amount(amount)).unwrap()
                    <= self.deposited[p];
                if !honest {
                    self.forge(
                        by,
                        vec![Op::Deposit {
                            amount: Amount(amount),
                        }],
                        "a deposit the proposer did not make",
                    )?;
                }
            }
            Action::Propose { by } => {
                let i = side(by).index();
                let prev = self.ch[i].latest().state.clone();
                if let Ok(eff) = self.ch[i].propose(self.now) {
                    self.run(i, &prev, eff)?;
                }
            }
            Action::Deliver { to } => self.deliver(side(to).index())?,
            Action::Replay { to, pick } => {
                let i = side(to).index();
                if !self.delivered[i].is_empty() {
                    let m = self.delivered[i][pick % self.delivered[i].len()].clone();
                    let prev = self.ch[i].latest().state.clone();
                    let snap = self.ch[i].snapshot().clone();
                    match self.ch[i].handle(m, self.now) {
                        // A replay may only ever be refused or ignored: nothing commits twice.
                        Ok(eff) => {
                            prop_assert!(
                                !eff.iter()
                                    .any(|e| matches!(e, Effect::Event(Event::Committed { .. }))),
                                "replayed message committed"
                            );
                            let replies: Vec<_> = eff
                                .into_iter()
                                .filter(|e| !matches!(e, Effect::Event(_)))
                                .collect();
                            prop_assert!(
                                replies
                                    .iter()
                                    .all(|e| matches!(e, Effect::Send(Message::Reject { .. }))),
                                "a replay may only be refused"
                            );
                            let _ = prev;
                        }
                        Err(_) => prop_assert_eq!(self.ch[i].snapshot(), &snap),
                    }
                }
            }
            Action::ForgeFulfill { by, pick } => {
                // The peer, outside its machine, proposes a fulfill with a wrong preimage.
                let (me, them) = (side(by), side(by).other());
                let target = &self.ch[them.index()];
                let locks: Vec<_> = target
                    .latest()
                    .state
                    .locks
                    .iter()
                    .filter(|l| l.sender == them)
                    .copied()
                    .collect();
                if let Some(l) = locks.get(pick % locks.len().max(1)) {
                    let ops = vec![Op::FulfillHtlc {
                        id: l.id,
                        preimage: Preimage([200; 32]),
                    }];
                    let mut state = target.latest().state.clone();
                    // Apply by hand, skipping validation, as a cheat would.
                    state.locks.retain(|x| x.id != l.id);
                    state.balances[me.index()] =
                        state.balances[me.index()].checked_add(l.amount).unwrap();
                    let base = target
                        .latest()
                        .state
                        .version
                        .max(target.snapshot().version_floor());
                    state.version = base + 1;
                    let k = if by { keys(0xB2) } else { keys(0xA1) };
                    let sig = k.sign_digest(target.digest(&state).unwrap());
                    let msg = Message::Propose {
                        channel_id: target.id(),
                        version: state.version,
                        ops,
                        sig,
                    };
                    let snap = without_floor(self.ch[them.index()].snapshot());
                    let eff = self.ch[them.index()].handle(msg, self.now).unwrap();
                    // Nothing changes but the floor, which rises to the refused version.
                    prop_assert!(
                        matches!(htlc_sent(&eff).as_slice(), [Message::Reject { .. }]),
                        "a forged fulfill must be refused"
                    );
                    prop_assert_eq!(
                        self.ch[them.index()].snapshot().version_floor(),
                        state.version,
                        "the refused version is dead"
                    );
                    prop_assert_eq!(
                        without_floor(self.ch[them.index()].snapshot()),
                        snap,
                        "a forged fulfill changed more than the floor"
                    );
                }
            }
            Action::Tick { secs } => self.now = Expiry(self.now.0 + secs),
            Action::ChainDeposit {
                by,
                amount,
                seen_by_other,
            } => {
                self.chain = self.chain.checked_add(Amount(amount)).unwrap();
                let i = side(by).index();
                self.deposited[i] = self.deposited[i].checked_add(Amount(amount)).unwrap();
                self.observe(i);
                if seen_by_other {
                    self.observe(1 - i);
                }
                self.ch[i].deposit(Amount(amount));
            }
            Action::FakeDeposit { by, amount } => {
                self.ch[side(by).index()].deposit(Amount(amount));
            }
            Action::Observe { to } => self.observe(side(to).index()),
        }
        Ok(())
    }
}

impl World {
    /// Side `i` catches up with the chain: holdings and each participant's deposits (the
    /// opening balances were deposited by their owners).
    fn observe(&mut self, i: usize) {
        let opening = [Amount(5_000), Amount(5_000)];
        self.ch[i].observe_holdings(self.chain);
        for s in [Side::A, Side::B] {
            let total = opening[s.index()]
                .checked_add(self.deposited[s.index()])
                .unwrap();
            self.ch[i].observe_deposits(s, total);
        }
    }

    /// `by` sends, outside its machine, a correctly signed proposal of `ops` on the other
    /// side's latest state: it must be refused and change nothing but the refuser's floor.
    fn forge(&mut self, by: bool, ops: Vec<Op>, what: &str) -> Result<(), TestCaseError> {
        let (me, them) = (side(by), side(by).other());
        let target = &self.ch[them.index()];
        let mut state = target.latest().state.clone();
        let mut ids = target.snapshot().next_ids();
        // Apply without the agreement and deposit checks, as a cheat would.
        let lax = htlc::Deposits {
            holdings: Amount::MAX,
            uncredited: [Amount::MAX; 2],
        };
        if htlc::ops::apply_batch(
            &mut state,
            &mut ids,
            &ops,
            me,
            self.now,
            &Limits::default(),
            lax,
        )
        .is_err()
        {
            return Ok(());
        }
        state.version = target
            .latest()
            .state
            .version
            .max(target.snapshot().version_floor())
            + 1;
        let k = if by { keys(0xB2) } else { keys(0xA1) };
        let sig = k.sign_digest(target.digest(&state).unwrap());
        let msg = Message::Propose {
            channel_id: target.id(),
            version: state.version,
            ops,
            sig,
        };
        let before = target.latest().clone();
        let eff = self.ch[them.index()].handle(msg, self.now).unwrap();
        prop_assert!(
            matches!(htlc_sent(&eff).as_slice(), [Message::Reject { .. }]),
            "{} must be refused",
            what
        );
        prop_assert!(
            !eff.iter()
                .any(|e| matches!(e, Effect::Event(Event::Committed { .. }))),
            "{} committed",
            what
        );
        prop_assert_eq!(
            self.ch[them.index()].latest(),
            &before,
            "{} changed the state",
            what
        );
        Ok(())
    }
}

fn htlc_sent(effects: &[Effect]) -> Vec<Message> {
    sent(effects)
}

proptest! {
    #![proptest_config(testkit::config(256))]

    #[test]
    fn protocol_invariants_hold_under_random_schedules(actions in prop::collection::vec(action(), 1..80)) {
        let mut w = World::new();
        for act in &actions {
            w.step(act)?;
        }
        // Drain: deliver everything and let queued work go out, until quiet.
        for _ in 0..64 {
            for i in 0..2 {
                let prev = w.ch[i].latest().state.clone();
                if let Ok(eff) = w.ch[i].propose(w.now) {
                    w.run(i, &prev, eff)?;
                }
            }
            while !w.inbox[0].is_empty() || !w.inbox[1].is_empty() {
                w.deliver(0)?;
                w.deliver(1)?;
            }
            if !w.ch[0].has_pending() && !w.ch[1].has_pending() && w.ch[0].queued() == 0 && w.ch[1].queued() == 0 {
                break;
            }
        }
        // Both sides agree on the latest co-signed state.
        prop_assert_eq!(w.ch[0].latest(), w.ch[1].latest());
        prop_assert_eq!(w.totals[0], w.totals[1]);
    }
}

/// A snapshot's fields, its version floor left out (a refusal may raise only that).
fn without_floor(s: &htlc::Snapshot) -> String {
    let text = format!("{s:?}");
    let key = "version_floor: ";
    match text.find(key) {
        Some(i) => {
            let rest = &text[i + key.len()..];
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            format!("{}{}", &text[..i], &rest[digits..])
        }
        None => text,
    }
}
