//! Payments across several hubs: a line of nodes, payer → hubs → payee, each joined to the next
//! by a co-signed channel, over a perfect in-memory network. The payer knows every hub's
//! policy and key (as gossip will give them); each hub learns only its own onion layer.

use super::tests::cosigned;
use super::{CommandError, Config, Node, NodeEvent, Output};
use crate::forward::ForwardPolicy;
use crate::node::fixtures::{keys, params};
use crate::node::invoice::Invoice;
use crate::node::message::{Body, Frame};
use crate::node::payment::PaymentStatus;
use crate::node::records::Records;
use crate::{Amount, ChannelId, Expiry, FailureReason, Preimage};
use alloy::primitives::{Address, B256};

const NOW: Expiry = Expiry(1_700_000_000);
const FUNDS: u128 = 1_000_000;

/// Hub `i`'s policy: fees differ per hub, so a fee taken at the wrong hop shows.
fn policy(i: usize) -> ForwardPolicy {
    ForwardPolicy {
        base_fee: Amount(10 * i as u128),
        fee_ppm: 1_000 * i as u32,
        ..ForwardPolicy::default()
    }
}

fn config(i: usize) -> Config {
    let mut c = Config {
        policy: policy(i),
        ..Config::default()
    };
    c.open.adjudicator = Address::repeat_byte(0xAD);
    c
}

/// What a misbehaving node does to a frame from node `.0` to node `.1` before delivery.
type Tamper = Box<dyn FnMut(usize, usize, &mut Frame)>;

/// Node `i` has key `i + 1`; channel `i` joins node `i` (A, holding everything) to `i + 1`.
struct Line {
    nodes: Vec<Node>,
    disks: Vec<Records>,
    channels: Vec<ChannelId>,
    wire: Vec<(usize, usize, Frame)>,
    events: Vec<Vec<NodeEvent>>,
    /// Applied to every frame before delivery (a misbehaving node's hands).
    tamper: Option<Tamper>,
    /// Each receiver's onion layers peeled ahead of its step, as the hub does outside its
    /// lock: by `(receiver's keys, frame)`.
    peel_ahead: Option<PeelAhead>,
}

type PeelAhead = Box<dyn Fn(&crate::sig::Keys, &Frame) -> Vec<super::PeeledAhead>>;

impl Line {
    fn new(n: usize) -> Line {
        let mut line = Line::new_with(n, |_, _| {});
        // The payer knows every hub's policy and key (out of band).
        for h in 1..n - 1 {
            let (addr, key) = (line.nodes[h].address(), line.nodes[h].public_key());
            let out = line.nodes[0].set_policy(addr, policy(h), key);
            line.carry(0, out);
        }
        line
    }

    /// A line whose node `i` has its configuration edited by `edit(i, config)`.
    fn new_with(n: usize, edit: impl Fn(usize, &mut Config)) -> Line {
        let mut nodes: Vec<Node> = (0..n)
            .map(|i| {
                let mut c = config(i);
                edit(i, &mut c);
                Node::new(keys(i as u8 + 1), c)
            })
            .collect();
        let mut channels = Vec::new();
        for i in 0..n - 1 {
            let (a, b) = cosigned(i as u8 + 1, i as u8 + 2, i as u64);
            channels.push(a.id());
            nodes[i]
                .add_channel(keys(i as u8 + 2).address(), a)
                .unwrap();
            nodes[i + 1]
                .add_channel(keys(i as u8 + 1).address(), b)
                .unwrap();
        }
        let disks = nodes.iter().map(Node::records).collect();
        Line {
            nodes,
            disks,
            channels,
            wire: Vec::new(),
            events: vec![Vec::new(); n],
            tamper: None,
            peel_ahead: None,
        }
    }

    fn addr(&self, i: usize) -> Address {
        self.nodes[i].address()
    }

    fn hubs(&self) -> Vec<Address> {
        (1..self.nodes.len() - 1).map(|i| self.addr(i)).collect()
    }

    fn carry(&mut self, n: usize, out: Output) {
        self.disks[n].apply_all(&out.writes, &self.nodes[n]);
        for (to, f) in out.transmits {
            if let Some(i) = self.nodes.iter().position(|x| x.address() == to) {
                self.wire.push((n, i, f));
            }
        }
        self.events[n].extend(out.events);
    }

