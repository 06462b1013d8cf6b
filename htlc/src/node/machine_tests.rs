//! Scenario tests of the node machine: message in, frames / records / events out, no I/O.
//! Three nodes (payer, hub, payee) joined by a perfect in-memory network, each with a model
//! disk built from its writes.

use super::{ChainEvent, CommandError, Config, Node, NodeEvent, Output};
use crate::forward::ForwardPolicy;
use crate::node::chain::{CollateralPolicy, Intent};
use crate::node::fixtures::{keys, params};
use crate::node::invoice::Invoice;
use crate::node::message::{Body, ErrorCode, Frame};
use crate::node::payment::PaymentStatus;
use crate::node::records::{Records, Write};
use crate::update::{Effect, sign_state};
use crate::{Amount, Channel, ChannelId, ChannelState, Expiry, FailureReason, Hashlock, Preimage};
use crate::{Limits, Message, SignedState};
use alloy::primitives::{Address, B256};

const NOW: Expiry = Expiry(1_700_000_000);
const FUNDS: u128 = 1_000_000;

fn policy() -> ForwardPolicy {
    ForwardPolicy {
        base_fee: Amount(10),
        fee_ppm: 1_000,
        ..ForwardPolicy::default()
    }
}

fn config() -> Config {
    let mut c = Config {
        policy: policy(),
        ..Config::default()
    };
    c.open.adjudicator = Address::repeat_byte(0xAD);
    c
}

/// Both sides of a channel between keys `a` (A, holding everything) and `b`, co-signed.
pub(super) fn cosigned(a: u8, b: u8, nonce: u64) -> (Channel, Channel) {
    let (ka, kb) = (keys(a), keys(b));
    let p = params(&ka, &kb, nonce);
    let state = ChannelState::opening(p.id(), [Amount(FUNDS), Amount::ZERO]);
    let sigs = [
        sign_state(&p, &ka, &state).unwrap(),
        sign_state(&p, &kb, &state).unwrap(),
    ];
    let s = SignedState { state, sigs };
    (
        Channel::from_cosigned(p.clone(), ka, Limits::default(), s.clone()).unwrap(),
        Channel::from_cosigned(p, kb, Limits::default(), s).unwrap(),
    )
}

/// Nodes 0 (payer), 1 (hub), 2 (payee); a stranger is key 9.
struct Net {
    nodes: Vec<Node>,
    disks: Vec<Records>,
    wire: Vec<(usize, usize, Frame)>,
    events: Vec<Vec<NodeEvent>>,
    up: ChannelId,
    down: ChannelId,
    now: Expiry,
}

impl Net {
    fn new(config: Config) -> Net {
        let mut nodes: Vec<Node> = (1..=3u8)
            .map(|b| Node::new(keys(b), config.clone()))
            .collect();
        let (p_up, h_up) = cosigned(1, 2, 1);
        let (h_down, q_down) = cosigned(2, 3, 2);
        let (up, down) = (p_up.id(), h_down.id());
        let a = |b: u8| keys(b).address();
        nodes[0].add_channel(a(2), p_up).unwrap();
        nodes[1].add_channel(a(1), h_up).unwrap();
        nodes[1].add_channel(a(3), h_down).unwrap();
        nodes[2].add_channel(a(2), q_down).unwrap();
        nodes[0].set_policy(a(2), policy(), keys(2).public_key());
        let disks = nodes.iter().map(Node::records).collect();
        Net {
            nodes,
            disks,
            wire: Vec::new(),
            events: vec![Vec::new(); 3],
            up,
            down,
            now: NOW,
        }
    }

    fn addr(&self, n: usize) -> Address {
        self.nodes[n].address()
    }

    /// Node `n`'s own step on virtual channel `v`'s co-signed final state: hand it over (a
    /// party proposes the release of its leg by it).
    fn hand_final(&mut self, n: usize, v: ChannelId, fin: SignedState) {
        let mut p = super::Pending::default();
        self.nodes[n].on_virtual_final(v, fin, &mut p);
        let out = self.nodes[n].finish(self.now, p);
        self.carry(n, out);
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
            let (from, to, f) = self.wire.remove(0);
            let from = self.addr(from);
            let out = self.nodes[to].handle_frame(self.now, from, f);
            self.carry(to, out);
        }
    }

    fn invoice(&mut self, amount: u128, secret: u8, payee: Address) -> (Invoice, Preimage) {
        let preimage = Preimage([secret; 32]);
        let payee_key = self
            .nodes
            .iter()
            .find(|n| n.address() == payee)
            .map_or(keys(9).public_key(), Node::public_key);
        let inv = Invoice {
            payee,
            payee_key,
            hub: self.addr(1),
            amount: Amount(amount),
            hashlock: preimage.hashlock(),
            expires_at: NOW.0 + 3600,
            final_expiry_delta: 7200,
        };
        (inv, preimage)
    }

    /// The payer pays `inv` as payment `id` and the network runs until quiet.
    fn pay(&mut self, id: B256, inv: &Invoice) {
        let out = self.nodes[0].pay(self.now, id, inv).unwrap();
        self.carry(0, out);
        self.run();
    }

    /// The payee makes `inv` (with `pre`) its own.
    fn expect(&mut self, inv: &Invoice, pre: Preimage) {
        let out = self.nodes[2].add_invoice(inv.clone(), pre).unwrap();
        self.carry(2, out);
    }

    fn balances(&self, n: usize, id: ChannelId) -> [Amount; 2] {
        self.nodes[n].channel(id).unwrap().latest().state.balances
    }
}

fn refusal_codes(out: &Output) -> Vec<ErrorCode> {
    out.events
        .iter()
        .filter_map(|e| match e {
            NodeEvent::Refused { code, .. } => Some(*code),
            _ => None,
        })
        .collect()
}

#[test]
fn a_payment_crosses_the_hub_with_its_fee_and_the_records_restore_every_node() {
    let mut net = Net::new(config());
    let (inv, pre) = net.invoice(10_000, 7, keys(3).address());
    net.expect(&inv, pre);
    let id = B256::repeat_byte(1);
    net.pay(id, &inv);
    let fee = 10 + 10_000 * 1_000 / 1_000_000;
    assert!(net.events[0].contains(&NodeEvent::PaymentSucceeded {
        id,
        fee: Amount(fee)
    }));
    assert!(matches!(
        net.nodes[0].payment(id).unwrap().status,
        PaymentStatus::Succeeded { preimage } if preimage == pre
    ));
    assert_eq!(net.nodes[1].fees_earned(), (Amount(fee), 1));
    assert_eq!(
        net.balances(0, net.up),
        [Amount(FUNDS - 10_000 - fee), Amount(10_000 + fee)]
    );
    assert_eq!(
        net.balances(2, net.down),
        [Amount(FUNDS - 10_000), Amount(10_000)]
    );
    assert!(net.nodes[2].book().invoices[&inv.hashlock].paid);
    // Paying the same id again changes nothing.
    assert!(net.nodes[0].pay(NOW, id, &inv).unwrap().is_empty());
    // Every node restored from its writes is the node.
    for n in 0..3 {
        assert_eq!(net.disks[n], net.nodes[n].records(), "node {n}");
        let back = Node::restore(keys(n as u8 + 1), config(), net.disks[n].clone()).unwrap();
        assert_eq!(back.records(), net.nodes[n].records());
    }
}

#[test]
fn each_failure_reason_reaches_the_payer() {
    // The hub knows no next peer: UnknownNextPeer, failed back on every hop.
    let mut net = Net::new(config());
    let (inv, _) = net.invoice(1_000, 1, Address::repeat_byte(0x77));
    let id = B256::repeat_byte(2);
    net.pay(id, &inv);
    assert!(net.events[0].contains(&NodeEvent::PaymentFailed {
        id,
        reason: Some(FailureReason::UnknownNextPeer)
    }));
    assert_eq!(net.balances(0, net.up), [Amount(FUNDS), Amount::ZERO]);
    // The onion's failure packet names the hub as the failing node.
    assert_eq!(
        net.nodes[0].payment(id).unwrap().failed_at,
        Some((net.addr(1), FailureReason::UnknownNextPeer))
    );
    // The payee knows the hashlock, but the lock pays less than its invoice.
    let (inv, pre) = net.invoice(1_000, 2, keys(3).address());
    net.expect(&inv, pre);
    let short =
        crate::node::payment::plan(Amount(999), 7200, &policy(), Amount(FUNDS), NOW).unwrap();
    let id = B256::repeat_byte(3);
    let out = net.nodes[0].pay_planned(NOW, id, &inv, short).unwrap();
    net.carry(0, out);
    net.run();
    let reason = match net.nodes[0].payment(id).unwrap().status {
        PaymentStatus::Failed { reason } => reason,
        ref s => panic!("not failed: {s:?}"),
    };
    assert_eq!(reason, FailureReason::IncorrectPaymentDetails);
    // The payee does not know the hashlock: its onion layer says it is the payee of a payment
    // it has no invoice for, and the failure names it (through the hub's layer).
    let (inv, _) = net.invoice(1_000, 12, keys(3).address());
    let id = B256::repeat_byte(13);
    net.pay(id, &inv);
    assert!(net.events[0].contains(&NodeEvent::PaymentFailed {
        id,
        reason: Some(FailureReason::IncorrectPaymentDetails)
    }));
    assert_eq!(
        net.nodes[0].payment(id).unwrap().failed_at,
        Some((net.addr(2), FailureReason::IncorrectPaymentDetails))
    );
    // The hub cannot carry it (more than its downstream balance).
    let (inv, pre) = net.invoice(FUNDS / 2 + FUNDS / 4, 3, keys(3).address());
    net.expect(&inv, pre);
    let out = net.nodes[1]
        .transfer(NOW, net.down, Amount(FUNDS / 2))
        .unwrap();
    net.carry(1, out);
    net.run();
    let id = B256::repeat_byte(4);
    net.pay(id, &inv);
    assert!(matches!(
        net.nodes[0].payment(id).unwrap().status,
        PaymentStatus::Failed {
            reason: FailureReason::TemporaryChannelFailure
        }
    ));
    assert_eq!(net.balances(0, net.up), [Amount(FUNDS), Amount::ZERO]);
}

#[test]
fn a_stranger_may_only_open_and_its_refusals_cost_no_write() {
    let mut net = Net::new(config());
    let stranger = keys(9).address();
    for (seq, body) in (1..).zip([
        Body::Ping,
        Body::Funded { channel_id: net.up },
        Body::Channel(Message::Reject {
            channel_id: net.up,
            version: 1,
            reason: crate::RejectReason::Conflict,
        }),
    ]) {
        let out = net.nodes[1].handle_frame(NOW, stranger, Frame::Msg { seq, body });
        assert!(
            out.writes.is_empty(),
            "a stranger made the hub write: {out:?}"
        );
        assert_eq!(refusal_codes(&out), [ErrorCode::UnknownChannel]);
        assert!(out.transmits.iter().any(|(to, f)| *to == stranger
            && matches!(
                f,
                Frame::Error {
                    code: ErrorCode::UnknownChannel,
                    ..
                }
            )));
    }
}

#[test]
fn a_peer_touches_only_its_own_channels() {
    let mut net = Net::new(config());
    let payer = net.addr(0);
    let before = net.nodes[1].channel_record(net.down).unwrap();
    // The payer proposes on the hub–payee channel.
    let msg = Message::Reject {
        channel_id: net.down,
        version: 1,
        reason: crate::RejectReason::Conflict,
    };
    let out = net.nodes[1].handle_frame(
        NOW,
        payer,
        Frame::Msg {
            seq: 1,
            body: Body::Channel(msg),
        },
    );
    assert_eq!(refusal_codes(&out), [ErrorCode::UnknownChannel]);
    // A peer with a funded channel gets a numbered, durable refusal; nothing else changes.
    assert!(out.transmits.iter().any(|(_, f)| matches!(
        f,
        Frame::Msg {
            body: Body::Refused {
                seq: 1,
                code: ErrorCode::UnknownChannel,
                ..
            },
            ..
        }
    )));
    assert_eq!(net.nodes[1].channel_record(net.down).unwrap(), before);
    // Onions: for another's channel, or too many waiting (an unreadable one is kept as such:
    // its HTLC fails with InvalidOnion).
    let junk = || {
        Box::new(crate::onion::Packet::Sphinx(crate::onion::Sphinx {
            version: 0,
            ephemeral: keys(9).public_key().serialize().to_vec(),
            routing: vec![0; crate::onion::ROUTING_LEN],
            mac: B256::ZERO,
        }))
    };
    let route = |channel_id, h: u8| Body::Route {
        channel_id,
        hashlock: Hashlock(B256::repeat_byte(h)),
        htlc: crate::HtlcId(u64::from(h)),
        onion: junk(),
    };
    let route_n = |channel_id, n: u64| Body::Route {
        channel_id,
        hashlock: Hashlock(alloy::primitives::U256::from(n + 1_000).into()),
        htlc: crate::HtlcId(n),
        onion: junk(),
    };
    let cases = [(route(net.down, 1), ErrorCode::UnknownChannel)];
    let mut seq = 2;
    for (body, code) in cases {
        let out = net.nodes[1].handle_frame(NOW, payer, Frame::Msg { seq, body });
        assert_eq!(refusal_codes(&out), [code]);
        seq += 1;
    }
    let max = Limits::default().max_pending_locks;
    for h in 0..max {
        let out = net.nodes[1].handle_frame(
            NOW,
            payer,
            Frame::Msg {
                seq,
                body: route_n(net.up, h as u64),
            },
        );
        assert!(refusal_codes(&out).is_empty());
        seq += 1;
    }
    let out = net.nodes[1].handle_frame(
        NOW,
        payer,
        Frame::Msg {
            seq,
            body: route(net.up, 99),
        },
    );
    assert_eq!(refusal_codes(&out), [ErrorCode::RateLimited]);
    assert_eq!(net.nodes[1].book().routes.len(), max);
    // Collected once stale.
    let out = net.nodes[1].handle_timeout(Expiry(NOW.0 + 601));
    assert_eq!(out.writes.len(), max);
    assert!(net.nodes[1].book().routes.is_empty());
}

#[test]
fn duplicates_are_acknowledged_and_gaps_refused_without_a_write() {
    let mut net = Net::new(config());
    let payer = net.addr(0);
    let out = net.nodes[1].handle_frame(
        NOW,
        payer,
        Frame::Msg {
            seq: 1,
            body: Body::Ping,
        },
    );
    assert!(!out.writes.is_empty());
    let dup = net.nodes[1].handle_frame(
        NOW,
        payer,
        Frame::Msg {
            seq: 1,
            body: Body::Ping,
        },
    );
    assert!(dup.writes.is_empty());
    assert_eq!(dup.transmits, vec![(payer, Frame::Ack { seq: 1 })]);
    let gap = net.nodes[1].handle_frame(
        NOW,
        payer,
        Frame::Msg {
            seq: 3,
            body: Body::Ping,
        },
    );
    assert!(gap.writes.is_empty());
    assert_eq!(refusal_codes(&gap), [ErrorCode::OutOfOrder]);
    // A bogus ack beyond what was sent costs nothing.
    let ack = net.nodes[1].handle_frame(NOW, payer, Frame::Ack { seq: 1_000 });
    assert!(ack.writes.is_empty());
}

#[test]
fn opening_then_funding_then_collateral_as_the_chain_shows_it() {
    let mut config = config();
    config.on_chain = true;
    config.open.min_peer_deposit = Amount(100);
    config.collateral = CollateralPolicy {
        collateral: Amount(500),
        min_peer_deposit: Amount(100),
    };
    let (payer_k, hub_k) = (keys(4), keys(5));
    let mut payer = Node::new(payer_k.clone(), config.clone());
    let mut hub = Node::new(hub_k.clone(), config.clone());
    let p = params(&payer_k, &hub_k, 9);
    let id = p.id();
    let out = payer
        .open_channel(NOW, hub.address(), p.clone(), Amount(1_000))
        .unwrap();
    let open = out.transmits[0].1.clone();
    let reply = hub.handle_frame(NOW, payer.address(), open);
    assert!(reply.events.contains(&NodeEvent::ChannelOpened {
        channel_id: id,
        peer: payer.address()
    }));
    let mut opened = false;
    for (_, f) in reply.transmits {
        let o = payer.handle_frame(NOW, hub.address(), f);
        opened |= o.events.contains(&NodeEvent::ChannelOpened {
            channel_id: id,
            peer: hub.address(),
        });
    }
    assert!(opened);
    assert_eq!(payer.book().policies[&hub.address()], policy());
    // Not funded yet: the channel takes no update, and pays nothing.
    assert!(matches!(
        payer.transfer(NOW, id, Amount(1)),
        Err(CommandError::NotReady(..))
    ));
    // The payer's word is not enough: `Funded` only asks the hub to read the chain.
    let out = hub.handle_frame(
        NOW,
        payer.address(),
        Frame::Msg {
            seq: 2,
            body: Body::Funded { channel_id: id },
        },
    );
    assert_eq!(out.queries, vec![id]);
    assert!(!hub.channel_record(id).unwrap().funded);
    // Less than the opening state: still not funded.
    let low = hub.handle_chain(
        NOW,
        ChainEvent::Holdings {
            channel_id: id,
            held: Amount(999),
            deposited: [Amount(999), Amount::ZERO],
        },
    );
    assert!(!low.events.contains(&NodeEvent::Funded { channel_id: id }));
    let out = hub.handle_chain(
        NOW,
        ChainEvent::Holdings {
            channel_id: id,
            held: Amount(1_000),
            deposited: [Amount(1_000), Amount::ZERO],
        },
    );
    assert!(out.events.contains(&NodeEvent::Funded { channel_id: id }));
    let intents: Vec<_> = out.intents().cloned().collect();
    assert!(matches!(
        intents.as_slice(),
        [Intent::Deposit {
            amount: Amount(500),
            expected_held: Amount(1_000),
            credit: true,
            ..
        }]
    ));
    // Seen again: nothing new, no second collateral.
    let again = hub.handle_chain(
        NOW,
        ChainEvent::Holdings {
            channel_id: id,
            held: Amount(1_000),
            deposited: [Amount(1_000), Amount::ZERO],
        },
    );
    assert!(again.is_empty());
    // Our collateral landed: its credit is proposed.
    let landed = hub.handle_chain(NOW, ChainEvent::Landed(Box::new(intents[0].clone())));
    assert_eq!(landed.queries, vec![id]);
    let after = hub.handle_chain(
        NOW,
        ChainEvent::Holdings {
            channel_id: id,
            held: Amount(1_500),
            deposited: [Amount(1_000), Amount(500)],
        },
    );
    let resumed = hub.resume(NOW);
    let proposed = after
        .transmits
        .iter()
        .chain(resumed.transmits.iter())
        .chain(landed.transmits.iter())
        .any(|(_, f)| {
            matches!(f, Frame::Msg { body: Body::Channel(Message::Propose { ops, .. }), .. }
            if ops.iter().any(|o| matches!(o, crate::Op::Deposit { .. })))
        });
    assert!(proposed, "the collateral's credit was never proposed");
}

