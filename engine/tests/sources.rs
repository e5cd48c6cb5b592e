//! The generator source on several workers: a worker whose downstream is slow holds the
//! others back, so no worker's generator runs more than `MAX_AHEAD` batches in front. A file
//! source stopped gracefully reads no more.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod lead;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lead::Leads;
use timely::dataflow::operators::Inspect;
use vitalflow_connectors::files::{FileFormat, FileSource};
use vitalflow_connectors::generator::{Generator, GeneratorConfig};
use vitalflow_engine::runtime::metrics::{Failure, NodeCounters};
use vitalflow_engine::runtime::sources::{MAX_AHEAD, files, generator};

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

/// A file source stopped (the graceful stop's flag set as its first record goes by) reads no
/// more: it ends with a fraction of its files read and counted, and only once its reading thread
/// has ended, so nothing of it outlives the run (the thread holds the last other reference to
/// the source).
#[test]
fn a_stopped_file_source_reads_no_more() {
    let (file_count, lines) = (40u64, 20_000u64);
    let dir = tempfile::tempdir().unwrap();
    for f in 0..file_count {
        let mut text = String::new();
        for i in 0..lines {
            let _ = writeln!(text, "{{\"file\":{f},\"n\":{i}}}");
        }
        std::fs::write(dir.path().join(format!("part-{f:02}.jsonl")), text).unwrap();
    }
    let source = Arc::new(FileSource {
        name: "readings".into(),
        path: dir.path().to_owned(),
        format: FileFormat::Json,
    });
    let counters = Arc::new(NodeCounters::default());
    let failure = Failure::default();
    let (s, c, f) = (Arc::clone(&source), Arc::clone(&counters), failure.clone());
    timely::execute(timely::Config::process(1), move |worker| {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, c, f) = (Arc::clone(&s), Arc::clone(&c), f.clone());
        worker.dataflow::<u64, _, _>(|scope| {
            let seen = Arc::clone(&stop);
            files(scope, "readings", s, 1000, c, true, f, stop).inspect(move |_| {
                seen.store(true, Ordering::SeqCst);
            });
        });
    })
    .unwrap();
    assert!(!failure.failed());
    assert_eq!(
        Arc::strong_count(&source),
        1,
        "the reading thread outlived the stopped source"
    );
    let (records, _, _, files_read) = counters.snapshot();
    assert!(records > 0, "nothing read before the stop");
    // At most what the thread had handed over (a bounded channel) when the source stopped.
    assert!(
        records < lines * 2 && files_read < 3,
        "{records} records of {files_read} files read after the stop"
    );
}
