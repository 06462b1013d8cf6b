//! Payer → hub → payee HTLC payments through the real protocol machines, in process.
//!
//! Two ledger channels, payer–hub and hub–payee. A payment locks an HTLC from the payer to the
//! hub; once it is co-signed the hub runs its forwarding decision and locks one toward the
//! payee; the payee reveals the preimage; the hub learns it and claims upstream. Every state is
//! signed and verified exactly as between real parties; only the transport is a queue.

use htlc::forward::{ForwardPolicy, NextHop};
use htlc::ids::{Expiry, Hashlock, HtlcId, Preimage};
use htlc::node::payment::{
    ForwardRecord, InvoiceTerms, Known, Step, Upstream, concerns_payments, on_committed, outcomes,
    plan,
};
use htlc::ops::Limits;
use htlc::sig::Keys;
use htlc::{Amount, Channel, Effect, Event, Message};
use std::collections::{HashMap, VecDeque};

use crate::sim::signed::open_pair;

/// Who is who in the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    /// Pays.
    Payer,
    /// Forwards and earns fees.
    Hub,
    /// Gets paid.
    Payee,
}

/// Outcome counters of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Payments whose preimage reached the payer's channel (settled on both hops).
    pub succeeded: u64,
    /// Payments failed back to the payer.
    pub failed: u64,
    /// Co-signed updates on both channels (each is two signatures and two verifications).
    pub updates: u64,
}

/// The three parties and their two channels.
pub struct Relay {
    /// Payer's side of payer–hub (payer is A).
    payer_up: Channel,
    /// Hub's side of payer–hub.
    hub_in: Channel,
    /// Hub's side of hub–payee (hub is A).
    hub_out: Channel,
    /// Payee's side of hub–payee.
    payee_down: Channel,
    queue: VecDeque<(Node, bool, Message)>,
    policy: ForwardPolicy,
    /// Hashlock → next hop the payer asked for (in the hub this travels with the HTLC).
    instructions: HashMap<Hashlock, NextHop>,
    /// Hashlock → the payee's invoice.
    invoices: HashMap<Hashlock, InvoiceTerms>,
    /// Outgoing lock id → the hub's record of the forward.
    forwards: HashMap<HtlcId, ForwardRecord>,
    now: Expiry,
    /// What happened so far.
    pub tally: Tally,
}

impl Relay {
    /// Open both channels: the payer funds `payer_funds`, the hub `hub_funds` toward the payee.
    pub fn new(payer_funds: u128, hub_funds: u128, policy: ForwardPolicy) -> anyhow::Result<Self> {
        let key = |b: u8| Keys::from_bytes([b; 32]).ok_or_else(|| anyhow::anyhow!("bad key"));
        let (payer, hub, payee) = (key(0x01)?, key(0x02)?, key(0x03)?);
        let limits = Limits::default();
        let [payer_up, hub_in] =
            open_pair([&payer, &hub], [Amount(payer_funds), Amount(0)], limits, 1)?;
        let [hub_out, payee_down] =
            open_pair([&hub, &payee], [Amount(hub_funds), Amount(0)], limits, 2)?;
        Ok(Relay {
            payer_up,
            hub_in,
            hub_out,
            payee_down,
            queue: VecDeque::new(),
            policy,
            instructions: HashMap::new(),
            invoices: HashMap::new(),
            forwards: HashMap::new(),
            now: Expiry(1_700_000_000),
            tally: Tally::default(),
        })
    }

    /// Free balances: payer, hub (both channels), payee.
    pub fn balances(&self) -> [Amount; 4] {
        let up = &self.hub_in.latest().state.balances;
        let down = &self.hub_out.latest().state.balances;
        [up[0], up[1], down[0], down[1]]
    }

    /// Queue a payment of `amount` to the payee: the payee makes an invoice, the payer locks
    /// `amount + fee` toward the hub with an expiry leaving the hub its delta.
    pub fn pay(&mut self, amount: Amount, secret: [u8; 32]) -> anyhow::Result<()> {
        let preimage = Preimage(secret);
        let hashlock = preimage.hashlock();
        self.invoices.insert(
            hashlock,
            InvoiceTerms {
                amount,
                expires_at: Expiry(self.now.0 + 3600),
                preimage,
                paid: false,
            },
        );
        // Priced as the hub binary's payers price it.
        let available = self.payer_up.snapshot().free_balance();
        let plan = plan(amount, 2 * 3600, &self.policy, available, self.now)?;
        self.instructions.insert(hashlock, plan.next);
        self.payer_up.offer_htlc(plan.sent, hashlock, plan.expiry);
        Ok(())
    }

    fn channel(&mut self, node: Node, upstream: bool) -> &mut Channel {
        match (node, upstream) {
            (Node::Payer, _) => &mut self.payer_up,
            (Node::Hub, true) => &mut self.hub_in,
            (Node::Hub, false) => &mut self.hub_out,
            (Node::Payee, _) => &mut self.payee_down,
        }
    }

