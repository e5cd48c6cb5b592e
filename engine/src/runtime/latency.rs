//! End-to-end latency, when a run asks for it ([`super::RunOptions::end_to_end`]): for every
//! source record, from its arrival at the source to the moment every sink of the job has made
//! all records of its timestamp durable (the frontier of the sinks' commits has passed it).
//!
//! Sources' arrivals are kept per timestamp until then, so this is for measured runs (the
//! throughput harness's paced run), not for production jobs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use hdrhistogram::Histogram;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator as _;
use vitalflow_model::{RawRecord, Time};

use super::ops::{SinkCommit, VecStream};

/// Arrivals per timestamp, and the latencies of the timestamps the sinks have completed.
#[derive(Debug)]
pub struct EndToEnd {
    arrivals: Mutex<BTreeMap<Time, Vec<u64>>>,
    latency: Mutex<Histogram<u64>>,
}

impl Default for EndToEnd {
    fn default() -> Self {
        Self {
            arrivals: Mutex::new(BTreeMap::new()),
            // Microseconds, 1 µs to 1 hour, 3 significant figures.
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .expect("constant histogram bounds are valid"),
            ),
        }
    }
}

impl EndToEnd {
    /// Notes the arrivals of records at `time`.
    pub fn arrived(&self, time: Time, arrivals: impl IntoIterator<Item = u64>) {
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

    /// The latencies recorded so far (µs).
    #[must_use]
    pub fn histogram(&self) -> Histogram<u64> {
        self.latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Passes a source's records through, noting their arrivals.
pub fn track<'s>(raw: VecStream<'s, RawRecord>, e2e: &Arc<EndToEnd>) -> VecStream<'s, RawRecord> {
    let e2e = Arc::clone(e2e);
    raw.unary(Pipeline, "arrivals", move |_, _| {
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let Some(time) = cap.least().copied() else {
                    return;
                };
                let mut session = output.session(&cap);
                for batch in data {
                    e2e.arrived(time, batch.iter().map(|r| r.arrival_us));
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
