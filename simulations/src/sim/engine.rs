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

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{self, AtomicUsize};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use htlc::forward::{DEFAULT_MAX_EXPIRY_HORIZON_SECS, ForwardPolicy, NextHop};
use htlc::ids::{Expiry, Hashlock, HtlcId, Preimage};
use htlc::{Amount, FailureReason, Side};
use router::{
    ChannelGraph, ChannelKind, DirectedChannel, PathFinder, Route, RouteError, RouteLimits,
    RouteQuery,
};
use sha2::{Digest, Sha256};

use crate::sim::activity::{ActivityStream, PaymentRequest};
use crate::sim::config::SimParams;
use crate::sim::error::SimError;
use crate::sim::ledger::Ledger;
use crate::sim::report::{
    BucketRow, DepletionRow, FinalFailure, HubRow, PaymentOutcome, PaymentRecord, RunOutput,
    Samples, Summary, TrackedChannel, ratio, reason_name,
};
use crate::sim::scenario::Scenario;
use crate::sim::world::{self, World};

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

/// How far a run has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Payments dispatched.
    pub dispatched: u64,
    /// Payments finished.
    pub completed: u64,
    /// Virtual time, ms.
    pub virtual_ms: u64,
    /// When the activity is expected to end, virtual ms.
    pub expected_end_ms: u64,
    /// The payment limit, if any.
    pub max_payments: Option<u64>,
}

/// Receives what a run produces as it goes (the binary writes it out; tests collect it).
pub trait Observer {
    /// A payment finished.
    fn payment(&mut self, _record: &PaymentRecord) {}
    /// Progress, every few thousand payments and at the end.
    fn progress(&mut self, _progress: Progress) {}
}

/// An observer that keeps nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl Observer for Discard {}

/// An observer that keeps every payment record, in completion order.
#[derive(Clone, Debug, Default)]
pub struct Collect {
    /// The records.
    pub records: Vec<PaymentRecord>,
}