    fn run(&mut self) {
        while !self.wire.is_empty() {
            let (from, to, mut f) = self.wire.remove(0);
            if let Some(t) = self.tamper.as_mut() {
                t(from, to, &mut f);
            }
            let sender = self.addr(from);
            let out = match &self.peel_ahead {
                Some(peel) => {
                    let ahead = peel(&keys(to as u8 + 1), &f);
                    self.nodes[to].handle_frames_peeled(NOW, sender, [f], ahead)
                }
                None => self.nodes[to].handle_frame(NOW, sender, f),
            };
            self.carry(to, out);
        }
    }

    /// The payee (last node) makes an invoice for `amount` through the last hub.
    fn invoice(&mut self, amount: u128, secret: u8) -> Invoice {
        let n = self.nodes.len();
        let preimage = Preimage([secret; 32]);
        let inv = Invoice {
            payee: self.addr(n - 1),
            payee_key: self.nodes[n - 1].public_key(),
            hub: self.addr(n - 2),
            amount: Amount(amount),
            hashlock: preimage.hashlock(),
            expires_at: NOW.0 + 3600,
            final_expiry_delta: 7200,
        };
        let out = self.nodes[n - 1]
            .add_invoice(inv.clone(), preimage)
            .unwrap();
        self.carry(n - 1, out);
        inv
    }

    fn pay(&mut self, id: B256, inv: &Invoice) {
        let hubs = self.hubs();
        let out = self.nodes[0].pay_route(NOW, id, inv, &hubs).unwrap();
        self.carry(0, out);
        self.run();
    }

    /// Balances of channel `c` as node `c` (its A) holds them.
    fn balances(&self, c: usize) -> [Amount; 2] {
        let ch = self.nodes[c].channel(self.channels[c]).unwrap();
        ch.latest().state.balances
    }

    /// Every channel still holds what it opened with: all on A's side.
    fn assert_nothing_moved(&self) {
        for c in 0..self.channels.len() {
            assert_eq!(
                self.balances(c),
                [Amount(FUNDS), Amount::ZERO],
                "channel {c}"
            );
        }
    }
}

/// Each hub's fee on what it forwards, backward from the payee: `(incoming, fee)` per hub.
fn expected_fees(amount: u128, hubs: usize) -> Vec<(u128, u128)> {
    let mut out = Vec::new();
    let mut forwarded = amount;
    for h in (1..=hubs).rev() {
        let p = policy(h);
        let fee = p.base_fee.0 + forwarded * u128::from(p.fee_ppm) / 1_000_000;
        out.push((forwarded + fee, fee));
        forwarded += fee;
    }
    out.reverse();
    out
}

#[test]
fn a_payment_crosses_three_hubs_with_each_fee_exact_on_every_channel() {
    let mut line = Line::new(5);
    let amount = 10_000;
    let inv = line.invoice(amount, 7);
    let id = B256::repeat_byte(1);
    line.pay(id, &inv);
    let fees = expected_fees(amount, 3);
    let total_fee: u128 = fees.iter().map(|(_, f)| f).sum();
    assert!(
        line.events[0].contains(&NodeEvent::PaymentSucceeded {
            id,
            fee: Amount(total_fee)
        }),
        "{:?}",
        line.events[0]
    );
    // Channel i carries what node i + 1 receives: hub i + 1's incoming, or the amount.
    let moved = fees.iter().map(|(incoming, _)| *incoming).chain([amount]);
    for (c, moved) in moved.enumerate() {
        assert_eq!(
            line.balances(c),
            [Amount(FUNDS - moved), Amount(moved)],
            "channel {c}"
        );
    }
    for h in 1..=3 {
        assert_eq!(
            line.nodes[h].fees_earned(),
            (Amount(fees[h - 1].1), 1),
            "hub {h}"
        );
    }
    let rec = line.nodes[0].payment(id).unwrap();
    assert_eq!(
        rec.path,
        [line.addr(1), line.addr(2), line.addr(3), line.addr(4)]
    );
    assert_eq!(rec.sent, Amount(amount + total_fee));
    assert!(line.nodes[4].book().invoices[&inv.hashlock].paid);
    // No onion, route or forward is left waiting, and every node restores from its writes.
    for n in 0..5 {
        assert!(line.nodes[n].book().routes.is_empty(), "node {n}");
        assert!(line.nodes[n].book().forwards.values().all(|f| f.done));
        assert_eq!(line.disks[n], line.nodes[n].records(), "node {n}");
    }
}

