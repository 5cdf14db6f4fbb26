//! Group commit: decisions queue, one writer at a time commits them.
//!
//! A durable commit (an fsync) costs about a millisecond and dominates a
//! request's path, so requests whose decisions are ready share one: each
//! [`Core::transact`](crate::Core::transact) queues its decision and waits;
//! the writer takes what is queued (at most `store.max_batch`), runs the
//! decisions in order in one write transaction through
//! [`Store::transact_batch`], commits once, then answers each. The batch
//! closes when the writer is free: while it commits, the next batch
//! gathers, so under light load a decision is committed alone at once and
//! under heavy load the batches grow with the load, without a timer.
//!
//! There is no writer thread to start or stop: the request that finds no
//! writer running becomes it, on the blocking pool, and it stops when the
//! queue is empty. The queue is bounded (`store.commit_queue`); a full
//! queue is `503 busy` with `Retry-After`. Nothing is answered before its
//! commit, and an I/O error fails the whole batch (storage.rs).

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use idprov_proto::admin::AdminEvent;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::error::Error;
use crate::storage::{Decide, Store, StoreError, StoreView, Unit};

/// Seconds a caller refused for a full queue is told to wait.
const QUEUE_FULL_RETRY_AFTER: u64 = 1;

/// One queued decision: runs in the writer, then hears how it ended.
pub(crate) trait Job: Send {
    fn decide(&mut self, v: &dyn StoreView, u: &mut Unit) -> Result<(), Error>;
    /// The committed unit's events, or why nothing was committed.
    fn finish(self: Box<Self>, outcome: Result<Vec<AdminEvent>, Error>);
}

/// The queue and whether a writer is draining it.
pub struct GroupCommit {
    state: Mutex<State>,
    capacity: usize,
    max_batch: usize,
    batch_sizes: Histogram,
    queue_full: Counter,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Box<dyn Job>>,
    writing: bool,
}

/// What the caller of [`GroupCommit::push`] must do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Queued {
    /// A writer is running and will take the decision.
    Behind,
    /// No writer was running: the caller starts one ([`GroupCommit::write`]).
    StartWriter,
}

impl GroupCommit {
    /// `batch_sizes` and `queue_full` are the metrics' (shared, not copies).
    pub fn new(
        cfg: &crate::config::StoreConfig,
        batch_sizes: Histogram,
        queue_full: Counter,
    ) -> GroupCommit {
        GroupCommit {
            state: Mutex::new(State::default()),
            capacity: cfg.commit_queue.max(1),
            max_batch: cfg.max_batch.max(1),
            batch_sizes,
            queue_full,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decisions waiting for the writer (not those it is committing).
    pub fn queued(&self) -> usize {
        self.state().queue.len()
    }

    /// Whether a writer is running (committing, or about to take a batch).
    pub fn writing(&self) -> bool {
        self.state().writing
    }

    /// Queue `job`; refused (`busy`) when the queue is full.
    pub(crate) fn push(&self, job: Box<dyn Job>) -> Result<Queued, Error> {
        let mut st = self.state();
        if st.queue.len() >= self.capacity {
            drop(st);
            self.queue_full.inc();
            tracing::warn!(
                capacity = self.capacity,
                "commit queue full; answering 503 busy"
            );
            return Err(Error::busy(
                "the daemon is committing as fast as it can; try again shortly",
                Some(QUEUE_FULL_RETRY_AFTER),
            ));
        }
        st.queue.push_back(job);
        if st.writing {
            return Ok(Queued::Behind);
        }
        st.writing = true;
        Ok(Queued::StartWriter)
    }

    /// The writer: commit batches until the queue is empty. Blocking.
    pub(crate) fn write(&self, store: &dyn Store) {
        loop {
            let mut jobs: Vec<Box<dyn Job>> = {
                let mut st = self.state();
                let n = st.queue.len().min(self.max_batch);
                if n == 0 {
                    // Under the lock: a push after this starts a new writer.
                    st.writing = false;
                    return;
                }
                st.queue.drain(..n).collect()
            };
            self.batch_sizes.observe(jobs.len() as f64);
            let result = {
                let mut decides: Vec<Box<Decide<'_>>> = jobs
                    .iter_mut()
                    .map(|j| {
                        Box::new(move |v: &dyn StoreView, u: &mut Unit| j.decide(v, u))
                            as Box<Decide<'_>>
                    })
                    .collect();
                let mut refs: Vec<&mut Decide<'_>> = decides.iter_mut().map(|d| &mut **d).collect();
                // A panicking decision must not leave the queue without a
                // writer: the batch fails (nothing was committed) instead.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    store.transact_batch(&mut refs)
                }))
            };
            match result {
                Ok(Ok(slots)) if slots.len() == jobs.len() => {
                    for (job, slot) in jobs.into_iter().zip(slots) {
                        job.finish(slot);
                    }
                }
                Ok(Ok(_)) => fail_all(
                    jobs,
                    &Error::internal(
                        "the daemon could not complete the request",
                        "the store answered a batch short",
                    ),
                ),
                Ok(Err(e)) => fail_all(jobs, &e),
                Err(_) => {
                    tracing::error!("a decision panicked; its batch was not committed");
                    fail_all(
                        jobs,
                        &Error::internal(
                            "the daemon could not complete the request",
                            "a decision panicked",
                        ),
                    );
                }
            }
        }
    }
}

/// Every decision of a batch that was not committed hears why.
fn fail_all(jobs: Vec<Box<dyn Job>>, e: &Error) {
    tracing::warn!(error = %e, batch = jobs.len(), "batch not committed");
    for job in jobs {
        job.finish(Err(shared(e)));
    }
}

/// The error of a failed batch, for each of its decisions: a store error
/// keeps its kind (so an I/O error is `503 unavailable` for each).
fn shared(e: &Error) -> Error {
    let store = |s: &StoreError| match s {
        StoreError::Unavailable(r) => StoreError::Unavailable(r.clone()),
        StoreError::Damaged(m) => StoreError::Damaged(m.clone()),
        other => StoreError::Db(other.to_string()),
    };
    match e {
        Error::Store(s) => Error::Store(store(s)),
        other => Error::internal(
            "the daemon could not complete the request",
            other.to_string(),
        ),
    }
}

/// What a committed decision returns: its value and its unit's events.
pub(crate) type Committed<T> = Result<(T, Vec<AdminEvent>), Error>;

/// A decision returning `T`, and where its caller waits.
pub(crate) struct Pending<T, F> {
    f: F,
    out: Option<T>,
    reply: Option<tokio::sync::oneshot::Sender<Committed<T>>>,
}

impl<T, F> Pending<T, F> {
    pub(crate) fn new(f: F) -> (Pending<T, F>, tokio::sync::oneshot::Receiver<Committed<T>>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            Pending {
                f,
                out: None,
                reply: Some(tx),
            },
            rx,
        )
    }
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnMut(&dyn StoreView, &mut Unit) -> Result<T, Error> + Send,
{
    fn decide(&mut self, v: &dyn StoreView, u: &mut Unit) -> Result<(), Error> {
        self.out = Some((self.f)(v, u)?);
        Ok(())
    }

    fn finish(mut self: Box<Self>, outcome: Result<Vec<AdminEvent>, Error>) {
        let answer = outcome.and_then(|events| match self.out.take() {
            Some(out) => Ok((out, events)),
            None => Err(Error::internal(
                "the daemon could not complete the request",
                "decision did not run",
            )),
        });
        if let Some(reply) = self.reply.take() {
            // The caller may have gone (its connection closed): the
            // decision is committed all the same.
            let _ = reply.send(answer);
        }
    }
}