impl Observer for Collect {
    fn payment(&mut self, record: &PaymentRecord) {
        self.records.push(record.clone());
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// Knowledge epoch boundary: apply learning, decay, pull the epoch's payments.
    Epoch,
    /// Immediate mode: decay learned liquidity.
    Decay,
    /// Sample balances.
    Sample,
    /// A payment is due.
    Dispatch { slot: u32 },
    /// The HTLC on `hop` is committed at its receiver.
    Arrive { slot: u32, hop: u8 },
    /// The receiver of `hop` fulfills it.
    Settle { slot: u32, hop: u8 },
    /// The receiver of `hop` fails it.
    FailBack { slot: u32, hop: u8 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    at: u64,
    seq: u64,
    event: Event,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // `seq` is unique, so the order is total and never reaches `event`.
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One routing attempt in flight.
#[derive(Clone, Debug)]
struct Attempt {
    route: Route,
    /// World channel index of each hop.
    chans: Vec<u32>,
    /// Absolute expiry of each hop's HTLC.
    expiries: Vec<Expiry>,
    /// Lock id and the virtual ms it was added, per hop locked so far.
    locks: Vec<(HtlcId, u64)>,
    /// The refusal and the hop (index) that refused.
    failure: Option<(FailureReason, usize)>,
}

#[derive(Clone, Debug)]
struct Payment {
    id: u64,
    req: PaymentRequest,
    preimage: Preimage,
    hashlock: Hashlock,
    attempts: u32,
    htlcs: u32,
    excluded: Vec<DirectedChannel>,
    attempt: Option<Attempt>,
    last_failure: Option<FailureReason>,
    /// Index of its first attempt's route in the epoch's [`Batch`].
    batch_index: Option<usize>,
    /// Hubs (their positions) some attempt routed through.
    via_hubs: Vec<u16>,
}

/// The first-attempt route searches of one knowledge epoch.
struct Batch {
    queries: Arc<Vec<RouteQuery>>,
    results: Arc<Vec<OnceLock<Result<Route, RouteError>>>>,
    /// The next query to claim.
    next: Arc<AtomicUsize>,
    workers: Vec<JoinHandle<PathFinder>>,
}

/// What a payer learned, applied to the graph at the end of the epoch (or at once).
#[derive(Clone, Debug)]
enum Learn {
    Success(Route, u64),
    Failure(Route, usize, u64),
}

/// Running totals for the summary.
#[derive(Clone, Debug, Default)]
struct Stats {
    payments: u64,
    succeeded: u64,
    attempts: u64,
    htlcs: u64,
    hops: u64,
    volume: u128,
    fees_paid: u128,
    buckets: std::collections::BTreeMap<u32, (u64, u64)>,
    final_failures: std::collections::BTreeMap<&'static str, u64>,
    htlc_failures: std::collections::BTreeMap<&'static str, u64>,
    locked_ms: u128,
    window_ok: u64,
    window_failed: u64,
    last_event_ms: u64,
}

/// The simulation (see the module documentation).
pub struct Engine<'a, L: Ledger> {
    scenario: &'a Scenario,
    params: &'a SimParams,
    world: World,
    ledger: L,
    activity: ActivityStream,
    queue: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    slab: Vec<Option<Payment>>,
    free: Vec<u32>,
    in_flight: u64,
    /// The router's graph: shared with the epoch's workers, changed only between epochs.
    graph: Arc<ChannelGraph>,
    /// The main thread's path finder.
    finder: PathFinder,
    /// Path finders for workers (lent to them during an epoch).
    spare: Vec<PathFinder>,
    threads: usize,
    batch: Option<Batch>,
    learn: Vec<Learn>,
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

/// `x * f` rounded down for `f` in `[0, 1]`.
fn fraction_of(x: u128, f: f64) -> u128 {
    let p = (f.clamp(0.0, 1.0) * 1e9).round() as u128;
    (x / 1_000_000_000) * p + (x % 1_000_000_000) * p / 1_000_000_000
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
        let tracked = tracked_channels(&world, params.tracked_channels);
        let samples = Samples {
            hub_fees: vec![Vec::new(); world.hubs.len()],
            hub_names: world
                .hubs
                .iter()
                .map(|h| scenario.network.label(*h))
                .collect(),
            channels: tracked
                .iter()
                .filter_map(|&c| world.chans.get(c as usize).map(|ch| (c, ch)))
                .map(|(_, ch)| TrackedChannel {
                    id: format!("{}", ch.id),
                    node_a: scenario.network.label(ch.nodes[0]),
                    node_b: scenario.network.label(ch.nodes[1]),
                    hub: world.hubs.iter().enumerate().find_map(|(hi, h)| {
                        ch.nodes.iter().position(|n| n == h).map(|side| (hi, side))
                    }),
                    capacity: ch.capacity.0,
                    points: Vec::new(),
                })
                .collect(),
            ..Samples::default()
        };
        let depletion_floor = world
            .chans
            .iter()
            .map(|c| fraction_of(c.capacity.0, params.depletion_threshold))
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
            queue: BinaryHeap::new(),
            seq: 0,
            slab: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            graph,
            finder: PathFinder::new(params.scoring),
            spare,
            threads,
            batch: None,
            learn: Vec::new(),
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
        engine.push(0, Event::Sample);
        if engine.epoch_ms() > 0 {
            engine.push(0, Event::Epoch);
        } else {
            engine.push(engine.next_decay_ms, Event::Decay);
            engine.pull_one()?;
        }
        Ok(engine)
    }

    fn epoch_ms(&self) -> u64 {
        self.params.knowledge_epoch_secs.saturating_mul(1000)
    }

    fn push(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Entry {
            at,
            seq: self.seq,
            event,
        }));
    }

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
        !self.activity.is_done() || self.in_flight > 0
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
        let Some(Reverse(entry)) = self.queue.pop() else {
            return Ok(false);
        };
        self.now_ms = entry.at;
        match entry.event {
            Event::Epoch => self.on_epoch()?,
            Event::Decay => {
                let now = self.now_secs();
                self.graph_mut()?.decay_liquidity(now);
                if self.busy() {
                    let next = self.now_ms.saturating_add(self.decay_interval_ms());
                    self.push(next, Event::Decay);
                }
            }
            Event::Sample => {
                self.sample()?;
                if self.busy() {
                    let next = self.now_ms.saturating_add(self.sample_ms);
                    self.push(next, Event::Sample);
                }
            }
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

    fn decay_interval_ms(&self) -> u64 {
        self.params.decay_interval_secs.saturating_mul(1000).max(1)
    }

    /// Creates the payment of a request and returns its slot.
    fn admit(&mut self, req: PaymentRequest) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let mut h = Sha256::new();
        h.update(b"vhub-sim-preimage");
        h.update(self.scenario.seed.to_be_bytes());
        h.update(id.to_be_bytes());
        let preimage = Preimage(h.finalize().into());
        let payment = Payment {
            id,
            req,
            hashlock: preimage.hashlock(),
            preimage,
            attempts: 0,
            htlcs: 0,
            excluded: Vec::new(),
            attempt: None,
            last_failure: None,
            batch_index: None,
            via_hubs: Vec::new(),
        };
        self.in_flight += 1;
        match self.free.pop() {
            Some(slot) => {
                if let Some(s) = self.slab.get_mut(slot as usize) {
                    *s = Some(payment);
                }
                slot
            }
            None => {
                self.slab.push(Some(payment));
                (self.slab.len() - 1) as u32
            }
        }
    }

