//! The generator source on several workers: a worker whose downstream is slow holds the
//! others back, so no worker's generator runs more than `MAX_AHEAD` batches in front.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod lead;

use std::sync::Arc;

use lead::Leads;
use timely::dataflow::operators::Inspect;
use vitalflow_connectors::generator::{Generator, GeneratorConfig};
use vitalflow_engine::runtime::metrics::NodeCounters;
use vitalflow_engine::runtime::sources::{MAX_AHEAD, generator};

/// Runs a generator of `count` events in batches of `batch` on two workers, worker 1's
/// downstream sleeping on every batch it sees; returns, for each batch worker 0 emitted, its
/// time and the latest time worker 1 had emitted by then.
fn lead_of_worker_0(count: u64, batch: u64) -> Vec<(u64, u64)> {
    let events = Arc::new(Generator::new(GeneratorConfig {
        count,
        patients: 10,
        ..GeneratorConfig::default()
    }));
    let leads = Arc::new(Leads::default());
    let (g, l) = (Arc::clone(&events), Arc::clone(&leads));
    timely::execute(timely::Config::process(2), move |worker| {
        let index = worker.index();
        let (g, l) = (Arc::clone(&g), Arc::clone(&l));
        worker.dataflow::<u64, _, _>(|scope| {
            generator(
                scope,
                "ehr",
                g,
                0.0,
                batch,
                false,
                Arc::new(NodeCounters::default()),
                true,
                Arc::default(),
            )
            .inspect_core(move |event| {
                if let Ok((stamp, _)) = event
                    && let Some(&time) = stamp.iter().max()
                {
                    l.observe(index, time, 1);
                }
            });
        });
    })
    .unwrap();
    leads.take()
}

#[test]
fn a_generator_waits_for_the_slowest_worker() {
    let (count, batch) = (6_000, 100);
    let leads = lead_of_worker_0(count, batch);
    let last = count / batch - 1;
    // The bound must be far below the run's length for the test to tell anything.
    assert!(
        MAX_AHEAD * 4 < last,
        "MAX_AHEAD {MAX_AHEAD} against {last} batches"
    );
    assert_eq!(leads.last().map(|l| l.0), Some(last), "{leads:?}");
    // Worker 1 was slow enough for the bound to matter: worker 0 got as far ahead as it allows.
    let lead = leads
        .iter()
        .filter(|l| l.1 > 0)
        .map(|&(time, seen)| time.saturating_sub(seen - 1))
        .max()
        .unwrap_or(0);
    assert!(
        lead >= MAX_AHEAD,
        "worker 0 never reached the bound (largest lead {lead}): worker 1 was not slow, the run \
         tells nothing: {leads:?}"
    );
    for &(time, seen) in &leads {
        // Worker 1 had emitted time `seen - 1`; worker 0 may be `MAX_AHEAD` past the time
        // worker 1 is at, and one more while worker 1's progress is on its way.
        let allowed = seen.saturating_sub(1) + MAX_AHEAD + 1;
        assert!(
            time <= allowed,
            "worker 0 emitted time {time} when worker 1 had reached {}: {leads:?}",
            seen.saturating_sub(1)
        );
    }
}