/// A hub deep in the route cannot carry the payment: every hop fails back, no balance moves,
/// and the payer's record names that hub with its reason (proven by its onion MAC).
#[test]
fn a_failure_deep_in_the_route_names_the_failing_hub() {
    let mut line = Line::new(5);
    // Hub 3 has paid almost everything to the payee already: it cannot forward 10,000.
    let out = line.nodes[3]
        .transfer(NOW, line.channels[3], Amount(FUNDS - 5_000))
        .unwrap();
    line.carry(3, out);
    line.run();
    let before: Vec<[Amount; 2]> = (0..4).map(|c| line.balances(c)).collect();
    let inv = line.invoice(10_000, 8);
    let id = B256::repeat_byte(2);
    line.pay(id, &inv);
    let rec = line.nodes[0].payment(id).unwrap();
    assert_eq!(
        rec.status,
        PaymentStatus::Failed {
            reason: FailureReason::TemporaryChannelFailure
        }
    );
    assert_eq!(
        rec.failed_at,
        Some((line.addr(3), FailureReason::TemporaryChannelFailure))
    );
    let after: Vec<[Amount; 2]> = (0..4).map(|c| line.balances(c)).collect();
    assert_eq!(before, after);
    for h in 1..=3 {
        assert_eq!(line.nodes[h].fees_earned(), (Amount::ZERO, 0), "hub {h}");
    }
}

/// A hub that changes the onion it hands on: the next hub cannot read its layer, the payment
/// fails on every hop with nothing moved, and the payer learns it at the tamperer's link.
#[test]
fn a_hub_that_tampers_with_the_onion_moves_nothing_and_is_pointed_at() {
    let mut line = Line::new(5);
    line.tamper = Some(Box::new(|from, to, f: &mut Frame| {
        if (from, to) == (1, 2)
            && let Frame::Msg {
                body: Body::Route { onion, .. },
                ..
            } = f
        {
            onion.as_sphinx_mut().unwrap().routing[100] ^= 1;
        }
    }));
    let inv = line.invoice(10_000, 9);
    let id = B256::repeat_byte(3);
    line.pay(id, &inv);
    let rec = line.nodes[0].payment(id).unwrap();
    assert_eq!(
        rec.status,
        PaymentStatus::Failed {
            reason: FailureReason::InvalidOnion
        }
    );
    // Hub 2 could not read its layer; hub 1 (the node before it) reports that, with its MAC.
    assert_eq!(
        rec.failed_at,
        Some((line.addr(1), FailureReason::InvalidOnion))
    );
    line.assert_nothing_moved();
}

/// A hub that rewrites a failure on its way back cannot blame a node behind it: the payer
/// reads no node's MAC and blames nobody, and still gets its money back.
#[test]
fn a_hub_that_forges_a_failure_blames_nobody() {
    let mut line = Line::new(5);
    let out = line.nodes[3]
        .transfer(NOW, line.channels[3], Amount(FUNDS - 5_000))
        .unwrap();
    line.carry(3, out);
    line.run();
    line.tamper = Some(Box::new(|from, to, f: &mut Frame| {
        if (from, to) == (2, 1)
            && let Frame::Msg {
                body: Body::RouteFailed { packet, .. },
                ..
            } = f
        {
            packet.0[5] ^= 1;
        }
    }));
    let inv = line.invoice(10_000, 10);
    let id = B256::repeat_byte(4);
    line.pay(id, &inv);
    let rec = line.nodes[0].payment(id).unwrap();
    assert!(matches!(rec.status, PaymentStatus::Failed { .. }));
    assert_eq!(rec.failed_at, None);
    assert_eq!(line.balances(0), [Amount(FUNDS), Amount::ZERO]);
}

