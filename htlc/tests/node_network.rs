//! Model-based test of the node's decisions (`htlc::node`): a payer, a hub and a payee, each a
//! small pump in the hub's shape (machines, link counters, payment records, one persisted
//! record per step, payment reactions after the step that raised them and resumed from the
//! record after a restart), joined by a network that reorders, drops, duplicates and delays
//! frames. Nodes restart from their last persisted record at random.
//!
//! After every step: conservation in every channel, no lock of the hub without its forward
//! record, no two states signed at one version by one node (across restarts). At the end, with
//! the network made reliable again and the clock past every expiry (some payees hold their
//! payments without revealing, so their locks are taken back by expiry on every hop): every
//! payment ended, fulfilled on every hop or failed on every hop, and each party holds exactly
//! what the payments that succeeded give it.
//!
//! CI runs a small budget; the long run is `PROPTEST_CASES=20000 VHUB_PROPTEST_SEED=random
//! cargo test --release -p htlc --test node_network` (or `scripts/campaign.sh`, which includes it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use alloy::primitives::{Address, B256, U256};
use htlc::forward::{ForwardPolicy, NextHop};
use htlc::node::link::{Inbound, Inbox, Outbox};
use htlc::node::payment::{
    ForwardRecord, InvoiceTerms, Known, PaymentStatus, Step, Upstream, on_committed, outcomes, plan,
};
use htlc::sig::Keys;
use htlc::update::sign_state;
use htlc::{
    Amount, Channel, ChannelId, ChannelParams, ChannelState, CommittedHtlc, Effect, Event, Expiry,
    Hashlock, HtlcId, Limits, Message, Preimage, Side, SignedState, Snapshot,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

const PAYER: usize = 0;
const HUB: usize = 1;
const PAYEE: usize = 2;
const FUNDS: u128 = 1_000_000;

fn policy() -> ForwardPolicy {
    ForwardPolicy {
        base_fee: Amount(10),
        fee_ppm: 1_000,
        expiry_delta: 3_600,
        ..ForwardPolicy::default()
    }
}

/// What travels between two nodes.
#[derive(Clone, Debug)]
enum Body {
    /// A channel machine's message.
    Channel(Message),
    /// The payer's instruction for the hub.
    Route {
        channel: ChannelId,
        hashlock: Hashlock,
        next: NextHop,
    },
}

#[derive(Clone, Debug)]
enum Frame {
    Msg { seq: u64, body: Body },
    Ack { seq: u64 },
}

/// A payment reaction to carry out after the step that raised it (lost in a crash, found
/// again by `resume`).
#[derive(Clone, Debug)]
enum Reaction {
    Received(CommittedHtlc),
    Outcome(ChannelId, HtlcId),
}

/// The payment records, as the hub keeps them in its `locks` column.
#[derive(Clone, Debug, Default)]
struct Book {
    routes: HashMap<(ChannelId, Hashlock), NextHop>,
    forwards: HashMap<(ChannelId, HtlcId), ForwardRecord>,
    forwarded_in: HashSet<(ChannelId, HtlcId)>,
    invoices: HashMap<Hashlock, InvoiceTerms>,
    /// Payee: invoices it holds without revealing (as a payee that went silent).
    held: HashSet<Hashlock>,
    /// Payer: payment (by hashlock) → its lock and status.
    payments: HashMap<Hashlock, (ChannelId, HtlcId, Amount, PaymentStatus)>,
}

/// What survives a crash: one record per node, written at the end of every step.
#[derive(Clone, Debug)]
struct Disk {
    chans: BTreeMap<ChannelId, Snapshot>,
    outbox: HashMap<usize, (Outbox, BTreeMap<u64, Body>)>,
    inbox: HashMap<usize, Inbox>,
    book: Book,
}

struct Node {
    keys: Keys,
    /// Channel → the peer node on it.
    peer_of: HashMap<ChannelId, usize>,
    chans: BTreeMap<ChannelId, Channel>,
    outbox: HashMap<usize, (Outbox, BTreeMap<u64, Body>)>,
    inbox: HashMap<usize, Inbox>,
    book: Book,
    reactions: VecDeque<Reaction>,
    disk: Disk,
}

impl Node {
    fn persist(&mut self) {
        self.disk = Disk {
            chans: self
                .chans
                .iter()
                .map(|(id, c)| (*id, c.snapshot().clone()))
                .collect(),
            outbox: self.outbox.clone(),
            inbox: self.inbox.clone(),
            book: self.book.clone(),
        };
    }

    fn restart(&mut self) {
        let d = self.disk.clone();
        self.chans = d
            .chans
            .into_iter()
            .map(|(id, s)| (id, Channel::restore(s, self.keys.clone()).unwrap()))
            .collect();
        self.outbox = d.outbox;
        self.inbox = d.inbox;
        self.book = d.book;
        // What the crash interrupted, found again from the record (as `resume_payments`).
        self.reactions.clear();
        for c in self.chans.values() {
            for h in c.received_htlcs() {
                self.reactions.push_back(Reaction::Received(h));
            }
        }
        for ((c, id), f) in &self.book.forwards {
            if f.upstream().is_some() {
                self.reactions.push_back(Reaction::Outcome(*c, *id));
            }
        }
    }
}

/// The whole world: nodes, frames in flight, and what the observer saw signed.
struct World {
    nodes: Vec<Node>,
    net: Vec<(usize, usize, Frame)>,
    now: Expiry,
    up: ChannelId,
    down: ChannelId,
    /// (node, channel, version) → digest of the state that node signed at that version.
    signed: HashMap<(usize, ChannelId, u64), B256>,
    next_secret: u8,
}

fn open(a: &Keys, b: &Keys, nonce: u64) -> (Channel, Channel) {
    let params = ChannelParams {
        chain_id: 1,
        adjudicator: Address::repeat_byte(0xAD),
        participants: [a.address(), b.address()],
        asset: Address::ZERO,
        challenge_duration: 3600,
        nonce: U256::from(nonce),
    };
    let state = ChannelState::opening(params.id(), [Amount(FUNDS), Amount::ZERO]);
    let sigs = [
        sign_state(&params, a, &state).unwrap(),
        sign_state(&params, b, &state).unwrap(),
    ];
    let s = SignedState { state, sigs };
    let limits = Limits {
        max_pending_locks: 8,
        ..Limits::default()
    };
    (
        Channel::from_cosigned(params.clone(), a.clone(), limits, s.clone()).unwrap(),
        Channel::from_cosigned(params, b.clone(), limits, s).unwrap(),
    )
}

type Sends = Vec<(usize, Body)>;

impl World {
    fn new() -> World {
        let keys: Vec<Keys> = (1..=3u8)
            .map(|b| Keys::from_bytes([b; 32]).unwrap())
            .collect();
        let (p_up, h_up) = open(&keys[PAYER], &keys[HUB], 1);
        let (h_down, q_down) = open(&keys[HUB], &keys[PAYEE], 2);
        let (up, down) = (p_up.id(), h_down.id());
        let mk = |k: &Keys, chans: Vec<(Channel, usize)>| {
            let mut n = Node {
                keys: k.clone(),
                peer_of: chans.iter().map(|(c, p)| (c.id(), *p)).collect(),
                chans: chans.into_iter().map(|(c, _)| (c.id(), c)).collect(),
                outbox: HashMap::new(),
                inbox: HashMap::new(),
                book: Book::default(),
                reactions: VecDeque::new(),
                disk: Disk {
                    chans: BTreeMap::new(),
                    outbox: HashMap::new(),
                    inbox: HashMap::new(),
                    book: Book::default(),
                },
            };
            n.persist();
            n
        };
        World {
            nodes: vec![
                mk(&keys[PAYER], vec![(p_up, HUB)]),
                mk(&keys[HUB], vec![(h_up, PAYER), (h_down, PAYEE)]),
                mk(&keys[PAYEE], vec![(q_down, HUB)]),
            ],
            net: Vec::new(),
            now: Expiry(1_700_000_000),
            up,
            down,
            signed: HashMap::new(),
            next_secret: 0,
        }
    }

    /// End a step of node `n`: number and store what it sends, persist its record (one batch),
    /// then let the frames go.
    fn commit(&mut self, n: usize, sends: Sends) {
        let node = &mut self.nodes[n];
        let mut out = Vec::new();
        for (peer, body) in sends {
            let (ob, stored) = node.outbox.entry(peer).or_default();
            let seq = ob.numbers(1).start;
            ob.sent(seq + 1);
            stored.insert(seq, body.clone());
            out.push((peer, Frame::Msg { seq, body }));
        }
        node.persist();
        for (peer, f) in out {
            self.net.push((n, peer, f));
        }
    }

    /// Carry out the effects of node `n`'s machine on `ch`: messages to send, signatures to
    /// check, payment facts to record, reactions to queue.
    fn carry(&mut self, n: usize, ch: ChannelId, effects: Vec<Effect>, sends: &mut Sends) {
        let peer = self.nodes[n].peer_of[&ch];
        for e in effects {
            match e {
                Effect::Persist => {}
                Effect::Send(m) => {
                    let machine = &self.nodes[n].chans[&ch];
                    let state = match &m {
                        Message::Propose { .. } => machine.snapshot().pending().map(|p| &p.state),
                        Message::Accept { .. } => Some(&machine.latest().state),
                        Message::Reject { .. } => None,
                    };
                    if let Some(s) = state {
                        let d = machine.digest(s).unwrap();
                        let prior = self.signed.insert((n, ch, s.version), d);
                        assert!(
                            prior.is_none_or(|p| p == d),
                            "node {n} signed two states at version {} of {ch}",
                            s.version
                        );
                    }
                    sends.push((peer, Body::Channel(m)));
                }
                Effect::Event(ev) => {
                    let node = &mut self.nodes[n];
                    // Rules 4 and 5: what the state taught is recorded with it.
                    for (id, o) in outcomes(&ev) {
                        if let Some(f) = node.book.forwards.get_mut(&(ch, id)) {
                            f.learn(o);
                            node.reactions.push_back(Reaction::Outcome(ch, id));
                        }
                        for (c, lid, _, st) in node.book.payments.values_mut() {
                            if (*c, *lid) == (ch, id)
                                && let Some(next) = st.after(o)
                            {
                                *st = next;
                            }
                        }
                    }
                    if let Event::HtlcReceived(h) = ev {
                        node.reactions.push_back(Reaction::Received(h));
                    }
                }
            }
        }
    }

    fn propose(&mut self, n: usize, ch: ChannelId, sends: &mut Sends) {
        let now = self.now;
        let effects = self.nodes[n]
            .chans
            .get_mut(&ch)
            .unwrap()
            .propose(now)
            .unwrap();
        self.carry(n, ch, effects, sends);
    }

    /// The payer pays `amount` for an invoice the payee knows (`known`) or not, and reveals
    /// (or, `hold`, keeps silent until the locks expire).
    fn pay(&mut self, amount: u128, known: bool, hold: bool) {
        self.next_secret = self.next_secret.wrapping_add(1);
        let preimage = Preimage([self.next_secret; 32]);
        let hashlock = preimage.hashlock();
        if self.nodes[PAYER].book.payments.contains_key(&hashlock) {
            return;
        }
        if known {
            self.nodes[PAYEE].book.invoices.insert(
                hashlock,
                InvoiceTerms {
                    amount: Amount(amount),
                    expires_at: Expiry(self.now.0 + 86_400),
                    preimage,
                    paid: false,
                },
            );
            if hold {
                self.nodes[PAYEE].book.held.insert(hashlock);
            }
            self.nodes[PAYEE].persist();
        }
        let up = self.up;
        let available = self.nodes[PAYER].chans[&up].snapshot().free_balance();
        let Ok(p) = plan(Amount(amount), 7_200, &policy(), available, self.now) else {
            return;
        };
        let mut sends = vec![(
            HUB,
            Body::Route {
                channel: up,
                hashlock,
                next: p.next,
            },
        )];
        let id = self.nodes[PAYER]
            .chans
            .get_mut(&up)
            .unwrap()
            .offer_htlc(p.sent, hashlock, p.expiry);
        self.nodes[PAYER]
            .book
            .payments
            .insert(hashlock, (up, id, Amount(amount), PaymentStatus::Pending));
        self.propose(PAYER, up, &mut sends);
        self.commit(PAYER, sends);
    }

    /// Deliver frame `i` of the network.
    fn deliver(&mut self, i: usize) {
        let (from, to, frame) = self.net.remove(i);
        match frame {
            Frame::Ack { seq } => {
                let node = &mut self.nodes[to];
                if let Some((ob, stored)) = node.outbox.get_mut(&from)
                    && let Some(range) = ob.on_ack(seq)
                {
                    for s in range {
                        stored.remove(&s);
                    }
                }
                // A lost delete only re-sends a duplicate: written without a sync.
                node.persist();
            }
            Frame::Msg { seq, body } => {
                let inbox = self.nodes[to].inbox.get(&from).copied().unwrap_or_default();
                match inbox.classify(seq, false) {
                    Inbound::Duplicate { ack } => {
                        self.net.push((to, from, Frame::Ack { seq: ack }))
                    }
                    Inbound::Gap { .. } => {}
                    Inbound::Process => {
                        let mut sends = Vec::new();
                        self.on_body(to, from, body, &mut sends);
                        self.nodes[to].inbox.entry(from).or_default().received(seq);
                        self.commit(to, sends);
                        self.net.push((to, from, Frame::Ack { seq }));
                    }
                }
            }
        }
    }

    fn on_body(&mut self, n: usize, from: usize, body: Body, sends: &mut Sends) {
        match body {
            Body::Route {
                channel,
                hashlock,
                next,
            } => {
                if self.nodes[n].peer_of.get(&channel) == Some(&from) {
                    self.nodes[n].book.routes.insert((channel, hashlock), next);
                }
            }
            Body::Channel(msg) => {
                let ch = msg.channel_id();
                if self.nodes[n].peer_of.get(&ch) != Some(&from) {
                    return;
                }
                let now = self.now;
                // A refused message changes nothing (the hub answers with an error).
                if let Ok(effects) = self.nodes[n].chans.get_mut(&ch).unwrap().handle(msg, now) {
                    self.carry(n, ch, effects, sends);
                }
            }
        }
    }

    /// Carry out node `n`'s next payment reaction, as its own step.
    fn react(&mut self, n: usize) {
        let Some(r) = self.nodes[n].reactions.pop_front() else {
            return;
        };
        let mut sends = Vec::new();
        match r {
            Reaction::Received(h) => self.on_received(n, h, &mut sends),
            Reaction::Outcome(ch, id) => {
                let node = &mut self.nodes[n];
                if let Some(f) = node.book.forwards.get_mut(&(ch, id))
                    && let Some(up) = f.upstream()
                {
                    f.done = true;
                    let (in_ch, in_id) = (f.in_channel, f.in_id);
                    let m = node.chans.get_mut(&in_ch).unwrap();
                    match up {
                        Upstream::Fulfill(p) => m.fulfill_htlc(in_id, p),
                        Upstream::Fail(r) => m.fail_htlc(in_id, r),
                    }
                    self.propose(n, in_ch, &mut sends);
                }
            }
        }
        self.commit(n, sends);
    }

    /// As the hub's `on_received`: what we know of the hashlock, `on_committed`, the step.
    fn on_received(&mut self, n: usize, h: CommittedHtlc, sends: &mut Sends) {
        let (ch, lock) = (h.channel_id(), *h.lock());
        let down = self.down;
        let node = &mut self.nodes[n];
        if node.book.forwarded_in.contains(&(ch, lock.id)) {
            return;
        }
        // Still in the latest state? (A reaction may come after the lock ended.)
        if !node.chans[&ch]
            .latest()
            .state
            .locks
            .iter()
            .any(|l| l.id == lock.id && l.sender != node.chans[&ch].me())
        {
            return;
        }
        let terms = node.book.invoices.get(&lock.hashlock).copied();
        let next = node.book.routes.get(&(ch, lock.hashlock)).copied();
        let out = (n == HUB).then(|| node.chans[&down].outgoing(policy()));
        let known = match (&terms, &next) {
            (Some(t), _) => Known::Invoice(t),
            (None, Some(next)) => Known::Route {
                next,
                outgoing: out.as_ref(),
                incoming_frozen: false,
            },
            (None, None) => Known::Nothing {
                we_opened: node.chans[&ch].me() == Side::A,
            },
        };
        let step = on_committed(&h, known, self.now);
        node.book.routes.remove(&(ch, lock.hashlock));
        match step {
            Step::Claim(_) if node.book.held.contains(&lock.hashlock) => {}
            Step::Claim(p) => {
                node.chans.get_mut(&ch).unwrap().fulfill_htlc(lock.id, p);
                if let Some(t) = node.book.invoices.get_mut(&lock.hashlock) {
                    t.paid = true;
                }
                self.propose(n, ch, sends);
            }
            Step::Forward(fwd) => {
                let out_id = node.chans.get_mut(&down).unwrap().offer_htlc(
                    fwd.amount,
                    fwd.hashlock,
                    fwd.expiry,
                );
                node.book.forwards.insert(
                    (down, out_id),
                    ForwardRecord::new((ch, lock.id), (down, out_id), &fwd),
                );
                node.book.forwarded_in.insert((ch, lock.id));
                self.propose(n, down, sends);
            }
            Step::Fail(r) => {
                node.chans.get_mut(&ch).unwrap().fail_htlc(lock.id, r);
                self.propose(n, ch, sends);
            }
        }
    }

    /// Node `n`'s expiry tick: take back every lock it offered that expired, as its own step.
    fn expire(&mut self, n: usize) {
        let now = self.now;
        let mut sends = Vec::new();
        let ids: Vec<ChannelId> = self.nodes[n].chans.keys().copied().collect();
        for ch in ids {
            if self.nodes[n].chans.get_mut(&ch).unwrap().expire_due(now) > 0 {
                self.propose(n, ch, &mut sends);
            }
        }
        self.commit(n, sends);
    }

    /// Node `n` reconnects to `peer`: its stored outbox goes out again, in order.
    fn resend(&mut self, n: usize, peer: usize) {
        if let Some((_, stored)) = self.nodes[n].outbox.get(&peer) {
            for (seq, body) in stored.clone() {
                self.net.push((n, peer, Frame::Msg { seq, body }));
            }
        }
    }

    fn links() -> [(usize, usize); 4] {
        [(PAYER, HUB), (HUB, PAYER), (HUB, PAYEE), (PAYEE, HUB)]
    }

    /// Invariants after every step.
    fn check(&self) {
        for n in &self.nodes {
            for c in n.chans.values() {
                assert_eq!(
                    c.latest().state.total().unwrap(),
                    Amount(FUNDS),
                    "conservation in {}",
                    c.id()
                );
            }
        }
        // Every lock the hub offered downstream, in a state it persisted, has its forward
        // record in the same record (no lock without an owner).
        let hub = &self.nodes[HUB].disk;
        let down = &hub.chans[&self.down];
        for l in &down.latest().state.locks {
            if l.sender == down.me() {
                assert!(
                    hub.book.forwards.contains_key(&(self.down, l.id)),
                    "hub lock {} without its forward record",
                    l.id.0
                );
            }
        }
        // And every lock the payer offered has its payment.
        let payer = &self.nodes[PAYER].disk;
        let up = &payer.chans[&self.up];
        for l in &up.latest().state.locks {
            if l.sender == up.me() {
                assert!(
                    payer.book.payments.values().any(|(_, id, ..)| *id == l.id),
                    "payer lock {} without its payment",
                    l.id.0
                );
            }
        }
    }

    /// Make the network reliable and run until nothing moves: every link re-sent in order,
    /// every frame delivered, every reaction carried out.
    fn settle(&mut self) -> bool {
        for _ in 0..200 {
            if self.net.is_empty() && self.nodes.iter().all(|n| n.reactions.is_empty()) {
                for (n, p) in Self::links() {
                    self.resend(n, p);
                }
                if self.net.is_empty() {
                    return true;
                }
            }
            while !self.net.is_empty() {
                self.deliver(0);
                self.check();
            }
            for n in 0..3 {
                while !self.nodes[n].reactions.is_empty() {
                    self.react(n);
                    self.check();
                }
            }
        }
        false
    }
}

#[derive(Clone, Debug)]
enum Action {
    Pay {
        amount: u128,
        known: bool,
        hold: bool,
    },
    Expire(usize),
    Deliver(usize),
    Drop(usize),
    Duplicate(usize),
    React(usize),
    Restart(usize),
    Resend(usize),
    Tick(u64),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        2 => (1u128..400_000, proptest::bool::weighted(0.85), proptest::bool::weighted(0.15))
            .prop_map(|(amount, known, hold)| Action::Pay { amount, known, hold }),
        1 => (0usize..3).prop_map(Action::Expire),
        10 => any::<usize>().prop_map(Action::Deliver),
        1 => any::<usize>().prop_map(Action::Drop),
        1 => any::<usize>().prop_map(Action::Duplicate),
        5 => (0usize..3).prop_map(Action::React),
        1 => (0usize..3).prop_map(Action::Restart),
        1 => (0usize..4).prop_map(Action::Resend),
        1 => (0u64..10).prop_map(Action::Tick),
    ]
}