    /// Immediate mode: admits the next request and schedules its dispatch.
    fn pull_one(&mut self) -> Result<(), SimError> {
        if let Some(req) = self.activity.next_before(u64::MAX) {
            let at = req.at_ms;
            let slot = self.admit(req);
            self.push(at, Event::Dispatch { slot });
        }
        Ok(())
    }

    /// The graph, to change it (only between epochs, when no worker holds it).
    fn graph_mut(&mut self) -> Result<&mut ChannelGraph, SimError> {
        Arc::get_mut(&mut self.graph).ok_or(SimError::Internal("graph changed during an epoch"))
    }

    /// Waits for the epoch's workers and takes their path finders back.
    fn end_batch(&mut self) -> Result<(), SimError> {
        if let Some(b) = self.batch.take() {
            // Every payment of the epoch was dispatched within it, so every query was claimed
            // and the workers are finishing their last one; tell them to stop regardless.
            b.next.store(usize::MAX / 2, atomic::Ordering::Release);
            for w in b.workers {
                let f = w
                    .join()
                    .map_err(|_| SimError::Internal("a route search thread panicked"))?;
                self.spare.push(f);
            }
        }
        Ok(())
    }

    fn on_epoch(&mut self) -> Result<(), SimError> {
        self.end_batch()?;
        let now = self.now_secs();
        let learned = std::mem::take(&mut self.learn);
        let graph = self.graph_mut()?;
        for l in learned {
            apply_learning(graph, l)?;
        }
        if self.now_ms >= self.next_decay_ms {
            self.graph_mut()?.decay_liquidity(now);
            self.next_decay_ms = self.now_ms.saturating_add(self.decay_interval_ms());
        }
        let end = self.now_ms.saturating_add(self.epoch_ms());
        let mut queries: Vec<RouteQuery> = Vec::new();
        while let Some(req) = self.activity.next_before(end) {
            let at = req.at_ms;
            let slot = self.admit(req);
            queries.push(self.query(slot)?);
            let index = queries.len() - 1;
            if let Some(p) = self.payment_mut(slot) {
                p.batch_index = Some(index);
            }
            self.push(at, Event::Dispatch { slot });
        }
        self.start_batch(queries);
        if self.busy() {
            self.push(end, Event::Epoch);
        }
        Ok(())
    }