/// A route through a hub whose key the payer does not know is refused before anything moves.
#[test]
fn a_route_through_an_unknown_hub_is_refused() {
    let mut line = Line::new(4);
    let inv = line.invoice(1_000, 11);
    let stranger = keys(9).address();
    let hubs = [line.addr(1), stranger, line.addr(2)];
    let err = line.nodes[0]
        .pay_route(NOW, B256::repeat_byte(5), &inv, &hubs)
        .unwrap_err();
    assert_eq!(err, CommandError::NoPolicy(stranger));
    assert!(line.nodes[0].book().payments.is_empty());
}

/// A line whose hubs announce their channels with each other (the payer and payee are
/// clients: their channels are not announced).
fn announced_line(n: usize) -> Line {
    let mut line = Line::new_with(n, |i, c| {
        c.announce = i != 0 && i != n - 1;
    });
    // The hubs announce their channels with each other (on chain: once seen funded).
    for i in 1..n - 2 {
        let id = line.channels[i];
        let out = line.nodes[i].announce_channel(NOW, id);
        line.carry(i, out);
        let out = line.nodes[i + 1].announce_channel(NOW, id);
        line.carry(i + 1, out);
    }
    line.run();
    // Nodes connect: each hands its table to the other (a client catches up from its hub).
    for i in 0..n - 1 {
        for (a, b) in [(i, i + 1), (i + 1, i)] {
            let peer = line.addr(b);
            let out = line.nodes[a].connected(peer);
            line.carry(a, out);
        }
    }
    line.run();
    line
}

/// Gossip: each hub-to-hub channel is announced by both its hubs, believed by every node of
/// the line (the clients through their hub), and carries both directions' policies; the payer
/// then routes over hubs it was never told about directly, with exact fees.
#[test]
fn gossip_reaches_every_node_and_the_payer_routes_with_it() {
    let mut line = announced_line(5);
    let hub_channels = [line.channels[1], line.channels[2]];
    for n in 0..5 {
        let g = &line.nodes[n].book().gossip;
        assert_eq!(
            g.keys().copied().collect::<Vec<_>>().len(),
            2,
            "node {n} knows both hub-to-hub channels"
        );
        for id in hub_channels {
            let c = &g[&id];
            assert!(
                c.policies.iter().all(Option::is_some),
                "node {n}: both directions"
            );
        }
        // Client channels are never announced.
        assert!(!g.contains_key(&line.channels[0]) && !g.contains_key(&line.channels[3]));
    }
    // The payer was told nothing out of band: its route is priced from gossip alone.
    assert!(line.nodes[0].book().policies.is_empty());
    let inv = line.invoice(10_000, 20);
    let id = B256::repeat_byte(20);
    line.pay(id, &inv);
    let fees = expected_fees(10_000, 3);
    let total: u128 = fees.iter().map(|(_, f)| f).sum();
    assert!(line.events[0].contains(&NodeEvent::PaymentSucceeded {
        id,
        fee: Amount(total)
    }));
}

/// A policy change of hub 3 reaches the payer, a client two hubs away, and the payer's next
/// payment pays exactly the new fee.
#[test]
fn a_policy_update_reaches_a_client_two_hubs_away() {
    let mut line = announced_line(5);
    let mut cheaper = policy(3);
    cheaper.base_fee = Amount(1);
    cheaper.fee_ppm = 7;
    let later = Expiry(NOW.0 + 60);
    let out = line.nodes[3].update_policy(later, cheaper);
    line.carry(3, out);
    line.run();
    let h3 = line.addr(3);
    let seen = line.nodes[0]
        .book()
        .gossip
        .get(&line.channels[2])
        .and_then(|c| {
            let side = c.ann.params.participants.iter().position(|x| *x == h3)?;
            c.policies[side].clone()
        })
        .expect("the payer holds hub 3's policy");
    assert_eq!(seen.policy, cheaper);
}

