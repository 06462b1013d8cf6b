//! The pump's side of each peer link: the live session's writer, the durable outbox, and the
//! link counters of `htlc::node::link` restored from the store.
//!
//! Every sequenced frame is written to the outbox in the same synced batch as the state change
//! that produced it (rule 2), handed to the live session if there is one, and re-sent in order
//! on every reconnect until the peer acknowledges it. What a sequence number means (process,
//! duplicate, gap) and which frames an acknowledgement covers is decided by
//! [`htlc::node::link`]; this module only moves bytes to and from RocksDB and the QUIC stream.
//!
//! Keys: `outbox` column, `peer (20) ‖ seq (8, BE)`; `meta` column, `send‹peer›` (next sequence
//! number) and `recv‹peer›` (last processed, written by the caller with the message's effects).

use crate::error::NodeError;
use crate::store::{Batch, Cf, Store};
use crate::wire::{self, Body, Frame};
use alloy::primitives::Address;
use htlc::node::link::{Inbound, Inbox, Outbox};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex as SyncMutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Mutex, mpsc};
use tracing::{debug, info, warn};

/// Longest a reconnecting peer may take to accept its backlog before it is disconnected.
const RESEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Frames queued for one session's stream, at most (rule 10).
pub(crate) const WRITE_QUEUE: usize = 4096;