proptest! {
    #![proptest_config(testkit::config(64))]

    #[test]
    fn payments_end_on_every_hop_through_a_faulty_network(
        actions in proptest::collection::vec(action(), 1..250),
    ) {
        let mut w = World::new();
        for a in actions {
            match a {
                Action::Pay { amount, known, hold } => w.pay(amount, known, hold),
                Action::Expire(n) => w.expire(n),
                Action::Deliver(i) if !w.net.is_empty() => {
                    let i = i % w.net.len();
                    w.deliver(i);
                }
                Action::Drop(i) if !w.net.is_empty() => {
                    let i = i % w.net.len();
                    w.net.remove(i);
                }
                Action::Duplicate(i) if !w.net.is_empty() => {
                    let f = w.net[i % w.net.len()].clone();
                    w.net.push(f);
                }
                Action::React(n) => w.react(n),
                Action::Restart(n) => w.nodes[n].restart(),
                Action::Resend(k) => {
                    let (n, p) = World::links()[k];
                    w.resend(n, p);
                }
                Action::Tick(s) => w.now = Expiry(w.now.0 + s),
                _ => {}
            }
            w.check();
        }
        prop_assert!(w.settle(), "the network never settled");
        // Held payments are still locked; past every expiry, each node takes its locks back.
        w.now = Expiry(w.now.0 + 3 * 86_400);
        for n in [PAYEE, HUB, PAYER] {
            w.expire(n);
        }
        prop_assert!(w.settle(), "the network never settled after the expiries");
        let held = w.nodes[PAYEE].book.held.clone();
        // Every payment ended, on every hop; each party holds what the successes give it.
        let mut paid = 0u128;
        let mut delivered = 0u128;
        for (hashlock, (_, _, amount, status)) in &w.nodes[PAYER].book.payments {
            prop_assert!(*status != PaymentStatus::Pending, "payment {hashlock:?} never ended");
            if held.contains(hashlock) {
                prop_assert!(
                    !matches!(status, PaymentStatus::Succeeded { .. }),
                    "a held payment succeeded"
                );
            }
            if let PaymentStatus::Succeeded { preimage } = status {
                prop_assert_eq!(preimage.hashlock(), *hashlock);
                delivered += amount.0;
                paid += amount.0 + policy().fee(*amount).unwrap().0;
            }
        }
        for n in &w.nodes {
            for c in n.chans.values() {
                prop_assert!(c.latest().state.locks.is_empty(), "a lock is left in {}", c.id());
            }
        }
        let up = &w.nodes[PAYER].chans[&w.up].latest().state;
        let down = &w.nodes[PAYEE].chans[&w.down].latest().state;
        prop_assert_eq!(up.balances, [Amount(FUNDS - paid), Amount(paid)]);
        prop_assert_eq!(down.balances, [Amount(FUNDS - delivered), Amount(delivered)]);
        // Both sides of each channel agree.
        prop_assert_eq!(w.nodes[HUB].chans[&w.up].latest(), w.nodes[PAYER].chans[&w.up].latest());
        prop_assert_eq!(w.nodes[HUB].chans[&w.down].latest(), w.nodes[PAYEE].chans[&w.down].latest());
    }
}