/// Forged gossip is dropped: an announcement with a stranger's signature, an update signed by
/// someone else, and anything from a node we hold no channel with.
#[test]
fn forged_gossip_is_ignored() {
    use crate::node::gossip::{Announcement, GossipMsg, PolicyUpdate};
    let mut line = announced_line(5);
    let (ka, kb) = (keys(1), keys(40));
    let p = params(&ka, &kb, 77);
    let forged = Announcement {
        sigs: [
            Announcement::sign(&p, &ka),
            Announcement::sign(&p, &keys(41)),
        ],
        params: p,
    };
    let before = line.nodes[1].book().gossip.clone();
    let msgs = [
        GossipMsg::Announce(Box::new(forged)),
        GossipMsg::Policy(Box::new(PolicyUpdate {
            node: line.addr(2),
            ..PolicyUpdate::sign(
                line.channels[1],
                ForwardPolicy::default(),
                NOW.0 + 30,
                &keys(41),
            )
        })),
    ];
    let client = line.addr(0);
    for m in msgs {
        let out = line.nodes[1].handle_frame(NOW, client, Frame::Gossip(Box::new(m)));
        assert!(out.writes.is_empty() && out.transmits.is_empty());
    }
    // A stranger's valid-looking update of a real channel: dropped without a look.
    let genuine = PolicyUpdate::sign(
        line.channels[1],
        ForwardPolicy::default(),
        NOW.0 + 30,
        &keys(2),
    );
    let out = line.nodes[1].handle_frame(
        NOW,
        keys(50).address(),
        Frame::Gossip(Box::new(GossipMsg::Policy(Box::new(genuine)))),
    );
    assert!(out.writes.is_empty() && out.transmits.is_empty());
    assert_eq!(line.nodes[1].book().gossip, before);
}

/// On chain, an announcement is believed only once the adjudicator holds funds for it: one
/// for a channel never funded is dropped after the chain's answer.
#[test]
fn an_announcement_without_funds_on_chain_is_not_believed() {
    use crate::node::ChainEvent;
    use crate::node::gossip::{Announcement, GossipMsg};
    let (ka, kb) = (keys(30), keys(31));
    let mut node = Node::new(
        keys(1),
        Config {
            on_chain: true,
            announce: true,
            ..config(1)
        },
    );
    // Our funded channel with the sender (added directly: funded at once).
    node.add_channel(keys(2).address(), cosigned(1, 2, 99).0)
        .unwrap();
    for (nonce, held) in [(1u64, 0u128), (2, 500)] {
        let p = params(&ka, &kb, nonce);
        let id = p.id();
        let ann = Announcement {
            sigs: [Announcement::sign(&p, &ka), Announcement::sign(&p, &kb)],
            params: p,
        };
        let out = node.handle_frame(
            NOW,
            keys(2).address(),
            Frame::Gossip(Box::new(GossipMsg::Announce(Box::new(ann)))),
        );
        assert_eq!(out.queries, vec![id], "the chain is asked first");
        assert!(node.book().gossip.is_empty());
        assert!(node.query_params(id).is_some());
        node.handle_chain(
            NOW,
            ChainEvent::Holdings {
                channel_id: id,
                held: Amount(held),
                deposited: [Amount(held), Amount::ZERO],
            },
        );
        assert_eq!(
            node.book().gossip.get(&id).map(|c| c.capacity),
            (held > 0).then_some(Amount(held)),
            "nonce {nonce}"
        );
    }
}

/// A payment in two parts over two hubs: the payee holds the first part until the second
/// arrives, then claims both in one step; each part pays exactly its own fees.
#[test]
fn a_payment_in_parts_is_held_until_complete_then_claimed_whole() {
    let mut line = Line::new(4);
    let inv = line.invoice(10_000, 30);
    let hubs = line.hubs();
    let parts = [(hubs.clone(), Amount(6_000)), (hubs.clone(), Amount(4_000))];
    let (out, ids) = line.nodes[0]
        .pay_parts(NOW, B256::repeat_byte(30), &inv, &parts)
        .unwrap();
    line.carry(0, out);
    line.run();
    let mut fees = 0;
    for (id, (_, a)) in ids.iter().zip(&parts) {
        let rec = line.nodes[0].payment(*id).unwrap();
        assert!(
            matches!(rec.status, PaymentStatus::Succeeded { .. }),
            "{rec:?}"
        );
        let f: u128 = expected_fees(a.0, 2).iter().map(|(_, f)| f).sum();
        assert_eq!(rec.fee(), Amount(f));
        fees += f;
    }
    assert!(line.nodes[3].book().invoices[&inv.hashlock].paid);
    assert!(line.events[3].contains(&NodeEvent::PaymentReceived {
        hashlock: inv.hashlock,
        amount: Amount(10_000)
    }));
    assert_eq!(line.balances(2), [Amount(FUNDS - 10_000), Amount(10_000)]);
    assert_eq!(
        line.balances(0),
        [Amount(FUNDS - 10_000 - fees), Amount(10_000 + fees)]
    );
    // Parts that do not add up to the invoice are refused before anything moves.
    let inv2 = line.invoice(10_000, 31);
    let short = [(hubs, Amount(9_999))];
    assert_eq!(
        line.nodes[0]
            .pay_parts(NOW, B256::repeat_byte(31), &inv2, &short)
            .unwrap_err(),
        CommandError::PartsMismatch {
            parts: Amount(9_999),
            invoice: Amount(10_000)
        }
    );
}

