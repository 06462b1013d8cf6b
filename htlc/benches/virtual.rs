//! A virtual channel over one hub, in process (three node machines, no disk, no network):
//! the CPU cost of opening one, of a payment inside it (relayed by the hub), and of closing it
//! (both legs released). What the machines do, not what the disk and the network add.
//!
//! Run: `cargo bench -p htlc --bench virtual`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use alloy::primitives::{Address, U256};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use htlc::ids::Expiry;
use htlc::node::{Config, Frame, Node, NodeEvent, Output};
use htlc::ops::Limits;
use htlc::sig::Keys;
use htlc::update::sign_state;
use htlc::vchan::VirtualPolicy;
use htlc::{Amount, Channel, ChannelId, ChannelParams, ChannelState, SignedState};
use std::collections::VecDeque;
use std::time::Duration;

const NOW: Expiry = Expiry(1_700_000_000);
const FUNDS: u128 = 1_000_000_000_000;

fn keys(b: u8) -> Keys {
    Keys::from_bytes([b; 32]).unwrap()
}

fn ledger(a: &Keys, b: &Keys, nonce: u64) -> (Channel, Channel) {
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
    (
        Channel::from_cosigned(params.clone(), a.clone(), Limits::default(), s.clone()).unwrap(),
        Channel::from_cosigned(params, b.clone(), Limits::default(), s).unwrap(),
    )
}

/// Payer 0, hub 1, payee 2, with ledgers 0–1 and 1–2 (the hub funds the second).
struct Net {
    nodes: Vec<Node>,
    wire: VecDeque<(usize, usize, Frame)>,
    events: Vec<NodeEvent>,
}

impl Net {
    fn new() -> Net {
        let config = Config {
            virtual_policy: Some(VirtualPolicy::default()),
            ..Config::default()
        };
        let mut nodes: Vec<Node> = (1..=3u8)
            .map(|b| Node::new(keys(b), config.clone()))
            .collect();
        let (p, h1) = ledger(&keys(1), &keys(2), 1);
        let (h2, q) = ledger(&keys(2), &keys(3), 2);
        nodes[0].add_channel(keys(2).address(), p).unwrap();
        nodes[1].add_channel(keys(1).address(), h1).unwrap();
        nodes[1].add_channel(keys(3).address(), h2).unwrap();
        nodes[2].add_channel(keys(2).address(), q).unwrap();
        nodes[0].set_virtual_policy(keys(2).address(), VirtualPolicy::default());
        Net {
            nodes,
            wire: VecDeque::new(),
            events: Vec::new(),
        }
    }

    fn push(&mut self, from: usize, out: Output) {
        self.events.extend(out.events);
        for (to, f) in out.transmits {
            if let Some(i) = self.nodes.iter().position(|n| n.address() == to) {
                self.wire.push_back((from, i, f));
            }
        }
    }

    fn run(&mut self) {
        while let Some((from, to, f)) = self.wire.pop_front() {
            let from_addr = self.nodes[from].address();
            let out = self.nodes[to].handle_frame(NOW, from_addr, f);
            self.push(to, out);
        }
    }

    fn open(&mut self) -> ChannelId {
        let (hub, payee) = (self.nodes[1].address(), self.nodes[2].address());
        let out = self.nodes[0]
            .open_virtual(NOW, hub, payee, Amount(FUNDS / 2), U256::from(7), 3600)
            .unwrap();
        self.push(0, out);
        self.run();
        self.events
            .iter()
            .find_map(|e| match e {
                NodeEvent::VirtualOpened { channel_id, .. } => Some(*channel_id),
                _ => None,
            })
            .expect("opened")
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("virtual channel, in process");
    g.bench_function("open over one hub (both legs, both signatures)", |b| {
        b.iter_batched(Net::new, |mut net| net.open(), BatchSize::SmallInput)
    });
    g.bench_function("payment inside it (relayed, co-signed)", |b| {
        let mut net = Net::new();
        let v = net.open();
        b.iter(|| {
            let out = net.nodes[0].transfer(NOW, v, Amount(1)).unwrap();
            net.push(0, out);
            net.run();
        })
    });
    g.bench_function("close (final state, both legs released)", |b| {
        b.iter_batched(
            || {
                let mut net = Net::new();
                let v = net.open();
                (net, v)
            },
            |(mut net, v)| {
                let out = net.nodes[2].close(NOW, v).unwrap();
                net.push(2, out);
                net.run();
                assert!(
                    net.events
                        .iter()
                        .any(|e| matches!(e, NodeEvent::VirtualSettled { .. }))
                );
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = group;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(group);
