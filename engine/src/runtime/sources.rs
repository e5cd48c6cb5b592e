//! Source operators: the generator and files.

use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::Scope;
use timely::dataflow::operators::generic::operator::source;
use vitalflow_connectors::files::FileSource;
use vitalflow_connectors::generator::Generator;
use vitalflow_model::envelope::Counts;
use vitalflow_model::{RawRecord, Time};

use super::metrics::{Failure, NodeCounters};
use super::ops::VecStream;

/// Records emitted per activation, so a source never holds its worker for long.
const CHUNK: u64 = 4096;

/// The generator, split over workers: worker `w` of `n` emits the events `i` with `i % n == w`,
/// event `i` at time `i / batch_size`. `rate` is events per second over all workers (0: no limit).
#[allow(clippy::too_many_arguments)]
pub fn generator<'s>(
    scope: Scope<'s, Time>,
    name: &str,
    generator: Arc<Generator>,
    rate: f64,
    batch_size: u64,
    counters: Arc<NodeCounters>,
) -> VecStream<'s, RawRecord> {
    let (index, peers) = (scope.index() as u64, scope.peers() as u64);
    let node = name.to_owned();
    source::<_, CapacityContainerBuilder<Vec<RawRecord>>, _, _>(scope, name, move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut cap = Some(cap);
        let mut next = index;
        let count = generator.count();
        let started = Instant::now();
        let per_worker_rate = rate / peers as f64;
        let mut emitted = 0u64;
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            let mut budget = CHUNK;
            if per_worker_rate > 0.0 {
                let allowed = (started.elapsed().as_secs_f64() * per_worker_rate) as u64 + 1;
                budget = budget.min(allowed.saturating_sub(emitted));
                if budget == 0 {
                    activator.activate_after(Duration::from_millis(1));
                    return;
                }
            }
            let mut n = 0;
            while next < count && n < budget {
                let time = next / batch_size;
                if *c.time() < time {
                    c.downgrade(&time);
                }
                output.session(&*c).give(generator.raw(&node, next));
                next += peers;
                n += 1;
            }
            emitted += n;
            counters.add(&Counts {
                records_in: n,
                records_out: n,
                rejected: 0,
            });
            if next >= count {
                cap = None;
            } else {
                let time = next / batch_size;
                if *c.time() < time {
                    c.downgrade(&time);
                }
                activator.activate();
            }
        }
    })
}

/// A file source, read by worker 0; record `i` at time `i / batch_size`.
pub fn files<'s>(
    scope: Scope<'s, Time>,
    name: &str,
    files: Arc<FileSource>,
    batch_size: u64,
    counters: Arc<NodeCounters>,
    failure: Failure,
) -> VecStream<'s, RawRecord> {
    let reader = scope.index() == 0;
    source::<_, CapacityContainerBuilder<Vec<RawRecord>>, _, _>(scope, name, move |cap, _info| {
        let mut cap = Some(cap);
        move |output| {
            let Some(mut c) = cap.take() else { return };
            if !reader {
                return;
            }
            let result = files.read(|record| {
                let time = record.sequence / batch_size;
                if *c.time() < time {
                    c.downgrade(&time);
                }
                output.session(&c).give(record);
            });
            match result {
                Ok(n) => counters.add(&Counts {
                    records_in: n,
                    records_out: n,
                    rejected: 0,
                }),
                Err(e) => failure.fail(format!("source `{}`: {e}", files.name)),
            }
        }
    })
}