/// One part never arrives (a hub garbles its onion): the payee holds the other until the
/// timeout, then fails it back; the payer gets everything back and learns why from the payee.
#[test]
fn parts_that_never_add_up_fail_back_after_the_timeout() {
    let mut line = Line::new(4);
    let inv = line.invoice(10_000, 32);
    let hubs = line.hubs();
    // Hub 1 garbles the second onion it hands hub 2.
    let mut seen = 0;
    line.tamper = Some(Box::new(move |from, to, f: &mut Frame| {
        if (from, to) == (1, 2)
            && let Frame::Msg {
                body: Body::Route { onion, .. },
                ..
            } = f
        {
            seen += 1;
            if seen == 2 {
                onion.as_sphinx_mut().unwrap().routing[3] ^= 1;
            }
        }
    }));
    let parts = [(hubs.clone(), Amount(6_000)), (hubs, Amount(4_000))];
    let (out, ids) = line.nodes[0]
        .pay_parts(NOW, B256::repeat_byte(32), &inv, &parts)
        .unwrap();
    line.carry(0, out);
    line.run();
    let first = line.nodes[0].payment(ids[0]).unwrap();
    assert_eq!(first.status, PaymentStatus::Pending, "held by the payee");
    assert_eq!(
        line.nodes[3].poll_timeout(),
        Some(Expiry(NOW.0 + crate::node::payment::MPP_TIMEOUT_SECS))
    );
    let later = Expiry(NOW.0 + crate::node::payment::MPP_TIMEOUT_SECS);
    let out = line.nodes[3].handle_timeout(later);
    line.carry(3, out);
    line.run();
    let first = line.nodes[0].payment(ids[0]).unwrap();
    assert_eq!(
        first.failed_at,
        Some((line.addr(3), FailureReason::MppTimeout))
    );
    assert!(!line.nodes[3].book().invoices[&inv.hashlock].paid);
    line.assert_nothing_moved();
}

/// A peer that signs announcements of channels between keys of its own (never funded) can
/// keep only a few waiting for their chain check: each costs us a chain read.
#[test]
fn a_peer_cannot_make_us_read_the_chain_without_bound() {
    use crate::node::gossip::{Announcement, GossipMsg, MAX_PENDING_PER_PEER};
    let mut node = Node::new(
        keys(1),
        Config {
            on_chain: true,
            announce: true,
            ..config(1)
        },
    );
    node.add_channel(keys(2).address(), cosigned(1, 2, 99).0)
        .unwrap();
    let mut queries = 0;
    for nonce in 0..(MAX_PENDING_PER_PEER as u64 + 10) {
        let (ka, kb) = (keys(60), keys(61));
        let p = params(&ka, &kb, 1_000 + nonce);
        let ann = Announcement {
            sigs: [Announcement::sign(&p, &ka), Announcement::sign(&p, &kb)],
            params: p,
        };
        let out = node.handle_frame(
            NOW,
            keys(2).address(),
            Frame::Gossip(Box::new(GossipMsg::Announce(Box::new(ann)))),
        );
        queries += out.queries.len();
    }
    assert_eq!(queries, MAX_PENDING_PER_PEER);
}

/// A failure packet of another size is refused (it would be stored with the forward).
#[test]
fn an_oversized_failure_packet_is_refused() {
    let mut line = Line::new(3);
    let before = line.nodes[1].records();
    let (from, channel_id) = (line.addr(2), line.channels[1]);
    let out = line.nodes[1].handle_frame(
        NOW,
        from,
        Frame::Msg {
            seq: 1,
            body: Body::RouteFailed {
                channel_id,
                htlc: crate::HtlcId(0),
                packet: crate::onion::ErrorPacket(vec![0; 100_000]),
            },
        },
    );
    assert!(
        out.events
            .iter()
            .any(|e| matches!(e, NodeEvent::Refused { .. }))
    );
    assert_eq!(line.nodes[1].records().book, before.book);
}

