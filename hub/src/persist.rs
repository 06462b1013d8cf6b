//! Where the node machine's records live in RocksDB: each [`Write`] of a step becomes part of
//! one [`Batch`], and [`load`] reads everything back into the [`Records`] the machine is
//! restored from.
//!
//! Keys (unchanged from the earlier layout, so a store written by it is read as it was):
//!
//! | column | key | value |
//! |---|---|---|
//! | `channels` | channel id | [`ChannelRecord`] |
//! | `outbox` | peer (20) ‖ seq (8, BE) | the encoded wire frame `Msg { seq, body }` |
//! | `meta` | `send‹peer›` / `recv‹peer›` | next number to give / last number processed |
//! | `meta` | `policy‹peer›` | the forwarding policy that hub announced |
//! | `meta` | `nodekey‹node›` | that node's public key (its onion key) |
//! | `meta` | `gossip/‹channel›` | [`GossipChannel`]: an announced channel we believe |
//! | `locks` | `route/‹channel›‹htlc id›` | [`Route`]: our onion layer for that HTLC |
//! | `locks` | `fwd/‹out channel›‹out id›` | [`ForwardRecord`] |
//! | `locks` | `in/‹in channel›‹in id›` | the outgoing (channel, id) |
//! | `locks` | `invoice/‹hashlock›` | [`InvoiceRecord`] |
//! | `locks` | `pay/‹payment id›` | [`PaymentRecord`] |
//! | `chain` | [`Intent::key`] | [`Intent`] |
//! | `locks` | `watch/‹channel›` | [`Watched`] (a watchtower's) |
//! | `locks` | `virtual/‹channel›` | [`VirtualRecord`] (ADR 0026) |
//! | `meta` | `vpolicy‹peer›` | the virtual-channel rules that hub announced |
//! | `meta` | `partypolicyat‹peer›` | the date of the newest signed policy that virtual channel's party sent over its hub |

use crate::store::{Batch, Cf, Store, StoreError};
use crate::wire::{self, Frame};
use alloy::primitives::{Address, B256};
use htlc::forward::ForwardPolicy;
use htlc::node::gossip::GossipChannel;
use htlc::node::payment::ForwardRecord;
use htlc::node::records::{
    ChannelRecord, InvoiceRecord, LinkRecord, PaymentRecord, Route, VirtualRecord,
};
use htlc::node::tower::Watched;
use htlc::node::{Node as Machine, Records, Write};
use htlc::vchan::VirtualPolicy;
use htlc::{ChannelId, Hashlock, HtlcId};
use secp256k1::PublicKey;

fn key2(tag: &str, a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut k = tag.as_bytes().to_vec();
    k.extend_from_slice(a);
    k.extend_from_slice(b);
    k
}

/// Key of a route instruction.
pub(crate) fn route_key(channel: ChannelId, id: HtlcId) -> Vec<u8> {
    key2("route/", channel.0.as_slice(), &id.0.to_be_bytes())
}
fn fwd_key(channel: ChannelId, id: HtlcId) -> Vec<u8> {
    key2("fwd/", channel.0.as_slice(), &id.0.to_be_bytes())
}
fn in_key(channel: ChannelId, id: HtlcId) -> Vec<u8> {
    key2("in/", channel.0.as_slice(), &id.0.to_be_bytes())
}
fn invoice_key(hashlock: Hashlock) -> Vec<u8> {
    key2("invoice/", hashlock.0.as_slice(), &[])
}
fn watch_key(id: ChannelId) -> Vec<u8> {
    key2("watch/", id.0.as_slice(), &[])
}
fn virtual_key(id: ChannelId) -> Vec<u8> {
    key2("virtual/", id.0.as_slice(), &[])
}
fn pay_key(id: B256) -> Vec<u8> {
    key2("pay/", id.as_slice(), &[])
}
/// Key of a per-peer value in the `meta` column.
pub(crate) fn meta_key(kind: &str, peer: Address) -> Vec<u8> {
    let mut k = kind.as_bytes().to_vec();
    k.extend_from_slice(peer.as_slice());
    k
}
/// Key of an announced channel's gossip record.
fn gossip_key(id: ChannelId) -> Vec<u8> {
    [b"gossip/".as_slice(), id.0.as_slice()].concat()
}

