//! The discrete-event simulation, in virtual time.
//!
//! Events are ordered by `(virtual ms, insertion number)`, so a run is a pure function of its
//! scenario: no wall clock, no hash-map order, no thread timing reaches the result.
//!
//! A payment's life: it is dispatched; the payer asks the router for the cheapest route
//! (fees plus the scorer's penalty) that avoids every direction that already failed it; it
//! offers the first HTLC; each hop later the next node receives it and forwards (or refuses
//! with an `htlc::FailureReason`); at the payee the preimage is revealed and the HTLCs are
//! fulfilled back hop by hop; a refusal fails them back hop by hop. When the outcome reaches the
//! payer it learns (the router's `record_route_success` / `record_route_failure`) and, after a
//! failure, retries up to `max_attempts`. Every balance and lock lives in the [`Ledger`].
//!
//! **Knowledge epochs.** With `knowledge_epoch_secs > 0`, what payers learn is applied to the
//! router's graph at the end of each epoch (with the periodic decay), so every route searched
//! during an epoch sees the graph as it was at the epoch's start. That is what lets the first
//! attempts of the epoch's payments be searched ahead, by worker threads, while the events are
//! processed — and since a route depends only on the frozen graph and its query, the result does
//! not depend on the number of threads or on who searched it. With 0, learning is immediate and
//! routes are searched one by one, when needed.
//!
//! | module | holds |
//! |---|---|
//! | this one | [`Engine`]: its state, setup, the public API, the event loop, virtual clocks |
//! | `observe` | [`Progress`] and the [`Observer`]s of a run |
//! | `queue` | the timed event queue: events, their order, push and pop |
//! | `payment` | a payment in flight, its attempt, the slots that hold them |
//! | `learn` | what payers learn, and how it changes the router's graph |
//! | `epoch` | knowledge epochs, decay, admission of payments, route queries |
//! | `workers` | the route batch of an epoch, searched by worker threads |
//! | `payer` | the payer's side: starting attempts, finishing payments |
//! | `hops` | hop by hop: arrive and forward, settle back, fail back |
//! | `accounts` | running totals, locked liquidity, refusals, depletion, samples |
//! | `output` | the end of a run: the summary, hub and depletion rows |

mod accounts;
mod epoch;
mod hops;
mod learn;
mod observe;
mod output;
mod payer;
mod payment;
mod queue;
mod workers;

use std::sync::Arc;

use htlc::Amount;
use htlc::ids::Expiry;
use router::{ChannelGraph, PathFinder};

use self::accounts::Stats;
use self::learn::Learn;
use self::payment::Payments;
use self::queue::{Event, Queue};
use self::workers::Batch;
use crate::sim::activity::ActivityStream;
use crate::sim::config::SimParams;
use crate::sim::error::SimError;
use crate::sim::ledger::Ledger;
use crate::sim::report::{RunOutput, Samples};
use crate::sim::scenario::Scenario;
use crate::sim::world::{self, World};

pub use self::observe::{Collect, Discard, Observer, Progress};

/// Unix time of virtual time zero (fixed, so expiries never depend on the wall clock).
pub const START_UNIX: u64 = 1_700_000_000;

/// How the run is executed (nothing here changes its result).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Threads for the parallel route searches of each knowledge epoch.
    pub threads: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { threads: 1 }
    }
}

/// The simulation (see the module documentation).
pub struct Engine<'a, L: Ledger> {
    scenario: &'a Scenario,
    params: &'a SimParams,
    world: World,
    ledger: L,
    activity: ActivityStream,
    queue: Queue,
    payments: Payments,
    /// The router's graph: shared with the epoch's workers, changed only between epochs.
    graph: Arc<ChannelGraph>,
    /// The main thread's path finder.
    finder: PathFinder,
    /// Path finders for workers (lent to them during an epoch).
    spare: Vec<PathFinder>,
    threads: usize,
    batch: Option<Batch>,
    /// What payers learned during the epoch, to apply at its end.
    learned: Vec<Learn>,
    now_ms: u64,
    next_decay_ms: u64,
    sample_ms: u64,
    next_id: u64,
    completed: u64,
    /// Position in the hub list of each node, if it is a hub.
    hub_of: Vec<Option<u16>>,
    stats: Stats,
    node_fees_earned: Vec<u128>,
    node_fees_paid: Vec<u128>,
    node_forwarded: Vec<u64>,
    node_forwarded_volume: Vec<u128>,
    node_locked_ms: Vec<u128>,
    hub_via: Vec<(u64, u64)>,
    /// Per channel and sending side: first depletion time, refusals.
    depleted_at: Vec<[Option<u64>; 2]>,
    refusals: Vec<[u64; 2]>,
    depletion_floor: Vec<u128>,
    samples: Samples,
    tracked: Vec<u32>,
    expected_end_ms: u64,
}

