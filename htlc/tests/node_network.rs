//! Model-based test of the node machine ([`htlc::node::Node`]): a payer, a hub and a payee,
//! each a `Node` whose writes go to a model disk ([`Records`]), joined by a network that
//! reorders, drops, duplicates and delays frames. Nodes restart from their disk at random.
//!
//! After every step: the node's writes are complete (its disk equals what it holds),
//! conservation in every channel, no lock of the hub without its forward record and no lock
//! of the payer without its payment (on disk), no two states signed at one version by one
//! node (across restarts). At the end, with the network made reliable again and the clock
//! past every expiry (the payee goes silent at times, holding payments without revealing, so
//! their locks are taken back by expiry on every hop): every payment ended, fulfilled on
//! every hop or failed on every hop, and each party holds exactly what the payments that
//! succeeded give it.
//!
//! CI runs a small budget; the long run is `PROPTEST_CASES=20000 VHUB_PROPTEST_SEED=random
//! cargo test --release -p htlc --test node_network` (or `scripts/campaign.sh`, which includes it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use alloy::primitives::{Address, B256, Signature, U256};
use htlc::forward::ForwardPolicy;
use htlc::node::invoice::Invoice;
use htlc::node::payment::PaymentStatus;
use htlc::node::{Body, Config, Frame, Node, Output, Records};
use htlc::sig::Keys;
use htlc::update::sign_state;
use htlc::{
    Amount, Channel, ChannelId, ChannelParams, ChannelState, Expiry, Limits, Message, Preimage,
    SignedState,
};
use proptest::prelude::*;
use std::collections::HashMap;

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

struct Peer {
    keys: Keys,
    config: Config,
    node: Node,
    disk: Records,
}

/// The whole world: nodes, frames in flight, and what the observer saw signed.
struct World {
    peers: Vec<Peer>,
    net: Vec<(usize, usize, Frame)>,
    now: Expiry,
    up: ChannelId,
    down: ChannelId,
    /// (node, channel, version) → the signature that node gave at that version.
    signed: HashMap<(usize, ChannelId, u64), Signature>,
    /// Payment ids the payer made, with the amount the payee was to get.
    paid: Vec<(B256, u128)>,
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

impl World {
    fn new() -> World {
        let keys: Vec<Keys> = (1..=3u8)
            .map(|b| Keys::from_bytes([b; 32]).unwrap())
            .collect();
        let (p_up, h_up) = open(&keys[PAYER], &keys[HUB], 1);
        let (h_down, q_down) = open(&keys[HUB], &keys[PAYEE], 2);
        let (up, down) = (p_up.id(), h_down.id());
        let config = Config {
            policy: policy(),
            ..Config::default()
        };
        let mut peers: Vec<Peer> = keys
            .iter()
            .map(|k| Peer {
                keys: k.clone(),
                config: config.clone(),
                node: Node::new(k.clone(), config.clone()),
                disk: Records::default(),
            })
            .collect();
        let a = |i: usize| keys[i].address();
        let adds = [
            (PAYER, a(HUB), p_up),
            (HUB, a(PAYER), h_up),
            (HUB, a(PAYEE), h_down),
            (PAYEE, a(HUB), q_down),
        ];
        for (n, peer, ch) in adds {
            let out = peers[n].node.add_channel(peer, ch).unwrap();
            let p = &mut peers[n];
            p.disk.apply_all(&out.writes, &p.node);
        }
        // The payer knows the hub's policy (in band it comes with the channel's acceptance).
        let hub_key = peers[HUB].node.public_key();
        let out = peers[PAYER].node.set_policy(a(HUB), policy(), hub_key);
        let p = &mut peers[PAYER];
        p.disk.apply_all(&out.writes, &p.node);
        World {
            peers,
            net: Vec::new(),
            now: Expiry(1_700_000_000),
            up,
            down,
            signed: HashMap::new(),
            paid: Vec::new(),
            next_secret: 0,
        }
    }

