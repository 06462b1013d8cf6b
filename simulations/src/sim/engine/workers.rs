//! The route batch of a knowledge epoch: the first-attempt route searches of the epoch's
//! payments, claimed in dispatch order by worker threads (over the epoch's frozen graph) and by
//! the main thread when it gets ahead of them.

use std::sync::atomic::{self, AtomicUsize};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use router::{PathFinder, Route, RouteError, RouteQuery};

use super::Engine;
use crate::sim::error::SimError;
use crate::sim::ledger::Ledger;

/// The first-attempt route searches of one knowledge epoch.
pub(super) struct Batch {
    queries: Arc<Vec<RouteQuery>>,
    results: Arc<Vec<OnceLock<Result<Route, RouteError>>>>,
    /// The next query to claim.
    next: Arc<AtomicUsize>,
    workers: Vec<JoinHandle<PathFinder>>,
}

impl<L: Ledger> Engine<'_, L> {
    /// Starts searching the epoch's first-attempt routes: `threads - 1` workers claim queries
    /// in dispatch order; the main thread claims them too when it gets ahead of the workers.
    pub(super) fn start_batch(&mut self, queries: Vec<RouteQuery>) {
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
    pub(super) fn batch_route(&mut self, i: usize) -> Result<Result<Route, RouteError>, SimError> {
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

    /// Waits for the epoch's workers and takes their path finders back.
    pub(super) fn end_batch(&mut self) -> Result<(), SimError> {
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
}