#[test]
fn an_opening_refused_costs_the_refuser_nothing_and_the_opener_may_forget_it() {
    let config = config();
    let (payer_k, hub_k) = (keys(4), keys(5));
    let mut payer = Node::new(payer_k.clone(), config.clone());
    let mut hub = Node::new(hub_k.clone(), config.clone());
    let mut p = params(&payer_k, &hub_k, 9);
    p.chain_id = 5;
    let id = p.id();
    let out = payer
        .open_channel(NOW, hub.address(), p, Amount(1_000))
        .unwrap();
    let reply = hub.handle_frame(NOW, payer.address(), out.transmits[0].1.clone());
    assert!(reply.writes.is_empty());
    assert_eq!(refusal_codes(&reply), [ErrorCode::Protocol]);
    assert!(hub.channel(id).is_none());
    // The opener forgets it; a funded channel is never forgotten.
    assert_eq!(payer.abandoned(Expiry(NOW.0 + 3601)).unanswered, vec![id]);
    assert!(payer.forget(id).is_ok());
    assert!(payer.channel(id).is_none());
    let net = Net::new(self::config());
    let mut hubn = net.nodes.into_iter().nth(1).unwrap();
    assert_eq!(hubn.forget(net.up), Err(CommandError::NotAbandoned(net.up)));
}

#[test]
fn a_stale_close_is_challenged_and_a_disputed_channel_takes_no_payment() {
    let mut net = Net::new(config());
    let out = net.nodes[0].transfer(NOW, net.up, Amount(10)).unwrap();
    net.carry(0, out);
    net.run();
    let out = net.nodes[1].handle_chain(
        NOW,
        ChainEvent::Disputed {
            channel_id: net.up,
            version: 0,
            finalizes_at: NOW.0 + 100,
            guaranteed: Vec::new(),
        },
    );
    assert!(out.events.contains(&NodeEvent::Challenged {
        channel_id: net.up,
        disputed: 0,
        ours: 1
    }));
    assert!(
        matches!(out.intents().next(), Some(Intent::Challenge { state, .. }) if state.state.version == 1)
    );
    // Registered with our latest: nothing to answer; it is paid out after the window (A at
    // once, B after the grace).
    let out = net.nodes[0].handle_chain(
        NOW,
        ChainEvent::Disputed {
            channel_id: net.up,
            version: 1,
            finalizes_at: NOW.0 + 200,
            guaranteed: Vec::new(),
        },
    );
    let intents: Vec<_> = out.intents().collect();
    assert!(
        matches!(intents[..], [Intent::Conclude { state, not_before, .. }] if state.version == 1 && *not_before == NOW.0 + 200),
        "{intents:?}"
    );
    let out = net.nodes[1].handle_chain(
        NOW,
        ChainEvent::Disputed {
            channel_id: net.up,
            version: 1,
            finalizes_at: NOW.0 + 200,
            guaranteed: Vec::new(),
        },
    );
    let intents: Vec<_> = out.intents().collect();
    assert!(
        matches!(intents[..], [Intent::Conclude { not_before, .. }] if *not_before == NOW.0 + 200 + config().close_grace_secs),
        "{intents:?}"
    );
    // Frozen: the payer cannot pay over it any more.
    let (inv, _) = net.invoice(1_000, 1, keys(3).address());
    assert_eq!(
        net.nodes[0].pay(NOW, B256::repeat_byte(1), &inv),
        Err(CommandError::NoChannel(net.addr(1)))
    );
    let out = net.nodes[0].handle_chain(
        NOW,
        ChainEvent::Concluded {
            channel_id: net.up,
            version: 1,
            to_a: Amount(FUNDS - 10),
            to_b: Amount(10),
        },
    );
    assert!(out.events.contains(&NodeEvent::Concluded {
        channel_id: net.up,
        to_a: Amount(FUNDS - 10),
        to_b: Amount(10)
    }));
}

#[test]
fn the_closer_pays_the_close_out_and_the_other_waits_the_grace() {
    let mut config = config();
    config.auto_settle = true;
    let mut net = Net::new(config.clone());
    let mut outs = Vec::new();
    let out = net.nodes[0].close(NOW, net.up).unwrap();
    net.carry(0, out);
    while !net.wire.is_empty() {
        let (from, to, f) = net.wire.remove(0);
        let from = net.addr(from);
        let out = net.nodes[to].handle_frame(NOW, from, f);
        outs.push((to, out.intents().cloned().collect::<Vec<_>>()));
        net.carry(to, out);
    }
    let not_before = |n: usize| {
        outs.iter()
            .filter(|(to, _)| *to == n)
            .flat_map(|(_, i)| i.iter())
            .find_map(|i| match i {
                Intent::CooperativeClose { not_before, .. } => Some(*not_before),
                _ => None,
            })
    };
    assert_eq!(not_before(0), Some(0));
    assert_eq!(not_before(1), Some(NOW.0 + config.close_grace_secs));
}

#[test]
fn a_lock_held_past_its_expiry_is_taken_back_on_the_timer_and_fails_the_payment() {
    let mut config = config();
    config.reveal_preimages = false;
    let mut net = Net::new(config);
    let (inv, pre) = net.invoice(1_000, 5, keys(3).address());
    net.expect(&inv, pre);
    let id = B256::repeat_byte(9);
    net.pay(id, &inv);
    assert!(net.events[2].contains(&NodeEvent::Holding {
        hashlock: inv.hashlock
    }));
    let t = net.nodes[0]
        .poll_timeout()
        .expect("the payer's lock has a timer");
    let h = net.nodes[1]
        .poll_timeout()
        .expect("the hub's lock has a timer");
    assert!(h < t, "the hub's lock expires first");
    // Every clock past the payer's expiry: the hub takes its lock back, then the payer.
    net.now = t;
    for n in [1, 0] {
        let out = net.nodes[n].handle_timeout(t);
        net.carry(n, out);
        net.run();
    }
    // The hub took its lock back from the silent payee, then failed the payer's back.
    assert!(net.events[0].contains(&NodeEvent::PaymentFailed {
        id,
        reason: Some(FailureReason::TemporaryChannelFailure)
    }));
    assert!(
        net.nodes[1]
            .channel(net.down)
            .unwrap()
            .latest()
            .state
            .locks
            .is_empty()
    );
    assert_eq!(net.balances(0, net.up), [Amount(FUNDS), Amount::ZERO]);
}

#[test]
fn a_claim_the_peer_does_not_settle_is_reported_once_at_its_on_chain_deadline() {
    // The payee reveals; the hub, as if its upstream peer were silent, never gets its fulfil
    // co-signed: its claim on the payer's lock comes due ON_CHAIN_CLAIM_SECS before expiry.
    let mut net = Net::new(config());
    let (inv, pre) = net.invoice(1_000, 21, keys(3).address());
    net.expect(&inv, pre);
    let out = net.nodes[0].pay(NOW, B256::repeat_byte(21), &inv).unwrap();
    net.carry(0, out);
    // Deliver everything except what goes to the payer: its fulfil never lands.
    while !net.wire.is_empty() {
        let (from, to, f) = net.wire.remove(0);
        if to == 0
            && matches!(
                f,
                Frame::Msg {
                    body: Body::Channel(Message::Propose { .. }),
                    ..
                }
            )
        {
            continue;
        }
        let from = net.addr(from);
        let out = net.nodes[to].handle_frame(NOW, from, f);
        net.carry(to, out);
    }
    let hub = &mut net.nodes[1];
    let claims = hub.channel(net.up).unwrap().snapshot().claim_deadlines();
    assert_eq!(
        claims.len(),
        1,
        "the hub holds the preimage of the payer's lock"
    );
    let (lock, preimage, at) = claims[0];
    assert_eq!(preimage, pre);
    let expiry = hub
        .channel(net.up)
        .unwrap()
        .latest()
        .state
        .lock(lock)
        .unwrap()
        .expiry;
    assert_eq!(at.0, expiry.0 - crate::forward::ON_CHAIN_CLAIM_SECS);
    assert!(hub.poll_timeout().is_some_and(|t| t <= at));
    let early = hub.handle_timeout(Expiry(at.0 - 1));
    assert!(
        !early
            .events
            .iter()
            .any(|e| matches!(e, NodeEvent::MustClaimOnChain { .. }))
    );
    let due = hub.handle_timeout(at);
    assert!(due.events.contains(&NodeEvent::MustClaimOnChain {
        channel_id: net.up,
        locks: vec![lock],
        deadline: at,
    }));
    // Written in the step's batch: the registration of the preimage for this lock, and the
    // close on chain with the latest co-signed state; the channel takes no new lock.
    let latest = hub.channel(net.up).unwrap().latest().clone();
    assert!(matches!(
        due.intents().collect::<Vec<_>>().as_slice(),
        [Intent::RegisterSecret { id, preimage, .. }, Intent::Close { state, .. }]
            if *id == lock && *preimage == pre && *state == latest
    ));
    assert!(hub.channel(net.up).unwrap().snapshot().frozen());
    let again = hub.handle_timeout(Expiry(at.0 + 1));
    assert!(
        !again
            .events
            .iter()
            .any(|e| matches!(e, NodeEvent::MustClaimOnChain { .. }))
    );
    // The close is on chain: its conclusion is written for the window's end (the hub is B:
    // after the grace), the preimage is not registered twice.
    let version = latest.state.version;
    let ends = at.0 + 500;
    let out = hub.handle_chain(
        at,
        ChainEvent::Disputed {
            channel_id: net.up,
            version,
            finalizes_at: ends,
            guaranteed: Vec::new(),
        },
    );
    assert!(matches!(
        out.intents().collect::<Vec<_>>().as_slice(),
        [Intent::Conclude { state, not_before, .. }]
            if *state == latest.state && *not_before == ends + config().close_grace_secs
    ));
    // Paid out: the payer's lock is settled on chain with the registry's verdict, once.
    let out = hub.handle_chain(
        at,
        ChainEvent::Concluded {
            channel_id: net.up,
            version,
            to_a: latest.state.balances[0],
            to_b: latest.state.balances[1],
        },
    );
    assert!(matches!(
        out.intents().collect::<Vec<_>>().as_slice(),
        [Intent::Unlock { state, lock: l, me: crate::Side::B, .. }]
            if *state == latest.state && *l == lock
    ));
    let replay = hub.handle_chain(
        at,
        ChainEvent::Concluded {
            channel_id: net.up,
            version,
            to_a: latest.state.balances[0],
            to_b: latest.state.balances[1],
        },
    );
    assert_eq!(replay.intents().count(), 0);
}

#[test]
fn a_preimage_revealed_only_on_chain_settles_upstream_and_the_payment() {
    // The payee reveals, but its fulfil never reaches the hub: it registers the preimage on
    // chain instead. The hub learns it from the registry and settles upstream at once.
    let mut net = Net::new(config());
    let (inv, pre) = net.invoice(1_000, 22, keys(3).address());
    net.expect(&inv, pre);
    let pid = B256::repeat_byte(22);
    let out = net.nodes[0].pay(NOW, pid, &inv).unwrap();
    net.carry(0, out);
    while !net.wire.is_empty() {
        let (from, to, f) = net.wire.remove(0);
        if from == 2 && to == 1 && carries_fulfil(&f) {
            continue;
        }
        let from = net.addr(from);
        let out = net.nodes[to].handle_frame(NOW, from, f);
        net.carry(to, out);
    }
    let lock = *net.nodes[1]
        .channel(net.down)
        .unwrap()
        .latest()
        .state
        .locks
        .first()
        .expect("the hub offered the payee a lock");
    // A registration after the lock's expiry unlocks nothing (the hub takes its lock back),
    // and an unrelated preimage nothing either.
    for (preimage, at) in [(pre, lock.expiry.0 + 1), (Preimage([99; 32]), NOW.0)] {
        let late = net.nodes[1].handle_chain(NOW, ChainEvent::Revealed { preimage, at });
        assert!(
            late.writes.is_empty() && late.transmits.is_empty(),
            "{late:?}"
        );
    }
    // In time: the forward learns the preimage and the hub proposes the fulfil upstream, in
    // the same step.
    let out = net.nodes[1].handle_chain(
        NOW,
        ChainEvent::Revealed {
            preimage: pre,
            at: lock.expiry.0,
        },
    );
    assert!(out.writes.iter().any(|w| matches!(w, crate::node::records::Write::Forward { record, .. } if record.preimage == Some(pre))));
    net.carry(1, out);
    let mut payer_events = Vec::new();
    while !net.wire.is_empty() {
        let (from, to, f) = net.wire.remove(0);
        if from == 2 && to == 1 && carries_fulfil(&f) {
            continue;
        }
        let fromaddr = net.addr(from);
        let out = net.nodes[to].handle_frame(NOW, fromaddr, f);
        if to == 0 {
            payer_events.extend(out.events.clone());
        }
        net.carry(to, out);
    }
    assert!(
        payer_events
            .iter()
            .any(|e| matches!(e, NodeEvent::PaymentSucceeded { id, .. } if *id == pid)),
        "{payer_events:?}"
    );
    assert!(
        net.nodes[1]
            .channel(net.up)
            .unwrap()
            .latest()
            .state
            .locks
            .is_empty()
    );
    // Again (the watcher may report it twice): nothing more.
    let again = net.nodes[1].handle_chain(
        NOW,
        ChainEvent::Revealed {
            preimage: pre,
            at: lock.expiry.0,
        },
    );
    assert!(
        again
            .writes
            .iter()
            .all(|w| !matches!(w, crate::node::records::Write::Forward { .. }))
    );
}

fn carries_fulfil(f: &Frame) -> bool {
    matches!(
        f,
        Frame::Msg {
            body: Body::Channel(Message::Propose { ops, .. }),
            ..
        } if ops.iter().any(|o| matches!(o, crate::Op::FulfillHtlc { .. }))
    )
}

#[test]
fn a_proposal_refused_as_not_yet_funded_is_made_again_when_the_peer_sees_the_funds() {
    // The payer sees its deposit on chain before the hub does and proposes at once: the hub
    // refuses it unread (and reads the chain); once it sees the funds it says so, and the
    // payer proposes the same update again.
    let mut config = config();
    config.on_chain = true;
    config.open.min_peer_deposit = Amount(100);
    let (payer_k, hub_k) = (keys(4), keys(5));
    let mut payer = Node::new(payer_k.clone(), config.clone());
    let mut hub = Node::new(hub_k.clone(), config.clone());
    let p = params(&payer_k, &hub_k, 10);
    let id = p.id();
    let out = payer
        .open_channel(NOW, hub.address(), p.clone(), Amount(1_000))
        .unwrap();
    let mut wire: Vec<(bool, Frame)> = out.transmits.into_iter().map(|(_, f)| (true, f)).collect();
    let funds = ChainEvent::Holdings {
        channel_id: id,
        held: Amount(1_000),
        deposited: [Amount(1_000), Amount::ZERO],
    };
    let refused = std::cell::Cell::new(false);
    let step = |payer: &mut Node, hub: &mut Node, wire: &mut Vec<(bool, Frame)>| {
        while !wire.is_empty() {
            let (to_hub, f) = wire.remove(0);
            let out = if to_hub {
                let out = hub.handle_frame(NOW, payer.address(), f);
                if out.transmits.iter().any(|(_, f)| {
                    matches!(
                        f,
                        Frame::Msg {
                            body: Body::Refused {
                                code: ErrorCode::NotFunded,
                                ..
                            },
                            ..
                        } | Frame::Error {
                            code: ErrorCode::NotFunded,
                            ..
                        }
                    )
                }) {
                    refused.set(true);
                }
                out
            } else {
                payer.handle_frame(NOW, hub.address(), f)
            };
            wire.extend(out.transmits.into_iter().map(|(_, f)| (!to_hub, f)));
        }
    };
    step(&mut payer, &mut hub, &mut wire);
    let out = payer.handle_chain(NOW, funds.clone());
    assert!(out.events.contains(&NodeEvent::Funded { channel_id: id }));
    wire.extend(out.transmits.into_iter().map(|(_, f)| (true, f)));
    // The payer's `Funded` reaches the hub, which has not read the chain yet; the transfer
    // follows at once.
    let out = payer.transfer(NOW, id, Amount(10)).unwrap();
    wire.extend(out.transmits.into_iter().map(|(_, f)| (true, f)));
    step(&mut payer, &mut hub, &mut wire);
    assert!(
        refused.get(),
        "the hub refused the early proposal as not funded"
    );
    assert_eq!(payer.channel(id).unwrap().latest().state.version, 0);
    // The hub reads the chain: funded; it tells the payer, which proposes again.
    let out = hub.handle_chain(NOW, funds);
    assert!(out.events.contains(&NodeEvent::Funded { channel_id: id }));
    wire.extend(out.transmits.into_iter().map(|(_, f)| (false, f)));
    step(&mut payer, &mut hub, &mut wire);
    let latest = payer.channel(id).unwrap().latest().clone();
    assert_eq!(latest.state.version, 1);
    assert_eq!(latest.state.balances, [Amount(990), Amount(10)]);
    assert_eq!(hub.channel(id).unwrap().latest(), &latest);
}

#[test]
fn a_payout_deferred_to_us_is_claimed_and_one_to_others_is_not() {
    let mut config = config();
    let mut node = Node::new(keys(5), config.clone());
    let token = Address::repeat_byte(0x70);
    let ours = node.handle_chain(
        NOW,
        ChainEvent::PayoutDeferred {
            to: keys(5).address(),
            asset: token,
        },
    );
    assert!(matches!(
        ours.intents().collect::<Vec<_>>().as_slice(),
        [Intent::Claim { asset, to }] if *asset == token && *to == keys(5).address()
    ));
    let theirs = node.handle_chain(
        NOW,
        ChainEvent::PayoutDeferred {
            to: keys(6).address(),
            asset: token,
        },
    );
    assert!(theirs.is_empty());
    // With a withdrawal address, the claim goes there.
    config.withdraw_to = Some(Address::repeat_byte(0x77));
    let mut node = Node::new(keys(5), config);
    let out = node.handle_chain(
        NOW,
        ChainEvent::PayoutDeferred {
            to: keys(5).address(),
            asset: token,
        },
    );
    assert!(matches!(
        out.intents().collect::<Vec<_>>().as_slice(),
        [Intent::Claim { to, .. }] if *to == Address::repeat_byte(0x77)
    ));
}

#[test]
fn a_forced_close_goes_on_chain_with_the_latest_state_once() {
    let mut net = Net::new(config());
    let out = net.nodes[0].transfer(NOW, net.up, Amount(10)).unwrap();
    net.carry(0, out);
    net.run();
    let latest = net.nodes[0].channel(net.up).unwrap().latest().clone();
    assert_eq!(latest.state.version, 1);
    let out = net.nodes[0].force_close(NOW, net.up).unwrap();
    assert!(matches!(
        out.intents().collect::<Vec<_>>().as_slice(),
        [Intent::Close { state, .. }] if *state == latest
    ));
    assert!(out.transmits.is_empty(), "nothing is asked of the peer");
    assert!(net.nodes[0].channel(net.up).unwrap().snapshot().frozen());
    // Once on its way to the chain: nothing more, and no new payment over it.
    let again = net.nodes[0].force_close(NOW, net.up).unwrap();
    assert_eq!(again.intents().count(), 0);
    let (inv, _) = net.invoice(1_000, 30, keys(3).address());
    assert!(net.nodes[0].pay(NOW, B256::repeat_byte(30), &inv).is_err());
    assert_eq!(
        net.nodes[0].force_close(NOW, ChannelId(B256::repeat_byte(9))),
        Err(CommandError::UnknownChannel(ChannelId(B256::repeat_byte(
            9
        ))))
    );
}