    fn index(&self, a: Address) -> usize {
        self.peers
            .iter()
            .position(|p| p.keys.address() == a)
            .unwrap()
    }

    /// Carry out node `n`'s output: write its batch to its disk, then let the frames go
    /// (watching every signature it gives).
    fn carry(&mut self, n: usize, out: Output) {
        let p = &mut self.peers[n];
        p.disk.apply_all(&out.writes, &p.node);
        for (to, frame) in out.transmits {
            if let Frame::Msg {
                body: Body::Channel(m),
                ..
            } = &frame
            {
                let (ch, version, sig) = match m {
                    Message::Propose {
                        channel_id,
                        version,
                        sig,
                        ..
                    }
                    | Message::Accept {
                        channel_id,
                        version,
                        sig,
                    } => (*channel_id, *version, *sig),
                    Message::Reject { .. } => {
                        let to = self.index(to);
                        self.net.push((n, to, frame));
                        continue;
                    }
                };
                let prior = self.signed.insert((n, ch, version), sig);
                assert!(
                    prior.is_none_or(|p| p == sig),
                    "node {n} signed two states at version {version} of {ch}"
                );
            }
            let to = self.index(to);
            self.net.push((n, to, frame));
        }
    }

    /// The payer pays `amount` for an invoice the payee knows (`known`) or not.
    fn pay(&mut self, amount: u128, known: bool) {
        self.next_secret = self.next_secret.wrapping_add(1);
        let preimage = Preimage([self.next_secret; 32]);
        let hashlock = preimage.hashlock();
        let id = B256::from(preimage.0);
        if self.paid.iter().any(|(p, _)| *p == id) {
            return;
        }
        let invoice = Invoice {
            payee: self.peers[PAYEE].keys.address(),
            payee_key: self.peers[PAYEE].node.public_key(),
            hub: self.peers[HUB].keys.address(),
            amount: Amount(amount),
            hashlock,
            expires_at: self.now.0 + 86_400,
            final_expiry_delta: 7_200,
        };
        if known {
            let out = self.peers[PAYEE]
                .node
                .add_invoice(invoice.clone(), preimage)
                .unwrap();
            self.carry(PAYEE, out);
        }
        if let Ok(out) = self.peers[PAYER].node.pay(self.now, id, &invoice) {
            self.paid.push((id, amount));
            self.carry(PAYER, out);
        }
    }

    /// Deliver frame `i` of the network.
    fn deliver(&mut self, i: usize) {
        let (from, to, frame) = self.net.remove(i);
        let from = self.peers[from].keys.address();
        let out = self.peers[to].node.handle_frame(self.now, from, frame);
        self.carry(to, out);
    }

    /// Node `n`'s clock fires.
    fn expire(&mut self, n: usize) {
        let out = self.peers[n].node.handle_timeout(self.now);
        self.carry(n, out);
    }

    /// Node `n` crashes and restarts from its disk.
    fn restart(&mut self, n: usize) {
        let p = &mut self.peers[n];
        p.node = Node::restore(p.keys.clone(), p.config.clone(), p.disk.clone()).unwrap();
        let out = self.peers[n].node.resume(self.now);
        self.carry(n, out);
    }

    /// The payee stops (or starts again) revealing preimages.
    fn silent(&mut self, on: bool) {
        let p = &mut self.peers[PAYEE];
        p.config.reveal_preimages = !on;
        p.node = Node::restore(p.keys.clone(), p.config.clone(), p.disk.clone()).unwrap();
        let out = self.peers[PAYEE].node.resume(self.now);
        self.carry(PAYEE, out);
    }

    /// Node `n` reconnects to `peer`: what it did not see acknowledged goes out again.
    fn resend(&mut self, n: usize, peer: usize) {
        let out = self.peers[n]
            .node
            .connected(self.peers[peer].keys.address());
        self.carry(n, out);
    }

    fn links() -> [(usize, usize); 4] {
        [(PAYER, HUB), (HUB, PAYER), (HUB, PAYEE), (PAYEE, HUB)]
    }

