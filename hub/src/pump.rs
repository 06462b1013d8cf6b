//! Carrying out a step of the node machine (`htlc::node::Node`).
//!
//! A step runs under the machine's lock: the machine decides, its writes become one RocksDB
//! batch (channel records and message bodies read from the machine right after the step),
//! its frames are encoded, and the whole is queued to the store's writer before the lock is
//! let go. The writer commits queued batches in order, many per fsync, and once a step's
//! batch is durable it hands the step's frames to the live sessions, tells its events and
//! starts its chain reads, in the same order (rule 2: nothing leaves before it is on disk;
//! frames of one link leave in the order they were numbered).
//!
//! ```text
//!  session / command / timer / chain ─► step(f) ─ lock ─► f(machine) ─► Output
//!                                                          │ fill batch, encode frames
//!                                                          ▼
//!                       store writer (FIFO, group commit) ─► fsync ─► frames → sessions
//!                                                                 ├─► events → subscribers, metrics
//!                                                                 └─► queries → chain reads → step
//! ```
//!
//! A write that fails leaves the machine ahead of the disk: the node is poisoned, takes no
//! further step and closes its endpoints; a restart resumes from what is on disk.

use crate::error::NodeError;
use crate::events::NodeEvent;
use crate::node::{Inner, Node};
use crate::store::{Batch, StoreError};
use crate::wire::{self, Frame};
use alloy::primitives::Address;
use htlc::ChannelId;
use htlc::node::{Node as Machine, NodeEvent as Decided, Output};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

/// A step queued to the store: resolves once it is durable and its frames are queued.
pub(crate) struct Done(oneshot::Receiver<Result<(), String>>);

impl Done {
    /// Wait until the step is durable (an error: it never will be; the node is poisoned).
    pub(crate) async fn wait(self) -> Result<(), NodeError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NodeError::Store(StoreError::Write(e))),
            Err(_) => Err(NodeError::Stopped),
        }
    }
}

/// What a step leaves to do once it is durable. Holds no strong reference to the node: it
/// runs on the store's writer thread, which must never drop the last one (dropping the node
/// joins that thread).
struct Carry {
    node: Weak<Inner>,
    runtime: Option<tokio::runtime::Handle>,
    frames: Vec<(Address, Vec<u8>)>,
    events: Vec<Decided>,
    queries: Vec<ChannelId>,
    intents: bool,
    /// Whether the step wrote anything (crash points mark only real commits).
    wrote: bool,
    reply: oneshot::Sender<Result<(), String>>,
}

impl Carry {
    fn run(self, result: Result<(), StoreError>) {
        let Some(inner) = self.node.upgrade() else {
            return;
        };
        if let Err(e) = result {
            error!(error = %e, "a step's write failed: the node stops (restart to resume)");
            inner.poisoned.store(true, Ordering::SeqCst);
            let _ = self.reply.send(Err(e.to_string()));
            let weak = self.node.clone();
            drop(inner);
            if let Some(rt) = &self.runtime {
                rt.spawn(async move {
                    if let Some(inner) = weak.upgrade() {
                        Node { inner }.shutdown();
                    }
                });
            }
            return;
        }
        if self.wrote {
            crate::failpoint::point("after_commit");
        }
        for (peer, bytes) in self.frames {
            inner.sessions.send(peer, bytes);
        }
        if self.wrote {
            crate::failpoint::point("after_send");
        }
        for ev in self.events {
            log(&ev);
            if let Some(ev) = NodeEvent::from_decided(ev) {
                inner.emit(ev);
            }
        }
        if self.intents {
            inner.chain_kick.notify_one();
        }
        let _ = self.reply.send(Ok(()));
        drop(inner);
        if let Some(rt) = &self.runtime {
            for id in self.queries {
                let weak = self.node.clone();
                rt.spawn(async move {
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    let node = Node { inner };
                    if let Err(e) = node.check_funding(id).await {
                        warn!(channel = %id, error = %e, "cannot read the channel's deposits; the watcher will");
                    }
                });
            }
        }
    }
}