/// Key of one outbox frame.
fn outbox_key(peer: Address, seq: u64) -> Vec<u8> {
    let mut k = peer.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Whether a step's writes may reach the disk without a sync of their own
/// ([`Batch::without_sync`]): only invoices handed out and not yet paid, with nothing sent.
/// Losing such an invoice in a crash fails a payment of it back (the payee no longer knows
/// its hashlock: nobody loses money, rule 2 covers states, not invoices); whatever acts on it
/// (the claim, which also marks it paid) is a later step, synced, whose sync makes the
/// invoice durable with it since the log is written in order.
pub(crate) fn needs_no_sync(out: &htlc::node::Output) -> bool {
    out.transmits.is_empty()
        && !out.writes.is_empty()
        && out
            .writes
            .iter()
            .all(|w| matches!(w, Write::Invoice { record, .. } if !record.paid))
}

/// Add the writes of the machine's latest step to `batch`. Channel records and message
/// bodies are read from `machine` as it stands after the step (the writes carry no copies).
pub(crate) fn fill(
    batch: &mut Batch,
    writes: &[Write],
    machine: &Machine,
) -> Result<(), StoreError> {
    for w in writes {
        match w {
            Write::Channel { id } => {
                if let Some(rec) = machine.channel_record_ref(*id) {
                    batch.put(Cf::Channels, id.0.as_slice(), &rec)?;
                }
            }
            Write::ForgetChannel { id } => batch.delete(Cf::Channels, id.0.as_slice()),
            Write::Sent { peer, seq } => {
                if let Some(body) = machine.unacked(*peer, *seq) {
                    let bytes = wire::encode(&Frame::Msg {
                        seq: *seq,
                        body: body.clone(),
                    })
                    .map_err(|e| StoreError::Write(e.to_string()))?;
                    batch.put_raw(Cf::Outbox, &outbox_key(*peer, *seq), bytes);
                }
                batch.put(Cf::Meta, &meta_key("send", *peer), &seq.saturating_add(1))?;
            }
            Write::Acked { peer, seqs } => {
                for s in seqs.clone() {
                    batch.delete(Cf::Outbox, &outbox_key(*peer, s));
                }
            }
            Write::Received { peer, seq } => batch.put(Cf::Meta, &meta_key("recv", *peer), seq)?,
            Write::Route { key, route } => match route {
                Some(r) => batch.put(Cf::Locks, &route_key(key.0, key.1), r)?,
                None => batch.delete(Cf::Locks, &route_key(key.0, key.1)),
            },
            Write::Forward { out, record } => {
                batch.put(Cf::Locks, &fwd_key(out.0, out.1), record)?
            }
            Write::ForwardedIn { incoming, out } => {
                batch.put(Cf::Locks, &in_key(incoming.0, incoming.1), out)?
            }
            Write::Invoice { hashlock, record } => {
                batch.put(Cf::Locks, &invoice_key(*hashlock), &**record)?
            }
            Write::Payment { record } => batch.put(Cf::Locks, &pay_key(record.id), &**record)?,
            Write::Policy { peer, policy } => {
                batch.put(Cf::Meta, &meta_key("policy", *peer), policy)?
            }
            Write::PartyPolicyAt { peer, timestamp } => {
                batch.put(Cf::Meta, &meta_key("partypolicyat", *peer), timestamp)?
            }
            Write::NodeKey { node, key } => {
                batch.put(Cf::Meta, &meta_key("nodekey", *node), key)?
            }
            Write::Gossip { id, record } => match record {
                Some(c) => batch.put(Cf::Meta, &gossip_key(*id), &**c)?,
                None => batch.delete(Cf::Meta, &gossip_key(*id)),
            },
            Write::Intent(intent) => batch.put(Cf::Chain, &intent.key(), &**intent)?,
            Write::Watched { id, record } => match record {
                Some(w) => batch.put(Cf::Locks, &watch_key(*id), &**w)?,
                None => batch.delete(Cf::Locks, &watch_key(*id)),
            },
            Write::Virtual { id, record } => batch.put(Cf::Locks, &virtual_key(*id), &**record)?,
            Write::VirtualPolicy { peer, policy } => {
                batch.put(Cf::Meta, &meta_key("vpolicy", *peer), policy)?
            }
        }
    }
    Ok(())
}

/// The layout of the records above, stored under `meta` key `schema` (a store without it is
/// new). Raise it with any change a reader of the older layout would misread, and teach
/// [`check_schema`] to migrate.
///
/// 2: onion routing (ADR 0027): route instructions, invoices, payments, forwards and the
/// link's queued messages changed shape. Schema 1 stores are refused (no migration: close
/// their channels with the hub that wrote them).
///
/// 3: a guarantee signs the bound by which its virtual channel's locks settle
/// (`Guarantee::locks_until`), and channel limits carry the latest expiry a lock may have
/// (ADR 0026), and a route instruction may be plain (ADR 0029). Schema 2 stores are refused
/// likewise.
///
/// 4: a virtual channel's record names the hubs after us on its path with their fees
/// (`VirtualRecord::onward`, chains of hubs, ADR 0026). Schema 3 stores are refused likewise.
///
/// 5: a believed announcement may be a virtual channel's (`GossipChannel::virtual_until`, and
/// the gossip frame that carries it). Schema 4 stores are refused likewise.
///
/// 6: a virtual channel's record and a resolution intent may carry the root and total of
/// locks the chain showed without them (`VirtualRecord::withheld`, `Resolution::withheld`).
/// Schema 5 stores are refused likewise.
pub const SCHEMA: u32 = 6;

const SCHEMA_KEY: &[u8] = b"schema";

/// Refuse a store written by a newer hub (its records may not read as ours), and mark an older
/// or new one with [`SCHEMA`].
pub(crate) fn check_schema(store: &Store) -> Result<(), SchemaError> {
    match store.get::<u32>(Cf::Meta, SCHEMA_KEY)? {
        Some(found) if found > SCHEMA => Err(SchemaError::Newer {
            found,
            supported: SCHEMA,
        }),
        Some(found) if found < SCHEMA => Err(SchemaError::Older {
            found,
            supported: SCHEMA,
        }),
        Some(_) => Ok(()),
        None => {
            let mut b = Batch::new();
            b.put(Cf::Meta, SCHEMA_KEY, &SCHEMA)?;
            store.commit_blocking(b)?;
            Ok(())
        }
    }
}

/// A store this hub cannot read.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Written by a newer hub.
    #[error(
        "the data directory was written by a newer hub (store schema {found}; this hub reads up to {supported}): run that version, or start with an empty data_dir"
    )]
    Newer {
        /// The schema found.
        found: u32,
        /// The newest this hub reads.
        supported: u32,
    },
    /// Written by an older hub whose layout this one does not migrate.
    #[error(
        "the data directory was written by an older hub (store schema {found}; this hub reads {supported}): close its channels with that version, or start with an empty data_dir"
    )]
    Older {
        /// The schema found.
        found: u32,
        /// The one this hub reads.
        supported: u32,
    },
    /// Reading or writing it failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn tail<const N: usize>(key: &[u8], from: usize) -> Option<[u8; N]> {
    key.get(from..from + N)
        .and_then(|b| <[u8; N]>::try_from(b).ok())
}