/// An announcement signature from a peer for a channel that is not its own, or signed by
/// another key, is refused and announces nothing.
#[test]
fn announcement_signatures_from_the_wrong_peer_or_key_are_refused() {
    use crate::node::gossip::{Announcement, PolicyUpdate};
    let mut line = Line::new_with(4, |i, c| c.announce = i == 1 || i == 2);
    let params_of = |line: &Line, c: usize| {
        line.nodes[c]
            .channel(line.channels[c])
            .unwrap()
            .snapshot()
            .params()
            .clone()
    };
    let (p0, p1) = (params_of(&line, 0), params_of(&line, 1));
    let hub2 = line.addr(2);
    let cases = [
        // Hub 2 signs for channel 0 (client 0 with hub 1), not its channel.
        (
            line.channels[0],
            Announcement::sign(&p0, &keys(3)),
            crate::node::message::ErrorCode::UnknownChannel,
        ),
        // Hub 2's own channel with hub 1, signed by a stranger's key.
        (
            line.channels[1],
            Announcement::sign(&p1, &keys(9)),
            crate::node::message::ErrorCode::Protocol,
        ),
    ];
    for (seq, (channel_id, sig, code)) in cases.into_iter().enumerate() {
        let policy = Box::new(PolicyUpdate::sign(channel_id, policy(2), NOW.0, &keys(3)));
        let out = line.nodes[1].handle_frame(
            NOW,
            hub2,
            Frame::Msg {
                seq: seq as u64 + 1,
                body: Body::AnnounceSig {
                    channel_id,
                    sig,
                    policy,
                },
            },
        );
        assert!(
            out.events
                .iter()
                .any(|e| matches!(e, NodeEvent::Refused { code: c, .. } if *c == code)),
            "{out:?}"
        );
        assert!(line.nodes[1].book().gossip.is_empty());
        assert!(
            out.transmits
                .iter()
                .all(|(_, f)| !matches!(f, Frame::Gossip(_)))
        );
    }
}

/// Onion layers peeled ahead of the step (outside the hub's lock) change nothing: a payment
/// across three hubs leaves every node with exactly the records and events it leaves when each
/// node peels in its step.
#[test]
fn layers_peeled_ahead_of_the_step_change_nothing() {
    let run = |ahead: bool| {
        let mut line = Line::new(5);
        if ahead {
            line.peel_ahead = Some(Box::new(|k, f| {
                super::PeeledAhead::of(k, f).into_iter().collect()
            }));
        }
        let inv = line.invoice(10_000, 9);
        line.pay(B256::repeat_byte(3), &inv);
        assert!(matches!(
            line.nodes[0].payment(B256::repeat_byte(3)).unwrap().status,
            PaymentStatus::Succeeded { .. }
        ));
        (line.disks, line.events)
    };
    assert!(run(true) == run(false));
}

/// A layer peeled ahead is used only for the very packet and hashlock it was peeled from: one
/// made for another packet (here: a failure for a tampered copy) is ignored, the node peels
/// the packet it got, and the payment succeeds.
#[test]
fn a_layer_peeled_for_another_packet_is_not_used() {
    let mut line = Line::new(5);
    line.peel_ahead = Some(Box::new(|k, f| {
        let Some(mut a) = super::PeeledAhead::of(k, f) else {
            return Vec::new();
        };
        a.onion.as_sphinx_mut().unwrap().routing[7] ^= 1;
        a.layer = Err(crate::onion::OnionError::BadMac);
        let mut other = super::PeeledAhead::of(k, f).unwrap();
        other.hashlock = B256::repeat_byte(0xEE);
        other.layer = Err(crate::onion::OnionError::BadMac);
        vec![a, other]
    }));
    let inv = line.invoice(10_000, 9);
    let id = B256::repeat_byte(4);
    line.pay(id, &inv);
    assert!(matches!(
        line.nodes[0].payment(id).unwrap().status,
        PaymentStatus::Succeeded { .. }
    ));
}