    /// Starts searching the epoch's first-attempt routes: `threads - 1` workers claim queries
    /// in dispatch order; the main thread claims them too when it gets ahead of the workers.
    fn start_batch(&mut self, queries: Vec<RouteQuery>) {
        let n = queries.len();
        let queries = Arc::new(queries);
        let results: Arc<Vec<OnceLock<Result<Route, RouteError>>>> =
            Arc::new((0..n).map(|_| OnceLock::new()).collect());
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        // A few queries are not worth a thread.
        if n >= 8 {
            for _ in 1..self.threads {
                let Some(mut finder) = self.spare.pop() else {
                    break;
                };
                let (graph, queries, results, next) = (
                    self.graph.clone(),
                    queries.clone(),
                    results.clone(),
                    next.clone(),
                );
                workers.push(std::thread::spawn(move || {
                    loop {
                        let i = next.fetch_add(1, atomic::Ordering::AcqRel);
                        let (Some(q), Some(cell)) = (queries.get(i), results.get(i)) else {
                            break;
                        };
                        // The main thread may be waiting for this cell: it must be set even if
                        // the search panics (the run then ends with an internal error).
                        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            finder.find_route(&graph, q)
                        }));
                        match found {
                            Ok(r) => {
                                let _ = cell.set(r);
                            }
                            Err(_) => {
                                let _ = cell
                                    .set(Err(RouteError::InvalidPath("the route search panicked")));
                                break;
                            }
                        }
                    }
                    finder
                }));
            }
        }
        self.batch = Some(Batch {
            queries,
            results,
            next,
            workers,
        });
    }

    /// The route of query `i` of the epoch's batch: searched by a worker (waiting for it if it
    /// is under way) or here.
    fn batch_route(&mut self, i: usize) -> Result<Result<Route, RouteError>, SimError> {
        let b = self
            .batch
            .as_ref()
            .ok_or(SimError::Internal("a first attempt outside its epoch"))?;
        let cell = b
            .results
            .get(i)
            .ok_or(SimError::Internal("a route index outside its batch"))?;
        loop {
            if let Some(r) = cell.get() {
                return Ok(r.clone());
            }
            // Not ready: search the next unclaimed query here (this one, or a later one, so
            // that no thread idles while queries are left), then look again.
            let k = b.next.fetch_add(1, atomic::Ordering::AcqRel);
            if let (Some(q), Some(c)) = (b.queries.get(k), b.results.get(k)) {
                let _ = c.set(self.finder.find_route(&self.graph, q));
                continue;
            }
            // Every query is claimed and a worker has this one: wait for it.
            return Ok(cell.wait().clone());
        }
    }

    fn payment(&self, slot: u32) -> Result<&Payment, SimError> {
        self.slab
            .get(slot as usize)
            .and_then(Option::as_ref)
            .ok_or(SimError::Internal("event for a finished payment"))
    }

    fn payment_mut(&mut self, slot: u32) -> Option<&mut Payment> {
        self.slab.get_mut(slot as usize).and_then(Option::as_mut)
    }

    fn address(&self, n: u32) -> Result<router::NodeId, SimError> {
        self.scenario
            .network
            .node(n)
            .ok_or(SimError::Internal("node index out of range"))
    }

    fn query(&self, slot: u32) -> Result<RouteQuery, SimError> {
        let p = self.payment(slot)?;
        Ok(RouteQuery {
            payer: self.address(p.req.source)?,
            payee: self.address(p.req.destination)?,
            amount: p.req.amount,
            final_expiry_delta: self.params.final_expiry_delta_secs,
            limits: RouteLimits {
                max_hops: self.params.max_hops,
                max_total_expiry_delta: DEFAULT_MAX_EXPIRY_HORIZON_SECS,
                max_fee: self.params.max_fee_ppm.map(|ppm| p.req.amount.ppm(ppm)),
            },
            excluded: p.excluded.clone(),
            excluded_nodes: Vec::new(),
        })
    }

    fn learn(&mut self, l: Learn) -> Result<(), SimError> {
        if self.epoch_ms() == 0 {
            apply_learning(self.graph_mut()?, l)
        } else {
            self.learn.push(l);
            Ok(())
        }
    }

    /// Starts the next attempt of a payment (retrying at once while the payer's own first hop
    /// refuses).
    fn start_attempt(&mut self, slot: u32, obs: &mut dyn Observer) -> Result<(), SimError> {
        loop {
            let batch_index = self.payment_mut(slot).and_then(|p| {
                p.attempts += 1;
                p.batch_index.take()
            });
            let route = match batch_index {
                Some(i) => self.batch_route(i)?,
                None => {
                    let q = self.query(slot)?;
                    self.finder.find_route(&self.graph, &q)
                }
            };
            let route = match route {
                Ok(r) => r,
                Err(e) => {
                    let p = self.payment(slot)?;
                    let failure = match (p.last_failure, e) {
                        (Some(r), _) => FinalFailure::Htlc(r),
                        (None, RouteError::NoRoute { reason, .. }) => FinalFailure::NoRoute(reason),
                        (None, RouteError::SearchTooLarge(_)) => FinalFailure::SearchTooLarge,
                        (None, other) => return Err(SimError::Route(other)),
                    };
                    return self.finish_payment(slot, PaymentOutcome::Failed(failure), obs);
                }
            };
            let chans = route
                .hops
                .iter()
                .map(|h| {
                    self.world
                        .chan_index
                        .get(&h.channel)
                        .copied()
                        .ok_or(SimError::Internal("route over a channel not in the world"))
                })
                .collect::<Result<Vec<u32>, _>>()?;
            let expiries = route.expiries(self.now())?;
            let (Some(first), Some(&ch0), Some(&exp0)) =
                (route.hops.first(), chans.first(), expiries.first())
            else {
                return Err(SimError::Internal("empty route"));
            };
            let (by, amount) = (first.from_side, first.amount);
            // Hubs on the route, as intermediaries.
            let hubs: Vec<u16> = route
                .hops
                .iter()
                .skip(1)
                .filter_map(|h| {
                    self.scenario
                        .network
                        .node_index(h.from)
                        .and_then(|n| self.hub_of.get(n as usize).copied().flatten())
                })
                .collect();
            let (hashlock, now) = (self.payment(slot)?.hashlock, self.now());
            match self.ledger.offer(ch0, by, amount, hashlock, exp0, now)? {
                Ok(id) => {
                    self.check_depletion(ch0, by)?;
                    let at = self.now_ms;
                    let p = self
                        .payment_mut(slot)
                        .ok_or(SimError::Internal("event for a finished payment"))?;
                    p.htlcs += 1;
                    for h in hubs {
                        if !p.via_hubs.contains(&h) {
                            p.via_hubs.push(h);
                        }
                    }
                    p.attempt = Some(Attempt {
                        route,
                        chans,
                        expiries,
                        locks: vec![(id, at)],
                        failure: None,
                    });
                    let next = at.saturating_add(self.latency());
                    self.push(next, Event::Arrive { slot, hop: 0 });
                    return Ok(());
                }
                Err(reason) => {
                    // The payer's own channel refused: nothing was sent; learn and retry.
                    self.count_refusal(ch0, by, reason);
                    let now_secs = self.now_secs();
                    let first_dir = DirectedChannel {
                        channel: first.channel,
                        from: by,
                    };
                    if reason.is_liquidity() {
                        self.learn(Learn::Failure(route, 0, now_secs))?;
                    }
                    let max = self.params.max_attempts;
                    let p = self
                        .payment_mut(slot)
                        .ok_or(SimError::Internal("event for a finished payment"))?;
                    p.last_failure = Some(reason);
                    p.excluded.push(first_dir);
                    if p.attempts >= max {
                        let f = PaymentOutcome::Failed(FinalFailure::Htlc(reason));
                        return self.finish_payment(slot, f, obs);
                    }
                }
            }
        }
    }

    fn count_refusal(&mut self, ch: u32, side: Side, reason: FailureReason) {
        *self
            .stats
            .htlc_failures
            .entry(reason_name(reason))
            .or_insert(0) += 1;
        if let Some(r) = self.refusals.get_mut(ch as usize) {
            r[side.index()] += 1;
        }
    }

    fn check_depletion(&mut self, ch: u32, side: Side) -> Result<(), SimError> {
        let balance = self
            .ledger
            .state(ch)
            .ok_or(SimError::Internal("channel index out of range"))?
            .balances[side.index()];
        let floor = self.depletion_floor.get(ch as usize).copied().unwrap_or(0);
        if balance.0 < floor
            && let Some(d) = self.depleted_at.get_mut(ch as usize)
            && d[side.index()].is_none()
        {
            d[side.index()] = Some(self.now_ms);
        }
        Ok(())
    }

    fn attempt(&self, slot: u32) -> Result<&Attempt, SimError> {
        self.payment(slot)?
            .attempt
            .as_ref()
            .ok_or(SimError::Internal("event for a payment with no attempt"))
    }

    fn on_arrive(&mut self, slot: u32, hop: usize) -> Result<(), SimError> {
        let at = self.now_ms;
        let next_at = at.saturating_add(self.latency());
        let a = self.attempt(slot)?;
        let hop8 = u8::try_from(hop).map_err(|_| SimError::Internal("hop index above 255"))?;
        if hop + 1 == a.route.hops.len() {
            // The payee knows the preimage: it fulfills.
            self.push(next_at, Event::Settle { slot, hop: hop8 });
            return Ok(());
        }
        let (Some(h), Some(&ch_in), Some(&ch_out), Some(&exp), Some(&(in_id, _))) = (
            a.route.hops.get(hop + 1),
            a.chans.get(hop),
            a.chans.get(hop + 1),
            a.expiries.get(hop + 1),
            a.locks.get(hop),
        ) else {
            return Err(SimError::Internal("hop index outside the route"));
        };
        let (by, amount, dir_channel) = (h.from_side, h.amount, h.channel);
        let policy = self.forward_policy(&dir_channel, by)?;
        let next = NextHop {
            amount,
            expiry: exp,
        };
        let now = self.now();
        match self
            .ledger
            .forward((ch_in, in_id), ch_out, by, &policy, next, now)?
        {
            Ok(id) => {
                self.check_depletion(ch_out, by)?;
                if let Some(a) = self.payment_mut(slot).and_then(|p| p.attempt.as_mut()) {
                    a.locks.push((id, at));
                }
                self.push(
                    next_at,
                    Event::Arrive {
                        slot,
                        hop: hop8.saturating_add(1),
                    },
                );
            }
            Err(reason) => {
                self.count_refusal(ch_out, by, reason);
                if let Some(a) = self.payment_mut(slot).and_then(|p| p.attempt.as_mut()) {
                    a.failure = Some((reason, hop + 1));
                }
                self.push(next_at, Event::FailBack { slot, hop: hop8 });
            }
        }
        Ok(())
    }

    /// The forwarding policy of a direction as the protocol core takes it.
    fn forward_policy(
        &self,
        channel: &htlc::ChannelId,
        side: Side,
    ) -> Result<ForwardPolicy, SimError> {
        let c = self
            .graph
            .channel(channel)
            .ok_or(SimError::Internal("route over a channel not in the graph"))?;
        Ok(ForwardPolicy::from(*c.policy(side)))
    }

    /// Removes the lock of `hop` from the accounting of locked liquidity.
    fn unlock_accounting(&mut self, a_sender: u32, amount: Amount, since: u64) {
        let held = u128::from(self.now_ms.saturating_sub(since));
        let v = amount.0.saturating_mul(held);
        self.stats.locked_ms = self.stats.locked_ms.saturating_add(v);
        if let Some(x) = self.node_locked_ms.get_mut(a_sender as usize) {
            *x = x.saturating_add(v);
        }
    }

    fn hop_facts(
        &self,
        slot: u32,
        hop: usize,
    ) -> Result<(u32, HtlcId, u64, u32, Amount), SimError> {
        let a = self.attempt(slot)?;
        let (Some(&ch), Some(&(id, since)), Some(h)) =
            (a.chans.get(hop), a.locks.get(hop), a.route.hops.get(hop))
        else {
            return Err(SimError::Internal("hop index outside the route"));
        };
        let sender = self
            .scenario
            .network
            .node_index(h.from)
            .ok_or(SimError::Internal("route node not in the network"))?;
        Ok((ch, id, since, sender, h.amount))
    }

    fn on_settle(&mut self, slot: u32, hop: usize, obs: &mut dyn Observer) -> Result<(), SimError> {
        let (ch, id, since, sender, amount) = self.hop_facts(slot, hop)?;
        let preimage = self.payment(slot)?.preimage;
        let now = self.now();
        self.ledger.fulfill(ch, id, preimage, now)?;
        self.unlock_accounting(sender, amount, since);
        if hop > 0 {
            let at = self.now_ms.saturating_add(self.latency());
            let hop8 = u8::try_from(hop - 1).map_err(|_| SimError::Internal("hop above 255"))?;
            self.push(at, Event::Settle { slot, hop: hop8 });
            return Ok(());
        }
        // The preimage reached the payer: the payment succeeded.
        let p = self.payment(slot)?;
        let a = self.attempt(slot)?;
        let route = a.route.clone();
        let payer = p.req.source;
        for h in route.hops.iter().skip(1) {
            let Some(n) = self.scenario.network.node_index(h.from) else {
                return Err(SimError::Internal("route node not in the network"));
            };
            if let Some(x) = self.node_fees_earned.get_mut(n as usize) {
                *x = x.saturating_add(h.fee.0);
            }
            if let Some(x) = self.node_forwarded.get_mut(n as usize) {
                *x += 1;
            }
            if let Some(x) = self.node_forwarded_volume.get_mut(n as usize) {
                *x = x.saturating_add(h.amount.0);
            }
        }
        let fees = route.fees();
        if let Some(x) = self.node_fees_paid.get_mut(payer as usize) {
            *x = x.saturating_add(fees.0);
        }
        self.stats.fees_paid = self.stats.fees_paid.saturating_add(fees.0);
        self.stats.hops += route.hops.len() as u64;
        let now_secs = self.now_secs();
        self.learn(Learn::Success(route, now_secs))?;
        self.finish_payment(slot, PaymentOutcome::Succeeded, obs)
    }

    fn on_fail_back(
        &mut self,
        slot: u32,
        hop: usize,
        obs: &mut dyn Observer,
    ) -> Result<(), SimError> {
        let (ch, id, since, sender, amount) = self.hop_facts(slot, hop)?;
        let (reason, failed_hop) = self.attempt(slot)?.failure.ok_or(SimError::Internal(
            "failing back an attempt that did not fail",
        ))?;
        let now = self.now();
        self.ledger.fail(ch, id, reason, now)?;
        self.unlock_accounting(sender, amount, since);
        if hop > 0 {
            let at = self.now_ms.saturating_add(self.latency());
            let hop8 = u8::try_from(hop - 1).map_err(|_| SimError::Internal("hop above 255"))?;
            self.push(at, Event::FailBack { slot, hop: hop8 });
            return Ok(());
        }
        // The failure reached the payer: learn, exclude the direction, retry.
        let p = self
            .payment_mut(slot)
            .ok_or(SimError::Internal("event for a finished payment"))?;
        let a = p
            .attempt
            .take()
            .ok_or(SimError::Internal("event for a payment with no attempt"))?;
        let dir = a
            .route
            .hops
            .get(failed_hop)
            .map(|h| DirectedChannel {
                channel: h.channel,
                from: h.from_side,
            })
            .ok_or(SimError::Internal("failed hop outside the route"))?;
        p.excluded.push(dir);
        p.last_failure = Some(reason);
        let attempts = p.attempts;
        if reason.is_liquidity() {
            let now_secs = self.now_secs();
            self.learn(Learn::Failure(a.route, failed_hop, now_secs))?;
        }
        if attempts >= self.params.max_attempts {
            return self.finish_payment(
                slot,
                PaymentOutcome::Failed(FinalFailure::Htlc(reason)),
                obs,
            );
        }
        self.start_attempt(slot, obs)
    }

    fn finish_payment(
        &mut self,
        slot: u32,
        outcome: PaymentOutcome,
        obs: &mut dyn Observer,
    ) -> Result<(), SimError> {
        let p = self
            .slab
            .get_mut(slot as usize)
            .and_then(Option::take)
            .ok_or(SimError::Internal("finishing a finished payment"))?;
        self.free.push(slot);
        self.in_flight = self.in_flight.saturating_sub(1);
        let ok = outcome == PaymentOutcome::Succeeded;
        let (hops, fees) = match (&p.attempt, ok) {
            (Some(a), true) => (a.route.hops.len() as u32, a.route.fees()),
            _ => (0, Amount::ZERO),
        };
        let record = PaymentRecord {
            id: p.id,
            source: p.req.source,
            destination: p.req.destination,
            amount: p.req.amount,
            hashlock: p.hashlock,
            dispatched_ms: p.req.at_ms,
            completed_ms: self.now_ms,
            htlcs: p.htlcs,
            attempts: p.attempts,
            hops,
            fees,
            outcome,
        };
        let s = &mut self.stats;
        s.payments += 1;
        s.attempts += u64::from(p.attempts);
        s.htlcs += u64::from(p.htlcs);
        let bucket = s
            .buckets
            .entry(crate::sim::report::decade(p.req.amount))
            .or_insert((0, 0));
        bucket.0 += 1;
        if ok {
            bucket.1 += 1;
            s.succeeded += 1;
            s.window_ok += 1;
            s.volume = s.volume.saturating_add(p.req.amount.0);
        } else {
            s.window_failed += 1;
        }
        if let PaymentOutcome::Failed(f) = outcome {
            *s.final_failures.entry(f.name()).or_insert(0) += 1;
        }
        s.last_event_ms = self.now_ms;
        for h in &p.via_hubs {
            if let Some(v) = self.hub_via.get_mut(usize::from(*h)) {
                v.0 += 1;
                if ok {
                    v.1 += 1;
                }
            }
        }
        obs.payment(&record);
        self.completed += 1;
        if self.completed.is_multiple_of(4096) {
            obs.progress(self.progress());
        }
        Ok(())
    }

    fn progress(&self) -> Progress {
        Progress {
            dispatched: self.activity.emitted(),
            completed: self.completed,
            virtual_ms: self.now_ms,
            expected_end_ms: self.expected_end_ms,
            max_payments: self.params.max_payments,
        }
    }

    fn sample(&mut self) -> Result<(), SimError> {
        let s = &mut self.samples;
        s.times_ms.push(self.now_ms);
        s.window_succeeded
            .push(std::mem::take(&mut self.stats.window_ok));
        s.window_failed
            .push(std::mem::take(&mut self.stats.window_failed));
        s.total_fees.push(self.stats.fees_paid);
        for (hi, h) in self.world.hubs.iter().enumerate() {
            let fees = self.node_fees_earned.get(*h as usize).copied().unwrap_or(0);
            if let Some(series) = s.hub_fees.get_mut(hi) {
                series.push(fees);
            }
        }
        for (tc, &ch) in s.channels.iter_mut().zip(&self.tracked) {
            let st = self
                .ledger
                .state(ch)
                .ok_or(SimError::Internal("channel index out of range"))?;
            tc.points
                .push([st.balances[0].0, st.balances[1].0, st.locks_total()?.0]);
        }
        Ok(())
    }

    /// Takes the last sample and builds the output.
    fn finish(mut self, obs: &mut dyn Observer) -> Result<RunOutput, SimError> {
        self.end_batch()?;
        if self.in_flight > 0 {
            return Err(SimError::Internal(
                "the event queue ran dry with payments in flight",
            ));
        }
        if self
            .samples
            .times_ms
            .last()
            .is_none_or(|t| *t < self.now_ms)
        {
            self.sample()?;
        }
        obs.progress(self.progress());
        let net = &self.scenario.network;
        let unit = &self.params.unit;
        let st = &self.stats;
        let hubs = self
            .world
            .hubs
            .iter()
            .enumerate()
            .map(|(hi, &h)| {
                let at = |v: &Vec<u128>| v.get(h as usize).copied().unwrap_or(0);
                let (via, ok) = self.hub_via.get(hi).copied().unwrap_or((0, 0));
                HubRow {
                    node: net.label(h),
                    collateral: self
                        .world
                        .hub_collateral
                        .get(hi)
                        .copied()
                        .unwrap_or_default(),
                    forwarded: self.node_forwarded.get(h as usize).copied().unwrap_or(0),
                    forwarded_volume: Amount(at(&self.node_forwarded_volume)),
                    fees_earned: Amount(at(&self.node_fees_earned)),
                    fees_paid: Amount(at(&self.node_fees_paid)),
                    payments_via: via,
                    succeeded_via: ok,
                    success_rate_via: ratio(ok, via, 1.0),
                    locked_amount_secs: at(&self.node_locked_ms) / 1000,
                }
            })
            .collect();
        let summary = Summary {
            nodes: net.nodes.len(),
            channels: self.world.chans.len(),
            virtual_channels: self
                .world
                .chans
                .iter()
                .filter(|c| c.kind == ChannelKind::Virtual)
                .count(),
            seed: self.scenario.seed,
            raised_expiry_deltas: self.world.raised_deltas,
            virtual_secs: st.last_event_ms as f64 / 1000.0,
            payments: st.payments,
            succeeded: st.succeeded,
            failed: st.payments - st.succeeded,
            success_rate: ratio(st.succeeded, st.payments, 1.0),
            by_amount: st
                .buckets
                .iter()
                .map(|(k, (n, ok))| BucketRow::new(*k, *n, *ok, unit))
                .collect(),
            failure_reasons: st
                .final_failures
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            htlc_failures: st
                .htlc_failures
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            avg_attempts: ratio(st.attempts, st.payments, 0.0),
            avg_htlcs: ratio(st.htlcs, st.payments, 0.0),
            avg_hops: ratio(st.hops, st.succeeded, 0.0),
            volume: Amount(st.volume),
            fees_paid: Amount(st.fees_paid),
            hubs,
            locked_amount_secs: st.locked_ms / 1000,
            channel_updates: self.ledger.updates(),
            unit: unit.clone(),
        };
        let mut depletion: Vec<DepletionRow> = Vec::new();
        for (ci, c) in self.world.chans.iter().enumerate() {
            for side in [Side::A, Side::B] {
                let at = self.depleted_at.get(ci).and_then(|d| d[side.index()]);
                let failures = self.refusals.get(ci).map_or(0, |r| r[side.index()]);
                if at.is_none() && failures == 0 {
                    continue;
                }
                depletion.push(DepletionRow {
                    channel: format!("{}", c.id),
                    from: net.label(c.nodes[side.index()]),
                    to: net.label(c.nodes[side.other().index()]),
                    capacity: c.capacity,
                    depleted_at_secs: at.map(|ms| ms as f64 / 1000.0),
                    failures,
                });
            }
        }
        depletion.sort_by(|x, y| {
            let key =
                |r: &DepletionRow| r.depleted_at_secs.map_or(u64::MAX, |t| (t * 1000.0) as u64);
            key(x)
                .cmp(&key(y))
                .then(y.failures.cmp(&x.failures))
                .then(x.channel.cmp(&y.channel))
                .then(x.from.cmp(&y.from))
        });
        Ok(RunOutput {
            summary,
            samples: self.samples,
            depletion,
        })
    }
}