#[test]
fn a_node_that_is_not_a_tower_keeps_no_state_a_peer_hands_it() {
    let mut net = Net::new(config());
    let latest = net.nodes[0].channel(net.up).unwrap().latest().clone();
    let params = net.nodes[0]
        .channel(net.up)
        .unwrap()
        .snapshot()
        .params()
        .clone();
    let from = net.addr(0);
    let out = net.nodes[1].handle_frame(
        NOW,
        from,
        Frame::Msg {
            seq: 1,
            body: Body::Watch {
                params: Box::new(params),
                state: Box::new(latest),
            },
        },
    );
    assert!(out.events.contains(&NodeEvent::Refused {
        peer: from,
        code: ErrorCode::Protocol
    }));
    assert!(
        !out.writes
            .iter()
            .any(|w| matches!(w, crate::node::records::Write::Watched { .. }))
    );
    assert!(net.nodes[1].book().watched.is_empty());
}

// ---- virtual channels (ADR 0026) ----

fn virtual_policy() -> crate::vchan::VirtualPolicy {
    crate::vchan::VirtualPolicy {
        open_fee_base: Amount(100),
        open_fee_ppm: 1_000,
        max_value: Amount(FUNDS),
        max_lifetime_secs: 86_400,
        max_window_secs: 86_400,
        toward_hubs: false,
    }
}

fn virtual_config() -> Config {
    Config {
        virtual_policy: Some(virtual_policy()),
        ..config()
    }
}

impl Net {
    /// Deliver every frame on the wire now (one message delay); what they cause waits for
    /// the next round.
    fn round(&mut self) {
        for (from, to, f) in std::mem::take(&mut self.wire) {
            let from = self.addr(from);
            let out = self.nodes[to].handle_frame(self.now, from, f);
            self.carry(to, out);
        }
    }

    /// Run `rounds` message delays; the round each node first saw a virtual channel open
    /// (0: never).
    fn open_rounds<const N: usize>(&mut self, rounds: usize) -> [usize; N] {
        let mut seen = [0; N];
        for round in 1..=rounds {
            self.round();
            for (n, s) in seen.iter_mut().enumerate() {
                if *s == 0 && self.opened(n).is_some() {
                    *s = round;
                }
            }
        }
        seen
    }

    fn opened(&self, n: usize) -> Option<ChannelId> {
        self.events[n].iter().find_map(|e| match e {
            NodeEvent::VirtualOpened { channel_id, .. } => Some(*channel_id),
            _ => None,
        })
    }

    /// The payer opens a virtual channel with the payee over the hub, depositing `deposit`;
    /// returns its id and the round each node saw it open.
    fn open_virtual(&mut self, deposit: u128) -> (ChannelId, [usize; 3]) {
        let (hub, payee) = (self.addr(1), self.addr(2));
        let out = self.nodes[0].set_virtual_policy(hub, virtual_policy());
        self.carry(0, out);
        let out = self.nodes[0]
            .open_virtual(self.now, hub, payee, Amount(deposit), U256::from(1), 3600)
            .unwrap();
        self.carry(0, out);
        let seen = self.open_rounds(10);
        (self.opened(2).expect("the payee saw it open"), seen)
    }
}

use alloy::primitives::U256;

#[test]
fn a_virtual_channel_opens_over_the_hub_in_three_delays_and_carries_payments_both_ways() {
    let mut net = Net::new(virtual_config());
    let (v, seen) = net.open_virtual(50_000);
    // The payee holds its funded leg and the co-signed opening after two message delays, the
    // hub knows both legs after three, the payer after four (the payee's signature is relayed).
    assert_eq!(seen, [4, 3, 2]);
    let fee = 100 + 50_000 * 1_000 / 1_000_000;
    // The payer's ledger: its deposit locked, the fee paid to the hub.
    let up = net.nodes[1].channel(net.up).unwrap().latest().state.clone();
    assert_eq!(up.balances, [Amount(FUNDS - 50_000 - fee), Amount(fee)]);
    assert_eq!(up.guarantees.len(), 1);
    assert_eq!(
        (
            up.guarantees[0].from_a,
            up.guarantees[0].from_b,
            up.guarantees[0].crossed
        ),
        (Amount(50_000), Amount::ZERO, false)
    );
    // The hub's ledger with the payee: the hub stands for the payer and locks as much.
    let down = net.nodes[2]
        .channel(net.down)
        .unwrap()
        .latest()
        .state
        .clone();
    assert_eq!(down.balances, [Amount(FUNDS - 50_000), Amount::ZERO]);
    assert_eq!(
        (down.guarantees[0].from_a, down.guarantees[0].from_b),
        (Amount(50_000), Amount::ZERO)
    );
    // Payments inside it, relayed by the hub, both ways.
    let out = net.nodes[0].transfer(net.now, v, Amount(20_000)).unwrap();
    net.carry(0, out);
    net.run();
    let out = net.nodes[2].transfer(net.now, v, Amount(5_000)).unwrap();
    net.carry(2, out);
    net.run();
    for n in [0, 2] {
        assert_eq!(
            net.balances(n, v),
            [Amount(35_000), Amount(15_000)],
            "node {n}"
        );
    }
    // The hub holds no state of it: it only passed the messages on.
    assert!(net.nodes[1].channel(v).is_none());
    for n in 0..3 {
        assert_eq!(net.disks[n], net.nodes[n].records(), "node {n}");
        let back =
            Node::restore(keys(n as u8 + 1), virtual_config(), net.disks[n].clone()).unwrap();
        assert_eq!(back.records(), net.nodes[n].records());
    }
    // And after a restart the relay goes on.
    net.nodes = (0..3)
        .map(|n| Node::restore(keys(n as u8 + 1), virtual_config(), net.disks[n].clone()).unwrap())
        .collect();
    let out = net.nodes[0].transfer(net.now, v, Amount(1_000)).unwrap();
    net.carry(0, out);
    net.run();
    assert_eq!(net.balances(2, v), [Amount(34_000), Amount(16_000)]);
}

#[test]
fn a_hub_that_serves_no_virtual_channels_locks_nothing() {
    let mut net = Net::new(config());
    let (v, _) = {
        let (hub, payee) = (net.addr(1), net.addr(2));
        let out = net.nodes[0].set_virtual_policy(hub, virtual_policy());
        net.carry(0, out);
        let out = net.nodes[0]
            .open_virtual(net.now, hub, payee, Amount(50_000), U256::from(1), 3600)
            .unwrap();
        net.carry(0, out);
        net.run();
        (net.opened(2), ())
    };
    assert_eq!(v, None);
    assert!(net.events[1].iter().any(|e| matches!(
        e,
        NodeEvent::Refused {
            code: ErrorCode::Protocol,
            ..
        }
    )));
    // The guarantee proposed alongside was refused as not agreed: no ledger locks anything.
    for (n, id) in [(0, net.up), (1, net.up), (1, net.down), (2, net.down)] {
        let s = &net.nodes[n].channel(id).unwrap().latest().state;
        assert!(s.guarantees.is_empty(), "node {n}");
    }
    assert_eq!(net.balances(0, net.up), [Amount(FUNDS), Amount::ZERO]);
}

/// Every peer is an attacker: frames a peer may send about virtual channels it has no right
/// to, each refused with nothing changed.
#[test]
fn virtual_channel_frames_from_the_wrong_peer_are_refused() {
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    let (payer, hub, payee) = (net.addr(0), net.addr(1), net.addr(2));
    let before: Vec<Records> = net.nodes.iter().map(Node::records).collect();
    // What the payee expects next from the hub (the hub's refusals below are not delivered).
    let hub_to_payee = net.nodes[1].links[&payee].outbox.next_send();
    let msg = Message::Reject {
        channel_id: v,
        version: 9,
        reason: crate::RejectReason::Conflict,
    };
    // A second acceptance.
    let seq = net.nodes[2].links[&hub].outbox.next_send();
    let out = net.nodes[1].handle_frame(
        NOW,
        payee,
        Frame::Msg {
            seq,
            body: Body::VirtualAccept {
                channel_id: v,
                sig: sign_state(
                    &params(&keys(1), &keys(3), 1),
                    &keys(3),
                    &ChannelState::opening(v, [Amount(1), Amount(0)]),
                )
                .unwrap(),
            },
        },
    );
    assert_eq!(refusal_codes(&out), vec![ErrorCode::Protocol]);
    // The payer asks the hub to relay to someone not in the channel.
    let stranger = Address::repeat_byte(0x99);
    let seq = net.nodes[0].links[&hub].outbox.next_send();
    let out = net.nodes[1].handle_frame(
        NOW,
        payer,
        Frame::Msg {
            seq,
            body: Body::Relay {
                to: stranger,
                msg: msg.clone(),
            },
        },
    );
    assert_eq!(refusal_codes(&out), vec![ErrorCode::UnknownChannel]);
    assert!(!out.transmits.iter().any(|(to, _)| *to == stranger));
    // The payee gets a "relayed" message of the channel from someone who is not its hub.
    let out = net.nodes[2].handle_frame(
        NOW,
        payer,
        Frame::Msg {
            seq: 1,
            body: Body::Relayed {
                from: payer,
                msg: msg.clone(),
            },
        },
    );
    assert_eq!(refusal_codes(&out), vec![ErrorCode::UnknownChannel]);
    // The hub claims to relay a message of the channel from someone who is not its party.
    let out = net.nodes[2].handle_frame(
        NOW,
        hub,
        Frame::Msg {
            seq: hub_to_payee,
            body: Body::Relayed {
                from: stranger,
                msg,
            },
        },
    );
    assert_eq!(refusal_codes(&out), vec![ErrorCode::UnknownChannel]);
    // Nothing of the channel changed anywhere (the refusals themselves are numbered messages).
    for (n, before) in before.iter().enumerate() {
        assert_eq!(
            net.nodes[n].book().virtuals,
            before.book.virtuals,
            "node {n}"
        );
        for (id, c) in &before.channels {
            assert_eq!(
                net.nodes[n].channel(*id).unwrap().latest(),
                c.snapshot.latest(),
                "node {n}"
            );
        }
    }
}

/// A hub offering a virtual channel that would lock the payee's own money, or a leg that does
/// not lock its opening, is refused: the payee agrees to nothing.
#[test]
fn the_payee_refuses_an_offer_that_takes_its_money() {
    let mut net = Net::new(virtual_config());
    let (hub, payer, payee) = (net.addr(1), net.addr(0), net.addr(2));
    let v = crate::ChannelParams {
        participants: [payer, payee],
        nonce: U256::from(5),
        ..params(&keys(1), &keys(3), 0)
    };
    let terms = crate::vchan::VirtualTerms {
        params: v.clone(),
        opening: [Amount(10), Amount(20)],
        expires_at: Expiry(NOW.0 + 100),
    };
    let sig = sign_state(&v, &keys(1), &terms.opening_state()).unwrap();
    let seq = 1;
    let out = net.nodes[2].handle_frame(
        NOW,
        hub,
        Frame::Msg {
            seq,
            body: Body::VirtualOffer {
                ledger: net.down,
                terms: Box::new(terms.clone()),
                sig,
            },
        },
    );
    assert_eq!(refusal_codes(&out), vec![ErrorCode::Protocol]);
    assert!(net.nodes[2].book().virtuals.is_empty());
    assert!(net.nodes[2].channel(v.id()).is_none());
    // A's signature that is not A's.
    let terms = crate::vchan::VirtualTerms {
        opening: [Amount(10), Amount::ZERO],
        ..terms
    };
    let forged = sign_state(&v, &keys(2), &terms.opening_state()).unwrap();
    let out = net.nodes[2].handle_frame(
        NOW,
        hub,
        Frame::Msg {
            seq: seq + 1,
            body: Body::VirtualOffer {
                ledger: net.down,
                terms: Box::new(terms),
                sig: forged,
            },
        },
    );
    assert_eq!(refusal_codes(&out), vec![ErrorCode::Protocol]);
    assert!(net.nodes[2].book().virtuals.is_empty());
}

impl Net {
    fn settled(&self, n: usize, v: ChannelId) -> bool {
        self.events[n]
            .iter()
            .any(|e| matches!(e, NodeEvent::VirtualSettled { channel_id } if *channel_id == v))
    }

    fn guarantees(&self, n: usize, id: ChannelId) -> usize {
        self.nodes[n]
            .channel(id)
            .unwrap()
            .latest()
            .state
            .guarantees
            .len()
    }
}

#[test]
fn a_closed_virtual_channel_releases_both_legs_by_its_final_state() {
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    let fee = 100 + 50;
    let out = net.nodes[0].transfer(net.now, v, Amount(20_000)).unwrap();
    net.carry(0, out);
    net.run();
    let out = net.nodes[2].close(net.now, v).unwrap();
    net.carry(2, out);
    net.run();
    for n in 0..3 {
        assert!(net.settled(n, v), "node {n} settled");
    }
    // The payer's ledger: its 30,000 back, the payee's 20,000 to the hub.
    let up = &net.nodes[1].channel(net.up).unwrap().latest().state;
    assert!(up.guarantees.is_empty());
    assert_eq!(
        up.balances,
        [Amount(FUNDS - 50_000 - fee + 30_000), Amount(fee + 20_000)]
    );
    // The hub's ledger with the payee: the payer's 30,000 back to the hub, 20,000 to the payee.
    let down = &net.nodes[2].channel(net.down).unwrap().latest().state;
    assert!(down.guarantees.is_empty());
    assert_eq!(
        down.balances,
        [Amount(FUNDS - 50_000 + 30_000), Amount(20_000)]
    );
    // The hub is whole: its two ledgers hold what they held, plus the fee.
    let hub_total = up.balances[1].0 + down.balances[0].0;
    assert_eq!(hub_total, FUNDS + fee);
    // Both sides of each ledger agree, and the writes restore every node.
    assert_eq!(net.balances(0, net.up), up.balances);
    assert_eq!(net.balances(1, net.down), down.balances);
    for n in 0..3 {
        assert_eq!(net.disks[n], net.nodes[n].records(), "node {n}");
    }
    assert!(!net.nodes[1].holding(net.up) && !net.nodes[1].holding(net.down));
}

/// A final state (version 10) of the virtual channel `vp` with `balances`, signed by both its
/// parties (keys 1 and 3).
fn cosigned_final(vp: &crate::ChannelParams, balances: [u128; 2]) -> SignedState {
    let state = ChannelState {
        version: 10,
        is_final: true,
        ..ChannelState::opening(vp.id(), [Amount(balances[0]), Amount(balances[1])])
    };
    let sigs = [
        sign_state(vp, &keys(1), &state).unwrap(),
        sign_state(vp, &keys(3), &state).unwrap(),
    ];
    SignedState { state, sigs }
}

/// The two parties sign two contradictory final states and each hands the hub the one that
/// robs it on the other's leg: the hub releases no leg at all (each keeps its guarantee, which
/// the adjudicator settles by one recorded outcome).
#[test]
fn contradictory_final_states_release_no_leg() {
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    let vp = net.nodes[0].channel(v).unwrap().snapshot().params().clone();
    let final_state = |balances: [u128; 2]| cosigned_final(&vp, balances);
    // All to the payer (its leg gives it everything back); all to the payee (the hub's leg
    // pays it everything).
    let to_payer = final_state([50_000, 0]);
    let to_payee = final_state([0, 50_000]);
    for (n, fin) in [(0usize, to_payer), (2, to_payee)] {
        // Each party's own step on "its" co-signed final state: hand it over, propose the
        // release of its leg by it.
        net.hand_final(n, v, fin);
    }
    net.run();
    // The hub refused the second final state and the release by it; it holds the first
    // party's release and countersigns neither.
    assert!(net.events[1].iter().any(|e| matches!(
        e,
        NodeEvent::Refused {
            code: ErrorCode::Protocol,
            ..
        }
    )));
    for (n, id) in [(0, net.up), (1, net.up), (1, net.down), (2, net.down)] {
        assert_eq!(net.guarantees(n, id), 1, "node {n} channel {id}");
    }
    assert!(net.nodes[1].holding(net.up));
    assert!(!net.settled(1, v));
    // The hub's money on its two legs is exactly what it was: nothing was released.
    let hub_free = net.balances(1, net.up)[1].0 + net.balances(1, net.down)[0].0;
    assert_eq!(hub_free, 150 + FUNDS - 50_000);
    // The hub's patience ends: the held release is refused, the payer's ledger is free again,
    // and still no leg is released.
    assert_eq!(
        net.nodes[1].poll_timeout(),
        Some(Expiry(NOW.0 + net.nodes[1].config().virtual_hold_secs))
    );
    net.now = Expiry(NOW.0 + net.nodes[1].config().virtual_hold_secs);
    let out = net.nodes[1].handle_timeout(net.now);
    net.carry(1, out);
    net.run();
    assert!(!net.nodes[1].holding(net.up));
    assert!(
        net.nodes[0]
            .channel(net.up)
            .unwrap()
            .snapshot()
            .pending()
            .is_none()
    );
    for (n, id) in [(0, net.up), (1, net.up), (1, net.down), (2, net.down)] {
        assert_eq!(net.guarantees(n, id), 1, "node {n} channel {id}");
    }
    let before = net.balances(0, net.up);
    let out = net.nodes[0].transfer(net.now, net.up, Amount(7)).unwrap();
    net.carry(0, out);
    net.run();
    assert_eq!(net.balances(1, net.up)[1].0, before[1].0 + 7);
    for n in 0..3 {
        assert_eq!(net.disks[n], net.nodes[n].records(), "node {n}");
    }
}

