//! Payer → hub → payee HTLC payments through the node machines, in process.
//!
//! Three [`htlc::node::Node`]s (the machine the hub binary pumps) with two ledger channels,
//! payer–hub and hub–payee. A payment sends the hub its route instruction and locks an HTLC;
//! once it is co-signed the hub's node forwards it; the payee's node reveals the preimage;
//! the hub's node learns it and claims upstream. Every state is signed and verified exactly
//! as between real parties; only the transport is a queue and the disk is dropped.

use htlc::forward::ForwardPolicy;
use htlc::ids::{Expiry, Preimage};
use htlc::node::invoice::Invoice;
use htlc::node::{Config, Node, NodeEvent, Output};
use htlc::ops::Limits;
use htlc::sig::Keys;
use htlc::{Amount, ChannelId};
use std::collections::VecDeque;

use crate::sim::signed::open_pair;

/// Outcome counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Payments whose preimage reached the payer (settled on both hops).
    pub succeeded: u64,
    /// Payments failed back to the payer.
    pub failed: u64,
    /// Co-signed updates on both channels (each is two signatures and two verifications).
    pub updates: u64,
}

const PAYER: usize = 0;
const HUB: usize = 1;
const PAYEE: usize = 2;

/// The three parties and their two channels.
pub struct Relay {
    nodes: [Node; 3],
    /// Frames in flight: (from, to, frame).
    queue: VecDeque<(usize, usize, htlc::node::Frame)>,
    up: ChannelId,
    down: ChannelId,
    /// Payments queued for the next run.
    orders: Vec<(alloy::primitives::B256, Invoice)>,
    now: Expiry,
    /// What happened so far.
    pub tally: Tally,
}

impl Relay {
    /// Open both channels: the payer funds `payer_funds`, the hub `hub_funds` toward the payee.
    pub fn new(payer_funds: u128, hub_funds: u128, policy: ForwardPolicy) -> anyhow::Result<Self> {
        let key = |b: u8| Keys::from_bytes([b; 32]).ok_or_else(|| anyhow::anyhow!("bad key"));
        let keys = [key(0x01)?, key(0x02)?, key(0x03)?];
        let limits = Limits::default();
        let [payer_up, hub_in] = open_pair(
            [&keys[PAYER], &keys[HUB]],
            [Amount(payer_funds), Amount(0)],
            limits,
            1,
        )?;
        let [hub_out, payee_down] = open_pair(
            [&keys[HUB], &keys[PAYEE]],
            [Amount(hub_funds), Amount(0)],
            limits,
            2,
        )?;
        let (up, down) = (payer_up.id(), hub_out.id());
        let config = Config {
            policy,
            ..Config::default()
        };
        let mut nodes = keys.clone().map(|k| Node::new(k, config.clone()));
        let a = |i: usize| keys[i].address();
        nodes[PAYER].add_channel(a(HUB), payer_up)?;
        nodes[HUB].add_channel(a(PAYER), hub_in)?;
        nodes[HUB].add_channel(a(PAYEE), hub_out)?;
        nodes[PAYEE].add_channel(a(HUB), payee_down)?;
        // The payer routes with the hub's policy (in band it comes with the channel's
        // acceptance).
        let hub_key = nodes[HUB].public_key();
        nodes[PAYER].set_policy(a(HUB), policy, hub_key);
        Ok(Relay {
            nodes,
            queue: VecDeque::new(),
            up,
            down,
            orders: Vec::new(),
            now: Expiry(1_700_000_000),
            tally: Tally::default(),
        })
    }

    /// Free balances: payer, hub (both channels), payee.
    pub fn balances(&self) -> [Amount; 4] {
        let state = |n: usize, id: ChannelId| {
            self.nodes[n]
                .channel(id)
                .map(|c| c.latest().state.balances)
                .unwrap_or_default()
        };
        let up = state(HUB, self.up);
        let down = state(HUB, self.down);
        [up[0], up[1], down[0], down[1]]
    }