fn apply_learning(graph: &mut ChannelGraph, l: Learn) -> Result<(), SimError> {
    match l {
        Learn::Success(r, t) => graph.record_route_success(&r, t)?,
        Learn::Failure(r, hop, t) => graph.record_route_failure(&r, hop, t)?,
    }
    Ok(())
}

/// The channels whose balances are sampled: each hub's largest `per_hub`, or (no hubs) every
/// channel of a small network, else the `per_hub` largest.
fn tracked_channels(world: &World, per_hub: usize) -> Vec<u32> {
    let by_size = |mut v: Vec<u32>| {
        v.sort_by(|a, b| {
            let (ca, cb) = (world.chans.get(*a as usize), world.chans.get(*b as usize));
            let key = |c: Option<&world::ChanInfo>| c.map(|c| (c.capacity, c.id));
            key(cb)
                .map(|k| k.0)
                .cmp(&key(ca).map(|k| k.0))
                .then(key(ca).map(|k| k.1).cmp(&key(cb).map(|k| k.1)))
        });
        v
    };
    if world.hubs.is_empty() {
        let all: Vec<u32> = (0..world.chans.len() as u32).collect();
        if all.len() <= 64 {
            return all;
        }
        let mut v = by_size(all);
        v.truncate(per_hub);
        return v;
    }
    let mut out: Vec<u32> = Vec::new();
    for h in &world.hubs {
        let mine: Vec<u32> = world
            .chans
            .iter()
            .enumerate()
            .filter(|(_, c)| c.nodes.contains(h))
            .map(|(i, _)| i as u32)
            .collect();
        for c in by_size(mine).into_iter().take(per_hub) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}