/// The hub's collateral is frozen while the virtual channel's registered state holds a lock
/// that is neither revealed nor expired (unless the guarantee's signed `locks_until` bounds
/// it): no lock expiring after the channel's end is proposed by its party, passed on by the
/// hub, or taken by the other party, and nothing changes anywhere.
#[test]
fn the_hub_relays_no_lock_that_outlives_the_virtual_channel() {
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    let end = net.nodes[1].virtuals().next().unwrap().1.terms.expires_at;
    let before = net.nodes[2].channel(v).unwrap().latest().clone();
    let hashlock = Preimage([5; 32]).hashlock();
    // The payer's own machine does not propose it (the channel's limits end with it).
    let out = net.nodes[0]
        .command(net.now, v, |c| {
            c.offer_htlc(Amount(1_000), hashlock, Expiry(end.0 + 1));
        })
        .unwrap();
    net.carry(0, out);
    net.run();
    assert_eq!(net.nodes[0].channel(v).unwrap().latest(), &before);
    assert_eq!(net.nodes[2].channel(v).unwrap().latest(), &before);
    // A payer that signs one anyway (a machine without the bound): the hub refuses to pass it
    // on, and the payee refuses it when it comes straight from the payer.
    let forged = {
        let mut c = Channel::from_cosigned(
            net.nodes[0].channel(v).unwrap().snapshot().params().clone(),
            keys(1),
            Limits::default(),
            before.clone(),
        )
        .unwrap();
        c.offer_htlc(Amount(1_000), hashlock, Expiry(end.0 + 1));
        let sent = c
            .propose(net.now)
            .unwrap()
            .into_iter()
            .find_map(|e| match e {
                Effect::Send(m @ Message::Propose { .. }) => Some(m),
                _ => None,
            });
        sent.unwrap()
    };
    let (payer, hub, payee) = (net.addr(0), net.addr(1), net.addr(2));
    let seq = net.nodes[0].links[&hub].outbox.next_send();
    let out = net.nodes[1].handle_frame(
        net.now,
        payer,
        Frame::Msg {
            seq,
            body: Body::Relay {
                to: payee,
                msg: forged.clone(),
            },
        },
    );
    assert_eq!(refusal_codes(&out), vec![ErrorCode::Protocol]);
    assert!(!out.transmits.iter().any(|(to, _)| *to == payee));
    net.nodes[2].set_reachable(payer, true);
    let seq = net.nodes[0]
        .links
        .get(&payee)
        .map_or(1, |l| l.outbox.next_send());
    let out = net.nodes[2].handle_frame(
        net.now,
        payer,
        Frame::Msg {
            seq,
            body: Body::Channel(forged),
        },
    );
    assert!(
        out.transmits.iter().any(|(to, f)| *to == payer
            && matches!(
                f,
                Frame::Msg {
                    body: Body::Channel(Message::Reject {
                        reason: crate::RejectReason::InvalidOp {
                            error: crate::OpError::ExpiryTooFar,
                            ..
                        },
                        ..
                    }),
                    ..
                }
            )),
        "the payee must not countersign a lock outliving the channel"
    );
    assert_eq!(net.nodes[2].channel(v).unwrap().latest(), &before);
    // A lock that ends with the channel passes.
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    let end = net.nodes[1].virtuals().next().unwrap().1.terms.expires_at;
    let out = net.nodes[0]
        .command(net.now, v, |c| {
            c.offer_htlc(Amount(1_000), hashlock, end);
        })
        .unwrap();
    net.carry(0, out);
    net.run();
    // Committed at the payee (which then fails it back: it expects no such payment).
    assert!(
        net.events[2].iter().any(
            |e| matches!(e, NodeEvent::Committed { channel_id, version: 1 } if *channel_id == v)
        )
    );
}

/// More frames a peer has no right to send, each refused with nothing recorded: an open that
/// names the payee's ledger or the payer as B, an acceptance relayed by someone who is not the
/// hub, and a final state the parties never signed.
#[test]
fn virtual_open_accept_and_close_frames_from_the_wrong_peer_are_refused() {
    let mut net = Net::new(virtual_config());
    let (payer, hub, payee) = (net.addr(0), net.addr(1), net.addr(2));
    let v = crate::ChannelParams {
        participants: [payer, payee],
        nonce: U256::from(9),
        ..params(&keys(1), &keys(3), 0)
    };
    let terms = crate::vchan::VirtualTerms {
        params: v.clone(),
        opening: [Amount(10), Amount::ZERO],
        expires_at: Expiry(NOW.0 + 100),
    };
    let sig = sign_state(&v, &keys(1), &terms.opening_state()).unwrap();
    // The payer asks the hub to lock the payee's ledger, then to open as someone else's A.
    let swapped = crate::vchan::VirtualTerms {
        params: crate::ChannelParams {
            participants: [payee, payer],
            ..v.clone()
        },
        ..terms.clone()
    };
    for (seq, ledger, t) in [(1, net.down, terms.clone()), (2, net.up, swapped)] {
        let out = net.nodes[1].handle_frame(
            NOW,
            payer,
            Frame::Msg {
                seq,
                body: Body::VirtualOpen {
                    ledger,
                    terms: Box::new(t),
                    sig,
                    onward: Vec::new(),
                },
            },
        );
        assert_eq!(refusal_codes(&out), vec![ErrorCode::Protocol]);
    }
    assert!(net.nodes[1].book().virtuals.is_empty());
    // An acceptance for a channel the payer never opened over the sender.
    let out = net.nodes[0].handle_frame(
        NOW,
        hub,
        Frame::Msg {
            seq: 1,
            body: Body::VirtualAccepted {
                channel_id: v.id(),
                sig,
            },
        },
    );
    assert_eq!(refusal_codes(&out), vec![ErrorCode::Protocol]);
    assert!(net.nodes[0].channel(v.id()).is_none());
    // A final state of an open channel signed by one party only (a fresh network: the frames
    // above were injected past the links' numbering).
    let mut net = Net::new(virtual_config());
    let (vid, _) = net.open_virtual(50_000);
    let vp = net.nodes[0]
        .channel(vid)
        .unwrap()
        .snapshot()
        .params()
        .clone();
    let state = ChannelState {
        version: 5,
        is_final: true,
        ..ChannelState::opening(vid, [Amount::ZERO, Amount(50_000)])
    };
    let one = sign_state(&vp, &keys(3), &state).unwrap();
    let seq = net.nodes[2].links[&hub].outbox.next_send();
    let out = net.nodes[1].handle_frame(
        NOW,
        payee,
        Frame::Msg {
            seq,
            body: Body::VirtualClose {
                final_state: Box::new(SignedState {
                    state,
                    sigs: [one, one],
                }),
            },
        },
    );
    assert_eq!(refusal_codes(&out), vec![ErrorCode::Protocol]);
    assert!(net.nodes[1].book().virtuals[&vid].outcome.is_none());
}

/// A virtual channel's parties close it before its end, unasked: at `end - margin` both queue
/// the close at once (their final-state proposals cross, one wins), the final state is
/// co-signed, both legs are released by it, and nothing more is due.
#[test]
fn the_parties_close_a_virtual_channel_before_its_end() {
    let mut net = Net::new(virtual_config());
    let down_before = net.balances(2, net.down);
    let (v, _) = net.open_virtual(50_000);
    let out = net.nodes[0].transfer(net.now, v, Amount(700)).unwrap();
    net.carry(0, out);
    net.run();
    let end = net.nodes[1].virtuals().next().unwrap().1.terms.expires_at;
    let margin = net.nodes[0].config().virtual_end_margin_secs;
    let due = Expiry(end.0 - margin);
    for n in [0, 2] {
        assert_eq!(net.nodes[n].poll_timeout(), Some(due), "party {n}");
    }
    // Nothing happens before.
    let out = net.nodes[0].handle_timeout(Expiry(due.0 - 1));
    assert!(out.transmits.is_empty());
    net.now = due;
    for n in [0, 2] {
        let out = net.nodes[n].handle_timeout(net.now);
        net.carry(n, out);
    }
    net.run();
    for n in 0..3 {
        assert!(net.settled(n, v), "node {n} sees both legs released");
    }
    for (n, id) in [(0, net.up), (1, net.up), (1, net.down), (2, net.down)] {
        assert_eq!(net.guarantees(n, id), 0, "node {n} channel {id}");
    }
    // The payee's ledger carries the 700 it was paid inside, from the hub's side (which got
    // the rest of its 50,000 back).
    let down = net.balances(2, net.down);
    assert_eq!(
        (down[0].0, down[1].0),
        (down_before[0].0 - 700, down_before[1].0 + 700)
    );
    // Nothing is due any more at V's end for anyone (no timer spinning on it).
    for n in 0..3 {
        assert!(
            net.nodes[n].poll_timeout().is_none_or(|t| t > end),
            "node {n}: {:?}",
            net.nodes[n].poll_timeout()
        );
    }
    // The opener refuses a lifetime within its own closing margin.
    let hub = net.addr(1);
    let payee = net.addr(2);
    assert!(matches!(
        net.nodes[0].open_virtual(net.now, hub, payee, Amount(10), U256::from(7), margin),
        Err(CommandError::LifetimeTooShort { .. })
    ));
}