/// Key of one outbox frame.
fn outbox_key(peer: Address, seq: u64) -> Vec<u8> {
    let mut k = peer.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The sequence number in an outbox key.
fn outbox_seq(key: &[u8]) -> Option<u64> {
    key.get(20..28)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

/// Key of a per-peer value in the `meta` column.
pub(crate) fn meta_key(kind: &str, peer: Address) -> Vec<u8> {
    let mut k = kind.as_bytes().to_vec();
    k.extend_from_slice(peer.as_slice());
    k
}

/// The queue of encoded frames to one session's QUIC stream. It is bounded: a peer that does
/// not read what we send fills it and is disconnected (everything sequenced is in the durable
/// outbox and is re-sent when it comes back), so it cannot make us buffer without limit.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Vec<u8>>,
    conn: quinn::Connection,
}

impl Writer {
    /// A writer queueing into `tx` for the session on `conn`.
    pub(crate) fn new(tx: mpsc::Sender<Vec<u8>>, conn: quinn::Connection) -> Writer {
        Writer { tx, conn }
    }

    /// Queue a frame; a full queue disconnects the peer.
    pub(crate) fn push(&self, bytes: Vec<u8>) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(bytes) {
            warn!("the peer does not read what we send: disconnecting it");
            self.conn.close(4u32.into(), b"not reading");
        }
    }

    /// Encode and queue an unsequenced frame (an ack, an error).
    pub(crate) fn send_now(&self, frame: &Frame) {
        if let Ok(bytes) = wire::encode(frame) {
            self.push(bytes);
        }
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The outbound side of one peer: the live session's writer (and its connection, closed when
/// a newer session of the same key replaces it), if any.
#[derive(Default)]
struct Link {
    writer: Option<(u64, Writer)>,
    conn: Option<quinn::Connection>,
}

/// Every peer's link: writers, counters. Owned by the node; knows nothing of channels.
#[derive(Default)]
pub(crate) struct Sessions {
    links: SyncMutex<HashMap<Address, Arc<Mutex<Link>>>>,
    /// Per peer, the last inbound sequence number processed.
    recv: SyncMutex<HashMap<Address, Inbox>>,
    /// Per peer, the outbox counters: the next sequence number, and how far the peer
    /// acknowledged, so an acknowledgement deletes exactly the frames it covers, by key,
    /// without scanning the outbox (whose deleted entries RocksDB would walk again each time).
    outbox: SyncMutex<HashMap<Address, Outbox>>,
    generation: AtomicU64,
}

impl Sessions {
    /// A new session's generation number (a later session of a key replaces an earlier one).
    pub(crate) fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed)
    }

    fn link(&self, store: &Store, peer: Address) -> Result<Arc<Mutex<Link>>, NodeError> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = links.get(&peer) {
            return Ok(l.clone());
        }
        self.outbox(store, peer)?;
        let l = Arc::new(Mutex::new(Link::default()));
        links.insert(peer, l.clone());
        Ok(l)
    }

    /// The peer's outbox counters, restored from the store the first time.
    fn outbox(&self, store: &Store, peer: Address) -> Result<Outbox, NodeError> {
        if let Some(o) = self
            .outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
        {
            return Ok(*o);
        }
        let next_send = store
            .get::<u64>(Cf::Meta, &meta_key("send", peer))?
            .unwrap_or(1);
        let first_stored = store
            .scan_raw(Cf::Outbox, peer.as_slice())?
            .first()
            .and_then(|(k, _)| outbox_seq(k));
        let mut map = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        Ok(*map
            .entry(peer)
            .or_insert_with(|| Outbox::restore(next_send, first_stored)))
    }

    /// What to do with message `seq` from `peer` (see [`Inbox::classify`]).
    pub(crate) fn classify(
        &self,
        store: &Store,
        peer: Address,
        seq: u64,
        may_skip: bool,
    ) -> Result<Inbound, NodeError> {
        let mut recv = self.recv.lock().unwrap_or_else(|p| p.into_inner());
        let inbox = match recv.get(&peer) {
            Some(i) => *i,
            None => {
                let last = store
                    .get::<u64>(Cf::Meta, &meta_key("recv", peer))?
                    .unwrap_or(0);
                *recv.entry(peer).or_insert(Inbox::new(last))
            }
        };
        Ok(inbox.classify(seq, may_skip))
    }

    /// Message `seq` from `peer` was processed and its counter persisted with its effects.
    pub(crate) fn received(&self, peer: Address, seq: u64) {
        self.recv
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(peer)
            .or_default()
            .received(seq);
    }

    /// The peer acknowledged everything up to `seq`: delete those outbox frames.
    pub(crate) fn on_ack(&self, store: &Store, peer: Address, seq: u64) -> Result<(), NodeError> {
        self.link(store, peer)?; // sets up the peer's outbox counters
        let Some(done) = self
            .outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&peer)
            .and_then(|o| o.on_ack(seq))
        else {
            return Ok(());
        };
        let mut batch = Batch::new();
        for s in done {
            batch.delete(Cf::Outbox, &outbox_key(peer, s));
        }
        // A lost delete only re-sends a frame the peer ignores as a duplicate.
        store.write_unsynced(batch)?;
        Ok(())
    }

    /// Frames in the peer's outbox it has not acknowledged.
    pub(crate) fn backlog(&self, peer: Address) -> u64 {
        let outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        outbox.get(&peer).map_or(0, Outbox::backlog)
    }

    /// Attach a session's writer, re-sending the outbox first, under the link's lock so no new
    /// frame can overtake the re-sent ones. One session per key (rule 10): an older session of
    /// the same peer is closed, so a key never holds two sessions and two rate limits.
    pub(crate) async fn install(
        &self,
        store: &Store,
        peer: Address,
        generation: u64,
        tx: Writer,
        conn: quinn::Connection,
    ) -> Result<(), NodeError> {
        let link = self.link(store, peer)?;
        let mut link = link.lock().await;
        if let Some(old) = link.conn.take() {
            info!("a newer session of this peer replaces the old one");
            old.close(3u32.into(), b"replaced by a newer session");
        }
        link.conn = Some(conn);
        let pending = store.scan_raw(Cf::Outbox, peer.as_slice())?;
        debug!(frames = pending.len(), "re-sending outbox");
        // The backlog may exceed the queue: wait for room (the peer reads it as it comes), but
        // not for ever with the link locked: a peer that does not read is disconnected.
        let resend = async {
            for (_, bytes) in pending {
                if tx.tx.send(bytes).await.is_err() {
                    break;
                }
            }
        };
        if tokio::time::timeout(RESEND_TIMEOUT, resend).await.is_err() {
            warn!("the peer does not read its backlog: disconnecting it");
            tx.conn.close(4u32.into(), b"not reading");
        }
        link.writer = Some((generation, tx));
        Ok(())
    }

    /// Session `generation` of `peer` ended. A stranger (`forget()`, asked under the link's
    /// lock: no channel with us) leaves nothing behind in memory either (issue 12, attack 8).
    pub(crate) async fn remove(
        &self,
        store: &Store,
        peer: Address,
        generation: u64,
        forget: impl FnOnce() -> bool,
    ) {
        let Ok(link) = self.link(store, peer) else {
            return;
        };
        let mut link = link.lock().await;
        if link.writer.as_ref().is_some_and(|(g, _)| *g == generation) {
            link.writer = None;
            link.conn = None;
            if forget() {
                self.links
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&peer);
                self.recv
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&peer);
                self.outbox
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&peer);
            }
        }
    }

    /// Number the bodies, add them to the outbox in `batch`, commit it durably, then hand them
    /// to the live session if any. The link stays locked throughout so frames go out in order.
    pub(crate) async fn commit_and_send(
        &self,
        store: &Store,
        peer: Address,
        mut batch: Batch,
        bodies: Vec<Body>,
    ) -> Result<(), NodeError> {
        let link = self.link(store, peer)?;
        let link = link.lock().await;
        // Only this function gives sequence numbers, under the link's lock: the numbers read
        // here are still the next ones when the batch is committed.
        let seqs = self.outbox(store, peer)?.numbers(bodies.len());
        let mut frames = Vec::with_capacity(bodies.len());
        for (seq, body) in seqs.clone().zip(bodies) {
            let bytes = wire::encode(&Frame::Msg { seq, body })?;
            batch.put_raw(Cf::Outbox, &outbox_key(peer, seq), bytes.clone());
            frames.push(bytes);
        }
        if !seqs.is_empty() {
            batch.put(Cf::Meta, &meta_key("send", peer), &seqs.end)?;
        }
        crate::failpoint::point("before_commit");
        store.commit(batch).await?;
        crate::failpoint::point("after_commit");
        // The counters are there unless a stranger's link was forgotten meanwhile; then the
        // store (just written) says where they stand.
        let restored = if self
            .outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&peer)
        {
            None
        } else {
            let first = store
                .scan_raw(Cf::Outbox, peer.as_slice())?
                .first()
                .and_then(|(k, _)| outbox_seq(k));
            Some(Outbox::restore(seqs.end, first))
        };
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(peer)
            .or_insert_with(|| restored.unwrap_or_default())
            .sent(seqs.end);
        if let Some((_, tx)) = &link.writer {
            for f in frames {
                tx.push(f);
            }
        }
        crate::failpoint::point("after_send");
        Ok(())
    }

    /// Send a frame outside the sequenced, durable stream (lost if no session is up).
    pub(crate) async fn send_unsequenced(&self, store: &Store, peer: Address, frame: &Frame) {
        let Ok(link) = self.link(store, peer) else {
            return;
        };
        let link = link.lock().await;
        if let Some((_, tx)) = &link.writer {
            tx.send_now(frame);
        }
    }

    /// Whether a session with `peer` is up.
    pub(crate) async fn is_connected(&self, peer: Address) -> bool {
        let link = {
            let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
            links.get(&peer).cloned()
        };
        match link {
            Some(l) => l
                .lock()
                .await
                .writer
                .as_ref()
                .is_some_and(|(_, tx)| !tx.is_closed()),
            None => false,
        }
    }
}