    /// Queue a payment of `amount` to the payee: the payee makes an invoice; the payer pays
    /// it through the hub with the next [`Relay::run`], with every payment queued before it,
    /// priced with the hub's policy (as the hub binary's payers price it).
    pub fn pay(&mut self, amount: Amount, secret: [u8; 32]) -> anyhow::Result<()> {
        let preimage = Preimage(secret);
        let hashlock = preimage.hashlock();
        let invoice = Invoice {
            payee: self.nodes[PAYEE].address(),
            payee_key: self.nodes[PAYEE].public_key(),
            hub: self.nodes[HUB].address(),
            amount,
            hashlock,
            expires_at: self.now.0 + 3600,
            final_expiry_delta: 2 * 3600,
        };
        let out = self.nodes[PAYEE].add_invoice(invoice.clone(), preimage)?;
        self.carry(PAYEE, out);
        let order = (alloy::primitives::B256::from(secret), invoice);
        self.orders.push(order);
        Ok(())
    }

    /// A node's output: in process there is no disk, so the writes are dropped; the frames
    /// are queued and the events counted.
    fn carry(&mut self, from: usize, out: Output) {
        for (to, frame) in out.transmits {
            if let Some(to) = self.nodes.iter().position(|n| n.address() == to) {
                self.queue.push_back((from, to, frame));
            }
        }
        for ev in out.events {
            match (from, ev) {
                (PAYER, NodeEvent::PaymentSucceeded { .. }) => self.tally.succeeded += 1,
                (PAYER, NodeEvent::PaymentFailed { .. }) => self.tally.failed += 1,
                // The hub is party to both channels: each co-signed state once.
                (HUB, NodeEvent::Committed { .. }) => self.tally.updates += 1,
                _ => {}
            }
        }
    }

    /// Pay what was queued (one signed update for all of it), then deliver frames until all
    /// are quiet.
    pub fn run(&mut self) -> anyhow::Result<()> {
        let orders = std::mem::take(&mut self.orders);
        let (out, results) = self.nodes[PAYER].pay_batch(self.now, &orders);
        self.carry(PAYER, out);
        for r in results {
            r?;
        }
        while let Some((from, to, frame)) = self.queue.pop_front() {
            let from = self.nodes[from].address();
            let out = self.nodes[to].handle_frame(self.now, from, frame);
            self.carry(to, out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payments_settle_on_both_hops_with_the_policy_fee() {
        let policy = ForwardPolicy {
            base_fee: Amount(10),
            fee_ppm: 1_000,
            ..ForwardPolicy::default()
        };
        let mut r = Relay::new(1_000_000, 1_000_000, policy).unwrap();
        for i in 0..25u8 {
            r.pay(Amount(10_000), [i; 32]).unwrap();
        }
        r.run().unwrap();
        // fee = 10 + 10_000 * 1000 / 1e6 = 20 per payment.
        let [payer, hub_up, hub_down, payee] = r.balances();
        assert_eq!(payer, Amount(1_000_000 - 25 * 10_020));
        assert_eq!(hub_up, Amount(25 * 10_020));
        assert_eq!(hub_down, Amount(1_000_000 - 25 * 10_000));
        assert_eq!(payee, Amount(25 * 10_000));
        assert_eq!(r.tally.succeeded, 25);
        // Hub earned exactly the fee: (up + down) - initial hub funds.
        assert_eq!(hub_up.0 + hub_down.0 - 1_000_000, 25 * 20);
    }

    #[test]
    fn a_payment_the_hub_cannot_carry_fails_back_and_refunds() {
        let mut r = Relay::new(1_000_000, 5_000, ForwardPolicy::default()).unwrap();
        r.pay(Amount(10_000), [9; 32]).unwrap();
        r.run().unwrap();
        assert_eq!(r.tally.failed, 1);
        assert_eq!(r.tally.succeeded, 0);
        assert_eq!(
            r.balances(),
            [Amount(1_000_000), Amount(0), Amount(5_000), Amount(0)]
        );
    }
}