    /// Where a message sent by `node` on its `upstream` (payer–hub) or downstream channel goes.
    fn peer(node: Node, upstream: bool) -> Node {
        match (node, upstream) {
            (Node::Payer, _) => Node::Hub,
            (Node::Hub, true) => Node::Payer,
            (Node::Hub, false) => Node::Payee,
            (Node::Payee, _) => Node::Hub,
        }
    }

    fn carry(&mut self, node: Node, upstream: bool, effects: Vec<Effect>) -> anyhow::Result<()> {
        for e in effects {
            match e {
                // In process there is no disk: persisting is the snapshot the machine keeps.
                Effect::Persist => {}
                Effect::Send(m) => {
                    self.queue
                        .push_back((Self::peer(node, upstream), upstream, m));
                }
                Effect::Event(ev) => self.on_event(node, upstream, ev)?,
            }
        }
        Ok(())
    }

    fn on_event(&mut self, node: Node, upstream: bool, ev: Event) -> anyhow::Result<()> {
        match (node, upstream, ev) {
            (Node::Hub, true, Event::HtlcReceived(h)) => {
                // The hub's step, exactly as the hub binary takes it (`htlc::node::payment`).
                let lock = *h.lock();
                let next = self.instructions.get(&lock.hashlock).copied();
                let outgoing = self.hub_out.outgoing(self.policy);
                let known = match &next {
                    Some(next) => Known::Route {
                        next,
                        outgoing: Some(&outgoing),
                        incoming_frozen: false,
                    },
                    None => Known::Nothing { we_opened: false },
                };
                match on_committed(&h, known, self.now) {
                    Step::Forward(fwd) => {
                        let out_id = self
                            .hub_out
                            .offer_htlc(fwd.amount, fwd.hashlock, fwd.expiry);
                        self.forwards.insert(
                            out_id,
                            ForwardRecord::new(
                                (h.channel_id(), lock.id),
                                (self.hub_out.id(), out_id),
                                &fwd,
                            ),
                        );
                    }
                    Step::Fail(reason) => {
                        self.hub_in.fail_htlc(lock.id, reason);
                        self.tally.failed += 1;
                    }
                    Step::Claim(_) => return Err(anyhow::anyhow!("the hub holds no invoice")),
                }
            }
            (Node::Payee, _, Event::HtlcReceived(h)) => {
                let lock = *h.lock();
                let known = match self.invoices.get(&lock.hashlock) {
                    Some(terms) => Known::Invoice(terms),
                    None => Known::Nothing { we_opened: false },
                };
                match on_committed(&h, known, self.now) {
                    Step::Claim(preimage) => {
                        self.payee_down.fulfill_htlc(lock.id, preimage);
                        if let Some(t) = self.invoices.get_mut(&lock.hashlock) {
                            t.paid = true;
                        }
                    }
                    Step::Fail(reason) => self.payee_down.fail_htlc(lock.id, reason),
                    Step::Forward(_) => return Err(anyhow::anyhow!("the payee forwards nothing")),
                }
            }
            (Node::Hub, false, ev) if concerns_payments(&ev) => {
                // Rules 4 and 5: learn how the outgoing HTLC ended, then settle upstream.
                for (id, outcome) in outcomes(&ev) {
                    let Some(f) = self.forwards.get_mut(&id) else {
                        continue;
                    };
                    f.learn(outcome);
                    match f.upstream() {
                        Some(Upstream::Fulfill(p)) => self.hub_in.fulfill_htlc(f.in_id, p),
                        Some(Upstream::Fail(r)) => {
                            self.hub_in.fail_htlc(f.in_id, r);
                            self.tally.failed += 1;
                        }
                        None => continue,
                    }
                    self.forwards.remove(&id);
                }
                if let Event::Committed { .. } = ev {
                    self.tally.updates += 1;
                }
            }
            // Both sides see every commitment; count each channel's once, at the payer and at
            // the hub's downstream side.
            (Node::Payer, _, Event::Committed { ops, .. }) => {
                self.tally.updates += 1;
                let settled = ops
                    .iter()
                    .filter(|op| matches!(op, htlc::Op::FulfillHtlc { .. }))
                    .count();
                self.tally.succeeded += settled as u64;
            }
            (Node::Hub, false, Event::Committed { .. }) => self.tally.updates += 1,
            _ => {}
        }
        Ok(())
    }

    /// Propose what every machine has queued and deliver messages until all are quiet.
    pub fn run(&mut self) -> anyhow::Result<()> {
        loop {
            for (node, up) in [
                (Node::Payer, true),
                (Node::Hub, true),
                (Node::Hub, false),
                (Node::Payee, false),
            ] {
                let now = self.now;
                let effects = self.channel(node, up).propose(now)?;
                self.carry(node, up, effects)?;
            }
            if self.queue.is_empty() {
                return Ok(());
            }
            while let Some((to, up, msg)) = self.queue.pop_front() {
                let now = self.now;
                let effects = self.channel(to, up).handle(msg, now)?;
                self.carry(to, up, effects)?;
            }
        }
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
