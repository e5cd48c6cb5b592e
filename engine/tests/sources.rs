//! The generator source on several workers: a worker whose downstream is slow holds the
//! others back, so no worker's generator runs more than `MAX_AHEAD` batches in front.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    // Worker 1's latest time seen, plus one (0: none yet).
    let slow_seen = Arc::new(AtomicU64::new(0));
    let leads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (g, s, l) = (
        Arc::clone(&events),
        Arc::clone(&slow_seen),
        Arc::clone(&leads),
    );
    timely::execute(timely::Config::process(2), move |worker| {
        let index = worker.index();
        let (g, s, l) = (Arc::clone(&g), Arc::clone(&s), Arc::clone(&l));
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
            )
            .inspect_core(move |event| {
                let Ok((stamp, _)) = event else { return };
                let Some(&time) = stamp.iter().max() else {
                    return;
                };
                if index == 1 {
                    s.fetch_max(time + 1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(2));
                } else {
                    let behind = s.load(Ordering::SeqCst);
                    l.lock().unwrap().push((time, behind));
                }
            });
        });
    })
    .unwrap();
    leads.lock().unwrap().clone()
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
