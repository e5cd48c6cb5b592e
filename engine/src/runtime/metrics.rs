//! Counters shared by the workers and the progress snapshots, and the job's failure flag.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use vitalflow_model::envelope::Counts;

use super::error::RunFailure;

/// Counters of one node, summed over workers.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Records received.
    pub records_in: AtomicU64,
    /// Records emitted (or, for sinks, written): for one-to-many and aggregating nodes (ingest,
    /// window, alert) what the node made, which need not match what it received.
    pub records_out: AtomicU64,
    /// Records received and rejected to dead-letter (an ingested message rejected in part
    /// counts once).
    pub rejected: AtomicU64,
    /// Records received that ended at the node with neither an output nor a dead letter (a
    /// filter's non-matches, a join's unmatched rows with `missing = "drop"`, a blackhole's
    /// input).
    pub dropped: AtomicU64,
    /// Dead letters sent (a record rejected for several faults can have several).
    pub dead_letters: AtomicU64,
    /// Files written (sinks), or read (file sources).
    pub files: AtomicU64,
    /// Records later than their windows' allowed lateness (windows).
    pub late: AtomicU64,
    /// Bytes of the records read (sources).
    pub bytes: AtomicU64,
    /// Bytes written (sinks): the size of the files made durable (Parquet, JSON lines, dead
    /// letters), or of the records the brokers acknowledged (Kafka: key, value and headers).
    pub written: AtomicU64,
    /// Records each worker read, by global worker index (file sources, with several workers).
    pub read_by_worker: Mutex<BTreeMap<usize, u64>>,
    /// Since when (ms since the Unix epoch) the node's deliveries have been failing and are
    /// retried (a Kafka sink whose broker is away); 0 while they succeed.
    pub failing_since_ms: AtomicU64,
}

impl NodeCounters {
    /// Adds counts.
    pub fn add(&self, c: &Counts) {
        self.records_in.fetch_add(c.records_in, Ordering::Relaxed);
        self.records_out.fetch_add(c.records_out, Ordering::Relaxed);
        self.rejected.fetch_add(c.rejected, Ordering::Relaxed);
    }

    /// Notes that deliveries fail since `since` (ms since the Unix epoch), or succeed (`None`).
    pub fn set_failing(&self, since: Option<u64>) {
        self.failing_since_ms
            .store(since.unwrap_or(0), Ordering::Relaxed);
    }

    /// How long deliveries have been failing, in ms at `now_ms`; 0 while they succeed.
    pub fn failing_for_ms(&self, now_ms: u64) -> u64 {
        match self.failing_since_ms.load(Ordering::Relaxed) {
            0 => 0,
            since => now_ms.saturating_sub(since).max(1),
        }
    }

    /// Adds dropped records.
    pub fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds dead letters sent.
    pub fn add_dead_letters(&self, n: u64) {
        self.dead_letters.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds emitted records (nodes whose output is counted where it is made).
    pub fn add_out(&self, n: u64) {
        self.records_out.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds rejected records (nodes that also reject after their first stage).
    pub fn add_rejected(&self, n: u64) {
        self.rejected.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds late records.
    pub fn add_late(&self, n: u64) {
        self.late.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds bytes read.
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds bytes written.
    pub fn add_written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds written files.
    pub fn add_files(&self, n: u64) {
        self.files.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds records `worker` read (0 registers it as a reader).
    pub fn add_worker_reads(&self, worker: usize, n: u64) {
        let mut by_worker = self
            .read_by_worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *by_worker.entry(worker).or_default() += n;
    }

    /// The records each worker read, by global worker index (empty for nodes that do not
    /// count them).
    #[must_use]
    pub fn worker_reads(&self) -> BTreeMap<usize, u64> {
        self.read_by_worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A snapshot.
    #[must_use]
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.records_in.load(Ordering::Relaxed),
            self.records_out.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
            self.files.load(Ordering::Relaxed),
        )
    }
}

/// The first error of a running job; every worker stops when it is set.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    flag: Arc<AtomicBool>,
    first: Arc<Mutex<Option<RunFailure>>>,
}

impl Failure {
    /// Records a failure (the first one wins) and tells every worker to stop.
    pub fn fail(&self, failure: RunFailure) {
        tracing::error!(message = %failure, fault = %failure.fault(), node = failure.node(), "job failed");
        if let Ok(mut m) = self.first.lock()
            && m.is_none()
        {
            *m = Some(failure);
        }
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Whether the job has failed.
    #[must_use]
    pub fn failed(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// The failure, if any.
    #[must_use]
    pub fn reported(&self) -> Option<RunFailure> {
        self.first.lock().ok().and_then(|m| m.clone())
    }

    /// The failure's text, if any.
    #[must_use]
    pub fn message(&self) -> Option<String> {
        self.reported().map(|r| r.to_string())
    }
}