    /// Invariants after every step.
    fn check(&self) {
        for (n, p) in self.peers.iter().enumerate() {
            // The writes are complete: what survives a crash is what the node holds.
            assert_eq!(p.disk, p.node.records(), "node {n}'s writes are incomplete");
            for id in p.node.channel_ids() {
                let c = p.node.channel(id).unwrap();
                assert_eq!(
                    c.latest().state.total().unwrap(),
                    Amount(FUNDS),
                    "conservation in {id}"
                );
            }
        }
        // Every lock the hub offered downstream, in a state it persisted, has its forward
        // record on the same disk (no lock without an owner).
        let hub = &self.peers[HUB].disk;
        let down = &hub.channels[&self.down].snapshot;
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
        let payer = &self.peers[PAYER].disk;
        let up = &payer.channels[&self.up].snapshot;
        for l in &up.latest().state.locks {
            if l.sender == up.me() {
                assert!(
                    payer
                        .book
                        .payments
                        .values()
                        .any(|p| (p.channel, p.htlc) == (self.up, l.id)),
                    "payer lock {} without its payment",
                    l.id.0
                );
            }
        }
    }

    /// Make the network reliable and run until nothing moves: every link re-sent in order,
    /// every frame delivered.
    fn settle(&mut self) -> bool {
        for _ in 0..200 {
            if self.net.is_empty() {
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
        }
        false
    }
}

#[derive(Clone, Debug)]
enum Action {
    Pay { amount: u128, known: bool },
    Expire(usize),
    Deliver(usize),
    Drop(usize),
    Duplicate(usize),
    Restart(usize),
    Resend(usize),
    Silent(bool),
    Tick(u64),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        2 => (1u128..400_000, proptest::bool::weighted(0.85))
            .prop_map(|(amount, known)| Action::Pay { amount, known }),
        1 => (0usize..3).prop_map(Action::Expire),
        12 => any::<usize>().prop_map(Action::Deliver),
        1 => any::<usize>().prop_map(Action::Drop),
        1 => any::<usize>().prop_map(Action::Duplicate),
        1 => (0usize..3).prop_map(Action::Restart),
        1 => (0usize..4).prop_map(Action::Resend),
        1 => proptest::bool::weighted(0.3).prop_map(Action::Silent),
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
                Action::Pay { amount, known } => w.pay(amount, known),
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
                Action::Restart(n) => w.restart(n),
                Action::Resend(k) => {
                    let (n, p) = World::links()[k];
                    w.resend(n, p);
                }
                Action::Silent(on) => w.silent(on),
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
        // Every payment ended, on every hop; each party holds what the successes give it.
        let mut paid = 0u128;
        let mut delivered = 0u128;
        let payer = &w.peers[PAYER].node;
        for (id, amount) in &w.paid {
            let p = payer.payment(*id).expect("a payment record for every payment made");
            prop_assert!(p.status != PaymentStatus::Pending, "payment {id} never ended");
            if let PaymentStatus::Succeeded { preimage } = p.status {
                prop_assert_eq!(preimage.hashlock(), p.invoice.hashlock);
                delivered += amount;
                paid += amount + policy().fee(Amount(*amount)).unwrap().0;
            }
        }
        for p in &w.peers {
            for id in p.node.channel_ids() {
                let c = p.node.channel(id).unwrap();
                prop_assert!(c.latest().state.locks.is_empty(), "a lock is left in {}", id);
            }
        }
        let chan = |n: usize, id: ChannelId| w.peers[n].node.channel(id).unwrap().latest().clone();
        prop_assert_eq!(chan(PAYER, w.up).state.balances, [Amount(FUNDS - paid), Amount(paid)]);
        prop_assert_eq!(
            chan(PAYEE, w.down).state.balances,
            [Amount(FUNDS - delivered), Amount(delivered)]
        );
        // Both sides of each channel agree.
        prop_assert_eq!(chan(HUB, w.up), chan(PAYER, w.up));
        prop_assert_eq!(chan(HUB, w.down), chan(PAYEE, w.down));
    }
}