impl<'a, L: Ledger> Engine<'a, L> {
    /// Prepares a run of `scenario`.
    pub fn new(scenario: &'a Scenario, options: RunOptions) -> Result<Self, SimError> {
        let params = &scenario.params;
        let world = world::build(scenario)?;
        let ledger = L::open(&world, scenario.seed)?;
        let end_ms = params.duration_secs.map(|s| s.saturating_mul(1000));
        let activity = ActivityStream::new(
            &scenario.flows,
            scenario.random.as_ref(),
            &world.node_capacity,
            scenario.seed,
            end_ms,
            params.max_payments,
        )?;
        let expected_end_ms = activity.expected_end_ms();
        let sample_ms = params
            .sample_interval_secs
            .map_or((expected_end_ms / 100).max(1000), |s| {
                s.saturating_mul(1000)
            });
        let nodes = scenario.network.nodes.len();
        let mut hub_of = vec![None; nodes];
        for (i, h) in world.hubs.iter().enumerate() {
            if let Some(slot) = hub_of.get_mut(*h as usize) {
                *slot = u16::try_from(i).ok();
            }
        }
        let tracked = accounts::tracked_channels(&world, params.tracked_channels);
        let samples = accounts::no_samples(scenario, &world, &tracked);
        let depletion_floor = world
            .chans
            .iter()
            .map(|c| accounts::fraction_of(c.capacity.0, params.depletion_threshold))
            .collect();
        let threads = options.threads.max(1);
        let spare = (1..threads)
            .map(|_| PathFinder::new(params.scoring))
            .collect();
        let mut world = world;
        let graph = Arc::new(std::mem::take(&mut world.graph));
        let chans = world.chans.len();
        let hubs = world.hubs.len();
        let mut engine = Engine {
            scenario,
            params,
            world,
            ledger,
            activity,
            queue: Queue::default(),
            payments: Payments::default(),
            graph,
            finder: PathFinder::new(params.scoring),
            spare,
            threads,
            batch: None,
            learned: Vec::new(),
            now_ms: 0,
            next_decay_ms: params.decay_interval_secs.saturating_mul(1000),
            sample_ms,
            next_id: 0,
            completed: 0,
            hub_of,
            stats: Stats::default(),
            node_fees_earned: vec![0; nodes],
            node_fees_paid: vec![0; nodes],
            node_forwarded: vec![0; nodes],
            node_forwarded_volume: vec![0; nodes],
            node_locked_ms: vec![0; nodes],
            hub_via: vec![(0, 0); hubs],
            depleted_at: vec![[None, None]; chans],
            refusals: vec![[0, 0]; chans],
            depletion_floor,
            samples,
            tracked,
            expected_end_ms,
        };
        engine.queue.push(0, Event::Sample);
        if engine.epoch_ms() > 0 {
            engine.queue.push(0, Event::Epoch);
        } else {
            engine.queue.push(engine.next_decay_ms, Event::Decay);
            engine.pull_one()?;
        }
        Ok(engine)
    }

    /// The rule-1 total over every channel (balances + locks + guarantees).
    pub fn total_value(&self) -> Result<Amount, SimError> {
        self.ledger.total()
    }

    /// The ledger (every channel's state).
    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    /// Virtual time of the last event processed, ms.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Runs to the end and returns what the run produced.
    pub fn run(mut self, observer: &mut dyn Observer) -> Result<RunOutput, SimError> {
        while self.step(observer)? {}
        self.finish(observer)
    }

    /// Processes one event; `false` once nothing is left.
    pub fn step(&mut self, observer: &mut dyn Observer) -> Result<bool, SimError> {
        let Some((at, event)) = self.queue.pop() else {
            return Ok(false);
        };
        self.now_ms = at;
        match event {
            Event::Epoch => self.on_epoch()?,
            Event::Decay => self.on_decay()?,
            Event::Sample => self.on_sample()?,
            Event::Dispatch { slot } => {
                if self.epoch_ms() == 0 {
                    self.pull_one()?;
                }
                self.start_attempt(slot, observer)?;
            }
            Event::Arrive { slot, hop } => self.on_arrive(slot, usize::from(hop))?,
            Event::Settle { slot, hop } => self.on_settle(slot, usize::from(hop), observer)?,
            Event::FailBack { slot, hop } => self.on_fail_back(slot, usize::from(hop), observer)?,
        }
        Ok(true)
    }

    /// How far the run has got.
    fn progress(&self) -> Progress {
        Progress {
            dispatched: self.activity.emitted(),
            completed: self.completed,
            virtual_ms: self.now_ms,
            expected_end_ms: self.expected_end_ms,
            max_payments: self.params.max_payments,
        }
    }

    /// The knowledge epoch, ms (0: learning is immediate).
    fn epoch_ms(&self) -> u64 {
        self.params.knowledge_epoch_secs.saturating_mul(1000)
    }

    fn decay_interval_ms(&self) -> u64 {
        self.params.decay_interval_secs.saturating_mul(1000).max(1)
    }

    /// The latency of one hop, ms.
    fn latency(&self) -> u64 {
        self.params.hop_latency_ms
    }

    /// Virtual now as the protocol sees it (unix seconds).
    fn now(&self) -> Expiry {
        Expiry(START_UNIX + self.now_ms / 1000)
    }

    fn now_secs(&self) -> u64 {
        START_UNIX + self.now_ms / 1000
    }

    /// Whether anything is left to happen besides periodic events.
    fn busy(&self) -> bool {
        !self.activity.is_done() || self.payments.in_flight() > 0
    }
}