/// The route instructions each node handed on, by link (ADR 0029 tests).
type Seen = std::rc::Rc<std::cell::RefCell<Vec<((usize, usize), crate::onion::Packet)>>>;

fn watch_routes(line: &mut Line) -> Seen {
    let seen: Seen = Default::default();
    let s = seen.clone();
    line.tamper = Some(Box::new(move |from, to, f: &mut Frame| {
        if let Frame::Msg {
            body: Body::Route { onion, .. },
            ..
        } = f
        {
            s.borrow_mut().push(((from, to), (**onion).clone()));
        }
    }));
    seen
}

/// ADR 0029: a payment through one hub, paid whole, carries its instructions in the clear (no
/// onion to build or peel) and pays exactly as an onion would: the hub its fee, the payee the
/// invoice; a route of two hubs keeps its onion on every link.
#[test]
fn a_single_hub_payment_goes_without_an_onion_and_pays_exactly() {
    let mut line = Line::new(3);
    let seen = watch_routes(&mut line);
    let amount = 10_000;
    let inv = line.invoice(amount, 7);
    let id = B256::repeat_byte(1);
    line.pay(id, &inv);
    let fees = expected_fees(amount, 1);
    assert!(line.events[0].contains(&NodeEvent::PaymentSucceeded {
        id,
        fee: Amount(fees[0].1)
    }));
    assert_eq!(
        line.balances(0),
        [Amount(FUNDS - fees[0].0), Amount(fees[0].0)]
    );
    assert_eq!(line.balances(1), [Amount(FUNDS - amount), Amount(amount)]);
    let links: Vec<((usize, usize), usize)> = seen
        .borrow()
        .iter()
        .map(|(l, p)| match p {
            crate::onion::Packet::Plain(hops) => (*l, hops.len()),
            crate::onion::Packet::Sphinx(_) => panic!("an onion on link {l:?}"),
        })
        .collect();
    assert_eq!(links, vec![((0, 1), 2), ((1, 2), 1)]);
    for n in 0..3 {
        assert_eq!(line.disks[n], line.nodes[n].records(), "node {n}");
    }
    // Two hubs: onions on every link.
    let mut line = Line::new(4);
    let seen = watch_routes(&mut line);
    let inv = line.invoice(amount, 8);
    line.pay(B256::repeat_byte(2), &inv);
    assert!(line.nodes[3].book().invoices[&inv.hashlock].paid);
    let seen = seen.borrow();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|(_, p)| matches!(p, crate::onion::Packet::Sphinx(_)))
    );
}

/// ADR 0029's attack: the hub reads and could rewrite a plain instruction. A hub that keeps
/// more than its fee (offers the payee less than the invoice, with an instruction saying so)
/// gets no preimage: the payee refuses less than its invoice, the payment fails with nothing
/// moved. A plain instruction for a part of a multi-path payment is refused too (parts keep
/// their onion, so a hub cannot rewrite what a part carries).
#[test]
fn a_hub_that_rewrites_a_plain_instruction_cannot_underpay_the_payee() {
    use crate::onion::{HopPayload, Packet};
    for part in [false, true] {
        let mut line = Line::new(3);
        line.tamper = Some(Box::new(move |from, to, f: &mut Frame| {
            if (from, to) != (0, 1) {
                return;
            }
            let Frame::Msg {
                body: Body::Route { onion, .. },
                ..
            } = f
            else {
                return;
            };
            let Packet::Plain(hops) = &mut **onion else {
                panic!("a single-hub payment goes in the clear")
            };
            // What the hub would do if it wrote its own instruction: forward one less.
            if let HopPayload::Forward { amount, .. } = &mut hops[0].payload {
                amount.0 -= 1;
            }
            if let HopPayload::Final { amount, total, .. } = &mut hops[1].payload {
                amount.0 -= 1;
                if !part {
                    total.0 -= 1;
                }
            }
        }));
        let inv = line.invoice(10_000, 9);
        let id = B256::repeat_byte(4);
        line.pay(id, &inv);
        let rec = line.nodes[0].payment(id).unwrap();
        assert!(
            matches!(rec.status, PaymentStatus::Failed { .. }),
            "part {part}: {:?}",
            rec.status
        );
        assert!(!line.nodes[2].book().invoices[&inv.hashlock].paid);
        line.assert_nothing_moved();
    }
}