fn log(ev: &Decided) {
    match ev {
        Decided::Refused { peer, code } => debug!(%peer, ?code, "message refused"),
        Decided::RefusedByPeer { peer, code, detail } => {
            warn!(%peer, ?code, %detail, "peer refused our message")
        }
        Decided::PeerStuck { channel_id } => {
            warn!(channel = %channel_id, "the peer keeps refusing our proposals: go on chain")
        }
        Decided::OpDropped {
            channel_id,
            op,
            error,
        } => debug!(channel = %channel_id, ?op, %error, "operation dropped"),
        Decided::ForwardFailed { in_channel, reason } => {
            info!(channel = %in_channel, %reason, "forward failed back")
        }
        Decided::Forwarded { fee, .. } => info!(%fee, "forward settled"),
        Decided::PaymentReceived { amount, .. } => info!(%amount, "payment received"),
        Decided::Funded { channel_id } => info!(channel = %channel_id, "channel funded"),
        Decided::Challenged {
            channel_id,
            disputed,
            ours,
        } => {
            warn!(channel = %channel_id, disputed, ours, "stale state registered on chain: challenging")
        }
        Decided::Holding { .. } => warn!("holding an HTLC without revealing (test setting)"),
        Decided::MustClaimOnChain {
            channel_id,
            locks,
            deadline,
        } => error!(
            channel = %channel_id,
            locks = locks.len(),
            deadline = deadline.0,
            "the peer has not settled locks we can claim: registering their preimages on chain"
        ),
        _ => {}
    }
}

impl Node {
    /// Take one step of the machine with `f` and carry out its output (see the module doc).
    /// Nothing of a step that `f` refuses is written or sent. The returned [`Done`] resolves
    /// once the step is durable and its frames are queued.
    pub(crate) fn step<E>(
        &self,
        f: impl FnOnce(&mut Machine) -> Result<Output, E>,
    ) -> Result<Done, NodeError>
    where
        NodeError: From<E>,
    {
        self.step_in(Batch::new(), f)
    }

    /// As [`Node::step`], with the writes of `extra` in the same batch (the pump's own records,
    /// such as a chain intent the step settles).
    pub(crate) fn step_in<E>(
        &self,
        extra: Batch,
        f: impl FnOnce(&mut Machine) -> Result<Output, E>,
    ) -> Result<Done, NodeError>
    where
        NodeError: From<E>,
    {
        if self.inner.poisoned.load(Ordering::SeqCst) {
            return Err(NodeError::Stopped);
        }
        let (tx, rx) = oneshot::channel();
        let mut m = self.inner.machine.lock().unwrap_or_else(|p| p.into_inner());
        let held = std::time::Instant::now();
        let out = f(&mut m)?;
        let mut batch = if extra.is_empty() && crate::persist::needs_no_sync(&out) {
            extra.without_sync()
        } else {
            extra
        };
        let filled = crate::persist::fill(&mut batch, &out.writes, &m);
        let frames: Vec<(Address, Vec<u8>)> = out
            .transmits
            .into_iter()
            .filter_map(|(peer, f)| Some((peer, wire::encode(&Frame::from(f)).ok()?)))
            .collect();
        let carry = Carry {
            node: Arc::downgrade(&self.inner),
            runtime: tokio::runtime::Handle::try_current().ok(),
            frames,
            events: out.events,
            queries: out.queries,
            intents: out
                .writes
                .iter()
                .any(|w| matches!(w, htlc::node::Write::Intent(_))),
            wrote: !batch.is_empty(),
            reply: tx,
        };
        if let Err(e) = filled {
            // The machine moved on but its records cannot be written: stop.
            drop(m);
            carry.run(Err(e));
            return Err(NodeError::Stopped);
        }
        if carry.wrote {
            crate::failpoint::point("before_commit");
        }
        self.inner.store.submit(batch, move |r| carry.run(r));
        drop(m);
        self.inner
            .step_micros
            .fetch_add(held.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(Done(rx))
    }

    /// As [`Node::step`], and wait until the step is durable.
    pub(crate) async fn step_wait<E>(
        &self,
        f: impl FnOnce(&mut Machine) -> Result<Output, E>,
    ) -> Result<(), NodeError>
    where
        NodeError: From<E>,
    {
        self.step(f)?.wait().await
    }
}
