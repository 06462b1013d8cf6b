//! The adjudicator's and the secret registry's events, polled over HTTP (`eth_getLogs`), for
//! the hub's chain watcher and watchtower.
//!
//! Polling keeps the transport plain HTTP; the watcher remembers the next block to read, so a
//! caller that persists [`EventWatcher::next_block`] resumes without gaps after a restart.
//! Reorgs are not handled here: callers that need finality should lag the head (see
//! [`EventWatcher::with_confirmations`]).

use crate::bindings::{Adjudicator, SecretRegistry};
use crate::deploy::Deployment;
use crate::error::ChainError;
use alloy::primitives::TxHash;
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEventInterface;
use futures_util::Stream;
use std::collections::VecDeque;
use std::time::Duration;

/// One decoded event with its position in the chain.
#[derive(Clone, Debug)]
pub struct ChainEvent {
    /// Block the event was emitted in.
    pub block_number: Option<u64>,
    /// Transaction that emitted it.
    pub tx_hash: Option<TxHash>,
    /// Index of the log in its block.
    pub log_index: Option<u64>,
    /// The event.
    pub kind: EventKind,
}

/// An event of one of the two contracts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Deposited, Disputed, Concluded, LockResolved, GuaranteeResolved, PayoutDeferred, Claimed.
    Adjudicator(Adjudicator::AdjudicatorEvents),
    /// SecretRevealed: a preimage became public (rule 5 of DESIGN.md: use it upstream at once).
    Registry(SecretRegistry::SecretRegistryEvents),
}

/// Reads the contracts' events block range by block range.
#[derive(Clone, Debug)]
pub struct EventWatcher {
    provider: DynProvider,
    deployment: Deployment,
    next_block: u64,
    confirmations: u64,
    poll_interval: Duration,
}

impl EventWatcher {
    /// Watch from `from_block` (inclusive).
    pub fn new(provider: DynProvider, deployment: Deployment, from_block: u64) -> Self {
        EventWatcher {
            provider,
            deployment,
            next_block: from_block,
            confirmations: 0,
            poll_interval: Duration::from_millis(500),
        }
    }

    /// Only report blocks at least `n` blocks below the head.
    pub fn with_confirmations(mut self, n: u64) -> Self {
        self.confirmations = n;
        self
    }

    /// How long the stream waits between polls that found nothing.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The first block not yet read.
    pub fn next_block(&self) -> u64 {
        self.next_block
    }

    /// Read every event from the next unread block up to the head (minus confirmations).
    pub async fn poll(&mut self) -> Result<Vec<ChainEvent>, ChainError> {
        let head = self.provider.get_block_number().await?;
        let Some(last) = head.checked_sub(self.confirmations) else {
            return Ok(Vec::new());
        };
        if last < self.next_block {
            return Ok(Vec::new());
        }
        let filter = Filter::new()
            .address(vec![self.deployment.adjudicator, self.deployment.registry])
            .from_block(self.next_block)
            .to_block(last);
        let logs = self.provider.get_logs(&filter).await?;
        let events = logs
            .iter()
            .map(|log| self.decode(log))
            .collect::<Result<Vec<_>, _>>()?;
        self.next_block = last + 1;
        Ok(events)
    }

    fn decode(&self, log: &Log) -> Result<ChainEvent, ChainError> {
        let kind = if log.address() == self.deployment.registry {
            EventKind::Registry(SecretRegistry::SecretRegistryEvents::decode_log(&log.inner)?.data)
        } else {
            EventKind::Adjudicator(Adjudicator::AdjudicatorEvents::decode_log(&log.inner)?.data)
        };
        Ok(ChainEvent {
            block_number: log.block_number,
            tx_hash: log.transaction_hash,
            log_index: log.log_index,
            kind,
        })
    }

    /// The events as an endless stream, polling every `poll_interval` when idle. A failed poll
    /// yields its error and the next poll retries the same blocks.
    pub fn into_stream(self) -> impl Stream<Item = Result<ChainEvent, ChainError>> + Send {
        futures_util::stream::unfold(
            (self, VecDeque::new()),
            |(mut watcher, mut buffered)| async move {
                loop {
                    if let Some(event) = buffered.pop_front() {
                        return Some((Ok(event), (watcher, buffered)));
                    }
                    match watcher.poll().await {
                        Ok(events) if events.is_empty() => {
                            tokio::time::sleep(watcher.poll_interval).await;
                        }
                        Ok(events) => buffered.extend(events),
                        Err(e) => return Some((Err(e), (watcher, buffered))),
                    }
                }
            },
        )
    }
}