/// Parties that leave a virtual channel open past its end cannot keep the hub's collateral:
/// at `end + margin` the hub closes on chain each of its ledgers that locks the guarantee
/// (once: a ledger on its way to chain is not closed again, and no timer spins), and says so.
#[test]
fn the_hub_takes_a_virtual_channel_left_open_past_its_end_on_chain() {
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    let end = net.nodes[1].virtuals().next().unwrap().1.terms.expires_at;
    let margin = net.nodes[1].config().virtual_end_margin_secs;
    let due = Expiry(end.0 + margin);
    assert_eq!(net.nodes[1].poll_timeout(), Some(due));
    assert!(
        net.nodes[1]
            .handle_timeout(Expiry(due.0 - 1))
            .writes
            .iter()
            .all(|w| !matches!(
                w,
                Write::Intent(i) if matches!(**i, Intent::Close { .. })
            ))
    );
    let out = net.nodes[1].handle_timeout(due);
    let closed: Vec<ChannelId> = out
        .writes
        .iter()
        .filter_map(|w| match w {
            Write::Intent(i) => match &**i {
                Intent::Close { params, state } => {
                    assert_eq!(state.state.guarantees.len(), 1);
                    Some(params.id())
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec![net.up, net.down]);
    let expired: Vec<ChannelId> = out
        .events
        .iter()
        .filter_map(|e| match e {
            NodeEvent::VirtualExpired { channel_id, ledger } if *channel_id == v => Some(*ledger),
            _ => None,
        })
        .collect();
    assert_eq!(expired, vec![net.up, net.down]);
    net.carry(1, out);
    // Once only, and nothing left due.
    let again = net.nodes[1].handle_timeout(Expiry(due.0 + 5));
    assert!(!again.writes.iter().any(|w| matches!(w, Write::Intent(_))));
    assert!(net.nodes[1].poll_timeout().is_none_or(|t| t > due));
}

impl Net {
    /// The payer forwards over its virtual channel for the hub: the hub gets money on its side
    /// of their ledger and hears the payer's policy.
    fn forwarder_ready(&mut self) {
        let hub = self.addr(1);
        let out = self.nodes[0]
            .transfer(self.now, self.up, Amount(20_000))
            .unwrap();
        self.carry(0, out);
        let out = self.nodes[0].announce_policy(self.now, hub);
        self.carry(0, out);
        self.run();
    }

    /// The payee's invoice of `amount` through the payer (its virtual channel's other party),
    /// its lock expiring `final_delta` seconds out; the payee knows its preimage.
    fn invoice_through_payer(&mut self, amount: u128, secret: u8, final_delta: u64) -> Invoice {
        let preimage = Preimage([secret; 32]);
        let inv = Invoice {
            payee: self.addr(2),
            payee_key: self.nodes[2].public_key(),
            hub: self.addr(0),
            amount: Amount(amount),
            hashlock: preimage.hashlock(),
            expires_at: NOW.0 + 3600,
            final_expiry_delta: final_delta,
        };
        let out = self.nodes[2].add_invoice(inv.clone(), preimage).unwrap();
        self.carry(2, out);
        inv
    }
}

/// A route over a ledger edge and then a virtual edge (issue 15): the hub pays the payee's
/// invoice through the payer, which forwards over its virtual channel with the payee. The
/// route instruction and the virtual channel's messages go over the hub (the parties have no
/// session of their own); each fee is exact and every node restores from its writes.
#[test]
fn a_payment_routed_over_a_ledger_edge_then_a_virtual_edge_pays_exact_fees() {
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    let (a, b) = (net.addr(0), net.addr(2));
    // The hub needs money on its side of the ledger with the forwarder, and its policy.
    net.forwarder_ready();
    let up0 = net.balances(1, net.up);
    let v0 = net.nodes[2].channel(v).unwrap().latest().state.balances;
    // The payee's invoice names the forwarder (its virtual channel's other party) as its hub;
    // its lock must expire within the virtual channel's life (an hour here).
    let amount = 3_000u128;
    let inv = net.invoice_through_payer(amount, 0x77, 1800);
    let id = B256::repeat_byte(0x5A);
    let out = net.nodes[1].pay_route(net.now, id, &inv, &[a]).unwrap();
    net.carry(1, out);
    net.run();
    let fee = policy().base_fee.0 + amount * u128::from(policy().fee_ppm) / 1_000_000;
    assert!(
        net.events[1].contains(&NodeEvent::PaymentSucceeded {
            id,
            fee: Amount(fee)
        }),
        "{:?}",
        net.events[1]
    );
    // The ledger carried amount + fee from the hub to the forwarder (ledger side A is the
    // forwarder's), the virtual channel the amount from the forwarder to the payee.
    let up = net.balances(1, net.up);
    assert_eq!(
        (up[0].0, up[1].0),
        (up0[0].0 + amount + fee, up0[1].0 - amount - fee)
    );
    let vb = net.nodes[2].channel(v).unwrap().latest().state.balances;
    assert_eq!((vb[0].0, vb[1].0), (v0[0].0 - amount, v0[1].0 + amount));
    assert_eq!(net.nodes[0].fees_earned(), (Amount(fee), 1));
    assert!(net.nodes[2].book().invoices[&inv.hashlock].paid);
    // Nothing went straight between the parties: they have no link with each other.
    assert!(!net.nodes[0].links.contains_key(&b) && !net.nodes[2].links.contains_key(&a));
    for n in 0..3 {
        assert!(net.nodes[n].book().routes.is_empty(), "node {n}");
        assert_eq!(net.disks[n], net.nodes[n].records(), "node {n}");
    }
}

/// Every peer is an attacker: route instructions relayed over a hub for a channel that is not
/// a virtual channel between the two, or relayed by someone who is not its hub, are refused.
#[test]
fn relayed_route_instructions_outside_a_served_virtual_channel_are_refused() {
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    let (a, hub, b) = (net.addr(0), net.addr(1), net.addr(2));
    let route = |channel_id| Body::Route {
        channel_id,
        hashlock: Hashlock(B256::repeat_byte(3)),
        htlc: crate::HtlcId(0),
        onion: Box::new(crate::onion::Packet::Plain(vec![])),
    };
    // To the hub: relay over a ledger channel, or to someone outside the virtual channel.
    for (to, channel) in [(b, net.up), (Address::repeat_byte(0x99), v)] {
        let seq = net.nodes[0].links[&hub].outbox.next_send();
        let out = net.nodes[1].handle_frame(
            net.now,
            a,
            Frame::Msg {
                seq,
                body: Body::RelayRoute {
                    to,
                    body: Box::new(route(channel)),
                },
            },
        );
        assert_eq!(refusal_codes(&out), vec![ErrorCode::UnknownChannel]);
        assert!(!out.transmits.iter().any(|(t, _)| *t == to));
        net.nodes[0]
            .links
            .get_mut(&hub)
            .unwrap()
            .outbox
            .sent(seq + 1);
    }
    // Anything but a route instruction or a failure packet.
    let seq = net.nodes[0].links[&hub].outbox.next_send();
    let out = net.nodes[1].handle_frame(
        net.now,
        a,
        Frame::Msg {
            seq,
            body: Body::RelayRoute {
                to: b,
                body: Box::new(Body::Funded { channel_id: v }),
            },
        },
    );
    assert_eq!(refusal_codes(&out), vec![ErrorCode::Protocol]);
    net.nodes[0]
        .links
        .get_mut(&hub)
        .unwrap()
        .outbox
        .sent(seq + 1);
    // A party's policy to someone outside the virtual channel.
    let signed = |fee: u128, at: u64| {
        let mut pol = policy();
        pol.base_fee = Amount(fee);
        Box::new(crate::node::gossip::PolicyUpdate::sign(
            v,
            pol,
            at,
            &keys(1),
        ))
    };
    let seq = net.nodes[0].links[&hub].outbox.next_send();
    let out = net.nodes[1].handle_frame(
        net.now,
        a,
        Frame::Msg {
            seq,
            body: Body::RelayRoute {
                to: Address::repeat_byte(0x99),
                body: Box::new(Body::PartyPolicy {
                    update: signed(10, 5),
                    key: keys(1).public_key(),
                }),
            },
        },
    );
    assert_eq!(refusal_codes(&out), vec![ErrorCode::UnknownChannel]);
    net.nodes[0]
        .links
        .get_mut(&hub)
        .unwrap()
        .outbox
        .sent(seq + 1);
    // The hub changes the party's policy on its way (a fee of its choosing): the signature no
    // longer holds and the payee refuses it, back to the hub; a genuine one is taken, and an
    // older genuine one replayed after it is refused.
    let mut forged = signed(10, 5);
    forged.policy.base_fee = Amount(999_999);
    let genuine_new = signed(20, 6);
    let genuine_old = signed(10, 5);
    let expect = [
        (forged, Some(ErrorCode::Protocol)),
        (genuine_new, None),
        (genuine_old, Some(ErrorCode::Protocol)),
    ];
    for (update, refused) in expect {
        let seq = net.nodes[1].links[&b].outbox.next_send();
        let out = net.nodes[2].handle_frame(
            net.now,
            hub,
            Frame::Msg {
                seq,
                body: Body::RelayedRoute {
                    from: a,
                    body: Box::new(Body::PartyPolicy {
                        update,
                        key: keys(1).public_key(),
                    }),
                },
            },
        );
        assert_eq!(refusal_codes(&out), refused.into_iter().collect::<Vec<_>>());
        // Refusals go back to the hub that relayed it, not to the party it names.
        assert!(
            out.transmits.iter().all(|(to, _)| *to == hub),
            "{:?}",
            out.transmits
        );
        net.nodes[1].links.get_mut(&b).unwrap().outbox.sent(seq + 1);
        net.carry(2, out);
    }
    assert_eq!(net.nodes[2].book().policies[&a].base_fee, Amount(20));
    // After a restart the older one is still refused (the newest date is on disk).
    let config = net.nodes[2].config().clone();
    net.nodes[2] = Node::restore(keys(3), config, net.disks[2].clone()).unwrap();
    let seq = net.nodes[1].links[&b].outbox.next_send();
    let out = net.nodes[2].handle_frame(
        net.now,
        hub,
        Frame::Msg {
            seq,
            body: Body::RelayedRoute {
                from: a,
                body: Box::new(Body::PartyPolicy {
                    update: signed(10, 5),
                    key: keys(1).public_key(),
                }),
            },
        },
    );
    assert_eq!(refusal_codes(&out), vec![ErrorCode::Protocol]);
    net.nodes[1].links.get_mut(&b).unwrap().outbox.sent(seq + 1);
    net.carry(2, out);
    assert_eq!(net.nodes[2].book().policies[&a].base_fee, Amount(20));
    // A party's policy sent straight, not over the hub, is refused.
    let out = net.nodes[2].handle_frame(
        net.now,
        a,
        Frame::Msg {
            seq: 1,
            body: Body::PartyPolicy {
                update: signed(30, 7),
                key: keys(1).public_key(),
            },
        },
    );
    assert_eq!(refusal_codes(&out), vec![ErrorCode::Protocol]);
    assert_eq!(net.nodes[2].book().policies[&a].base_fee, Amount(20));
    // To the payee: "relayed" by someone who is not the channel's hub (the payer itself).
    let out = net.nodes[2].handle_frame(
        net.now,
        a,
        Frame::Msg {
            seq: 2,
            body: Body::RelayedRoute {
                from: a,
                body: Box::new(route(v)),
            },
        },
    );
    assert_eq!(refusal_codes(&out), vec![ErrorCode::UnknownChannel]);
    assert!(net.nodes[2].book().routes.is_empty());
}

/// The hub's leg concluded on chain still holding the guarantee; a party then resolved its own
/// leg by a state of the virtual channel with locks (which no event shows whole: the hub reads
/// it from the resolution's transaction). The hub resolves its leg by exactly that state, locks
/// included, once every lock can be settled: at its expiry, or at the guarantee's bound for a
/// lock expiring later; the same state reported again changes nothing.
#[test]
fn the_hub_resolves_its_leg_by_a_locked_state_a_party_resolved_with() {
    let lock = |id: u64, expiry: u64| crate::Lock {
        id: crate::HtlcId(id),
        amount: Amount(1_000),
        hashlock: Hashlock(B256::repeat_byte(id as u8 + 1)),
        expiry: Expiry(expiry),
        sender: crate::Side::A,
    };
    // A lock expiring within the channel's life settles at its expiry; one expiring after
    // the channel's end at the guarantee's bound (the end).
    for far in [false, true] {
        let mut net = Net::new(virtual_config());
        let (v, _) = net.open_virtual(50_000);
        let end = net.nodes[1].virtuals().next().unwrap().1.terms.expires_at;
        let latest = net.nodes[1].channel(net.up).unwrap().latest().state.clone();
        let out = net.nodes[1].handle_chain(
            NOW,
            ChainEvent::Concluded {
                channel_id: net.up,
                version: latest.version,
                to_a: latest.balances[0],
                to_b: latest.balances[1],
            },
        );
        net.carry(1, out);
        let (expiry, settles) = if far {
            (end.0 + 10_000, end.0 + 1)
        } else {
            (NOW.0 + 500, NOW.0 + 501)
        };
        let state = ChannelState {
            channel_id: v,
            version: 7,
            balances: [Amount(40_000), Amount(9_000)],
            locks: vec![lock(0, expiry)],
            guarantees: Vec::new(),
            is_final: false,
        };
        let out = net.nodes[1].handle_chain(
            NOW,
            ChainEvent::Registered {
                channel_id: v,
                state: Box::new(state.clone()),
                finalizes_at: 0,
            },
        );
        let resolutions: Vec<_> = out
            .intents()
            .filter_map(|i| match i {
                Intent::ResolveGuarantee(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(resolutions.len(), 1, "{:?}", out.writes);
        let r = &resolutions[0];
        assert_eq!(r.ledger.id(), net.up);
        assert_eq!(r.virt_state, state, "the very state, its locks included");
        assert_eq!(r.sigs, None);
        assert_eq!(r.not_before, settles);
        net.carry(1, out);
        let again = net.nodes[1].handle_chain(
            NOW,
            ChainEvent::Registered {
                channel_id: v,
                state: Box::new(state),
                finalizes_at: 0,
            },
        );
        assert!(again.writes.is_empty(), "{:?}", again.writes);
        // A dispute registered later (the hub's own, from its guarantee, landing after the
        // party's resolution) does not replace the recorded outcome.
        let before = net.nodes[1].virtuals().next().unwrap().1.registered.clone();
        let out = net.nodes[1].handle_chain(
            NOW,
            ChainEvent::Registered {
                channel_id: v,
                state: Box::new(ChannelState::opening(v, [Amount(50_000), Amount::ZERO])),
                finalizes_at: NOW.0 + 100,
            },
        );
        assert!(out.intents().next().is_none());
        assert_eq!(net.nodes[1].virtuals().next().unwrap().1.registered, before);
    }
}

/// The hub holds a final state handed to it, but the chain recorded another one (the parties
/// resolved a ledger by a contradictory co-signed final state first): only the recorded one can
/// resolve the hub's other legs, so the hub resolves them by it (review finding: it kept using
/// the handed one, whose resolutions would revert forever).
#[test]
fn the_chains_recorded_outcome_replaces_a_final_state_handed_to_the_hub() {
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    let vp = net.nodes[0].channel(v).unwrap().snapshot().params().clone();
    let final_state = |balances: [u128; 2]| cosigned_final(&vp, balances);
    let handed = final_state([50_000, 0]);
    let recorded = final_state([0, 50_000]);
    net.hand_final(0, v, handed.clone());
    net.run();
    let resolutions = |out: &Output| -> Vec<ChannelState> {
        out.intents()
            .filter_map(|i| match i {
                Intent::ResolveGuarantee(r) => Some(r.virt_state.clone()),
                _ => None,
            })
            .collect()
    };
    // The hub's leg toward the payee concludes on chain: resolved by the handed state.
    let latest = net.nodes[1]
        .channel(net.down)
        .unwrap()
        .latest()
        .state
        .clone();
    let out = net.nodes[1].handle_chain(
        NOW,
        ChainEvent::Concluded {
            channel_id: net.down,
            version: latest.version,
            to_a: latest.balances[0],
            to_b: latest.balances[1],
        },
    );
    assert_eq!(resolutions(&out), vec![handed.state.clone()]);
    net.carry(1, out);
    // The chain recorded the other one: the leg is resolved by it instead.
    let out = net.nodes[1].handle_chain(
        NOW,
        ChainEvent::Registered {
            channel_id: v,
            state: Box::new(recorded.state.clone()),
            finalizes_at: 0,
        },
    );
    assert_eq!(resolutions(&out), vec![recorded.state.clone()]);
    net.carry(1, out);
    // And a leg concluding later is resolved by the recorded one too.
    let latest = net.nodes[1].channel(net.up).unwrap().latest().state.clone();
    let out = net.nodes[1].handle_chain(
        NOW,
        ChainEvent::Concluded {
            channel_id: net.up,
            version: latest.version,
            to_a: latest.balances[0],
            to_b: latest.balances[1],
        },
    );
    assert_eq!(resolutions(&out), vec![recorded.state]);
}

/// A party registers an old state of the virtual channel while the other is away: the hub,
/// holding the final state both handed it, challenges with it (once the dispute's version is
/// older; not for a dispute at the final state itself).
#[test]
fn the_hub_challenges_a_stale_virtual_dispute_with_the_final_state_it_holds() {
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    let vp = net.nodes[0].channel(v).unwrap().snapshot().params().clone();
    let fin = cosigned_final(&vp, [30_000, 20_000]);
    net.hand_final(0, v, fin.clone());
    net.run();
    let challenges = |out: &Output| -> Vec<SignedState> {
        out.intents()
            .filter_map(|i| match i {
                Intent::Challenge { params, state } if params.id() == v => Some(state.clone()),
                _ => None,
            })
            .collect()
    };
    let disputed = |version| ChainEvent::Disputed {
        channel_id: v,
        version,
        finalizes_at: NOW.0 + 100,
        guaranteed: Vec::new(),
    };
    let out = net.nodes[1].handle_chain(NOW, disputed(0));
    assert_eq!(challenges(&out), vec![fin.clone()]);
    net.carry(1, out);
    let out = net.nodes[1].handle_chain(NOW, disputed(10));
    assert!(challenges(&out).is_empty());
}

/// A party does not try to close a virtual channel that still holds a lock (its close would be
/// dropped at once and come due again, a timer spinning): it waits for the lock to end; the
/// hub's own deadline (end + margin) stays. Review finding.
#[test]
fn a_party_waits_for_the_virtual_channels_locks_before_closing_it() {
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    let a = net.addr(0);
    // The payee holds the HTLC it is paid with (never reveals): a lock stays in the channel,
    // expiring after the party's closing time (end - margin) and before the end.
    net.nodes[2].config.reveal_preimages = false;
    net.forwarder_ready();
    let inv = net.invoice_through_payer(1_000, 0x78, 3300);
    let out = net.nodes[1]
        .pay_route(net.now, B256::repeat_byte(0x5B), &inv, &[a])
        .unwrap();
    net.carry(1, out);
    net.run();
    assert_eq!(
        net.nodes[0].channel(v).unwrap().latest().state.locks.len(),
        1
    );
    let end = net.nodes[1].virtuals().next().unwrap().1.terms.expires_at;
    let margin = net.nodes[0].config().virtual_end_margin_secs;
    // Not due for the party while the lock is in (its own HTLC timers aside).
    let out = net.nodes[0].handle_timeout(Expiry(end.0 - margin));
    assert!(
        !out.events
            .iter()
            .any(|e| matches!(e, NodeEvent::OpDropped { .. })),
        "{:?}",
        out.events
    );
    assert!(
        net.nodes[0]
            .channel(v)
            .unwrap()
            .snapshot()
            .queue()
            .is_empty()
    );
    assert!(
        net.nodes[0]
            .poll_timeout()
            .is_none_or(|t| t != Expiry(end.0 - margin))
    );
}

/// Forwarding into a virtual channel a lock that would outlive it fails back as `ExpiryTooFar`
/// (the payer learns why, and can ask for a shorter final delta), with nothing moved inside.
#[test]
fn a_forward_into_a_virtual_channel_past_its_end_fails_as_expiry_too_far() {
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    let a = net.addr(0);
    net.forwarder_ready();
    let v0 = net.nodes[2].channel(v).unwrap().latest().state.clone();
    let inv = net.invoice_through_payer(3_000, 0x79, 7200);
    let id = B256::repeat_byte(0x5C);
    let out = net.nodes[1].pay_route(net.now, id, &inv, &[a]).unwrap();
    net.carry(1, out);
    net.run();
    assert_eq!(
        net.nodes[1].payment(id).unwrap().status,
        PaymentStatus::Failed {
            reason: FailureReason::ExpiryTooFar
        }
    );
    assert_eq!(
        net.nodes[2].channel(v).unwrap().latest().state.balances,
        v0.balances
    );
    assert!(
        net.nodes[2]
            .channel(v)
            .unwrap()
            .latest()
            .state
            .locks
            .is_empty()
    );
}

/// The acceptor refuses a virtual channel living no longer than its own closing margin (it
/// would close it at once, and the opener would have paid for nothing): nothing locks on its
/// ledger and it holds no such channel.
#[test]
fn the_acceptor_refuses_a_virtual_channel_within_its_closing_margin() {
    let mut net = Net::new(virtual_config());
    // The opener's own margin is short, the payee's the default 600 s.
    net.nodes[0].config.virtual_end_margin_secs = 10;
    let (hub, payee) = (net.addr(1), net.addr(2));
    let out = net.nodes[0].set_virtual_policy(hub, virtual_policy());
    net.carry(0, out);
    let out = net.nodes[0]
        .open_virtual(net.now, hub, payee, Amount(10_000), U256::from(1), 300)
        .unwrap();
    net.carry(0, out);
    net.run();
    assert!(net.opened(2).is_none() && net.opened(0).is_none());
    assert_eq!(net.guarantees(2, net.down), 0);
    assert!(net.nodes[2].virtuals().next().is_none());
}

/// As [`cosigned`], with a challenge window of `window` seconds.
fn cosigned_window(a: u8, b: u8, nonce: u64, window: u64) -> (Channel, Channel) {
    let (ka, kb) = (keys(a), keys(b));
    let p = crate::ChannelParams {
        challenge_duration: window,
        ..params(&ka, &kb, nonce)
    };
    let state = ChannelState::opening(p.id(), [Amount(FUNDS), Amount::ZERO]);
    let sigs = [
        sign_state(&p, &ka, &state).unwrap(),
        sign_state(&p, &kb, &state).unwrap(),
    ];
    let s = SignedState { state, sigs };
    (
        Channel::from_cosigned(p.clone(), ka, Limits::default(), s.clone()).unwrap(),
        Channel::from_cosigned(p, kb, Limits::default(), s).unwrap(),
    )
}

/// The hubs' ledger of [`Net::chain`] (hub 1, key 2, is A; hub 2 key 4): the shortest window
/// a node accepts.
fn cosigned_mid() -> (Channel, Channel) {
    cosigned_window(2, 4, 3, crate::forward::MIN_CHALLENGE_DURATION_SECS)
}

/// The payer's ledger of [`Net::chain`] (payer key 1, hub 1 key 2): a window longer than the
/// hubs' ledger's by `CHAIN_REACTION_SECS`, as a hub that is not the last of a chain requires.
fn cosigned_up() -> (Channel, Channel) {
    let window = crate::forward::MIN_CHALLENGE_DURATION_SECS + crate::vchan::CHAIN_REACTION_SECS;
    cosigned_window(1, 2, 1, window)
}

impl Net {
    /// A chain of two hubs: the payer (key 1) — hub 1 (key 2) — hub 2 (key 4) — the payee
    /// (key 3). Nodes 0 payer, 1 hub 1, 2 payee, 3 hub 2 (the parties keep their places);
    /// `up` payer–hub 1, `down` hub 2–payee; returns the hubs' ledger, hub 1's A.
    fn chain(config: Config) -> (Net, ChannelId) {
        let mut nodes: Vec<Node> = [1u8, 2, 3, 4]
            .iter()
            .map(|b| Node::new(keys(*b), config.clone()))
            .collect();
        // Hub 1's next hop is a hub: a position its operator must choose to serve.
        let toward_hubs = Config {
            virtual_policy: config.virtual_policy.map(|v| crate::vchan::VirtualPolicy {
                toward_hubs: true,
                ..v
            }),
            ..config.clone()
        };
        nodes[1] = Node::new(keys(2), toward_hubs);
        let (p_up, h_up) = cosigned_up();
        let (h1_mid, h2_mid) = cosigned_mid();
        let (h_down, q_down) = cosigned(4, 3, 2);
        let (up, mid, down) = (p_up.id(), h1_mid.id(), h_down.id());
        let a = |b: u8| keys(b).address();
        nodes[0].add_channel(a(2), p_up).unwrap();
        nodes[1].add_channel(a(1), h_up).unwrap();
        nodes[1].add_channel(a(4), h1_mid).unwrap();
        nodes[3].add_channel(a(2), h2_mid).unwrap();
        nodes[3].add_channel(a(3), h_down).unwrap();
        nodes[2].add_channel(a(4), q_down).unwrap();
        let disks = nodes.iter().map(Node::records).collect();
        let net = Net {
            nodes,
            disks,
            wire: Vec::new(),
            events: vec![Vec::new(); 4],
            up,
            down,
            now: NOW,
        };
        (net, mid)
    }

    /// Every (node, ledger) of [`Net::chain`], each ledger seen from both its ends.
    fn chain_legs(&self, mid: ChannelId) -> [(usize, ChannelId); 6] {
        [
            (0, self.up),
            (1, self.up),
            (1, mid),
            (3, mid),
            (3, self.down),
            (2, self.down),
        ]
    }

    /// The payer opens a virtual channel with the payee over both hubs, depositing `deposit`;
    /// returns its id and the round each node saw it open.
    fn open_virtual_chain(&mut self, deposit: u128) -> (ChannelId, [usize; 4]) {
        let (h1, h2, payee) = (self.addr(1), self.addr(3), self.addr(2));
        for h in [h1, h2] {
            let out = self.nodes[0].set_virtual_policy(h, virtual_policy());
            self.carry(0, out);
        }
        let out = self.nodes[0]
            .open_virtual_over(
                self.now,
                &[h1, h2],
                payee,
                Amount(deposit),
                U256::from(1),
                3600,
            )
            .unwrap();
        self.carry(0, out);
        let seen = self.open_rounds(12);
        (self.opened(2).expect("the payee saw it open"), seen)
    }
}

/// Over a chain of two hubs: every ledger locks the guarantee, the payer pays both hubs'
/// fees (hub 1 passes hub 2's on), payments go both ways over both hubs, and the close
/// releases every leg with the releases travelling toward the payee: at no round does a hub
/// have one leg released while the other still locks the guarantee without a release it can
/// complete. Each hub ends with exactly what it put in plus its fee.
#[test]
fn a_virtual_channel_over_two_hubs_opens_pays_and_releases_every_leg_toward_the_payee() {
    let (mut net, mid) = Net::chain(virtual_config());
    let (v, seen) = net.open_virtual_chain(50_000);
    // The payee holds its funded leg after three delays (payer → hub 1 → hub 2 → payee), the
    // payer the payee's signature after six (back over both hubs).
    assert_eq!(seen[2], 3, "{seen:?}");
    assert_eq!(seen[0], 6, "{seen:?}");
    let fee = 100 + 50_000 * 1_000 / 1_000_000;
    assert_eq!(
        net.balances(1, net.up),
        [Amount(FUNDS - 50_000 - 2 * fee), Amount(2 * fee)]
    );
    assert_eq!(
        net.balances(3, mid),
        [Amount(FUNDS - 50_000 - fee), Amount(fee)]
    );
    assert_eq!(
        net.balances(2, net.down),
        [Amount(FUNDS - 50_000), Amount::ZERO]
    );
    for (n, id) in net.chain_legs(mid) {
        assert_eq!(net.guarantees(n, id), 1, "node {n} channel {id}");
    }
    // Payments both ways, relayed by both hubs.
    let out = net.nodes[0].transfer(net.now, v, Amount(20_000)).unwrap();
    net.carry(0, out);
    net.run();
    let out = net.nodes[2].transfer(net.now, v, Amount(5_000)).unwrap();
    net.carry(2, out);
    net.run();
    for n in [0, 2] {
        assert_eq!(
            net.balances(n, v),
            [Amount(35_000), Amount(15_000)],
            "node {n}"
        );
    }
    assert!(net.nodes[1].channel(v).is_none() && net.nodes[3].channel(v).is_none());

    // The close, one message delay at a time.
    let out = net.nodes[2].close(net.now, v).unwrap();
    net.carry(2, out);
    for _ in 0..20 {
        net.round();
        // Hub 2 (the last) completes both its legs in one step, or neither.
        assert_eq!(net.guarantees(3, mid), net.guarantees(3, net.down));
        // Hub 1 has its leg toward hub 2 released only while it holds (or completed) the
        // payer's release of its other leg.
        if net.guarantees(1, mid) == 0 {
            assert!(net.guarantees(1, net.up) == 0 || net.nodes[1].holding(net.up));
        }
    }
    for n in 0..4 {
        assert!(net.settled(n, v), "node {n} settled");
    }
    let up = net.balances(1, net.up);
    let m = net.balances(3, mid);
    let down = net.balances(2, net.down);
    assert_eq!(
        up,
        [
            Amount(FUNDS - 50_000 - 2 * fee + 35_000),
            Amount(2 * fee + 15_000)
        ]
    );
    assert_eq!(
        m,
        [Amount(FUNDS - 50_000 - fee + 35_000), Amount(fee + 15_000)]
    );
    assert_eq!(down, [Amount(FUNDS - 50_000 + 35_000), Amount(15_000)]);
    assert_eq!(
        up[1].0 + m[0].0,
        FUNDS + fee,
        "hub 1: its funds plus its fee"
    );
    assert_eq!(
        m[1].0 + down[0].0,
        FUNDS + fee,
        "hub 2: its funds plus its fee"
    );
    assert_eq!(net.balances(0, net.up), up);
    assert_eq!(net.balances(1, mid), m);
    assert_eq!(net.balances(3, net.down), down);
    for n in 0..4 {
        assert_eq!(net.disks[n], net.nodes[n].records(), "node {n}");
    }
}

/// Hub 2 tries to have hub 1 release their ledger first (it hands over a co-signed final
/// state, then proposes that leg's release): hub 1 countersigns no release toward the next
/// hub, only proposes its own, so nothing is released and no money moves.
#[test]
fn the_next_hub_cannot_have_a_hub_release_its_inner_leg_first() {
    let (mut net, mid) = Net::chain(virtual_config());
    let (v, _) = net.open_virtual_chain(50_000);
    let vp = net.nodes[0].channel(v).unwrap().snapshot().params().clone();
    let fin = cosigned_final(&vp, [0, 50_000]);
    let before = net.balances(1, mid);
    let h1 = net.addr(1);
    let mut p = super::Pending::default();
    net.nodes[3].send(
        h1,
        Body::VirtualClose {
            final_state: Box::new(fin.clone()),
        },
        &mut p,
    );
    let g = net.nodes[3]
        .guarantee_on(mid, v)
        .expect("the hubs' ledger locks it");
    let [to_a, to_b] = crate::vchan::release(&g, &fin.state).unwrap();
    net.nodes[3]
        .channels
        .get_mut(&mid)
        .unwrap()
        .machine
        .remove_guarantee(v, to_a, to_b);
    p.to_propose.insert(mid);
    let out = net.nodes[3].finish(net.now, p);
    net.carry(3, out);
    net.run();
    // Hub 1 took the final state (it agrees to the payer's release by it) but refused the
    // release of the leg toward hub 2 outright: it holds nothing of it either.
    assert_eq!(net.nodes[1].book().virtuals[&v].outcome, Some(fin));
    assert!(!net.nodes[1].holding(mid));
    assert!(
        net.nodes[3]
            .channel(mid)
            .unwrap()
            .snapshot()
            .pending()
            .is_none(),
        "hub 2's proposal was refused"
    );
    for n in [1, 3] {
        assert_eq!(net.guarantees(n, mid), 1, "node {n}");
    }
    assert_eq!(net.balances(1, mid), before);
    assert!(!net.settled(1, v));
}

/// Only the payer releases (the payee is silent): hub 1 holds the payer's release and
/// proposes its own toward hub 2, which holds it waiting for the payee's. When hub 2's
/// patience ends it refuses. Hub 1 still holds the payer's release as long as its own
/// signature on the inner release could be completed (until a later state of their ledger is
/// co-signed); then it lets go too, and the payer's ledger is free. No leg anywhere is
/// released off chain: the channel settles on chain by one recorded outcome.
#[test]
fn a_hub_of_a_chain_never_lets_go_of_the_release_it_holds_while_its_own_is_out() {
    let (mut net, mid) = Net::chain(virtual_config());
    let (v, _) = net.open_virtual_chain(50_000);
    let vp = net.nodes[0].channel(v).unwrap().snapshot().params().clone();
    let fin = cosigned_final(&vp, [30_000, 20_000]);
    net.hand_final(0, v, fin);
    net.run();
    assert!(
        net.nodes[1].holding(net.up),
        "hub 1 holds the payer's release"
    );
    assert!(net.nodes[3].holding(mid), "hub 2 holds hub 1's release");
    let all_locked = |net: &Net| {
        for (n, id) in net.chain_legs(mid) {
            assert_eq!(net.guarantees(n, id), 1, "node {n} channel {id}");
        }
    };
    all_locked(&net);
    let released_at = match &net.nodes[3].book().virtuals[&v].held[0] {
        Some(Message::Propose { version, .. }) => *version,
        other => panic!("hub 2 holds {other:?}"),
    };
    // Hub 2's hold ends (in a refusal) well before hub 1's patience with hub 2.
    let deadline = Expiry(NOW.0 + net.nodes[3].config().virtual_hold_secs);
    assert_eq!(net.nodes[3].next_hold_deadline(), Some(deadline));
    let patience = Expiry(NOW.0 + net.nodes[1].config().virtual_chain_patience_secs);
    assert!(patience > deadline);
    assert_eq!(net.nodes[1].next_hold_deadline(), Some(patience));
    net.now = deadline;
    for n in [1, 3] {
        let out = net.nodes[n].handle_timeout(net.now);
        net.carry(n, out);
    }
    // One message delay at a time: hub 1 lets go only once a state of their ledger later
    // than its release is co-signed.
    for _ in 0..20 {
        net.round();
        let later = net.nodes[1].channel(mid).unwrap().latest().state.version > released_at;
        if !later {
            assert!(
                net.nodes[1].holding(net.up),
                "hub 1 holds the payer's release while its own can be completed"
            );
        }
    }
    assert!(!net.nodes[3].holding(mid), "hub 2 refused");
    assert!(
        net.nodes[1].channel(mid).unwrap().latest().state.version > released_at,
        "a later state of the hubs' ledger is co-signed"
    );
    assert!(!net.nodes[1].holding(net.up), "then hub 1 let go");
    assert!(
        net.nodes[0]
            .channel(net.up)
            .unwrap()
            .snapshot()
            .pending()
            .is_none(),
        "the payer's ledger is free"
    );
    all_locked(&net);
    for n in 0..4 {
        assert!(!net.settled(n, v), "node {n}");
        assert_eq!(net.disks[n], net.nodes[n].records(), "node {n}");
    }
}

/// A hub whose rules do not serve a next hop that is a hub (the default: such a hub takes the
/// risk of ADR 0026's open case) refuses the open; the payer's guarantee and fees are refused
/// with it and nothing is locked anywhere.
#[test]
fn a_hub_serves_a_next_hop_that_is_a_hub_only_by_its_operators_choice() {
    let (mut net, mid) = Net::chain(virtual_config());
    net.nodes[1] = Node::new(keys(2), virtual_config());
    let (h_up, h_mid) = (cosigned_up().1, cosigned_mid().0);
    net.nodes[1].add_channel(keys(1).address(), h_up).unwrap();
    net.nodes[1].add_channel(keys(4).address(), h_mid).unwrap();
    net.disks[1] = net.nodes[1].records();
    let (h1, h2, payee) = (net.addr(1), net.addr(3), net.addr(2));
    for h in [h1, h2] {
        let out = net.nodes[0].set_virtual_policy(h, virtual_policy());
        net.carry(0, out);
    }
    let out = net.nodes[0]
        .open_virtual_over(
            net.now,
            &[h1, h2],
            payee,
            Amount(50_000),
            U256::from(1),
            3600,
        )
        .unwrap();
    net.carry(0, out);
    net.run();
    assert!(net.events[0].iter().any(|e| matches!(
        e,
        NodeEvent::RefusedByPeer { peer, .. } if *peer == h1
    )));
    assert!(net.nodes[1].book().virtuals.is_empty());
    for (n, id) in [(0, net.up), (1, net.up), (1, mid), (3, mid)] {
        assert_eq!(net.guarantees(n, id), 0, "node {n} channel {id}");
    }
    assert_eq!(net.balances(0, net.up), [Amount(FUNDS), Amount::ZERO]);
    assert_eq!(net.balances(1, net.up), [Amount(FUNDS), Amount::ZERO]);
}

/// Every node of a chain restarts from its disk after every message delay, through the whole
/// open and close (a crash between any two steps of either): the open completes, every leg
/// locks and then releases the guarantee, both sides of each ledger agree, and each hub ends
/// with exactly its funds plus its fee.
#[test]
fn a_chain_survives_a_restart_of_every_node_after_every_message_delay() {
    let (mut net, mid) = Net::chain(virtual_config());
    let configs: Vec<Config> = net.nodes.iter().map(|n| n.config().clone()).collect();
    let restart = |net: &mut Net| {
        for (n, config) in configs.iter().enumerate() {
            let key = [1u8, 2, 3, 4][n];
            net.nodes[n] = Node::restore(keys(key), config.clone(), net.disks[n].clone()).unwrap();
        }
    };
    let (h1, h2, payee) = (net.addr(1), net.addr(3), net.addr(2));
    for h in [h1, h2] {
        let out = net.nodes[0].set_virtual_policy(h, virtual_policy());
        net.carry(0, out);
    }
    let out = net.nodes[0]
        .open_virtual_over(
            net.now,
            &[h1, h2],
            payee,
            Amount(50_000),
            U256::from(1),
            3600,
        )
        .unwrap();
    net.carry(0, out);
    for _ in 0..12 {
        restart(&mut net);
        net.round();
    }
    let v = net.opened(0).expect("the payer saw it open");
    for (n, id) in net.chain_legs(mid) {
        assert_eq!(net.guarantees(n, id), 1, "node {n} channel {id}");
    }
    let out = net.nodes[0].transfer(net.now, v, Amount(20_000)).unwrap();
    net.carry(0, out);
    for _ in 0..8 {
        restart(&mut net);
        net.round();
    }
    let out = net.nodes[0].close(net.now, v).unwrap();
    net.carry(0, out);
    for _ in 0..20 {
        restart(&mut net);
        net.round();
    }
    for n in 0..4 {
        assert!(net.settled(n, v), "node {n} settled");
    }
    let fee = 100 + 50;
    let up = net.balances(1, net.up);
    let m = net.balances(3, mid);
    let down = net.balances(2, net.down);
    assert_eq!(net.balances(0, net.up), up);
    assert_eq!(net.balances(1, mid), m);
    assert_eq!(net.balances(3, net.down), down);
    assert_eq!(
        up[1].0 + m[0].0,
        FUNDS + fee,
        "hub 1: its funds plus its fee"
    );
    assert_eq!(
        m[1].0 + down[0].0,
        FUNDS + fee,
        "hub 2: its funds plus its fee"
    );
    assert_eq!(down[1], Amount(20_000), "the payee's payment");
}

/// The intents in `out`.
fn intents(out: &Output) -> Vec<Intent> {
    out.writes
        .iter()
        .filter_map(|w| match w {
            Write::Intent(i) => Some((**i).clone()),
            _ => None,
        })
        .collect()
}

impl Net {
    /// Over [`Net::chain`]: the virtual channel open, the payer alone hands over the final
    /// state `[30_000, 20_000]` and proposes its release (the payee is silent). Hub 1 holds it
    /// and has signed its release toward hub 2, which holds that. Returns the channel and the
    /// payer's ledger's latest co-signed version.
    fn chain_close_held_at_hub_1(&mut self, mid: ChannelId) -> (ChannelId, u64) {
        let (v, _) = self.open_virtual_chain(50_000);
        let vp = self.nodes[0]
            .channel(v)
            .unwrap()
            .snapshot()
            .params()
            .clone();
        let fin = cosigned_final(&vp, [30_000, 20_000]);
        self.hand_final(0, v, fin);
        self.run();
        assert!(self.nodes[1].holding(self.up) && self.nodes[3].holding(mid));
        let u = self.nodes[1]
            .channel(self.up)
            .unwrap()
            .latest()
            .state
            .version;
        (v, u)
    }
}

/// The payer disputes its ledger on chain while hub 1 holds its release and hub 2 holds hub 1's
/// own release of their ledger (the coalition of ADR 0026). Hub 1 takes the hubs' ledger to
/// chain at once; when hub 2 answers there with the release hub 1 signed, hub 1 answers the
/// payer's dispute with the payer's release, countersigned: both its legs end by the same
/// final state.
#[test]
fn a_first_hub_answers_a_dispute_of_the_payers_ledger_by_the_release_it_holds_when_the_next_hub_completes_on_chain()
 {
    let (mut net, mid) = Net::chain(virtual_config());
    let (v, u) = net.chain_close_held_at_hub_1(mid);
    let disputed = |channel_id, version, guaranteed| ChainEvent::Disputed {
        channel_id,
        version,
        finalizes_at: NOW.0 + 3600,
        guaranteed,
    };
    let out = net.nodes[1].handle_chain(net.now, disputed(net.up, u, vec![v]));
    net.carry(1, out.clone());
    assert_eq!(
        closes(&out),
        vec![mid],
        "hub 1 takes the hubs' ledger to chain"
    );
    // Hub 2 answers with hub 1's signed release (the next version, without the guarantee).
    let m = net.nodes[1].channel(mid).unwrap().latest().state.version;
    let out = net.nodes[1].handle_chain(net.now, disputed(mid, m + 1, Vec::new()));
    net.carry(1, out.clone());
    let answer = intents(&out)
        .into_iter()
        .find_map(|i| match i {
            Intent::Challenge { params, state } if params.id() == net.up => Some(state),
            _ => None,
        })
        .expect("hub 1 answers the payer's dispute");
    assert_eq!(answer.state.version, u + 1);
    assert!(answer.state.guarantees.is_empty());
    let fee = 100 + 50;
    assert_eq!(
        answer.state.balances,
        [
            Amount(FUNDS - 50_000 - 2 * fee + 30_000),
            Amount(2 * fee + 20_000)
        ],
        "released by the final state: the payer's 30,000 back, the payee's 20,000 to hub 1"
    );
    // Signed by both (the adjudicator checks the same digest).
    let up = net.nodes[1]
        .channel(net.up)
        .unwrap()
        .snapshot()
        .params()
        .clone();
    let digest = crate::eip712::DomainSeparator::new(&up)
        .digest(&answer.state)
        .unwrap();
    for (side, k) in [(0, 1u8), (1, 2)] {
        crate::sig::verify(digest, &answer.sigs[side], keys(k).address()).unwrap();
    }
    assert!(!net.nodes[1].holding(net.up));
}

/// The same dispute, but hub 2 does not register hub 1's release (it lets the hubs' ledger
/// conclude as it was): hub 1 never completes the payer's release, so both its legs keep the
/// guarantee and settle on chain by one recorded outcome.
#[test]
fn a_first_hub_completes_nothing_when_the_next_hub_lets_the_release_lapse() {
    let (mut net, mid) = Net::chain(virtual_config());
    let (v, u) = net.chain_close_held_at_hub_1(mid);
    let m = net.nodes[1].channel(mid).unwrap().latest().state.version;
    let mut all = Vec::new();
    for (channel_id, version) in [(net.up, u), (mid, m)] {
        let out = net.nodes[1].handle_chain(
            net.now,
            ChainEvent::Disputed {
                channel_id,
                version,
                finalizes_at: NOW.0 + 3600,
                guaranteed: vec![v],
            },
        );
        all.extend(intents(&out));
        net.carry(1, out);
    }
    net.run();
    assert!(
        !all.iter()
            .any(|i| matches!(i, Intent::Challenge { params, .. } if params.id() == net.up)),
        "{all:?}"
    );
    assert!(net.nodes[1].holding(net.up));
    for (n, id) in [(0, net.up), (1, net.up), (1, mid), (3, mid)] {
        assert_eq!(net.guarantees(n, id), 1, "node {n} channel {id}");
    }
}

/// Over one hub: the payer's release is held, then the payer disputes its ledger on chain,
/// then the payee's release arrives. The hub completes neither: the disputed ledger could
/// conclude still holding the guarantee and be settled by an outcome the parties choose,
/// while the other would be released by the final state. Both legs keep the guarantee.
#[test]
fn a_hub_completes_no_release_while_a_leg_is_disputed() {
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    let vp = net.nodes[0].channel(v).unwrap().snapshot().params().clone();
    let fin = cosigned_final(&vp, [30_000, 20_000]);
    net.hand_final(0, v, fin.clone());
    net.run();
    assert!(net.nodes[1].holding(net.up));
    let u = net.nodes[1].channel(net.up).unwrap().latest().state.version;
    let out = net.nodes[1].handle_chain(
        net.now,
        ChainEvent::Disputed {
            channel_id: net.up,
            version: u,
            finalizes_at: NOW.0 + 3600,
            guaranteed: vec![v],
        },
    );
    net.carry(1, out);
    net.hand_final(2, v, fin);
    net.run();
    for (n, id) in [(0, net.up), (1, net.up), (1, net.down), (2, net.down)] {
        assert_eq!(net.guarantees(n, id), 1, "node {n} channel {id}");
    }
    assert!(!net.settled(1, v));
}

/// The borrowed record the store writes at every step encodes exactly as the owned one (and
/// decodes back to it), with a proposal out and operations queued behind it.
#[test]
fn a_borrowed_channel_record_encodes_as_the_owned_one() {
    let mut net = Net::new(config());
    for amount in [10, 20, 30] {
        let out = net.nodes[0]
            .transfer(net.now, net.up, Amount(amount))
            .unwrap();
        net.carry(0, out);
    }
    assert!(
        net.nodes[0].channel(net.up).unwrap().queued() > 0,
        "operations wait behind the proposal"
    );
    let owned = net.nodes[0].channel_record(net.up).unwrap();
    let borrowed = net.nodes[0].channel_record_ref(net.up).unwrap();
    let bytes = postcard::to_stdvec(&borrowed).unwrap();
    assert_eq!(bytes, postcard::to_stdvec(&owned).unwrap());
    let back: crate::node::records::ChannelRecord = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, owned);
}

/// The payer's release is held by the hub (the payee's has not come). The payer sends the
/// same release again in a new frame: the hub does not take it (its machine would
/// countersign it, releasing the payer's leg alone); any other proposal there is refused
/// the same way, so none can make the held release stale.
#[test]
fn a_hub_takes_nothing_else_on_a_ledger_whose_release_it_holds() {
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    let vp = net.nodes[0].channel(v).unwrap().snapshot().params().clone();
    let fin = cosigned_final(&vp, [30_000, 20_000]);
    net.hand_final(0, v, fin);
    net.run();
    assert!(net.nodes[1].holding(net.up));
    let held = net.nodes[1].book().virtuals[&v].held[0].clone().unwrap();
    let (payer, hub) = (net.addr(0), net.addr(1));
    for msg in [held.clone(), held] {
        let seq = net.nodes[0].links[&hub].outbox.next_send();
        let out = net.nodes[1].handle_frame(
            net.now,
            payer,
            Frame::Msg {
                seq,
                body: Body::Channel(msg),
            },
        );
        assert_eq!(refusal_codes(&out), vec![ErrorCode::Protocol]);
        net.nodes[0]
            .links
            .get_mut(&hub)
            .unwrap()
            .outbox
            .sent(seq + 1);
        net.carry(1, out);
    }
    assert_eq!(
        net.guarantees(1, net.up),
        1,
        "the payer's leg is not released"
    );
    assert_eq!(net.guarantees(1, net.down), 1);
    assert!(net.nodes[1].holding(net.up));
    assert!(!net.settled(1, v));
}

/// Over a chain: the payer disputes its ledger after hub 1 holds its release and signed its
/// own toward hub 2; before hub 1's close of their ledger lands, hub 2 completes that release
/// off chain (the payee's release came). Hub 1 then answers the payer's dispute with the
/// payer's release: both its legs end by the final state.
#[test]
fn a_first_hub_answers_the_payers_dispute_when_the_next_hub_completes_off_chain() {
    let (mut net, mid) = Net::chain(virtual_config());
    let (v, u) = net.chain_close_held_at_hub_1(mid);
    let out = net.nodes[1].handle_chain(
        net.now,
        ChainEvent::Disputed {
            channel_id: net.up,
            version: u,
            finalizes_at: NOW.0 + 3600,
            guaranteed: vec![v],
        },
    );
    net.carry(1, out);
    // The payee's release arrives: hub 2 completes both of its legs.
    let vp = net.nodes[0].channel(v).unwrap().snapshot().params().clone();
    let fin = cosigned_final(&vp, [30_000, 20_000]);
    net.hand_final(2, v, fin);
    let mut answers = Vec::new();
    for _ in 0..10 {
        for (from, to, f) in std::mem::take(&mut net.wire) {
            let from = net.addr(from);
            let out = net.nodes[to].handle_frame(net.now, from, f);
            if to == 1 {
                answers.extend(intents(&out));
            }
            net.carry(to, out);
        }
    }
    assert_eq!(
        net.guarantees(1, mid),
        0,
        "hub 2 completed the hubs' ledger"
    );
    let answer = answers
        .iter()
        .find_map(|i| match i {
            Intent::Challenge { params, state } if params.id() == net.up => Some(state.clone()),
            _ => None,
        })
        .expect("hub 1 answers the payer's dispute with the payer's release");
    assert_eq!(answer.state.version, u + 1);
    assert!(answer.state.guarantees.is_empty());
}

/// Over a chain: the payer's ledger is disputed before its release reaches hub 1. Hub 1 then
/// signs nothing toward hub 2 (its release there would be an option past the payer's
/// window): it holds the payer's release under the hold's deadline, and every leg keeps the
/// guarantee, settled on chain by one outcome.
#[test]
fn a_first_hub_signs_no_release_toward_the_next_hub_while_a_leg_is_disputed() {
    let (mut net, mid) = Net::chain(virtual_config());
    let (v, _) = net.open_virtual_chain(50_000);
    let u = net.nodes[1].channel(net.up).unwrap().latest().state.version;
    let out = net.nodes[1].handle_chain(
        net.now,
        ChainEvent::Disputed {
            channel_id: net.up,
            version: u,
            finalizes_at: NOW.0 + 3600,
            guaranteed: vec![v],
        },
    );
    net.carry(1, out);
    let vp = net.nodes[0].channel(v).unwrap().snapshot().params().clone();
    let fin = cosigned_final(&vp, [30_000, 20_000]);
    net.hand_final(0, v, fin);
    net.run();
    assert!(
        !net.nodes[3].holding(mid),
        "hub 1 proposed nothing to hub 2"
    );
    assert!(
        net.nodes[1]
            .channel(mid)
            .unwrap()
            .snapshot()
            .pending()
            .is_none()
    );
    assert!(net.nodes[1].next_hold_deadline().is_some());
    for (n, id) in [(1, net.up), (1, mid), (3, mid)] {
        assert_eq!(net.guarantees(n, id), 1, "node {n} channel {id}");
    }
}

/// A final state handed over before every leg locks the guarantee is refused: a leg without
/// the guarantee yet is not a released one, and the others released alone could be robbed on
/// it once it locks.
#[test]
fn a_hub_takes_no_final_state_before_the_virtual_channel_is_open() {
    let mut net = Net::new(virtual_config());
    let (hub, payee) = (net.addr(1), net.addr(2));
    let out = net.nodes[0].set_virtual_policy(hub, virtual_policy());
    net.carry(0, out);
    let out = net.nodes[0]
        .open_virtual(net.now, hub, payee, Amount(50_000), U256::from(1), 3600)
        .unwrap();
    net.carry(0, out);
    net.round(); // the hub takes the payer's leg and offers the channel to the payee
    let v = *net.nodes[1].book().virtuals.keys().next().unwrap();
    let vp = net.nodes[1].book().virtuals[&v].terms.params.clone();
    let mut p = super::Pending::default();
    net.nodes[0].send(
        hub,
        Body::VirtualClose {
            final_state: Box::new(cosigned_final(&vp, [0, 50_000])),
        },
        &mut p,
    );
    let out = net.nodes[0].finish(net.now, p);
    net.carry(0, out);
    net.round();
    assert!(net.events[1].iter().any(|e| matches!(
        e,
        NodeEvent::Refused {
            code: ErrorCode::Protocol,
            ..
        }
    )));
    assert_eq!(net.nodes[1].book().virtuals[&v].outcome, None);
}

/// A payer asks to open two virtual channels and adds both guarantees in one update that pays
/// only one opening fee: the hub counts the fees of every guarantee the update adds, so
/// neither channel goes on (no guarantee toward the payee, nothing of the hub's locked).
#[test]
fn one_fee_never_pays_for_two_opens() {
    let mut net = Net::new(virtual_config());
    let (hub, payee) = (net.addr(1), net.addr(2));
    let out = net.nodes[0].set_virtual_policy(hub, virtual_policy());
    net.carry(0, out);
    // A transfer goes out first, so both opens queue behind it and ride one update.
    let out = net.nodes[0].transfer(net.now, net.up, Amount(1)).unwrap();
    net.carry(0, out);
    for nonce in [1u64, 2] {
        let out = net.nodes[0]
            .open_virtual(net.now, hub, payee, Amount(50_000), U256::from(nonce), 3600)
            .unwrap();
        net.carry(0, out);
    }
    // The payer drops the second fee from its queue.
    let e = net.nodes[0].channels.get_mut(&net.up).unwrap();
    let mut snap = e.machine.snapshot().clone();
    let second_fee = snap
        .queue
        .iter()
        .enumerate()
        .filter(|(_, q)| matches!(q.op, crate::Op::Transfer { .. }))
        .map(|(i, _)| i)
        .nth(1)
        .expect("two fees queued");
    snap.queue.remove(second_fee);
    e.machine = Channel::restore(snap, keys(1)).unwrap();
    net.run();
    let up = net.nodes[1].channel(net.up).unwrap().latest().state.clone();
    assert_eq!(
        up.guarantees.len(),
        2,
        "both guarantees were added in one update"
    );
    for r in net.nodes[1].book().virtuals.values() {
        assert_eq!(r.phase, crate::node::records::VirtualPhase::Failed);
    }
    assert_eq!(
        net.guarantees(1, net.down),
        0,
        "nothing offered to the payee"
    );
    assert_eq!(net.balances(1, net.down), [Amount(FUNDS), Amount::ZERO]);
}

/// The payee never answers the offer: the open stays unfinished, with the payer's leg locking
/// the guarantee. At the channel's end plus the margin the hub takes its ledgers on chain like
/// any it still guarantees (the guarantee settles back as funded), so an open left unfinished
/// pins nothing of the hub's beyond the channel's life.
#[test]
fn the_hub_takes_an_unfinished_open_on_chain_at_its_end() {
    let mut net = Net::new(virtual_config());
    let (hub, payee) = (net.addr(1), net.addr(2));
    let out = net.nodes[0].set_virtual_policy(hub, virtual_policy());
    net.carry(0, out);
    let out = net.nodes[0]
        .open_virtual(net.now, hub, payee, Amount(50_000), U256::from(1), 3600)
        .unwrap();
    net.carry(0, out);
    for _ in 0..6 {
        net.round();
        // The payee is silent.
        net.wire.retain(|(_, to, _)| *to != 2);
    }
    let (v, r) = net.nodes[1]
        .virtuals()
        .next()
        .map(|(v, r)| (*v, r.clone()))
        .unwrap();
    assert_eq!(r.phase, crate::node::records::VirtualPhase::Opening);
    assert_eq!(net.guarantees(1, net.up), 1, "the payer's leg locks it");
    let due = Expiry(r.terms.expires_at.0 + net.nodes[1].config().virtual_end_margin_secs);
    assert_eq!(net.nodes[1].poll_timeout(), Some(due));
    let out = net.nodes[1].handle_timeout(due);
    let closed: Vec<ChannelId> = intents(&out)
        .iter()
        .filter_map(|i| match i {
            Intent::Close { params, .. } => Some(params.id()),
            _ => None,
        })
        .collect();
    // The payee's ledger too: the hub's signed proposal of the guarantee there is out, and
    // the payee could still complete it.
    assert_eq!(closed, vec![net.up, net.down], "{v}");
}

/// Frames a peer sends a hub of a chain when it should not: an open whose path of hubs goes
/// round (the same hub twice), and a message "relayed" by someone who is not the channel's
/// neighbour on that side (the payee claiming to pass on the payer's message). Each is
/// refused; nothing is recorded or locked.
#[test]
fn a_hub_of_a_chain_refuses_round_paths_and_relays_from_the_wrong_side() {
    let (mut net, mid) = Net::chain(virtual_config());
    let (payer, h1, payee, h2) = (net.addr(0), net.addr(1), net.addr(2), net.addr(3));
    // An open over h1 whose onward path names h2 twice.
    let vparams = crate::ChannelParams {
        participants: [payer, payee],
        nonce: U256::from(77),
        ..params(&keys(1), &keys(3), 0)
    };
    let terms = crate::vchan::VirtualTerms {
        params: vparams.clone(),
        opening: [Amount(10), Amount::ZERO],
        expires_at: Expiry(NOW.0 + 3600),
    };
    let sig = sign_state(&vparams, &keys(1), &terms.opening_state()).unwrap();
    let mut p = super::Pending::default();
    net.nodes[0].send(
        h1,
        Body::VirtualOpen {
            ledger: net.up,
            terms: Box::new(terms),
            sig,
            onward: vec![(h2, Amount(1)), (h2, Amount(1))],
        },
        &mut p,
    );
    let out = net.nodes[0].finish(net.now, p);
    net.carry(0, out);
    net.run();
    assert!(net.events[1].iter().any(|e| matches!(
        e,
        NodeEvent::Refused { peer, code: ErrorCode::Protocol } if *peer == payer
    )));
    assert!(net.nodes[1].book().virtuals.is_empty());
    // A real chain channel, then a "relay" of the payer's message to hub 2 from the payee.
    let (v, _) = net.open_virtual_chain(50_000);
    let before = net.events[3].len();
    let mut p = super::Pending::default();
    net.nodes[2].send(
        h2,
        Body::Relayed {
            from: payer,
            msg: Message::Accept {
                channel_id: v,
                version: 99,
                sig: keys(3).sign_digest(B256::repeat_byte(1)),
            },
        },
        &mut p,
    );
    let out = net.nodes[2].finish(net.now, p);
    net.carry(2, out);
    net.run();
    assert!(net.events[3][before..].iter().any(|e| matches!(
        e,
        NodeEvent::Refused { peer, code: ErrorCode::UnknownChannel } if *peer == payee
    )));
    for (n, id) in net.chain_legs(mid) {
        assert_eq!(net.guarantees(n, id), 1, "node {n} channel {id}");
    }
}

impl Net {
    /// Drop every frame to or from node `n` (it is silent: it neither completes nor refuses).
    fn silence(&mut self, n: usize) {
        self.wire.retain(|(from, to, _)| *from != n && *to != n);
    }

    /// Node `n`'s ledger `id` is paid out on chain in its latest co-signed state.
    fn conclude_latest(&mut self, n: usize, id: ChannelId) -> Output {
        let latest = self.nodes[n].channel(id).unwrap().latest().state.clone();
        self.nodes[n].handle_chain(
            self.now,
            ChainEvent::Concluded {
                channel_id: id,
                version: latest.version,
                to_a: latest.balances[0],
                to_b: latest.balances[1],
            },
        )
    }
}

/// The virtual channel states the resolutions among `out`'s intents settle by.
fn resolutions(out: &Output) -> Vec<ChannelState> {
    out.intents()
        .filter_map(|i| match i {
            Intent::ResolveGuarantee(r) => Some(r.virt_state.clone()),
            _ => None,
        })
        .collect()
}

/// Hub 2 goes silent holding hub 1's release (it neither completes nor refuses it), so the
/// payer's release waits at hub 1. At the end of its patience with hub 2 (not before) hub 1
/// takes their ledger to chain; it concludes there still holding the guarantee, hub 1 resolves
/// it by the final state it holds, and once the chain records that outcome hub 1 countersigns
/// the payer's release: the payer's ledger is free and released by the same state.
#[test]
fn a_hub_of_a_chain_takes_a_silent_next_hub_to_chain_and_completes_by_the_recorded_outcome() {
    let (mut net, mid) = Net::chain(virtual_config());
    let (v, _) = net.chain_close_held_at_hub_1(mid);
    let fin = net.nodes[1].book().virtuals[&v].outcome.clone().unwrap();
    let deadline = NOW.0 + net.nodes[1].config().virtual_chain_patience_secs;
    assert_eq!(net.nodes[1].next_hold_deadline(), Some(Expiry(deadline)));
    // A second early: nothing.
    net.now = Expiry(deadline - 1);
    let out = net.nodes[1].handle_timeout(net.now);
    assert!(closes(&out).is_empty());
    net.carry(1, out);
    net.now = Expiry(deadline);
    let out = net.nodes[1].handle_timeout(net.now);
    assert_eq!(
        closes(&out),
        vec![mid],
        "hub 1 takes the hubs' ledger to chain"
    );
    assert!(out.events.contains(&NodeEvent::VirtualReleaseStalled {
        channel_id: v,
        ledger: mid
    }));
    net.carry(1, out);
    net.silence(3);
    assert!(
        net.nodes[1].holding(net.up),
        "its own release is out: the payer's is kept"
    );
    assert_eq!(net.nodes[1].next_hold_deadline(), None, "once");
    // The ledger concludes still holding the guarantee: resolved by the final state.
    let m = net.nodes[1].channel(mid).unwrap().latest().state.version;
    let out = net.nodes[1].handle_chain(
        net.now,
        ChainEvent::Disputed {
            channel_id: mid,
            version: m,
            finalizes_at: net.now.0 + 1800,
            guaranteed: vec![v],
        },
    );
    net.carry(1, out);
    let out = net.conclude_latest(1, mid);
    assert_eq!(resolutions(&out), vec![fin.state.clone()]);
    net.carry(1, out);
    assert!(
        net.nodes[1].holding(net.up),
        "not before the chain records it"
    );
    let out = net.nodes[1].handle_chain(
        net.now,
        ChainEvent::Registered {
            channel_id: v,
            state: Box::new(fin.state.clone()),
            finalizes_at: 0,
        },
    );
    net.carry(1, out);
    net.silence(3);
    net.run();
    assert!(!net.nodes[1].holding(net.up));
    for n in [0, 1] {
        assert_eq!(net.guarantees(n, net.up), 0, "node {n}");
    }
    assert!(
        net.nodes[0]
            .channel(net.up)
            .unwrap()
            .snapshot()
            .pending()
            .is_none()
    );
    let fee = 100 + 50;
    assert_eq!(
        net.balances(0, net.up),
        [
            Amount(FUNDS - 50_000 - 2 * fee + 30_000),
            Amount(2 * fee + 20_000)
        ],
        "released by the final state"
    );
    assert_eq!(net.disks[1], net.nodes[1].records());
}

/// The same silence, but the chain records another final state the parties also signed (the
/// coalition of ADR 0026 resolved first elsewhere): hub 1's leg toward hub 2 is resolved by it,
/// so hub 1 refuses the payer's release by the state it was handed. The payer's ledger is free
/// and keeps the guarantee, to be resolved by the recorded state too.
#[test]
fn a_hub_of_a_chain_refuses_the_held_release_when_the_chain_records_another_outcome() {
    let (mut net, mid) = Net::chain(virtual_config());
    let (v, _) = net.chain_close_held_at_hub_1(mid);
    let vp = net.nodes[0].channel(v).unwrap().snapshot().params().clone();
    let other = cosigned_final(&vp, [0, 50_000]);
    net.now = Expiry(NOW.0 + net.nodes[1].config().virtual_chain_patience_secs);
    let out = net.nodes[1].handle_timeout(net.now);
    net.carry(1, out);
    net.silence(3);
    let out = net.conclude_latest(1, mid);
    net.carry(1, out);
    let before = net.balances(0, net.up);
    let out = net.nodes[1].handle_chain(
        net.now,
        ChainEvent::Registered {
            channel_id: v,
            state: Box::new(other.state.clone()),
            finalizes_at: 0,
        },
    );
    assert_eq!(
        resolutions(&out),
        vec![other.state.clone()],
        "hub 1's concluded leg"
    );
    net.carry(1, out);
    net.silence(3);
    net.run();
    assert!(!net.nodes[1].holding(net.up));
    assert!(
        net.nodes[0]
            .channel(net.up)
            .unwrap()
            .snapshot()
            .pending()
            .is_none(),
        "the payer's release was refused: its ledger is free"
    );
    for n in [0, 1] {
        assert_eq!(net.guarantees(n, net.up), 1, "node {n}");
    }
    assert_eq!(net.balances(0, net.up), before);
    assert_eq!(net.disks[1], net.nodes[1].records());
}

/// Over one hub: the payer's release is held and the payee is silent; the payee's ledger
/// concludes on chain still holding the guarantee and the chain records the final state as the
/// outcome. No leg can be resolved by another state now, so the hub countersigns the payer's
/// release at once instead of waiting for its hold to lapse.
#[test]
fn a_hub_countersigns_a_held_release_by_the_outcome_the_chain_recorded() {
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    let vp = net.nodes[0].channel(v).unwrap().snapshot().params().clone();
    let fin = cosigned_final(&vp, [30_000, 20_000]);
    net.hand_final(0, v, fin.clone());
    net.run();
    assert!(net.nodes[1].holding(net.up));
    let out = net.conclude_latest(1, net.down);
    assert_eq!(resolutions(&out), vec![fin.state.clone()]);
    net.carry(1, out);
    net.silence(2);
    net.run();
    assert!(
        net.nodes[1].holding(net.up),
        "not before the chain records it"
    );
    let out = net.nodes[1].handle_chain(
        net.now,
        ChainEvent::Registered {
            channel_id: v,
            state: Box::new(fin.state.clone()),
            finalizes_at: 0,
        },
    );
    net.carry(1, out);
    net.silence(2);
    net.run();
    assert!(!net.nodes[1].holding(net.up));
    for n in [0, 1] {
        assert_eq!(net.guarantees(n, net.up), 0, "node {n}");
    }
    assert_eq!(net.nodes[1].next_hold_deadline(), None);
    assert_eq!(net.disks[1], net.nodes[1].records());
}

/// A virtual channel between two announcing nodes (ADR 0026, ADR 0028): once open, its parties
/// exchange signatures over the hub binding its value and end, and both believe it, a virtual
/// edge; the hub, told by them, believes it too. A third node believes it only from a peer,
/// only once both parties are nodes it has seen funds of (its own peer, or a participant of a
/// ledger announcement it believes), never with another capacity or end than the parties
/// signed, never past its end (pruned then), and at most `MAX_VIRTUAL_PER_NODE` per party. A
/// policy update for it costs no chain read (the chain shows nothing for it).
#[test]
fn a_virtual_channel_between_announcing_nodes_is_believed_only_as_its_parties_signed_it() {
    use crate::node::gossip::{
        Announcement, GossipMsg, MAX_VIRTUAL_PER_NODE, PolicyUpdate, virtual_announcement_digest,
    };
    let announcing = Config {
        announce: true,
        ..virtual_config()
    };
    let mut net = Net::new(announcing.clone());
    let (v, _) = net.open_virtual(50_000);
    net.run();
    let until = net.nodes[0].book().virtuals[&v].terms.expires_at.0;
    for n in [0, 2, 1] {
        let c = net.nodes[n]
            .book()
            .gossip
            .get(&v)
            .unwrap_or_else(|| panic!("node {n} believes the virtual channel"));
        assert_eq!(c.virtual_until, Some(until), "node {n}");
        assert_eq!(c.capacity, Amount(50_000), "node {n}");
        assert_eq!(c.keys, [keys(1).public_key(), keys(3).public_key()]);
        assert!(
            c.policies.iter().all(Option::is_some),
            "node {n}: both directions' policies"
        );
    }
    let c = net.nodes[0].book().gossip[&v].clone();
    let GossipMsg::AnnounceVirtual {
        ann,
        capacity,
        until: signed_until,
    } = c.announce_msg()
    else {
        panic!("a virtual channel's announcement");
    };
    assert_eq!((capacity, signed_until), (Amount(50_000), until));

    // An observer (key 5) on chain, with a funded ledger to the payer only.
    let mut x = Node::new(
        keys(5),
        Config {
            on_chain: true,
            ..announcing
        },
    );
    let (xc, _) = cosigned(5, 1, 77);
    x.add_channel(net.addr(0), xc).unwrap();
    let now = net.now;
    let virt = |ann: &Announcement, capacity: Amount, until: u64| {
        Frame::Gossip(Box::new(GossipMsg::AnnounceVirtual {
            ann: Box::new(ann.clone()),
            capacity,
            until,
        }))
    };
    // A stranger's gossip is dropped.
    let out = x.handle_frame(now, keys(9).address(), virt(&ann, capacity, until));
    assert!(out.writes.is_empty() && out.queries.is_empty());
    // From its peer, before it has seen the payee's funds: a forged capacity or end is dropped,
    // and so is a channel already ended; the one the parties signed waits for its parties'
    // ledgers (in memory: no write, no chain read).
    let (a, b) = (keys(1), keys(3));
    let ended = {
        let p = params(&a, &b, 999);
        let d = virtual_announcement_digest(&p, Amount(1), now.0);
        Announcement {
            sigs: [a.sign_digest(d), b.sign_digest(d)],
            params: p,
        }
    };
    for frame in [
        virt(&ann, Amount(50_001), until),
        virt(&ann, capacity, until + 1),
        virt(&ended, Amount(1), now.0),
        virt(&ann, capacity, until),
    ] {
        let out = x.handle_frame(now, net.addr(0), frame);
        assert!(out.writes.is_empty() && out.queries.is_empty());
    }
    assert!(x.book().gossip.is_empty());
    // It comes to believe the hub–payee ledger (announced, then funded on chain), and with it
    // the virtual channel that waited, as its parties signed it (not a forged figure).
    let down = net.nodes[1]
        .channel(net.down)
        .unwrap()
        .snapshot()
        .params()
        .clone();
    let ledger = Announcement {
        sigs: [
            Announcement::sign(&down, &keys(2)),
            Announcement::sign(&down, &keys(3)),
        ],
        params: down.clone(),
    };
    let out = x.handle_frame(
        now,
        net.addr(0),
        Frame::Gossip(Box::new(GossipMsg::Announce(Box::new(ledger)))),
    );
    assert_eq!(out.queries, vec![down.id()]);
    let out = x.handle_chain(
        now,
        ChainEvent::Holdings {
            channel_id: down.id(),
            held: Amount(FUNDS),
            deposited: [Amount(FUNDS), Amount::ZERO],
        },
    );
    assert!(!out.writes.is_empty());
    assert!(x.book().gossip.contains_key(&down.id()));
    let c = &x.book().gossip[&v];
    assert_eq!((c.capacity, c.virtual_until), (capacity, Some(until)));
    assert!(!x.book().gossip.contains_key(&ended.params.id()));
    // With a fresh policy (a ledger nobody updates goes stale).
    let hub_policy = PolicyUpdate::sign(down.id(), ForwardPolicy::default(), until, &keys(2));
    let _ = x.handle_frame(
        Expiry(until),
        net.addr(0),
        Frame::Gossip(Box::new(GossipMsg::Policy(Box::new(hub_policy)))),
    );
    assert!(x.book().gossip[&down.id()].policies[0].is_some());
    // A policy update for it is taken without a chain read.
    let u = PolicyUpdate::sign(v, ForwardPolicy::default(), now.0 + 20, &keys(3));
    let out = x.handle_frame(
        now,
        net.addr(0),
        Frame::Gossip(Box::new(GossipMsg::Policy(Box::new(u.clone())))),
    );
    assert_eq!(x.book().gossip[&v].policies[1], Some(u));
    assert!(out.queries.is_empty());
    // At most MAX_VIRTUAL_PER_NODE of one party: the payer's further ones are dropped.
    for nonce in 0..MAX_VIRTUAL_PER_NODE as u64 {
        let p = params(&a, &b, 1_000 + nonce);
        let d = virtual_announcement_digest(&p, Amount(1), until);
        let ann = Announcement {
            sigs: [a.sign_digest(d), b.sign_digest(d)],
            params: p,
        };
        let _ = x.handle_frame(now, net.addr(0), virt(&ann, Amount(1), until));
    }
    let virtuals = |x: &Node| {
        x.book()
            .gossip
            .values()
            .filter(|c| c.virtual_until.is_some())
            .count()
    };
    assert_eq!(virtuals(&x), MAX_VIRTUAL_PER_NODE);
    // Pruned at its end, with every other virtual channel ending then; the ledger stays.
    let out = x.handle_timeout(Expiry(until));
    assert!(!out.writes.is_empty());
    assert_eq!(virtuals(&x), 0);
    assert!(x.book().gossip.contains_key(&down.id()));

    // Once the channel is closed, each party tells the network: its direction disabled.
    let out = net.nodes[2].close(net.now, v).unwrap();
    net.carry(2, out);
    net.run();
    assert!(net.settled(0, v) && net.settled(2, v));
    for n in [0, 2] {
        let out = net.nodes[n].handle_timeout(Expiry(net.now.0 + 1));
        let disabled = out.transmits.iter().any(|(to, f)| {
            *to == net.addr(1)
                && matches!(f, Frame::Gossip(g) if matches!(&**g,
                    GossipMsg::Policy(u) if u.channel_id == v && !u.policy.enabled))
        });
        assert!(disabled, "node {n} disables its direction");
    }
}

/// The hub goes silent while a virtual channel is open: the payer's close before the end gets
/// nowhere. The hub's turn to settle it (the margin after the end) passes; then the payer takes
/// its own ledger, which still locks the guarantee, on chain itself (twice the margin after
/// the end), and the chain settles the channel: a hub that is gone or holds back never keeps a
/// party's money past the end.
#[test]
fn a_party_takes_its_ledger_on_chain_when_the_hub_leaves_a_virtual_channel_past_its_end() {
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    net.silence(1);
    let end = net.nodes[0].book().virtuals[&v].terms.expires_at.0;
    let margin = net.nodes[0].config().virtual_end_margin_secs;
    // Its close before the end goes out, and nowhere.
    net.now = Expiry(end - margin);
    let out = net.nodes[0].handle_timeout(net.now);
    assert!(closes(&out).is_empty());
    net.carry(0, out);
    net.silence(1);
    assert_eq!(
        net.nodes[0].poll_timeout(),
        Some(Expiry(end + 2 * margin)),
        "next: after the hub's turn"
    );
    // The hub's turn: the party still waits.
    net.now = Expiry(end + margin);
    let out = net.nodes[0].handle_timeout(net.now);
    assert!(closes(&out).is_empty());
    net.carry(0, out);
    // Then its ledger goes on chain, once.
    net.now = Expiry(end + 2 * margin);
    let out = net.nodes[0].handle_timeout(net.now);
    assert_eq!(closes(&out), vec![net.up]);
    assert!(out.events.contains(&NodeEvent::VirtualExpired {
        channel_id: v,
        ledger: net.up
    }));
    net.carry(0, out);
    let out = net.nodes[0].handle_timeout(Expiry(net.now.0 + 1));
    assert!(closes(&out).is_empty(), "once");
    assert_eq!(net.disks[0], net.nodes[0].records());
    // The payee, which never closed, does the same with its own ledger.
    let out = net.nodes[2].handle_timeout(net.now);
    assert_eq!(closes(&out), vec![net.down]);
}

/// V's parties register a state with locks on chain and show the locks to nobody: the hub
/// (which never holds V's locks) resolves each of its concluded legs without them, through the
/// adjudicator's `resolveGuaranteeWithheld`, not before the window's end and the guarantee's
/// `locks_until` plus the grace. An outcome recorded with the locks replaces that; and a party
/// whose ledger concludes after an outcome recorded without them follows it.
#[test]
fn a_hub_resolves_its_legs_without_the_locks_nobody_shows_after_the_grace() {
    use crate::node::chain::WithheldLocks;
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    let until = net.nodes[1].book().virtuals[&v].terms.expires_at.0;
    let grace_end = until + crate::vchan::WITHHELD_GRACE_SECS;
    let withheld_of = |out: &Output| -> Vec<(ChannelId, Option<WithheldLocks>, u64, u64)> {
        out.intents()
            .filter_map(|i| match i {
                Intent::ResolveGuarantee(r) => Some((
                    r.ledger.id(),
                    r.withheld,
                    r.not_before,
                    r.virt_state.version,
                )),
                _ => None,
            })
            .collect()
    };
    let shown = ChannelState {
        version: 9,
        ..ChannelState::opening(v, [Amount(20_000), Amount(20_000)])
    };
    let locks = WithheldLocks {
        root: B256::repeat_byte(7),
        total: Amount(10_000),
    };
    let out = net.conclude_latest(1, net.down);
    net.carry(1, out);
    let out = net.nodes[1].handle_chain(
        net.now,
        ChainEvent::RegisteredWithheld {
            channel_id: v,
            state: Box::new(shown.clone()),
            locks,
            finalizes_at: NOW.0 + 3600,
        },
    );
    assert_eq!(
        withheld_of(&out),
        vec![(net.down, Some(locks), grace_end, 9)],
        "after the grace, without the locks"
    );
    net.carry(1, out);
    // The other leg concludes later: the same way.
    let out = net.conclude_latest(1, net.up);
    assert_eq!(withheld_of(&out), vec![(net.up, Some(locks), grace_end, 9)]);
    net.carry(1, out);
    assert_eq!(net.disks[1], net.nodes[1].records());
    // A party shown it before an outcome is recorded writes nothing (it holds its locks).
    let out = net.nodes[0].handle_chain(
        net.now,
        ChainEvent::RegisteredWithheld {
            channel_id: v,
            state: Box::new(shown.clone()),
            locks,
            finalizes_at: NOW.0 + 3600,
        },
    );
    assert!(out.writes.is_empty());
    // An outcome recorded with its locks replaces it: both legs by that state, whole.
    let k = crate::Lock {
        id: crate::HtlcId(0),
        amount: Amount(10_000),
        hashlock: Hashlock(B256::repeat_byte(1)),
        expiry: Expiry(NOW.0 + 100),
        sender: crate::Side::A,
    };
    let whole = ChannelState {
        locks: vec![k],
        ..shown.clone()
    };
    let out = net.nodes[1].handle_chain(
        net.now,
        ChainEvent::Registered {
            channel_id: v,
            state: Box::new(whole.clone()),
            finalizes_at: 0,
        },
    );
    let got = withheld_of(&out);
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .all(|(_, w, _, version)| w.is_none() && *version == 9)
    );
    net.carry(1, out);
    assert_eq!(net.nodes[1].book().virtuals[&v].withheld, None);

    // Recorded without its locks: a party whose ledger concludes then follows it at once.
    let out = net.nodes[0].handle_chain(
        net.now,
        ChainEvent::RegisteredWithheld {
            channel_id: v,
            state: Box::new(shown),
            locks,
            finalizes_at: 0,
        },
    );
    net.carry(0, out);
    let out = net.conclude_latest(0, net.up);
    assert_eq!(withheld_of(&out), vec![(net.up, Some(locks), grace_end, 9)]);
}

/// The parties hand the hub a final state (version 10), then register a later state of theirs
/// on chain (version 11): the hub cannot replace it with the final one, and once its window
/// ends the adjudicator takes only the registered state. So the hub's concluded leg is
/// resolved by the registered state (after its window), whole or, shown without its locks,
/// the withheld way; never by the final state, which the chain would refuse for ever.
#[test]
fn a_hub_resolves_by_a_later_registered_state_than_the_final_one_it_holds() {
    let mut net = Net::new(virtual_config());
    let (v, _) = net.open_virtual(50_000);
    let vp = net.nodes[0].channel(v).unwrap().snapshot().params().clone();
    let fin = cosigned_final(&vp, [30_000, 20_000]);
    net.hand_final(0, v, fin.clone());
    net.run();
    assert_eq!(net.nodes[1].book().virtuals[&v].outcome, Some(fin.clone()));
    let out = net.conclude_latest(1, net.down);
    assert_eq!(resolutions(&out), vec![fin.state.clone()]);
    net.carry(1, out);
    // An older registration is replaced by the final state: nothing new.
    let older = ChannelState {
        version: 9,
        ..ChannelState::opening(v, [Amount(10_000), Amount(40_000)])
    };
    let out = net.nodes[1].handle_chain(
        net.now,
        ChainEvent::Registered {
            channel_id: v,
            state: Box::new(older),
            finalizes_at: NOW.0 + 3600,
        },
    );
    assert!(resolutions(&out).is_empty());
    net.carry(1, out);
    // A later one wins on chain: the leg goes by it.
    let later = ChannelState {
        version: 11,
        ..ChannelState::opening(v, [Amount(0), Amount(50_000)])
    };
    let out = net.nodes[1].handle_chain(
        net.now,
        ChainEvent::Registered {
            channel_id: v,
            state: Box::new(later.clone()),
            finalizes_at: NOW.0 + 3600,
        },
    );
    assert_eq!(resolutions(&out), vec![later.clone()]);
    net.carry(1, out);
    // And so does a leg concluding after it.
    let out = net.conclude_latest(1, net.up);
    assert_eq!(resolutions(&out), vec![later]);
    net.carry(1, out);
    // The same, shown without its locks: the withheld way, on both legs.
    let locks = crate::node::chain::WithheldLocks {
        root: B256::repeat_byte(9),
        total: Amount(5_000),
    };
    let locked = ChannelState {
        version: 12,
        ..ChannelState::opening(v, [Amount(0), Amount(45_000)])
    };
    let out = net.nodes[1].handle_chain(
        net.now,
        ChainEvent::RegisteredWithheld {
            channel_id: v,
            state: Box::new(locked.clone()),
            locks,
            finalizes_at: NOW.0 + 7200,
        },
    );
    let withheld: Vec<_> = out
        .intents()
        .filter_map(|i| match i {
            Intent::ResolveGuarantee(r) => Some((r.virt_state.clone(), r.withheld)),
            _ => None,
        })
        .collect();
    assert_eq!(
        withheld,
        vec![(locked.clone(), Some(locks)), (locked, Some(locks))]
    );
    net.carry(1, out);
    assert_eq!(net.disks[1], net.nodes[1].records());
}

/// The channels `out` takes to chain with a close.
fn closes(out: &Output) -> Vec<ChannelId> {
    intents(out)
        .iter()
        .filter_map(|i| match i {
            Intent::Close { params, .. } => Some(params.id()),
            _ => None,
        })
        .collect()
}

/// A virtual channel's `AnnounceSig` that its party did not sign is refused by the other
/// party, which then does not believe the channel: A's signature is replaced on its way to the
/// hub, first by the hub's signature, then by A's own over other figures (as a relaying hub
/// could try). And one handed to the party by a node that is not the channel's hub is refused
/// as not its channel. The honest direction still works: A believes the channel with B's
/// signature, so the refusals come from the forgeries, not from the set-up.
#[test]
fn a_virtual_channels_announce_sig_its_party_did_not_sign_is_refused() {
    let mut net = Net::new(Config {
        announce: true,
        ..virtual_config()
    });
    let (hub, payee, payer) = (net.addr(1), net.addr(2), net.addr(0));
    let out = net.nodes[0].set_virtual_policy(hub, virtual_policy());
    net.carry(0, out);
    let out = net.nodes[0]
        .open_virtual(net.now, hub, payee, Amount(50_000), U256::from(1), 3600)
        .unwrap();
    net.carry(0, out);
    let mut forged = 0;
    for _ in 0..20 {
        for (from, _, f) in &mut net.wire {
            if *from != 0 {
                continue;
            }
            if let Frame::Msg {
                body: Body::RelayRoute { to, body },
                ..
            } = f
                && *to == payee
                && let Body::AnnounceSig { sig, .. } = &mut **body
            {
                // The hub's key, then A's own over another digest.
                let signer = if forged == 0 { keys(2) } else { keys(1) };
                *sig = signer.sign_digest(B256::repeat_byte(0x5a));
                forged += 1;
            }
        }
        net.round();
    }
    let v = net.opened(2).expect("the payee saw it open");
    assert!(
        forged >= 2,
        "both of A's signatures went through the hub: {forged}"
    );
    assert!(
        net.nodes[0].book().gossip.contains_key(&v),
        "A believes the channel by B's signature"
    );
    assert!(
        !net.nodes[2].book().gossip.contains_key(&v),
        "B believes no announcement A did not sign"
    );
    let refusals = net.events[1]
        .iter()
        .filter(|e| {
            matches!(e, NodeEvent::RefusedByPeer { peer, code: ErrorCode::Protocol, .. }
                if *peer == payee)
        })
        .count();
    assert_eq!(
        refusals, forged,
        "B refused each forged signature to the hub"
    );

    // A stranger to the channel (here a node that is not its hub: A itself, as if it were a
    // hub) hands B a valid-looking relayed signature: not B's channel over that node.
    let real = net.nodes[2].book().virtuals[&v].clone();
    let sig = keys(1).sign_digest(crate::node::gossip::virtual_announcement_digest(
        &real.terms.params,
        real.terms.value().unwrap(),
        real.terms.expires_at.0,
    ));
    let policy = crate::node::gossip::PolicyUpdate::sign(v, policy(), net.now.0, &keys(1));
    let out = net.nodes[2].handle_frame(
        net.now,
        payer,
        Frame::Msg {
            seq: 1,
            body: Body::RelayedRoute {
                from: payer,
                body: Box::new(Body::AnnounceSig {
                    channel_id: v,
                    sig,
                    policy: Box::new(policy),
                }),
            },
        },
    );
    assert!(
        out.transmits.iter().any(|(to, f)| *to == payer
            && matches!(
                f,
                Frame::Msg {
                    body: Body::Refused {
                        code: ErrorCode::UnknownChannel,
                        ..
                    },
                    ..
                }
            )),
        "{:?}",
        out.transmits
    );
    assert!(
        out.writes
            .iter()
            .all(|w| matches!(w, Write::Received { .. } | Write::Sent { .. })),
        "only the link's numbering is written: {:?}",
        out.writes
    );
    assert!(!net.nodes[2].book().gossip.contains_key(&v));
}
