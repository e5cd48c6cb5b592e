//! End-to-end latency, when a run asks for it ([`super::RunOptions::end_to_end`]): for source
//! records, from their arrival at the source to the moment every sink of the job that writes
//! (files or Kafka) has made all records of their timestamp durable (the frontier of the sinks'
//! commits has passed it).
//!
//! Sources' arrivals are kept per timestamp until then: 8 bytes for each record timed, for as
//! long as the slowest sink takes to commit it (its roll interval). A run can time one record in
//! N of each source on each worker ([`super::RunOptions::end_to_end_every`]), which keeps N
//! times fewer. Records are timed once a worker has built the dataflow and found a sink that
//! writes; a job without one has nothing to wait for, and times nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hdrhistogram::Histogram;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator as _;
use vitalflow_model::{RawRecord, Time};

use super::ops::{SinkCommit, VecStream};

/// Arrivals per timestamp, and the latencies of the timestamps the sinks have completed.
#[derive(Debug)]
pub struct EndToEnd {
    /// Time one record in this many of each source on each worker (1: every record).
    every: u64,
    /// Set once the dataflow is built with a sink that writes: until then arrivals are not kept.
    on: AtomicBool,
    arrivals: Mutex<BTreeMap<Time, Vec<u64>>>,
    latency: Mutex<Histogram<u64>>,
}

impl Default for EndToEnd {
    fn default() -> Self {
        Self::sampled(1)
    }
}

impl EndToEnd {
    /// Timing one record in `every` of each source on each worker (0 or 1: every record).
    #[must_use]
    pub fn sampled(every: u64) -> Self {
        Self {
            every: every.max(1),
            on: AtomicBool::new(false),
            arrivals: Mutex::new(BTreeMap::new()),
            // Microseconds, 1 µs to 1 hour, 3 significant figures.
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .expect("constant histogram bounds are valid"),
            ),
        }
    }

    /// Notes the arrivals of records at `time` (none before the run is turned on).
    pub fn arrived(&self, time: Time, arrivals: impl IntoIterator<Item = u64>) {
        if !self.is_on() {
            return;
        }
        let mut map = self.arrivals.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(time).or_default().extend(arrivals);
    }

    /// Every timestamp before `frontier` (none: every timestamp) is complete: records the
    /// latencies of its arrivals as of `now_us`.
    pub fn complete(&self, frontier: Option<Time>, now_us: u64) {
        let done: Vec<Vec<u64>> = {
            let mut map = self.arrivals.lock().unwrap_or_else(PoisonError::into_inner);
            let keep = match frontier {
                Some(f) => map.split_off(&f),
                None => BTreeMap::new(),
            };
            std::mem::replace(&mut *map, keep).into_values().collect()
        };
        if done.is_empty() {
            return;
        }
        let mut h = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        for arrival in done.into_iter().flatten() {
            h.saturating_record(now_us.saturating_sub(arrival).max(1));
        }
    }

    /// The dataflow is built with a sink that writes: records are timed from now on.
    pub fn turn_on(&self) {
        self.on.store(true, Ordering::Relaxed);
    }

    /// Whether records are timed: the dataflow is built with a sink that writes.
    #[must_use]
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// The latencies recorded so far (µs).
    #[must_use]
    pub fn histogram(&self) -> Histogram<u64> {
        self.latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The places in a batch of `len` records, after `seen` records of the stream, of the records it
/// times: those whose place in the stream is a multiple of `every`.
fn timed(seen: u64, len: usize, every: u64) -> impl Iterator<Item = usize> {
    let first = usize::try_from((every - seen % every) % every).unwrap_or(usize::MAX);
    (first..len).step_by(usize::try_from(every).unwrap_or(usize::MAX))
}

/// Passes a source's records through, noting the arrivals of those it times: one in
/// [`EndToEnd::sampled`]'s `every`, counted over the records this worker's source emits.
pub fn track<'s>(raw: VecStream<'s, RawRecord>, e2e: &Arc<EndToEnd>) -> VecStream<'s, RawRecord> {
    let e2e = Arc::clone(e2e);
    raw.unary(Pipeline, "arrivals", move |_, _| {
        // Records passed on so far.
        let mut seen = 0u64;
        let mut sampled = Vec::new();
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let Some(time) = cap.least().copied() else {
                    return;
                };
                let mut session = output.session(&cap);
                for batch in data {
                    if e2e.every == 1 {
                        e2e.arrived(time, batch.iter().map(|r| r.arrival_us));
                    } else {
                        sampled.extend(
                            timed(seen, batch.len(), e2e.every)
                                .filter_map(|i| batch.get(i))
                                .map(|r| r.arrival_us),
                        );
                        if !sampled.is_empty() {
                            e2e.arrived(time, sampled.drain(..));
                        }
                    }
                    seen += batch.len() as u64;
                    session.give_container(batch);
                }
            });
        }
    })
}

/// Records the latencies of the timestamps every sink has committed.
pub fn complete(commits: &VecStream<'_, SinkCommit>, e2e: &Arc<EndToEnd>) {
    let e2e = Arc::clone(e2e);
    commits
        .clone()
        .sink(Pipeline, "end-to-end", move |(input, frontier)| {
            input.for_each(|_, data| data.clear());
            let least = frontier.frontier().iter().min().copied();
            e2e.complete(least, vitalflow_model::now_us());
        });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{EndToEnd, timed};

    /// One record in `every` of a stream is timed, however the stream is cut into batches.
    #[test]
    fn one_record_in_every_n_is_timed_across_batches() {
        let mut seen = 0u64;
        let mut places = Vec::new();
        for len in [3, 1, 7, 0, 2, 10] {
            places.extend(timed(seen, len, 4).map(|i| seen + i as u64));
            seen += len as u64;
        }
        assert_eq!(places, [0, 4, 8, 12, 16, 20]);
        assert_eq!(timed(5, 3, 1).collect::<Vec<_>>(), [0, 1, 2]);
    }

    /// Timestamps complete once the frontier passes them: their arrivals are timed as of then,
    /// and later ones wait.
    #[test]
    fn a_timestamp_is_timed_once_the_sinks_frontier_passes_it() {
        let e2e = EndToEnd::default();
        e2e.turn_on();
        e2e.arrived(1, [1_000, 2_000]);
        e2e.arrived(2, [3_000]);
        e2e.complete(Some(2), 10_000);
        let h = e2e.histogram();
        assert_eq!(h.len(), 2);
        assert_eq!((h.count_at(9_000), h.count_at(8_000)), (1, 1));
        e2e.complete(None, 13_000);
        let h = e2e.histogram();
        assert_eq!(h.len(), 3);
        assert_eq!(h.count_at(10_000), 1);
    }

    /// Until turned on (a sink writes), nothing is kept or timed.
    #[test]
    fn until_turned_on_it_keeps_nothing() {
        let e2e = EndToEnd::default();
        e2e.arrived(1, [1_000]);
        e2e.complete(None, 5_000);
        assert!(!e2e.is_on());
        assert_eq!(e2e.histogram().len(), 0);
        e2e.turn_on();
        e2e.arrived(2, [2_000]);
        e2e.complete(None, 5_000);
        assert_eq!(e2e.histogram().len(), 1);
    }
}