/// Read every record of the node machine back from the store.
pub(crate) fn load(store: &Store) -> Result<Records, StoreError> {
    let mut r = Records::default();
    for (_, rec) in store.scan::<ChannelRecord>(Cf::Channels, &[])? {
        r.channels
            .insert(rec.snapshot.latest().state.channel_id, rec);
    }
    for (kind, set) in [("send", true), ("recv", false)] {
        for (k, v) in store.scan::<u64>(Cf::Meta, kind.as_bytes())? {
            let Some(a) = tail::<20>(&k, kind.len()) else {
                continue;
            };
            let l = r
                .links
                .entry(Address::from(a))
                .or_insert_with(LinkRecord::default);
            if set {
                l.next_send = v.max(1);
            } else {
                l.received = v;
            }
        }
    }
    for (k, bytes) in store.scan_raw(Cf::Outbox, &[])? {
        let (Some(a), Some(s)) = (tail::<20>(&k, 0), tail::<8>(&k, 20)) else {
            continue;
        };
        if let Ok(Frame::Msg { body, .. }) = wire::decode(&bytes, usize::MAX) {
            let l = r
                .links
                .entry(Address::from(a))
                .or_insert_with(LinkRecord::default);
            let seq = u64::from_be_bytes(s);
            l.next_send = l.next_send.max(seq.saturating_add(1));
            l.unacked.insert(seq, body);
        }
    }
    for (k, policy) in store.scan::<ForwardPolicy>(Cf::Meta, b"policy")? {
        if let Some(a) = tail::<20>(&k, 6) {
            r.book.policies.insert(Address::from(a), policy);
        }
    }
    for (k, at) in store.scan::<u64>(Cf::Meta, b"partypolicyat")? {
        if let Some(a) = tail::<20>(&k, 13) {
            r.book.party_policy_at.insert(Address::from(a), at);
        }
    }
    for (k, c) in store.scan::<GossipChannel>(Cf::Meta, b"gossip/")? {
        if let Some(id) = tail::<32>(&k, 7) {
            r.book.gossip.insert(ChannelId(id.into()), c);
        }
    }
    for (k, key) in store.scan::<PublicKey>(Cf::Meta, b"nodekey")? {
        if let Some(a) = tail::<20>(&k, 7) {
            r.book.node_keys.insert(Address::from(a), key);
        }
    }
    for (k, route) in store.scan::<Route>(Cf::Locks, b"route/")? {
        if let (Some(c), Some(i)) = (tail::<32>(&k, 6), tail::<8>(&k, 38)) {
            r.book
                .routes
                .insert((ChannelId(c.into()), HtlcId(u64::from_be_bytes(i))), route);
        }
    }
    for (k, f) in store.scan::<ForwardRecord>(Cf::Locks, b"fwd/")? {
        if let (Some(c), Some(i)) = (tail::<32>(&k, 4), tail::<8>(&k, 36)) {
            r.book
                .forwards
                .insert((ChannelId(c.into()), HtlcId(u64::from_be_bytes(i))), f);
        }
    }
    for (k, out) in store.scan::<(ChannelId, HtlcId)>(Cf::Locks, b"in/")? {
        if let (Some(c), Some(i)) = (tail::<32>(&k, 3), tail::<8>(&k, 35)) {
            r.book
                .forwarded_in
                .insert((ChannelId(c.into()), HtlcId(u64::from_be_bytes(i))), out);
        }
    }
    for (_, inv) in store.scan::<InvoiceRecord>(Cf::Locks, b"invoice/")? {
        r.book.invoices.insert(inv.invoice.hashlock, inv);
    }
    for (_, p) in store.scan::<PaymentRecord>(Cf::Locks, b"pay/")? {
        r.book.payments.insert(p.id, p);
    }
    for (_, w) in store.scan::<Watched>(Cf::Locks, b"watch/")? {
        r.book.watched.insert(w.params.id(), w);
    }
    for (_, v) in store.scan::<VirtualRecord>(Cf::Locks, b"virtual/")? {
        r.book.virtuals.insert(v.terms.id(), v);
    }
    for (k, policy) in store.scan::<VirtualPolicy>(Cf::Meta, b"vpolicy")? {
        if let Some(a) = tail::<20>(&k, 7) {
            r.book.virtual_policies.insert(Address::from(a), policy);
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The date of a party's newest policy is read back from the store as it was written, so
    /// an older signed policy is still refused after a restart.
    #[test]
    fn a_partys_newest_policy_date_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!(
            "vhub-persist-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let party = Address::repeat_byte(7);
        {
            let store = Store::open(&dir).unwrap();
            let keys = htlc::sig::Keys::from_bytes([3; 32]).unwrap();
            let machine = Machine::new(keys, htlc::node::Config::default());
            let mut batch = Batch::new();
            let writes = [
                Write::PartyPolicyAt {
                    peer: party,
                    timestamp: 5,
                },
                Write::PartyPolicyAt {
                    peer: party,
                    timestamp: 6,
                },
            ];
            fill(&mut batch, &writes, &machine).unwrap();
            store.commit_blocking(batch).unwrap();
        }
        let store = Store::open(&dir).unwrap();
        let records = load(&store).unwrap();
        assert_eq!(records.book.party_policy_at.get(&party), Some(&6));
        drop(store);
        std::fs::remove_dir_all(dir).ok();
    }

    /// Only a step that hands out unpaid invoices and sends nothing may skip its own sync: an
    /// invoice marked paid, any other record, or a frame to send needs the sync (rule 2).
    #[test]
    fn only_unpaid_invoices_with_nothing_sent_skip_their_sync() {
        let keys = htlc::sig::Keys::from_bytes([3; 32]).unwrap();
        let preimage = htlc::Preimage([9; 32]);
        let invoice = |paid: bool| Write::Invoice {
            hashlock: preimage.hashlock(),
            record: Box::new(InvoiceRecord {
                invoice: htlc::node::invoice::Invoice {
                    payee: keys.address(),
                    payee_key: keys.public_key(),
                    hub: Address::repeat_byte(1),
                    amount: htlc::Amount(5),
                    hashlock: preimage.hashlock(),
                    expires_at: 100,
                    final_expiry_delta: 10,
                },
                preimage,
                paid,
            }),
        };
        let out = |writes: Vec<Write>, transmits| htlc::node::Output {
            writes,
            transmits,
            ..Default::default()
        };
        let peer = Address::repeat_byte(2);
        assert!(needs_no_sync(&out(vec![invoice(false)], vec![])));
        assert!(needs_no_sync(&out(
            vec![invoice(false), invoice(false)],
            vec![]
        )));
        assert!(!needs_no_sync(&out(vec![], vec![])), "nothing to write");
        assert!(!needs_no_sync(&out(vec![invoice(true)], vec![])), "a claim");
        assert!(!needs_no_sync(&out(
            vec![invoice(false), Write::Received { peer, seq: 1 }],
            vec![]
        )));
        assert!(!needs_no_sync(&out(
            vec![invoice(false)],
            vec![(peer, htlc::node::Frame::Ack { seq: 1 })]
        )));
    }
}
