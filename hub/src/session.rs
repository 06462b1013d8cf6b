//! The live side of each peer link: the session's writer, one per peer at a time.
//!
//! What is sent, in which order, and what is re-sent after a reconnect is the node machine's
//! (`htlc::node::link`, its outbox in the store); this module only holds the queue of encoded
//! frames to each live QUIC stream. Frames are handed to it from the store's writer thread,
//! once the step that produced them is durable (rule 2), in the order the steps were taken.

use crate::wire::{self, Frame};
use alloy::primitives::Address;
use std::collections::HashMap;
use std::sync::Mutex as SyncMutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Frames queued for one session's stream beyond its backlog, at most (rule 10).
pub(crate) const WRITE_QUEUE: usize = 4096;

/// The queue of encoded frames to one session's QUIC stream. It is bounded: a peer that does
/// not read what we send fills it and is disconnected (everything numbered is in the durable
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

    /// Queue encoded frames; a full queue disconnects the peer.
    pub(crate) fn push(&self, bytes: Vec<u8>) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(bytes) {
            warn!("the peer does not read what we send: disconnecting it");
            self.conn.close(4u32.into(), b"not reading");
        }
    }

    /// Encode and queue a frame.
    pub(crate) fn send_now(&self, frame: &Frame) {
        if let Ok(bytes) = wire::encode(frame) {
            self.push(bytes);
        }
    }
}

/// Every peer's live session: its generation and writer.
#[derive(Default)]
pub(crate) struct Sessions {
    live: SyncMutex<HashMap<Address, (u64, Writer)>>,
    generation: AtomicU64,
}

impl Sessions {
    /// A new session's generation number (a later session of a key replaces an earlier one).
    pub(crate) fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed)
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<Address, (u64, Writer)>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attach session `generation`'s writer for `peer` and queue `resend` (the durable
    /// outbox) first, so no newer frame overtakes it. One session per key (rule 10): an older
    /// session of the same peer is closed.
    pub(crate) fn install(&self, peer: Address, generation: u64, w: Writer, resend: Vec<Vec<u8>>) {
        let old = self.live().insert(peer, (generation, w.clone()));
        if let Some((_, old)) = old {
            info!("a newer session of this peer replaces the old one");
            old.conn.close(3u32.into(), b"replaced by a newer session");
        }
        for bytes in resend {
            w.push(bytes);
        }
    }

    /// Session `generation` of `peer` ended.
    pub(crate) fn remove(&self, peer: Address, generation: u64) {
        let mut live = self.live();
        if live.get(&peer).is_some_and(|(g, _)| *g == generation) {
            live.remove(&peer);
        }
    }

    /// Queue encoded frames to `peer`'s live session, if any (numbered ones wait in the
    /// outbox for the next session otherwise).
    pub(crate) fn send(&self, peer: Address, bytes: Vec<u8>) {
        if let Some((_, w)) = self.live().get(&peer) {
            w.push(bytes);
        }
    }

    /// Whether a session with `peer` is up.
    pub(crate) fn is_connected(&self, peer: Address) -> bool {
        self.live().contains_key(&peer)
    }
}
